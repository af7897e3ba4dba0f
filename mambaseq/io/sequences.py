"""Sequence sets: DNA sequences (with optional 0/1 labels) from CSV/TSV/Parquet tables or FASTA, as padded ids.

Tables (read with polars) need a `sequence` column; a `label` column when labels are required (the GUE layout
`sequence,label`); an optional `name` (or `id`) column names the rows in outputs. FASTA records are named by
the first word of their header; their labels come from a separate table with `name,label` columns.
Every problem is a one-line `SequenceError` naming the file and the row: missing columns, labels outside {0,1},
empty sequences, characters outside A C G T N and the IUPAC codes.

Encoding is one vectorised pass over all sequences joined together (the tokenizer's 256-entry lookup table,
indexed by a numpy byte array), then one scatter into a right-padded matrix: no Python loop per character.

Glossary
  n       number of sequences (rows or records).
  L       the longest sequence's length; shorter rows are right-padded with PAD_ID.
  row     1-based data row of a table (the header does not count), or a FASTA record.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from Bio.SeqIO.FastaIO import SimpleFastaParser

from mambaseq.tokenizers import ENCODE_TABLE, PAD_ID

TABLE_SEPARATORS = {".csv": ",", ".tsv": "\t", ".txt": "\t"}
PARQUET_SUFFIXES = (".parquet", ".pq")
FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas")
_INVALID = 255  # ENCODE_TABLE's entry for a byte that is not DNA


class SequenceError(ValueError):
    """A sequence file, a row of it, or a labels file cannot be used (one line, names file and row)."""


@dataclass
class SequenceSet:
    """Encoded sequences of one file. `labels` is None for unlabelled input."""

    names: list[str]
    ids: np.ndarray  # (n, L) uint8 token ids, right-padded with PAD_ID
    lengths: np.ndarray  # (n,) int64 valid length of each row
    labels: np.ndarray | None  # (n,) int64 in {0, 1}
    source: str

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, rows: np.ndarray) -> "SequenceSet":
        """The rows `rows` (index array), padding trimmed to their longest sequence."""
        width = int(self.lengths[rows].max()) if len(rows) else 0
        return SequenceSet([self.names[i] for i in rows], self.ids[rows, :width], self.lengths[rows],
                           None if self.labels is None else self.labels[rows], self.source)


def file_kind(path: Path) -> str:
    """'table' or 'fasta', from the name (compressed FASTA: .fa.gz)."""
    name = path.name.lower()
    stem = name[:-3] if name.endswith(".gz") else name
    if stem.endswith(FASTA_SUFFIXES):
        return "fasta"
    if name.endswith(PARQUET_SUFFIXES) or Path(name).suffix in TABLE_SEPARATORS:
        return "table"
    raise SequenceError(f"{path}: unknown file type; expected .csv, .tsv, .parquet or FASTA (.fa/.fasta/.fna[.gz])")


def read_sequences(path: str | Path, *, labels_path: str | Path | None = None,
                   require_labels: bool = False) -> SequenceSet:
    """Read, check and encode one file of sequences (and labels, when present or required)."""
    path = Path(path)
    if not path.is_file():
        raise SequenceError(f"{path}: no such file")
    if file_kind(path) == "fasta":
        names, sequences = _read_fasta(path)
        labels = None
        if labels_path is not None:
            labels = _labels_for_records(Path(labels_path), names)
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
        labels = _check_labels(table["label"], path, row_names) if "label" in table.columns else None
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


def _labels_for_records(labels_path: Path, names: list[str]) -> np.ndarray:
    if not labels_path.is_file():
        raise SequenceError(f"{labels_path}: no such file")
    table = _read_table(labels_path) if file_kind(labels_path) == "table" else None
    if table is None:
        raise SequenceError(f"{labels_path}: a labels file must be a table (.csv, .tsv, .parquet) with name,label")
    name_column = next((c for c in ("name", "id") if c in table.columns), None)
    if name_column is None or "label" not in table.columns:
        raise SequenceError(f"{labels_path}: needs columns name,label (columns: {', '.join(table.columns)})")
    keys = table[name_column].cast(pl.Utf8).to_list()
    labels = _check_labels(table["label"], labels_path, [f"row {i + 1}" for i in range(table.height)])
    lookup = dict(zip(keys, labels.tolist()))
    missing = [name for name in names if name not in lookup]
    if missing:
        raise SequenceError(f"{labels_path}: no label for record {missing[0]!r} ({len(missing)} records unlabelled)")
    return np.array([lookup[name] for name in names], dtype=np.int64)


def _check_labels(column: pl.Series, path: Path, row_names: list[str]) -> np.ndarray:
    """(n,) int64 labels; anything but 0 or 1 (text "0"/"1", integers, booleans) names its row."""
    if column.dtype == pl.Boolean:
        column = column.cast(pl.Int64)
    text = column.cast(pl.Utf8).str.strip_chars()
    bad = (~text.is_in(["0", "1"])).fill_null(True)
    if bad.any():
        row = int(bad.arg_true()[0])
        raise SequenceError(f"{path}: {row_names[row]}: label {column[row]!r} is not 0 or 1 "
                            "(classes: 0 = non-promoter, 1 = promoter)")
    return (text == "1").to_numpy().astype(np.int64)


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
