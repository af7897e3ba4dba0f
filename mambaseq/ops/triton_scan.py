"""Triton backend of the selective scan: the autograd binding of `mambaseq.kernels` (Mamba paper, section 3.3.2).

Glossary: Bt batch, E channels, L length, N d_state, G groups sharing B/C. The forward saves the state entering
each chunk of 4 positions (Bt, L/4, E, N; bf16 for long bf16 sequences, else fp32); the backward recomputes
everything else from those.

Same signatures and maths as `mambaseq.ops.reference`; gradients flow to u, delta, A, B, C, D, z,
delta_bias and initial_state (and from the returned final state). Imported only when the Triton backend is
chosen, so `import mambaseq` never imports triton.
"""
from __future__ import annotations

import torch

from mambaseq.kernels.selective_scan_bwd import backward_segments, scan_bwd
from mambaseq.kernels.selective_scan_fwd import STEPS, scan_fwd
from mambaseq.kernels.state_update import state_update

# Block sizes, measured on an H200 (benchmarks/NOTES.md): one warp per program, many programs per SM. The
# backward gives each channel NG lanes of N/NG states.
FWD_CONFIG = dict(BE=None, NL=1, num_warps=1)  # BE None: the launcher's `forward_block` (8 or 32 by the batch)
BWD_CONFIG = dict(BE=16, NG=4, num_warps=1)

_SM_COUNT: dict[int, int] = {}


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 132  # interpreter: any value gives the same results
    idx = device.index if device.index is not None else torch.cuda.current_device()
    if idx not in _SM_COUNT:
        _SM_COUNT[idx] = torch.cuda.get_device_properties(idx).multi_processor_count
    return _SM_COUNT[idx]


def _unit_last(x):
    """The kernels read u, delta, z, dout, resets with unit stride along the last axis."""
    return x if x is None or x.stride(-1) == 1 else x.contiguous()


def _check(u, A, B, C):
    E = u.shape[1]
    if B.dim() != C.dim() or (B.dim() == 4 and B.shape[1] != C.shape[1]):
        raise ValueError(f"B and C must share one layout; got {tuple(B.shape)} and {tuple(C.shape)}")
    if B.dim() == 4 and E % B.shape[1]:
        raise ValueError(f"{B.shape[1]} groups do not divide {E} channels")
    if A.dim() != 2 or A.shape[0] != E:
        raise ValueError(f"A must be (E, N) = ({E}, N); got {tuple(A.shape)}")


def _checkpoint_dtype(u, B, sm_count: int) -> torch.dtype:
    """bf16 checkpoints for bf16 inputs when the backward cuts L into segments (long sequences, few rows): there
    fwd+bwd measured 2-3% faster and the saved states take half the memory; with L kept whole it was 4% slower,
    and fp16/fp32 inputs keep their precision (NOTES.md item 17)."""
    if u.dtype != torch.bfloat16:
        return torch.float32
    Bt, E, L = u.shape
    EG = E // (1 if B.dim() == 3 else B.shape[1])
    n_chunks = -(-L // STEPS)
    segmented = backward_segments(Bt, E, EG, n_chunks, BWD_CONFIG["BE"], BWD_CONFIG["num_warps"], sm_count) > 1
    return torch.bfloat16 if segmented else torch.float32


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, initial_state, resets, softplus_, reverse, final_state):
        ctx.set_materialize_grads(False)  # an unused final state then costs nothing in the backward
        needs_grad = any(ctx.needs_input_grad[:9])
        # the final state only when asked for: storing it slowed the 8x2048 forward by 4% (NOTES.md item 20)
        y, hN, ckpt = scan_fwd(u, delta, A, B, C, D, z, delta_bias, initial_state, resets, softplus_,
                               reverse, store_hN=final_state, store_ckpt=needs_grad, sm_count=_sm_count(u.device),
                               ckpt_dtype=_checkpoint_dtype(u, B, _sm_count(u.device)), **FWD_CONFIG)
        if needs_grad:
            ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, resets, ckpt)
            ctx.softplus, ctx.reverse = softplus_, reverse
            ctx.has_h0 = initial_state is not None
        return y, hN

    @staticmethod
    def backward(ctx, dy, dhN):
        u, delta, A, B, C, D, z, delta_bias, resets, ckpt = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros_like(u)
        du, ddelta, dA, dB, dC, dD, dz, dbias, dh0 = scan_bwd(
            _unit_last(dy), None if dhN is None else dhN.float().contiguous(), u, delta, A, B, C, D, z, delta_bias,
            resets, ckpt, ctx.softplus, ctx.reverse, need_dh0=ctx.has_h0 and ctx.needs_input_grad[8],
            sm_count=_sm_count(u.device), **BWD_CONFIG)

        def cast(g, like):
            return None if g is None or like is None else g.to(like.dtype)

        return (du, ddelta, cast(dA, A), cast(dB, B), cast(dC, C), cast(dD, D), dz, cast(dbias, delta_bias),
                dh0, None, None, None, None)


def selective_scan_triton(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          initial_state=None, return_final_state=False, reverse=False, resets=None):
    """See `mambaseq.ops.selective_scan`: y (Bt, E, L) in u's dtype, or (y, final_state fp32)."""
    _check(u, A, B, C)
    h0 = None if initial_state is None else initial_state.float().contiguous()
    rs = None if resets is None else _unit_last(resets.bool()).view(torch.uint8)
    y, hN = _SelectiveScan.apply(
        _unit_last(u), _unit_last(delta), A.contiguous(), B, C, None if D is None else D.contiguous(),
        _unit_last(z), None if delta_bias is None else delta_bias.contiguous(), h0, rs, bool(delta_softplus),
        bool(reverse), bool(return_final_state))
    return (y, hN) if return_final_state else y


def selective_state_update_triton(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """See `mambaseq.ops.selective_state_update`: updates `state` (Bt, E, N) in place, returns y (Bt, E)."""
    if not state.is_contiguous():
        raise ValueError("state must be contiguous: it is updated in place")
    return state_update(state, _unit_last(x), _unit_last(dt), A if A.is_contiguous() else A.contiguous(),
                        _unit_last(B), _unit_last(C), D, _unit_last(z), dt_bias, dt_softplus)
