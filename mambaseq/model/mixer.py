"""The Mamba mixer (Gu & Dao 2023, section 3.4 and Fig. 3), parameterised as state-spaces/mamba's Mamba-1 block.

Glossary: B batch, L length, D d_model, E d_inner, N d_state, R dt_rank, K d_conv.

    x, z = in_proj(h)                                    D -> 2E
    u    = silu(causal depthwise conv1d(x))              width K, one filter per channel
    dt, B, C = dt_proj(x_proj(u)[:R]), x_proj(u)[R:R+N], x_proj(u)[R+N:]
    y    = selective_scan(u, dt, A = -exp(A_log), B, C, D, z, delta_bias, softplus)
    out  = out_proj(y)                                   E -> D

Ablations (paper section 4.6, Table 7): `selective=False` learns dt (per channel), B and C (N,) as parameters
that do not depend on the input (S4D-like); `fixed_dt > 0` replaces the learned dt by that constant.
`bidirectional=True` adds a second inner SSM that reads the sequence backwards (Caduceus BiMamba).

Packed batches: `resets` (B, L) True marks the first token of a new sequence; neither the scan state nor a conv
tap crosses a reset. Streaming: `state` = (conv state (B, E, K-1): the last K-1 conv inputs, SSM state (B, E, N))
is the initial state of a forward pass and is returned updated, so chunked passes equal one pass.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from mambaseq.config import ModelConfig
from mambaseq.ops import selective_scan, selective_state_update


def inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    """y with softplus(y) == x, stable for small x (as mamba_ssm's dt bias init)."""
    return x + torch.log(-torch.expm1(-x))


def causal_conv(x, weight, bias, prefix=None, seg=None):
    """Depthwise causal conv with an optional carried prefix and segment isolation.

    x (B, E, L); weight (E, 1, K); bias (E,); prefix (B, E, K-1) the inputs just before x (zeros when None);
    seg (B, L) segment ids (cumulative resets) or None: a tap reading position s contributes to t only when
    s and t lie in the same segment; the prefix belongs to segment 0. Returns (out (B, E, L), new prefix
    (B, E, K-1)), the new prefix zeroed where it precedes the last segment so it never leaks across a reset.
    """
    batch, E, L = x.shape
    K = weight.shape[-1]
    if prefix is None:
        prefix = x.new_zeros(batch, E, K - 1)
    xp = torch.cat([prefix.to(x.dtype), x], dim=-1)  # (B, E, K-1+L)
    segp = None if seg is None else F.pad(seg, (K - 1, 0))  # (B, K-1+L)
    # K shifted multiply-adds rather than F.conv1d(groups=E): on CPU (torch 2.13) they are hundreds of times
    # faster for small K, and each tap can be masked at a reset
    out = bias[:, None]  # (E, 1), broadcast to (B, E, L) by the first tap
    for j in range(K):  # tap j reads xp[t + j], i.e. the input K-1-j steps back
        tap = weight[:, 0, j, None] * xp[..., j:j + L]  # (B, E, L)
        if segp is not None:
            tap = tap * (segp[:, j:j + L] == seg).unsqueeze(1)  # zero across a reset
        out = out + tap
    if segp is None:
        return out, xp[..., L:]
    return out, xp[..., L:] * (segp[:, L:] == seg[:, -1:]).unsqueeze(1)  # (B, E, K-1)


class SelectiveSSM(nn.Module):
    """The part of the mixer between in_proj and out_proj, for one scan direction."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        E, N, R = cfg.d_inner, cfg.d_state, cfg.resolved_dt_rank
        self.cfg = cfg
        self.conv1d = nn.Conv1d(E, E, cfg.d_conv, groups=E, bias=True)
        learned_dt = cfg.fixed_dt == 0
        if learned_dt:  # dt log-uniform in [dt_min, dt_max] through its softplus bias (mamba_ssm's init)
            dt = torch.exp(torch.rand(E) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
            dt_bias = inverse_softplus(dt.clamp(min=cfg.dt_init_floor))  # (E,)
        if cfg.selective:
            self.x_proj = nn.Linear(E, (R if learned_dt else 0) + 2 * N, bias=False)
            if learned_dt:
                self.dt_proj = nn.Linear(R, E, bias=True)
                nn.init.uniform_(self.dt_proj.weight, -R ** -0.5, R ** -0.5)
                with torch.no_grad():
                    self.dt_proj.bias.copy_(dt_bias)
        else:
            if learned_dt:
                self.dt_bias = nn.Parameter(dt_bias)  # (E,)
            self.B = nn.Parameter(torch.ones(N))  # S4D init: B = 1, C ~ N(0, 1)
            self.C = nn.Parameter(torch.randn(N))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))  # (E, N)
        self.D = nn.Parameter(torch.ones(E))

    def _dt_B_C(self, u):
        """u (..., E) channels last -> (delta (..., E), B (..., N), C (..., N), delta_bias, softplus)."""
        cfg, N = self.cfg, self.cfg.d_state
        if cfg.selective:
            proj = self.x_proj(u)  # (..., [R +] 2N)
            B, C = proj[..., -2 * N:-N], proj[..., -N:]  # (..., N)
        else:
            B, C = self.B.expand(*u.shape[:-1], N), self.C.expand(*u.shape[:-1], N)  # views, no copy
        if cfg.fixed_dt > 0:
            return u.new_full((), cfg.fixed_dt).expand(u.shape), B, C, None, False
        if cfg.selective:
            return F.linear(proj[..., :-2 * N], self.dt_proj.weight), B, C, self.dt_proj.bias, True
        return self.dt_bias.expand(u.shape), B, C, None, True

    def forward(self, x, z, resets=None, seg=None, reverse=False, state=None):
        """x, z (B, E, L) -> y (B, E, L), and the new state when `state` is given."""
        conv_state, ssm_state = state if state is not None else (None, None)
        if reverse:  # the reverse direction's conv looks ahead: run it causally on the flipped sequence
            conv, new_conv = causal_conv(x.flip(-1), self.conv1d.weight, self.conv1d.bias, None,
                                         None if seg is None else seg.flip(-1))
            conv = conv.flip(-1)
        else:
            conv, new_conv = causal_conv(x, self.conv1d.weight, self.conv1d.bias, conv_state, seg)
        u = F.silu(conv)  # (B, E, L)
        delta, B, C, delta_bias, softplus = self._dt_B_C(u.transpose(1, 2))
        out = selective_scan(u, delta.transpose(1, 2), -torch.exp(self.A_log), B.transpose(1, 2),
                             C.transpose(1, 2), self.D, z, delta_bias=delta_bias, delta_softplus=softplus,
                             initial_state=ssm_state, return_final_state=state is not None, reverse=reverse,
                             resets=resets)
        if state is None:
            return out
        y, h = out
        return y, (new_conv, h)

    def step(self, x, z, conv_state, ssm_state):
        """One token: x, z (B, E) -> y (B, E); conv_state (B, E, K-1) and ssm_state (B, E, N) updated in place."""
        window = torch.cat([conv_state, x.unsqueeze(-1)], dim=-1)  # (B, E, K)
        conv_state.copy_(window[..., 1:])
        u = F.silu((window * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias)  # (B, E)
        delta, B, C, delta_bias, softplus = self._dt_B_C(u)
        return selective_state_update(ssm_state, u, delta, -torch.exp(self.A_log), B, C, self.D, z,
                                      dt_bias=delta_bias, dt_softplus=softplus)


class MambaMixer(nn.Module):
    """in_proj -> SelectiveSSM (one, or forward + reverse summed) -> out_proj."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.in_proj = nn.Linear(cfg.d_model, 2 * cfg.d_inner, bias=False)
        self.ssm = SelectiveSSM(cfg)
        # Caduceus (Schiff et al. 2024, section 3.1) shares in_proj/out_proj between directions and keeps the
        # inner SSM (conv, x_proj, dt_proj, A, D) per direction: a conv that looks back and one that looks
        # ahead need different filters, and the projections are the bulk of the parameters. The reverse scan
        # uses the op's `reverse=True` on the unflipped tensors, which saves flipping u, dt, B, C and z.
        self.ssm_rev = SelectiveSSM(cfg) if cfg.bidirectional else None
        self.out_proj = nn.Linear(cfg.d_inner, cfg.d_model, bias=False)

    def forward(self, h, resets=None, state=None):
        """h (B, L, D) -> (B, L, D), and the new state when `state` (conv, ssm) is given (causal only)."""
        x, z = self.in_proj(h).transpose(1, 2).chunk(2, dim=1)  # (B, E, L) each
        seg = None if resets is None else resets.long().cumsum(-1)  # (B, L) segment ids
        out = self.ssm(x, z, resets, seg, state=state)
        y, new_state = out if state is not None else (out, None)
        if self.ssm_rev is not None:
            y = y + self.ssm_rev(x, z, resets, seg, reverse=True)  # (B, E, L)
        out = self.out_proj(y.transpose(1, 2))  # (B, L, D)
        return out if state is None else (out, new_state)

    def step(self, h, conv_state, ssm_state):
        """h (B, D) -> (B, D); the states are updated in place."""
        x, z = self.in_proj(h).chunk(2, dim=-1)  # (B, E) each
        return self.out_proj(self.ssm.step(x, z, conv_state, ssm_state))
