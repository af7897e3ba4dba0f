"""Throughput and memory of `mambaseq predict`: sequences/s and bases/s for promoter prediction and LM scoring,
and peak memory when scoring one very long record (a 250-Mbase chromosome on a GPU).

Workloads (real sequence; weights are random, which does not change the speed):
  promoter   GUE prom_300_tata test rows (../shared/data/promoters, else the bundled subset), repeated to
             --promoter-sequences rows, over 4 CSV files; model as the H200 GUE runs (d_model 128, 4 layers,
             bidirectional, RC-averaged: 2 forward rows per sequence) on a GPU, smaller on the CPU.
  lm         --lm-records records of --lm-length bases cut from hg38 chr2 (../shared/data/genome, else the bundled
             300 kb piece), over 4 FASTA files; model as the H200 pretraining run (d_model 256, 8 layers) on a GPU.
  long       one FASTA record of --long-bases bases made by concatenating the chr2 piece (60-base lines), scored
             by the LM in a fresh process at full length and at a tenth of it: peak host RSS (and peak CUDA memory)
             stay flat when the record grows, since the record streams through the model in --max-tokens chunks.
Every in-process workload is timed after a warm-up on a small input; rates are records (bases) predicted over the
seconds predict() reports. With --ranks K > 1 the promoter and LM workloads also run under torchrun with K ranks
(one GPU each), rated by the slowest rank's summed per-file seconds from the manifest.

    python benchmarks/predict_throughput.py                         # CPU, modest sizes -> predict_throughput_cpu.*
    python benchmarks/predict_throughput.py --device cuda --name predict_throughput_h200    # 250 Mbases on a GPU
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from mambaseq.checkpoint import save_run
from mambaseq.config import ModelConfig, RunConfig, TrainConfig
from mambaseq.model import MambaModel
from mambaseq.pipelines.predict import predict

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
GENOME = [SHARED / "genome" / "hg38_chr2_1-2333275.fa", REPO / "data" / "hg38_chr2_1000001-1300000.fa"]
GUE = [SHARED / "promoters" / "gue_prom_300_tata" / "test.csv", REPO / "data" / "gue_prom_300_tata_subset" / "test.csv"]
PRESETS = {  # (promoter model, LM model, promoter rows, LM records, LM record length, long record bases,
    #            max-tokens of the long record)
    "cpu": (dict(d_model=64, n_layer=2, bidirectional=True), dict(d_model=64, n_layer=2), 400, 100, 1_000,
            200_000, 16_384),
    "gpu": (dict(d_model=128, n_layer=4, bidirectional=True), dict(d_model=256, n_layer=8), 200_000, 5_000, 10_000,
            250_000_000, 1 << 17),
}


def first_existing(paths: list[Path]) -> Path:
    return next(p for p in paths if p.is_file())


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def chr2_bases() -> np.ndarray:
    """The chr2 piece as ASCII codes (soft-masking kept), starting after its leading N run (the telomere gap of
    chr2:1-10,000), so that a record of any length holds scored bases."""
    text = first_existing(GENOME).read_bytes()
    bases = np.frombuffer(b"".join(text.split(b"\n")[1:]), dtype=np.uint8)
    start = int(np.argmax((bases != ord("N")) & (bases != ord("n"))))
    return np.concatenate([bases[start:], bases[:start]])


def write_long_fasta(path: Path, bases: np.ndarray, length: int, width: int = 60) -> None:
    """One record of `length` bases, the chr2 piece repeated, written block by block (never whole in memory)."""
    block = width * 100_000  # bases per write
    with open(path, "wb") as handle:
        handle.write(f">chr2_repeated_{length}\n".encode())
        for start in range(0, length, block):
            n = min(block, length - start)
            chunk = bases[(start + np.arange(n)) % len(bases)]
            full = n // width * width
            lines = np.concatenate([chunk[:full].reshape(-1, width), np.full((full // width, 1), 10, np.uint8)], 1)
            handle.write(lines.tobytes())
            if n > full:
                handle.write(chunk[full:].tobytes() + b"\n")


def save_model(path: Path, task: str, model_kw: dict) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(**model_kw, **({"n_classes": 2} if task == "promoter" else {}))
    extra = {"tokenizer": "dna"}
    if task == "promoter":
        extra |= {"threshold": 0.5, "rc_average": True, "classes": ["non-promoter", "promoter"]}
    return save_run(path, MambaModel(cfg), RunConfig(task=task, model=cfg, train=TrainConfig(seq_len=300), extra=extra))


def timed(run: Path, inputs: list[Path], out: Path, device: str, batch_size: int, max_tokens: int) -> dict:
    summary = predict(run, inputs, out, device=device, batch_size=batch_size, max_tokens=max_tokens,
                      show_progress=False, force=True)
    assert summary["failed"] == 0, summary
    return {"records": summary["records"], "bases": summary["bases"], "seconds": summary["seconds"],
            "sequences_per_s": summary["records"] / summary["seconds"], "bases_per_s": summary["bases_per_s"]}


def with_ranks(run: Path, inputs: list[Path], out: Path, ranks: int, batch_size: int, max_tokens: int) -> dict:
    """The same workload under torchrun; rate = bases / the slowest rank's summed per-file seconds."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks),
                    "-m", "mambaseq", "predict", "--model", str(run), *map(str, inputs), "--out", str(out),
                    "--force", "--quiet", "--batch-size", str(batch_size)]
                   + (["--max-tokens", str(max_tokens)] if max_tokens else []),
                   check=True, capture_output=True)
    wall = time.monotonic() - started
    entries = json.loads((out / "manifest.json").read_text())["files"].values()
    busiest = max(sum(e["seconds"] for e in entries if e["rank"] == r) for r in range(ranks))
    records, bases = sum(e["records"] for e in entries), sum(e["bases"] for e in entries)
    return {"ranks": ranks, "records": records, "bases": bases, "seconds": busiest, "wall_s_with_startup": wall,
            "sequences_per_s": records / busiest, "bases_per_s": bases / busiest}


def long_child(args) -> None:
    """Runs in a fresh process: score the long FASTA, print peak memory as JSON."""
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    summary = predict(args.run, [args.child_long], args.child_out, device=str(device), max_tokens=args.long_max_tokens,
                      show_progress=False, force=True)
    row = pl.read_parquet(next(Path(args.child_out).glob("*.parquet"))).row(0, named=True)
    print(json.dumps({"bases": summary["bases"], "seconds": summary["seconds"], "bases_per_s": summary["bases_per_s"],
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
                      "bits_per_base": row["bits_per_base"], "failed": summary["failed"]}))


def long_record(run: Path, fasta: Path, out: Path, device: str, max_tokens: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child-long", str(fasta), "--child-out", str(out), "--run",
                           str(run), "--device", device, "--long-max-tokens", str(max_tokens)],
                          capture_output=True, text=True, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["failed"] == 0, result
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--preset", choices=sorted(PRESETS), help="model and workload sizes (default: by device)")
    parser.add_argument("--promoter-sequences", type=int)
    parser.add_argument("--lm-records", type=int)
    parser.add_argument("--lm-length", type=int)
    parser.add_argument("--long-bases", type=int)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, help="default: predict's for the device")
    parser.add_argument("--long-max-tokens", type=int, help="chunk length of the long record (default: by preset; "
                        "peak memory grows with it, not with the record)")
    parser.add_argument("--ranks", type=int, default=1, help="also run under torchrun with this many ranks")
    parser.add_argument("--name", help="result file stem (default predict_throughput_cpu / _gpu)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--child-long", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_long:
        return long_child(args)

    gpu = args.device != "cpu" and torch.cuda.is_available()
    preset = args.preset or ("gpu" if gpu else "cpu")
    prom_kw, lm_kw, n_prom, n_lm, lm_length, long_bases, long_tokens = PRESETS[preset]
    long_tokens = args.long_max_tokens or long_tokens
    n_prom = args.promoter_sequences or n_prom
    n_lm, lm_length = args.lm_records or n_lm, args.lm_length or lm_length
    long_bases = args.long_bases or long_bases
    name = args.name or f"predict_throughput_{'gpu' if gpu else 'cpu'}"
    rows = {}
    with tempfile.TemporaryDirectory(dir=os.environ.get("MAMBASEQ_BENCH_TMP")) as tmp:
        tmp = Path(tmp)
        prom_run, lm_run = save_model(tmp / "prom", "promoter", prom_kw), save_model(tmp / "lm", "lm", lm_kw)
        gue = pl.read_csv(first_existing(GUE))["sequence"]
        warm = tmp / "warm.csv"
        pl.DataFrame({"sequence": gue.head(8)}).write_csv(warm)
        tables = []
        for part in range(4):
            rows_here = n_prom // 4 + (part < n_prom % 4)
            table = tmp / "prom" / f"part{part}.csv"
            pl.DataFrame({"sequence": gue.gather(np.arange(part * rows_here, (part + 1) * rows_here) % len(gue))}
                         ).write_csv(table)
            tables.append(table)
        timed(prom_run, [warm], tmp / "w1", args.device, args.batch_size, args.max_tokens)
        rows["promoter"] = timed(prom_run, tables, tmp / "o1", args.device, args.batch_size, args.max_tokens)
        print("promoter", rows["promoter"], flush=True)

        bases = chr2_bases()
        fastas = []
        for part in range(4):
            fasta = tmp / "lm" / f"part{part}.fa"
            with open(fasta, "wb") as handle:
                for k in range(part, n_lm, 4):
                    start = (k * lm_length * 7919) % (len(bases) - lm_length)  # spread over the piece
                    handle.write(f">r{k}\n".encode() + bases[start:start + lm_length].tobytes() + b"\n")
            fastas.append(fasta)
        timed(lm_run, [fastas[0]], tmp / "w2", args.device, args.batch_size, args.max_tokens)
        rows["lm"] = timed(lm_run, fastas, tmp / "o2", args.device, args.batch_size, args.max_tokens)
        print("lm", rows["lm"], flush=True)

        if args.ranks > 1:
            rows[f"promoter_{args.ranks}_ranks"] = with_ranks(prom_run, tables, tmp / "r1", args.ranks,
                                                              args.batch_size, args.max_tokens)
            rows[f"lm_{args.ranks}_ranks"] = with_ranks(lm_run, fastas, tmp / "r2", args.ranks, args.batch_size,
                                                        args.max_tokens)
            print(rows[f"promoter_{args.ranks}_ranks"], rows[f"lm_{args.ranks}_ranks"], flush=True)

        for label, length in (("long_tenth", long_bases // 10), ("long", long_bases)):
            fasta = tmp / f"{label}.fa"
            write_long_fasta(fasta, bases, length)
            rows[label] = {"file_mb": fasta.stat().st_size / 2**20,
                           **long_record(lm_run, fasta, tmp / f"o_{label}", args.device, long_tokens)}
            fasta.unlink()
            print(label, rows[label], flush=True)

    device_name = torch.cuda.get_device_name() if gpu else cpu_name()
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "device": device_name,
            "cores": os.cpu_count(), "threads": torch.get_num_threads(), "load_average_1min": os.getloadavg()[0],
            "torch": torch.__version__, "python": platform.python_version(), "preset": preset,
            "promoter_model": prom_kw, "lm_model": lm_kw, "batch_size": args.batch_size, "max_tokens": args.max_tokens,
            "long_max_tokens": long_tokens,
            "lm_record_length": lm_length, "sources": {"promoter": str(first_existing(GUE)),
                                                       "genome": str(first_existing(GENOME))}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    load = f", 1-min load average {meta['load_average_1min']:.1f} at the end" if not gpu else ""
    lines = [f"# `mambaseq predict` throughput ({'GPU' if gpu else 'CPU'})", "",
             f"{meta['date']} · {device_name} ({meta['cores']} cores{load}) · torch {meta['torch']} · "
             f"batch {args.batch_size}, max-tokens {args.max_tokens or 'default'}", "",
             f"Command: `python benchmarks/predict_throughput.py {' '.join(sys.argv[1:])}`. "
             "Random weights (speed does not depend on them); "
             "real sequence (GUE prom_300_tata rows, hg38 chr2).", "",
             "| workload | model | records | bases | s | sequences/s | bases/s |", "|---|---|---:|---:|---:|---:|---:|"]

    def model_text(kw):
        return f"d_model {kw['d_model']}, {kw['n_layer']} layers" + (", bidirectional, RC-averaged"
                                                                   if kw.get("bidirectional") else "")

    for key, row in rows.items():
        if key.startswith("long"):
            continue
        label = {"promoter": "promoter, 300 nt", "lm": f"LM scoring, {lm_length:,} nt records"}[key.split("_")[0]]
        if "ranks" in row:
            label += f", {row['ranks']} ranks (torchrun)"
        lines.append(f"| {label} | {model_text(prom_kw if key.startswith('promoter') else lm_kw)} | "
                     f"{row['records']:,} | {row['bases']:,} | {row['seconds']:.1f} | {row['sequences_per_s']:,.1f} | "
                     f"{row['bases_per_s']:,.0f} |")
    lines += ["", f"One long record (chr2 piece repeated), LM scoring ({model_text(lm_kw)}), streamed in "
              f"{long_tokens:,}-token chunks, each in a fresh process (peak RSS includes torch itself):", "",
              "| record bases | FASTA MB | s | bases/s | peak host RSS MB | peak CUDA MB | bits/base |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for key in ("long_tenth", "long"):
        row = rows[key]
        cuda = "-" if row["peak_cuda_mb"] is None else f"{row['peak_cuda_mb']:,.0f}"
        lines.append(f"| {row['bases']:,} | {row['file_mb']:,.1f} | {row['seconds']:.1f} | {row['bases_per_s']:,.0f} | "
                     f"{row['peak_rss_mb']:,.0f} | {cuda} | {row['bits_per_base']:.3f} |")
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
