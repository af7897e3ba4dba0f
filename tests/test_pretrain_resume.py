"""Pretraining survives SIGKILL (resume reaches the same losses), splits from a BED, and DDP over 2 CPU ranks."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mambaseq.config import TrainConfig
from mambaseq.io.fasta import open_fasta
from mambaseq.pipelines.pretrain import PretrainError, TrainBatches, WindowSampler, plan_split

from conftest import BUNDLED_DATA
from killing import kill_when, mambaseq_command

CONTIG = "chr2_1000001_1300000"
ARGS = ["--seq-len", "128", "--batch-size", "2", "--d-model", "16", "--n-layer", "1", "--steps", "40",
        "--eval-every", "20", "--eval-windows", "2", "--checkpoint-every", "2", "--warmup-steps", "2"]


@pytest.fixture
def genome(tmp_path):
    path = tmp_path / "piece.fa"
    path.write_bytes((BUNDLED_DATA / "hg38_chr2_1000001-1300000.fa").read_bytes())
    with open_fasta(path):  # build the index once, before processes race to build it
        pass
    return path


def cli(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "mambaseq", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def losses(run):
    return [json.loads(line)["train_bits_per_base"] for line in (run / "train.jsonl").read_text().splitlines()]


def test_sigkill_then_resume_matches_uninterrupted_run(genome, tmp_path):
    whole = cli("pretrain", "--genome", genome, "--out", tmp_path / "whole", *ARGS)
    assert whole.wait(timeout=600) == 0, whole.stderr.read()

    run = tmp_path / "killed"
    kill_when(mambaseq_command("pretrain", "--genome", genome, "--out", run, *ARGS),
              lambda: (run / "checkpoints" / "step-00000006").exists())
    assert not (run / "model.safetensors").exists()  # it really died mid-run
    resumed = cli("pretrain", "--resume", run)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()

    expected, got = losses(tmp_path / "whole"), losses(run)
    assert len(got) == len(expected) == 40
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_from_step"] >= 6
    assert summary["valid_bits_per_base"] == pytest.approx(
        json.loads((tmp_path / "whole" / "summary.json").read_text())["valid_bits_per_base"], rel=1e-6)
    assert len(list((run / "checkpoints").glob("step-*"))) == 2  # keep_checkpoints
    assert not list((run / "checkpoints").glob(".tmp-*"))


def test_resume_without_checkpoint_is_an_error(tmp_path):
    done = cli("pretrain", "--resume", tmp_path / "empty")
    assert done.wait(timeout=120) == 2 and "nothing to resume" in done.stderr.read()


def test_resume_refuses_new_settings(tmp_path):
    done = cli("pretrain", "--resume", tmp_path / "run", "--d-model", 64, "--seq-len", 1024)
    assert done.wait(timeout=120) == 2
    assert "with its saved settings; drop --d-model, --seq-len" in done.stderr.read()


def test_split_from_bed(genome, tmp_path):
    bed = tmp_path / "split.bed"
    bed.write_text(f"{CONTIG}\t0\t200000\ttrain\n{CONTIG}\t200000\t250000\tvalid\n{CONTIG}\t250000\t300000\ttest\n")
    with open_fasta(genome) as g:
        split = plan_split(g, 1000, 0.1, intervals=bed)
        assert split["train"] == [[CONTIG, 0, 200000]] and split["valid"] == [[CONTIG, 200000, 250000]]
        assert split["test"] == [[CONTIG, 250000, 300000]] and "intervals" in split["how"]
        for line, message in ((f"{CONTIG}\t0\tten\ttrain\n", "split.bed:1: expected"),
                              (f"{CONTIG}\t0\t10\tholdout\n", "unknown split"),
                              (f"{CONTIG}\t0\t400000\ttrain\n", "past the contig's end"),
                              (f"{CONTIG}\t10\t10\ttrain\n", "is empty"),
                              (f"{CONTIG}\t0\t10\ttest\n", "no train or valid interval"),
                              ("chr9\t0\t10\ttrain\n", "'chr9' is not in the genome")):
            bed.write_text(line)
            with pytest.raises(PretrainError, match=message):
                plan_split(g, 1000, 0.1, intervals=bed)
        with pytest.raises(PretrainError, match="no contig named"):
            plan_split(g, 1000, 0.1, valid_contigs=["chr9"])


def test_ranks_and_steps_draw_different_windows_in_a_fixed_order(genome):
    cfg = TrainConfig(seq_len=64, batch_size=2, steps=4, grad_accum=2)
    with open_fasta(genome) as g:
        sampler = WindowSampler(g, plan_split(g, 64, 0.1), 64, 0.5)
        rank0 = list(TrainBatches(sampler, cfg, rank=0, first_step=0, last_step=4))
        rank1 = list(TrainBatches(sampler, cfg, rank=1, first_step=0, last_step=4))
        later = list(TrainBatches(sampler, cfg, rank=0, first_step=2, last_step=4))
        workers = list(torch.utils.data.DataLoader(TrainBatches(sampler, cfg, 0, 0, 4), batch_size=None,
                                                   num_workers=2))
    assert len(rank0) == 8 and not any(torch.equal(a, b) for a, b in zip(rank0, rank1))
    assert all(torch.equal(a, b) for a, b in zip(rank0[4:], later))  # resuming at step 2 replays steps 2-3
    assert all(torch.equal(a, b) for a, b in zip(rank0, workers))  # worker processes keep the order


def test_ddp_two_cpu_ranks(genome, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                           "--master-port", "29531", "-m", "mambaseq", "pretrain", "--genome", str(genome),
                           "--out", str(tmp_path / "ddp"), "--device", "cpu", *ARGS[:-6], "--steps", "4",
                           "--eval-every", "2"], capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert len(losses(tmp_path / "ddp")) == 4  # one writer: rank 0


def test_real_hg38_bed_against_a_partial_genome(shared_data):
    """The Borzoi hg38 split bed names every chromosome; the shipped chr2 piece has one: a clear error."""
    with open_fasta(shared_data / "genome" / "hg38_chr2_1-2333275.fa") as g:
        with pytest.raises(PretrainError, match=r"borzoi_hg38_intervals_train_valid_test.bed:1: contig 'chr4'"):
            plan_split(g, 1000, 0.1, intervals=shared_data / "genome" / "borzoi_hg38_intervals_train_valid_test.bed")
