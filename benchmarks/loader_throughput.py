"""Pretraining data path on CPU: bases/s the DataLoader delivers at L=131072 with 0, 1, 2 and 4 workers.

Each worker opens its own FASTA handle (pyfaidx), draws windows with the per-step RNG, encodes them through
the byte lookup table, and reverse-complements half. Compare with the GPU's training token rate (H200,
d_model 256, 8 layers: benchmarks/results/pretrain_chr2_h200.md): the loader should deliver 5x that.

    python benchmarks/loader_throughput.py [FASTA]   # default: ../shared/data/genome/hg38_chr2_1-2333275.fa
"""
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mambaseq.config import TrainConfig
from mambaseq.io.fasta import open_fasta
from mambaseq.pipelines.pretrain import TrainBatches, WindowSampler, plan_split

SEQ_LEN, BATCH, STEPS = 131072, 4, 200
GPU_TOKENS_PER_S = 735_000  # H200 training rate measured in benchmarks/results/pretrain_chr2_h200.md


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "genome" / "hg38_chr2_1-2333275.fa"
    source = Path(sys.argv[1]) if len(sys.argv) > 1 else default
    folder = Path(tempfile.mkdtemp())
    fasta = folder / source.name
    shutil.copy(source, fasta)  # the index gets built beside the copy, never beside the source
    cfg = TrainConfig(seq_len=SEQ_LEN, batch_size=BATCH, steps=STEPS)
    rows = []
    with open_fasta(fasta) as genome:
        sampler = WindowSampler(genome, plan_split(genome, SEQ_LEN, 0.1), SEQ_LEN, cfg.max_n_fraction)
        for workers in (0, 1, 2, 4):
            loader = DataLoader(TrainBatches(sampler, cfg, rank=0, first_step=0, last_step=STEPS), batch_size=None,
                                num_workers=workers)
            start = time.perf_counter()
            bases = sum(batch.numel() for batch in loader)
            seconds = time.perf_counter() - start
            rows.append({"workers": workers, "bases": bases, "seconds": round(seconds, 2),
                         "bases_per_s": round(bases / seconds), "x_gpu_rate": round(bases / seconds / GPU_TOKENS_PER_S, 2)})
            print(rows[-1])
    shutil.rmtree(folder)
    meta = {"date": date.today().isoformat(), "cpu_cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "seq_len": SEQ_LEN, "batch": BATCH, "steps": STEPS,
            "genome": source.name, "gpu_tokens_per_s": GPU_TOKENS_PER_S}
    results = Path(__file__).parent / "results"
    (results / "loader_throughput.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["# Pretraining data path: bases/s delivered at L=131072 (CPU)", "",
             f"{meta['date']}, {meta['cpu_cores']} cores, torch {meta['torch']}; {STEPS} steps of {BATCH} windows "
             f"from {source.name}, with the per-step RNG, encoding and RC augmentation. "
             "Command: `python benchmarks/loader_throughput.py`.", "",
             f"| workers | bases/s | x the H200 training rate ({GPU_TOKENS_PER_S:,} tok/s) |", "|---|---|---|"]
    lines += [f"| {r['workers']} | {r['bases_per_s']:,} | {r['x_gpu_rate']} |" for r in rows]
    (results / "loader_throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
