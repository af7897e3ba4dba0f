"""Promoter inputs beyond sequence tables: BED intervals cut from a real genome (strand-aware), K > 2 declared
classes end to end, and the k-mer baseline of benchmarks/promoter_bench.py."""
import gzip
import importlib.util
import json

import numpy as np
import polars as pl
import pytest
import torch

from mambaseq.checkpoint import load_run
from mambaseq.config import ModelConfig
from mambaseq.io.sequences import SequenceSet, encode_sequences, read_sequences
from mambaseq.model import MambaModel
from mambaseq.pipelines.promoter import PromoterError, load_splits, multiclass_metrics, parse_classes, predict_probs
from mambaseq.tokenizers import decode, reverse_complement

from conftest import BUNDLED_DATA, REPO, run_main

PIECE = BUNDLED_DATA / "hg38_chr2_1000001-1300000.fa"
SUBSET = BUNDLED_DATA / "gue_prom_300_tata_subset"
COMPLEMENT = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N"}


def piece():
    """(record name, sequence) of the bundled chr2 piece, read as plain text (independent of pyfaidx)."""
    lines = PIECE.read_text().splitlines()
    return lines[0][1:].split()[0], "".join(lines[1:])


def rc(text):
    return "".join(COMPLEMENT[c] for c in reversed(text.upper()))


def write(path, text):
    path.write_text(text)
    return path


def test_bed_intervals_are_cut_from_the_genome_strand_aware(tmp_path):
    name, sequence = piece()
    intervals = [(0, 60, "+"), (12_345, 12_645, "-"), (150_000, 150_070, "."), (299_700, 300_000, "-"),
                 (1_000, 1_001, "-")]
    lines = "".join(f"{name}\t{s}\t{e}\tr{i}\t0\t{strand}\t{i % 2}\n" for i, (s, e, strand) in enumerate(intervals))
    bed = write(tmp_path / "x.bed", "track name=test\n# a comment\n\n" + lines)
    data = read_sequences(bed, genome=PIECE, require_labels=True)
    assert data.names == [f"r{i}" for i in range(5)] and data.labels.tolist() == [0, 1, 0, 1, 0]
    for row, (s, e, strand) in enumerate(intervals):
        expected = rc(sequence[s:e]) if strand == "-" else sequence[s:e].upper()  # soft-masked bases upper-cased
        assert decode(data.ids[row, :data.lengths[row]]) == expected, (s, e, strand)
    assert data.lengths.tolist() == [60, 300, 70, 300, 1]
    # gzip, spaces instead of tabs, BED4 whose name is the label; unlabelled BED3 rows are named by coordinates
    with gzip.open(tmp_path / "y.bed.gz", "wt") as handle:
        handle.write(f"{name} 100 110 1\n{name} 200 205 0\n")
    four = read_sequences(tmp_path / "y.bed.gz", genome=PIECE, require_labels=True)
    assert four.labels.tolist() == [1, 0] and decode(four.ids[1, :5]) == sequence[200:205].upper()
    assert four.names == [f"{name}:100-110(.)", f"{name}:200-205(.)"]
    three = read_sequences(write(tmp_path / "z.bed", f"{name}\t5\t9\n"), genome=PIECE)
    assert three.labels is None and three.names == [f"{name}:5-9(.)"]


def test_bed_matches_published_extraction_on_hg38_chr2(shared_data, tmp_path):
    """The 9 Genomic Benchmarks promoters inside the shipped chr2 region (0-based coordinates, '-' rows were
    reverse-complemented when they were extracted): BED + genome must give the same sequences."""
    folder = shared_data / "promoters" / "genomic_benchmarks_human_nontata_promoters_hg38_coords"
    table = pl.read_csv(folder / "extracted_from_shipped_chr2_region.csv")
    bed = write(tmp_path / "gb.bed", "".join(f"{r['chrom']}\t{r['start']}\t{r['end']}\t{r['id']}\t0\t{r['strand']}\t1\n"
                                             for r in table.iter_rows(named=True)))
    data = read_sequences(bed, genome=shared_data / "genome" / "hg38_chr2_1-2333275.fa", require_labels=True)
    assert data.names == table["id"].to_list() and set(table["strand"]) == {"+", "-"}
    for row, expected in enumerate(table["sequence"]):
        assert decode(data.ids[row, :data.lengths[row]]) == expected.upper(), table["id"][row]


@pytest.mark.parametrize("content,extra,fragment", [
    ("{c}\t0\t10\ta\t0\t+\t1\n", [], "give the genome FASTA"),
    ("chr9\t0\t10\ta\t0\t+\t1\n", ["genome"], "line 1 (chr9:0-10(+)): contig 'chr9' is not in"),
    ("{c}\t299990\t300010\ta\t0\t+\t1\n", ["genome"], "ends after chr2_1000001_1300000's last base"),
    ("{c}\t10\t10\ta\t0\t+\t1\n", ["genome"], "line 1: expected 'chrom start end ...'"),
    ("{c}\t0\t10\ta\t0\t*\t1\n", ["genome"], "line 1: strand '*' is not +, - or ."),
    ("{c}\t0\t10\ta\t0\t+\t1\n{c}\t0\t10\ta\t0\t+\n", ["genome"], "line 2: 6 columns where the first interval has 7"),
    ("{c}\t0\t10\n{c}\t20\t30\n", ["genome"], "BED with 3 columns holds no labels"),
    ("{c}\t0\t10\ta\t0\t+\t2\n", ["genome"], "label '2' is not 0 or 1"),
    ("{c}\t0\t10\ta\t0\t+\tenhancer\n", ["genome", "--classes", "promoter,silencer,other"],
     "label 'enhancer' is not one of the declared classes (0 = promoter, 1 = silencer, 2 = other)"),
])
def test_bad_bed_inputs(tmp_path, monkeypatch, capsys, content, extra, fragment):
    name, _ = piece()
    bed = write(tmp_path / "train.bed", content.format(c=name))
    extra = [PIECE if e == "genome" else e for e in extra]
    if extra and extra[0] == PIECE:
        extra = ["--genome", *extra]
    code, _, err = run_main(monkeypatch, capsys, "finetune", "promoter", "--train", bed, "--out", tmp_path / "r",
                            "--d-model", 16, "--n-layer", 1, "--steps", 1, *extra)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err


@pytest.mark.parametrize("classes,labels,fragment", [
    ("1,0", "0 1", "class name '1' is at index 0"),
    ("a,a", "0 1", "a class is declared twice"),
    ("1", "0 1", "at least 2 classes"),
    ("3", "0 1 1 0", "no training row has class 2;"),
    ("a,b,c", "a b x", "row 3: label 'x' is not one of the declared classes (0 = a, 1 = b, 2 = c)"),
])
def test_declared_class_errors(tmp_path, monkeypatch, capsys, classes, labels, fragment):
    train = write(tmp_path / "t.csv", "sequence,label\n" + "".join(f"ACGTTGCA,{x}\n" for x in labels.split()))
    code, _, err = run_main(monkeypatch, capsys, "finetune", "promoter", "--train", train, "--out", tmp_path / "r",
                            "--classes", classes, "--d-model", 16, "--n-layer", 1, "--steps", 1)
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert fragment in err


def test_classes_are_names_or_indices(tmp_path):
    assert parse_classes("3") == ["0", "1", "2"] and parse_classes("TATA, nonTATA ,none") == ["TATA", "nonTATA", "none"]
    with pytest.raises(PromoterError):
        parse_classes("0")
    table = write(tmp_path / "t.csv", "sequence,label\nACGT,none\nACGT,2\nACGT,TATA\nACGT,1\n")
    data = read_sequences(table, classes=["TATA", "nonTATA", "none"], require_labels=True)
    assert data.labels.tolist() == [2, 2, 0, 1]
    # the dev part must hold every class, or the macro AUROC that picks the best step is undefined
    dev = write(tmp_path / "d.csv", "sequence,label\nACGT,0\nACGT,1\n")
    with pytest.raises(PromoterError, match=r"dev part has no row of class 2 \(none\)"):
        load_splits(table, dev, dev, None, 0.1, 0, classes=["TATA", "nonTATA", "none"])


def test_multiclass_metrics_by_hand():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    probs = np.full((6, 3), 0.1) + 0.7 * np.eye(3)[predicted]  # rows sum to 1, argmax = predicted
    m = multiclass_metrics(labels, probs)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["threshold"] is None and m["n_per_class"] == [2, 2, 2]
    assert m["f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)  # per class: tp1 fp1 fn1; tp2 fp1 fn0; tp1 fp0 fn1
    # multi-class MCC from the confusion matrix: (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2))
    c, s, p, t = 4, 6, np.array([2, 3, 1]), np.array([2, 2, 2])
    assert m["mcc"] == pytest.approx((c * s - p @ t) / np.sqrt((s * s - p @ p) * (s * s - t @ t)))
    perfect = multiclass_metrics(labels, np.eye(3)[labels] * 0.8 + 0.2 / 3)
    assert perfect["auroc"] == perfect["auprc"] == perfect["mcc"] == perfect["f1"] == pytest.approx(1.0)
    assert multiclass_metrics(labels[:4], probs[:4])["auroc"] is None  # class 2 absent: one-vs-rest undefined


def test_three_class_rc_average_is_strand_symmetric():
    torch.manual_seed(0)
    model = MambaModel(ModelConfig(d_model=16, n_layer=1, d_state=4, n_classes=3, bidirectional=True))
    sequences = pl.read_csv(SUBSET / "dev.csv")["sequence"].to_list()[:4]
    ids, lengths = encode_sequences([sequences[0], sequences[1][:123], sequences[2], sequences[3][:50]])
    both = predict_probs(model, np.concatenate([ids, reverse_complement(ids, lengths)]),
                         np.concatenate([lengths, lengths]), rc_average=True)
    assert both.shape == (8, 3)
    np.testing.assert_array_equal(both[:4], both[4:])
    np.testing.assert_allclose(both.sum(1), 1, atol=1e-6)


def gc_windows(rng, count, length, sequence):
    starts = rng.choice(len(sequence) - length, size=count, replace=False)
    gc = np.array([sum(c in "GCgc" for c in sequence[s:s + length]) / length for s in starts])
    return starts, gc


def test_three_classes_from_bed_end_to_end(tmp_path, monkeypatch, capsys):
    """3 declared classes (low / mid / high GC of real chr2 windows, read from BED, half on the '-' strand):
    a tiny model learns them, outputs are per-class, no threshold, and scan refuses the run. (GC labels come
    from the sequence itself: an easy task, chosen to check the multi-class machinery in seconds.)"""
    name, sequence = piece()
    rng = np.random.default_rng(0)
    starts, gc = gc_windows(rng, 270, 64, sequence)
    cuts = np.quantile(gc[:150], [1 / 3, 2 / 3])
    classes = np.array(["low", "mid", "high"])[np.searchsorted(cuts, gc, side="right")]
    files = {}
    for part, rows in (("train", slice(0, 150)), ("dev", slice(150, 210)), ("test", slice(210, 270))):
        files[part] = write(tmp_path / f"{part}.bed", "".join(
            f"{name}\t{s}\t{s + 64}\tw{s}\t0\t{'+-'[i % 2]}\t{c}\n"
            for i, (s, c) in enumerate(zip(starts[rows], classes[rows]))))
    code, out, err = run_main(monkeypatch, capsys, "finetune", "promoter", "--train", files["train"], "--dev",
                              files["dev"], "--test", files["test"], "--genome", PIECE, "--classes", "low,mid,high",
                              "--out", tmp_path / "run", "--d-model", 16, "--n-layer", 1, "--batch-size", 16,
                              "--steps", 20, "--lr", 0.01, "--warmup-steps", 3, "--eval-every", 10, "--seed", 0,
                              "--device", "cpu")
    assert code in (0, None), err
    assert "no threshold" in out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # composition is what mean pooling learns first: this seed measured test macro AUROC 0.991 (dev 0.997)
    assert metrics["test"]["auroc"] > 0.8 and metrics["dev"]["auroc"] > 0.8, metrics
    assert metrics["threshold"] is None
    assert metrics["test"]["n_per_class"] == [int((classes[210:] == c).sum()) for c in ("low", "mid", "high")]
    _, cfg = load_run(tmp_path / "run")
    assert cfg.model.n_classes == 3 and cfg.extra["classes"] == ["low", "mid", "high"]
    assert cfg.extra["threshold"] is None
    predictions = pl.read_parquet(tmp_path / "run" / "predictions.parquet")
    probs = predictions.select("prob_low", "prob_mid", "prob_high").to_numpy()
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)
    assert (predictions["predicted"].to_numpy() == probs.argmax(1)).all() and predictions.height == 120
    assert (tmp_path / "run" / "curves.png").is_file()
    code, _, err = run_main(monkeypatch, capsys, "scan", "--model", tmp_path / "run", "--genome", PIECE, "--out",
                            tmp_path / "o.bedGraph")
    assert code == 2 and "a 3-class run (low, mid, high)" in err


# ---- the k-mer baseline of the benchmark ----------------------------------------------------------------------
def bench_module():
    spec = importlib.util.spec_from_file_location("promoter_bench", REPO / "benchmarks" / "promoter_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kmer_counts_by_hand():
    bench = bench_module()
    ids, lengths = encode_sequences(["ACGTA", "ACNGT", "GG"])
    counts = bench.kmer_counts(SequenceSet(["a", "b", "c"], ids, lengths, None, "x"), 2).toarray()
    # A=0 C=1 G=2 T=3, first base most significant: AC=1, CG=6, GT=11, TA=12, GG=10; k-mers over N or padding skipped
    assert {int(i): int(v) for i, v in enumerate(counts[0]) if v} == {1: 1, 6: 1, 11: 1, 12: 1}
    assert {int(i): int(v) for i, v in enumerate(counts[1]) if v} == {1: 1, 11: 1}
    assert {int(i): int(v) for i, v in enumerate(counts[2]) if v} == {10: 1}


def test_kmer_baseline_uses_the_pipeline_splits_and_metrics():
    bench = bench_module()
    sets = load_splits(SUBSET / "train.csv", SUBSET / "dev.csv", SUBSET / "test.csv", None, 0.1, 0)
    result = bench.kmer_baseline(sets, 6, [0.001, 0.01])
    # measured on the bundled 400-row subset: C 0.001 (dev AUROC 0.734 against 0.714), test AUROC 0.708;
    # chance on 150 test rows is 0.5 +- 0.047
    assert result["test"]["auroc"] > 0.65 and result["C"] == 0.001 and result["k"] == 6
    assert set(result["test"]) >= {"auroc", "auprc", "mcc", "f1", "accuracy", "threshold"}
    assert result["test"]["threshold"] == result["threshold"] == result["dev"]["threshold"]
