"""The Mamba model: recurrent and chunked inference equal the full pass, packing, pooling, ablations, gradients."""
import pytest
import torch
import torch.nn.functional as F

from mambaseq.config import ModelConfig
from mambaseq.model import MambaModel, causal_conv
from mambaseq.model import mixer as mixer_module

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-4, atol=1e-5)}


def tiny(**kw) -> ModelConfig:
    # dt up to 0.5 so the SSM state matters over a few steps; d_state 4 keeps every test fast
    base = dict(vocab_size=6, d_model=16, n_layer=2, d_state=4, dt_min=0.05, dt_max=0.5)
    return ModelConfig(**{**base, **kw})


def make(cfg: ModelConfig, dtype=torch.float64, seed=0) -> MambaModel:
    torch.manual_seed(seed)
    model = MambaModel(cfg).to(dtype)
    with torch.no_grad():  # unit-scale embeddings so logits are O(1) and comparisons are not trivially small
        model.embedding.weight.normal_()
    return model


def tokens_for(cfg, batch, L, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (batch, L, cfg.n_channels) if cfg.n_channels > 1 else (batch, L)
    return torch.randint(0, cfg.vocab_size, shape, generator=g)


VARIANTS = {
    "default": {},
    "multichannel": dict(n_channels=3),
    "non_selective": dict(selective=False),
    "fixed_dt": dict(fixed_dt=0.1),
    "non_selective_fixed_dt": dict(selective=False, fixed_dt=0.1),
    "d_conv_1": dict(d_conv=1),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("prefill", [0, 2, 9])
def test_prefill_then_step_equals_forward(variant, prefill, dtype):
    cfg = tiny(**VARIANTS[variant])
    model = make(cfg, dtype)
    tokens = tokens_for(cfg, 2, 20)
    full = model(tokens)  # (B, L, [C,] V)
    cache = model.allocate_cache(2)
    outs = [model(tokens[:, :prefill], cache=cache)] if prefill else []
    outs += [model.step(tokens[:, t], cache).unsqueeze(1) for t in range(prefill, 20)]
    torch.testing.assert_close(torch.cat(outs, dim=1), full, **TOL[dtype])
    assert cache.ssm[0].dtype == (torch.float64 if dtype == torch.float64 else torch.float32)


@pytest.mark.parametrize("variant", ["default", "multichannel", "non_selective"])
def test_chunked_forward_with_cache_equals_one_pass(variant):
    cfg = tiny(**VARIANTS[variant])
    model = make(cfg)
    tokens = tokens_for(cfg, 2, 40)
    resets = torch.zeros(2, 40, dtype=torch.bool)
    resets[0, [5, 14, 15, 31]] = True  # 5: a chunk start; 14, 15: just before and at a chunk end
    resets[1, 0] = True
    for use_resets in (False, True):
        r = resets if use_resets else None
        full = model(tokens, resets=r)
        cache = model.allocate_cache(2)
        bounds = [0, 5, 6, 16, 33, 40]  # chunks of 5, 1, 10, 17, 7: some shorter than d_conv - 1
        parts = [model(tokens[:, a:b], resets=None if r is None else r[:, a:b], cache=cache)
                 for a, b in zip(bounds, bounds[1:])]
        torch.testing.assert_close(torch.cat(parts, dim=1), full, **TOL[torch.float64])


def test_fresh_cache_is_a_no_op_and_cache_carries_no_graph():
    cfg = tiny()
    model = make(cfg)
    tokens = tokens_for(cfg, 2, 12)
    cache = model.allocate_cache(2)
    out = model(tokens, cache=cache)
    torch.testing.assert_close(out, model(tokens), rtol=0, atol=0)
    out.sum().backward()  # the chunk itself is differentiable ...
    assert all(not t.requires_grad for t in cache.conv + cache.ssm)  # ... but the carried state is not


@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_equals_separate(bidirectional):
    cfg = tiny(bidirectional=bidirectional)
    model = make(cfg)
    lengths = [5, 11, 8]
    seqs = [tokens_for(cfg, 1, n, seed=i) for i, n in enumerate(lengths)]
    packed = torch.cat(seqs, dim=1)  # (1, 24)
    resets = torch.zeros(1, sum(lengths), dtype=torch.bool)
    resets[0, [0, 5, 16]] = True
    out = model(packed, resets=resets)
    separate = torch.cat([model(s) for s in seqs], dim=1)
    torch.testing.assert_close(out, separate, **TOL[torch.float64])
    if not bidirectional:  # step-by-step with per-step resets gives the same
        cache = model.allocate_cache(1)
        steps = torch.stack([model.step(packed[:, t], cache, resets=resets[:, t]) for t in range(24)], dim=1)
        torch.testing.assert_close(steps, separate, **TOL[torch.float64])


def test_causal_conv_matches_conv1d_and_isolates_segments():
    torch.manual_seed(0)
    x, w, b = (torch.randn(*shape, dtype=torch.float64) for shape in ((2, 3, 10), (3, 1, 4), (3,)))
    plain, _ = causal_conv(x, w, b)
    torch.testing.assert_close(plain, F.conv1d(x, w, b, padding=3, groups=3)[..., :10])
    seg = torch.zeros(2, 10, dtype=torch.long)
    torch.testing.assert_close(causal_conv(x, w, b, seg=seg)[0], plain)  # one segment: the masked path agrees
    seg[:, 6:] = 1
    out, _ = causal_conv(x, w, b, seg=seg)
    torch.testing.assert_close(out[..., 6:], causal_conv(x[..., 6:], w, b)[0])


@pytest.mark.parametrize("bidirectional", [False, True])
def test_classifier_pools_only_valid_positions(bidirectional):
    cfg = tiny(n_classes=3, bidirectional=bidirectional, pad_id=0)
    model = make(cfg)
    g = torch.Generator().manual_seed(3)
    seq = torch.randint(1, 6, (1, 9), generator=g)  # no pad id inside the sequence
    alone = model.classify(seq, mask=torch.ones(1, 9, dtype=torch.bool))
    right = torch.cat([seq, torch.zeros(1, 7, dtype=torch.long)], dim=1)  # (1, 16), pad id 0
    left = torch.cat([torch.zeros(1, 7, dtype=torch.long), seq], dim=1)
    lengths = torch.tensor([9])
    for padded, mask in ((right, right != 0), (left, left != 0)):
        scrambled = torch.where(mask, padded, torch.randint(0, 6, padded.shape, generator=g))
        for logits in (model.classify(padded), model.classify(padded, mask=mask),
                       model.classify(scrambled, mask=mask)):
            torch.testing.assert_close(logits, alone, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model.classify(right, lengths=lengths), alone, rtol=1e-12, atol=1e-12)
    assert alone.shape == (1, 3)


def test_bidirectional_reads_both_ways_and_has_no_recurrent_view():
    for bidirectional in (False, True):
        model = make(tiny(bidirectional=bidirectional))
        tokens = tokens_for(model.config, 1, 12)
        changed = tokens.clone()
        changed[0, -1] = (changed[0, -1] + 1) % 6
        first_moves = not torch.equal(model(tokens)[:, 0], model(changed)[:, 0])
        assert first_moves == bidirectional  # the future reaches position 0 only through the reverse scan
    assert model.embed(tokens).shape == (1, 12, 16)
    for call in (lambda: model.allocate_cache(1), lambda: model.step(tokens[:, 0], None),
                 lambda: model(tokens, cache=object())):
        with pytest.raises(ValueError, match="bidirectional"):
            call()


def test_ablations_change_parameters_and_inputs_to_the_scan(monkeypatch):
    names = lambda m: {n.split("ssm.")[-1] for n, _ in m.named_parameters() if ".ssm." in n}  # noqa: E731
    base = make(tiny())
    non_sel = make(tiny(selective=False))
    fixed = make(tiny(fixed_dt=0.1))
    assert {"x_proj.weight", "dt_proj.weight", "dt_proj.bias"} <= names(base)
    assert names(non_sel) == {"conv1d.weight", "conv1d.bias", "A_log", "D", "dt_bias", "B", "C"}
    assert names(fixed) == {"conv1d.weight", "conv1d.bias", "A_log", "D", "x_proj.weight"}
    assert fixed.layers[0].mixer.ssm.x_proj.out_features == 2 * 4  # B and C only
    both = make(tiny(selective=False, fixed_dt=0.1))
    assert names(both) == {"conv1d.weight", "conv1d.bias", "A_log", "D", "B", "C"}

    seen = []
    real_scan = mixer_module.selective_scan
    monkeypatch.setattr(mixer_module, "selective_scan", lambda *a, **k: seen.append((a, k)) or real_scan(*a, **k))
    for model in (non_sel, fixed):
        seen.clear()
        model(tokens_for(model.config, 2, 10, seed=1))
        model(tokens_for(model.config, 2, 10, seed=2))
        (a1, k1), (a2, k2) = seen[0], seen[model.config.n_layer]  # layer 0 for both inputs
        delta1 = F.softplus(a1[1]) if k1["delta_softplus"] else a1[1]
        delta2 = F.softplus(a2[1]) if k2["delta_softplus"] else a2[1]
        if model is fixed:
            assert k1["delta_softplus"] is False and bool((delta1 == 0.1).all())
        else:  # dt, B, C are the same for every input, row and position; B/C are broadcast views
            assert torch.equal(delta1, delta2) and torch.equal(a1[3], a2[3]) and torch.equal(a1[4], a2[4])
            assert a1[3].stride()[0] == 0 and a1[3].stride()[-1] == 0 and bool((delta1 == delta1[:1, :, :1]).all())
    for cfg in (tiny(selective=False), tiny(fixed_dt=0.1)):  # each ablation still trains
        model = make(cfg, torch.float32)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        tokens = tokens_for(cfg, 4, 24)
        losses = []
        for _ in range(3):
            loss = F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0]


@pytest.mark.parametrize("kw", [{}, dict(selective=False), dict(fixed_dt=0.1), dict(bidirectional=True),
                                dict(n_channels=2)])
def test_gradients_reach_every_parameter(kw):
    cfg = tiny(n_classes=2, **kw)
    model = make(cfg)
    tokens = tokens_for(cfg, 2, 16)
    loss = model(tokens).pow(2).mean() + model.classify(tokens, lengths=torch.tensor([16, 11])).pow(2).mean()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_init_follows_mamba():
    cfg = tiny(d_model=32, dt_min=1e-3, dt_max=1e-1)
    ssm = make(cfg).layers[0].mixer.ssm
    dt = F.softplus(ssm.dt_proj.bias)
    assert bool(((dt >= 1e-3 * (1 - 1e-6)) & (dt <= 1e-1 * (1 + 1e-6))).all())
    R = cfg.resolved_dt_rank
    assert ssm.dt_proj.weight.abs().max() <= R ** -0.5
    torch.testing.assert_close(-torch.exp(ssm.A_log), -torch.arange(1., 5., dtype=torch.float64).repeat(64, 1))
    assert torch.equal(ssm.D, torch.ones(64, dtype=torch.float64))


def test_multichannel_heads_are_tied_per_channel():
    cfg = tiny(n_channels=3)
    model = make(cfg)
    tokens = tokens_for(cfg, 2, 8)
    logits = model(tokens)
    assert logits.shape == (2, 8, 3, 6)
    h = model.embed(tokens)
    table = model.embedding.weight.view(3, 6, 16)  # (C, V, D)
    torch.testing.assert_close(logits[:, :, 1], h @ table[1].T)


def test_bad_inputs_are_refused():
    model = make(tiny())
    with pytest.raises(ValueError, match=r"\[0, 6\)"):
        model(torch.tensor([[0, 6]]))
    with pytest.raises(ValueError, match=r"\(batch, length\)"):
        model(torch.zeros(2, 3, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="no classification head"):
        model.classify(torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="mask and cache"):
        model(torch.zeros(1, 3, dtype=torch.long), mask=torch.ones(1, 3, dtype=torch.bool),
              cache=model.allocate_cache(1))


def test_param_groups_cover_each_parameter_once():
    model = make(tiny())
    groups = model.param_groups(0.1)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())
    no_decay = {id(p) for p in groups[1]["params"]}
    assert id(model.layers[0].mixer.ssm.A_log) in no_decay and id(model.embedding.weight) not in no_decay
