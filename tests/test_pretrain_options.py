"""Pretraining options and bad input: sequence-length warm-up, fold-labelled split beds (Borzoi's, real),
an output folder that cannot be written, resuming a run whose model differs, and leaving the DDP group."""
import gzip
import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from mambaseq.config import ConfigError, ModelConfig, TrainConfig
from mambaseq.io.fasta import open_fasta
from mambaseq.pipelines.pretrain import (DEFAULT_SPLIT_NAMES, PretrainError, TrainBatches, WindowSampler,
                                         parse_split_names, plan_split, pretrain, read_split_bed, split_of,
                                         window_length)

from conftest import BUNDLED_DATA, run_main

TINY = ModelConfig(d_model=16, n_layer=1, d_state=4)
FOLDS_BED = "borzoi_intervals_within_chr2_region.bed"


@pytest.fixture
def piece(tmp_path):
    path = tmp_path / "piece.fa"
    path.write_bytes((BUNDLED_DATA / "hg38_chr2_1000001-1300000.fa").read_bytes())
    with open_fasta(path):  # index built once, before any other process could race to build it
        pass
    return path


def losses(run):
    return [json.loads(line) for line in (run / "train.jsonl").read_text().splitlines()]


# ---- sequence-length warm-up ------------------------------------------------------------------------------
def test_window_length_doubles_in_equal_stages():
    cfg = TrainConfig(seq_len=1024, seq_len_start=64, seq_len_warmup_steps=400)  # 4 stages of 100 steps
    got = [window_length(cfg, s) for s in (0, 99, 100, 199, 200, 299, 300, 399, 400, 10_000)]
    assert got == [64, 64, 128, 128, 256, 256, 512, 512, 1024, 1024]
    odd = TrainConfig(seq_len=1000, seq_len_start=100, seq_len_warmup_steps=8)  # 100 200 400 800, then 1000
    assert [window_length(odd, s) for s in range(10)] == [100, 100, 200, 200, 400, 400, 800, 800, 1000, 1000]
    assert all(window_length(TrainConfig(seq_len=32), s) == 32 for s in range(5))  # off by default


@pytest.mark.parametrize("start", [1, 1024, 2048])
def test_warmup_start_must_lie_below_seq_len(start):
    with pytest.raises(ConfigError, match=r"train.seq_len_start must be an integer in \[2, seq_len 1024\)"):
        TrainConfig(seq_len=1024, seq_len_start=start, seq_len_warmup_steps=10)
    TrainConfig(seq_len=1024, seq_len_start=start)  # without a warm-up the start length is unused


def test_warmup_batches_are_the_same_from_any_resume_step(piece):
    cfg = TrainConfig(seq_len=128, batch_size=2, steps=6, grad_accum=2, seq_len_start=32, seq_len_warmup_steps=4)
    with open_fasta(piece) as g:
        sampler = WindowSampler(g, plan_split(g, 128, 0.1), 128, 0.5)
        whole = list(TrainBatches(sampler, cfg, rank=0, first_step=0, last_step=6))
        resumed = list(TrainBatches(sampler, cfg, rank=0, first_step=1, last_step=6))  # inside stage 0
        workers = list(torch.utils.data.DataLoader(TrainBatches(sampler, cfg, 0, 0, 6), batch_size=None,
                                                   num_workers=2))
    assert [b.shape for b in whole] == [(2, n) for n in (32, 32, 32, 32, 64, 64, 64, 64, 128, 128, 128, 128)]
    assert all(torch.equal(a, b) for a, b in zip(whole[2:], resumed, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(whole, workers, strict=True))


def test_resume_inside_the_warmup_matches_the_uninterrupted_run(piece, tmp_path):
    """A run 'interrupted' after its step-3 checkpoint (a copy of the run folder cut back to it) resumes in the
    warm-up's second stage and repeats the uninterrupted run's losses and window lengths."""
    train = TrainConfig(seq_len=128, batch_size=2, steps=8, warmup_steps=2, eval_every=4, eval_windows=2,
                        checkpoint_every=1, keep_checkpoints=10, seq_len_start=32, seq_len_warmup_steps=6)
    whole = tmp_path / "whole"
    pretrain(piece, whole, TINY, train, device="cpu", show_progress=False)
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    for later in sorted((cut / "checkpoints").glob("step-*"))[3:]:
        shutil.rmtree(later)
    for name in ("model.safetensors", "train_state.safetensors", "summary.json"):
        (cut / name).unlink()
    summary = pretrain(None, cut, device="cpu", resume=True, show_progress=False)
    assert summary["resumed_from_step"] == 3
    expected, got = losses(whole), losses(cut)
    assert [r["seq_len"] for r in got] == [32, 32, 32, 64, 64, 64, 128, 128]
    assert [r["seq_len"] for r in got] == [r["seq_len"] for r in expected]
    np.testing.assert_allclose([r["train_bits_per_base"] for r in got],
                               [r["train_bits_per_base"] for r in expected], rtol=1e-6)
    assert summary["valid_bits_per_base"] == pytest.approx(
        json.loads((whole / "summary.json").read_text())["valid_bits_per_base"], rel=1e-6)
    assert summary["tokens_seen"] == 2 * (3 * 32 + 3 * 64 + 2 * 128)  # the warm-up's short windows counted


def test_warmup_options_on_the_command_line(piece, tmp_path, monkeypatch, capsys):
    code, out, err = run_main(monkeypatch, capsys, "pretrain", "--genome", piece, "--out", tmp_path / "run",
                              "--seq-len", 64, "--seq-len-start", 16, "--seq-len-warmup-steps", 2, "--steps", 3,
                              "--batch-size", 2, "--d-model", 8, "--n-layer", 1, "--eval-windows", 2,
                              "--warmup-steps", 1)
    assert code in (0, None), err
    assert [r["seq_len"] for r in losses(tmp_path / "run")] == [16, 32, 64]
    code, _, err = run_main(monkeypatch, capsys, "pretrain", "--genome", piece, "--out", tmp_path / "bad",
                            "--seq-len", 64, "--seq-len-start", 64, "--seq-len-warmup-steps", 2)
    assert code == 2 and err.count("\n") == 1 and "train.seq_len_start" in err


# ---- split beds with fold labels --------------------------------------------------------------------------
def test_split_names_option():
    assert parse_split_names("valid=fold4,test=fold3") == {"fold4": "valid", "fold3": "test"}
    assert parse_split_names(" Validation = Holdout ") == {"holdout": "valid"}
    for text, message in (("fold4", "expected SPLIT=LABEL"), ("dev=fold4", "expected SPLIT=LABEL"),
                          ("valid=", "expected SPLIT=LABEL"), ("valid=a,test=A", "'A' is given twice"),
                          (",", "no SPLIT=LABEL pair")):
        with pytest.raises(PretrainError, match=message):
            parse_split_names(text)
    mapping = parse_split_names("valid=fold0")
    assert [split_of(x, mapping) for x in ("fold0", "fold4", "FOLD3", "train", "val", "x")] == \
        ["valid", "train", "train", "train", "valid", None]


def test_default_fold_labels_reproduce_borzois_split(shared_data):
    """Borzoi's own bed (fold0-fold7) read with the default labels gives, row by row, the train/valid/test
    bed derived from it (SOURCE.md: fold3 test, fold4 valid, the rest train)."""
    genome = shared_data / "genome"
    with gzip.open(genome / "borzoi_sequences_human_hg38.bed.gz", "rt") as f:
        folds = [line.split()[3] for line in f]
    named = [line.split()[3] for line in (genome / "borzoi_hg38_intervals_train_valid_test.bed").open()]
    assert len(folds) == len(named) == 55_497
    assert [split_of(label, DEFAULT_SPLIT_NAMES) for label in folds] == named


def test_real_fold_bed_on_the_real_chr2_region(shared_data, tmp_path, monkeypatch, capsys):
    """The 44 Borzoi intervals inside the shipped chr2 region are all fold5: they train under the default labels,
    a clear error says no interval is held out, and `--split-names` names the held-out label of an added tail."""
    fasta = tmp_path / "chr2.fa"
    shutil.copy(shared_data / "genome" / "hg38_chr2_1-2333275.fa", fasta)
    bed = tmp_path / FOLDS_BED
    shutil.copy(shared_data / "genome" / FOLDS_BED, bed)
    rows = [line.split("\t") for line in bed.read_text().splitlines()]
    assert len(rows) == 44 and {r[3] for r in rows} == {"fold5"}
    with open_fasta(fasta) as g:
        with pytest.raises(PretrainError, match=r"no valid interval .*fold5 x44 -> train.*valid=fold4, test=fold3"):
            read_split_bed(bed, g.lengths, {"chr2"})
    last_end = max(int(r[2]) for r in rows)
    assert last_end == 2_321_047
    both = tmp_path / "folds_and_tail.bed"
    both.write_text(bed.read_text() + f"chr2\t{last_end}\t2333275\theldout\n")  # the 12 kb after the last one
    code, out, err = run_main(monkeypatch, capsys, "pretrain", "--genome", fasta, "--out", tmp_path / "run",
                              "--intervals", both, "--split-names", "valid=heldout", "--seq-len", 256,
                              "--steps", 2, "--batch-size", 2, "--d-model", 8, "--n-layer", 1,
                              "--eval-windows", 4, "--warmup-steps", 1)
    assert code in (0, None), err
    split = json.loads((tmp_path / "run" / "config.json").read_text())["extra"]["split"]
    assert split["train"] == [[c, int(s), int(e)] for c, s, e, _ in rows]  # every fold5 interval trains
    assert split["valid"] == [["chr2", last_end, 2_333_275]] and split["test"] == []
    assert "valid=heldout" in split["how"]
    code, _, err = run_main(monkeypatch, capsys, "pretrain", "--genome", fasta, "--out", tmp_path / "r2",
                            "--split-names", "valid=heldout")
    assert code == 2 and "--split-names labels the intervals of an --intervals bed" in err


# ---- bad input --------------------------------------------------------------------------------------------
def test_output_folder_that_cannot_be_written(piece, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    for out, reason in ((blocker / "run", "Not a directory"), (blocker, "it is a file, not a folder")):
        code, _, err = run_main(monkeypatch, capsys, "pretrain", "--genome", piece, "--out", out, "--steps", 1)
        assert code == 2, err
        assert err == f"error: {out}: cannot write the run folder ({reason})\n"
    (tmp_path / "empty.fa").write_bytes(b"")  # fails after the write check: it must leave no folder behind
    code, _, err = run_main(monkeypatch, capsys, "pretrain", "--genome", tmp_path / "empty.fa", "--out",
                            tmp_path / "new" / "run", "--steps", 1)
    assert code == 2 and "is empty" in err and not (tmp_path / "new").exists()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into a read-only folder, so chmod cannot block it")
def test_read_only_output_folder(piece, tmp_path, monkeypatch, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, _, err = run_main(monkeypatch, capsys, "pretrain", "--genome", piece, "--out", locked / "run")
        assert code == 2 and err == f"error: {locked / 'run'}: cannot write the run folder (Permission denied)\n"
    finally:
        locked.chmod(0o700)


def test_resume_from_a_checkpoint_whose_config_differs_from_its_weights(piece, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    train = TrainConfig(seq_len=64, batch_size=2, steps=2, warmup_steps=1, eval_every=2, eval_windows=2)
    pretrain(piece, run, TINY, train, device="cpu", show_progress=False)
    config = run / "checkpoints" / "step-00000002" / "config.json"
    edited = json.loads(config.read_text())
    edited["model"]["d_model"] = 32
    config.write_text(json.dumps(edited))
    code, _, err = run_main(monkeypatch, capsys, "pretrain", "--resume", run)
    assert code == 2 and err.count("\n") == 1
    assert "step-00000002/model.safetensors: embedding.weight has shape (8, 16), config.json implies (8, 32)" in err


def test_a_new_run_with_another_model_replaces_the_old_runs_checkpoints(piece, tmp_path):
    """Otherwise the old run's later checkpoints outrank the new run's, and --resume would load the old model."""
    run = tmp_path / "run"
    train = TrainConfig(seq_len=64, batch_size=2, steps=4, warmup_steps=1, eval_every=2, eval_windows=2,
                        checkpoint_every=1, keep_checkpoints=5)
    pretrain(piece, run, TINY, train, device="cpu", show_progress=False)
    other = ModelConfig(d_model=8, n_layer=2, d_state=4)
    pretrain(piece, run, other, TrainConfig(**{**train.to_dict(), "steps": 2}), device="cpu", show_progress=False)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000001", "step-00000002"]
    summary = pretrain(None, run, device="cpu", resume=True, show_progress=False)
    assert summary["resumed_from_step"] == 2 and summary["steps"] == 2
    assert json.loads((run / "config.json").read_text())["model"]["d_model"] == 8


# ---- distributed ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["run", "error"])
def test_ddp_ranks_leave_the_process_group_after_a_run_and_after_an_error(piece, tmp_path, case):
    """One pretrain call per process, as torchrun runs the CLI: gloo cannot be re-initialised reliably in a
    process after destroy_process_group (its store still holds the old group's addresses)."""
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(f"""
        import json, os
        import torch.distributed as dist
        from mambaseq.config import ModelConfig, TrainConfig
        from mambaseq.pipelines.pretrain import PretrainError, pretrain

        train = TrainConfig(seq_len=64, batch_size=2, steps=2, warmup_steps=1, eval_every=2, eval_windows=2)
        try:
            if {case!r} == "run":
                world = pretrain({str(piece)!r}, {str(tmp_path / "ddp")!r}, ModelConfig(d_model=8, n_layer=1),
                                 train, device="cpu", show_progress=False)["world_size"]
            else:
                pretrain(None, {str(tmp_path / "nothing")!r}, device="cpu", resume=True, show_progress=False)
        except PretrainError as err:
            world = str(err)
        report = {{"world": world, "joined_after": dist.is_initialized()}}  # a file per rank: printed lines interleave
        with open(os.path.join({str(tmp_path)!r}, "rank" + os.environ["RANK"] + ".json"), "w") as f:
            json.dump(report, f)
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           str(script)], capture_output=True, text=True, timeout=600, env=env)  # a free port
    assert done.returncode == 0, done.stderr[-2000:]
    reports = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    world = 2 if case == "run" else f"{tmp_path / 'nothing'}: nothing to resume (no checkpoints/step-* folder)"
    assert reports == [{"world": world, "joined_after": False}] * 2
    assert "warn" not in done.stderr.lower(), done.stderr[-2000:]
