"""Backward selective-scan kernel (Mamba paper, section 3.3.2: recomputation instead of stored states).

Glossary: Bt batch, E channels, L length, N d_state (= NT x NL, NL lanes), G groups sharing B/C (EG channels
each), BE the channels of one program, BL the chunk (the spacing of the forward's saved states);
a_t = exp(dt_t A), b_t = dt_t B_t u_t as in the forward.

With dy_t = dout_t * silu(z_t) and c_t = C_t dy_t (per channel and state), the adjoint of the state is

    g_t = c_t + a_{t+1} g_{t+1}          (g_t = dLoss/dh_t, a reverse linear recurrence)

and every gradient is a sum of local products:

    du_t  = D dy_t + dt_t <g_t, B_t>                 dC_t = sum_e dy_t h_t        dB_t = sum_e g_t dt_t u_t
    ddt_t = u_t <g_t, B_t> + <g_t (h_t - b_t), A>     dA   = sum_t g_t (h_t - b_t) dt_t
    (h_t - b_t = a_t h_{t-1}: the decayed previous state, without a shifted read)
    dD = sum_t dy_t u_t, dz_t = dout_t y_t silu'(z_t), ddelta = ddt sigmoid(delta + bias), dh_{-1} = a_0 g_0.

One program owns BE channels of one batch row and walks the chunks from last to first. For each chunk it
recomputes the states from the chunk-entry state the forward saved, then solves the adjoint with a reverse
`tl.associative_scan`. The carry between chunks is p = a_{t0} g_{t0}, the gradient reaching the state before
the chunk. dB and dC are summed over the block's channels in registers and written as per-block partials
(Bt, E/BE, N, L) that the launcher sums over blocks: no atomics. dA, dD and d(delta_bias) are summed over
the program's steps in registers and written once per (batch row, channel).
"""
import triton
import triton.language as tl

from mambaseq.kernels.selective_scan_fwd import LOG2E, bc_strides, block_channels, softplus, state_index


@triton.jit
def combine_affine(a1, b1, a2, b2):
    """Compose h -> a1 h + b1 (earlier step) with h -> a2 h + b2 (later step)."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _bwd_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, resets_ptr, ckpt_ptr, dout_ptr,
    du_ptr, ddt_ptr, dz_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr, dh0_ptr, dhN_ptr,
    E, L, N, EG, n_chunks,
    s_ub, s_ue, s_db, s_de, s_zb, s_ze, s_ob, s_oe,
    s_Bb, s_Bg, s_Bn, s_Bl, s_Cb, s_Cg, s_Cn, s_Cl, s_rb,
    BE: tl.constexpr, NT: tl.constexpr, NL: tl.constexpr, BL: tl.constexpr,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    HAS_RESETS: tl.constexpr, REVERSE: tl.constexpr, HAS_DH0: tl.constexpr, HAS_DHN: tl.constexpr,
):
    # Same (NT, BL, BE, NL) register tiles as the forward (see its comment): both scans run over axis 1
    # inside each thread. 2-D tiles are (BL, BE); states (NT, BE, NL).
    n_eb = tl.cdiv(E, BE)
    pid = tl.program_id(0)
    b = pid // n_eb
    eb = pid % n_eb
    e0 = eb * BE
    offs_e = e0 + tl.arange(0, BE)
    mask_e = offs_e < E
    e3, n3 = state_index(offs_e, NT, NL)  # (1, BE, 1), (NT, 1, NL)
    mask3 = (e3 < E) & (n3 < N)
    g_idx = e0 // EG

    A = tl.load(A_ptr + e3 * N + n3, mask=mask3, other=0.0).to(tl.float32)  # (NT, BE, NL)
    A2 = A * LOG2E
    if HAS_D:
        Dv = tl.load(D_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_e, mask=mask_e, other=0.0).to(tl.float32)
    u_ptr += b * s_ub
    dt_ptr += b * s_db
    B_ptr += b * s_Bb + g_idx * s_Bg
    C_ptr += b * s_Cb + g_idx * s_Cg
    state_off = (b * E + e3) * N + n3  # into (Bt, E, N)
    n4 = n3[:, None, :, :]  # (NT, 1, 1, NL)
    # du, ddelta, dz are fresh contiguous (Bt, E, L); dB/dC partials (Bt, n_eb, N, L)
    grad_off = (b * E + offs_e[None, :]) * L  # (1, BE)
    part_off = ((b * n_eb + eb) * N + n3) * L  # (NT, 1, NL)

    if HAS_DHN:  # gradient reaching the state that leaves the chunk; the last one leaves the scan
        p = tl.load(dhN_ptr + state_off, mask=mask3, other=0.0)
    else:
        p = tl.zeros((NT, BE, NL), dtype=tl.float32)
    dA_acc = tl.zeros((NT, BE, NL), dtype=tl.float32)
    dD_acc = tl.zeros((BE,), dtype=tl.float32)
    dbias_acc = tl.zeros((BE,), dtype=tl.float32)
    cols = tl.arange(0, BL)
    first = (cols == 0)[None, :, None, None]
    for ci in range(0, n_chunks):
        c = n_chunks - 1 - ci
        t = c * BL + cols
        mask_t = t < L
        m2 = mask_t[:, None] & mask_e[None, :]  # (BL, BE)
        if REVERSE:
            tm = L - 1 - t
        else:
            tm = t
        u = tl.load(u_ptr + offs_e[None, :] * s_ue + tm[:, None], mask=m2, other=0.0).to(tl.float32)
        xdt = tl.load(dt_ptr + offs_e[None, :] * s_de + tm[:, None], mask=m2, other=0.0).to(tl.float32)
        if HAS_BIAS:
            xdt += bias[None, :]
        if SOFTPLUS:
            dt = tl.where(m2, softplus(xdt), 0.0)
        else:
            dt = xdt
        t4 = tm[None, :, None, None]
        m4 = mask_t[None, :, None, None] & (n4 < N)  # (NT, BL, 1, NL)
        Bt = tl.load(B_ptr + n4 * s_Bn + t4 * s_Bl, mask=m4, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + n4 * s_Cn + t4 * s_Cl, mask=m4, other=0.0).to(tl.float32)
        hc = tl.load(ckpt_ptr + ((b * E + e3) * n_chunks + c) * N + n3, mask=mask3, other=0.0)

        # recompute the chunk's states, exactly as the forward did
        a = tl.exp2(dt[None, :, :, None] * A2[:, None, :, :])  # (NT, BL, BE, NL)
        if HAS_RESETS:
            if REVERSE:
                rm = tm + 1
            else:
                rm = tm
            r = tl.load(resets_ptr + b * s_rb + rm, mask=mask_t & (rm < L), other=0)
            a = tl.where(r[None, :, None, None] != 0, 0.0, a)
        dtu = dt * u
        bu = dtu[None, :, :, None] * Bt
        a_cum, h_loc = tl.associative_scan((a, bu), 1, combine_affine)
        H = a_cum * hc[:, None, :, :] + h_loc  # (NT, BL, BE, NL)

        dout = tl.load(dout_ptr + b * s_ob + offs_e[None, :] * s_oe + tm[:, None], mask=m2,
                       other=0.0).to(tl.float32)
        if HAS_Z:
            zv = tl.load(z_ptr + b * s_zb + offs_e[None, :] * s_ze + tm[:, None], mask=m2,
                         other=0.0).to(tl.float32)
            sz = tl.sigmoid(zv)
            y = tl.sum(tl.sum(H * Ct, axis=3), axis=0)  # (BL, BE)
            if HAS_D:
                y += Dv[None, :] * u
            dz = dout * y * sz * (1.0 + zv * (1.0 - sz))
            tl.store(dz_ptr + grad_off + tm[:, None], dz.to(dz_ptr.dtype.element_ty), mask=m2)
            dy = dout * zv * sz
        else:
            dy = dout

        # decay of the next step inside the chunk (the chunk's last step takes the carry p instead)
        tn = t + 1
        mask_tn = (tn < L) & (cols < BL - 1)
        if REVERSE:
            tmn = L - 1 - tn
        else:
            tmn = tn
        mn2 = mask_tn[:, None] & mask_e[None, :]
        xdn = tl.load(dt_ptr + offs_e[None, :] * s_de + tmn[:, None], mask=mn2, other=0.0).to(tl.float32)
        if HAS_BIAS:
            xdn += bias[None, :]
        if SOFTPLUS:
            xdn = softplus(xdn)
        dtn = tl.where(mn2, xdn, 0.0)
        an = tl.exp2(dtn[None, :, :, None] * A2[:, None, :, :])  # a_{t+1}, 1 where masked
        if HAS_RESETS:
            if REVERSE:
                rmn = tmn + 1
            else:
                rmn = tmn
            rn = tl.load(resets_ptr + b * s_rb + rmn, mask=mask_tn & (rmn < L), other=0)
            an = tl.where(rn[None, :, None, None] != 0, 0.0, an)
        dy4 = dy[None, :, :, None]
        an_cum, g_loc = tl.associative_scan((an, Ct * dy4), 1, combine_affine, reverse=True)
        g = g_loc + an_cum * p[:, None, :, :]  # (NT, BL, BE, NL) adjoint of each state
        p = tl.sum(tl.where(first, a * g, 0.0), axis=1)

        gB = tl.sum(tl.sum(g * Bt, axis=3), axis=0)  # (BL, BE)
        gh = g * (H - bu)
        ddt = u * gB + tl.sum(tl.sum(gh * A[:, None, :, :], axis=3), axis=0)
        du = dt * gB
        if HAS_D:
            du += Dv[None, :] * dy
            dD_acc += tl.sum(dy * u, axis=0)
        dA_acc += tl.sum(gh * dt[None, :, :, None], axis=1)
        if SOFTPLUS:
            ddt = ddt * tl.sigmoid(xdt)
        ddt = tl.where(m2, ddt, 0.0)
        if HAS_BIAS:
            dbias_acc += tl.sum(ddt, axis=0)
        tl.store(du_ptr + grad_off + tm[:, None], du.to(du_ptr.dtype.element_ty), mask=m2)
        tl.store(ddt_ptr + grad_off + tm[:, None], ddt.to(ddt_ptr.dtype.element_ty), mask=m2)
        dBp = tl.sum(g * dtu[None, :, :, None], axis=2)  # (NT, BL, NL) this block's share of dB
        dCp = tl.sum(H * dy4, axis=2)
        m3 = mask_t[None, :, None] & (n3 < N)
        tl.store(dB_ptr + part_off + tm[None, :, None], dBp, mask=m3)
        tl.store(dC_ptr + part_off + tm[None, :, None], dCp, mask=m3)

    tl.store(dA_ptr + state_off, dA_acc, mask=mask3)
    if HAS_D:
        tl.store(dD_ptr + b * E + offs_e, dD_acc, mask=mask_e)
    if HAS_BIAS:
        tl.store(dbias_ptr + b * E + offs_e, dbias_acc, mask=mask_e)
    if HAS_DH0:
        tl.store(dh0_ptr + state_off, p, mask=mask3)


def scan_bwd(dout, dhN, u, dt, A, B, C, D, z, bias, resets, ckpt, BL, softplus_, reverse, need_dh0,
             BE=32, NL=4, num_warps=4):
    """Launch the backward; returns (du, ddelta, dA, dB, dC, dD, dz, dbias, dh0) (None where not needed).

    `ckpt` (Bt, E, L/BL, N) are the chunk-entry states the forward saved with the same BL; dhN (Bt, E, N)
    fp32 or None is the gradient of the final state.
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
    n_chunks = ckpt.shape[2]
    dev = u.device
    f32 = dict(device=dev, dtype=torch.float32)
    du = torch.empty(Bt, E, L, device=dev, dtype=u.dtype)
    ddt = torch.empty(Bt, E, L, device=dev, dtype=dt.dtype)
    dz = torch.empty(Bt, E, L, device=dev, dtype=z.dtype) if z is not None else None
    dBp = torch.empty(Bt, n_eb, N, L, **f32)
    dCp = torch.empty(Bt, n_eb, N, L, **f32)
    dA = torch.empty(Bt, E, N, **f32)
    dD = torch.empty(Bt, E, **f32) if D is not None else None
    dbias = torch.empty(Bt, E, **f32) if bias is not None else None
    dh0 = torch.empty(Bt, E, N, **f32) if need_dh0 else None
    zz = z if z is not None else u
    rr = resets if resets is not None else u
    _bwd_kernel[(Bt * n_eb,)](
        u, dt, A, B, C, D, zz, bias, rr, ckpt, dout,
        du, ddt, dz, dBp, dCp, dA, dD, dbias, dh0, dhN,
        E, L, N, EG, n_chunks,
        u.stride(0), u.stride(1), dt.stride(0), dt.stride(1), zz.stride(0), zz.stride(1),
        dout.stride(0), dout.stride(1), *bc_strides(B), *bc_strides(C), rr.stride(0),
        BE=BE, NT=BN // NL, NL=NL, BL=BL, HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=bias is not None,
        SOFTPLUS=softplus_, HAS_RESETS=resets is not None, REVERSE=reverse, HAS_DH0=need_dh0,
        HAS_DHN=dhN is not None, num_warps=num_warps)
    # blocks of one group are consecutive: (Bt, G, blocks per group, N, L) -> sum over blocks
    dB = dBp.view(Bt, G, n_eb // G, N, L).sum(2)
    dC = dCp.view(Bt, G, n_eb // G, N, L).sum(2)
    if B.dim() == 3:
        dB = dB[:, 0]
    if C.dim() == 3:
        dC = dC[:, 0]
    return (du, ddt, dA.sum(0), dB, dC, None if dD is None else dD.sum(0), dz,
            None if dbias is None else dbias.sum(0), dh0)
