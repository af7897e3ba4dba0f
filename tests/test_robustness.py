"""Robustness: kill -9 in the middle of `predict` then a rerun; bad checkpoints refused by `predict`; property
tests (hypothesis) for FASTA reading, streamed and indexed, and for encoding a record piece by piece."""
import gzip
import json
import re
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from Bio import bgzf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from mambaseq.checkpoint import CONFIG, WEIGHTS, save_run
from mambaseq.config import ModelConfig, RunConfig, TrainConfig
from mambaseq.io.fasta import FastaError, open_fasta, stream_fasta
from mambaseq.model import MambaModel
from mambaseq.pipelines.predict import PredictError, Record, _encoded, output_name
from mambaseq.tokenizers import encode

from conftest import BUNDLED_DATA, run_main
from killing import kill_when, mambaseq_command

PIECE = BUNDLED_DATA / "hg38_chr2_1000001-1300000.fa"
TINY = ModelConfig(d_model=16, n_layer=1, d_state=4)
PICKLE_BYTES = b"\x80\x02}q\x00X\x01\x00\x00\x00aq\x01K\x01s."  # protocol 2 pickle of {"a": 1}, never unpickled
DNA = "ACGTNRYKMSWBDHV"
DNA += DNA.lower()


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    torch.manual_seed(0)
    return save_run(tmp_path_factory.mktemp("lm") / "run", MambaModel(TINY),
                    RunConfig(task="lm", model=TINY, extra={"tokenizer": "dna"}))


# ---- kill -9, then the same command again ----------------------------------------------------------------------
def test_kill_9_during_predict_then_rerun_completes_every_output_once(lm_run, tmp_path, monkeypatch, capsys):
    chr2 = "".join(PIECE.read_text().splitlines()[1:])
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(12):  # small files of real sequence: many manifest updates, each file quick
        start = 2_000 * i
        records = [chr2[start + 150 * k:start + 150 * k + 40 + 30 * k] for k in range(3)]
        (inputs / f"part{i:02d}.fa").write_text("".join(f">p{i}_{k}\n{seq}\n" for k, seq in enumerate(records)))
    out = tmp_path / "out"
    args = ["predict", "--model", lm_run, inputs, "--out", out, "--max-tokens", 64, "--device", "cpu"]

    def done_entries():
        try:
            files = json.loads((out / "manifest.json").read_text())["files"]
        except (FileNotFoundError, json.JSONDecodeError):  # not written yet (it is replaced whole, never partial)
            return []
        return [e for e in files.values() if e["status"] == "done"]

    kill_when(mambaseq_command(*args), lambda: len(done_entries()) >= 2)
    finished = done_entries()
    assert 2 <= len(finished) < 12  # it died in the middle
    for entry in finished:  # what the manifest calls done is complete
        assert pl.read_parquet(out / entry["output"]).height == 3

    code, stdout, err = run_main(monkeypatch, capsys, *args)  # the same command again
    assert code in (0, None), err
    assert f"{12 - len(finished)} done, {len(finished)} skipped (already done), 0 failed of 12 files" in stdout
    entries = json.loads((out / "manifest.json").read_text())["files"]
    assert len(entries) == 12 and all(e["status"] == "done" for e in entries.values())
    outputs = sorted(p.name for p in out.iterdir())
    assert outputs == sorted([output_name(p) for p in inputs.iterdir()] + ["manifest.json"])  # no temp file left
    reference = tmp_path / "reference"
    code, _, err = run_main(monkeypatch, capsys, "predict", "--model", lm_run, inputs, "--out", reference,
                            "--device", "cpu")
    assert code in (0, None), err
    for path in inputs.iterdir():
        got, expected = pl.read_parquet(out / output_name(path)), pl.read_parquet(reference / output_name(path))
        assert got.select("name", "length", "scored_bases").equals(expected.select("name", "length", "scored_bases"))
        np.testing.assert_allclose(got["log_likelihood"].to_numpy(), expected["log_likelihood"].to_numpy(), rtol=1e-5)


# ---- checkpoints predict must refuse -------------------------------------------------------------------------------
def _truncate(run: Path) -> None:
    data = (run / WEIGHTS).read_bytes()
    (run / WEIGHTS).write_bytes(data[:len(data) // 2])


def _corrupt(run: Path) -> None:
    data = bytearray((run / WEIGHTS).read_bytes())
    data[8:40] = b"\xff" * 32  # the JSON header is garbage now
    (run / WEIGHTS).write_bytes(bytes(data))


def _foreign_weights(run: Path) -> None:
    save_file({"backbone.embeddings.weight": torch.zeros(8, 16)}, run / WEIGHTS)  # another model's tensors


def _foreign_config(run: Path) -> None:
    (run / CONFIG).write_text('{"model_type": "mamba", "d_model": 768}')  # a Hugging Face config


def _torch_save_zip(run: Path) -> None:
    with zipfile.ZipFile(run / WEIGHTS, "w") as archive:  # torch.save's layout, built without pickling
        archive.writestr("archive/data.pkl", PICKLE_BYTES)


def _pickle(run: Path) -> None:
    (run / WEIGHTS).write_bytes(PICKLE_BYTES)


@pytest.mark.parametrize("damage, message", [
    (_truncate, "model.safetensors: not a readable safetensors file (corrupt or truncated"),
    (_corrupt, "model.safetensors: not a readable safetensors file (corrupt or truncated"),
    (_foreign_weights, "model.safetensors: tensor names do not match config.json"),
    (_foreign_config, 'config.json: not a mambaseq run config (missing "format": "mambaseq-run/1")'),
    (_torch_save_zip, "model.safetensors: is a zip archive (torch.save format); refusing to unpickle"),
    (_pickle, "model.safetensors: is a pickle stream; refusing to unpickle"),
], ids=["truncated", "corrupt", "foreign-weights", "foreign-config", "torch-save-zip", "pickle"])
def test_predict_refuses_a_bad_checkpoint(lm_run, tmp_path, monkeypatch, capsys, damage, message):
    run = tmp_path / "run"
    run.mkdir()
    for name in (CONFIG, WEIGHTS):
        (run / name).write_bytes((lm_run / name).read_bytes())
    damage(run)
    fasta = tmp_path / "x.fa"
    fasta.write_text(">a\nACGT\n")
    code, _, err = run_main(monkeypatch, capsys, "predict", "--model", run, fasta, "--out", tmp_path / "out")
    assert code == 2 and err.startswith(f"error: {run}") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_predict_refuses_a_pickle_file_as_model(tmp_path, monkeypatch, capsys):
    (tmp_path / "model.pt").write_bytes(PICKLE_BYTES)
    (tmp_path / "x.fa").write_text(">a\nACGT\n")
    code, _, err = run_main(monkeypatch, capsys, "predict", "--model", tmp_path / "model.pt", tmp_path / "x.fa",
                            "--out", tmp_path / "out")
    assert code == 2 and "model.pt: is a pickle stream; refusing to unpickle" in err and err.count("\n") == 1


# ---- property tests: FASTA reading ----------------------------------------------------------------------------------
names = st.text(alphabet="ABCXYZabcxyz0123456789_.|-", min_size=1, max_size=10)
sequences = st.one_of(st.text(alphabet=DNA, max_size=200),
                      st.builds(lambda base, n: base * n, st.sampled_from(DNA), st.integers(1000, 5000)))


def _line_end(draw):
    return draw(st.sampled_from(["\n", "\r\n"]))


@st.composite
def any_layout(draw):
    """(records, FASTA bytes): any line width per record, CRLF or LF per line, blank lines anywhere, empty
    records, a whole record on one line, descriptions after the name, with or without a final line end."""
    records = draw(st.lists(st.tuples(names, sequences), min_size=1, max_size=5))
    text = "".join(_line_end(draw) for _ in range(draw(st.integers(0, 2))))  # blank lines before the first
    for name, seq in records:
        description = draw(st.sampled_from(["", " a description", "\tx=1 y=2"]))
        text += f">{name}{description}{_line_end(draw)}"
        width = draw(st.one_of(st.none(), st.integers(1, 90)))
        lines = [seq] if width is None else [seq[i:i + width] for i in range(0, len(seq), width)]
        for line in lines:
            text += line + _line_end(draw) + ("" if draw(st.integers(0, 9)) else _line_end(draw))  # blank lines
    if draw(st.booleans()):
        text = text.rstrip("\r\n")
    return records, text.encode()


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_layout(), st.sampled_from([1, 2, 7, 64, 1 << 20]), st.sampled_from(["plain", "gzip", "bgzip"]))
def test_streamed_records_are_exactly_the_bases(layout, block_size, compression):
    records, data = layout
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("x.fa" if compression == "plain" else "x.fa.gz")
        if compression == "gzip":
            data = gzip.compress(data)
        elif compression == "bgzip":
            with bgzf.BgzfWriter(str(path), "wb") as writer:
                writer.write(data)
        if compression != "bgzip":
            path.write_bytes(data)
        streamed = [(r.name, r.read().decode(), r.number) for r in stream_fasta(path, block_size=block_size)]
    assert streamed == [(name, seq, i + 1) for i, (name, seq) in enumerate(records)]


@st.composite
def indexable_layout(draw):
    """(records, FASTA bytes) in the layout samtools faidx accepts: unique names, no empty record, one width
    per record, one kind of line end per file, blank lines only between records (LF files only: see
    test_crlf_blank_line_between_records below)."""
    records = draw(st.lists(st.tuples(names, sequences.filter(len)), min_size=1, max_size=4,
                            unique_by=lambda r: r[0]))
    end = _line_end(draw)
    text = ""
    for name, seq in records:
        width = draw(st.one_of(st.none(), st.integers(1, 90)))
        width = max(width or len(seq), len(seq) // 200)  # at most ~200 lines: pyfaidx indexes line by line
        text += f">{name} description{end}" + "".join(seq[i:i + width] + end for i in range(0, len(seq), width))
        text += end if end == "\n" and draw(st.booleans()) else ""
    return records, text.encode()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(indexable_layout(), st.data())
def test_indexed_and_streamed_readers_agree(layout, data):
    records, text = layout
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.fa"
        path.write_bytes(text)
        with open_fasta(path) as genome:
            assert genome.names == [name for name, _ in records]
            assert genome.lengths == {name: len(seq) for name, seq in records}
            for name, seq in records:
                start = data.draw(st.integers(0, len(seq)))
                end = data.draw(st.integers(start, len(seq)))
                assert genome.fetch(name, start, end).decode() == seq[start:end]  # raw: case and IUPAC kept
        assert [(r.name, r.read().decode()) for r in stream_fasta(path)] == records


@pytest.mark.xfail(strict=True, raises=FastaError, reason="pyfaidx 0.9.2.2 counts a blank CRLF line as a sequence "
                   "line: after a record whose last line is short, it reports 'lines of unequal length'")
def test_crlf_blank_line_between_records(tmp_path):
    """Found by the property test above; LF files with the same layout are read (test_fasta.py)."""
    path = tmp_path / "x.fa"
    path.write_bytes(b">x\r\nACG\r\nTAC\r\nG\r\n\r\n>y\r\nA\r\n")
    assert [(r.name, r.read()) for r in stream_fasta(path)] == [("x", b"ACGTACG"), ("y", b"A")]  # streamed: fine
    with open_fasta(path) as genome:
        assert genome.lengths == {"x": 7, "y": 1}


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=DNA, max_size=300), st.lists(st.integers(0, 300), max_size=6))
def test_encoding_a_record_piece_by_piece_equals_encoding_it_whole(seq, cuts):
    bounds = [0] + sorted(min(c, len(seq)) for c in cuts) + [len(seq)]
    pieces = [seq[a:b].encode() for a, b in zip(bounds, bounds[1:])]
    record = Record(0, "r", "record 'r'", iter(pieces))
    ids = np.concatenate([np.zeros(0, np.uint8)] + list(_encoded(record)))
    np.testing.assert_array_equal(ids, encode(seq))


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=DNA, max_size=100), st.characters(exclude_characters=DNA, max_codepoint=0x2FF),
       st.text(st.characters(max_codepoint=0x2FF), max_size=30), st.lists(st.integers(0, 140), max_size=4),
       st.booleans())
def test_a_bad_character_is_named_with_its_position_in_the_record(prefix, bad, rest, cuts, as_bytes):
    seq = prefix + bad + rest
    bounds = [0] + sorted(min(c, len(seq)) for c in cuts) + [len(seq)]
    pieces = [seq[a:b] for a, b in zip(bounds, bounds[1:])]
    if as_bytes:  # FASTA pieces are bytes: a non-ASCII character is reported as its first UTF-8 byte
        pieces = [p.encode() for p in pieces]
        shown = repr(bad.encode()[:1])[1:]
        position = len(prefix)
    else:  # table cells are text
        shown, position = repr(bad), len(prefix)
    record = Record(0, "r", "record 'r'", iter(pieces))
    with pytest.raises(PredictError, match=re.escape(f"record 'r': invalid character {shown} at position {position};")):
        for _ in _encoded(record):
            pass


# ---- bad input of scan and embed that no other test covered (tests/README.md lists them all) -------------------
def test_scan_and_embed_refuse_bad_settings_and_runs(lm_run, tmp_path, monkeypatch, capsys):
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY.to_dict(), "n_classes": 2})
    prom = save_run(tmp_path / "prom", MambaModel(cfg), RunConfig(
        task="promoter", model=cfg, train=TrainConfig(seq_len=300),
        extra={"tokenizer": "dna", "threshold": 0.5, "rc_average": True}))
    series = save_run(tmp_path / "ts", MambaModel(TINY), RunConfig(task="anomaly", model=TINY))
    genome = tmp_path / "g.fa"
    genome.write_text(">g\n" + "ACGT" * 200 + "\n")
    bad = tmp_path / "u.fa"
    bad.write_text(">x\nACGU\n")
    cases = [
        (("scan", "--model", prom, "--genome", genome, "--out", tmp_path / "o.bedGraph", "--stride", 400),
         "--stride 400 must lie in 1..window (300) so the centre bins tile the genome"),
        (("scan", "--model", prom, "--genome", genome, "--out", tmp_path / "o.bedGraph", "--contig", "chr9"),
         f"{genome}: no contig named 'chr9'"),
        (("embed", "--model", series, genome, "--out", tmp_path / "e.parquet"),
         f"{series}: a 'anomaly' run that does not read DNA cannot embed sequences"),
        (("embed", "--model", lm_run, bad, "--out", tmp_path / "e.parquet"),
         f"{bad}: record 'x': invalid character 'U' at position 3"),
    ]
    for args, message in cases:
        code, _, err = run_main(monkeypatch, capsys, *args)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and message in err, (args, err)
    assert not (tmp_path / "o.bedGraph").exists() and not (tmp_path / "e.parquet").exists()
