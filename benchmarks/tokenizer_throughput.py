"""CPU throughput of the DNA tokenizer: encode 100 Mbases (target: well under 1 s), decode, reverse complement.

Input is random soft-masked DNA (A C G T a c g t and N) since the table lookup costs the same for any letter.
Each operation is timed with time.perf_counter: one warm-up call, then the median of --repeats calls.
Also times fetch + encode of the real hg38 chr2 piece when ../shared/data is present.

    .venv/bin/python benchmarks/tokenizer_throughput.py  # writes benchmarks/results/tokenizer_throughput.{json,md}
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mambaseq.io.fasta import open_fasta
from mambaseq.tokenizers import decode, encode, reverse_complement

REPO = Path(__file__).resolve().parents[1]
REAL_FASTA = REPO.parent / "shared" / "data" / "genome" / "hg38_chr2_1-2333275.fa"
TARGET_SECONDS = 1.0  # encode of 100 Mbases must take well under this


def seconds(function, repeats: int) -> float:
    function()  # warm-up: first-touch page faults, lazy imports
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bases", type=int, default=100_000_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    alphabet = np.frombuffer(b"ACGTacgtN", dtype=np.uint8)
    raw = alphabet[rng.integers(0, len(alphabet), args.bases)]
    as_bytes, as_str = raw.tobytes(), raw.tobytes().decode("ascii")
    ids = encode(as_bytes)
    batch = torch.from_numpy(ids.reshape(-1, 1000))

    cases = [
        ("encode", "bytes", args.bases, lambda: encode(as_bytes)),
        ("encode", "str", args.bases, lambda: encode(as_str)),
        ("encode", "uint8 ndarray", args.bases, lambda: encode(raw)),
        ("decode", "uint8 ndarray", args.bases, lambda: decode(ids)),
        ("reverse_complement", "uint8 ndarray", args.bases, lambda: reverse_complement(ids)),
        ("reverse_complement", f"uint8 tensor {tuple(batch.shape)}", args.bases, lambda: reverse_complement(batch)),
    ]
    if REAL_FASTA.is_file():  # the shipped indexes are current, so this writes nothing next to the data
        for path in (REAL_FASTA, REAL_FASTA.with_name(REAL_FASTA.name + ".gz")):
            genome = open_fasta(path)
            length = genome.lengths["chr2"]
            cases.append(("fetch + encode", f"hg38 chr2 piece, {path.name}", length,
                          lambda genome=genome, length=length: encode(genome.fetch("chr2", 0, length), name="chr2")))

    rows = []
    for operation, given, bases, function in cases:
        median = seconds(function, args.repeats)
        rows.append({"operation": operation, "input": given, "bases": bases, "median_s": round(median, 4),
                     "mbases_per_s": round(bases / median / 1e6, 1)})
        print(f"{operation:>20}  {given:<42} {bases / 1e6:8.1f} Mb  {median:8.4f} s  {bases / median / 1e6:9.1f} Mb/s")

    headline = rows[0]["median_s"] * 100_000_000 / args.bases
    result = {
        "benchmark": "tokenizer_throughput",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),  # other work on the machine slows every row
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__,
        "repeats": args.repeats,
        "encode_100_mbases_s": round(headline, 4),
        "target_s": TARGET_SECONDS,
        "meets_target": headline < TARGET_SECONDS,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tokenizer_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    table = "\n".join(
        f"| {row['operation']} | {row['input']} | {row['bases'] / 1e6:.1f} | {row['median_s']:.4f} "
        f"| {row['mbases_per_s']:.1f} |"
        for row in rows
    )
    (args.out / "tokenizer_throughput.md").write_text(
        "# Tokenizer throughput (CPU)\n\n"
        f"{result['date']} · {result['cpu']} ({result['cpu_count']} cores, 1-min load average "
        f"{result['load_average_1m']} at the end) · Python {result['python']} · "
        f"numpy {result['numpy']} · torch {result['torch']}\n\n"
        f"Encoding 100 Mbases takes **{headline:.3f} s** (target: under {TARGET_SECONDS:.0f} s). "
        f"Median of {args.repeats} runs after one warm-up; command: `python benchmarks/tokenizer_throughput.py`.\n\n"
        "| operation | input | Mbases | median s | Mbases/s |\n|---|---|---:|---:|---:|\n"
        f"{table}\n"
    )
    print(f"encode 100 Mbases: {headline:.3f} s (target < {TARGET_SECONDS} s) -> {args.out}")
    sys.exit(0 if result["meets_target"] else 1)


if __name__ == "__main__":
    main()
