"""Selective-scan benchmark on one GPU: our Triton kernels against mamba_ssm 2.3.2.post1 and the floors.

Glossary: Bt batch, E channels (1536), L length, N d_state (16). Inputs bf16 (u, delta, z, B, C) with fp32 A, D,
delta_bias; delta_softplus on, as in a Mamba block. Times are medians of CUDA-event timings
(`triton.testing.do_bench`, which also flushes L2 between calls) on random inputs.

Floors: bytes that must cross HBM once / 4.25 TB/s (measured H200 copy bandwidth), and Bt*E*L*N
exponentials / 4.2 T/s (the H200's MUFU ex2 rate: 132 SMs x 16/clk x ~1.98 GHz). fwd+bwd needs 2x the
exponentials, because the backward must rebuild exp(dt A) (storing it would be Bt*E*L*N floats).

    python benchmarks/scan_gpu.py --sdist PATH/mamba_ssm-2.3.2.post1 --out DIR [--sweep]

--sweep first times several block configurations of each kernel and uses the best per shape for the
rest of the run (the table says which). Writes DIR/scan_h200.json and DIR/scan_h200.md.
"""
import argparse
import datetime
import json
from pathlib import Path

import torch
import triton
from gpu_common import DEFAULT_BASELINE_TOOL, REPO, load_mamba_ssm, use_source_tree
from triton.testing import do_bench

SHAPES = [(8, 2048), (8, 8192), (2, 32768), (1, 131072)]
E, N = 1536, 16
COPY_BW, EXP_RATE = 4.25e12, 4.2e12
STEP_BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256]
# forward: BE, NL, num_warps, segments of L (None: the launcher's choice); NOTES.md: wider variants were slower
FWD_SWEEP = [(32, 1, 1, None), (64, 1, 2, None)]
# backward: BE, NG lanes per channel, num_warps, segments of L; NOTES.md says why these
BWD_SWEEP = [(16, 2, 1, None), (16, 2, 1, 1), (16, 4, 1, None)]


def import_kernels():
    use_source_tree()
    from mambaseq.kernels.selective_scan_bwd import scan_bwd
    from mambaseq.kernels.selective_scan_fwd import scan_fwd
    from mambaseq.ops import triton_scan
    return scan_fwd, scan_bwd, triton_scan


def make_inputs(batch, L, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    bf = dict(device="cuda", dtype=torch.bfloat16)

    def rnd(*shape, scale=1.0, **kw):
        return (scale * torch.randn(*shape, device="cuda", generator=g)).to(kw.get("dtype", torch.bfloat16))

    return dict(u=rnd(batch, E, L), delta=rnd(batch, E, L, scale=0.5), z=rnd(batch, E, L),
                B=rnd(batch, N, L), C=rnd(batch, N, L),
                A=-torch.exp(0.5 * torch.randn(E, N, device="cuda", generator=g)),
                D=torch.randn(E, device="cuda", generator=g),
                delta_bias=torch.randn(E, device="cuda", generator=g) - 2.0), bf


def floors(batch, L):
    """(fwd ms, fwd+bwd ms) floors and which term sets each."""
    bel, bln = batch * E * L, batch * L * N
    fwd_bytes = 2 * (4 * bel + 2 * bln)  # read u, delta, z, B, C; write y
    bwd_bytes = 2 * (7 * bel + 4 * bln)  # read u, delta, z, dout, B, C; write du, ddelta, dz, dB, dC
    exps = bel * N
    fwd = max(fwd_bytes / COPY_BW, exps / EXP_RATE) * 1e3
    both = max((fwd_bytes + bwd_bytes) / COPY_BW, 2 * exps / EXP_RATE) * 1e3
    return dict(fwd_ms=fwd, fwd_bytes_ms=fwd_bytes / COPY_BW * 1e3, fwd_exp_ms=exps / EXP_RATE * 1e3,
                fwdbwd_ms=both, fwdbwd_bytes_ms=(fwd_bytes + bwd_bytes) / COPY_BW * 1e3,
                fwdbwd_exp_ms=2 * exps / EXP_RATE * 1e3)


def bench(fn):
    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def sweep(scan_fwd, scan_bwd, sm_count, log):
    """Best forward and backward block configuration per shape."""
    best = {}
    for batch, L in SHAPES:
        x, _ = make_inputs(batch, L)
        args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], None, None, True,
                False)
        fwd = []
        for BE, NL, nw, sg in FWD_SWEEP:
            try:
                ms = bench(lambda: scan_fwd(*args, store_hN=False, store_ckpt=False, BE=BE, NL=NL,
                                            num_warps=nw, segments=sg, sm_count=sm_count))
            except Exception as err:  # a config that does not compile or fit is reported, not fatal
                log(f"fwd {batch}x{L} BE={BE} NL={NL} nw={nw} S={sg}: {type(err).__name__}: {err}"[-400:])
                continue
            fwd.append(dict(BE=BE, NL=NL, num_warps=nw, segments=sg, ms=ms))
            log(f"fwd {batch}x{L} BE={BE} NL={NL} nw={nw} S={sg}: {ms:.3f} ms")
        bwd = []
        dy = torch.randn_like(x["u"])
        _, _, ckpt = scan_fwd(*args, store_hN=False, store_ckpt=True, sm_count=sm_count)
        for BE, NG, nw, sg in BWD_SWEEP:
            try:
                ms = bench(lambda: scan_bwd(dy, None, x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"],
                                            x["delta_bias"], None, ckpt, True, False, False, BE=BE, NG=NG,
                                            num_warps=nw, segments=sg, sm_count=sm_count))
            except Exception as err:
                log(f"bwd {batch}x{L} BE={BE} NG={NG} nw={nw} S={sg}: {type(err).__name__}: {err}"[-400:])
                continue
            bwd.append(dict(BE=BE, NG=NG, num_warps=nw, segments=sg, ms=ms))
            log(f"bwd {batch}x{L} BE={BE} NG={NG} nw={nw} S={sg}: {ms:.3f} ms")
        best[(batch, L)] = (min(fwd, key=lambda r: r["ms"]), min(bwd, key=lambda r: r["ms"]), fwd, bwd)
        del x, dy, ckpt
        torch.cuda.empty_cache()
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sdist", help="unpacked mamba_ssm-2.3.2.post1 sdist (baseline); omitted: no baseline")
    ap.add_argument("--baseline-tool", default=str(DEFAULT_BASELINE_TOOL))
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--no-reference", action="store_true")
    opts = ap.parse_args()
    out = Path(opts.out)
    out.mkdir(parents=True, exist_ok=True)
    log_file = open(out / "scan_log.txt", "a")

    def log(msg):
        print(msg, flush=True)
        log_file.write(msg + "\n")
        log_file.flush()

    scan_fwd, scan_bwd, ts = import_kernels()
    from mambaseq.ops.reference import selective_scan_ref

    sm_count = torch.cuda.get_device_properties(0).multi_processor_count
    best = sweep(scan_fwd, scan_bwd, sm_count, log) if opts.sweep else {}

    mamba_fn = mamba_step = None
    if opts.sdist:
        mamba_fn, mamba_step = load_mamba_ssm(opts.sdist, opts.baseline_tool)

    rows = []
    for batch, L in SHAPES:
        x, _ = make_inputs(batch, L, seed=1)
        row = dict(batch=batch, L=L, **floors(batch, L))
        if (batch, L) in best:
            bf, bb = best[(batch, L)][:2]
            ts.FWD_CONFIG = {k: bf[k] for k in ("BE", "NL", "num_warps", "segments")}
            ts.BWD_CONFIG = {k: bb[k] for k in ("BE", "NG", "num_warps", "segments")}
            row["sweep"] = dict(fwd=best[(batch, L)][2], bwd=best[(batch, L)][3])
        row["config"] = dict(fwd=dict(ts.FWD_CONFIG), bwd=dict(ts.BWD_CONFIG))
        kw = dict(D=x["D"], z=x["z"], delta_bias=x["delta_bias"], delta_softplus=True)
        pos = (x["u"], x["delta"], x["A"], x["B"], x["C"])
        with torch.no_grad():
            row["ours_fwd_ms"] = bench(lambda: ts.selective_scan_triton(*pos, **kw))
            if mamba_fn is not None:
                row["mamba_fwd_ms"] = bench(lambda: mamba_fn(*pos, **kw))
            if not opts.no_reference and batch * L <= 8 * 8192:
                row["reference_fwd_ms"] = bench(lambda: selective_scan_ref(*pos, **kw))

        leaves = [t.detach().requires_grad_() for t in (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"],
                                                         x["z"], x["delta_bias"])]
        dy = torch.randn_like(x["u"])

        def fwd_bwd(fn):
            u, d, A, B, C, D, z, bias = leaves
            y = fn(u, d, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True)
            torch.autograd.grad(y, leaves, dy)

        row["ours_fwdbwd_ms"] = bench(lambda: fwd_bwd(ts.selective_scan_triton))
        if mamba_fn is not None:
            row["mamba_fwdbwd_ms"] = bench(lambda: fwd_bwd(mamba_fn))
        for k in ("fwd", "fwdbwd"):
            if f"mamba_{k}_ms" in row:
                row[f"speedup_{k}"] = row[f"mamba_{k}_ms"] / row[f"ours_{k}_ms"]
        log(json.dumps({k: v for k, v in row.items() if k != "sweep"}))
        rows.append(row)
        del x, leaves, dy
        torch.cuda.empty_cache()

    steps = []
    for batch in STEP_BATCHES:
        g = torch.Generator(device="cuda").manual_seed(batch)
        state = torch.randn(batch, E, N, device="cuda", generator=g)
        xs, dts, zs = (torch.randn(batch, E, device="cuda", generator=g).bfloat16() for _ in range(3))
        Bs, Cs = (torch.randn(batch, N, device="cuda", generator=g).bfloat16() for _ in range(2))
        A = -torch.rand(E, N, device="cuda", generator=g)
        D = torch.randn(E, device="cuda", generator=g)
        bias = torch.randn(E, device="cuda", generator=g)
        kw = dict(D=D, z=zs, dt_bias=bias, dt_softplus=True)
        row = dict(batch=batch, floor_ms=batch * E * N * 8 / COPY_BW * 1e3)
        row["ours_ms"] = bench(lambda: ts.selective_state_update_triton(state, xs, dts, A, Bs, Cs, **kw))
        if mamba_step is not None:
            row["mamba_ms"] = bench(lambda: mamba_step(state, xs, dts, A, Bs, Cs, **kw))
            row["speedup"] = row["mamba_ms"] / row["ours_ms"]
        log(json.dumps(row))
        steps.append(row)

    meta = dict(gpu=torch.cuda.get_device_name(0), torch=torch.__version__, triton=triton.__version__,
                cuda=torch.version.cuda, date=datetime.date.today().isoformat(), E=E, N=N, dtype="bfloat16",
                baseline="mamba_ssm 2.3.2.post1 selective_scan_fn / selective_state_update (sm_90 build)")
    (out / "scan_h200.json").write_text(json.dumps(dict(meta=meta, scan=rows, step=steps), indent=1))
    (out / "scan_h200.md").write_text(markdown(meta, rows, steps))
    print(markdown(meta, rows, steps))


def markdown(meta, rows, steps):
    def f(v):
        return "-" if v is None else f"{v:.3f}"

    lines = [f"# Selective scan on {meta['gpu']} ({meta['date']})", "",
             f"torch {meta['torch']}, triton {meta['triton']}, CUDA {meta['cuda']}; E={E}, N={N}, bf16, "
             f"softplus, z, D, delta_bias. Median ms of CUDA-event timings. Baseline: {meta['baseline']}.", "",
             "| Bt x L | floor fwd | ours fwd | mamba fwd | speedup | reference fwd | floor fwd+bwd | "
             "ours fwd+bwd | mamba fwd+bwd | speedup |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['batch']} x {r['L']} | {f(r['fwd_ms'])} | {f(r['ours_fwd_ms'])} | "
                     f"{f(r.get('mamba_fwd_ms'))} | {r.get('speedup_fwd', 0):.2f}x | {f(r.get('reference_fwd_ms'))} | "
                     f"{f(r['fwdbwd_ms'])} | {f(r['ours_fwdbwd_ms'])} | {f(r.get('mamba_fwdbwd_ms'))} | "
                     f"{r.get('speedup_fwdbwd', 0):.2f}x |")
    lines += ["", "reference fwd: the PyTorch reference scan (`mambaseq.ops.reference`), timed up to 65,536 tokens "
              "(-: not timed, about 1 s a call at 1 x 131072).",
              "", "One decoding step (state update), E=1536, N=16, fp32 state:", "",
              "| batch | floor | ours | mamba | speedup |", "|---|---|---|---|---|"]
    for r in steps:
        lines.append(f"| {r['batch']} | {f(r['floor_ms'])} | {f(r['ours_ms'])} | {f(r.get('mamba_ms'))} | "
                     f"{r.get('speedup', 0):.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
