"""The pretraining slice on real hg38: windows, loss masking, the run folder, and held-out bits/base."""
import json
import math

import numpy as np
import pytest
import torch

from mambaseq.checkpoint import load_run
from mambaseq.config import ModelConfig, TrainConfig
from mambaseq.io.fasta import open_fasta
from mambaseq.pipelines.pretrain import PretrainError, WindowSampler, next_base_loss, plan_split, pretrain
from mambaseq.tokenizers import N_ID, PAD_ID

from conftest import BUNDLED_DATA

PIECE = BUNDLED_DATA / "hg38_chr2_1000001-1300000.fa"
TINY = ModelConfig(d_model=16, n_layer=1, d_state=4)


@pytest.fixture
def piece(tmp_path):
    """The bundled FASTA copied aside, so building its index writes nothing into the repository."""
    path = tmp_path / PIECE.name
    path.write_bytes(PIECE.read_bytes())
    return path


def test_loss_ignores_n_and_pad_targets():
    logits = torch.randn(2, 5, 8)
    tokens = torch.tensor([[1, 2, N_ID, 3, 4], [1, N_ID, N_ID, PAD_ID, PAD_ID]])
    loss, count = next_base_loss(logits, tokens)
    assert count == 3 + 0
    expected = sum(torch.nn.functional.cross_entropy(logits[0, t], tokens[0, t + 1]) for t in (0, 2, 3))
    torch.testing.assert_close(loss, expected)
    all_n = torch.full((3, 6), N_ID)
    loss, count = next_base_loss(torch.randn(3, 6, 8), all_n)
    assert count == 0 and loss == 0 and not torch.isnan(loss)


def test_sampler_split_and_windows(piece):
    with open_fasta(piece) as genome:
        split = plan_split(genome, seq_len=500, valid_fraction=0.1)
        sampler = WindowSampler(genome, split, seq_len=500, max_n_fraction=0.5)
        (contig, start, cut), = split["train"]
        (_, vstart, vend), = split["valid"]
        assert (start, cut, vstart, vend) == (0, 270_000, 270_000, 300_000)
        rng = np.random.default_rng(0)
        batch = sampler.train_batch(rng, 4, rc_augment=True)
        assert batch.shape == (4, 500) and batch.dtype == torch.int64
        assert set(batch.unique().tolist()) <= {1, 2, 3, 4, 5}
        again = sampler.train_batch(np.random.default_rng(0), 4, rc_augment=True)
        assert torch.equal(batch, again)  # deterministic given the seed
        valid = sampler.valid_windows(10)
        assert valid.shape == (10, 500)
        assert torch.equal(valid, sampler.valid_windows(10))
        with pytest.raises(PretrainError, match="at least seq_len"):
            plan_split(genome, seq_len=100_000, valid_fraction=0.1)


def test_windows_over_the_n_limit_are_redrawn(shared_data, tmp_path):
    """The first 10 kb of the real chr2 piece are N: windows there must be skipped."""
    with open_fasta(shared_data / "genome" / "hg38_chr2_1-2333275.fa") as genome:
        split = {"train": [["chr2", 0, 14_000]], "valid": [["chr2", 20_000, 30_000]]}  # train: 10 of 14 kb N
        sampler = WindowSampler(genome, split, seq_len=2000, max_n_fraction=0.1)
        batch = sampler.train_batch(np.random.default_rng(1), 8, rc_augment=False)
        assert ((batch == N_ID).float().mean(1) <= 0.1).all()


def test_pretrain_writes_a_loadable_run(piece, tmp_path):
    train = TrainConfig(seq_len=128, batch_size=4, steps=6, warmup_steps=2, eval_every=3, eval_windows=4, lr=3e-3)
    summary = pretrain(piece, tmp_path / "run", TINY, train, device="cpu", show_progress=False)
    run = tmp_path / "run"
    for name in ("config.json", "model.safetensors", "train.jsonl", "loss.png", "summary.json"):
        assert (run / name).is_file(), name
    lines = [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 7))
    assert [r["step"] for r in lines if "valid_bits_per_base" in r] == [3, 6]
    assert summary["steps"] == 6 and summary["valid_bits_per_base"] == lines[-1]["valid_bits_per_base"]
    # untrained-ish model on 4 letters: close to log2(4) = 2 bits, certainly finite and below log2(8)
    assert 1.0 < summary["valid_bits_per_base"] < 3.0
    model, cfg = load_run(run)
    assert cfg.task == "lm" and cfg.extra["split"]["valid"][0][1] == 270_000
    assert cfg.model == TINY and cfg.train == train


def test_pretraining_learns_real_dna(piece, tmp_path):
    """60 steps must beat the held-out base composition: its order-0 entropy is 1.9886 bits/base on the last
    30 kb of the bundled piece (this seed measured 1.939), so passing needs real context modelling."""
    train = TrainConfig(seq_len=256, batch_size=8, steps=60, warmup_steps=5, eval_every=60, eval_windows=8,
                        lr=5e-3, seed=1)
    summary = pretrain(piece, tmp_path / "run", ModelConfig(d_model=32, n_layer=2, d_state=8), train,
                       device="cpu", show_progress=False)
    assert summary["valid_bits_per_base"] < 1.97
    assert math.isfinite(summary["train_bits_per_base"])
