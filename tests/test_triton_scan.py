"""Triton scan kernels against the PyTorch reference, on the CPU through Triton's interpreter (float32).

Every case checks the output, the final state and the gradient of every input, with outputs and scratch
buffers pre-filled with NaN so an element the kernels forget to write fails the comparison. The interpreter is
slow, so the cases are a chosen subset of L in {1, 7, 63, 300} x E in {4, 48} x N in {1, 16} x options, and
block sizes are set per case so that both one-block and many-block, one-chunk and many-chunk, one-segment and
many-segment paths run.
"""
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"  # read when the kernels are decorated, i.e. at their first import

import pytest
import torch

pytest.importorskip("triton")

from mambaseq.ops import selective_scan, selective_state_update  # noqa: E402
from mambaseq.ops.reference import selective_scan_ref, selective_state_update_ref  # noqa: E402

_kernels = sys.modules.get("mambaseq.kernels.selective_scan_fwd")
if _kernels is not None and not type(_kernels._fwd_kernel).__name__.startswith("Interpreted"):
    pytest.skip("mambaseq.kernels was imported before TRITON_INTERPRET=1 was set: run this file on its own",
                allow_module_level=True)

from mambaseq.ops import triton_scan  # noqa: E402

if not type(triton_scan.scan_fwd.__globals__["_fwd_kernel"]).__name__.startswith("Interpreted"):
    pytest.skip("Triton did not pick its interpreter", allow_module_level=True)


@pytest.fixture
def nan_outputs(monkeypatch):
    """torch.empty/empty_like return NaN-filled float tensors, so unwritten outputs cannot pass."""
    empty, empty_like = torch.empty, torch.empty_like

    def fill(t):
        return t.fill_(float("nan")) if t.is_floating_point() else t

    monkeypatch.setattr(torch, "empty", lambda *a, **k: fill(empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: fill(empty_like(*a, **k)))


@pytest.fixture
def blocks(monkeypatch):
    """Set the kernels' block sizes for one test."""
    def set_blocks(BE=8, segments=None, NL=4, bwd_segments=None, BE_bwd=None, NG=2):
        monkeypatch.setattr(triton_scan, "FWD_CONFIG", dict(BE=BE, NL=NL, segments=segments, num_warps=4))
        monkeypatch.setattr(triton_scan, "BWD_CONFIG", dict(BE=BE_bwd or BE, NG=NG, segments=bwd_segments,
                                                            num_warps=4))
    return set_blocks


def _inputs(batch, E, L, N, G, gen, transposed_bc=False):
    u = torch.randn(batch, E, L, generator=gen)
    delta = 0.5 * torch.randn(batch, E, L, generator=gen)
    A = -(0.1 + 2 * torch.rand(E, N, generator=gen))
    shape = (batch, N, L) if G is None else (batch, G, N, L)
    if transposed_bc:  # the layout mamba's x_proj gives: L is not the unit-stride axis
        B = torch.randn(*shape[:-2], shape[-1], shape[-2], generator=gen).transpose(-1, -2)
        C = torch.randn(*shape[:-2], shape[-1], shape[-2], generator=gen).transpose(-1, -2)
    else:
        B = torch.randn(*shape, generator=gen)
        C = torch.randn(*shape, generator=gen)
    D = torch.randn(E, generator=gen)
    z = torch.randn(batch, E, L, generator=gen)
    bias = 0.3 * torch.randn(E, generator=gen)
    h0 = torch.randn(batch, E, N, generator=gen)
    return dict(u=u, delta=delta, A=A, B=B, C=C, D=D, z=z, delta_bias=bias, initial_state=h0)


def _rel(a, b):
    return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()


# (batch, E, L, N, G, options, blocks): options name what is passed; blocks are the forward's (BE, segments of L,
# NL lanes over N), then the backward's segments of L, BE and NG lanes per channel
CASES = [
    (2, 4, 1, 16, None, "D z bias softplus h0", (8, None, 4, 1, 8, 2)),
    (1, 4, 7, 1, None, "", (4, None, 4, 2, 4, 2)),
    (2, 48, 63, 16, None, "D z bias softplus h0 resets transposed_bc", (16, None, 2, 3, 32, 4)),
    (1, 48, 63, 1, 4, "D softplus reverse resets h0", (4, 2, 1, 4, 4, 2)),
    (1, 4, 300, 16, 2, "z bias softplus reverse h0", (2, 5, 4, 7, 2, 2)),
    (1, 48, 300, 5, None, "D z bias softplus resets", (64, 3, 16, 1, 16, 4)),
    (2, 4, 300, 16, None, "D z softplus reverse resets h0", (4, None, 1, 16, 4, 4)),
]


@pytest.mark.parametrize("batch,E,L,N,G,options,blk", CASES,
                         ids=[f"b{c[0]}-E{c[1]}-L{c[2]}-N{c[3]}-G{c[4]}-{c[5].replace(' ', '+') or 'plain'}"
                              for c in CASES])
def test_scan_matches_reference(batch, E, L, N, G, options, blk, nan_outputs, blocks):
    opts = set(options.split())
    blocks(BE=blk[0], segments=blk[1], NL=blk[2], bwd_segments=blk[3], BE_bwd=blk[4], NG=blk[5])
    gen = torch.Generator().manual_seed(L * 1000 + E)
    x = _inputs(batch, E, L, N, G, gen, transposed_bc="transposed_bc" in opts)
    for name in ("D", "z", "delta_bias"):
        if name.split("_")[-1] not in opts and name not in opts:
            x[name] = None
    if "h0" not in opts:
        x["initial_state"] = None
    kw = dict(delta_softplus="softplus" in opts, reverse="reverse" in opts, return_final_state=True)
    if "resets" in opts:
        resets = torch.rand(batch, L, generator=gen) < 0.1
        resets[0, 0] = True  # discards the initial state in the forward direction
        resets[-1, L // 2] = True
        kw["resets"] = resets

    leaves = {k: v.clone().requires_grad_() for k, v in x.items() if v is not None}
    ref_leaves = {k: v.clone().requires_grad_() for k, v in x.items() if v is not None}
    y, hN = triton_scan.selective_scan_triton(**{**x, **leaves}, **kw)
    y_ref, hN_ref = selective_scan_ref(**{**x, **ref_leaves}, **kw)
    assert not torch.isnan(y).any() and not torch.isnan(hN).any()
    assert _rel(y, y_ref) < 1e-5
    assert _rel(hN, hN_ref) < 1e-5

    gy = torch.randn(y.shape, generator=gen)
    gh = torch.randn(hN.shape, generator=gen)
    ((y * gy).sum() + (hN * gh).sum()).backward()
    ((y_ref * gy).sum() + (hN_ref * gh).sum()).backward()
    for k in leaves:
        got, want = leaves[k].grad, ref_leaves[k].grad
        assert got is not None and not torch.isnan(got).any(), f"d{k} missing or NaN"
        assert _rel(got, want) < 1e-4, f"d{k}: relative error {_rel(got, want):.2e}"


def test_forward_only_and_public_dispatch(nan_outputs, blocks):
    """No grad: no chunk states saved; the public op forced to 'triton' runs the same kernels."""
    blocks(BE=4)
    gen = torch.Generator().manual_seed(7)
    x = _inputs(2, 4, 40, 16, None, gen)
    with torch.no_grad():
        y = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"], delta_softplus=True,
                           backend="triton")
    y_ref = selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                               delta_softplus=True)
    assert _rel(y, y_ref) < 1e-5


def test_final_state_gradient_only(blocks):
    """A loss on the final state alone: the backward starts from its gradient, y's is absent."""
    blocks(BE=4, bwd_segments=2)
    gen = torch.Generator().manual_seed(3)
    x = _inputs(1, 4, 20, 16, None, gen)
    u = x["u"].clone().requires_grad_()
    u_ref = x["u"].clone().requires_grad_()
    _, h = triton_scan.selective_scan_triton(u, x["delta"], x["A"], x["B"], x["C"], return_final_state=True)
    _, h_ref = selective_scan_ref(u_ref, x["delta"], x["A"], x["B"], x["C"], return_final_state=True)
    h.sum().backward()
    h_ref.sum().backward()
    assert _rel(u.grad, u_ref.grad) < 1e-5


def test_final_state_stored_only_when_asked(blocks, monkeypatch):
    """Without return_final_state the forward does not store the state (it cost time), and y and the gradients
    are those of the reference."""
    blocks(BE=4)
    stored = []

    def spy(*args, **kwargs):
        stored.append(kwargs["store_hN"])
        return scan_fwd(*args, **kwargs)

    scan_fwd = triton_scan.scan_fwd
    monkeypatch.setattr(triton_scan, "scan_fwd", spy)
    gen = torch.Generator().manual_seed(5)
    x = _inputs(2, 4, 30, 16, None, gen)
    u = x["u"].clone().requires_grad_()
    u_ref = x["u"].clone().requires_grad_()
    y = triton_scan.selective_scan_triton(u, x["delta"], x["A"], x["B"], x["C"], D=x["D"], delta_softplus=True)
    y_ref = selective_scan_ref(u_ref, x["delta"], x["A"], x["B"], x["C"], D=x["D"], delta_softplus=True)
    assert stored == [False] and torch.is_tensor(y)
    assert _rel(y, y_ref) < 1e-5
    gy = torch.randn(y.shape, generator=gen)
    (y * gy).sum().backward()
    (y_ref * gy).sum().backward()
    assert _rel(u.grad, u_ref.grad) < 1e-5
    triton_scan.selective_scan_triton(u, x["delta"], x["A"], x["B"], x["C"], return_final_state=True)
    assert stored == [False, True]


@pytest.mark.parametrize("E,N,G,options", [(48, 16, None, "D z bias softplus"), (4, 1, 2, "softplus"),
                                           (48, 16, 4, "D z")])
def test_state_update_matches_reference(E, N, G, options, nan_outputs):
    opts = set(options.split())
    gen = torch.Generator().manual_seed(E + N)
    batch = 3
    state = torch.randn(batch, E, N, generator=gen)
    x = torch.randn(batch, E, generator=gen)
    dt = torch.randn(batch, E, generator=gen)
    A = -(0.1 + torch.rand(E, N, generator=gen))
    shape = (batch, N) if G is None else (batch, G, N)
    B = torch.randn(*shape, generator=gen)
    C = torch.randn(*shape, generator=gen)
    D = torch.randn(E, generator=gen) if "D" in opts else None
    z = torch.randn(batch, E, generator=gen) if "z" in opts else None
    bias = torch.randn(E, generator=gen) if "bias" in opts else None
    state_ref = state.clone()
    y = selective_state_update(state, x, dt, A, B, C, D=D, z=z, dt_bias=bias, dt_softplus="softplus" in opts,
                               backend="triton")
    y_ref = selective_state_update_ref(state_ref, x, dt, A, B, C, D=D, z=z, dt_bias=bias,
                                       dt_softplus="softplus" in opts)
    assert _rel(y, y_ref) < 1e-5
    assert _rel(state, state_ref) < 1e-5


def test_steps_continue_the_scan(blocks):
    """Scan a prefix, then step through the rest with the update kernel: same outputs as one scan."""
    blocks(BE=4)
    gen = torch.Generator().manual_seed(11)
    x = _inputs(2, 4, 12, 16, None, gen)
    kw = dict(D=x["D"], delta_bias=x["delta_bias"], delta_softplus=True)
    cut = 9
    with torch.no_grad():
        y_full = triton_scan.selective_scan_triton(x["u"], x["delta"], x["A"], x["B"], x["C"], z=x["z"], **kw)
        _, state = triton_scan.selective_scan_triton(
            x["u"][..., :cut], x["delta"][..., :cut], x["A"], x["B"][..., :cut], x["C"][..., :cut],
            z=x["z"][..., :cut], return_final_state=True, **kw)
        for t in range(cut, 12):
            y_t = triton_scan.selective_state_update_triton(
                state, x["u"][..., t], x["delta"][..., t], x["A"], x["B"][..., t], x["C"][..., t], D=x["D"],
                z=x["z"][..., t], dt_bias=x["delta_bias"], dt_softplus=True)
            assert _rel(y_t, y_full[..., t]) < 1e-5


@pytest.mark.parametrize("dtype,batch,L,E,expected", [
    (torch.bfloat16, 1, 131072, 1536, torch.bfloat16),  # few rows: the backward cuts L into segments
    (torch.bfloat16, 8, 8192, 1536, torch.float32),     # enough rows: L kept whole, fp32 measured faster
    (torch.float16, 1, 131072, 1536, torch.float32),    # fp16 and fp32 inputs keep fp32 states
    (torch.float32, 1, 131072, 1536, torch.float32),
])
def test_checkpoint_dtype(dtype, batch, L, E, expected):
    u = torch.empty(1, 1, 1, dtype=dtype).expand(batch, E, L)  # only shapes and dtype are read
    B = torch.empty(1, 1, 1, dtype=dtype).expand(batch, 16, L)
    assert triton_scan._checkpoint_dtype(u, B, sm_count=132) == expected


@pytest.mark.parametrize("batch,E,groups,expected", [
    (8, 1536, 1, 8),     # 1536 programs of 8 channels fill 132 multiprocessors 8 deep: L stays whole
    (2, 1536, 1, 32),    # too few rows: 32 channels a program, L cut into segments
    (8, 1536, 384, 8),   # groups of 4 channels: 8 wanted, the launcher's block_channels then makes it 4
])
def test_forward_block(batch, E, groups, expected):
    from mambaseq.kernels.selective_scan_fwd import forward_block

    assert forward_block(batch, E, E // groups, sm_count=132) == expected


def test_automatic_forward_block_matches_the_reference(nan_outputs, blocks):
    """BE None (the shipped default) lets the launcher pick the forward's block from the batch."""
    blocks(BE=None, NL=1, BE_bwd=4)
    x = _inputs(2, 8, 40, 16, None, torch.Generator().manual_seed(3))
    y = selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"], delta_bias=x["delta_bias"],
                       delta_softplus=True, backend="triton")
    y_ref = selective_scan_ref(x["u"], x["delta"], x["A"], x["B"], x["C"], D=x["D"], z=x["z"],
                               delta_bias=x["delta_bias"], delta_softplus=True)
    assert _rel(y, y_ref) < 1e-5
