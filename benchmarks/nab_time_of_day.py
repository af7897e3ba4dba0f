"""NAB: does reading the time of day (`mambaseq anomaly fit --time-of-day`) help the next-value model?

One fit per series and variant on its first 15% (NAB's probationary part; d_model 64, 2 layers, windows of 256,
batch 16, STEPS steps, lr 3e-3, seed 0, on one CPU thread), then the raw per-step score of the value channel:
  plain   the model reads the value alone;
  phase   it also reads the fraction of the day as a second input column. The column is written beside the
          value, so the quantiser and the model treat it like a value column and the score keeps channel 0 only:
          the same computation as `--time-of-day` (tests/test_anomaly.py checks the shipped scores against it).
Writes `nab_raw_<variant><STEPS>.npz` (the layout of `anomaly_variants.py --save-raw`) after every series, for
`nab_postprocess.py --compare`. Session 5 ran it on the 2-core CPU machine, both variants in parallel (~1 h):

    python benchmarks/nab_time_of_day.py 60 plain DIR & python benchmarks/nab_time_of_day.py 60 phase DIR
    python benchmarks/nab_postprocess.py --compare --raw DIR/nab_raw_plain60.npz DIR/nab_raw_phase60.npz --out OUT
"""
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from anomaly_variants import per_channel_terms

from mambaseq.config import ModelConfig, TrainConfig
from mambaseq.io.series import read_nab
from mambaseq.pipelines.anomaly import AnomalySettings, fit, load_anomaly_run


def main() -> None:
    steps, kind, out = int(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    data = Path(sys.argv[4]) if len(sys.argv) > 4 else Path("../shared/data")
    torch.set_num_threads(1)
    out.mkdir(parents=True, exist_ok=True)
    rps, nll, started = {}, {}, time.monotonic()
    with tempfile.TemporaryDirectory() as work:
        for name, series, _ in read_nab(data / "nab"):
            stamps = series.timestamps.astype("datetime64[s]")
            columns = {"timestamp": stamps.astype(str), "value": series.values[:, 0]}
            if kind == "phase":
                columns["phase"] = (stamps - stamps.astype("datetime64[D]")).astype(np.int64) / 86400.0
            path = Path(work) / f"{kind}.csv"
            pl.DataFrame(columns).write_csv(path)
            fit([path], Path(work) / kind, settings=AnomalySettings(fit_fraction=0.15, order="keep"),
                model_cfg=ModelConfig(d_model=64, n_layer=2),
                train_cfg=TrainConfig(seq_len=256, batch_size=16, steps=steps, lr=3e-3,
                                      warmup_steps=max(1, steps // 10), seed=0, eval_every=steps),
                device="cpu", show_progress=False)
            run = load_anomaly_run(Path(work) / kind, "cpu")
            values = pl.read_csv(path).drop("timestamp").to_numpy().astype(np.float64)
            terms = per_channel_terms(run.model, run.quantiser.encode(values)[0], "cpu")
            rps[name] = terms["crps"][:, 0] + run.quantiser.excess(values)[:, 0]
            nll[name] = terms["nll"][:, 0]
            print(name, f"[{time.monotonic() - started:.0f} s]", flush=True)
            np.savez_compressed(out / f"nab_raw_{kind}{steps}.npz",
                                **{f"{n}|rps": v.astype(np.float32) for n, v in rps.items()},
                                **{f"{n}|nll": v.astype(np.float32) for n, v in nll.items()})


if __name__ == "__main__":
    main()
