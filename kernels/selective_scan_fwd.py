"""Forward selective-scan kernel (Mamba paper, section 3.3.2: fused discretisation, state kept on chip).

Glossary: Bt batch, E channels (d_inner), L length, N d_state, G groups sharing B/C (channels per group EG),
BE the channels of one program, N = NT x NL (NL lanes, NT states per thread), S segments of L scanned in
parallel, STEPS (= 4) positions per chunk.

    dt_t = softplus(delta_t + delta_bias)      a_t = exp(dt_t A) = exp2(dt_t A log2(e))     b_t = dt_t B_t u_t
    h_t  = a_t h_{t-1} + b_t                   y_t = (<C_t, h_t> + D u_t) * silu(z_t)

One program owns BE channels of one batch row and walks L in pairs of chunks of 4 steps, with the (BE, N) state
in registers. Per pair it loads (BE, 8) tiles of u/delta/z (8 contiguous positions per channel: one 16-byte
load per thread in bf16; the L1 path, not the arithmetic, bounded the 4-step loads, NOTES.md item 14) and
(N, 8) tiles of B/C (shared by the block's channels, which the launcher keeps inside one group), splits them
into the two chunks and each chunk into its 4 positions with `tl.split`, and runs the recurrence step by step:
one exp2, two multiplies and two fused multiply-adds per (channel, state, step), plus the sum over N for y.
Only y (and, when a backward will follow, the state entering each chunk) goes back to memory: the
(Bt, E, L, N) states never exist.

When Bt * E / BE programs cannot fill the GPU, L is cut into S segments: a first launch (TOTALS) runs each
segment but the last from a zero state and keeps its end state and its decay product (exp2(A sum(dt)), one
exponential per segment); the main launch then starts segment s from the exact state, folded from the totals of
segments 0..s-1. This costs (S - 1) / S more exponentials.

reverse=True reads memory from L-1 down to 0 (the kernel's step t is memory position L-1-t); resets then
block the step into memory position m when resets[m + 1] is set, which keeps segment boundaries in place.
"""
import triton
import triton.language as tl

STEPS = 4  # steps per chunk (the unit of the checkpoints and of the backward); the forward loads 2 chunks at once
LOG2E = tl.constexpr(1.4426950408889634)  # exp(x) = exp2(x * LOG2E): ex2 is the hardware exponential


@triton.jit
def log1p_over(w):
    """log1p(w) / w for w in (0, 1]: a degree-8 polynomial (relative error < 3e-7 in fp32) instead of the
    ~30-instruction software log."""
    p = 0.004448358900845051 * w - 0.02620724029839039
    p = p * w + 0.07252670079469681
    p = p * w - 0.13142044842243195
    p = p * w + 0.18835607171058655
    p = p * w - 0.24763894081115723
    p = p * w + 0.3330696225166321
    p = p * w - 0.49998676776885986
    return p * w + 0.9999998211860657


@triton.jit
def softplus(x):
    """log(1 + exp(x)) = max(x, 0) + log1p(w), w = exp(-|x|) in (0, 1]: one exp2 and `log1p_over`; above 20 it
    returns x exactly, as torch's softplus does."""
    w = tl.exp2(-tl.abs(x) * LOG2E)
    return tl.maximum(x, 0.0) + log1p_over(w) * w


@triton.jit
def softplus_sigmoid(x):
    """softplus(x) and sigmoid(x) from the same exponential w = exp(-|x|): sigmoid is 1 / (1 + w) for x >= 0 and
    w / (1 + w) below (the backward needs both per step; one exp2 fewer)."""
    w = tl.exp2(-tl.abs(x) * LOG2E)
    return tl.maximum(x, 0.0) + log1p_over(w) * w, tl.where(x >= 0, 1.0, w) / (1.0 + w)


@triton.jit
def sigmoid(x):
    """1 / (1 + exp(-x)) with the bare hardware exp2 (tl.sigmoid's exp adds range fix-ups on the GPU)."""
    return 1.0 / (1.0 + tl.exp2(-x * LOG2E))


@triton.jit
def through_branch(x, y, always):
    """x and y as they are (`always` is true at run time). Triton's layout pass would rather recompute a chain of
    elementwise ops in the layout its consumer wants than convert the chain's result; it stops at a branch, so a
    value passed through one is converted after it, once (Triton 3.6, one consuming layout: with several it still
    copies the chain, NOTES.md item 20)."""
    if always:  # values made inside the branches keep it a branch (passed through, it folds into selects)
        x_out = x + 0.0
        y_out = y + 0.0
    else:
        x_out = y + 0.0
        y_out = x + 0.0
    return x_out, y_out


@triton.jit
def unpack4(x, SHAPE: tl.constexpr):
    """The 4 slices of a (*SHAPE, 4) tile along its last axis, in order."""
    lo, hi = tl.split(tl.reshape(x, SHAPE + (2, 2)))  # [..., k, m] = column 2k + m; split takes m
    x0, x2 = tl.split(lo)
    x1, x3 = tl.split(hi)
    return x0, x1, x2, x3


@triton.jit
def pack4(x0, x1, x2, x3, SHAPE: tl.constexpr):
    """Inverse of unpack4: the (*SHAPE, 4) tile with slices x0..x3."""
    return tl.reshape(tl.join(tl.join(x0, x2), tl.join(x1, x3)), SHAPE + (4,))


@triton.jit
def block_steps(i, L, WIDTH: tl.constexpr, REVERSE: tl.constexpr):
    """Memory positions (WIDTH,) of the i-th block of WIDTH steps (a chunk: 4) and their mask (steps past L do
    nothing)."""
    t = i * WIDTH + tl.arange(0, WIDTH)
    if REVERSE:
        return L - 1 - t, t < L
    return t, t < L


@triton.jit
def load_keep(resets_ptr, tm, mask_t, L, REVERSE: tl.constexpr):
    """keep_t of a chunk's 4 steps as four (1,) vectors: 0.0 where the step starts a packed sequence (no state
    flows into it), else 1.0. Reversed, the step into memory position m is blocked by resets[m + 1]."""
    if REVERSE:
        rm = tm + 1
    else:
        rm = tm
    r = tl.load(resets_ptr + rm, mask=mask_t & (rm < L), other=0)
    return unpack4(tl.where(r != 0, 0.0, 1.0)[None, :], (1,))


@triton.jit
def step(h, dt, dtu, Bn, keep, A2, NT: tl.constexpr, NL: tl.constexpr):
    """One step of the recurrence on the (NT, BE, NL) state: dt, dtu (BE,), Bn (BN,), keep (1,) 0 at a reset."""
    a = tl.exp2(dt[None, :, None] * A2) * keep[:, None, None]  # (NT, BE, NL)
    h = a * h + dtu[None, :, None] * tl.reshape(Bn, (NT, NL))[:, None, :]
    return h, a


@triton.jit
def readout(h, Cn, NT: tl.constexpr, NL: tl.constexpr):
    """<C, h> per channel: (BE,)."""
    return tl.sum(tl.sum(h * tl.reshape(Cn, (NT, NL))[:, None, :], axis=2), axis=0)


@triton.jit
def state_index(offs_e, NT: tl.constexpr, NL: tl.constexpr):
    """(NT, BE, NL) channel and state indices of the state layout: state n = nt * NL + nl."""
    n = tl.arange(0, NT)[:, None, None] * NL + tl.arange(0, NL)[None, None, :]
    return offs_e[None, :, None], n


@triton.jit
def halves(x, R: tl.constexpr):
    """The 2 chunks (R, 4) of an (R, 8) tile: columns 0-3 and 4-7."""
    return tl.split(tl.permute(tl.reshape(x, (R, 2, 4)), (0, 2, 1)))


@triton.jit
def unhalve(x0, x1, R: tl.constexpr):
    """Inverse of halves."""
    return tl.reshape(tl.permute(tl.join(x0, x1), (0, 2, 1)), (R, 8))


@triton.jit
def load_pair(u_ptr, dt_ptr, z_ptr, B_ptr, C_ptr, offs_e, mask_e, n2, N, q, L,
              s_ue, s_de, s_ze, s_Bn, s_Bl, s_Cn, s_Cl, REVERSE: tl.constexpr, LOAD_Z: tl.constexpr,
              LOAD_C: tl.constexpr):
    """Chunks 2q, 2q + 1: memory positions and mask (8,), u, delta, z (BE, 8) and B, C (BN, 8) tiles, as stored
    (the caller converts them). z and C not wanted: u and B stand in (Triton returns no None). Past L everything
    is masked."""
    tm, mask_t = block_steps(q, L, 8, REVERSE)  # chunks 2q and 2q + 1
    m2 = mask_e[:, None] & mask_t[None, :]
    u = tl.load(u_ptr + offs_e[:, None] * s_ue + tm[None, :], mask=m2, other=0.0)
    dt = tl.load(dt_ptr + offs_e[:, None] * s_de + tm[None, :], mask=m2, other=0.0)
    mnt = (n2 < N)[:, None] & mask_t[None, :]
    Bt = tl.load(B_ptr + n2[:, None] * s_Bn + tm[None, :] * s_Bl, mask=mnt, other=0.0)
    zv = u
    Ct = Bt
    if LOAD_Z:
        zv = tl.load(z_ptr + offs_e[:, None] * s_ze + tm[None, :], mask=m2, other=0.0)
    if LOAD_C:
        Ct = tl.load(C_ptr + n2[:, None] * s_Cn + tm[None, :] * s_Cl, mask=mnt, other=0.0)
    return tm, mask_t, u, dt, zv, Bt, Ct


@triton.jit
def chunk(h, kept, dt4, du4, B4, C4, A2, c, resets_ptr, L, ckpt_ptr, ckpt_off, ckpt_mask,
          BE: tl.constexpr, NT: tl.constexpr, NL: tl.constexpr, HAS_RESETS: tl.constexpr, REVERSE: tl.constexpr,
          STORE_CKPT: tl.constexpr, TOTALS: tl.constexpr):
    """Chunk c's 4 steps on the state (after storing the state entering it): returns (h, kept, y (BE, 4));
    the TOTALS pass multiplies the chunk's keeps into kept (1,) and computes no y (dt4 stands in)."""
    if STORE_CKPT:
        tl.store(ckpt_ptr + ckpt_off, h.to(ckpt_ptr.dtype.element_ty), mask=ckpt_mask)
    dt0, dt1, dt2, dt3 = unpack4(dt4, (BE,))
    du0, du1, du2, du3 = unpack4(du4, (BE,))
    B0, B1, B2, B3 = unpack4(B4, (NT * NL,))
    if HAS_RESETS:
        tm, mask_t = block_steps(c, L, 4, REVERSE)
        k0, k1, k2, k3 = load_keep(resets_ptr, tm, mask_t, L, REVERSE)
    else:
        k0 = tl.full((1,), 1.0, tl.float32)
        k1 = k0
        k2 = k0
        k3 = k0
    if TOTALS:  # the decay product is exp2(A2 sum(dt)) at the end, times kept
        h, a = step(h, dt0, du0, B0, k0, A2, NT, NL)
        h, a = step(h, dt1, du1, B1, k1, A2, NT, NL)
        h, a = step(h, dt2, du2, B2, k2, A2, NT, NL)
        h, a = step(h, dt3, du3, B3, k3, A2, NT, NL)
        if HAS_RESETS:
            kept *= k0 * k1 * k2 * k3
        y = dt4
    else:
        C0, C1, C2, C3 = unpack4(C4, (NT * NL,))
        h, a = step(h, dt0, du0, B0, k0, A2, NT, NL)
        y0 = readout(h, C0, NT, NL)
        h, a = step(h, dt1, du1, B1, k1, A2, NT, NL)
        y1 = readout(h, C1, NT, NL)
        h, a = step(h, dt2, du2, B2, k2, A2, NT, NL)
        y2 = readout(h, C2, NT, NL)
        h, a = step(h, dt3, du3, B3, k3, A2, NT, NL)
        y3 = readout(h, C3, NT, NL)
        y = pack4(y0, y1, y2, y3, (BE,))
    return h, kept, y


@triton.jit
def _fwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, resets_ptr,
    y_ptr, hN_ptr, ckpt_ptr, seg_ptr,
    E, L, N, EG, n_chunks, seg_chunks, S,
    s_ub, s_ue, s_db, s_de, s_zb, s_ze, s_yb, s_ye,
    s_Bb, s_Bg, s_Bn, s_Bl, s_Cb, s_Cg, s_Cn, s_Cl, s_rb,
    BE: tl.constexpr, NT: tl.constexpr, NL: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_H0: tl.constexpr, HAS_RESETS: tl.constexpr, REVERSE: tl.constexpr,
    STORE_HN: tl.constexpr, STORE_CKPT: tl.constexpr, TOTALS: tl.constexpr, HAS_SEG: tl.constexpr,
):
    # The state is an (NT, BE, NL) register tile, the N states of a channel split as NT x NL. Each pair of chunks
    # loads (BE, 8) tiles (8 contiguous steps per channel: one 16-byte load per thread for bf16) and `tl.split`
    # unpacks the steps, so the recurrence runs step by step in registers, no associative scan. Triton takes the
    # layout from the loads: with NL = 1 (Triton 3.6) A's load, contiguous along N, gives the tile 16 lanes over
    # NT and 2 over BE at BE = 32 (4 and 8 at BE = 8: one channel, 4 states a thread), so y's sum over N and the
    # B/C broadcasts cost shuffles (NOTES.md: a one-channel-per-thread variant without them was slower, bound by
    # loading B/C into every thread).
    n_eb = tl.cdiv(E, BE)
    pid = tl.program_id(0)
    b = pid // n_eb
    e0 = (pid % n_eb) * BE
    s = tl.program_id(1)
    offs_e = e0 + tl.arange(0, BE)
    mask_e = offs_e < E
    e3, n3 = state_index(offs_e, NT, NL)  # (1, BE, 1), (NT, 1, NL)
    mask3 = (e3 < E) & (n3 < N)  # (NT, BE, NL)
    g = e0 // EG  # the launcher keeps all BE channels in one group

    A2 = tl.load(A_ptr + e3 * N + n3, mask=mask3, other=0.0).to(tl.float32) * LOG2E  # (NT, BE, NL)
    u_ptr += b * s_ub
    dt_ptr += b * s_db
    B_ptr += b * s_Bb + g * s_Bg
    C_ptr += b * s_Cb + g * s_Cg
    state_off = (b * E + e3) * N + n3  # into (Bt, E, N)

    h = tl.zeros((NT, BE, NL), dtype=tl.float32)
    if not TOTALS:
        # the state entering segment s: h0, then the totals of segments 0..s-1 folded in
        if HAS_H0:
            h = tl.load(h0_ptr + state_off, mask=mask3, other=0.0)
        if HAS_SEG:
            for j in range(0, s):
                seg_off = ((b * E + e3) * S + j) * N + n3
                a_tot = tl.load(seg_ptr + 2 * seg_off, mask=mask3, other=0.0)
                b_tot = tl.load(seg_ptr + 2 * seg_off + 1, mask=mask3, other=0.0)
                h = a_tot * h + b_tot
    else:
        kept = tl.full((1,), 1.0, dtype=tl.float32)  # 0 once a reset cut the segment
        dt_sum = tl.zeros((BE,), dtype=tl.float32)

    if HAS_D:
        Dv = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    if HAS_BIAS:
        Dbias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    n2 = tl.arange(0, NT * NL)  # (BN,)
    q0 = s * (seg_chunks // 2)  # pairs of chunks; the launcher makes seg_chunks even
    q1 = tl.minimum(q0 + seg_chunks // 2, tl.cdiv(n_chunks, 2))
    if not TOTALS:
        kept = h  # unused outside the TOTALS pass
    ck_e = b * n_chunks * E + e3
    # At BE <= 8 each pair's loads go out a pair ahead, so their latency (the launch's top stall) hides behind the
    # previous pair's arithmetic: 8x2048 0.276 ms against 0.285; at BE = 32 2-3% slower (NOTES.md item 21).
    AHEAD: tl.constexpr = 1 if BE <= 8 else 0
    nxt = load_pair(u_ptr, dt_ptr, z_ptr + b * s_zb, B_ptr, C_ptr, offs_e, mask_e, n2, N, q0, L, s_ue, s_de, s_ze,
                    s_Bn, s_Bl, s_Cn, s_Cl, REVERSE, HAS_Z and not TOTALS, not TOTALS)  # unused (dropped) if not AHEAD
    for q in range(q0, q1):
        fresh = load_pair(u_ptr, dt_ptr, z_ptr + b * s_zb, B_ptr, C_ptr, offs_e, mask_e, n2, N, q + AHEAD, L, s_ue,
                          s_de, s_ze, s_Bn, s_Bl, s_Cn, s_Cl, REVERSE, HAS_Z and not TOTALS, not TOTALS)
        if AHEAD:
            tm, mask_t, u, dt, zv, Bt, Ct = nxt
            nxt = fresh
        else:
            tm, mask_t, u, dt, zv, Bt, Ct = fresh
        m2 = mask_e[:, None] & mask_t[None, :]  # (BE, 8)
        u = u.to(tl.float32)
        dt = dt.to(tl.float32)
        if HAS_BIAS:
            dt += Dbias[:, None]
        if SOFTPLUS:
            dt = softplus(dt)
        dt = tl.where(m2, dt, 0.0)  # masked steps: a = 1, b = 0
        if TOTALS:
            dt_sum += tl.sum(dt, axis=1)
        dtu = dt * u
        if BE <= 8:
            # without the branch every state lane of a channel computes the channel's softplus and dt * u (4 lanes
            # at BE = 8); through it they are computed once, 2 a thread, then moved: 8x2048 0.284 ms against 0.310
            # (at BE = 32 3-4% slower: NOTES.md item 20)
            dt, dtu = through_branch(dt, dtu, L > 0)
        dta, dtb = halves(dt, BE)
        dua, dub = halves(dtu, BE)
        Ba, Bb = halves(Bt.to(tl.float32), NT * NL)
        Ca, Cb = halves(Ct.to(tl.float32), NT * NL)
        c = q * 2
        rp = resets_ptr + b * s_rb
        h, kept, ya = chunk(h, kept, dta, dua, Ba, Ca, A2, c, rp, L, ckpt_ptr, (ck_e + c * E) * N + n3,
                            mask3, BE, NT, NL, HAS_RESETS, REVERSE, STORE_CKPT, TOTALS)
        last = mask3 & (n3 * 0 + c + 1 < n_chunks)  # an odd chunk count: the pair's second chunk is past L
        h, kept, yb = chunk(h, kept, dtb, dub, Bb, Cb, A2, c + 1, rp, L, ckpt_ptr, (ck_e + (c + 1) * E) * N + n3,
                            last, BE, NT, NL, HAS_RESETS, REVERSE, STORE_CKPT, TOTALS)
        if not TOTALS:
            y = unhalve(ya, yb, BE)  # (BE, 8)
            if HAS_D:
                y += Dv[:, None] * u
            if HAS_Z:
                zf = zv.to(tl.float32)
                y *= zf * sigmoid(zf)
            tl.store(y_ptr + b * s_yb + offs_e[:, None] * s_ye + tm[None, :],
                     y.to(y_ptr.dtype.element_ty), mask=m2)

    if TOTALS:
        seg_off = ((b * E + e3) * S + s) * N + n3
        a_tot = tl.exp2(dt_sum[None, :, None] * A2) * kept[:, None, None]
        tl.store(seg_ptr + 2 * seg_off, a_tot, mask=mask3)
        tl.store(seg_ptr + 2 * seg_off + 1, h, mask=mask3)
    elif STORE_HN:
        if s == S - 1:
            tl.store(hN_ptr + state_off, h, mask=mask3)


def bc_strides(x):
    """(batch, group, n, l) strides of B or C given as (Bt, N, L) or (Bt, G, N, L)."""
    if x.dim() == 3:
        return x.stride(0), 0, x.stride(1), x.stride(2)
    return x.stride(0), x.stride(1), x.stride(2), x.stride(3)


def block_channels(E, EG, want):
    """Largest power of two <= want dividing the group size, so a block never straddles two groups."""
    be = 1
    while be * 2 <= want and EG % (be * 2) == 0:
        be *= 2
    if EG == E:  # one group: a partial last block is fine (masked)
        be = min(want, triton.next_power_of_2(E))
    return be


def forward_block(Bt, E, EG, sm_count=132):
    """The launcher's channels per program: 8 when that gives >= 8 one-warp programs per multiprocessor, so L
    need not be cut into segments (no TOTALS pass; the checkpoint stores then cost 8% instead of 37%), else 32,
    whose segmented launches were the fastest (NOTES.md item 19)."""
    if Bt * triton.cdiv(E, block_channels(E, EG, 8)) >= 8 * sm_count:
        return 8
    return 32


def scan_fwd(u, dt, A, B, C, D, z, bias, h0, resets, softplus_, reverse, store_hN, store_ckpt,
             BE=None, NL=4, segments=None, num_warps=4, sm_count=132, ckpt_dtype=None):
    """Launch the forward. Tensors as in `mambaseq.ops.selective_scan` (u, dt, z with unit L stride); BE None:
    `forward_block`.

    Returns y (Bt, E, L) in u's dtype, the final state (Bt, E, N) fp32 or None, and the states entering every
    chunk of STEPS positions (Bt, L / STEPS, E, N) in `ckpt_dtype` (fp32 or bf16) or None (what the backward
    recomputes from).
    """
    import torch

    Bt, E, L = u.shape
    N = A.shape[1]
    G = 1 if B.dim() == 3 else B.shape[1]
    EG = E // G
    BE = block_channels(E, EG, BE or forward_block(Bt, E, EG, sm_count))
    BN = triton.next_power_of_2(N)
    NL = min(NL, BN)
    n_eb = triton.cdiv(E, BE)
    n_chunks = max(triton.cdiv(L, STEPS), 1)
    if segments is None:  # enough programs to give each multiprocessor ~8, at the cost of a 2nd pass
        segments = 1
        while Bt * n_eb * segments < 8 * sm_count and n_chunks // (segments * 2) >= 8:
            segments *= 2
        if segments > 1 and not store_ckpt:
            # one full wave at the main pass's occupancy (128 registers: 16 one-warp programs per multiprocessor)
            # shortens every program's walk; measured 4-8% faster without checkpoints, slower with them
            # (NOTES.md item 16)
            segments = max(segments, min(16 * sm_count // (Bt * n_eb), n_chunks // 16))
    seg_chunks = triton.cdiv(triton.cdiv(n_chunks, segments), 2) * 2  # whole pairs of chunks
    S = triton.cdiv(n_chunks, seg_chunks)
    dev = u.device
    y = torch.empty_like(u)
    hN = torch.empty(Bt, E, N, device=dev, dtype=torch.float32) if store_hN else None
    ckpt_dtype = ckpt_dtype or torch.float32
    ckpt = torch.empty(Bt, n_chunks, E, N, device=dev, dtype=ckpt_dtype) if store_ckpt else None
    seg = torch.empty(Bt, E, S, N, 2, device=dev, dtype=torch.float32) if S > 1 else None
    zz = z if z is not None else u
    rr = resets if resets is not None else u
    sB, sC = bc_strides(B), bc_strides(C)
    args = (u, dt, A, B, C, D, zz, bias, h0, rr, y, hN, ckpt, seg,
            E, L, N, EG, n_chunks, seg_chunks, S,
            u.stride(0), u.stride(1), dt.stride(0), dt.stride(1), zz.stride(0), zz.stride(1),
            y.stride(0), y.stride(1), *sB, *sC, rr.stride(0))
    flags = dict(BE=BE, NT=BN // NL, NL=NL, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None,
                 SOFTPLUS=softplus_, HAS_H0=h0 is not None, HAS_RESETS=resets is not None, REVERSE=reverse,
                 HAS_SEG=S > 1, num_warps=num_warps)
    if S > 1:  # no segment reads the last one's totals
        _fwd_kernel[(Bt * n_eb, S - 1)](*args, STORE_HN=False, STORE_CKPT=False, TOTALS=True, **flags)
    _fwd_kernel[(Bt * n_eb, S)](*args, STORE_HN=store_hN, STORE_CKPT=store_ckpt, TOTALS=False, **flags)
    return y, hN, ckpt
