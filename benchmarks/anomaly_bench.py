"""Anomaly detection figures: the Mamba next-value model against baselines, scored by one harness.

- SMD (8 machines) and ASD (12 servers): each model and baseline is fitted on the `*_train.parquet` part and
  scores `*_test.parquet`; VUS-PR, AUC-PR, AUC-ROC (threshold-free), and range-based F1 (Tatbul et al. 2018,
  TSB-AD's R-based F1) at a threshold every detector sets the same way from training data only: the 0.99
  quantile of its scores on the held-out last 15% of the training part. Point-adjusted F1 is not reported.
- NAB (58 series): each series' model is fitted on its first 15% (NAB's probationary period, which NAB does
  not score) and scores the whole series with the stream post-processing of `ScoreSmoother`: by default the
  excess over the 0.995 quantile of the last `--nab-baseline` steps and over the same time of day on the last
  `--nab-season-days` days, one alert per rise (`--nab-gate`, a new high beating the last by `--nab-gate-margin`;
  the model's excess capped at `--nab-model-cap`), chosen in benchmarks/nab_postprocess.py (on NAB
  itself: NAB has no held-out part), raised where the values leave the range they kept (`--nab-range-weight`
  times the range novelty's excess), where a value is new after the values before it (`--nab-context-weight`
  times the context novelty's excess) and where a run of equal values outlasts every earlier one
  (`--nab-flat-weight`); 0 turns a term off; all chosen in the same way (benchmarks/nab_novelty.py,
  results/anomaly.md);
  `--nab-baseline 0 --nab-adaptive W` gives the earlier z-score. NAB's
  optimiser picks one corpus-wide threshold for each profile.
  Baselines: NAB's windowed Gaussian and random detector (seeds 0-4), through the same scorer.
- Throughput: scoring steps/s in one pass and streamed row chunk by row chunk, and the scorer's memory at
  growing stream lengths (flat: the state is O(1)).

    .venv/bin/python benchmarks/anomaly_bench.py --data ../shared/data --out benchmarks/results/anomaly
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mambaseq import metrics as M
from mambaseq.config import ModelConfig, TrainConfig
from mambaseq.io.series import read_nab, read_train_test, train_test_entities
from mambaseq.pipelines.anomaly import (SCORES, STREAM_RECIPE, THRESHOLD_QUANTILES, AnomalySettings, fit,
                                        load_anomaly_run)
from mambaseq.pipelines.anomaly_baselines import (IsolationForestDetector, PCADetector, RandomDetector,
                                                  WindowedGaussianDetector)

NAB_PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
CALIBRATION = 0.15
QUANTILE = 0.99  # every detector's threshold rule; chosen on ASD, checked on SMD (results/anomaly.md)


def recipe(args, steps: int) -> tuple[ModelConfig, TrainConfig]:
    model = ModelConfig(d_model=args.d_model, n_layer=args.n_layer)
    train = TrainConfig(seq_len=args.seq_len, batch_size=args.batch_size, steps=steps, lr=args.lr,
                        warmup_steps=max(1, steps // 10), seed=args.seed)
    return model, train


def labelled_metrics(labels: np.ndarray, score: np.ndarray, threshold: float, at_quantile: dict) -> dict:
    """Threshold-free metrics, range-F1 at the detector's training threshold, and range-F1 at the other
    quantiles of its held-out training scores (`at_quantile`: quantile -> threshold), to show how much the
    choice of quantile matters."""
    flags = lambda t: (score > t).astype(np.int64)  # noqa: E731
    return {"vus_pr": M.vus_pr(labels, score), "auc_pr": M.auc_pr(labels, score),
            "auc_roc": M.auc_roc(labels, score), "range_f1": M.range_f1(labels, flags(threshold)),
            "range_f1_at_quantile": {q: M.range_f1(labels, flags(t)) for q, t in at_quantile.items()}}


def baseline_threshold(detector_cls, train: np.ndarray, **kw) -> tuple[object, float, dict]:
    """Fit on the first 85% of the training part; threshold = quantile of scores on the last 15% (and the
    thresholds at THRESHOLD_QUANTILES, as `fit` reports them for the model)."""
    cut = int(round(len(train) * (1 - CALIBRATION)))
    detector = detector_cls(**kw).fit(train[:cut])
    held_out = detector.score(train)[cut:]
    at_quantile = {str(q): float(np.quantile(held_out, q)) for q in THRESHOLD_QUANTILES}
    return detector_cls(**kw).fit(train), float(np.quantile(held_out, QUANTILE)), at_quantile


def run_train_test(args, dataset: str, work: Path) -> dict:
    folder = Path(args.data) / dataset
    entities = train_test_entities(folder)[: args.limit or None]
    rows = []
    for entity in entities:
        train, test = read_train_test(folder, entity)
        started = time.monotonic()
        model_cfg, train_cfg = recipe(args, args.steps)
        run = work / dataset / entity
        train_path = folder / f"{entity}_train.parquet"
        settings = AnomalySettings(timestamp="t", label=None, smooth=args.smooth, score=args.score,
                                   calibration_fraction=CALIBRATION, threshold_quantile=QUANTILE)
        summary = fit([train_path], run, settings=settings,
                      model_cfg=model_cfg, train_cfg=train_cfg, device=args.device, show_progress=False)
        fit_s = time.monotonic() - started
        model = load_anomaly_run(run, args.device)
        started = time.monotonic()
        score = model.scorer().push(test.values)["score"]
        score_s = time.monotonic() - started
        row = {"entity": entity, "steps": len(test), "anomaly_fraction": float(test.labels.mean()),
               "fit_s": fit_s, "score_steps_per_s": len(test) / score_s,
               "mamba": labelled_metrics(test.labels, score, model.threshold, summary["threshold_at_quantile"])}
        for name, cls, kw in (("pca", PCADetector, {}), ("isolation_forest", IsolationForestDetector, {"seed": args.seed}),
                              ("random", RandomDetector, {"seed": args.seed})):
            detector, threshold, at_quantile = baseline_threshold(cls, train.values, **kw)
            row[name] = labelled_metrics(test.labels, detector.score(test.values), threshold, at_quantile)
        rows.append(row)
        print(f"{dataset} {entity}: " + "  ".join(f"{k} VUS-PR {row[k]['vus_pr']:.3f}"
                                                 for k in ("mamba", "pca", "isolation_forest", "random")), flush=True)
    detectors = ("mamba", "pca", "isolation_forest", "random")
    mean = {d: {m: float(np.mean([r[d][m] for r in rows])) for m in rows[0][d] if m != "range_f1_at_quantile"}
            for d in detectors}
    for d in detectors:
        mean[d]["range_f1_at_quantile"] = {q: float(np.mean([r[d]["range_f1_at_quantile"][q] for r in rows]))
                                           for q in rows[0][d]["range_f1_at_quantile"]}
    return {"entities": rows, "mean": mean}


def nab_labels(corpus) -> tuple[dict, dict]:
    """(timestamps per file, labelled windows per file as NAB's scorer takes them: text timestamps)."""
    stamps = {name: series.timestamps for name, series, _ in corpus}
    windows = {name: [[str(a).replace("T", " "), str(b).replace("T", " ")] for a, b in spans]
               for name, _, spans in corpus}
    return stamps, windows


def run_nab(args, work: Path) -> dict:
    corpus = read_nab(Path(args.data) / "nab")[: args.limit or None]
    z_scores = {}
    started = time.monotonic()
    for name, series, _ in corpus:
        model_cfg, train_cfg = recipe(args, args.nab_steps)
        run = work / "nab" / name.replace("/", "__")
        path = Path(args.data) / "nab" / "data" / name
        fit([path], run, settings=AnomalySettings(fit_fraction=0.15, order="keep", smooth=args.nab_smooth,
                                                  score=args.score, adaptive_window=args.nab_adaptive,
                                                  baseline_window=args.nab_baseline,
                                                  season_days=args.nab_season_days if args.nab_baseline else 0,
                                                  gate=args.nab_gate, gate_margin=args.nab_gate_margin,
                                                  model_cap=args.nab_model_cap if args.nab_baseline else 0,
                                                  time_of_day=args.nab_time_of_day,
                                                  range_weight=args.nab_range_weight if args.nab_baseline else 0,
                                                  context_weight=args.nab_context_weight if args.nab_baseline else 0,
                                                  flat_weight=args.nab_flat_weight if args.nab_baseline else 0,
                                                  calibration_fraction=CALIBRATION, threshold_quantile=QUANTILE),
            model_cfg=model_cfg, train_cfg=train_cfg, device=args.device, show_progress=False)
        model = load_anomaly_run(run, args.device)
        z_scores[name] = model.scorer().push(series.values, timestamps=series.timestamps)["score"]
        print(f"nab {name}: {len(series)} steps", flush=True)
    elapsed = time.monotonic() - started
    stamps, nab_windows = nab_labels(corpus)
    result = {"files": len(corpus), "fit_and_score_s": elapsed, "mamba": {}, "windowed_gaussian": {}, "random": {}}
    gauss = {name: WindowedGaussianDetector().score(series.values) for name, series, _ in corpus}
    for profile in NAB_PROFILES:
        result["mamba"][profile] = M.optimise_nab_threshold(stamps, z_scores, nab_windows, profile).score
        result["windowed_gaussian"][profile] = M.optimise_nab_threshold(stamps, gauss, nab_windows, profile).score
        result["random"][profile] = float(np.mean([
            M.optimise_nab_threshold(stamps, {n: RandomDetector(seed).score(s.values) for n, s, _ in corpus},
                                     nab_windows, profile).score for seed in range(5)]))
    labelled = [(s.labels, z_scores[n]) for n, s, _ in corpus if 0 < s.labels.sum() < len(s)]
    result["mamba_mean_vus_pr"] = float(np.mean([M.vus_pr(y, z) for y, z in labelled]))
    return result


def throughput(args, work: Path) -> dict:
    """Steps/s in one pass vs streamed in 64-row chunks, and memory as a stream grows (one ASD-sized model)."""
    folder = Path(args.data) / "asd"
    model_cfg, train_cfg = recipe(args, 20)
    run = work / "throughput"
    fit([folder / "omi-1_train.parquet"], run, settings=AnomalySettings(timestamp="t", label=None),
        model_cfg=model_cfg, train_cfg=train_cfg, device=args.device, show_progress=False)
    model = load_anomaly_run(run, args.device)
    rng = np.random.default_rng(0)
    values = rng.random((args.stream_steps, model.quantiser.n_channels))
    out = {"channels": model.quantiser.n_channels, "d_model": args.d_model, "n_layer": args.n_layer}
    scorer, memory = model.scorer(), []  # the stream first: max RSS is a process-wide peak
    cuda = torch.device(args.device).type == "cuda" if args.device != "auto" else torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    started, chunk = time.monotonic(), 64
    for at in range(0, len(values), chunk):
        scorer.push(values[at:at + chunk])
        if (at // chunk + 1) % max(1, len(values) // chunk // 8) == 0:
            memory.append({"steps": at + chunk,
                           "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                           **({"cuda_peak_mb": torch.cuda.max_memory_allocated() / 2**20} if cuda else {})})
    out["stream_steps_per_s"] = len(values) / (time.monotonic() - started)
    started = time.monotonic()
    model.scorer().push(values)
    out["batch_steps_per_s"] = len(values) / (time.monotonic() - started)
    out["stream_chunk"] = chunk
    out["memory"] = memory
    return out


def markdown(results: dict, args) -> str:
    lines = ["# Anomaly detection: Mamba next-value model vs baselines", "",
             f"Command: `{results['command']}`", f"Device: {results['device']}; torch {torch.__version__}; "
             f"{results['date']}. Model: d_model {args.d_model}, {args.n_layer} layers, window {args.seq_len}, "
             f"batch {args.batch_size}, {args.steps} steps (NAB: {args.nab_steps}), lr {args.lr}, smoothing "
             f"{args.smooth} (NAB {args.nab_smooth}, adaptive window {args.nab_adaptive}, baseline window "
             f"{args.nab_baseline}, season days {args.nab_season_days}, gate {args.nab_gate} (margin "
             f"{args.nab_gate_margin}), model cap {args.nab_model_cap}, "
             f"range weight {args.nab_range_weight}, context weight {args.nab_context_weight}, flat weight "
             f"{args.nab_flat_weight}"
             f"{', time of day as input' if args.nab_time_of_day else ''}), seed {args.seed}.", ""]
    for dataset in ("smd", "asd"):
        if dataset not in results:
            continue
        r = results[dataset]
        lines += [f"## {dataset.upper()} ({len(r['entities'])} entities), mean over entities", "",
                  "| detector | VUS-PR | AUC-PR | AUC-ROC | range-F1 at training threshold |", "|---|---|---|---|---|"]
        for d, m in r["mean"].items():
            lines.append(f"| {d} | {m['vus_pr']:.3f} | {m['auc_pr']:.3f} | {m['auc_roc']:.3f} | {m['range_f1']:.3f} |")
        quantiles = list(r["mean"]["mamba"]["range_f1_at_quantile"])
        lines += ["", "Range-F1 at other quantiles of each detector's held-out training scores (mean):", "",
                  "| detector | " + " | ".join(f"q = {q}" for q in quantiles) + " |",
                  "|---|" + "---|" * len(quantiles)]
        lines += [f"| {d} | " + " | ".join(f"{m['range_f1_at_quantile'][q]:.3f}" for q in quantiles) + " |"
                  for d, m in r["mean"].items()]
        lines += ["", "Per entity (VUS-PR): " + "; ".join(
            f"{e['entity']} {e['mamba']['vus_pr']:.3f} / {e['pca']['vus_pr']:.3f} / {e['isolation_forest']['vus_pr']:.3f}"
            for e in r["entities"]) + " (mamba / PCA / IsolationForest)", ""]
    if "nab" in results:
        r = results["nab"]
        lines += [f"## NAB ({r['files']} series), NAB score with its optimised threshold", "",
                  "| detector | standard | low FP | low FN |", "|---|---|---|---|"]
        for d in ("mamba", "windowed_gaussian", "random"):
            lines.append(f"| {d} | " + " | ".join(f"{r[d][p]:.1f}" for p in NAB_PROFILES) + " |")
        lines += ["", f"Random: mean of seeds 0-4. Mamba mean VUS-PR over labelled files (window labels): "
                  f"{r['mamba_mean_vus_pr']:.3f}. Fit + score of all files: {r['fit_and_score_s']:.0f} s.", ""]
    if "throughput" in results:
        t = results["throughput"]
        lines += ["## Scoring throughput and streaming memory", "",
                  f"{t['channels']} channels: one pass {t['batch_steps_per_s']:,.0f} steps/s; streamed in "
                  f"{t['stream_chunk']}-row chunks {t['stream_steps_per_s']:,.0f} steps/s.", "",
                  "| stream steps | max RSS (MB) | CUDA peak (MB) |", "|---|---|---|"]
        lines += [f"| {m['steps']:,} | {m['max_rss_mb']:.0f} | {m.get('cuda_peak_mb', float('nan')):.1f} |"
                  for m in t["memory"]]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data", help="folder with smd/, asd/, nab/")
    ap.add_argument("--out", default="benchmarks/results/anomaly")
    ap.add_argument("--datasets", default="smd,asd,nab,throughput")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--limit", type=int, default=0, help="first N entities/files only (smoke runs)")
    ap.add_argument("--d-model", type=int, default=64)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--nab-steps", type=int, default=100)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--score", choices=SCORES, default="rps", help="per-step score (runs 1 and 2 of "
                    "results/anomaly.md predate this option: nll)")
    ap.add_argument("--smooth", type=int, default=10)
    ap.add_argument("--nab-smooth", type=int, default=1)
    ap.add_argument("--nab-adaptive", type=int, default=0, help="NAB: z-score window (steps; needs --nab-baseline 0)")
    ap.add_argument("--nab-baseline", type=int, default=STREAM_RECIPE["baseline_window"],
                    help="NAB: baseline window of the excess score")
    ap.add_argument("--nab-season-days", type=int, default=STREAM_RECIPE["season_days"])
    ap.add_argument("--nab-gate", type=int, default=STREAM_RECIPE["gate"])
    ap.add_argument("--nab-gate-margin", type=float, default=STREAM_RECIPE["gate_margin"],
                    help="NAB: a new high must beat the gate window's max by this factor (1: any new high)")
    ap.add_argument("--nab-model-cap", type=float, default=STREAM_RECIPE["model_cap"],
                    help="NAB: the model's excess counts at most this much (0: no cap)")
    ap.add_argument("--nab-range-weight", type=float, default=STREAM_RECIPE["range_weight"],
                    help="NAB: weight of the values' range novelty beside the model's score (0: off)")
    ap.add_argument("--nab-context-weight", type=float, default=STREAM_RECIPE["context_weight"],
                    help="NAB: weight of the values' context novelty beside the model's score (0: off)")
    ap.add_argument("--nab-flat-weight", type=float, default=STREAM_RECIPE["flat_weight"],
                    help="NAB: weight of the flat-run record beside the model's score (0: off)")
    ap.add_argument("--nab-time-of-day", action="store_true", help="NAB: the model also reads the time of day")
    ap.add_argument("--stream-steps", type=int, default=200_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    args.device = device
    results = {"command": "python3 benchmarks/anomaly_bench.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out",)),
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU ({platform.processor() or 'x86_64'})",
        "date": time.strftime("%Y-%m-%d")}
    chosen = args.datasets.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        for dataset in ("smd", "asd"):
            if dataset in chosen:
                results[dataset] = run_train_test(args, dataset, Path(tmp))
                (out / "anomaly.json").write_text(json.dumps(results, indent=1))
        if "nab" in chosen:
            results["nab"] = run_nab(args, Path(tmp))
        if "throughput" in chosen:
            results["throughput"] = throughput(args, Path(tmp))
    (out / "anomaly.json").write_text(json.dumps(results, indent=1))
    (out / "anomaly.md").write_text(markdown(results, args))
    print(markdown(results, args))


if __name__ == "__main__":
    main()
