"""PyTorch reference for the selective scan and its one-step update (Mamba paper, section 3.2 and 3.3.2).

Glossary: Bt batch, E channels, L length, N d_state, G groups sharing B/C, T chunk length.

The scan runs chunk by chunk over L. Per chunk, the decays a = exp(dt A) and inputs b = dt B u are computed
as step-major (T, Bt, E, N) tensors, then the recurrence h_t = a_t h_{t-1} + b_t is stepped through in order
(and its adjoint in reverse order in the backward): one multiply-add per position, only ever multiplying by
decays, so nothing can overflow. (A log2(T)-pass doubling scan was measured 40x slower on CPU at
(8, 128, 1024, 16): it moves T·N·log T values per step.)
Only the (Bt, E, N) state crosses chunk boundaries. Under autograd, a long scan recomputes each chunk in the
backward (torch.utils.checkpoint), so memory is O(Bt·E·N·T) plus one state per chunk, never O(Bt·L·E·N);
short scans (Bt·E·L·N up to RECOMPUTE_ABOVE) keep their chunks instead, which saves the second forward.

Sequence resets zero a_t at the first position of each packed sequence; the reverse scan is the forward scan
of the flipped inputs, with the reset mask shifted so that segments keep their boundaries.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

CHUNK = 64  # T: long enough to amortise Python overhead, short enough that (Bt, E, T, N) stays small
RECOMPUTE_ABOVE = 2**25  # Bt·E·L·N; above this (128 MB per saved fp32 tensor) the backward recomputes chunks


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _expand_groups(x: torch.Tensor, n_channels: int) -> torch.Tensor:
    """(Bt, N, T) or (Bt, G, N, T) -> step-major (T, Bt, E, N), each channel reading its group's B or C.

    A broadcast view where possible (G = 1 costs no copy)."""
    if x.dim() == 3:
        x = x.unsqueeze(1)  # (Bt, 1, N, T)
    batch, groups, N, T = x.shape
    x = x.permute(3, 0, 1, 2).unsqueeze(3)  # (T, Bt, G, 1, N)
    return x.expand(T, batch, groups, n_channels // groups, N).reshape(T, batch, n_channels, N)


class _LinearRecurrence(torch.autograd.Function):
    """H_t = a_t * H_{t-1} + b_t along the leading axis of (T, Bt, E, N) tensors, H_{-1} = h0.

    Stepped outside autograd in both directions: a graph node per step costs more than the step itself.
    Backward: g_t = dL/dH_t + a_{t+1} g_{t+1} (the same recurrence run in reverse), then dL/db_t = g_t,
    dL/da_t = g_t H_{t-1}, dL/dh0 = a_0 g_0.
    """

    @staticmethod
    def forward(ctx, a, b, h0):
        a, b = a.contiguous(), b.contiguous()
        H = torch.empty_like(b)
        h = h0
        for t in range(b.shape[0]):
            h = torch.addcmul(b[t], a[t], h, out=H[t])  # (Bt, E, N)
        ctx.save_for_backward(a, H, h0)
        return H

    @staticmethod
    def backward(ctx, grad_H):
        a, H, h0 = ctx.saved_tensors
        g = grad_H.contiguous().clone()
        for t in range(g.shape[0] - 1, 0, -1):
            g[t - 1].addcmul_(a[t], g[t])
        previous = torch.cat([h0.unsqueeze(0), H[:-1]])  # (T, Bt, E, N): H_{t-1}
        return g * previous, g, a[0] * g[0]


def _scan_chunk(h0, dt, u, A, B, C, keep):
    """One chunk. h0 (Bt, E, N); dt, u (Bt, E, T); B, C (Bt, [G,] N, T); keep (Bt, T) or None."""
    E = u.shape[1]
    a = torch.exp(dt.permute(2, 0, 1).unsqueeze(-1) * A)  # (T, Bt, E, N)
    if keep is not None:
        a = a * keep.t()[:, :, None, None]  # no state crosses into the first step of a packed sequence
    b = (dt * u).permute(2, 0, 1).unsqueeze(-1) * _expand_groups(B, E)  # (T, Bt, E, N)
    H = _LinearRecurrence.apply(a, b, h0)  # (T, Bt, E, N)
    y = (H * _expand_groups(C, E)).sum(-1).permute(1, 2, 0)  # (Bt, E, T)
    return y, H[-1].clone()  # a view would keep the whole chunk's H alive while the next chunk holds it


def selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                       initial_state=None, return_final_state=False, reverse=False, resets=None):
    """See `mambaseq.ops.selective_scan` for the argument layout and the maths."""
    batch, E, L = u.shape
    N = A.shape[-1]
    cdt = _compute_dtype(u.dtype)
    if B.dim() not in (3, 4) or C.dim() not in (3, 4):
        raise ValueError(f"B and C must be (batch, N, L) or (batch, G, N, L); got {tuple(B.shape)}, {tuple(C.shape)}")
    for name, x in (("B", B), ("C", C)):
        if x.dim() == 4 and E % x.shape[1]:
            raise ValueError(f"{name} has {x.shape[1]} groups, which do not divide {E} channels")

    dt = delta.to(cdt)
    if delta_bias is not None:
        dt = dt + delta_bias.to(cdt)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    x, Bx, Cx = u.to(cdt), B.to(cdt), C.to(cdt)
    keep = None
    if resets is not None:
        keep = (~resets.bool()).to(cdt)  # (Bt, L)
    if reverse:
        dt, x, Bx, Cx = dt.flip(-1), x.flip(-1), Bx.flip(-1), Cx.flip(-1)
        if keep is not None:
            # reversed, the step into flipped position s comes from original position L-s, which is blocked
            # when the original position L-s starts a sequence
            keep = torch.cat([keep[:, 1:], keep.new_ones(batch, 1)], dim=1).flip(-1)

    h = (initial_state.to(cdt) if initial_state is not None
         else torch.zeros(batch, E, N, dtype=cdt, device=u.device))
    A = A.to(cdt)
    # recompute chunks in the backward only when keeping every chunk's (T, Bt, E, N) tensors would be large
    use_checkpoint = batch * E * L * N > RECOMPUTE_ABOVE and torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, delta_bias, initial_state))
    ys = []
    for t0 in range(0, L, CHUNK):
        t1 = min(t0 + CHUNK, L)
        args = (h, dt[..., t0:t1], x[..., t0:t1], A, Bx[..., t0:t1], Cx[..., t0:t1],
                None if keep is None else keep[:, t0:t1])
        y_c, h = checkpoint(_scan_chunk, *args, use_reentrant=False) if use_checkpoint else _scan_chunk(*args)
        ys.append(y_c)
    y = torch.cat(ys, dim=-1) if ys else x.new_zeros(batch, E, 0)
    if reverse:
        y = y.flip(-1)
    if D is not None:
        y = y + D.to(cdt)[:, None] * u.to(cdt)
    if z is not None:
        y = y * F.silu(z.to(cdt))
    y = y.to(u.dtype)
    return (y, h) if return_final_state else y


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One step of the recurrence; updates `state` (Bt, E, N) in place and returns y (Bt, E) in x's dtype."""
    cdt = state.dtype
    E = x.shape[1]
    step = dt.to(cdt)
    if dt_bias is not None:
        step = step + dt_bias.to(cdt)
    if dt_softplus:
        step = F.softplus(step)
    Bx = _expand_groups(B.to(cdt).unsqueeze(-1), E)[0]  # (Bt, E, N)
    Cx = _expand_groups(C.to(cdt).unsqueeze(-1), E)[0]  # (Bt, E, N)
    decay = torch.exp(step.unsqueeze(-1) * A.to(cdt))  # (Bt, E, N)
    state.copy_(state * decay + (step * x.to(cdt)).unsqueeze(-1) * Bx)
    y = (state * Cx).sum(-1)  # (Bt, E)
    if D is not None:
        y = y + D.to(cdt) * x.to(cdt)
    if z is not None:
        y = y * F.silu(z.to(cdt))
    return y.to(x.dtype)
