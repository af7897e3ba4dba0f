"""Time-series tables: CSV or Parquet in, a checked (T, C) float64 array out.

A file holds one series: an optional timestamp column, value columns and an optional label column (1 marks
an anomalous step). polars reads it lazily and only the needed columns are collected.

Policies (the same for every reader, so fit and score see the same thing):
- Value columns: every numeric column but the timestamp and label, or the ones named. A text column whose
  entries are partly numbers ("mixed types") is an error naming the first bad entry; a text column with no
  numbers at all is skipped when columns are chosen automatically.
- Missing values (empty cells, null, NaN) stay NaN here: the model sees them as a MISSING character and never
  scores them; baselines fill them forward. A column with no value at all is an error.
- Timestamps must increase. `order="error"` (default) refuses a file whose timestamps go back or repeat,
  naming the row; `order="keep"` scores rows in file order (what NAB does: 8 of its files repeat or go back
  one step); `order="sort"` sorts stably by timestamp.

Glossary: T steps, C channels (value columns).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl


class SeriesError(ValueError):
    """A time-series file cannot be used as given."""


TIMESTAMP_NAMES = ("timestamp", "time", "datetime", "date")
LABEL_NAMES = ("label", "is_anomaly", "anomaly")
ORDERS = ("error", "keep", "sort")
MISSING_WORDS = ("", "NA", "NaN", "nan", "null", "NULL")  # cells read as a missing value
SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}


@dataclass
class Series:
    """One series: values (T, C) float64 with NaN where missing, column names, optional timestamps/labels."""

    name: str
    values: np.ndarray  # (T, C) float64
    columns: list[str]
    timestamps: np.ndarray | None = None  # (T,) datetime64 or numeric
    labels: np.ndarray | None = None  # (T,) int8, 1 = anomalous step

    def __len__(self) -> int:
        return self.values.shape[0]

    def head(self, n: int) -> "Series":
        """The first n steps (a training part)."""
        return self._rows(slice(0, n))

    def tail(self, start: int) -> "Series":
        return self._rows(slice(start, None))

    def _rows(self, rows: slice) -> "Series":
        return Series(self.name, self.values[rows], self.columns,
                      None if self.timestamps is None else self.timestamps[rows],
                      None if self.labels is None else self.labels[rows])


def series_kind(path: Path) -> str:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise SeriesError(f"{path}: unknown time-series format {path.suffix!r} (use .csv, .tsv or .parquet)")
    return kind


def scan_table(path: str | Path) -> pl.LazyFrame:
    """A lazy frame over a CSV/TSV/Parquet file, with clear errors for missing, empty and unreadable files."""
    path = Path(path)
    kind = series_kind(path)
    if not path.is_file():
        raise SeriesError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise SeriesError(f"{path}: empty file")
    try:
        if kind == "parquet":
            frame = pl.scan_parquet(path)
        else:
            # every column as text first: numbers are parsed below, so a stray word is reported, not guessed at
            frame = pl.scan_csv(path, separator="\t" if kind == "tsv" else ",", infer_schema=False)
        frame.collect_schema()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise SeriesError(f"{path}: cannot read as {kind}: {str(err).splitlines()[0]}") from None
    return frame


def read_series(path: str | Path, *, columns: list[str] | None = None, timestamp: str | None = "auto",
                label: str | None = "auto", order: str = "error") -> Series:
    """Read one series. timestamp/label: a column name, "auto" (a conventional name if present) or None."""
    path = Path(path)
    if order not in ORDERS:
        raise SeriesError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    frame = scan_table(path)
    names = frame.collect_schema().names()
    ts_col = _pick(names, timestamp, TIMESTAMP_NAMES, "timestamp", path)
    label_col = _pick(names, label, LABEL_NAMES, "label", path)
    if columns:
        absent = [c for c in columns if c not in names]
        if absent:
            raise SeriesError(f"{path}: no column {absent[0]!r} (columns: {', '.join(names)})")
    try:
        df = frame.collect()
    except (pl.exceptions.PolarsError, OSError) as err:
        raise SeriesError(f"{path}: cannot read: {str(err).splitlines()[0]}") from None
    if df.height == 0:
        raise SeriesError(f"{path}: no rows")
    chosen = columns or [c for c in names if c not in (ts_col, label_col)]
    values, kept = [], []
    for c in chosen:
        col = _numeric(df[c], path, required=bool(columns))
        if col is not None:
            values.append(col)
            kept.append(c)
    if not kept:
        raise SeriesError(f"{path}: no numeric value columns")
    matrix = np.stack(values, axis=1)  # (T, C)
    empty = [c for c, v in zip(kept, matrix.T) if np.isnan(v).all()]
    if empty:
        raise SeriesError(f"{path}: column {empty[0]!r} has no values (all missing)")
    stamps = _timestamps(df[ts_col], path) if ts_col else None
    labels = _labels(df[label_col], path) if label_col else None
    series = Series(path.stem, matrix, kept, stamps, labels)
    return _ordered(series, order, path)


def _pick(names: list[str], wanted: str | None, conventional: tuple[str, ...], what: str, path: Path) -> str | None:
    if wanted is None:
        return None
    if wanted != "auto":
        if wanted not in names:
            raise SeriesError(f"{path}: no {what} column {wanted!r} (columns: {', '.join(names)})")
        return wanted
    return next((n for n in names if n.lower() in conventional), None)


def _numeric(col: pl.Series, path: Path, required: bool) -> np.ndarray | None:
    """A column as float64 with NaN for missing; None for a text column with no numbers (when not required)."""
    if col.dtype.is_numeric():
        return col.cast(pl.Float64).fill_null(float("nan")).to_numpy()
    if col.dtype == pl.Boolean:
        return col.cast(pl.Float64).fill_null(float("nan")).to_numpy()
    if col.dtype != pl.String:
        if required:
            raise SeriesError(f"{path}: column {col.name!r} is {col.dtype}, not numeric")
        return None
    text = col.str.strip_chars()
    text = text.set(text.is_in(MISSING_WORDS).fill_null(True), None)
    parsed = text.cast(pl.Float64, strict=False)
    bad = parsed.is_null() & text.is_not_null()
    if bad.all() and not required and text.is_not_null().any():
        return None  # a text column: not a value column
    if bad.any():
        row = int(bad.arg_true()[0])
        raise SeriesError(f"{path}: column {col.name!r} mixes numbers and text (row {row + 1}: {text[row]!r})")
    return parsed.fill_null(float("nan")).to_numpy()


def _timestamps(col: pl.Series, path: Path) -> np.ndarray:
    if col.null_count():
        raise SeriesError(f"{path}: timestamp column {col.name!r} has {col.null_count()} empty entries")
    if col.dtype == pl.String:
        numbers = col.str.strip_chars().cast(pl.Float64, strict=False)
        if not numbers.null_count():  # a numeric time axis (row index, epoch seconds) written as text
            return numbers.to_numpy()
        try:
            parsed = col.str.to_datetime(strict=False)
        except pl.exceptions.PolarsError:
            raise SeriesError(f"{path}: timestamp column {col.name!r} is neither numbers nor dates/times "
                              f"(first entry {col[0]!r})") from None
        if parsed.null_count():
            row = int(parsed.is_null().arg_true()[0])
            raise SeriesError(f"{path}: timestamp {col[row]!r} (row {row + 1}) is not a date/time")
        col = parsed
    if not (col.dtype.is_numeric() or col.dtype.is_temporal()):
        raise SeriesError(f"{path}: timestamp column {col.name!r} is {col.dtype}, not a time")
    return col.to_numpy()


def parse_timestamps(texts: list[str], name: str) -> np.ndarray:
    """Timestamps given as text (a stream's chunk) parsed as the file reader parses a timestamp column."""
    return _timestamps(pl.Series("timestamp", texts, dtype=pl.String), Path(name))


def _labels(col: pl.Series, path: Path) -> np.ndarray:
    values = _numeric(col, path, required=True)
    if np.isnan(values).any() or not np.isin(values, (0, 1)).all():
        raise SeriesError(f"{path}: label column {col.name!r} must hold only 0 and 1")
    return values.astype(np.int8)


def _ordered(series: Series, order: str, path: Path) -> Series:
    if series.timestamps is None or order == "keep" or len(series) < 2:
        return series
    keys = series.timestamps.astype("int64") if series.timestamps.dtype.kind == "M" else series.timestamps
    step = np.diff(keys)
    if order == "sort":
        return series._rows(np.argsort(keys, kind="stable"))
    if (step <= 0).any():
        row = int(np.flatnonzero(step <= 0)[0]) + 1
        kind = "repeats" if step[row - 1] == 0 else "goes back"
        raise SeriesError(f"{path}: timestamp {series.timestamps[row]} (row {row + 1}) {kind}; "
                          "sort the file, or choose --order sort or --order keep")
    return series


def check_same_columns(train: Series, test: Series) -> None:
    """A model fitted on some columns can only score a series with the same columns."""
    if train.columns != test.columns:
        missing = [c for c in train.columns if c not in test.columns]
        extra = [c for c in test.columns if c not in train.columns]
        detail = (f"missing {', '.join(missing)}" if missing else "") + \
                 ("; " if missing and extra else "") + (f"unexpected {', '.join(extra)}" if extra else "")
        raise SeriesError(f"{test.name}: columns differ from the training data ({detail or 'other order'})")


# ---- the benchmark layouts in ../shared/data -----------------------------------------------------------------

def read_train_test(folder: str | Path, entity: str) -> tuple[Series, Series]:
    """SMD/ASD layout: `{entity}_train.parquet` (normal data) and `{entity}_test.parquet` with `label`."""
    folder = Path(folder)
    train = read_series(folder / f"{entity}_train.parquet", timestamp="t", label=None)
    test = read_series(folder / f"{entity}_test.parquet", timestamp="t", label="label")
    check_same_columns(train, test)
    return train, test


def train_test_entities(folder: str | Path) -> list[str]:
    names = sorted(p.name[: -len("_train.parquet")] for p in Path(folder).glob("*_train.parquet"))
    return sorted(names, key=lambda n: [int(t) if t.isdigit() else t for t in n.replace("-", " ").split()])


def read_nab(root: str | Path) -> list[tuple[str, Series, list[tuple[np.datetime64, np.datetime64]]]]:
    """NAB layout: `data/<category>/<file>.csv` (timestamp,value) and `labels/combined_windows.json`.

    Returns (name, series, windows) per file, rows in file order (NAB scores rows as they come); labels are
    1 inside a window.
    """
    root = Path(root)
    try:
        windows = json.loads((root / "labels" / "combined_windows.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SeriesError(f"{root}: not a NAB folder (labels/combined_windows.json: {err})") from None
    corpus = []
    for name in sorted(windows):
        series = read_series(root / "data" / name, timestamp="timestamp", label=None, order="keep")
        spans = [(np.datetime64(a.replace(" ", "T")), np.datetime64(b.replace(" ", "T"))) for a, b in windows[name]]
        labels = np.zeros(len(series), np.int8)
        stamps = series.timestamps.astype("datetime64[us]")
        for a, b in spans:
            labels[(stamps >= a) & (stamps <= b)] = 1
        series.name, series.labels = name, labels
        corpus.append((name, series, spans))
    return corpus


# ---- streams: rows as they arrive --------------------------------------------------------------------------

def stream_rows(fd: int, columns: list[str], timestamp: str | None, *, name: str = "stream", follow: bool = False,
                poll_seconds: float = 0.5, idle_seconds: float = 0.0, block: int = 1 << 16):
    """Read a CSV/TSV stream (a pipe, or a file that may still grow) and yield (timestamps, values) chunks.

    fd: an open file descriptor. The first line is the header; `columns` are the value columns (in the
    fitted model's order) and `timestamp` an optional column passed through as text. Each chunk holds the
    complete lines available at that moment, so a pipe is scored as soon as rows arrive, and memory does not
    grow with the stream. At end of file: stop, or with `follow` wait for more (polling every poll_seconds),
    stopping after idle_seconds without new data (0: never).
    """
    import os

    pending, header, idle = b"", None, 0.0
    while True:
        data = os.read(fd, block)
        if not data:
            if not follow or (idle_seconds and idle >= idle_seconds):
                break
            time.sleep(poll_seconds)
            idle += poll_seconds
            continue
        idle = 0.0
        lines = (pending + data).split(b"\n")
        pending = lines.pop()
        lines = [ln.rstrip(b"\r").decode("utf-8", "replace") for ln in lines if ln.strip()]
        if header is None and lines:
            first = lines.pop(0)
            sep = "\t" if "\t" in first else ","
            header = [h.strip() for h in first.split(sep)]
            missing = [c for c in columns if c not in header]
            if missing:
                raise SeriesError(f"{name}: no column {missing[0]!r} in the header (columns: {', '.join(header)})")
            value_at = [header.index(c) for c in columns]
            time_at = next((i for i, h in enumerate(header)
                            if h == timestamp or (timestamp == "auto" and h.lower() in TIMESTAMP_NAMES)), None)
        if lines:
            yield _parse_lines(lines, sep, value_at, time_at, len(header), name)
    if pending.strip():
        if header is None:
            raise SeriesError(f"{name}: no header line")
        yield _parse_lines([pending.rstrip(b"\r").decode("utf-8", "replace")], sep, value_at, time_at,
                           len(header), name)
    elif header is None:
        raise SeriesError(f"{name}: empty stream (no header line)")


def _parse_lines(lines: list[str], sep: str, value_at: list[int], time_at: int | None, width: int, name: str):
    values = np.empty((len(lines), len(value_at)))
    stamps = []
    for r, line in enumerate(lines):
        cells = line.split(sep)
        if len(cells) != width:
            raise SeriesError(f"{name}: line {line[:60]!r} has {len(cells)} fields, the header {width}")
        for c, at in enumerate(value_at):
            cell = cells[at].strip()
            if cell in MISSING_WORDS:
                values[r, c] = np.nan
                continue
            try:
                values[r, c] = float(cell)
            except ValueError:
                raise SeriesError(f"{name}: {cell!r} is not a number (line {line[:60]!r})") from None
        stamps.append(cells[time_at].strip() if time_at is not None else "")
    return stamps, values
