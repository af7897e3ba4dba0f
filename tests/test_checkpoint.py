"""Run folders: bit-exact save/load, exact AdamW resume, and one-line errors for every bad input."""
import json
import random
import zipfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from mambaseq.checkpoint import (CONFIG, TRAIN_STATE, WEIGHTS, CheckpointError, TrainState, from_pretrained,
                                 load_run, load_train_state, save_run)
from mambaseq.config import ModelConfig, RunConfig, TrainConfig
from mambaseq.model import MambaModel

# Pickle payloads written as literal bytes: the project never calls torch.save or pickle, even in tests.
PICKLE_BYTES = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s."  # protocol 2 pickle of {"a": 1}


def run_config(**model_kw) -> RunConfig:
    model = ModelConfig(**{**dict(vocab_size=6, d_model=16, n_layer=2, d_state=4), **model_kw})
    return RunConfig(task="lm", model=model, train=TrainConfig(seq_len=32), extra={"tokenizer": "dna"})


def make(cfg: RunConfig, dtype=torch.float32) -> MambaModel:
    torch.manual_seed(0)
    return MambaModel(cfg.model).to(dtype)


def lm_loss(model, tokens):
    return F.cross_entropy(model(tokens[:, :-1]).flatten(0, 1), tokens[:, 1:].flatten())


@pytest.mark.parametrize("dtype,model_kw", [(torch.float32, {}), (torch.float64, dict(n_classes=3)),
                                            (torch.bfloat16, dict(n_channels=2, bidirectional=True))])
def test_save_load_is_bit_exact(tmp_path, dtype, model_kw):
    cfg = run_config(**model_kw)
    model = make(cfg, dtype)
    save_run(tmp_path / "run", model, cfg)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [CONFIG, WEIGHTS]  # no temp files left
    loaded, cfg2 = load_run(tmp_path / "run")
    assert cfg2 == cfg
    original = dict(model.named_parameters()) | dict(model.named_buffers())
    restored = dict(loaded.named_parameters()) | dict(loaded.named_buffers())
    assert original.keys() == restored.keys()
    for name, t in original.items():
        assert restored[name].dtype == t.dtype and torch.equal(restored[name], t), name
        assert restored[name].requires_grad == t.requires_grad
    shape = (2, 12, 2) if cfg.model.n_channels > 1 else (2, 12)
    tokens = torch.randint(0, 6, shape)
    assert torch.equal(model(tokens), loaded(tokens))
    assert not from_pretrained(tmp_path / "run").training


def test_adamw_resume_is_exact(tmp_path):
    cfg = run_config()
    tokens = torch.randint(0, 6, (3, 17), generator=torch.Generator().manual_seed(5))

    def trainer(model):
        opt = torch.optim.AdamW(model.param_groups(0.1), lr=1e-2, betas=(0.9, 0.95))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / 3))
        return opt, sched

    def one_step(model, opt, sched):
        opt.zero_grad()
        lm_loss(model, tokens).backward()
        opt.step()
        sched.step()

    model = make(cfg)
    opt, sched = trainer(model)
    for _ in range(2):
        one_step(model, opt, sched)
    random.seed(11)
    np.random.seed(12)
    torch.manual_seed(13)
    save_run(tmp_path / "run", model, cfg, TrainState(opt, sched, {"step": 2, "tokens": 96, "best": 1.5}))
    expected_draws = (torch.rand(3), random.random(), np.random.rand())
    one_step(model, opt, sched)

    random.seed(0), np.random.seed(0), torch.manual_seed(0)  # scramble the RNGs: loading must restore them
    resumed, _ = load_run(tmp_path / "run")
    opt2, sched2 = trainer(resumed)
    counters = load_train_state(tmp_path / "run", TrainState(opt2, sched2))
    assert counters == {"step": 2, "tokens": 96, "best": 1.5}
    draws = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(draws[0], expected_draws[0]) and draws[1:] == expected_draws[1:]
    one_step(resumed, opt2, sched2)
    for (name, p), p2 in zip(model.named_parameters(), resumed.parameters()):
        assert torch.equal(p, p2), name
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_train_state_errors(tmp_path):
    cfg = run_config()
    model = make(cfg)
    save_run(tmp_path / "run", model, cfg)
    opt = torch.optim.AdamW(model.parameters())
    with pytest.raises(CheckpointError, match=TRAIN_STATE):
        load_train_state(tmp_path / "run", TrainState(opt))
    lm_loss(model, torch.randint(0, 6, (2, 9))).backward()
    opt.step()
    save_run(tmp_path / "run", model, cfg, TrainState(opt, counters={"step": 1}))
    other = torch.optim.AdamW(list(model.parameters())[:3])
    with pytest.raises(CheckpointError, match="optimizer state does not fit"):
        load_train_state(tmp_path / "run", TrainState(other))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(CheckpointError, match="without an LR scheduler"):
        load_train_state(tmp_path / "run", TrainState(opt, sched))


@pytest.fixture
def saved(tmp_path):
    cfg = run_config()
    return save_run(tmp_path / "run", make(cfg), cfg), cfg


def test_missing_folder_and_files(tmp_path, saved):
    run, _ = saved
    with pytest.raises(CheckpointError, match="run folder not found"):
        load_run(tmp_path / "nope")
    (run / WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match=f"{WEIGHTS}: file not found"):
        load_run(run)
    (run / CONFIG).unlink()
    with pytest.raises(CheckpointError, match=f"{CONFIG}: file not found"):
        load_run(run)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="is a file; expected a run folder"):
        load_run(tmp_path / "notes.txt")


@pytest.mark.parametrize("cut", [0.5, 0.99, 6])
def test_truncated_or_corrupt_weights(saved, cut):
    run, _ = saved
    data = (run / WEIGHTS).read_bytes()
    (run / WEIGHTS).write_bytes(data[:int(len(data) * cut)] if cut < 1 else data[:cut])
    with pytest.raises(CheckpointError, match="corrupt or truncated") as err:
        load_run(run)
    assert str(run / WEIGHTS) in str(err.value) and "\n" not in str(err.value)


def test_garbage_weights(saved):
    run, _ = saved
    (run / WEIGHTS).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!" + bytes(100))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_run(run)


def test_foreign_weights_and_shape_mismatch(saved):
    run, cfg = saved
    save_file({"backbone.embeddings.weight": torch.zeros(6, 16)}, run / WEIGHTS)
    with pytest.raises(CheckpointError, match="tensor names do not match.*unexpected: backbone.embeddings.weight"):
        load_run(run)
    wider = run_config(d_model=24)
    save_run(run, make(wider), wider)
    (run / CONFIG).write_text(cfg.to_json())  # config says d_model 16, weights are 24 wide
    with pytest.raises(CheckpointError, match=r"embedding.weight has shape \(6, 24\)"):
        load_run(run)


@pytest.mark.parametrize("text", ['{"model_type": "mamba", "d_model": 768}', "not json", '{"format": '
                                  '"mambaseq-run/1", "model": {"d_model": -1}}'])
def test_foreign_or_bad_config(saved, text):
    run, _ = saved
    (run / CONFIG).write_text(text)
    with pytest.raises(CheckpointError, match=str(run / CONFIG).replace("\\", "\\\\")):
        load_run(run)


def _torch_save_like(path):
    """The layout torch.save writes: a zip archive holding archive/data.pkl (built without pickling)."""
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", PICKLE_BYTES)


@pytest.mark.parametrize("kind", ["zip", "pickle"])
def test_pickle_is_refused_without_unpickling(tmp_path, saved, kind):
    run, _ = saved
    for target in (run / WEIGHTS, tmp_path / "model.pt"):
        if kind == "zip":
            _torch_save_like(target)
        else:
            target.write_bytes(PICKLE_BYTES)
        with pytest.raises(CheckpointError, match="refusing to unpickle"):
            load_run(run if target.parent == run else target)


def test_save_refuses_a_config_that_does_not_describe_the_model(tmp_path):
    model = make(run_config())
    with pytest.raises(CheckpointError, match="differs"):
        save_run(tmp_path / "run", model, run_config(d_model=32))
    assert not (tmp_path / "run" / WEIGHTS).exists()


def test_overwrite_replaces_atomically(saved):
    run, cfg = saved
    model = make(cfg)
    with torch.no_grad():
        model.embedding.weight.add_(1)
    save_run(run, model, cfg)
    assert sorted(p.name for p in run.iterdir()) == [CONFIG, WEIGHTS]
    assert torch.equal(load_run(run)[0].embedding.weight, model.embedding.weight)
    assert json.loads((run / CONFIG).read_text())["format"] == "mambaseq-run/1"
