"""One-step selective-state update for decoding and streaming (Mamba paper, section 3.4: recurrent mode).

Glossary: Bt batch, E channels, N d_state, G groups sharing B/C (EG channels each), BE/BN the block sizes.

    dt = softplus(dt + dt_bias);  state = exp(dt A) * state + dt B x;  y = (<C, state> + D x) * silu(z)

The state (Bt, E, N) is updated in place, so this kernel is never autotuned: an autotuner would run it
several times on the same state. The launcher does as little host work as it can, because at batch 1 the
step costs less GPU time than a launch.
"""
import triton
import triton.language as tl

from mambaseq.kernels.selective_scan_fwd import LOG2E, softplus


@triton.jit
def _state_update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr,
    E, N, EG, s_sb, s_xb, s_db, s_zb, s_Bb, s_Bg, s_Cb, s_Cg,
    BE: tl.constexpr, BN: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
):
    b = tl.program_id(1)
    offs_e = tl.program_id(0) * BE + tl.arange(0, BE)
    offs_n = tl.arange(0, BN)
    mask_e = offs_e < E
    mask_n = offs_n < N
    mask_en = mask_e[:, None] & mask_n[None, :]
    g = offs_e // EG  # per channel: a block may straddle groups here, B/C are tiny
    s_ptrs = state_ptr + b * s_sb + offs_e[:, None] * N + offs_n[None, :]
    state = tl.load(s_ptrs, mask=mask_en, other=0.0).to(tl.float32)  # (BE, BN)
    x = tl.load(x_ptr + b * s_xb + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + b * s_db + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    if HAS_BIAS:
        dt += tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dt = softplus(dt)
    A = tl.load(A_ptr + offs_e[:, None] * N + offs_n[None, :], mask=mask_en, other=0.0).to(tl.float32)
    Bv = tl.load(B_ptr + b * s_Bb + g[:, None] * s_Bg + offs_n[None, :], mask=mask_en, other=0.0).to(tl.float32)
    Cv = tl.load(C_ptr + b * s_Cb + g[:, None] * s_Cg + offs_n[None, :], mask=mask_en, other=0.0).to(tl.float32)
    state = tl.exp2(A * (dt * LOG2E)[:, None]) * state + (dt * x)[:, None] * Bv
    tl.store(s_ptrs, state.to(state_ptr.dtype.element_ty), mask=mask_en)
    y = tl.sum(state * Cv, axis=1)
    if HAS_D:
        y += tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32) * x
    if HAS_Z:
        z = tl.load(z_ptr + b * s_zb + offs_e, mask=mask_e, other=0.0).to(tl.float32)
        y *= z * tl.sigmoid(z)
    tl.store(y_ptr + b * E + offs_e, y.to(y_ptr.dtype.element_ty), mask=mask_e)


def state_update(state, x, dt, A, B, C, D, z, bias, softplus_):
    """Update `state` (Bt, E, N) in place and return y (Bt, E). x, dt, z (Bt, E) with unit E stride;
    B, C (Bt, N) or (Bt, G, N) with unit N stride; state and A contiguous in (E, N)."""
    import torch

    Bt, E = x.shape
    N = A.shape[1]
    G = 1 if B.dim() == 2 else B.shape[1]
    BN = triton.next_power_of_2(N)
    BE = max(min(512 // BN, 64), 1)  # 32 channels x 16 states per program: 48 programs at batch 1, E=1536
    y = torch.empty((Bt, E), device=x.device, dtype=x.dtype)
    zz = z if z is not None else x
    s_Bg = B.stride(1) if B.dim() == 3 else 0
    s_Cg = C.stride(1) if C.dim() == 3 else 0
    _state_update_kernel[(triton.cdiv(E, BE), Bt)](
        state, x, dt, A, B, C, D, zz, bias, y,
        E, N, E // G, state.stride(0), x.stride(0), dt.stride(0), zz.stride(0),
        B.stride(0), s_Bg, C.stride(0), s_Cg,
        BE=BE, BN=BN, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None,
        SOFTPLUS=softplus_, num_warps=4)
    return y
