"""Batch prediction (`mambaseq predict`) on real data: hg38 chr2 records scored by an LM and GUE promoter tables
classified, each checked against a one-record oracle; streaming equals one pass; resume, --force and changed
inputs; bad files that fail alone; one-line usage errors; two CPU ranks under torchrun."""
import gzip
import json
import math
import os
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
import torch
from Bio import bgzf

from mambaseq.checkpoint import load_run, save_run
from mambaseq.config import ModelConfig, RunConfig, TrainConfig
from mambaseq.model import MambaModel
from mambaseq.pipelines.predict import (Item, PredictError, collect_inputs, length_batches, lm_stream_score,
                                        output_name, predict)
from mambaseq.tokenizers import N_ID, encode, reverse_complement

from conftest import BUNDLED_DATA, run_main

PIECE = BUNDLED_DATA / "hg38_chr2_1000001-1300000.fa"
GUE = BUNDLED_DATA / "gue_prom_300_tata_subset"
TINY = ModelConfig(d_model=16, n_layer=2, d_state=4)


@pytest.fixture(scope="module")
def chr2() -> str:
    """The bundled 300 kb of hg38 chr2 (soft-masked: lower case in repeats)."""
    return "".join(PIECE.read_text().splitlines()[1:])


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    torch.manual_seed(0)
    return save_run(tmp_path_factory.mktemp("lm") / "run", MambaModel(TINY),
                    RunConfig(task="lm", model=TINY, extra={"tokenizer": "dna"}))


def promoter_run(path, n_classes=2, threshold=0.5):
    torch.manual_seed(1)
    cfg = ModelConfig(**{**TINY.to_dict(), "n_classes": n_classes})
    extra = {"tokenizer": "dna", "rc_average": True, "threshold": threshold if n_classes == 2 else None,
             "classes": ["non-promoter", "promoter"] if n_classes == 2 else ["tata", "nontata", "none"]}
    return save_run(path, MambaModel(cfg), RunConfig(task="promoter", model=cfg, train=TrainConfig(seq_len=300),
                                                     extra=extra))


def write_fasta(path, records, width=60, newline="\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f">{name} cut from hg38 chr2{newline}"
                   + "".join(seq[i:i + width] + newline for i in range(0, len(seq), width)) for name, seq in records)
    if path.name.endswith(".gz"):
        with (bgzf.BgzfWriter(str(path), "wb") if "bgzip" in path.name else gzip.open(path, "wb")) as handle:
            handle.write(text.encode())
    else:
        path.write_bytes(text.encode())
    return path


@torch.no_grad()
def oracle(model, sequence):
    """(log-likelihood, scored bases) of one record in one pass, no batch, no padding, no chunks."""
    ids = torch.from_numpy(encode(sequence).astype(np.int64))[None]  # (1, L)
    logp = model(ids)[0].double().log_softmax(-1)  # (L, V)
    target = ids[0, 1:]
    picked = logp[:-1].gather(-1, target[:, None])[:, 0]
    keep = target != N_ID
    return picked[keep].sum().item(), int(keep.sum())


def output(out, path):
    return pl.read_parquet(out / output_name(path))


def manifest(out):
    return json.loads((out / "manifest.json").read_text())


def records_of(chr2, lengths, start=0, name="r"):
    """Consecutive slices of chr2 (lower and upper case), with an N gap and IUPAC codes in some."""
    records, position = [], start
    for i, length in enumerate(lengths):
        seq = chr2[position:position + length]
        if length >= 200:
            seq = seq[:50] + "N" * 40 + "R" + seq[91:150] + "y" + seq[151:]
        records.append((f"{name}{i}", seq))
        position += length
    return records


# ---- LM scoring ---------------------------------------------------------------------------------------------
def test_lm_scores_real_records_like_one_pass_each(chr2, lm_run, tmp_path, monkeypatch, capsys):
    """Plain, CRLF, plain-gzip and bgzip FASTA, CSV and Parquet; records shorter and longer than --max-tokens
    (batched, or streamed in chunks); same file name in two folders."""
    inputs = tmp_path / "in"
    sets = {
        inputs / "a" / "reads.fa": records_of(chr2, [1, 2, 57, 129, 230, 40]),
        inputs / "b" / "reads.fa": records_of(chr2, [300, 90, 20], start=5000),
        inputs / "c" / "more.fa.gz": records_of(chr2, [210, 64], start=9000),
        inputs / "c" / "more.bgzip.fa.gz": records_of(chr2, [250, 10], start=11000),
    }
    for path, records in sets.items():
        write_fasta(path, records, newline="\r\n" if "/b/" in str(path) else "\n")
    table = records_of(chr2, [120, 260, 64], start=20000, name="t")
    pl.DataFrame({"name": [n for n, _ in table], "sequence": [s for _, s in table]}).write_csv(inputs / "t.csv")
    sets[inputs / "t.csv"] = table
    (inputs / "d").mkdir()
    pl.DataFrame({"sequence": [s for _, s in table]}).write_parquet(inputs / "d" / "t.parquet")
    sets[inputs / "d" / "t.parquet"] = [(str(i + 1), s) for i, (_, s) in enumerate(table)]
    (inputs / "notes.md").write_text("not an input: folders contribute known suffixes only\n")

    out = tmp_path / "out"
    code, stdout, err = run_main(monkeypatch, capsys, "predict", "--model", lm_run, inputs, "--out", out,
                                 "--max-tokens", 128, "--batch-size", 3, "--device", "cpu")
    assert code in (0, None), err
    assert "6 done, 0 skipped (already done), 0 failed of 6 files" in stdout
    model, _ = load_run(lm_run)
    entries = manifest(out)["files"]
    assert len(entries) == 6 and len({e["output"] for e in entries.values()}) == 6  # reads.fa twice, no collision
    for path, records in sets.items():
        entry = entries[str(path.resolve())]
        assert entry["status"] == "done" and entry["records"] == len(records)
        assert entry["bases"] == sum(len(s) for _, s in records) and entry["size"] == path.stat().st_size
        frame = output(out, path)
        assert frame["record"].to_list() == list(range(len(records)))
        assert frame["name"].to_list() == [n for n, _ in records]
        assert frame["length"].to_list() == [len(s) for _, s in records]
        for row, (_, seq) in zip(frame.iter_rows(named=True), records):
            expected, scored = oracle(model, seq)
            assert row["scored_bases"] == scored == len(seq) - 1 - sum(c in "NRy" for c in seq[1:])
            assert row["log_likelihood"] == pytest.approx(expected, rel=1e-5, abs=1e-4)
            if scored:
                assert row["bits_per_base"] == pytest.approx(-expected / scored / math.log(2), rel=1e-5)
            else:
                assert math.isnan(row["bits_per_base"])
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".parquet") == ["manifest.json"]


def test_streaming_in_chunks_equals_one_pass(chr2, lm_run, tmp_path, monkeypatch, capsys):
    model, _ = load_run(lm_run)
    sequence = chr2[40_000:41_500] + "N" * 25 + chr2[41_500:42_000]  # 2 kb, soft-masked, with a gap
    ids = encode(sequence)
    chunks = [ids[i:i + 97] for i in range(0, len(ids), 97)]  # 21 chunks, the last one short
    score = lm_stream_score(model, chunks, torch.device("cpu"), per_position=True)
    with torch.no_grad():  # one pass over the whole record
        tokens = torch.from_numpy(ids.astype(np.int64))[None]
        logp = model(tokens)[0].double().log_softmax(-1)
    whole = logp[:-1].gather(-1, tokens[0, 1:, None])[:, 0].numpy()
    gap = ids[1:] == N_ID
    assert score.scored == len(sequence) - 1 - 25
    assert score.log_likelihood == pytest.approx(whole[~gap].sum(), rel=1e-5)
    assert np.isnan(score.logprob[0]) and len(score.logprob) == len(sequence)
    assert np.isnan(score.logprob[1:][gap]).all()
    np.testing.assert_allclose(score.logprob[1:][~gap], whole[~gap], rtol=1e-4, atol=1e-5)

    # through the command: --per-position, one record streamed in 64-token chunks, one batched
    record = sequence[1400:1700]
    fasta = write_fasta(tmp_path / "one.fa", [("gap", record), ("short", "ACGTNACGT")])
    code, _, err = run_main(monkeypatch, capsys, "predict", "--model", lm_run, fasta, "--out", tmp_path / "out",
                            "--per-position", "--max-tokens", 64, "--device", "cpu")
    assert code in (0, None), err
    frame = output(tmp_path / "out", fasta)
    assert frame["log_likelihood"][0] == pytest.approx(oracle(model, record)[0], rel=1e-5)
    positions = frame["logprob"].to_list()
    assert [len(p) for p in positions] == [300, 9]
    for values, total in zip(positions, frame["log_likelihood"]):
        assert np.nansum(np.array(values, dtype=np.float64)) == pytest.approx(total, rel=1e-5)
    assert np.isnan(positions[1][0]) and np.isnan(positions[1][4]) and not np.isnan(positions[1][5])


# ---- promoter -----------------------------------------------------------------------------------------------
@torch.no_grad()
def strand_mean(model, sequences):
    """Mean class probabilities over both strands of equal-length sequences, one unpadded batch per strand."""
    ids = torch.from_numpy(np.stack([encode(s) for s in sequences]).astype(np.int64))  # (n, L)
    probs = [model.classify(x).double().softmax(-1) for x in (ids, reverse_complement(ids))]
    return ((probs[0] + probs[1]) / 2).numpy()  # (n, K)


def test_promoter_probabilities_on_real_gue_tables(tmp_path, monkeypatch, capsys):
    run = promoter_run(tmp_path / "prom", threshold=0.5)
    model, _ = load_run(run)
    dev = pl.read_csv(GUE / "dev.csv").head(12)
    rows = dev["sequence"].to_list()
    fasta = write_fasta(tmp_path / "in" / "strands.fa", [("x", rows[0]), ("x_rc", rows[0].translate(
        str.maketrans("ACGTacgt", "TGCAtgca"))[::-1]), ("short", rows[1][:217])])
    table = tmp_path / "in" / "dev.csv"  # the GUE layout: sequence,label
    dev.write_csv(table)
    too_long = write_fasta(tmp_path / "in" / "long.fa", [("ok", rows[2]), ("long", rows[3] + "A")])
    out = tmp_path / "out"
    code, _, err = run_main(monkeypatch, capsys, "predict", "--model", run, tmp_path / "in", "--out", out,
                            "--batch-size", 16, "--device", "cpu")
    assert code == 1
    assert err.strip() == (f"failed: {too_long.resolve()}: record 'long': longer than 300 bases, the longest sequence "
                           "this promoter run was trained on; predict refuses it (`mambaseq scan` slides the "
                           "classifier along long sequences)")
    frame = output(out, table)
    assert frame.columns == ["record", "name", "length", "prob", "predicted"] and frame.height == 12
    expected = strand_mean(model, rows)[:, 1]
    np.testing.assert_allclose(frame["prob"].to_numpy(), expected, rtol=1e-5)
    assert (frame["predicted"] == (frame["prob"] >= 0.5).cast(pl.Int64)).all()
    strands = output(out, fasta)
    assert strands["prob"][0] == pytest.approx(strands["prob"][1], abs=1e-6)  # RC-averaged: strand-symmetric
    assert strands["length"].to_list() == [300, 300, 217]
    assert manifest(out)["files"][str(too_long.resolve())]["status"] == "failed"
    assert not (out / output_name(too_long)).exists()

    three = promoter_run(tmp_path / "three", n_classes=3)
    code, _, err = run_main(monkeypatch, capsys, "predict", "--model", three, table, "--out", tmp_path / "o3",
                            "--device", "cpu")
    assert code in (0, None), err
    frame = output(tmp_path / "o3", table)
    assert frame.columns == ["record", "name", "length", "prob_tata", "prob_nontata", "prob_none", "predicted"]
    probs = frame.select("prob_tata", "prob_nontata", "prob_none").to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-6)
    assert (frame["predicted"].to_numpy() == probs.argmax(1)).all()


# ---- resume -------------------------------------------------------------------------------------------------
def test_rerun_skips_done_inputs_redoes_changed_ones_and_force_redoes_all(chr2, lm_run, tmp_path, monkeypatch, capsys):
    files = [write_fasta(tmp_path / "in" / f"part{i}.fa", records_of(chr2, [100, 150], start=1000 * i))
             for i in range(3)]
    out = tmp_path / "out"

    def run(*extra):
        return run_main(monkeypatch, capsys, "predict", "--model", lm_run, *files, "--out", out, "--device", "cpu",
                        *extra)

    assert run()[0] in (0, None)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    code, stdout, _ = run()
    assert code in (0, None) and "0 done, 3 skipped (already done), 0 failed of 3 files" in stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.suffix == ".parquet"} == \
        {k: v for k, v in stamps.items() if k.endswith(".parquet")}
    write_fasta(files[1], records_of(chr2, [100, 150, 99], start=1000))  # changed: one more record
    code, stdout, _ = run()
    assert "1 done, 2 skipped (already done), 0 failed" in stdout and output(out, files[1]).height == 3
    assert manifest(out)["files"][str(files[1])]["records"] == 3
    code, stdout, _ = run("--force")
    assert "3 done, 0 skipped" in stdout
    code, _, err = run("--per-position")  # other settings: the outputs would not match the manifest
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "holds predictions of another run or settings (different per_position" in err and "--force" in err
    code, stdout, _ = run("--per-position", "--force")
    assert code in (0, None) and "3 done" in stdout and "logprob" in output(out, files[0]).columns


# ---- bad input: the file fails, the others complete --------------------------------------------------------
_GZIPPED = gzip.compress(b">a\n" + np.random.default_rng(0).choice(list(b"ACGT"), 20_000).astype(np.uint8).tobytes())
CUT_GZIP = _GZIPPED[:len(_GZIPPED) // 2]  # a download cut short
BAD_FILES = {
    "bad_char.fa": (b">ok\nACGT\n>bad\nACGTU\n", "record 'bad': invalid character 'U' at position 4; expected A, C, "
                    "G, T, N or an IUPAC code (R Y K M S W B D H V), in either case"),
    "gap.fa": (b">x\nAC\nGT-A\n", "record 'x': invalid character '-' at position 4"),
    "space.fa": (b">x\nACGT ACGT\n", "record 'x': invalid character ' ' at position 4"),
    "latin1.fa": (b">x\nAC\xe9GT\n", "record 'x': invalid character '\\xe9' at position 2"),
    "empty_record.fa": (b">a\nACGT\n>b\n>c\nAC\n", "record 'b': empty sequence (no bases)"),
    "nameless.fa": (b">a\nAC\n>\nACGT\n", "record 2 has a '>' header line with no name"),
    "not_fasta.fa": (b"hello world\n",
                     "not a FASTA file: its first non-empty line starts with b'hello world', not '>'"),
    "empty.fa": (b"", "is empty (no '>' record)"),
    "cut.fa.gz": (CUT_GZIP, "cannot read it, truncated or corrupt"),
    "xz.fa": (b"\xfd7zXZ\x00rest", "is xz-compressed"),
    "no_sequence_column.csv": (b"seq,label\nACGT,1\n", "no column 'sequence' (columns: seq, label)"),
    "empty_row.csv": (b"name,sequence\na,ACGT\nb,\n", "row 2: empty sequence (no bases)"),
    "header_only.csv": (b"sequence\n", "holds no sequences"),
    "bad_row.tsv": ("sequence\nACGT\nACGTé\n".encode(), "row 2: invalid character 'é' at position 4"),
    "not_parquet.parquet": (b"PAR1 but nothing else", "cannot read it as a table"),
}


def test_each_bad_file_fails_alone_with_its_reason(tmp_path, lm_run, monkeypatch, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    good = write_fasta(folder / "good.fa", [("a", "ACGTACGTTTGA"), ("b", "acgtnnRYacgt")])
    for name, (data, _) in BAD_FILES.items():
        (folder / name).write_bytes(data)
    unknown = tmp_path / "reads.bam"  # named explicitly: taken, and fails for its suffix
    unknown.write_bytes(b"BAM\x01")
    out = tmp_path / "out"
    code, stdout, err = run_main(monkeypatch, capsys, "predict", "--model", lm_run, folder, unknown, "--out", out,
                                 "--device", "cpu")
    assert code == 1, err
    n_bad = len(BAD_FILES) + 1
    assert f"1 done, 0 skipped (already done), {n_bad} failed of {n_bad + 1} files" in stdout
    lines = err.strip().split("\n")
    assert len(lines) == n_bad and all(line.startswith("failed: ") for line in lines)
    entries = manifest(out)["files"]
    for name, (_, reason) in BAD_FILES.items():
        path = (folder / name).resolve()
        assert any(line.startswith(f"failed: {path}: ") and reason in line for line in lines), (name, err)
        assert entries[str(path)]["status"] == "failed" and reason in entries[str(path)]["reason"]
        assert not (out / output_name(path)).exists()
    assert "unknown file type" in entries[str(unknown.resolve())]["reason"]
    assert entries[str(good.resolve())]["status"] == "done"
    assert output(out, good)["scored_bases"].to_list() == [11, 7]  # N, R, Y are never scored


def test_usage_errors_are_one_line_with_status_2(tmp_path, lm_run, monkeypatch, capsys):
    fasta = write_fasta(tmp_path / "in" / "x.fa", [("a", "ACGTACGT")])
    torch.manual_seed(0)
    anomaly = save_run(tmp_path / "anomaly", MambaModel(TINY), RunConfig(task="anomaly", model=TINY))
    bidirectional = ModelConfig(**{**TINY.to_dict(), "bidirectional": True})
    bi = save_run(tmp_path / "bi", MambaModel(bidirectional), RunConfig(task="lm", model=bidirectional,
                                                                      extra={"tokenizer": "dna"}))
    (tmp_path / "empty").mkdir()
    (tmp_path / "a_file").write_text("x")
    cases = [
        ((tmp_path / "nope", fasta), (), "run folder not found"),
        ((anomaly, fasta), (), "anomaly settings in config.json are incomplete or invalid"),
        ((bi, fasta), (), "a bidirectional LM sees both sides of every base"),
        ((lm_run, tmp_path / "missing.fa"), (), "missing.fa: no such file or folder"),
        ((lm_run, str(tmp_path / "in" / "*.fasta")), (), "*.fasta: no file matches this pattern"),
        ((lm_run, tmp_path / "empty"), (), "empty: folder holds no input file"),
        ((promoter_run(tmp_path / "prom"), fasta), ("--per-position",), "--per-position: promoter runs give one "
                                                                        "value per record"),
        ((lm_run, fasta), ("--batch-size", 0), "--batch-size must be >= 1 (got 0)"),
        ((lm_run, fasta), ("--max-tokens", 1), "--max-tokens must be >= 2 (got 1)"),
    ]
    for (run, source), extra, message in cases:
        code, _, err = run_main(monkeypatch, capsys, "predict", "--model", run, source, "--out", tmp_path / "out",
                                "--device", "cpu", *extra)
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (message, err)
        assert message in err, err
        assert not (tmp_path / "out").exists()
    code, _, err = run_main(monkeypatch, capsys, "predict", "--model", lm_run, fasta, "--out", tmp_path / "a_file")
    assert code == 2 and "a_file: exists and is not a folder" in err


# ---- pieces -------------------------------------------------------------------------------------------------
def test_inputs_from_folders_and_globs(tmp_path):
    (tmp_path / "x" / "deep").mkdir(parents=True)
    (tmp_path / "y").mkdir()
    for name in ("x/a.fa", "x/deep/a.fa", "x/b.fasta.gz", "x/c.csv", "x/.hidden.fa", "x/readme.txt", "y/a.fa",
                 "y/t.parquet"):
        (tmp_path / name).write_text(">a\nA\n")
    out = tmp_path / "x" / "preds"
    out.mkdir()
    (out / "old.fa").write_text(">a\nA\n")  # under --out: never an input
    found = collect_inputs([tmp_path / "x", str(tmp_path / "y" / "*.fa"), tmp_path / "x" / "a.fa"],
                           (".fa", ".fasta.gz", ".csv", ".parquet"), out)
    assert [p.relative_to(tmp_path).as_posix() for p in found] == ["x/a.fa", "x/b.fasta.gz", "x/c.csv",
                                                                   "x/deep/a.fa", "y/a.fa"]
    assert output_name(found[0]) != output_name(found[3]) and output_name(found[0]).startswith("a.fa-")
    with pytest.raises(PredictError, match="no input file left"):
        collect_inputs([out / "old.fa"], (".fa",), out)


def test_length_batches_hold_every_item_once_within_limits():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 3000, size=500)
    items = [Item(i, str(i), np.zeros(n, np.uint8)) for i, n in enumerate(lengths)]
    batches = list(length_batches(iter(items), batch_size=16, max_tokens=4096))
    seen = sorted(item.index for batch in batches for item in batch)
    assert seen == list(range(500))
    for batch in batches:
        widths = [len(item.ids) for item in batch]
        assert len(batch) <= 16 and (len(batch) == 1 or len(batch) * max(widths) <= 4096)
        assert widths == sorted(widths)
    padding = sum(len(b) * max(len(i.ids) for i in b) for b in batches) / lengths.sum() - 1
    assert padding < 0.05  # sorted buckets: little padding (unsorted batches of 16 here: about 90%)


def test_two_cpu_ranks_share_the_files(chr2, lm_run, tmp_path):
    files = [write_fasta(tmp_path / "in" / f"f{i}.fa", records_of(chr2, [100 + 20 * i, 60], start=700 * i))
             for i in range(5)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "mambaseq", "predict", "--model", str(lm_run), str(tmp_path / "in"), "--out",
                           str(tmp_path / "ddp"), "--device", "cpu"], capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("5 done, 0 skipped (already done), 0 failed of 5 files") == 1  # rank 0 reports
    entries = manifest(tmp_path / "ddp")["files"]
    assert sorted(e["rank"] for e in entries.values()) == [0, 0, 0, 1, 1]  # sorted paths, every 2nd to rank 1
    assert all(e["status"] == "done" for e in entries.values())
    assert not list((tmp_path / "ddp").glob("manifest.part-*")) and not list((tmp_path / "ddp").glob(".*"))
    single = predict(lm_run, files, tmp_path / "one", device="cpu", show_progress=False)
    assert single["done"] == 5
    for path in files:
        a, b = output(tmp_path / "ddp", path), output(tmp_path / "one", path)
        assert a.select("record", "name", "length", "scored_bases").equals(b.select("record", "name", "length",
                                                                                     "scored_bases"))
        np.testing.assert_allclose(a["log_likelihood"].to_numpy(), b["log_likelihood"].to_numpy(), rtol=1e-6)


@pytest.mark.parametrize("world, local_rank, expected", [("1", "0", 3), ("2", "1", 1)])
def test_plain_cuda_device_gets_an_index(monkeypatch, world, local_rank, expected):
    """`--device cuda` outside torchrun once crashed in torch.cuda.set_device (it needs an index): a single
    process takes the current GPU, a torchrun rank its LOCAL_RANK. The CUDA calls are faked (CI has no GPU)."""
    from mambaseq.pipelines import training
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(training.dist, "is_initialized", lambda: True)  # no group to create
    monkeypatch.setenv("WORLD_SIZE", world)
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    dev, joined = training.join_process_group("cuda")
    assert dev == torch.device("cuda", expected) and chosen == [dev] and not joined
