"""The selective scan (Mamba paper, section 3.2, Algorithm 2) and its one-step update, with backend dispatch.

Glossary: B batch, E channels (d_inner), L length, N d_state, G groups of channels sharing B/C.

    dt_t   = softplus(delta_t + delta_bias)            (if delta_softplus)
    h_t    = exp(dt_t * A) * h_{t-1} + dt_t * B_t * u_t  (ZOH for A, Euler for B, as in the paper)
    y_t    = <C_t, h_t> + D * u_t ;  y_t *= silu(z_t)     (if z is given)

Layout follows mamba_ssm's `selective_scan_fn`: u, delta, z (B, E, L); A (E, N); B, C (B, N, L) or grouped
(B, G, N, L); D, delta_bias (E,). Additions: `initial_state` (B, E, N), `return_final_state`, `reverse`
(scan from L-1 down to 0, as if the inputs were flipped), and `resets` (B, L) bool: True at t marks the first
position of a new packed sequence, so no state crosses into t (in reverse order, none crosses out of t).

Backends: "triton" (kernels/, CUDA tensors, or any tensor with TRITON_INTERPRET=1) and "reference"
(chunked PyTorch, any device). Default "auto": Triton for CUDA tensors when it imports, else the reference.
The environment variable MAMBASEQ_SCAN_BACKEND or the `backend` argument forces one.
"""
from __future__ import annotations

import os

import torch

from mambaseq.ops.reference import selective_scan_ref, selective_state_update_ref

BACKENDS = ("auto", "triton", "reference")
ENV_VAR = "MAMBASEQ_SCAN_BACKEND"


class BackendUnavailable(RuntimeError):
    """A scan backend was forced but cannot run here."""


def triton_status() -> str | None:
    """None when the Triton backend can be imported, else the reason it cannot."""
    try:
        import triton  # noqa: F401  (imported lazily: `import mambaseq` must not pull triton in)
    except Exception as err:  # ImportError, or a broken install raising anything else
        return f"triton cannot be imported ({type(err).__name__}: {err})"
    return None


def _triton_can_run(device: torch.device) -> str | None:
    reason = triton_status()
    if reason is None and device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        reason = f"tensors are on {device.type}; Triton needs CUDA tensors (or TRITON_INTERPRET=1)"
    return reason


def resolve_backend(device: torch.device, backend: str | None = None) -> str:
    """The backend that will run for tensors on `device` ("triton" or "reference")."""
    choice = (backend or os.environ.get(ENV_VAR) or "auto").lower()
    if choice not in BACKENDS:
        raise BackendUnavailable(f"unknown scan backend {choice!r} (expected one of {', '.join(BACKENDS)})")
    if choice == "reference":
        return "reference"
    reason = _triton_can_run(device)
    if choice == "triton":
        if reason is not None:
            raise BackendUnavailable(f"scan backend 'triton' was forced but is unavailable: {reason}")
        return "triton"
    return "triton" if reason is None and device.type == "cuda" else "reference"


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   initial_state=None, return_final_state=False, reverse=False, resets=None, backend=None):
    """y (B, E, L) in u's dtype, or (y, final_state (B, E, N) float32) if return_final_state."""
    if resolve_backend(u.device, backend) == "triton":
        from mambaseq.ops.triton_scan import selective_scan_triton
        fn = selective_scan_triton
    else:
        fn = selective_scan_ref
    return fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
              initial_state=initial_state, return_final_state=return_final_state, reverse=reverse,
              resets=resets)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                           backend=None):
    """One recurrent step: updates `state` (B, E, N) in place and returns y (B, E).

    x, dt, z (B, E); B, C (B, N) or grouped (B, G, N). Same maths as one position of `selective_scan`.
    """
    if resolve_backend(x.device, backend) == "triton":
        from mambaseq.ops.triton_scan import selective_state_update_triton
        fn = selective_state_update_triton
    else:
        fn = selective_state_update_ref
    return fn(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)


__all__ = ["selective_scan", "selective_state_update", "resolve_backend", "triton_status",
           "BackendUnavailable", "BACKENDS", "ENV_VAR"]
