"""CPU throughput of `mambaseq scan` (bases/s of genome, both strands scored) on real hg38 sequence.

An untrained promoter classifier (speed does not depend on the weights) of the test size (d_model 32, 2 layers,
d_state 8) and of the demo size (d_model 64, 2 layers, d_state 16) scans the first --bases of the bundled chr2
piece with window 300 at stride 300 (every base in one window) and stride 50. Each setting runs once after a
warm-up on 3 kb; the machine's 1-minute load average is recorded, since the CPU may be shared.

    .venv/bin/python benchmarks/scan_throughput.py  # writes benchmarks/results/scan_throughput.{json,md}
"""
import argparse
import datetime
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from mambaseq.checkpoint import save_run
from mambaseq.config import ModelConfig, RunConfig, TrainConfig
from mambaseq.model import MambaModel
from mambaseq.pipelines.scan import scan

REPO = Path(__file__).resolve().parents[1]
PIECE = REPO / "data" / "hg38_chr2_1000001-1300000.fa"
MODELS = {"test size": ModelConfig(d_model=32, n_layer=2, d_state=8, n_classes=2),
          "demo size": ModelConfig(d_model=64, n_layer=2, d_state=16, n_classes=2)}


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bases", type=int, default=30_000)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()
    sequence = "".join(PIECE.read_text().splitlines()[1:])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size, bases in (("warm-up", 3_000), ("measured", args.bases)):
            (tmp / f"{size}.fa").write_text(f">chr2_piece\n{sequence[:bases]}\n")
        for label, cfg in MODELS.items():
            torch.manual_seed(0)
            run = save_run(tmp / label, MambaModel(cfg), RunConfig(
                task="promoter", model=cfg, train=TrainConfig(seq_len=300),
                extra={"tokenizer": "dna", "threshold": 0.5, "rc_average": True}))
            scan(run, tmp / "warm-up.fa", tmp / "w.bedGraph", stride=300, device="cpu", show_progress=False)
            for stride in (300, 50):
                summary = scan(run, tmp / "measured.fa", tmp / "m.bedGraph", stride=stride, device="cpu",
                               show_progress=False)
                rows.append({"model": label, "d_model": cfg.d_model, "d_state": cfg.d_state, "window": 300,
                             "stride": stride, "bases": summary["bases"], "seconds": summary["elapsed_s"],
                             "bases_per_s": summary["bases_per_s"]})
                print(rows[-1])
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "cpu": cpu_name(),
            "cores": os.cpu_count(), "threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0],
            "torch": torch.__version__, "python": platform.python_version()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scan_throughput.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["# Promoter scan throughput (CPU)", "",
             f"{meta['date']} · {meta['cpu']} ({meta['cores']} cores, 1-min load average {meta['load_average_1min']:.1f} "
             f"at the end, {meta['threads']} of them this run's own torch threads) · torch {meta['torch']}", "",
             "Both strands scored per window (2 forward rows per window), batch 64, reference selective scan. "
             "Command: `python benchmarks/scan_throughput.py`.", "",
             "| model | d_model | d_state | window | stride | bases | s | bases/s |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['model']} | {r['d_model']} | {r['d_state']} | {r['window']} | {r['stride']} | {r['bases']:,} | "
              f"{r['seconds']:.1f} | {r['bases_per_s']:,.0f} |" for r in rows]
    (args.out / "scan_throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
