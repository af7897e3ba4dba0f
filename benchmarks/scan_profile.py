"""Run the Triton scan kernels a few times at one benchmark shape, for a profiler to read (no timing of its own).

    ncu --clock-control none --kernel-name regex:_fwd_kernel --launch-skip 4 --launch-count 2 --set full \
        python3 benchmarks/scan_profile.py --batch 8 --length 2048

With --time BE,NL,WARPS ... it instead prints the forward's median time (ms) for each of those block configurations.

Inputs as in scan_gpu.py (bf16, E=1536, N=16, softplus, z, D, delta_bias). Each repetition runs the forward with
the checkpoints the backward reads, then the backward; --forward-only skips the backward.
"""
import argparse

import torch
from scan_gpu import bench, import_kernels, make_inputs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=6)  # enough launches for ncu's --launch-skip 4 with --forward-only
    ap.add_argument("--forward-only", action="store_true")
    ap.add_argument("--time", nargs="+", default=[], metavar="BE,NL,WARPS")
    opts = ap.parse_args()
    scan_fwd, scan_bwd, ts = import_kernels()
    sm_count = torch.cuda.get_device_properties(0).multi_processor_count
    x, _ = make_inputs(opts.batch, opts.length)
    dy = torch.randn_like(x["u"])
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], None, None, True, False)
    for config in opts.time:
        BE, NL, nw = map(int, config.split(","))
        ms = bench(lambda: scan_fwd(*args, store_hN=False, store_ckpt=False, BE=BE, NL=NL, num_warps=nw,
                                    sm_count=sm_count))
        print(f"fwd {opts.batch}x{opts.length} BE={BE} NL={NL} warps={nw}: {ms:.3f} ms", flush=True)
    if opts.time:
        return
    for _ in range(opts.repeat):
        _, _, ckpt = scan_fwd(*args, store_hN=False, store_ckpt=not opts.forward_only, sm_count=sm_count,
                              **ts.FWD_CONFIG)
        if not opts.forward_only:
            scan_bwd(dy, None, x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], None,
                     ckpt, True, False, False, sm_count=sm_count, **ts.BWD_CONFIG)
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
