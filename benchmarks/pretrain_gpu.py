"""Pretraining throughput: tokens/s, peak memory and model FLOPs utilisation of training steps, per scan backend.

Model: d_model 256, 8 layers (E = 512, N = 16, R = 16, K = 4, V = 8), the size of the chr2 run in
results/pretrain_chr2_h200.md. A step is what `mambaseq pretrain` does per step: forward and backward of the
next-base cross-entropy under bf16 autocast, gradient clipping at 1.0, fused AdamW (pipelines/training.py).
Tokens are random A/C/G/T ids made on the device once per configuration: the loader is measured apart
(loader_throughput.py), so this is the model's rate alone.

Batch: a fixed 2^18 = 262,144 tokens per step, B = 2^18 / L (at least 1: L = 1M has 4x the tokens). A fixed
token count, not a doubling search, because a search costs several OOMs per point and the budget is ~6 min.
A configuration that runs out of memory is retried once with activation checkpointing per block
(torch.utils.checkpoint: each block's forward runs again in the backward); the table says so.

Scan backends, all in the same run:
- triton: ours (kernels/), forced with MAMBASEQ_SCAN_BACKEND=triton.
- mamba_ssm: mamba_ssm 2.3.2.post1's CUDA `selective_scan_fn`, built for sm_90 by mamba_ssm_baseline.py.
  It is swapped in by rebinding the name the mixer calls (mambaseq.model.mixer.selective_scan) for that
  backend's rows only. Its kernel needs one input dtype, so u, dt, B, C, z are cast to bf16 (the autocast
  dtype; our kernels read the mixer's fp32 u as it is), and y is cast back to u's dtype (fp32), as ours
  returns it; the casts are timed with it.
- reference: the chunked PyTorch scan. A Python loop over L, so its step time grows with L at a fixed token
  count; a length is skipped when the previous length's time, scaled by L, says it would not fit the time
  limit of a configuration (recorded).

FLOPs per token, counted from the config (training = 3x forward: the backward costs two forwards;
recomputation by checkpointing is not counted, so MFU is model FLOPs, not hardware FLOPs):
- matmuls, 2 per multiply-add: in_proj D*2E, x_proj E*(R+2N), dt_proj R*E, out_proj E*D per layer, and the
  tied head D*V;
- depthwise conv: 2*K*E per layer;
- scan: 7*E*N per layer (dt*A, exp, *B*u, the state's multiply-add, C*h's multiply-add; exp counted as one).
Norms, SiLU, softplus, the gate and the loss are left out (< 2%). MFU = model FLOP/s / 989.5 TFLOP/s, the H200
SXM's dense bf16 peak (NVIDIA's 1,979 TFLOP/s "with sparsity", halved); an 8192^3 bf16 matmul measured about
790 TFLOP/s on the H200 we use, so 80% of the peak is the practical ceiling.

DDP: the same model at one L (--ddp-length, default 32768) on 1 and then 2 GPUs through torchrun, the same
batch per GPU (weak scaling): tokens/s per GPU and efficiency = rate on 2 / (2 x rate on 1). Runs when two
GPUs are visible (gloo on 2 CPU processes with --smoke).

    python benchmarks/pretrain_gpu.py --sdist .dev/sdist/mamba_ssm-2.3.2.post1 \\
        --baseline-tool .dev/tools/mamba_ssm_baseline.py --out DIR     # H200, about 6 minutes
    python benchmarks/pretrain_gpu.py --parts ddp --out DIR           # 2 H200s: the DDP part alone
    python benchmarks/pretrain_gpu.py --smoke --out DIR                # CPU, tiny sizes, reference only

Writes DIR/pretrain_gpu.{json,md} (pretrain_gpu_ddp.* for --parts ddp, pretrain_smoke.* with --smoke), after
every configuration, so a run cut short keeps what it measured, and prints the table at the end.
"""
import argparse
import contextlib
import datetime
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from gpu_common import DEFAULT_BASELINE_TOOL, load_mamba_ssm, use_source_tree

use_source_tree()
import mambaseq.model.mixer as mixer  # noqa: E402  (after use_source_tree: the checkout may not be installed)
from mambaseq.config import ModelConfig  # noqa: E402
from mambaseq.io.atomic import write_bytes_atomic, write_json_atomic  # noqa: E402
from mambaseq.model import MambaModel  # noqa: E402
from mambaseq.ops import ENV_VAR, resolve_backend  # noqa: E402
from mambaseq.pipelines.training import autocast_for, optimizer_step  # noqa: E402
from mambaseq.tokenizers import encode  # noqa: E402

PEAK_BF16 = 989.5e12
LENGTHS = [1024, 32768, 131072, 1048576]
BACKENDS = ["triton", "mamba_ssm", "reference"]


# ---- the model and its FLOPs ------------------------------------------------------------------------------
def flops_per_token(cfg: ModelConfig) -> dict:
    """Training FLOPs per token by part (see the module docstring for what is counted)."""
    D, E, N, R, K, V = cfg.d_model, cfg.d_inner, cfg.d_state, cfg.resolved_dt_rank, cfg.d_conv, cfg.vocab_size
    fwd = dict(matmul=cfg.n_layer * 2 * (D * 2 * E + E * (R + 2 * N) + R * E + E * D) + 2 * D * V,
               conv=cfg.n_layer * 2 * K * E, scan=cfg.n_layer * 7 * E * N)
    parts = {k: 3 * v for k, v in fwd.items()}
    return dict(parts, total=sum(parts.values()))


class Recomputed(torch.nn.Module):
    """A block whose activations are recomputed in the backward (activation checkpointing)."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x, resets=None):
        return checkpoint(self.block, x, resets, use_reentrant=False)


def mamba_ssm_scan(selective_scan_fn):
    """mambaseq's selective_scan signature over mamba_ssm's selective_scan_fn, for plain causal training."""
    def scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None,
             return_final_state=False, reverse=False, resets=None):
        if initial_state is not None or return_final_state or reverse or resets is not None:
            raise ValueError("the mamba_ssm swap covers causal training only (no state, reverse or resets)")
        bf = torch.bfloat16  # its kernel wants u, delta, B, C, z in one dtype; bf16 as in mamba_ssm's own block
        y = selective_scan_fn(u.to(bf), delta.to(bf), A, B.to(bf), C.to(bf), D=D.float(),
                              z=None if z is None else z.to(bf), delta_bias=delta_bias.float(),
                              delta_softplus=delta_softplus)
        return y.to(u.dtype)  # the contract of mambaseq's selective_scan, which the rest of the mixer expects
    return scan


@contextlib.contextmanager
def scan_backend(name: str, mamba_fn=None):
    """Route the mixer's scan to `name` for the duration of the block."""
    saved_env, saved_fn = os.environ.get(ENV_VAR), mixer.selective_scan
    try:
        if name == "mamba_ssm":
            mixer.selective_scan = mamba_ssm_scan(mamba_fn)
        else:
            os.environ[ENV_VAR] = name
        yield
    finally:
        mixer.selective_scan = saved_fn
        if saved_env is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = saved_env


def build(cfg: ModelConfig, batch: int, L: int, dev: torch.device, recompute: bool, ddp: bool = False):
    """(model to call, model, optimizer, scheduler, tokens) for one configuration."""
    torch.manual_seed(0)
    model = MambaModel(cfg).to(dev)
    if recompute:
        model.layers = torch.nn.ModuleList(Recomputed(block) for block in model.layers)
    optimizer = torch.optim.AdamW(model.param_groups(0.1), lr=1e-3, betas=(0.9, 0.95), fused=dev.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    acgt = torch.from_numpy(encode("ACGT").astype("int64")).to(dev)
    tokens = acgt[torch.randint(0, 4, (batch, L), device=dev)]  # (B, L)
    train_model = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    return train_model, model, optimizer, scheduler, tokens


def train_step(train_model, model, optimizer, scheduler, tokens, dev):
    """One step as the pretraining pipeline takes it (next-base loss; every base is real here)."""
    with autocast_for(dev):
        logits = train_model(tokens)  # (B, L, V)
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
    optimizer_step(model, optimizer, scheduler, grad_clip=1.0)


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed_steps(parts, dev, warmup: int, steps: int, limit_s: float | None) -> dict:
    """Warm-up steps, then up to `steps` timed steps, fewer when they would outrun `limit_s` (None: `steps`,
    as DDP ranks must all take the same number)."""
    tick = time.perf_counter()
    for _ in range(warmup):
        train_step(*parts, dev)
    sync(dev)
    warm_s = time.perf_counter() - tick
    one = warm_s / max(warmup, 1)  # the first step also compiles: an overestimate, on the safe side
    count = steps if limit_s is None else max(1, min(steps, int(limit_s / max(one, 1e-9))))
    tick = time.perf_counter()
    for _ in range(count):
        train_step(*parts, dev)
    sync(dev)
    return dict(step_s=(time.perf_counter() - tick) / count, timed_steps=count, warmup_s=warm_s)


def run_config(cfg, L, batch, backend, dev, opts, mamba_fn) -> dict:
    """One (L, backend) row; retried with activation checkpointing after an out-of-memory error. Any other
    error is recorded in the row, so one failing backend does not cost the others' results."""
    row = dict(L=L, batch=batch, backend=backend, tokens_per_step=batch * L)
    for recompute in (False, True):
        failure, out_of_memory = None, False
        if dev.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(dev)
        try:
            with scan_backend(backend, mamba_fn):
                parts = build(cfg, batch, L, dev, recompute)
                row.update(timed_steps(parts, dev, opts.warmup, opts.steps, opts.config_s))
        except torch.cuda.OutOfMemoryError:
            failure, out_of_memory = f"out of memory{' with activation checkpointing' if recompute else ''}", True
        except Exception as err:
            failure = f"failed: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
        parts = None  # free the model before a retry or the next configuration
        if failure is None:
            row.update(recompute=recompute, tokens_per_s=batch * L / row["step_s"])
            break
        row.update(skipped=failure)
        if not out_of_memory:
            break
    if dev.type == "cuda":
        row["peak_gib"] = torch.cuda.max_memory_allocated(dev) / 2**30
    if "tokens_per_s" in row:
        row.pop("skipped", None)
        row["mfu"] = row["tokens_per_s"] * flops_per_token(cfg)["total"] / opts.peak_flops
    return row


def backend_problem(backend: str, dev: torch.device, mamba_state: dict, opts) -> str | None:
    """Why `backend` cannot run here (None: it can). Builds mamba_ssm on first use."""
    if backend == "reference":
        return None
    if backend == "triton":
        try:
            resolve_backend(dev, "triton")
        except Exception as err:  # BackendUnavailable: no CUDA tensors, or triton missing
            return str(err)
        return None
    if dev.type != "cuda":
        return "mamba_ssm's selective_scan_fn is a CUDA kernel"
    if not opts.sdist:
        return "no --sdist given"
    if "fn" not in mamba_state and "error" not in mamba_state:
        tick = time.perf_counter()
        try:
            mamba_state["fn"] = load_mamba_ssm(opts.sdist, opts.baseline_tool)[0]
        except Exception as err:  # a failed build is recorded, and the other backends still run
            mamba_state["error"] = f"build failed: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
        mamba_state["build_s"] = time.perf_counter() - tick
    return mamba_state.get("error")


def single_device(cfg, dev, opts, started, log, rows: list, mamba_state: dict, save) -> None:
    """Append a row per (backend, L) to `rows`, calling `save` after each (a run cut short keeps them)."""
    reference_pace = None  # (L, seconds per step)
    for backend in opts.backends:  # backend-major: one build of mamba_ssm, one JIT warm-up of ours
        spent = opts.budget_s - (time.perf_counter() - started) < opts.config_s
        problem = None if spent else backend_problem(backend, dev, mamba_state, opts)  # spent: no build either
        for L in opts.lengths:
            batch = max(1, opts.tokens_per_step // L)
            row = dict(L=L, batch=batch, backend=backend, tokens_per_step=batch * L)
            left = opts.budget_s - (time.perf_counter() - started)
            if problem:
                row["skipped"] = problem
            elif left < opts.config_s:
                row["skipped"] = f"time budget spent ({opts.budget_s:.0f} s in all)"
            elif backend == "reference" and reference_pace is not None:
                guess = reference_pace[1] * L / reference_pace[0] * (opts.warmup + 1)
                if guess > opts.config_s:
                    row["skipped"] = (f"too slow: ~{guess:.0f} s for {opts.warmup + 1} steps (scaled from "
                                      f"L={reference_pace[0]}), over the {opts.config_s:.0f} s limit")
            if "skipped" not in row:
                row = run_config(cfg, L, batch, backend, dev, opts, mamba_state.get("fn"))
                if backend == "reference" and "step_s" in row:
                    reference_pace = (L, row["step_s"])
            rows.append(row)
            log(row_line(row))
            save()


def row_line(r: dict) -> str:
    head = f"L={r['L']:>8} B={r['batch']:>4} {r['backend']:>9}: "
    if "tokens_per_s" not in r:
        return head + f"skipped ({r['skipped']})"
    peak = f", peak {r['peak_gib']:.1f} GiB" if "peak_gib" in r else ""
    return (head + f"{r['tokens_per_s']:,.0f} tokens/s, {1e3 * r['step_s']:.1f} ms/step{peak}, "
            f"MFU {100 * r['mfu']:.2f}%{', recompute' if r['recompute'] else ''} ({r['timed_steps']} steps)")


# ---- DDP ----------------------------------------------------------------------------------------------------
def ddp_worker(opts) -> None:
    """One torchrun rank: train at --ddp-length and (rank 0) write the timing to --result."""
    import torch.distributed as dist

    world, rank, local = (int(os.environ.get(k, d)) for k, d in (("WORLD_SIZE", 1), ("RANK", 0),
                                                                  ("LOCAL_RANK", 0)))
    dev = torch.device("cuda", local) if opts.device == "cuda" else torch.device("cpu")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo",
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    try:
        cfg = ModelConfig(d_model=opts.d_model, n_layer=opts.n_layer)
        L = opts.ddp_length
        batch = max(1, opts.tokens_per_step // L)
        with scan_backend(opts.ddp_backend):
            parts = build(cfg, batch, L, dev, recompute=False, ddp=world > 1)
            if world > 1:
                dist.barrier()
            timing = timed_steps(parts, dev, opts.warmup, opts.steps, None)
        step_s = torch.tensor([timing["step_s"]], device=dev)
        if world > 1:  # the slowest rank sets the pace
            dist.all_reduce(step_s, op=dist.ReduceOp.MAX)
        if rank == 0:
            rate = batch * L / step_s.item()
            write_json_atomic(opts.result, dict(gpus=world, L=L, batch_per_gpu=batch, backend=opts.ddp_backend,
                                                step_s=step_s.item(), tokens_per_s=world * rate,
                                                tokens_per_s_per_gpu=rate, timed_steps=timing["timed_steps"]))
    finally:
        if world > 1:
            dist.destroy_process_group()


def ddp_scaling(opts, out: Path, started, log) -> dict:
    """1 then 2 processes through torchrun; each a fresh interpreter (the kernels' JIT cache is on disk)."""
    if opts.device == "cuda" and torch.cuda.device_count() < 2:
        return dict(skipped=f"{torch.cuda.device_count()} GPU visible; DDP scaling needs 2")
    runs = []
    for gpus in (1, 2):
        left = opts.budget_s - (time.perf_counter() - started)
        if left < opts.config_s + 20:  # interpreter start and imports come on top of the steps
            return dict(runs=runs, skipped=f"time budget spent before the {gpus}-process run")
        result = out / f".ddp_{gpus}.json"
        result.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(gpus),
               str(Path(__file__).resolve()), "--ddp-worker",
               "--out", str(out), "--result", str(result), "--device", opts.device,
               "--ddp-length", str(opts.ddp_length), "--ddp-backend", opts.ddp_backend,
               "--tokens-per-step", str(opts.tokens_per_step),
               "--d-model", str(opts.d_model), "--n-layer", str(opts.n_layer), "--warmup", str(opts.warmup),
               "--steps", str(opts.steps), "--config-s", str(opts.config_s)]
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=max(30, left))
        except subprocess.TimeoutExpired:
            return dict(runs=runs, skipped=f"the {gpus}-process run outlasted the time budget")
        if done.returncode != 0 or not result.is_file():
            lines = done.stderr.strip().splitlines()
            tail = " | ".join(([x for x in lines if "Error" in x or "error:" in x] or lines)[-3:])
            return dict(runs=runs, skipped=f"the {gpus}-process run failed (exit {done.returncode}): {tail[-600:]}")
        runs.append(json.loads(result.read_text()))
        result.unlink()
        log(f"DDP {gpus} process(es), L={opts.ddp_length}: {runs[-1]['tokens_per_s_per_gpu']:,.0f} tokens/s per "
            f"{'GPU' if opts.device == 'cuda' else 'process'}")
    return dict(runs=runs, efficiency=runs[1]["tokens_per_s_per_gpu"] / runs[0]["tokens_per_s_per_gpu"])


# ---- report -------------------------------------------------------------------------------------------------
def markdown(meta: dict, rows: list[dict], ddp: dict) -> str:
    f = meta["flops_per_token"]
    lines = [f"# Pretraining throughput on {meta['device_name']} ({meta['date']})", "",
             f"torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}. Model d_model "
             f"{meta['model']['d_model']}, {meta['model']['n_layer']} layers ({meta['parameters']:,} parameters); "
             f"training steps (fwd+bwd, bf16 autocast on GPU, clip, fused AdamW) on random A/C/G/T tokens, "
             f"{meta['tokens_per_step']:,} tokens per step (B = that / L, at least 1); {meta['warmup']} warm-up "
             f"steps, then up to {meta['steps']} timed. Command: `{meta['command']}`.", "",
             f"FLOPs per token (training, 3x forward): {f['total'] / 1e6:.2f} M = matmuls {f['matmul'] / 1e6:.2f} M "
             f"+ conv {f['conv'] / 1e6:.3f} M + scan {f['scan'] / 1e6:.2f} M; MFU against "
             f"{meta['peak_tflops']:.1f} TFLOP/s (H200 dense bf16). mamba_ssm: {meta['mamba_ssm']}.", ""]
    if rows:  # none when only the DDP part ran
        lines += ["| L | batch | backend | tokens/s | ms/step | peak GiB | MFU | note |",
                  "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "tokens_per_s" in r:
            peak = f"{r['peak_gib']:.1f}" if "peak_gib" in r else "-"
            note = "activation checkpointing (OOM without)" if r["recompute"] else ""
            lines.append(f"| {r['L']:,} | {r['batch']} | {r['backend']} | {r['tokens_per_s']:,.0f} | "
                         f"{1e3 * r['step_s']:.1f} | {peak} | {100 * r['mfu']:.2f}% | {note} |")
        else:
            lines.append(f"| {r['L']:,} | {r['batch']} | {r['backend']} | - | - | - | - | {r['skipped']} |")
    lines += ["", f"DDP at L = {meta['ddp_length']:,}, same batch per process (weak scaling), "
              f"{meta['ddp_backend']} scan:", ""]
    if ddp.get("runs"):
        lines += ["| processes | tokens/s | tokens/s per process | ms/step |", "|---|---|---|---|"]
        lines += [f"| {r['gpus']} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s_per_gpu']:,.0f} | "
                  f"{1e3 * r['step_s']:.1f} |" for r in ddp["runs"]]
    if "efficiency" in ddp:
        lines += ["", f"Scaling efficiency (per-process rate on 2 / on 1): {100 * ddp['efficiency']:.1f}%"]
    if "skipped" in ddp:
        lines += ["", f"Not run: {ddp['skipped']}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for pretrain_gpu.json / .md")
    ap.add_argument("--sdist", help="unpacked mamba_ssm-2.3.2.post1 sdist; omitted: no mamba_ssm rows")
    ap.add_argument("--baseline-tool", default=str(DEFAULT_BASELINE_TOOL))
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny model and lengths, reference scan: a check "
                    "that the script runs end to end")
    ap.add_argument("--device", default=None, help="cuda (default) or cpu")
    ap.add_argument("--lengths", type=int, nargs="+")
    ap.add_argument("--backends", nargs="+", choices=BACKENDS)
    ap.add_argument("--tokens-per-step", type=int)
    ap.add_argument("--d-model", type=int)
    ap.add_argument("--n-layer", type=int)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per configuration (the first compiles)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per configuration, at most")
    ap.add_argument("--config-s", type=float, default=20.0, help="time limit of a configuration's timed steps")
    ap.add_argument("--budget-s", type=float, default=300.0, help="wall time of the whole run (mamba_ssm's "
                    "build included); configurations that would start later are skipped and recorded")
    ap.add_argument("--parts", nargs="+", choices=["single", "ddp"], default=["single", "ddp"])
    ap.add_argument("--ddp-length", type=int)
    ap.add_argument("--ddp-backend", choices=["triton", "reference"])
    ap.add_argument("--peak-tflops", type=float, default=PEAK_BF16 / 1e12)
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    opts = ap.parse_args()
    smoke = opts.smoke
    defaults = dict(device="cpu" if smoke else "cuda", lengths=[64, 256] if smoke else LENGTHS,
                    backends=BACKENDS, tokens_per_step=512 if smoke else 2**18, d_model=32 if smoke else 256,
                    n_layer=2 if smoke else 8, ddp_length=64 if smoke else 32768,
                    ddp_backend="reference" if smoke else "triton")
    for key, value in defaults.items():
        if getattr(opts, key) is None:
            setattr(opts, key, value)
    opts.peak_flops = opts.peak_tflops * 1e12
    if opts.ddp_worker:
        ddp_worker(opts)
        return
    if opts.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: no CUDA GPU visible (use --smoke for the CPU check)")

    started = time.perf_counter()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = "pretrain_smoke" if smoke else ("pretrain_gpu_ddp" if opts.parts == ["ddp"] else "pretrain_gpu")
    dev = torch.device(opts.device)
    cfg = ModelConfig(d_model=opts.d_model, n_layer=opts.n_layer)
    logged = []

    def log(msg):
        print(msg, flush=True)
        logged.append(msg)

    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    rows, mamba_state, ddp = [], {}, dict(skipped="not run yet" if "ddp" in opts.parts else "not asked for (--parts)")
    parameters = sum(p.numel() for p in MambaModel(cfg).parameters())

    def save() -> str:
        meta = dict(device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else
                    f"CPU ({os.cpu_count()} cores)", torch=torch.__version__, triton=triton_version,
                    cuda=torch.version.cuda, date=datetime.date.today().isoformat(), model=cfg.to_dict(),
                    parameters=parameters,
                    flops_per_token=flops_per_token(cfg), peak_tflops=opts.peak_tflops,
                    tokens_per_step=opts.tokens_per_step, warmup=opts.warmup, steps=opts.steps,
                    config_s=opts.config_s, budget_s=opts.budget_s, ddp_length=opts.ddp_length,
                    ddp_backend=opts.ddp_backend, wall_s=time.perf_counter() - started,
                    command="python3 " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
                    mamba_ssm=("2.3.2.post1 selective_scan_fn, sm_90 build"
                               + (f" ({mamba_state['build_s']:.0f} s build)" if "build_s" in mamba_state else "")
                               + (f"; {mamba_state['error']}" if "error" in mamba_state else "")))
        report = markdown(meta, rows, ddp)
        write_json_atomic(out / f"{stem}.json", dict(meta=meta, rows=rows, ddp=ddp, log=logged))
        write_bytes_atomic(out / f"{stem}.md", report.encode())
        return report

    if "single" in opts.parts:
        single_device(cfg, dev, opts, started, log, rows, mamba_state, save)
    if "ddp" in opts.parts:
        ddp = ddp_scaling(opts, out, started, log)
    print(save())


if __name__ == "__main__":
    main()
