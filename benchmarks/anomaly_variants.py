"""Which per-step score of the next-value model ranks SMD/ASD anomalies best, and does training length matter?

The H200 figures (results/anomaly.md) have the summed NLL losing to PCA on SMD while winning on ASD. This study fits
the benchmark's model on each entity's training part for several step counts and scores the test part with
several scores derived from the same predicted distributions (per channel, over the value bins):
  nll     sum over channels of -log p(observed bin)
  nll_z   sum over channels of that NLL standardised by its mean and sd on the held-out training tail
  mae     sum over channels of the expected |bin - observed bin|          (magnitude-aware)
  crps    sum over channels of the ranked probability score over bins     (magnitude-aware, proper)
  crps_x  crps plus how far values lie outside the bin range, in bin widths: the CRPS of the value's continuous
          position (past the range the predicted CDF is flat, so the CRPS grows by the distance)
  excess  that distance alone (no model: how far the values left the training range)
  (`nll` was the shipped score when the study was written; `crps` is `--score rps`, the default since.)
Every score is then averaged over the trailing --smooth steps, like the shipped one. Reported: VUS-PR and AUC-PR per
entity and their means, beside the PCA and IsolationForest figures of the same harness.

With `nab` among --datasets: one fit per NAB series (first 15%) per --nab-steps, then nll and rps through every
--nab-smooth x --nab-adaptive post-processing, each rated by NAB's three profiles and mean VUS-PR.

    python benchmarks/anomaly_variants.py --data ../shared/data --datasets asd --steps 100 300 --out DIR
    python benchmarks/anomaly_variants.py --data ../shared/data --datasets nab --nab-steps 100 --out DIR
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mambaseq import metrics as M
from mambaseq.config import ModelConfig, TrainConfig
from mambaseq.io.series import read_nab, read_train_test, train_test_entities
from mambaseq.pipelines.anomaly import (AnomalySettings, ScoreSmoother, channel_logits, fit, load_anomaly_run,
                                        step_terms)
from mambaseq.pipelines.anomaly_baselines import IsolationForestDetector, PCADetector
from mambaseq.pipelines.training import pick_device
from mambaseq.tokenizers import ValueQuantiser

from anomaly_bench import NAB_PROFILES, nab_labels  # noqa: E402  (a sibling script)

CALIBRATION = 0.15


@torch.no_grad()
def per_channel_terms(model, ids: np.ndarray, device) -> dict[str, np.ndarray]:
    """ids (T, C) -> {score name: (T, C)} per-channel terms of step t given steps < t (step 0: zeros)."""
    tokens = torch.from_numpy(ids).to(device)
    logits = channel_logits(model, tokens[None])[0].float()[:-1]  # (T-1, C, V): predictions of steps 1..T-1
    target = tokens[1:]
    nll, rps = step_terms(logits, target)
    logits[..., ValueQuantiser.MISSING] = -torch.inf
    bins = torch.arange(logits.shape[-1], device=device, dtype=torch.float32)
    mae = (logits.softmax(-1) * (bins - target.unsqueeze(-1).float()).abs()).sum(-1)
    mae = mae.masked_fill(target == ValueQuantiser.MISSING, 0.0)
    return {name: np.concatenate([np.zeros((1, ids.shape[1])), term.double().cpu().numpy()])
            for name, term in (("nll", nll), ("mae", mae), ("crps", rps))}


def entity_scores(model, train: np.ndarray, test: np.ndarray, device, smooth: int) -> dict[str, np.ndarray]:
    q = model.quantiser
    train_terms = per_channel_terms(model.model, q.encode(train)[0], device)
    test_terms = per_channel_terms(model.model, q.encode(test)[0], device)
    tail = train_terms["nll"][int(round(len(train) * (1 - CALIBRATION))):]
    mu, sd = tail.mean(0), tail.std(0) + 1e-6
    excess = q.excess(test).sum(1)
    raw = {"nll": test_terms["nll"].sum(1), "nll_z": ((test_terms["nll"] - mu) / sd).sum(1),
           "mae": test_terms["mae"].sum(1), "crps": test_terms["crps"].sum(1),
           "crps_x": test_terms["crps"].sum(1) + excess, "excess": excess}
    return {k: ScoreSmoother(smooth).update(v) for k, v in raw.items()}  # the shipped trailing mean


def nab_study(args, device, work: Path) -> dict:
    """NAB: one fit per series (first 15%, NAB's probationary part) and step count; then every combination of raw
    score, smoothing and adaptive window, each rated by NAB's three profiles (corpus-wide optimised threshold) and
    the mean VUS-PR over the labelled series."""
    corpus = read_nab(Path(args.data) / "nab")[: args.limit or None]
    stamps, windows = nab_labels(corpus)
    rows = []
    suffix = ("_tod" if args.nab_time_of_day else "") + (f"_seed{args.seed}" if args.seed else "")
    for tag in args.nab_steps:
        steps, _, every = tag.partition("e")  # "100e5": 100 steps, held-out loss every 5, best weights kept
        steps = int(steps)
        raw, kept = {}, []
        for name, series, _ in corpus:
            run = work / "nab" / tag / name.replace("/", "__")
            summary = fit([Path(args.data) / "nab" / "data" / name], run,
                          settings=AnomalySettings(fit_fraction=0.15, order="keep",
                                                   calibration_fraction=args.nab_calibration,
                                                   time_of_day=args.nab_time_of_day),
                          model_cfg=ModelConfig(d_model=args.d_model, n_layer=2),
                          train_cfg=TrainConfig(seq_len=256, batch_size=args.batch_size, steps=steps, lr=3e-3,
                                                warmup_steps=max(1, steps // 10), seed=args.seed,
                                                eval_every=int(every or steps)),
                          device=str(device), show_progress=False)
            kept.append(summary["kept_step"])
            raw[name] = load_anomaly_run(run, str(device)).scorer().push(series.values, timestamps=series.timestamps)
        print(f"nab {tag}: kept steps min {min(kept)} median {int(np.median(kept))} max {max(kept)}", flush=True)
        if args.save_raw:  # per-step raw scores, to study post-processing without refitting
            args.save_raw.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(args.save_raw / f"nab_raw_{tag}{suffix}.npz",
                                **{f"{name}|{k}": r[k].astype(np.float32) for name, r in raw.items()
                                   for k in ("nll", "rps")})
        for score, smooth, window in itertools.product(("nll", "rps"), args.nab_smooth, args.nab_adaptive):
            scores = {name: ScoreSmoother(smooth, window).update(r[score]) for name, r in raw.items()}
            row = {"variant": f"{score}@{tag} smooth {smooth} window {window}", "kept_steps": kept}
            row |= {p: M.optimise_nab_threshold(stamps, scores, windows, p).score for p in NAB_PROFILES}
            labelled = [(s.labels, scores[n]) for n, s, _ in corpus if 0 < s.labels.sum() < len(s)]
            row["mean_vus_pr"] = float(np.mean([M.vus_pr(y, z) for y, z in labelled]))
            rows.append(row)
            print("nab", " ".join(f"{k}={v:.3f}" if isinstance(v, float) else v for k, v in row.items()
                                  if not isinstance(v, list)), flush=True)
    return {"files": len(corpus), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--datasets", nargs="+", default=["smd", "asd"])
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--nab-steps", nargs="+", default=["100", "300"],
                    help="fit steps per NAB run; SeE (e.g. 100e5): S steps, the held-out loss every E, best kept")
    ap.add_argument("--nab-smooth", type=int, nargs="+", default=[1, 5])
    ap.add_argument("--nab-adaptive", type=int, nargs="+", default=[1000, 4000], help="adaptive score windows")
    ap.add_argument("--save-raw", type=Path, help="NAB: write each fit's raw per-step nll/rps here (npz)")
    ap.add_argument("--nab-time-of-day", action="store_true", help="NAB: the model also reads the time of day")
    ap.add_argument("--seed", type=int, default=0, help="seed of every fit")
    ap.add_argument("--nab-calibration", type=float, default=CALIBRATION,
                    help="NAB: trailing fraction of the probationary part the model does not train on")
    ap.add_argument("--d-model", type=int, default=64, help="NAB: model width")
    ap.add_argument("--limit", type=int, default=0, help="first N entities only")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--smooth", type=int, default=10)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--baselines", action="store_true", help="also PCA and IsolationForest (CPU, slow on SMD)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    device = pick_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"command": "python benchmarks/anomaly_variants.py " + " ".join(sys.argv[1:]), "device": str(device),
              "rows": []}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        if "nab" in args.datasets:
            report["nab"] = nab_study(args, device, Path(work))
        for dataset in [d for d in args.datasets if d != "nab"]:
            folder = Path(args.data) / dataset
            for entity in train_test_entities(folder)[: args.limit or None]:
                train, test = read_train_test(folder, entity)
                row = {"dataset": dataset, "entity": entity}
                for steps in args.steps:
                    run = Path(work) / dataset / entity / str(steps)
                    fit([folder / f"{entity}_train.parquet"], run,
                        settings=AnomalySettings(timestamp="t", label=None, smooth=args.smooth,
                                                 calibration_fraction=CALIBRATION),
                        model_cfg=ModelConfig(d_model=64, n_layer=2),
                        train_cfg=TrainConfig(seq_len=256, batch_size=args.batch_size, steps=steps, lr=3e-3,
                                              warmup_steps=max(1, steps // 10), seed=args.seed),
                        device=str(device), show_progress=False)
                    model = load_anomaly_run(run, str(device))
                    for name, score in entity_scores(model, train.values, test.values, device, args.smooth).items():
                        row[f"{name}@{steps}"] = {"vus_pr": M.vus_pr(test.labels, score),
                                                  "auc_pr": M.auc_pr(test.labels, score)}
                if args.baselines:
                    for name, cls in (("pca", PCADetector), ("isolation_forest", IsolationForestDetector)):
                        score = cls().fit(train.values).score(test.values)
                        row[name] = {"vus_pr": M.vus_pr(test.labels, score), "auc_pr": M.auc_pr(test.labels, score)}
                report["rows"].append(row)
                print(dataset, entity, " ".join(f"{k}={v['vus_pr']:.3f}" for k, v in row.items()
                                                if isinstance(v, dict)), f"[{time.monotonic() - started:.0f} s]",
                      flush=True)
    means = {}
    for dataset in [d for d in args.datasets if d != "nab"]:
        rows = [r for r in report["rows"] if r["dataset"] == dataset]
        keys = [k for k in rows[0] if isinstance(rows[0][k], dict)] if rows else []
        means[dataset] = {k: {m: float(np.mean([r[k][m] for r in rows])) for m in ("vus_pr", "auc_pr")} for k in keys}
    report["means"] = means
    (args.out / "anomaly_variants.json").write_text(json.dumps(report, indent=1))
    lines = ["| dataset | variant | mean VUS-PR | mean AUC-PR |", "|---|---|---|---|"] if means else []
    for dataset, m in means.items():
        lines += [f"| {dataset} | {k} | {v['vus_pr']:.3f} | {v['auc_pr']:.3f} |" for k, v in m.items()]
    if "nab" in report:
        lines += [""] * bool(lines) + [f"NAB, {report['nab']['files']} series:", "",
                  "| variant | standard | low FP | low FN | mean VUS-PR |", "|---|---|---|---|---|"]
        lines += [f"| {r['variant']} | {r['standard']:.1f} | {r['reward_low_FP_rate']:.1f} | "
                  f"{r['reward_low_FN_rate']:.1f} | {r['mean_vus_pr']:.3f} |" for r in report["nab"]["rows"]]
    (args.out / "anomaly_variants.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
