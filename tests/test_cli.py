"""The command line: help, info, the pretraining slice, and one-line errors with a non-zero exit."""
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from mambaseq.cli import app

from conftest import BUNDLED_DATA, run_main

runner = CliRunner()


def test_help_lists_commands_with_examples():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("info", "pretrain", "demo"):
        assert command in result.output
    assert "Example: mambaseq pretrain" in runner.invoke(app, ["pretrain", "--help"]).output


def test_info_reports_backend():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0
    assert "scan backend: reference" in result.output and "torch" in result.output


def test_pretrain_command_writes_run(tmp_path, monkeypatch, capsys):
    genome = tmp_path / "piece.fa"
    genome.write_bytes((BUNDLED_DATA / "hg38_chr2_1000001-1300000.fa").read_bytes())
    code, out, err = run_main(monkeypatch, capsys, "pretrain", "--genome", genome, "--out", tmp_path / "run",
                              "--steps", 2, "--seq-len", 64, "--batch-size", 2, "--d-model", 16,
                              "--n-layer", 1, "--eval-windows", 2, "--warmup-steps", 1)
    assert code in (0, None), err
    assert "held-out bits/base" in out
    assert (tmp_path / "run" / "model.safetensors").is_file()


@pytest.mark.parametrize("content,fragment", [
    (None, "no such file"),
    (b"", "empty"),
    (b"hello world\n", "not a fasta"),
    (b">a\nACGT\n>a\nACGT\n", "duplicate"),
    (b">a\n>b\nACGT\n", "record 'a' has no sequence"),
])
def test_bad_genome_is_one_line_error(tmp_path, monkeypatch, capsys, content, fragment):
    genome = tmp_path / "bad.fa"
    if content is not None:
        genome.write_bytes(content)
    code, out, err = run_main(monkeypatch, capsys, "pretrain", "--genome", genome, "--out", tmp_path / "run",
                              "--steps", 1)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and fragment in err.lower()
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_bad_settings_and_characters(tmp_path, monkeypatch, capsys):
    genome = tmp_path / "g.fa"
    genome.write_bytes(b">x\n" + b"ACGT" * 300 + b"\n")
    code, _, err = run_main(monkeypatch, capsys, "pretrain", "--genome", genome, "--out", tmp_path / "r",
                            "--seq-len", 5000)
    assert code == 2 and "at least seq_len" in err
    code, _, err = run_main(monkeypatch, capsys, "pretrain", "--genome", genome, "--out", tmp_path / "r",
                            "--lr", "-1")
    assert code == 2 and "train.lr" in err
    genome.write_bytes(b">x\n" + b"ACGU" * 300 + b"\n")
    code, _, err = run_main(monkeypatch, capsys, "pretrain", "--genome", genome, "--out", tmp_path / "r",
                            "--seq-len", 400, "--valid-fraction", 0.5, "--steps", 3, "--d-model", 8,
                            "--n-layer", 1, "--batch-size", 8)
    assert code == 2 and "'U'" in err and "position" in err


def test_console_script_error_has_no_traceback(tmp_path):
    """The real entry point, as a user runs it: one line on stderr, exit status 2."""
    done = subprocess.run([sys.executable, "-m", "mambaseq", "pretrain", "--genome", str(tmp_path / "nope.fa"),
                           "--out", str(tmp_path / "r")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.startswith("error: ")
