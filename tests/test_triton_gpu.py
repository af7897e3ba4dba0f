"""Triton scan kernels on a CUDA GPU (marked `gpu`: run on the H200 machine with `pytest -m gpu`, never in CI).

Outputs at the benchmark shapes (E=1536, N=16) in bf16/fp16/fp32 against the float64 reference, gradients of
every input with grouped B/C, reverse and resets, and a 1,000,000-step sequence that must stay finite.
Errors are ||out - ref|| / ||ref||: < 1e-3 for fp32 inputs, < 1e-2 for bf16 and fp16.
"""
import pytest
import torch

from mambaseq.ops.reference import selective_scan_ref, selective_state_update_ref

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TOL = {torch.float32: 1e-3, torch.bfloat16: 1e-2, torch.float16: 1e-2}


def _rel(a, b):
    """Relative error; absolute where the reference is exactly zero (e.g. d(initial_state) behind a reset)."""
    diff = (a.double() - b.double()).norm()
    ref = b.double().norm()
    return (diff / ref if ref > 0 else diff).item()


def _inputs(batch, E, L, N, dtype, G=None, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)

    def rnd(*shape, scale=1.0):
        return (scale * torch.randn(*shape, device="cuda", generator=gen)).to(dtype)

    bc = (batch, N, L) if G is None else (batch, G, N, L)
    return dict(u=rnd(batch, E, L), delta=rnd(batch, E, L, scale=0.5),
                A=-torch.exp(torch.randn(E, N, device="cuda", generator=gen) * 0.5),  # fp32, like a model's
                B=rnd(*bc), C=rnd(*bc), D=torch.randn(E, device="cuda", generator=gen),
                z=rnd(batch, E, L), delta_bias=torch.randn(E, device="cuda", generator=gen) - 2.0)


def _f64(x):
    return {k: (v.double() if torch.is_tensor(v) else v) for k, v in x.items()}


@pytest.mark.parametrize("batch,L,dtype", [(8, 2048, torch.bfloat16), (8, 8192, torch.bfloat16),
                                           (2, 32768, torch.bfloat16), (1, 131072, torch.bfloat16),
                                           (8, 2048, torch.float16), (8, 2048, torch.float32)])
def test_forward_benchmark_shapes(batch, L, dtype):
    from mambaseq.ops.triton_scan import selective_scan_triton

    x = _inputs(batch, 1536, L, 16, dtype, seed=L)
    with torch.no_grad():
        y, h = selective_scan_triton(**x, delta_softplus=True, return_final_state=True)
        y_ref, h_ref = selective_scan_ref(**_f64(x), delta_softplus=True, return_final_state=True)
    assert not torch.isnan(y).any()
    assert _rel(y, y_ref) < TOL[dtype]
    assert _rel(h, h_ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("G,reverse,resets", [(None, False, False), (2, True, True), (None, True, False),
                                              (4, False, True)])
def test_gradients(dtype, G, reverse, resets):
    from mambaseq.ops.triton_scan import selective_scan_triton

    batch, E, L, N = 2, 256, 1500, 16
    x = _inputs(batch, E, L, N, dtype, G=G, seed=1)
    x["initial_state"] = torch.randn(batch, E, N, device="cuda")
    kw = dict(delta_softplus=True, reverse=reverse, return_final_state=True)
    if resets:
        r = torch.rand(batch, L, device="cuda") < 0.002
        r[0, 0] = True  # row 0 discards its initial state, row 1 keeps it
        r[1, 0] = False
        kw["resets"] = r
    leaves = {k: v.clone().requires_grad_() for k, v in x.items()}
    ref_leaves = {k: v.detach().double().requires_grad_() for k, v in x.items()}
    y, h = selective_scan_triton(**leaves, **kw)
    y_ref, h_ref = selective_scan_ref(**ref_leaves, **kw)
    gy = torch.randn_like(y_ref)
    gh = torch.randn_like(h_ref)
    ((y.double() * gy).sum() + (h.double() * gh).sum()).backward()
    ((y_ref * gy).sum() + (h_ref * gh).sum()).backward()
    assert _rel(y, y_ref) < TOL[dtype]
    for k in leaves:
        err = _rel(leaves[k].grad, ref_leaves[k].grad)
        assert err < TOL[dtype], f"d{k}: {err:.2e}"


def test_million_steps_stay_finite():
    from mambaseq.ops.triton_scan import selective_scan_triton

    x = _inputs(1, 64, 1_000_000, 16, torch.bfloat16, seed=2)
    with torch.no_grad():
        y, h = selective_scan_triton(**x, delta_softplus=True, return_final_state=True)
        y_ref, h_ref = selective_scan_ref(**{k: v.float() for k, v in x.items()}, delta_softplus=True,
                                          return_final_state=True)
    assert torch.isfinite(y).all() and torch.isfinite(h).all()
    assert _rel(y, y_ref) < 1e-2


@pytest.mark.parametrize("batch", [1, 256])
def test_state_update(batch):
    from mambaseq.ops.triton_scan import selective_state_update_triton

    gen = torch.Generator(device="cuda").manual_seed(batch)
    E, N = 1536, 16
    state = torch.randn(batch, E, N, device="cuda", generator=gen)
    args = [torch.randn(batch, E, device="cuda", generator=gen).bfloat16() for _ in range(2)]
    A = -torch.rand(E, N, device="cuda", generator=gen)
    B, C = (torch.randn(batch, N, device="cuda", generator=gen).bfloat16() for _ in range(2))
    D = torch.randn(E, device="cuda", generator=gen)
    z = torch.randn(batch, E, device="cuda", generator=gen).bfloat16()
    bias = torch.randn(E, device="cuda", generator=gen)
    ref_state = state.double()
    y = selective_state_update_triton(state, *args, A, B, C, D=D, z=z, dt_bias=bias, dt_softplus=True)
    y_ref = selective_state_update_ref(ref_state, *[a.double() for a in args], A.double(), B.double(),
                                       C.double(), D=D.double(), z=z.double(), dt_bias=bias.double(),
                                       dt_softplus=True)
    assert _rel(y, y_ref) < 1e-2
    assert _rel(state, ref_state) < 1e-5


@pytest.mark.parametrize("autocast", [False, True])
def test_model_training_step_triton_equals_reference(monkeypatch, autocast):
    """A full model's forward + backward (2 layers, L=2048) gives the same loss and gradients either way."""
    from mambaseq.config import ModelConfig
    from mambaseq.model import MambaModel

    torch.manual_seed(0)
    model = MambaModel(ModelConfig(d_model=128, n_layer=2)).cuda()
    tokens = torch.randint(1, 6, (4, 2048), device="cuda")
    results = {}
    for backend in ("reference", "triton"):
        monkeypatch.setenv("MAMBASEQ_SCAN_BACKEND", backend)
        model.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
            logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), tokens[:, 1:].flatten())
        loss.backward()
        results[backend] = (loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()})
    (ref_loss, ref_grads), (tri_loss, tri_grads) = results["reference"], results["triton"]
    assert abs(tri_loss - ref_loss) / ref_loss < (1e-2 if autocast else 1e-4)
    for name, grad in ref_grads.items():
        assert _rel(tri_grads[name], grad) < (5e-2 if autocast else 1e-3), name
