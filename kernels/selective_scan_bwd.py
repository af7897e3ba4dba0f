"""Backward selective-scan kernel (Mamba paper, section 3.3.2: recomputation instead of stored states).

Glossary: Bt batch, E channels, L length, N d_state (BN = NG x NQ x R its power-of-two padding: NG lanes per
channel, each holding NQ vectors of R <= 4 states), G groups sharing B/C (EG channels each), BE the channels of
one program, S segments of L run in parallel, STEPS (= 4) positions per chunk (the forward saves the state
entering every chunk); a_t = exp(dt_t A), b_t = dt_t B_t u_t as in the forward.

With dy_t = dout_t * silu(z_t), the adjoint of the state g_t = dLoss/dh_t obeys a reverse linear recurrence

    g_t = C_t dy_t + p_t,   p_t = a_{t+1} g_{t+1}   (p: the gradient reaching h_t from later steps)

and every gradient is a sum of local products:

    du_t  = D dy_t + dt_t <g_t, B_t>                 dC_t = sum_e dy_t h_t        dB_t = sum_e g_t dt_t u_t
    ddt_t = u_t <g_t, B_t> + <g_t a_t h_{t-1}, A>     dA   = sum_t g_t a_t h_{t-1} dt_t
    dD = sum_t dy_t u_t, dz_t = dout_t y_t silu'(z_t), ddelta = ddt sigmoid(delta + bias), dh_{-1} = a_0 g_0.

One program owns BE channels of one batch row (and one segment of L) and walks its chunks from last to first.
Per chunk it recomputes the 4 states h_0..h_3 step by step from the saved chunk-entry state, keeping states and
decays in registers, then walks the 4 steps backwards (g = p + C_t dy_t; the gradients at t; p = a_t g): one
exponential per element (the walk reuses the recomputation's decays), no scan. The gradients need sums over N
(<g, B>, <g a h, A>, y) and over channels (dB, dC): with NG lanes per channel (N/NG states each) a sum over N
costs log2(NG) shuffle levels, and the NG lanes of a channel each compute its per-step values (softplus, gates).
NG = 4 measured 2-6% faster than NG = 2 on the H200 at the benchmark shapes (benchmarks/NOTES.md).
dB and dC are summed over the block's channels and added into (Bt, G, n_chunks, 4, BN) with relaxed 16-byte
atomics: 4-6% faster than writing per-block partials for a torch sum (NOTES.md item 18), at the price of a summation
order that varies between runs (fp32 rounding, ~1e-7 relative). dA, dD and d(delta_bias) are summed over the
program's steps and written once per (batch row, segment, channel).

When Bt * E / BE programs cannot fill the GPU, L is cut into S segments, mirroring the forward's totals pass in
reverse: a first launch (TOTALS) runs the adjoint of each segment but the first from a zero carry and keeps the
gradient p_s it sends to the state entering the segment and the segment's decay product P_s; the main launch
then starts segment s from the exact carry, folded from the totals of segments S-1 .. s+1 (and the final
state's gradient).
The totals pass needs no states (the adjoint does not depend on h) and no sums: it runs with NG = 1, one lane
per channel like the forward, at one exponential and three multiply-adds a step.
"""
import triton
import triton.language as tl

from mambaseq.kernels.selective_scan_fwd import (LOG2E, STEPS, block_channels, block_steps, load_keep, pack4,
                                                sigmoid, softplus, softplus_sigmoid, unpack4)


@triton.jit
def load_steps(ptr, off, BN: tl.constexpr):
    """A chunk's 4 steps of B or C from `chunk_major` (4 contiguous vectors of BN states), each in the state
    layout: `off` has a stride-0 channel axis, so every thread loads the states it holds (no broadcast through
    shuffles or shared memory)."""
    return tl.load(ptr + off), tl.load(ptr + BN + off), tl.load(ptr + 2 * BN + off), tl.load(ptr + 3 * BN + off)


@triton.jit
def col(x):
    """An (NG, BE) tile of per-channel values as an (NG, BE, 1, 1) tile, to scale state tiles."""
    return x[:, :, None, None]


@triton.jit
def nsum(x):
    """Sum over the states of an (NG, BE, NQ, R) tile: (BE,)."""
    return tl.sum(tl.sum(tl.sum(x, axis=3), axis=2), axis=0)


@triton.jit
def decay(dt, A2, keep, HAS_RESETS: tl.constexpr):
    """a_t (NG, BE, NQ, R) from dt (NG, BE) and keep (1,), 0 at a reset."""
    a = tl.exp2(col(dt) * A2)
    if HAS_RESETS:
        a *= keep[:, None, None, None]
    return a


@triton.jit
def adjoint_step(p, h_prev, h, dt, dtu, dy, Bt, Ct, A2, keep, HAS_RESETS: tl.constexpr):
    """The gradients at one step, walking backwards: the carry p for the step before, <g, B> and <g a h_prev, A2>
    per channel (BE,), g dt u and h dy summed over channels (NG, NQ, R), and g a h_prev dt (dA's term)."""
    a = decay(dt, A2, keep, HAS_RESETS)  # the compiler reuses the recomputation's
    g = p + Ct * col(dy)
    ga = g * a
    gah = ga * h_prev
    dB = tl.sum(g * col(dtu), axis=1)
    dC = tl.sum(h * col(dy), axis=1)
    return ga, nsum(g * Bt), nsum(gah * A2), dB, dC, gah * col(dt)


@triton.jit
def load_chunk(c, c0, L, dt_ptr, dout_ptr, z_ptr, u_ptr, ckpt_ptr, et, m_e, s_de, s_oe, s_ze, s_ue,
               b, n_chunks, EN, st, mask4, REVERSE: tl.constexpr, HAS_Z: tl.constexpr, MAIN: tl.constexpr):
    """Chunk c's delta, dout, z, u tiles (NG, BE, 4) as stored and its entering state (main pass); all masked off
    when c < c0 (no chunk left). z and u not wanted: delta stands in; the state: zeros."""
    tm, mask_t = block_steps(c, L, 4, REVERSE)
    m3t = m_e & (mask_t & (tm * 0 + c >= c0))[None, None, :]  # full-shape: the interpreter takes no scalar mask
    xdt = tl.load(dt_ptr + et * s_de + tm[None, None, :], mask=m3t, other=0.0)
    dout = tl.load(dout_ptr + et * s_oe + tm[None, None, :], mask=m3t, other=0.0)
    zv = xdt
    u = xdt
    if HAS_Z:
        zv = tl.load(z_ptr + et * s_ze + tm[None, None, :], mask=m3t, other=0.0)
    hc = tl.zeros(st.shape, tl.float32)
    if MAIN:
        u = tl.load(u_ptr + et * s_ue + tm[None, None, :], mask=m3t, other=0.0)
        hc = tl.load(ckpt_ptr + (b * n_chunks + c).to(tl.int64) * EN + st, mask=mask4 & (st * 0 + c >= c0),
                     other=0.0).to(tl.float32)
    return xdt, dout, zv, u, hc


@triton.jit
def _bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, resets_ptr, ckpt_ptr, dout_ptr, seg_ptr,
    du_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr, dhN_ptr,
    E, L, EG, G, n_chunks, seg_chunks, S,
    s_ub, s_ue, s_db, s_de, s_zb, s_ze, s_ob, s_oe, s_rb,
    N: tl.constexpr, BE: tl.constexpr, NG: tl.constexpr, NQ: tl.constexpr, R: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_RESETS: tl.constexpr, REVERSE: tl.constexpr, HAS_DH0: tl.constexpr, HAS_DHN: tl.constexpr,
    TOTALS: tl.constexpr, HAS_SEG: tl.constexpr, GATE_FROM_SOFTPLUS: tl.constexpr,
):
    # Triton takes the layouts from the loads and stores (vectors along the contiguous axis, then lanes over the
    # remaining axes in order). State tiles are (NG, BE, NQ, R), state n = (g NQ + q) R + r, with R states
    # contiguous in memory; per-step tiles (NG, BE, 4) and a step's B/C (NG, BE, NQ, R) carry a stride-0 axis.
    # All of them get "lanes over (NG, channels); states, steps and further channels in registers", so the loop
    # runs in one layout and the only cross-lane traffic is the sums' shuffles. The price: the NG lanes of a
    # channel all compute its per-step values (softplus, gates).
    BN: tl.constexpr = NG * NQ * R
    n_eb = tl.cdiv(E, BE)
    pid = tl.program_id(0)
    b = pid // n_eb
    eb = pid % n_eb
    e0 = eb * BE
    s = tl.program_id(1)
    if TOTALS:  # no segment reads segment 0's totals: the TOTALS launch starts at segment 1
        s += 1
    offs_e = e0 + tl.arange(0, BE)
    ng = tl.arange(0, NG)[:, None, None, None]
    e4 = offs_e[None, :, None, None]  # (1, BE, 1, 1)
    n4 = (ng * NQ + tl.arange(0, NQ)[None, None, :, None]) * R + tl.arange(0, R)[None, None, None, :]  # (NG, 1, NQ, R)
    mask4 = (e4 < E) & (n4 < N)
    st = e4 * N + n4  # into one (E, N) block of states
    EN = E * N
    et = tl.zeros((NG, 1, 1), tl.int32) + offs_e[None, :, None]  # (NG, BE, 1): every lane group a copy
    m_e = et < E
    first = (tl.arange(0, NG)[:, None, None] == 0) & m_e  # lane group 0 writes the per-channel outputs
    bc = tl.zeros((1, BE, 1, 1), tl.int32) + n4  # (NG, BE, NQ, R) states, stride 0 over channels

    A2 = tl.load(A_ptr + st, mask=mask4, other=0.0).to(tl.float32) * LOG2E  # (NG, BE, NQ, R)
    if HAS_D:
        Dv = tl.load(D_ptr + et, mask=m_e, other=0.0).to(tl.float32)  # (NG, BE, 1)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + et, mask=m_e, other=0.0).to(tl.float32)
    u_ptr += b.to(tl.int64) * s_ub
    dt_ptr += b.to(tl.int64) * s_db
    dout_ptr += b.to(tl.int64) * s_ob
    z_ptr += b.to(tl.int64) * s_zb
    resets_ptr += b.to(tl.int64) * s_rb
    grad_off = (b * E + et).to(tl.int64) * L  # (NG, BE, 1): du, ddelta, dz are fresh contiguous (Bt, E, L)
    bc_chunk = (b * G + e0 // EG).to(tl.int64) * n_chunks  # the launcher keeps all BE channels in one group
    one = (et == e0)[:, :, :, None]  # (NG, BE, 1, 1): one lane row adds the block's dB/dC sums

    # p: the gradient reaching the state that leaves the chunk about to be walked
    if HAS_DHN and not TOTALS:
        p = tl.load(dhN_ptr + b * EN + st, mask=mask4, other=0.0)
    else:
        p = tl.zeros((NG, BE, NQ, R), dtype=tl.float32)
    if TOTALS:
        dt_sum = tl.zeros((NG, BE), dtype=tl.float32)  # the decay product over the segment is exp2(A2 sum(dt))
        kept = tl.full((1,), 1.0, tl.float32)  # 0 once a reset cut the segment
    elif HAS_SEG:
        for jj in range(0, S - 1 - s):  # segments S-1 .. s+1 pass their carry through their decay product
            tot = seg_ptr + (b * S + S - 1 - jj).to(tl.int64) * (2 * EN) + st  # (Bt, S, 2, E, N)
            p = tl.load(tot + EN, mask=mask4, other=0.0) + tl.load(tot, mask=mask4, other=0.0) * p
    dA_acc = tl.zeros((NG, BE, NQ, R), dtype=tl.float32)
    dD_acc = tl.zeros((NG, BE, 4), dtype=tl.float32)
    dbias_acc = tl.zeros((NG, BE, 4), dtype=tl.float32)

    c0 = s * seg_chunks
    c1 = tl.minimum(c0 + seg_chunks, n_chunks)
    nxt = load_chunk(c1 - 1, c0, L, dt_ptr, dout_ptr, z_ptr, u_ptr, ckpt_ptr, et, m_e, s_de, s_oe, s_ze, s_ue,
                     b, n_chunks, EN, st, mask4, REVERSE, HAS_Z, not TOTALS)
    for ci in range(c0, c1):
        c = c1 - 1 - (ci - c0)
        tm, mask_t = block_steps(c, L, 4, REVERSE)
        m3t = m_e & mask_t[None, None, :]  # (NG, BE, 4)
        # the next chunk's loads go out now, so their latency hides behind this chunk's arithmetic
        xdt_r, dout_r, z_r, u_r, hc = nxt
        nxt = load_chunk(c - 1, c0, L, dt_ptr, dout_ptr, z_ptr, u_ptr, ckpt_ptr, et, m_e, s_de, s_oe, s_ze,
                         s_ue, b, n_chunks, EN, st, mask4, REVERSE, HAS_Z, not TOTALS)
        xdt = xdt_r.to(tl.float32)
        if HAS_BIAS:
            xdt += bias
        dt = xdt
        if SOFTPLUS:
            if GATE_FROM_SOFTPLUS:  # d softplus(x) / dx = sigmoid(x), for ddelta, from softplus's exponential
                dt, dt_gate = softplus_sigmoid(xdt)
            else:
                dt = softplus(xdt)
        dt = tl.where(m3t, dt, 0.0)  # masked steps: a = 1, b = 0, no gradient
        dout = dout_r.to(tl.float32)
        if HAS_Z:
            zv = z_r.to(tl.float32)
            sz = sigmoid(zv)
            dy = dout * zv * sz
        else:
            dy = dout
        dt0, dt1, dt2, dt3 = unpack4(dt, (NG, BE))
        dy0, dy1, dy2, dy3 = unpack4(dy, (NG, BE))
        C0, C1, C2, C3 = load_steps(C_ptr + (bc_chunk + c) * (4 * BN), bc, BN)
        if HAS_RESETS:  # keep = 0 at the first step of a packed sequence: no gradient flows back across it
            k0, k1, k2, k3 = load_keep(resets_ptr, tm, mask_t, L, REVERSE)
        else:
            k0, k1, k2, k3 = 1.0, 1.0, 1.0, 1.0  # unused
        if TOTALS:  # the adjoint alone: g = p + C dy, p = a g
            p = decay(dt3, A2, k3, HAS_RESETS) * (p + C3 * col(dy3))
            p = decay(dt2, A2, k2, HAS_RESETS) * (p + C2 * col(dy2))
            p = decay(dt1, A2, k1, HAS_RESETS) * (p + C1 * col(dy1))
            p = decay(dt0, A2, k0, HAS_RESETS) * (p + C0 * col(dy0))
            if HAS_RESETS:
                kept *= k0 * k1 * k2 * k3
            dt_sum += tl.sum(dt, axis=2)
        else:
            u = u_r.to(tl.float32)
            dtu = dt * u
            du0, du1, du2, du3 = unpack4(dtu, (NG, BE))
            B0, B1, B2, B3 = load_steps(B_ptr + (bc_chunk + c) * (4 * BN), bc, BN)
            # recompute the chunk's states from the state entering it, exactly as the forward did
            h0 = decay(dt0, A2, k0, HAS_RESETS) * hc + col(du0) * B0
            h1 = decay(dt1, A2, k1, HAS_RESETS) * h0 + col(du1) * B1
            h2 = decay(dt2, A2, k2, HAS_RESETS) * h1 + col(du2) * B2
            h3 = decay(dt3, A2, k3, HAS_RESETS) * h2 + col(du3) * B3
            # walk the chunk backwards; dB and dC (summed over the block's channels) go out step by step
            part = (bc_chunk + c) * (4 * BN) + bc
            p, gB3, gahA3, dB, dC, dA3 = adjoint_step(p, h2, h3, dt3, du3, dy3, B3, C3, A2, k3, HAS_RESETS)
            tl.atomic_add(dB_ptr + part + 3 * BN, dB[:, None], mask=one, sem='relaxed')
            tl.atomic_add(dC_ptr + part + 3 * BN, dC[:, None], mask=one, sem='relaxed')
            p, gB2, gahA2, dB, dC, dA2 = adjoint_step(p, h1, h2, dt2, du2, dy2, B2, C2, A2, k2, HAS_RESETS)
            tl.atomic_add(dB_ptr + part + 2 * BN, dB[:, None], mask=one, sem='relaxed')
            tl.atomic_add(dC_ptr + part + 2 * BN, dC[:, None], mask=one, sem='relaxed')
            p, gB1, gahA1, dB, dC, dA1 = adjoint_step(p, h0, h1, dt1, du1, dy1, B1, C1, A2, k1, HAS_RESETS)
            tl.atomic_add(dB_ptr + part + BN, dB[:, None], mask=one, sem='relaxed')
            tl.atomic_add(dC_ptr + part + BN, dC[:, None], mask=one, sem='relaxed')
            p, gB0, gahA0, dB, dC, dA0 = adjoint_step(p, hc, h0, dt0, du0, dy0, B0, C0, A2, k0, HAS_RESETS)
            tl.atomic_add(dB_ptr + part, dB[:, None], mask=one, sem='relaxed')
            tl.atomic_add(dC_ptr + part, dC[:, None], mask=one, sem='relaxed')
            dA_acc += (dA0 + dA1) + (dA2 + dA3)

            gB = pack4(gB0, gB1, gB2, gB3, (BE,))[None, :, :]  # (1, BE, 4)
            du = dt * gB
            # A2 = A log2(e) in the sums: one multiply per channel and step brings them back
            ddt = u * gB + pack4(gahA0, gahA1, gahA2, gahA3, (BE,))[None, :, :] * (1.0 / LOG2E)
            if HAS_D:
                du += Dv * dy
                dD_acc += dy * u
            if HAS_Z:  # y before the gate, for dz
                y = pack4(nsum(h0 * C0), nsum(h1 * C1), nsum(h2 * C2), nsum(h3 * C3), (BE,))[None, :, :]
                if HAS_D:
                    y += Dv * u
                dz = dout * y * sz * (1.0 + zv * (1.0 - sz))
                tl.store(dz_ptr + grad_off + tm[None, None, :], dz.to(dz_ptr.dtype.element_ty), mask=m3t & first)
            if SOFTPLUS:
                if GATE_FROM_SOFTPLUS:
                    ddt = ddt * dt_gate
                else:
                    ddt = ddt * sigmoid(xdt)
            ddt = tl.where(m3t, ddt, 0.0)
            if HAS_BIAS:
                dbias_acc += ddt
            tl.store(du_ptr + grad_off + tm[None, None, :], du.to(du_ptr.dtype.element_ty), mask=m3t & first)
            tl.store(ddt_ptr + grad_off + tm[None, None, :], ddt.to(ddt_ptr.dtype.element_ty), mask=m3t & first)

    seg_state = (b * S + s).to(tl.int64) * (2 * EN) + st
    if TOTALS:
        a_run = tl.exp2(col(dt_sum) * A2)
        if HAS_RESETS:
            a_run *= kept[:, None, None, None]
        tl.store(seg_ptr + seg_state, a_run, mask=mask4)
        tl.store(seg_ptr + seg_state + EN, p, mask=mask4)
    else:
        tl.store(dA_ptr + (b * S + s).to(tl.int64) * EN + st, dA_acc, mask=mask4)
        seg_e = (b * S + s) * E + et
        if HAS_D:
            tl.store(dD_ptr + seg_e, tl.sum(dD_acc, axis=2, keep_dims=True), mask=first)
        if HAS_BIAS:
            tl.store(dbias_ptr + seg_e, tl.sum(dbias_acc, axis=2, keep_dims=True), mask=first)
        if HAS_DH0:
            if s == 0:
                tl.store(dh0_ptr + b * EN + st, p, mask=mask4)


def chunk_major(x, n_chunks, reverse):
    """B or C, (Bt, N, L) or (Bt, G, N, L) in any dtype and strides -> fp32 (Bt, G, n_chunks, STEPS, BN): the
    kernel's step order (flipped when reverse), zero past L and N, each step's states one contiguous vector."""
    import torch

    if x.dim() == 3:
        x = x.unsqueeze(1)
    Bt, G, N, L = x.shape
    BN = triton.next_power_of_2(N)
    if reverse:
        x = x.flip(-1)
    if L != n_chunks * STEPS:
        x = torch.nn.functional.pad(x, (0, n_chunks * STEPS - L))
    new = torch.zeros if BN != N else torch.empty
    out = new(Bt, G, n_chunks, STEPS, BN, device=x.device, dtype=torch.float32)
    out.permute(0, 1, 4, 2, 3)[:, :, :N].copy_(x.unflatten(-1, (n_chunks, STEPS)))
    return out


def state_split(N):
    """(NQ, R): N padded to a power of two as NQ vectors of R <= 4 contiguous states (16-byte accesses)."""
    BN = triton.next_power_of_2(N)
    R = min(BN, 4)
    return BN // R, R


def unchunk(x, N, L, reverse, squeeze):
    """dB/dC in the chunk layout (Bt, G, n_chunks, 4, BN) -> (Bt, [G,] N, L)."""
    Bt, G, n_chunks = x.shape[:3]
    x = x[..., :N].permute(0, 1, 4, 2, 3).reshape(Bt, G, N, n_chunks * STEPS)[..., :L]
    if reverse:
        x = x.flip(-1)
    return x[:, 0] if squeeze else x


def backward_segments(Bt, E, EG, n_chunks, BE=16, num_warps=1, sm_count=132):
    """The launcher's segments of L: measured (NOTES.md), from ~4 programs per multiprocessor one pass beats two;
    below that, four full waves of 8 programs per multiprocessor (item 16)."""
    programs = Bt * triton.cdiv(E, block_channels(E, EG, BE)) * num_warps
    if programs >= 4 * sm_count:
        return 1
    return max(1, min(32 * sm_count // programs, n_chunks // 32, 64))


def scan_bwd(dout, dhN, u, dt, A, B, C, D, z, bias, resets, ckpt, softplus_, reverse, need_dh0,
             BE=16, NG=4, segments=None, num_warps=1, sm_count=132):
    """Launch the backward; returns (du, ddelta, dA, dB, dC, dD, dz, dbias, dh0) (None where not needed).

    Tensors as in the forward; `ckpt` (Bt, L/STEPS, E, N) are the chunk-entry states the forward saved; dhN
    (Bt, E, N) fp32 or None is the gradient of the final state. dB and dC come back fp32 in B's and C's shapes.
    NG lanes share a channel's states in the main pass. `segments` None keeps L whole when there are >= 4
    programs per multiprocessor, else cuts it into ~32 programs per multiprocessor (four full waves at the main
    pass's occupancy of 8 one-warp programs), with >= 32 chunks and at most 64 segments: the totals pass costs
    ~15% of the main one.
    """
    import torch

    Bt, E, L = u.shape
    N = A.shape[1]
    n_chunks = ckpt.shape[1]
    Bc, Cc = chunk_major(B, n_chunks, reverse), chunk_major(C, n_chunks, reverse)
    G = Bc.shape[1]
    EG = E // G
    BE = block_channels(E, EG, BE)
    BN = triton.next_power_of_2(N)
    NG = min(NG, BN)
    NQ, R = state_split(BN // NG)
    n_eb = triton.cdiv(E, BE)
    if segments is None:
        segments = backward_segments(Bt, E, EG, n_chunks, BE, num_warps, sm_count)
    seg_chunks = triton.cdiv(n_chunks, segments)
    S = triton.cdiv(n_chunks, seg_chunks)
    dev = u.device
    f32 = dict(device=dev, dtype=torch.float32)
    du = torch.empty(Bt, E, L, device=dev, dtype=u.dtype)
    ddt = torch.empty(Bt, E, L, device=dev, dtype=dt.dtype)
    dz = torch.empty(Bt, E, L, device=dev, dtype=z.dtype) if z is not None else None
    dBc = torch.zeros(Bt, G, n_chunks, STEPS, BN, **f32)  # the blocks' sums are added in (atomics)
    dCc = torch.zeros(Bt, G, n_chunks, STEPS, BN, **f32)
    dA = torch.empty(Bt, S, E, N, **f32)
    dD = torch.empty(Bt, S, E, **f32) if D is not None else None
    dbias = torch.empty(Bt, S, E, **f32) if bias is not None else None
    dh0 = torch.empty(Bt, E, N, **f32) if need_dh0 else None
    seg = torch.empty(Bt, S, 2, E, N, **f32) if S > 1 else None
    zz = z if z is not None else u
    rr = resets if resets is not None else u
    args = (u, dt, A, Bc, Cc, D, zz, bias, rr, ckpt, dout, seg,
            du, ddt, dz, dBc, dCc, dA, dD, dbias, dh0, dhN,
            E, L, EG, G, n_chunks, seg_chunks, S,
            u.stride(0), u.stride(1), dt.stride(0), dt.stride(1), zz.stride(0), zz.stride(1),
            dout.stride(0), dout.stride(1), rr.stride(0))
    flags = dict(N=N, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None, SOFTPLUS=softplus_,
                 HAS_RESETS=resets is not None, REVERSE=reverse, HAS_DH0=need_dh0, HAS_DHN=dhN is not None,
                 HAS_SEG=S > 1,
                 # measured per launch kind (NOTES.md item 18): 4% faster with L whole, 1-6% slower with segments
                 GATE_FROM_SOFTPLUS=S == 1)
    if S > 1:  # the adjoint alone needs no sums over states or channels: one lane per channel, as the forward
        BE1 = block_channels(E, EG, 32)
        NQ1, R1 = state_split(BN)
        _bwd_kernel[(Bt * triton.cdiv(E, BE1), S - 1)](*args, BE=BE1, NG=1, NQ=NQ1, R=R1, TOTALS=True,
                                                       num_warps=1, **flags)
    _bwd_kernel[(Bt * n_eb, S)](*args, BE=BE, NG=NG, NQ=NQ, R=R, TOTALS=False, num_warps=num_warps, **flags)
    squeeze = B.dim() == 3
    return (du, ddt, dA.sum((0, 1)), unchunk(dBc, N, L, reverse, squeeze), unchunk(dCc, N, L, reverse, squeeze),
            None if dD is None else dD.sum((0, 1)), dz, None if dbias is None else dbias.sum((0, 1)), dh0)
