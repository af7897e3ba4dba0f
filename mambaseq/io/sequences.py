"""Sequence sets: DNA sequences (with optional class labels) from tables, FASTA or BED + genome, as padded ids.

Tables (read with polars) need a `sequence` column; a `label` column when labels are required (the GUE layout
`sequence,label`); an optional `name` (or `id`) column names the rows in outputs. FASTA records are named by
the first word of their header; their labels come from a separate table with `name,label` columns.
BED files (.bed, .bed.gz; 0-based half-open, tab- or space-separated, '#'/track/browser lines skipped) are read
from a genome FASTA: `chrom start end [name [score [strand [label]]]]`, every line with the same number of
columns. The label is column 7 when there is one, else the name (column 4: `chr2 100 400 1` is a labelled
BED4); with a labels table, labels are looked up by name instead. Strand '-' rows are reverse-complemented
('+' or '.' read as is), so a row is the sequence as transcribed. Rows are named by column 4 when it is a
name, else `chrom:start-end(strand)`.
Labels: 0 or 1 by default (0 = non-promoter, 1 = promoter). With declared `classes` (names, in index order),
a label is a class name or its 0-based index, so `2` and `enhancer` can both mean class 2.
Every problem is a one-line `SequenceError` naming the file and the row: missing columns, labels outside {0,1}
(or the declared classes), empty sequences, characters outside A C G T N and the IUPAC codes, BED intervals
that are malformed or do not lie within the genome.

Encoding is one vectorised pass over all sequences joined together (the tokenizer's 256-entry lookup table,
indexed by a numpy byte array), then one scatter into a right-padded matrix: no Python loop per character.

Glossary
  n       number of sequences (rows or records).
  L       the longest sequence's length; shorter rows are right-padded with PAD_ID.
  row     1-based data row of a table (the header does not count), a FASTA record, or a BED line (1-based,
          comment lines counted).
  K       number of classes (2 unless declared).
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from Bio.SeqIO.FastaIO import SimpleFastaParser

from mambaseq.io.fasta import open_fasta
from mambaseq.tokenizers import ENCODE_TABLE, PAD_ID, reverse_complement

TABLE_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
PARQUET_SUFFIXES = (".parquet", ".pq")
FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas")
BED_SUFFIXES = (".bed",)
BED_STRANDS = ("+", "-", ".")
_INVALID = 255  # ENCODE_TABLE's entry for a byte that is not DNA


class SequenceError(ValueError):
    """A sequence file, a row of it, or a labels file cannot be used (one line, names file and row)."""


@dataclass
class SequenceSet:
    """Encoded sequences of one file. `labels` is None for unlabelled input."""

    names: list[str]
    ids: np.ndarray  # (n, L) uint8 token ids, right-padded with PAD_ID
    lengths: np.ndarray  # (n,) int64 valid length of each row
    labels: np.ndarray | None  # (n,) int64 class indices in 0..K-1 ({0, 1} unless classes are declared)
    source: str

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, rows: np.ndarray) -> "SequenceSet":
        """The rows `rows` (index array), padding trimmed to their longest sequence."""
        width = int(self.lengths[rows].max()) if len(rows) else 0
        return SequenceSet([self.names[i] for i in rows], self.ids[rows, :width], self.lengths[rows],
                           None if self.labels is None else self.labels[rows], self.source)


def file_kind(path: Path) -> str:
    """'table', 'fasta' or 'bed', from the name (compressed FASTA or BED: .fa.gz, .bed.gz)."""
    name = path.name.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    if stem.endswith(FASTA_SUFFIXES):
        return "fasta"
    if stem.endswith(BED_SUFFIXES):
        return "bed"
    if name.endswith(PARQUET_SUFFIXES) or Path(name).suffix in TABLE_SEPARATORS:
        return "table"
    raise SequenceError(f"{path}: unknown file type; expected .csv, .tsv, .parquet, FASTA (.fa/.fasta/.fna[.gz]) "
                        "or BED (.bed[.gz], with a genome)")


def read_sequences(path: str | Path, *, labels_path: str | Path | None = None, require_labels: bool = False,
                   genome: str | Path | None = None, classes: list[str] | None = None) -> SequenceSet:
    """Read, check and encode one file of sequences (and labels, when present or required).

    genome: the FASTA a BED file's intervals are cut from. classes: declared class names (index order); None
    means the binary default, labels 0 or 1.
    """
    path = Path(path)
    if not path.is_file():
        raise SequenceError(f"{path}: no such file")
    if classes is not None:
        check_classes(classes)
    kind = file_kind(path)
    if kind == "bed":
        return _read_bed(path, genome, labels_path, require_labels, classes)
    if kind == "fasta":
        names, sequences = _read_fasta(path)
        labels = None
        if labels_path is not None:
            labels = _labels_for_records(Path(labels_path), names, classes)
        elif require_labels:
            raise SequenceError(f"{path}: FASTA holds no labels; pass a labels table with columns name,label")
        row_names = [f"record {name!r}" for name in names]
    else:
        table = _read_table(path)
        if "sequence" not in table.columns:
            raise SequenceError(f"{path}: no column 'sequence' (columns: {', '.join(table.columns) or 'none'}); "
                                "expected a header like `sequence,label`")
        if require_labels and "label" not in table.columns:
            raise SequenceError(f"{path}: no column 'label' (columns: {', '.join(table.columns)}); "
                                "expected a header like `sequence,label` with labels 0 or 1")
        name_column = next((c for c in ("name", "id") if c in table.columns), None)
        row_names = [f"row {i + 1}" for i in range(table.height)]
        names = table[name_column].cast(pl.Utf8).to_list() if name_column else [str(i + 1) for i in range(table.height)]
        sequences = table["sequence"].cast(pl.Utf8).to_list()
        labels = _check_labels(table["label"], path, row_names, classes) if "label" in table.columns else None
    if not sequences:
        raise SequenceError(f"{path}: holds no sequences")
    ids, lengths = _encode_rows(sequences, path, row_names)
    return SequenceSet(names, ids, lengths, labels, str(path))


def encode_sequences(sequences: list[str], source: str = "sequences") -> tuple[np.ndarray, np.ndarray]:
    """(ids (n, L) uint8 right-padded with PAD_ID, lengths (n,)) for in-memory strings; checks like a file."""
    return _encode_rows(sequences, Path(source), [f"row {i + 1}" for i in range(len(sequences))])


def _read_table(path: Path) -> pl.DataFrame:
    try:
        if path.name.lower().endswith(PARQUET_SUFFIXES):
            return pl.read_parquet(path)
        # every column as text: labels are checked here rather than guessed by schema inference
        return pl.read_csv(path, separator=TABLE_SEPARATORS[path.suffix.lower()], infer_schema=False)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise SequenceError(f"{path}: cannot read it as a table ({str(error).splitlines()[0]})") from None


def _read_fasta(path: Path) -> tuple[list[str], list[str]]:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="ascii", errors="replace") as handle:
            records = list(SimpleFastaParser(handle))
    except (OSError, EOFError) as error:
        raise SequenceError(f"{path}: cannot read it ({error})") from None
    names = [title.split()[0] if title.split() else "" for title, _ in records]
    if "" in names:
        raise SequenceError(f"{path}: record {names.index('') + 1} has a '>' header with no name")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SequenceError(f"{path}: duplicate record name {name!r}")
        seen.add(name)
    return names, [sequence for _, sequence in records]


def _labels_for_records(labels_path: Path, names: list[str], classes: list[str] | None) -> np.ndarray:
    if not labels_path.is_file():
        raise SequenceError(f"{labels_path}: no such file")
    table = _read_table(labels_path) if file_kind(labels_path) == "table" else None
    if table is None:
        raise SequenceError(f"{labels_path}: a labels file must be a table (.csv, .tsv, .parquet) with name,label")
    name_column = next((c for c in ("name", "id") if c in table.columns), None)
    if name_column is None or "label" not in table.columns:
        raise SequenceError(f"{labels_path}: needs columns name,label (columns: {', '.join(table.columns)})")
    keys = table[name_column].cast(pl.Utf8).to_list()
    labels = _check_labels(table["label"], labels_path, [f"row {i + 1}" for i in range(table.height)], classes)
    lookup = dict(zip(keys, labels.tolist()))
    missing = [name for name in names if name not in lookup]
    if missing:
        raise SequenceError(f"{labels_path}: no label for record {missing[0]!r} ({len(missing)} records unlabelled)")
    return np.array([lookup[name] for name in names], dtype=np.int64)


def check_classes(classes: list[str]) -> None:
    """Declared class names: at least two, distinct, non-empty, and a name that is a number must be its own
    index (so a label `1` can never mean two different classes)."""
    if len(classes) < 2:
        raise SequenceError(f"classes {','.join(classes)!r}: declare at least two classes")
    for index, name in enumerate(classes):
        if not name or name != name.strip() or "," in name:
            raise SequenceError(f"class {index} {name!r}: a class name must be non-empty, without surrounding "
                                "spaces or commas")
        if name.isdigit() and int(name) != index:
            raise SequenceError(f"class name {name!r} is at index {index}: a numeric name must equal its index "
                                "(labels may be names or indices)")
    if len(set(classes)) < len(classes):
        raise SequenceError(f"classes {','.join(classes)!r}: a class is declared twice")


def _check_labels(column: pl.Series, path: Path, row_names: list[str], classes: list[str] | None = None) -> np.ndarray:
    """(n,) int64 class indices. Binary default: 0 or 1 (text, integers, booleans). Declared classes: a name or
    an index 0..K-1. Anything else names its row."""
    if column.dtype == pl.Boolean:
        column = column.cast(pl.Int64)
    text = column.cast(pl.Utf8).str.strip_chars()
    accepted = {"0": 0, "1": 1} if classes is None else (
        {str(i): i for i in range(len(classes))} | {name: i for i, name in enumerate(classes)})
    index = text.replace_strict(accepted, default=None, return_dtype=pl.Int64)  # null: not a class
    bad = index.is_null()
    if bad.any():
        row = int(bad.arg_true()[0])
        if classes is None:
            raise SequenceError(f"{path}: {row_names[row]}: label {column[row]!r} is not 0 or 1 "
                                "(classes: 0 = non-promoter, 1 = promoter; declare other classes with --classes)")
        listed = ", ".join(f"{i} = {name}" if name != str(i) else name for i, name in enumerate(classes))
        raise SequenceError(f"{path}: {row_names[row]}: label {column[row]!r} is not one of the declared classes "
                            f"({listed})")
    return index.to_numpy().astype(np.int64)


def _read_bed(path: Path, genome: str | Path | None, labels_path: str | Path | None, require_labels: bool,
              classes: list[str] | None) -> SequenceSet:
    """Intervals of a BED file cut from `genome` ('-' strand reverse-complemented); see the module docstring."""
    if genome is None:
        raise SequenceError(f"{path}: a BED file holds coordinates, not sequences; give the genome FASTA to cut "
                            "them from (--genome)")
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise SequenceError(f"{path}: cannot read it ({error})") from None
    rows, numbers = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        rows.append(line.rstrip("\r").split("\t") if "\t" in line else line.split())
        numbers.append(number)
    if not rows:
        raise SequenceError(f"{path}: holds no intervals")
    width = len(rows[0])
    for fields, number in zip(rows, numbers):
        if len(fields) != width:  # a missing column would silently shift strand or label
            raise SequenceError(f"{path}: line {number}: {len(fields)} columns where the first interval has {width}")
        if width < 3 or not fields[1].isdigit() or not fields[2].isdigit() or int(fields[1]) >= int(fields[2]):
            raise SequenceError(f"{path}: line {number}: expected 'chrom start end ...' with integers "
                                f"0 <= start < end, got {' '.join(fields)[:80]!r}")
        if width >= 6 and fields[5] not in BED_STRANDS:
            raise SequenceError(f"{path}: line {number}: strand {fields[5]!r} is not +, - or .")
    strands = [fields[5] if width >= 6 else "." for fields in rows]
    coordinates = [f"{f[0]}:{f[1]}-{f[2]}({s})" for f, s in zip(rows, strands)]
    row_names = [f"line {number} ({where})" for number, where in zip(numbers, coordinates)]

    # where the labels are: a labels table (by name), column 7, or (only when labels are needed) the name
    label_is_name = labels_path is None and 4 <= width < 7 and require_labels
    labels = None
    if labels_path is not None:
        if width < 4:
            raise SequenceError(f"{path}: a labels table matches rows by name, but this BED has no name column")
        labels = _labels_for_records(Path(labels_path), [f[3] for f in rows], classes)
    elif width >= 7 or label_is_name:
        labels = _check_labels(pl.Series([f[6 if width >= 7 else 3] for f in rows]), path, row_names, classes)
    elif require_labels:
        raise SequenceError(f"{path}: BED with {width} columns holds no labels; put them in column 7 (after "
                            "strand) or in the name column 4, or pass a labels table with columns name,label")
    names = [f[3] for f in rows] if width >= 4 and not label_is_name else coordinates

    sequences = []
    with open_fasta(genome) as fasta:
        for fields, row_name in zip(rows, row_names):
            chrom, start, end = fields[0], int(fields[1]), int(fields[2])
            if chrom not in fasta.lengths:
                raise SequenceError(f"{path}: {row_name}: contig {chrom!r} is not in {fasta.path} "
                                    f"({len(fasta.names)} contigs, e.g. {', '.join(fasta.names[:3])})")
            if end > fasta.lengths[chrom]:
                raise SequenceError(f"{path}: {row_name}: ends after {chrom}'s last base "
                                    f"({fasta.lengths[chrom]:,} bases in {fasta.path.name})")
            sequences.append(fasta.fetch(chrom, start, end).decode("ascii"))
    ids, lengths = _encode_rows(sequences, path, row_names)
    minus = np.flatnonzero(np.array(strands) == "-")
    if len(minus):
        ids[minus] = reverse_complement(ids[minus], lengths[minus])  # replaces the forward read; padding stays
    return SequenceSet(names, ids, lengths, labels, str(path))


def _encode_rows(sequences: list, path: Path, row_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([0 if s is None else len(s) for s in sequences], dtype=np.int64)  # (n,)
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        raise SequenceError(f"{path}: {row_names[int(empty[0])]}: empty sequence")
    joined = "".join(sequences)
    # 'replace' maps each non-ASCII character to one '?', so positions still line up with `joined`
    codes = np.frombuffer(joined.encode("ascii", errors="replace"), dtype=np.uint8)
    flat = ENCODE_TABLE[codes]  # (sum of lengths,) ids; 255 where the byte is not DNA
    bad = np.flatnonzero(flat == _INVALID)
    if len(bad):
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
        row = int(np.searchsorted(starts, bad[0], side="right") - 1)
        column = int(bad[0] - starts[row])
        raise SequenceError(
            f"{path}: {row_names[row]}: invalid character {joined[bad[0]]!r} at position {column}; expected "
            "A, C, G, T, N or an IUPAC code (R Y K M S W B D H V), in either case")
    ids = np.full((len(sequences), int(lengths.max())), PAD_ID, dtype=np.uint8)  # (n, L)
    ids[np.arange(ids.shape[1]) < lengths[:, None]] = flat  # row-major fill matches the joined order
    return ids, lengths
