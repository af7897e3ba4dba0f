"""Promoter classification, genome scan and embeddings on real data: learning, strand symmetry, --init,
valid bedGraph/BED output, and a one-line error with exit status 2 for every kind of bad input."""
import json

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.metrics import roc_auc_score

from mambaseq.checkpoint import load_run, save_run
from mambaseq.config import ModelConfig, RunConfig, TrainConfig
from mambaseq.io.sequences import SequenceError, encode_sequences, read_sequences
from mambaseq.model import MambaModel
from mambaseq.pipelines.promoter import best_threshold, classifier_from_init, finetune, predict_proba
from mambaseq.tokenizers import decode, encode, reverse_complement

from conftest import BUNDLED_DATA, run_main

SUBSET = BUNDLED_DATA / "gue_prom_300_tata_subset"
PIECE = BUNDLED_DATA / "hg38_chr2_1000001-1300000.fa"
TINY = ModelConfig(d_model=32, n_layer=2, d_state=8)


def tiny_promoter_run(path, bidirectional=False, threshold=0.5, seq_len=300):
    """An untrained promoter run folder (enough for scan/embed plumbing and error tests)."""
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY.to_dict(), "n_classes": 2, "bidirectional": bidirectional})
    run_cfg = RunConfig(task="promoter", model=cfg, train=TrainConfig(seq_len=seq_len),
                        extra={"tokenizer": "dna", "threshold": threshold, "rc_average": True})
    return save_run(path, MambaModel(cfg), run_cfg)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Fine-tuned once on the bundled real GUE subset (400 train, 150 dev, 150 test rows), shared by tests."""
    out = tmp_path_factory.mktemp("prom") / "run"
    train = TrainConfig(batch_size=8, steps=60, lr=2e-2, warmup_steps=3, eval_every=60, weight_decay=0.0,
                        rc_augment=False, seed=0)
    metrics = finetune(SUBSET / "train.csv", out, train, model_cfg=TINY, dev=SUBSET / "dev.csv",
                       test=SUBSET / "test.csv", rc_average=False, device="cpu", show_progress=False)
    return out, metrics


def test_finetune_learns_real_promoters(trained):
    out, metrics = trained
    # This seed measured dev AUROC 0.658, test 0.572, all 300 held-out rows 0.616 (60 CPU steps learn about
    # composition: GC content alone gives dev 0.645, test 0.549). Held-out n = 300: chance is 0.5 +- 0.033.
    predictions = pl.read_parquet(out / "predictions.parquet")
    assert roc_auc_score(predictions["label"], predictions["prob"]) > 0.58
    assert metrics["dev"]["auroc"] > 0.62 and metrics["test"]["auroc"] > 0.53
    for name in ("config.json", "model.safetensors", "metrics.json", "predictions.parquet", "curves.png",
                 "train.jsonl"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    assert set(saved["test"]) >= {"auroc", "auprc", "mcc", "f1", "accuracy"}
    _, cfg = load_run(out)
    assert cfg.task == "promoter" and cfg.model.n_classes == 2 and cfg.train.seq_len == 300
    assert cfg.extra["threshold"] == saved["threshold"] and cfg.extra["classes"] == ["non-promoter", "promoter"]
    assert predictions.height == 300 and set(predictions["split"]) == {"dev", "test"}
    test = predictions.filter(pl.col("split") == "test")
    assert ((test["prob"] >= saved["threshold"]).cast(pl.Int64) == test["predicted"]).all()


def test_threshold_maximises_mcc():
    labels = np.array([0, 0, 1, 0, 1, 1])
    probs = np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9])
    assert best_threshold(labels, probs) == 0.8  # >= 0.8: 2 TP, 0 FP, 1 FN, 3 TN -> MCC 0.71 (the best cut)
    assert best_threshold(np.array([0, 1]), np.array([0.5, 0.5])) == 0.5  # ties form one cut


@pytest.mark.parametrize("bidirectional", [False, True])
def test_rc_averaging_is_strand_symmetric(tmp_path, bidirectional):
    model, _ = load_run(tiny_promoter_run(tmp_path / "run", bidirectional))
    sequences = pl.read_csv(SUBSET / "test.csv")["sequence"].to_list()[:6]
    sequences[1] = sequences[1][:217]  # unequal lengths: padded and masked
    ids, lengths = encode_sequences(sequences)
    rc = reverse_complement(ids, lengths)
    both = predict_proba(model, np.concatenate([ids, rc]), np.concatenate([lengths, lengths]), rc_average=True)
    np.testing.assert_array_equal(both[:6], both[6:])  # exactly, not approximately
    plain = predict_proba(model, np.concatenate([ids, rc]), np.concatenate([lengths, lengths]), rc_average=False)
    assert not np.array_equal(plain[:6], plain[6:])  # without averaging the strands differ


def test_init_from_lm_run_copies_the_backbone(tmp_path, monkeypatch, capsys):
    torch.manual_seed(1)
    lm = MambaModel(TINY)
    save_run(tmp_path / "lm", lm, RunConfig(task="lm", model=lm.config, extra={"tokenizer": "dna"}))
    model = classifier_from_init(tmp_path / "lm", None, bidirectional=True)
    assert model.config.n_classes == 2 and model.config.bidirectional
    torch.testing.assert_close(model.embedding.weight, lm.embedding.weight, rtol=0, atol=0)
    torch.testing.assert_close(model.layers[1].mixer.ssm_rev.A_log, lm.layers[1].mixer.ssm.A_log, rtol=0, atol=0)
    # end to end through the CLI: a few steps from the LM run
    code, out, err = run_main(monkeypatch, capsys, "finetune", "promoter", "--train", SUBSET / "dev.csv", "--init",
                              tmp_path / "lm", "--out", tmp_path / "prom", "--steps", 2, "--batch-size", 4,
                              "--eval-every", 2, "--device", "cpu", "--no-rc-average")
    assert code in (0, None), err
    assert "test: AUROC" in out
    _, cfg = load_run(tmp_path / "prom")
    assert cfg.extra["init"] == str((tmp_path / "lm").resolve()) and cfg.model.d_model == 32
    # a different width than the init run: refused, naming the setting
    code, _, err = run_main(monkeypatch, capsys, "finetune", "promoter", "--train", SUBSET / "dev.csv", "--init",
                            tmp_path / "lm", "--out", tmp_path / "p2", "--d-model", 64)
    assert code == 2 and "d_model 32 (asked 64)" in err


def read_bedgraph(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith("track type=bedGraph")
    rows = [line.split("\t") for line in lines[1:]]
    return [(c, int(s), int(e), float(v)) for c, s, e, v in rows]


def check_bedgraph(rows, contig_length):
    for (c0, s0, e0, _), (c1, s1, e1, _) in zip(rows, rows[1:]):
        assert c0 == c1 and e0 <= s1  # sorted, non-overlapping
    assert all(0 <= s < e <= contig_length and 0 <= v <= 1 for _, s, e, v in rows)  # half-open, in the contig


def test_scan_real_chr2_writes_valid_tracks(trained, tmp_path, monkeypatch, capsys):
    run, _ = trained
    piece = tmp_path / "piece.fa"
    sequence = "".join(PIECE.read_text().splitlines()[1:])[:9_000]
    # a 1 kb assembly gap inside the slice: windows over it must be skipped
    sequence = sequence[:4000] + "N" * 1000 + sequence[5000:]
    piece.write_text(">chr2_slice\n" + "\n".join(sequence[i:i + 60] for i in range(0, len(sequence), 60)) + "\n")
    code, out, err = run_main(monkeypatch, capsys, "scan", "--model", run, "--genome", piece, "--out",
                              tmp_path / "p.bedGraph", "--stride", 100, "--threshold", 0.3, "--device", "cpu")
    assert code in (0, None), err
    rows = read_bedgraph(tmp_path / "p.bedGraph")
    check_bedgraph(rows, 9_000)
    windows = (9_000 - 300) // 100 + 1
    gap = [k for k in range(windows) if k * 100 < 5000 and k * 100 + 300 > 4000]  # windows touching the gap
    assert len(rows) == windows - len(gap)  # 0.1 max N fraction: every window touching 30+ N is skipped
    assert rows[0][1:3] == (100, 200)  # window [0, 300) reports on its centre bin
    assert all(e - s == 100 for _, s, e, _ in rows)
    bed = [line.split("\t") for line in (tmp_path / "p.bed").read_text().splitlines()]
    assert bed, "threshold 0.3 should call something"
    starts = [int(b[1]) for b in bed]
    assert starts == sorted(starts)
    for chrom, start, end, name, score, strand in bed:
        assert chrom == "chr2_slice" and 0 <= int(start) < int(end) <= 9_000 and (int(end) - int(start)) >= 300
        assert 0 <= int(score) <= 1000 and strand in "+-." and name.startswith("promoter_")
        assert int(end) <= 4000 or int(start) >= 5000  # no call spans the gap
    for (_, _, e0, *_), (_, s1, *_) in zip(bed, bed[1:]):
        assert int(e0) < int(s1)  # merged: regions neither overlap nor touch
    assert "regions called" in out


def test_embed_per_sequence_and_per_position(trained, tmp_path, monkeypatch, capsys):
    run, _ = trained
    fasta = tmp_path / "seqs.fa"
    fasta.write_text(">a first\nACGTACGTAC\n>b\nGGGCCCAAATTTNN\n")
    code, _, err = run_main(monkeypatch, capsys, "embed", "--model", run, fasta, "--out", tmp_path / "e.parquet",
                            "--device", "cpu")
    assert code in (0, None), err
    table = pl.read_parquet(tmp_path / "e.parquet")
    assert table["name"].to_list() == ["a", "b"] and table["length"].to_list() == [10, 14]
    assert table["embedding"].dtype == pl.Array(pl.Float32, 32)
    table_file = tmp_path / "few.parquet"
    pl.read_csv(SUBSET / "dev.csv").head(12).write_parquet(table_file)
    code, _, err = run_main(monkeypatch, capsys, "embed", "--model", run, table_file, "--out",
                            tmp_path / "p.parquet", "--per-position", "--device", "cpu", "--batch-size", 8)
    assert code in (0, None), err
    assert pl.read_parquet(tmp_path / "p.parquet").height == 12 * 300
    # the mean of the per-position embeddings is the per-sequence embedding, whatever the batch
    run_main(monkeypatch, capsys, "embed", "--model", run, fasta, "--out", tmp_path / "q.parquet", "--per-position",
             "--device", "cpu")
    positions = pl.read_parquet(tmp_path / "q.parquet").filter(pl.col("name") == "b")["embedding"].to_numpy()
    np.testing.assert_allclose(positions.mean(0), table["embedding"].to_numpy()[1], rtol=1e-5, atol=1e-6)


def test_embed_bed_intervals_of_the_real_genome_piece(trained, tmp_path, monkeypatch, capsys):
    """BED + --genome: the same embedding as the interval's sequence given as FASTA; '-' means its RC."""
    from mambaseq.io.fasta import open_fasta

    run, _ = trained
    contig = "chr2_1000001_1300000"
    genome = tmp_path / PIECE.name
    genome.write_bytes(PIECE.read_bytes())  # a copy: the index is written beside it
    bed = write(tmp_path / "regions.bed", f"{contig}\t1000\t1300\tp\t0\t+\n{contig}\t1000\t1300\tm\t0\t-\n")
    piece = decode(encode(open_fasta(genome).fetch(contig, 1000, 1300)))  # upper-case text
    fasta = write(tmp_path / "same.fa", f">p\n{piece}\n>m\n{decode(reverse_complement(encode(piece)))}\n")
    for source, name, extra in ((bed, "b.parquet", ("--genome", genome)), (fasta, "f.parquet", ())):
        code, _, err = run_main(monkeypatch, capsys, "embed", "--model", run, source, "--out", tmp_path / name,
                                "--device", "cpu", *extra)
        assert code in (0, None), err
    from_bed, from_fasta = (pl.read_parquet(tmp_path / n) for n in ("b.parquet", "f.parquet"))
    assert from_bed["name"].to_list() == ["p", "m"] and from_bed["length"].to_list() == [300, 300]
    np.testing.assert_allclose(from_bed["embedding"].to_numpy(), from_fasta["embedding"].to_numpy(), rtol=1e-5,
                               atol=1e-6)


# ---- bad input: one line on stderr, exit status 2 ---------------------------------------------------------
def write(path, text):
    path.write_text(text)
    return path


GOOD = "ACGTACGTTTGACA"


@pytest.mark.parametrize("content,fragment", [
    (f"seq,label\n{GOOD},1\n", "no column 'sequence'"),
    (f"sequence,class\n{GOOD},1\n", "no column 'label'"),
    (f"sequence,label\n{GOOD},1\n{GOOD},2\n", "row 2: label '2' is not 0 or 1"),
    (f"sequence,label\n{GOOD},1\n{GOOD},yes\n", "row 2: label 'yes'"),
    (f"sequence,label\n{GOOD},1\n,0\n", "row 2: empty sequence"),
    (f"sequence,label\n{GOOD},1\n{GOOD},0\nACGUACGT,0\n", "row 3: invalid character 'U' at position 3"),
    (f"sequence,label\n{GOOD},1\nACGTé,0\n", "row 2: invalid character 'é' at position 4"),
    (f"sequence,label\n{GOOD},1\n{GOOD},1\n{GOOD},1\n", "every training label is 1"),
])
def test_bad_training_tables(tmp_path, monkeypatch, capsys, content, fragment):
    train = write(tmp_path / "train.csv", content)
    code, _, err = run_main(monkeypatch, capsys, "finetune", "promoter", "--train", train, "--out", tmp_path / "r",
                            "--d-model", 16, "--n-layer", 1, "--steps", 1)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err
    assert not (tmp_path / "r" / "model.safetensors").exists()


def test_fasta_with_labels_and_missing_label(tmp_path):
    fasta = write(tmp_path / "s.fa", ">x\nACGT\n>y\nTTGA\n")
    labels = write(tmp_path / "labels.tsv", "name\tlabel\nx\t1\ny\t0\n")
    data = read_sequences(fasta, labels_path=labels, require_labels=True)
    assert data.names == ["x", "y"] and data.labels.tolist() == [1, 0] and data.lengths.tolist() == [4, 4]
    write(labels, "name\tlabel\nx\t1\n")
    with pytest.raises(SequenceError, match="no label for record 'y'"):
        read_sequences(fasta, labels_path=labels, require_labels=True)
    bad = write(tmp_path / "b.fa", ">x\nACGT\n>z\nAC-T\n")
    with pytest.raises(SequenceError, match="record 'z': invalid character '-' at position 2"):
        read_sequences(bad)


def test_scan_refuses_other_tasks_and_oversized_windows(tmp_path, monkeypatch, capsys):
    lm = MambaModel(ModelConfig(**TINY.to_dict()))
    save_run(tmp_path / "lm", lm, RunConfig(task="lm", model=lm.config, extra={"tokenizer": "dna"}))
    genome = write(tmp_path / "g.fa", ">short\n" + "ACGT" * 50 + "\n")
    code, _, err = run_main(monkeypatch, capsys, "scan", "--model", tmp_path / "lm", "--genome", genome, "--out",
                            tmp_path / "o.bedGraph")
    assert code == 2 and "is a 'lm' run" in err and err.count("\n") == 1
    tiny_promoter_run(tmp_path / "prom")
    code, _, err = run_main(monkeypatch, capsys, "scan", "--model", tmp_path / "prom", "--genome", genome, "--out",
                            tmp_path / "o.bedGraph")
    assert code == 2 and "window 300 is larger than contig 'short' (200 bases)" in err
    assert not (tmp_path / "o.bedGraph").exists()


def test_help_lists_the_new_commands_with_examples(monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, "--help")
    assert code in (0, None) and all(name in out for name in ("finetune", "scan", "embed"))
    for command in (("finetune", "promoter"), ("scan",), ("embed",)):
        code, out, _ = run_main(monkeypatch, capsys, *command, "--help")
        assert code in (0, None) and f"Example: mambaseq {' '.join(command)}" in " ".join(out.split())
