"""Peak memory and time of the PyTorch reference scan on CPU at long L (foundation issue, point 4).

Each case runs in a fresh subprocess; peak RSS (ru_maxrss) is read after the run and the RSS after building
the inputs is subtracted, so the figure is what the scan itself added. A (B, L, E, N) float32 tensor is shown
for scale: the chunked scan must stay far below it, with gradients too.

    python benchmarks/scan_reference_memory.py          # writes benchmarks/results/scan_reference_memory.{json,md}
"""
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

CASES = [  # (batch, E, L, N, backward)
    (1, 64, 131072, 16, False),
    (1, 64, 131072, 16, True),
]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def run_case(batch: int, E: int, L: int, N: int, backward: bool) -> dict:
    import torch

    from mambaseq.ops import selective_scan

    torch.manual_seed(0)
    u = torch.randn(batch, E, L, requires_grad=backward)
    delta = torch.randn(batch, E, L, requires_grad=backward)
    A = -torch.rand(E, N)
    B, C = torch.randn(batch, N, L), torch.randn(batch, N, L)
    D, z = torch.randn(E), torch.randn(batch, E, L)
    base = _rss_mb()
    start = time.perf_counter()
    y, h = selective_scan(u, delta, A, B, C, D=D, z=z, delta_softplus=True, return_final_state=True)
    if backward:
        (y.sum() + h.sum()).backward()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB on Linux
    assert torch.isfinite(y).all()
    return {"batch": batch, "E": E, "L": L, "N": N, "backward": backward, "seconds": round(seconds, 2),
            "scan_peak_mb": round(peak - base, 1), "process_peak_mb": round(peak, 1),
            "full_state_tensor_mb": round(batch * L * E * N * 4 / 2**20, 1)}


def main() -> None:
    if len(sys.argv) > 1:  # child: one case
        print(json.dumps(run_case(*json.loads(sys.argv[1]))))
        return
    import torch

    rows = []
    for case in CASES:
        out = subprocess.run([sys.executable, __file__, json.dumps(case)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout))
        print(rows[-1])
    meta = {"date": date.today().isoformat(), "cpu": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version()}
    results = Path(__file__).parent / "results"
    (results / "scan_reference_memory.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = ["# Reference selective scan on CPU: peak memory at long L", "",
             f"{meta['date']}, {meta['cpu']}, {meta['threads']} threads, torch {meta['torch']}. "
             "Command: `python benchmarks/scan_reference_memory.py`.", "",
             "| batch | E | L | N | backward | time (s) | scan peak (MB) | (B, L, E, N) fp32 tensor (MB) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['batch']} | {r['E']} | {r['L']} | {r['N']} | {r['backward']} | {r['seconds']} | "
              f"{r['scan_peak_mb']} | {r['full_state_tensor_mb']} |" for r in rows]
    (results / "scan_reference_memory.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
