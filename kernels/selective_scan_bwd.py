"""Backward selective-scan kernel (Mamba paper, section 3.3.2: recomputation instead of stored states).

Glossary: Bt batch, E channels, L length, N d_state (= NT x NL: NL lanes, NT states per thread), G groups
sharing B/C (EG channels each), BE the channels of one program, S segments of L run in parallel, STEPS (= 4)
positions per chunk (the forward saves the state entering every chunk); a_t = exp(dt_t A), b_t = dt_t B_t u_t
as in the forward.

With dy_t = dout_t * silu(z_t), the adjoint of the state g_t = dLoss/dh_t obeys a reverse linear recurrence

    g_t = C_t dy_t + p_t,   p_t = a_{t+1} g_{t+1}   (p: the gradient reaching h_t from later steps)

and every gradient is a sum of local products:

    du_t  = D dy_t + dt_t <g_t, B_t>                 dC_t = sum_e dy_t h_t        dB_t = sum_e g_t dt_t u_t
    ddt_t = u_t <g_t, B_t> + <g_t a_t h_{t-1}, A>     dA   = sum_t g_t a_t h_{t-1} dt_t
    dD = sum_t dy_t u_t, dz_t = dout_t y_t silu'(z_t), ddelta = ddt sigmoid(delta + bias), dh_{-1} = a_0 g_0.

One program owns BE channels of one batch row (and one segment of L) and walks its chunks from last to first.
Per chunk it recomputes the 4 states h_0..h_3 step by step from the saved chunk-entry state, keeping states and
decays in registers, then walks the 4 steps backwards (g = p + C_t dy_t; the gradients at t; p = a_t g): one
exponential per element, no scan. dB and dC are summed over the block's channels in registers and written as
per-block partials (Bt, E/BE, N, L) that the launcher sums: no atomics. dA, dD and d(delta_bias) are summed
over the program's steps and written once per (batch row, segment, channel).

When Bt * E / BE programs cannot fill the GPU, L is cut into S segments, mirroring the forward's totals pass in
reverse: a first launch (TOTALS) runs each segment's adjoint from a zero carry and keeps the gradient p_s it
sends to the state entering the segment and the segment's decay product P_s; the main launch then starts
segment s from the exact carry, folded from the totals of segments S-1 .. s+1 (and the final state's gradient).
The totals pass needs no states (the adjoint does not depend on h): one exponential and two multiplies a step.
"""
import triton
import triton.language as tl

from mambaseq.kernels.selective_scan_fwd import (LOG2E, bc_strides, block_channels, pack4, softplus, state_index,
                                                unpack4)


@triton.jit
def nsum(x):
    """Sum over the states of an (NT, BE, NL) tile: (BE,)."""
    return tl.sum(tl.sum(x, axis=2), axis=0)


@triton.jit
def esum(x, BN: tl.constexpr):
    """Sum over the channels of an (NT, BE, NL) tile: (BN,) in state order n = nt * NL + nl."""
    return tl.reshape(tl.sum(x, axis=1), (BN,))


@triton.jit
def decay(dt2, keep, A):
    """a_t (NT, BE, NL) from dt2 = dt log2(e) (BE,) and keep (1,), 0 at a reset."""
    return tl.exp2(dt2[None, :, None] * A) * keep[:, None, None]


@triton.jit
def states(v, NT: tl.constexpr, NL: tl.constexpr):
    """A (BN,) vector of B or C broadcast to the (NT, 1, NL) state layout."""
    return tl.reshape(v, (NT, NL))[:, None, :]


@triton.jit
def adjoint_step(p, h, a, dt, dtu, dy, Bn, Cn, A, NT: tl.constexpr, NL: tl.constexpr, BN: tl.constexpr):
    """The gradients at one step, walking backwards; returns the carry p for the step before and
    (<g, B>, <g a h_prev, A>) per channel, (g dt u, h dy) summed over channels, g a h_prev dt."""
    B3 = states(Bn, NT, NL)
    g = p + states(Cn, NT, NL) * dy[None, :, None]
    # a h_prev rebuilt as h - b (0 up to one rounding of b behind a reset): keeping h_prev live as well would
    # cost another NT * BE * NL / 32 registers per thread and step, and the kernel is at 255 already
    gah = g * (h - dtu[None, :, None] * B3)
    gB = nsum(g * B3)
    gahA = nsum(gah * A)
    dB = esum(g * dtu[None, :, None], BN)
    dC = esum(h * dy[None, :, None], BN)
    return a * g, gB, gahA, dB, dC, gah * dt[None, :, None]


@triton.jit
def _bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, resets_ptr, ckpt_ptr, dout_ptr, seg_ptr,
    du_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr, dhN_ptr,
    E, L, N, EG, n_chunks, seg_chunks, S,
    s_ub, s_ue, s_db, s_de, s_zb, s_ze, s_ob, s_oe,
    s_Bb, s_Bg, s_Bn, s_Bl, s_Cb, s_Cg, s_Cn, s_Cl, s_rb,
    BE: tl.constexpr, NT: tl.constexpr, NL: tl.constexpr, BN: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_RESETS: tl.constexpr, REVERSE: tl.constexpr, HAS_DH0: tl.constexpr, HAS_DHN: tl.constexpr,
    TOTALS: tl.constexpr, HAS_SEG: tl.constexpr,
):
    # The forward's layout (see its comment): (NT, BE, NL) state tiles, (BE, 4) tiles of u/delta/z/dout with the
    # 4 steps of a chunk unpacked by `tl.split`, (N, 4) tiles of B/C. With NL > 1 a thread holds several
    # channels (BE > 32 / NL), so the sums over channels for dB/dC are mostly in-thread adds.
    n_eb = tl.cdiv(E, BE)
    pid = tl.program_id(0)
    b = pid // n_eb
    eb = pid % n_eb
    e0 = eb * BE
    s = tl.program_id(1)
    offs_e = e0 + tl.arange(0, BE)
    mask_e = offs_e < E
    e3, n3 = state_index(offs_e, NT, NL)  # (1, BE, 1), (NT, 1, NL)
    mask3 = (e3 < E) & (n3 < N)
    g_idx = e0 // EG  # the launcher keeps all BE channels in one group

    A = tl.load(A_ptr + e3 * N + n3, mask=mask3, other=0.0).to(tl.float32)  # (NT, BE, NL)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    u_ptr += b * s_ub
    dt_ptr += b * s_db
    dout_ptr += b * s_ob
    z_ptr += b * s_zb
    B_ptr += b * s_Bb + g_idx * s_Bg
    C_ptr += b * s_Cb + g_idx * s_Cg
    state_off = (b * E + e3) * N + n3  # into (Bt, E, N)
    seg_state = ((b * S + s) * E + e3) * N + n3  # into (Bt, S, E, N)
    grad_off = (b * E + offs_e[:, None]) * L  # (BE, 1): du, ddelta, dz are fresh contiguous (Bt, E, L)
    n2 = tl.arange(0, BN)
    part_off = ((b * n_eb + eb) * N + n2[:, None]) * L  # (BN, 1): dB/dC partials (Bt, E/BE, N, L)

    # p: the gradient reaching the state that leaves the chunk about to be walked
    if HAS_DHN and not TOTALS:
        p = tl.load(dhN_ptr + state_off, mask=mask3, other=0.0)
    else:
        p = tl.zeros((NT, BE, NL), dtype=tl.float32)
    if TOTALS:
        a_run = tl.full((NT, BE, NL), 1.0, dtype=tl.float32)
    elif HAS_SEG:
        for jj in range(0, S - 1 - s):  # segments S-1 .. s+1 pass their carry through their decay product
            j = S - 1 - jj
            tot = ((b * S + j) * E + e3) * N + n3
            p = tl.load(seg_ptr + 2 * tot + 1, mask=mask3, other=0.0) + \
                tl.load(seg_ptr + 2 * tot, mask=mask3, other=0.0) * p
    dA_acc = tl.zeros((NT, BE, NL), dtype=tl.float32)
    dD_acc = tl.zeros((BE, 4), dtype=tl.float32)
    dbias_acc = tl.zeros((BE, 4), dtype=tl.float32)

    c0 = s * seg_chunks
    c1 = tl.minimum(c0 + seg_chunks, n_chunks)
    for ci in range(c0, c1):
        c = c1 - 1 - (ci - c0)
        t = c * 4 + tl.arange(0, 4)
        mask_t = t < L
        if REVERSE:
            tm = L - 1 - t
        else:
            tm = t
        m2 = mask_e[:, None] & mask_t[None, :]  # (BE, 4)
        xdt = tl.load(dt_ptr + offs_e[:, None] * s_de + tm[None, :], mask=m2, other=0.0).to(tl.float32)
        if HAS_BIAS:
            xdt += bias[:, None]
        dt = xdt
        if SOFTPLUS:
            dt = softplus(dt)
        dt = tl.where(m2, dt, 0.0)  # masked steps: a = 1, b = 0, no gradient
        dout = tl.load(dout_ptr + offs_e[:, None] * s_oe + tm[None, :], mask=m2, other=0.0).to(tl.float32)
        if HAS_Z:
            zv = tl.load(z_ptr + offs_e[:, None] * s_ze + tm[None, :], mask=m2, other=0.0).to(tl.float32)
            sz = tl.sigmoid(zv)
            dy = dout * zv * sz
        else:
            dy = dout
        mnt = (n2 < N)[:, None] & mask_t[None, :]  # (BN, 4)
        Ct = tl.load(C_ptr + n2[:, None] * s_Cn + tm[None, :] * s_Cl, mask=mnt, other=0.0).to(tl.float32)
        dt0, dt1, dt2, dt3 = unpack4(dt, BE)
        dl0, dl1, dl2, dl3 = unpack4(dt * LOG2E, BE)
        dy0, dy1, dy2, dy3 = unpack4(dy, BE)
        C0, C1, C2, C3 = unpack4(Ct, BN)
        if HAS_RESETS:  # keep = 0 at the first step of a packed sequence: no gradient flows back across it
            if REVERSE:
                rm = tm + 1
            else:
                rm = tm
            r = tl.load(resets_ptr + b * s_rb + rm, mask=mask_t & (rm < L), other=0)
            k0, k1, k2, k3 = unpack4(tl.where(r != 0, 0.0, 1.0)[None, :], 1)
        else:
            k0 = tl.full((1,), 1.0, tl.float32)
            k1 = k0
            k2 = k0
            k3 = k0
        if TOTALS:  # the adjoint alone: g = p + C dy, p = a g
            a = decay(dl3, k3, A)
            p = a * (p + states(C3, NT, NL) * dy3[None, :, None])
            a_run *= a
            a = decay(dl2, k2, A)
            p = a * (p + states(C2, NT, NL) * dy2[None, :, None])
            a_run *= a
            a = decay(dl1, k1, A)
            p = a * (p + states(C1, NT, NL) * dy1[None, :, None])
            a_run *= a
            a = decay(dl0, k0, A)
            p = a * (p + states(C0, NT, NL) * dy0[None, :, None])
            a_run *= a
        else:
            u = tl.load(u_ptr + offs_e[:, None] * s_ue + tm[None, :], mask=m2, other=0.0).to(tl.float32)
            dtu = dt * u
            du0, du1, du2, du3 = unpack4(dtu, BE)
            Bt = tl.load(B_ptr + n2[:, None] * s_Bn + tm[None, :] * s_Bl, mask=mnt, other=0.0).to(tl.float32)
            B0, B1, B2, B3 = unpack4(Bt, BN)
            # recompute the chunk's states from the state entering it, exactly as the forward did
            hc = tl.load(ckpt_ptr + ((b * n_chunks + c) * E + e3) * N + n3, mask=mask3, other=0.0)
            a0 = decay(dl0, k0, A)
            h0 = a0 * hc + du0[None, :, None] * states(B0, NT, NL)
            a1 = decay(dl1, k1, A)
            h1 = a1 * h0 + du1[None, :, None] * states(B1, NT, NL)
            a2 = decay(dl2, k2, A)
            h2 = a2 * h1 + du2[None, :, None] * states(B2, NT, NL)
            a3 = decay(dl3, k3, A)
            h3 = a3 * h2 + du3[None, :, None] * states(B3, NT, NL)
            # walk the chunk backwards
            p, gB3, gahA3, dB3, dC3, dA3 = adjoint_step(p, h3, a3, dt3, du3, dy3, B3, C3, A, NT, NL, BN)
            p, gB2, gahA2, dB2, dC2, dA2 = adjoint_step(p, h2, a2, dt2, du2, dy2, B2, C2, A, NT, NL, BN)
            p, gB1, gahA1, dB1, dC1, dA1 = adjoint_step(p, h1, a1, dt1, du1, dy1, B1, C1, A, NT, NL, BN)
            p, gB0, gahA0, dB0, dC0, dA0 = adjoint_step(p, h0, a0, dt0, du0, dy0, B0, C0, A, NT, NL, BN)
            dA_acc += (dA0 + dA1) + (dA2 + dA3)
            gB = pack4(gB0, gB1, gB2, gB3, BE)  # (BE, 4)
            du = dt * gB
            ddt = u * gB + pack4(gahA0, gahA1, gahA2, gahA3, BE)
            if HAS_D:
                du += Dv[:, None] * dy
                dD_acc += dy * u
            if HAS_Z:  # y before the gate, for dz
                y = pack4(nsum(h0 * states(C0, NT, NL)), nsum(h1 * states(C1, NT, NL)),
                          nsum(h2 * states(C2, NT, NL)), nsum(h3 * states(C3, NT, NL)), BE)
                if HAS_D:
                    y += Dv[:, None] * u
                dz = dout * y * sz * (1.0 + zv * (1.0 - sz))
                tl.store(dz_ptr + grad_off + tm[None, :], dz.to(dz_ptr.dtype.element_ty), mask=m2)
            if SOFTPLUS:
                ddt = ddt * tl.sigmoid(xdt)
            ddt = tl.where(m2, ddt, 0.0)
            if HAS_BIAS:
                dbias_acc += ddt
            tl.store(du_ptr + grad_off + tm[None, :], du.to(du_ptr.dtype.element_ty), mask=m2)
            tl.store(ddt_ptr + grad_off + tm[None, :], ddt.to(ddt_ptr.dtype.element_ty), mask=m2)
            tl.store(dB_ptr + part_off + tm[None, :], pack4(dB0, dB1, dB2, dB3, BN), mask=mnt)
            tl.store(dC_ptr + part_off + tm[None, :], pack4(dC0, dC1, dC2, dC3, BN), mask=mnt)

    if TOTALS:
        tl.store(seg_ptr + 2 * seg_state, a_run, mask=mask3)
        tl.store(seg_ptr + 2 * seg_state + 1, p, mask=mask3)
    else:
        tl.store(dA_ptr + seg_state, dA_acc, mask=mask3)
        seg_e = (b * S + s) * E + offs_e
        if HAS_D:
            tl.store(dD_ptr + seg_e, tl.sum(dD_acc, axis=1), mask=mask_e)
        if HAS_BIAS:
            tl.store(dbias_ptr + seg_e, tl.sum(dbias_acc, axis=1), mask=mask_e)
        if HAS_DH0:
            if s == 0:
                tl.store(dh0_ptr + state_off, p, mask=mask3)


def scan_bwd(dout, dhN, u, dt, A, B, C, D, z, bias, resets, ckpt, softplus_, reverse, need_dh0,
             BE=32, NL=4, segments=None, num_warps=1):
    """Launch the backward; returns (du, ddelta, dA, dB, dC, dD, dz, dbias, dh0) (None where not needed).

    `ckpt` (Bt, L/STEPS, E, N) are the chunk-entry states the forward saved; dhN (Bt, E, N) fp32 or None is the
    gradient of the final state. `segments` None cuts L in 16 segments where each gets >= 8 chunks: more
    one-warp programs hide more latency, and the totals pass costs a third of the main pass.
    """
    import torch

    Bt, E, L = u.shape
    N = A.shape[1]
    G = 1 if B.dim() == 3 else B.shape[1]
    EG = E // G
    BE = block_channels(E, EG, BE)
    BN = triton.next_power_of_2(N)
    NL = min(NL, BN)
    n_eb = triton.cdiv(E, BE)
    n_chunks = ckpt.shape[1]
    if segments is None:  # 16 was the best of 1 to 16 at every benchmark shape (NOTES.md), >= 8 chunks each
        segments = 16
        while segments > 1 and n_chunks // segments < 8:
            segments //= 2
    seg_chunks = triton.cdiv(n_chunks, segments)
    S = triton.cdiv(n_chunks, seg_chunks)
    dev = u.device
    f32 = dict(device=dev, dtype=torch.float32)
    du = torch.empty(Bt, E, L, device=dev, dtype=u.dtype)
    ddt = torch.empty(Bt, E, L, device=dev, dtype=dt.dtype)
    dz = torch.empty(Bt, E, L, device=dev, dtype=z.dtype) if z is not None else None
    dBp = torch.empty(Bt, n_eb, N, L, **f32)
    dCp = torch.empty(Bt, n_eb, N, L, **f32)
    dA = torch.empty(Bt, S, E, N, **f32)
    dD = torch.empty(Bt, S, E, **f32) if D is not None else None
    dbias = torch.empty(Bt, S, E, **f32) if bias is not None else None
    dh0 = torch.empty(Bt, E, N, **f32) if need_dh0 else None
    seg = torch.empty(Bt, S, E, N, 2, **f32) if S > 1 else None
    zz = z if z is not None else u
    rr = resets if resets is not None else u
    args = (u, dt, A, B, C, D, zz, bias, rr, ckpt, dout, seg,
            du, ddt, dz, dBp, dCp, dA, dD, dbias, dh0, dhN,
            E, L, N, EG, n_chunks, seg_chunks, S,
            u.stride(0), u.stride(1), dt.stride(0), dt.stride(1), zz.stride(0), zz.stride(1),
            dout.stride(0), dout.stride(1), *bc_strides(B), *bc_strides(C), rr.stride(0))
    flags = dict(BE=BE, NT=BN // NL, NL=NL, BN=BN, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None,
                 SOFTPLUS=softplus_, HAS_RESETS=resets is not None, REVERSE=reverse, HAS_DH0=need_dh0,
                 HAS_DHN=dhN is not None, HAS_SEG=S > 1, num_warps=num_warps)
    grid = (Bt * n_eb, S)
    if S > 1:
        _bwd_kernel[grid](*args, TOTALS=True, **flags)
    _bwd_kernel[grid](*args, TOTALS=False, **flags)
    # blocks of one group are consecutive: (Bt, G, blocks per group, N, L) -> sum over blocks
    dB = dBp.view(Bt, G, n_eb // G, N, L).sum(2)
    dC = dCp.view(Bt, G, n_eb // G, N, L).sum(2)
    if B.dim() == 3:
        dB = dB[:, 0]
    if C.dim() == 3:
        dC = dC[:, 0]
    return (du, ddt, dA.sum((0, 1)), dB, dC, None if dD is None else dD.sum((0, 1)), dz,
            None if dbias is None else dbias.sum((0, 1)), dh0)
