"""NAB: does updating the next-value model while it scores (online learning) lower the false alarms?

Each series gets the benchmark's fit on its first 15% (NAB's probationary part; d_model 64, 2 layers, 100 steps),
then, for each --variants EVERY:STEPS, at every EVERY fraction of the series after that part the model trains
STEPS more steps (AdamW, constant --update-lr) on windows of everything seen so far and scores the next part; the state
is rebuilt by running the updated model over the whole prefix (the scores of a row never use rows after it).
Writes the raw per-step scores (the same npz layout as `anomaly_variants.py --save-raw`: "<file>|rps",
"<file>|nll") of the static fit and of each online variant, for `nab_postprocess.py`-style study offline.

    python benchmarks/nab_online.py --data /tmp/data --out DIR --variants 0.1:30 0.05:15

(On the H200 that run takes ~10 s per series; session 5 stopped it after 48 of 58, with 40 saved.) `--time-of-day`
fits the model that also reads the time of day (the NAB record's); `--shard I/N` takes every N-th series from the
I-th, so N processes share the corpus, each writing `nab_raw_<variant>_shardI.npz` (keys are file names: merge by
loading them all).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mambaseq.config import ModelConfig, TrainConfig
from mambaseq.io.series import read_nab
from mambaseq.pipelines.anomaly import (AnomalySettings, _windows, channel_logits, fit, load_anomaly_run,
                                        model_inputs, next_bin_loss)
from mambaseq.pipelines.training import autocast_for, pick_device

PROBATION = 0.15


def online_scores(anomaly, values: np.ndarray, stamps, every: float, steps: int, lr: float, batch: int, seed: int):
    """Raw nll and rps per row, the model trained `steps` more steps at every boundary past the probation."""
    model, dev = anomaly.model, anomaly.device
    inputs = model_inputs(values, stamps, anomaly.settings.time_of_day, "series")
    tokens = torch.from_numpy(anomaly.quantiser.encode(inputs)[0]).to(dev)
    n = len(values)
    start = int(PROBATION * n)
    size = max(1, int(round(every * n)))
    bounds = list(range(start, n, size)) + [n]
    def prefix(end):
        return anomaly.scorer().push(values[:end], timestamps=None if stamps is None else stamps[:end])

    first = prefix(start)
    nll, rps = [first["nll"]], [first["rps"]]
    optimizer = torch.optim.AdamW(model.param_groups(0.1), lr=lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(seed)
    for a, b in zip(bounds[:-1], bounds[1:]):
        model.train()
        length = min(256, a)
        for _ in range(steps):
            windows = _windows([tokens], [a], length, batch, rng)
            with autocast_for(dev):
                loss = next_bin_loss(channel_logits(model, windows), windows)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        model.eval()
        out = prefix(b)
        nll.append(out["nll"][a:b])
        rps.append(out["rps"][a:b])
    return np.concatenate(nll), np.concatenate(rps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--variants", nargs="+", default=["0.1:30"], help="EVERY:STEPS, e.g. 0.1:30")
    ap.add_argument("--update-lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--time-of-day", action="store_true", help="the model also reads the time of day")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard", default="0/1", help="I/N: every N-th series from the I-th")
    args = ap.parse_args()
    device = pick_device(args.device)
    shard, shards = map(int, args.shard.split("/"))
    corpus = read_nab(Path(args.data) / "nab")[: args.limit or None][shard::shards]
    variants = [(float(v.split(":")[0]), int(v.split(":")[1])) for v in args.variants]
    raws = {"static": {}} | {f"online{int(round(e * 100))}x{s}": {} for e, s in variants}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        for i, (name, series, _) in enumerate(corpus):
            run = Path(work) / name.replace("/", "__")
            fit([Path(args.data) / "nab" / "data" / name], run,
                settings=AnomalySettings(fit_fraction=PROBATION, order="keep", calibration_fraction=0.15,
                                         time_of_day=args.time_of_day),
                model_cfg=ModelConfig(d_model=64, n_layer=2),
                train_cfg=TrainConfig(seq_len=256, batch_size=args.batch_size, steps=args.steps, lr=3e-3,
                                      warmup_steps=max(1, args.steps // 10), seed=args.seed),
                device=str(device), show_progress=False)
            out = load_anomaly_run(run, str(device)).scorer().push(series.values, timestamps=series.timestamps)
            raws["static"][name] = (out["nll"], out["rps"])
            for (every, steps), key in zip(variants, list(raws)[1:]):
                anomaly = load_anomaly_run(run, str(device))  # a fresh copy of the fitted model per variant
                raws[key][name] = online_scores(anomaly, series.values, series.timestamps, every, steps,
                                                args.update_lr, args.batch_size, seed=args.seed)
            print(f"[{i + 1}/{len(corpus)}] {name} {len(series)} rows [{time.monotonic() - started:.0f} s]", flush=True)
            if i % 10 == 9 or i == len(corpus) - 1:  # a run cut short keeps the files done so far
                save(args.out, raws, f"_seed{args.seed}" + (f"_shard{shard}" if shards > 1 else ""))
    print(f"done in {time.monotonic() - started:.0f} s", flush=True)


def save(out: Path, raws: dict, suffix: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for key, per_file in raws.items():
        np.savez_compressed(out / f"nab_raw_{key}{suffix}.npz",
                            **{f"{n}|{k}": v.astype(np.float32) for n, (nll, rps) in per_file.items()
                               for k, v in (("nll", nll), ("rps", rps))})


if __name__ == "__main__":
    main()
