"""Sweep the scan kernels' launch choices on one GPU at the benchmark shapes (scan_gpu.py's inputs).

    python3 benchmarks/scan_sweep.py segments OUT.jsonl [FWD_MODULE.py ...]
    python3 benchmarks/scan_sweep.py backward OUT.jsonl BE,NG,WARPS,SEGMENTS ...   (SEGMENTS x: the launcher's)

`segments` times the forward (with and without the checkpoints the backward reads) for several segment counts
per shape, for the shipped kernel or for variant files defining `scan_fwd`, and the backward for several segment
counts. `backward` times backward block configurations. Each row checks its outputs against the shape's first
row (max difference). One JSON line per measurement.
"""
import importlib.util
import json
import sys

import torch
from scan_gpu import SHAPES, bench, import_kernels, make_inputs

FWD_SEGMENTS = {(8, 2048): [None, 5, 6, 8], (8, 8192): [None, 5, 6, 8], (2, 32768): [None, 20, 22, 32],
                (1, 131072): [None, 40, 44, 64]}
BWD_SEGMENTS = {(8, 2048): [None], (8, 8192): [None], (2, 32768): [None, 5, 11, 22], (1, 131072): [None, 11, 22, 44]}


def max_rel_diff(got, ref):
    return max(((a.float() - r.float()).abs().max() / r.float().abs().max().clamp_min(1e-30)).item()
               for a, r in zip(got, ref) if a is not None)


def main():
    mode, out_path, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    scan_fwd, scan_bwd, ts = import_kernels()
    sm = torch.cuda.get_device_properties(0).multi_processor_count
    forwards = {"shipped": scan_fwd}
    if mode == "segments":
        for path in rest:
            spec = importlib.util.spec_from_file_location(path.split("/")[-1][:-3], path)
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            forwards[path.split("/")[-1][:-3]] = mod.scan_fwd
        bwd_configs = None
    else:
        bwd_configs = [tuple(None if v == "x" else int(v) for v in c.split(",")) for c in rest]
    fwd_kw = {k: v for k, v in ts.FWD_CONFIG.items() if k != "segments"}
    out = open(out_path, "w")

    def emit(row):
        print(json.dumps(row), flush=True)
        out.write(json.dumps(row) + "\n")
        out.flush()

    for batch, L in SHAPES:
        x, _ = make_inputs(batch, L)
        args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], None, None, True, False)
        dy = torch.randn_like(x["u"])
        shape = f"{batch}x{L}"
        ref = None
        for name, fwd in forwards.items():
            for sg in (FWD_SEGMENTS[(batch, L)] if mode == "segments" else [None]):
                y, _, ckpt = fwd(*args, store_hN=False, store_ckpt=True, sm_count=sm, segments=sg, **fwd_kw)
                ref = ref or (y, ckpt)
                if mode != "segments":
                    continue
                emit(dict(shape=shape, kind="fwd", variant=name, segments=sg, max_rel_diff=max_rel_diff((y, ckpt), ref),
                          fwd_ms=bench(lambda: fwd(*args, store_hN=False, store_ckpt=False, sm_count=sm,
                                                   segments=sg, **fwd_kw)),
                          fwd_ckpt_ms=bench(lambda: fwd(*args, store_hN=False, store_ckpt=True, sm_count=sm,
                                                        segments=sg, **fwd_kw))))
        ckpt = ref[1]
        if mode == "segments":
            base = {k: v for k, v in ts.BWD_CONFIG.items() if k != "segments"}
            configs = [(base["BE"], base["NG"], base["num_warps"], sg) for sg in BWD_SEGMENTS[(batch, L)]]
        else:
            configs = bwd_configs
        gref = None
        for BE, NG, nw, sg in configs:
            def call():
                return scan_bwd(dy, None, x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
                                None, ckpt, True, False, False, BE=BE, NG=NG, num_warps=nw, segments=sg, sm_count=sm)
            grads = call()
            gref = gref or grads
            emit(dict(shape=shape, kind="bwd", BE=BE, NG=NG, warps=nw, segments=sg,
                      max_rel_diff=max_rel_diff(grads, gref), bwd_ms=bench(call)))
        x = dy = ckpt = ref = gref = None  # free the shape's tensors before the next
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
