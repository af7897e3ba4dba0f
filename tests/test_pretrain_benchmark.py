"""benchmarks/pretrain_gpu.py keeps running: its CPU smoke mode end to end, and the FLOPs it counts."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from mambaseq.config import ModelConfig

from conftest import REPO

SCRIPT = REPO / "benchmarks" / "pretrain_gpu.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports its sibling gpu_common
    spec = importlib.util.spec_from_file_location("pretrain_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_flops_per_token_of_the_benchmarked_model(bench):
    """d_model 256, 8 layers: E 512, N 16, R 16, K 4, V 8; training = 3 x forward."""
    per_layer_macs = 256 * 1024 + 512 * (16 + 32) + 16 * 512 + 512 * 256  # in_proj, x_proj, dt_proj, out_proj
    flops = bench.flops_per_token(ModelConfig(d_model=256, n_layer=8))
    assert flops["matmul"] == 3 * (8 * 2 * per_layer_macs + 2 * 256 * 8)
    assert flops["conv"] == 3 * 8 * 2 * 4 * 512 and flops["scan"] == 3 * 8 * 7 * 512 * 16
    assert flops["total"] == 21_934_080


def test_smoke_run_writes_rows_and_reasons(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path), "--parts", "single",
                           "--backends", "triton", "reference", "--lengths", "32", "64", "--tokens-per-step", "64",
                           "--d-model", "16", "--n-layer", "1", "--warmup", "1", "--steps", "2"],
                          capture_output=True, text=True, timeout=600,
                          # tests/test_triton_scan.py sets TRITON_INTERPRET=1 at import: not for this CPU run
                          env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "pretrain_smoke.json").read_text())
    rows = {(r["backend"], r["L"]): r for r in result["rows"]}
    assert set(rows) == {("triton", 32), ("triton", 64), ("reference", 32), ("reference", 64)}
    assert "Triton needs CUDA tensors" in rows["triton", 32]["skipped"]
    flops = result["meta"]["flops_per_token"]["total"]
    for L, batch in ((32, 2), (64, 1)):
        r = rows["reference", L]
        assert r["batch"] == batch and r["timed_steps"] == 2 and r["tokens_per_s"] > 0
        assert r["tokens_per_s"] == pytest.approx(batch * L / r["step_s"])
        assert r["mfu"] == pytest.approx(r["tokens_per_s"] * flops / 989.5e12)
    table = (tmp_path / "pretrain_smoke.md").read_text()
    assert "| 64 | 1 | reference |" in table and "not asked for (--parts)" in table
