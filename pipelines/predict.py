"""Batch prediction over files: any trained run, any pile of FASTA / CSV / TSV / Parquet files, one Parquet each.

    mambaseq predict --model RUN INPUTS... --out DIR [--force] [--per-position]

Why a command of its own: users score thousands of files and whole genomes, on one GPU or several, and need to
stop and restart without redoing or corrupting work, and to learn which file was bad instead of losing the run.

Inputs: files, folders (searched recursively for the suffixes the task reads; hidden files and anything under
DIR are left out) and globs, deduplicated and sorted by absolute path. A file named explicitly is taken
whatever its suffix (an unknown one fails that file). The run's task picks what is predicted: `TASKS` holds one
entry per task (the files it reads from folders, the check that refuses a run it cannot use, the function that
predicts one file), so a task is added by adding an entry.

  lm        per record: `log_likelihood` in nats (the sum of log p(x_t | x_<t) over the scored bases),
            `bits_per_base` (-log_likelihood / scored_bases / ln 2, NaN when nothing is scored) and
            `scored_bases`. Scored: every base but the first (it has no context) that is A, C, G or T; N and the
            IUPAC codes (read as N) are inputs, never scored, as in pretraining; padding is never scored.
            --per-position adds `logprob`: one float32 per base, NaN where not scored (kept in memory: 4 bytes
            per base of the record).
  promoter  per record: `prob` = P(promoter), the mean over both strands when the run was trained with RC
            averaging, and `predicted` = prob >= the run's threshold (picked on its dev set); a run of K > 2
            classes gives `prob_<class>` for each class and `predicted` = the argmax. A record longer
            than the run's training length is refused (its file fails, naming it): the classifier never saw
            longer sequences, and `mambaseq scan` is the tool that slides it along a genome.
  anomaly   per step of each CSV/TSV/Parquet series: the columns `mambaseq anomaly score` writes (row,
            timestamp, values, nll, rps, score, flagged, out_of_range, label), the series read with the fitted run's
            settings and scored `--max-tokens` steps at a time with the recurrent state carried.

Records: FASTA records (named by the header's first word; read by streaming, never the whole file) or table
rows (a `sequence` column; `name` or `id` names the rows, else the 1-based row number). Every output row
carries `record` (0-based position in the file), `name` and `length`, in file order. What fails a file (the
manifest says failed with the reason, naming the record; the other files go on; the exit status is 1): an
empty record or sequence, a character outside A C G T N and the IUPAC codes R Y K M S W B D H V (either case;
e.g. U, '-', '*', a space), no `sequence` column, an empty table, an unknown suffix, a file that is unreadable,
truncated or not FASTA. Duplicate names are kept as they are (the `record` column tells them apart).

Throughput: records of at most --max-tokens bases (default 131,072 on a GPU, 16,384 on the CPU: peak memory
follows it) wait in a buffer (up to 16 x max-tokens bases or
64 x batch-size records), sorted by length there, and go through the model in batches of at most --batch-size
records and max-tokens padded tokens, so little of a batch is padding. bf16 autocast on a GPU; host batches are
pinned and copied asynchronously. Memory: an LM record longer than max-tokens is never held whole: the FASTA
reader hands its bases out in 1 MiB pieces, which go through the model in max-tokens chunks with the recurrent
state (conv and SSM state) carried from chunk to chunk, so the result equals one pass over the whole record.

Output DIR: per input `<input name>-<12 hex digits of sha256(absolute input path)>.parquet`, so inputs with the
same name in different folders never collide, written to a temporary file and renamed; `manifest.json`,
rewritten atomically after each file (at most every 20x the time one rewrite takes, so huge manifests do not
dominate): the run's settings and, per input, its size, sha256, status (done/failed), reason, output, records,
bases, seconds, rank. A rerun skips each input whose entry is done with the same sha256 and whose output is
complete; a changed input is redone; --force redoes all. An output finished but not yet in the manifest when
the process died is simply redone under the same name (atomic replace): a kill -9 never leaves a duplicate or
half a file. A DIR holding predictions of another model or settings is refused unless --force.

Ranks: under `torchrun --nproc-per-node K`, rank r takes the inputs at positions r, r+K, ... of the sorted list,
writes their outputs and its own `manifest.part-<r>.json`; rank 0 merges the parts into manifest.json at the
start (the leftovers of a killed run) and at the end.

Glossary: B batch of records, L padded length (or chunk length), V vocabulary, T max-tokens.
"""
from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from mambaseq.checkpoint import WEIGHTS, load_run
from mambaseq.config import RunConfig
from mambaseq.io.atomic import open_atomic, write_bytes_atomic
from mambaseq.io.fasta import stream_fasta
from mambaseq.io.sequences import FASTA_SUFFIXES, PARQUET_SUFFIXES, TABLE_SEPARATORS
from mambaseq.model import MambaModel
from mambaseq.pipelines.training import autocast_for, join_process_group
from mambaseq.tokenizers import ENCODE_TABLE, N_ID, PAD_ID, TokenizerError, encode

LN2 = math.log(2.0)
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "mambaseq-predict/1"
# padded tokens per forward pass: peak activation memory grows with it (about 45 KB per token measured for
# d_model 64, 2 layers on the CPU), never with a record's length
DEFAULT_MAX_TOKENS = {"cuda": 1 << 17, "cpu": 1 << 14}
# files a folder contributes for the DNA tasks (.txt tables are taken when named, not picked up from folders)
DNA_FOLDER_SUFFIXES = (tuple(FASTA_SUFFIXES) + tuple(s + z for s in FASTA_SUFFIXES for z in (".gz", ".bgz"))
                       + (".csv", ".tsv") + tuple(PARQUET_SUFFIXES))
_INVALID = 255  # ENCODE_TABLE's entry for a byte that is not DNA
_EXPECTED = "expected A, C, G, T, N or an IUPAC code (R Y K M S W B D H V), in either case"


class PredictError(ValueError):
    """The run, the inputs, the output folder or one input file cannot be used for prediction."""


# ---- records ----------------------------------------------------------------------------------------------
@dataclass
class Record:
    """One sequence of an input file; `pieces` yields its bases (bytes or str) front to back."""

    index: int  # 0-based position in its file
    name: str
    label: str  # how messages name it: "record 'chr2'" or "row 5"
    pieces: Iterator[bytes | str]


def input_kind(path: Path) -> str | None:
    """'fasta' or 'table' from the file name (compressed FASTA: .fa.gz or .fa.bgz), None for anything else."""
    name = path.name.lower()
    stem = name.removesuffix(".gz").removesuffix(".bgz")
    if stem.endswith(tuple(FASTA_SUFFIXES)):
        return "fasta"
    if name.endswith(tuple(PARQUET_SUFFIXES)) or Path(name).suffix in TABLE_SEPARATORS:
        return "table"
    return None


def read_records(path: Path) -> Iterator[Record]:
    """The records of one DNA input file, streamed for FASTA."""
    kind = input_kind(path)
    if kind is None:
        raise PredictError(f"{path}: unknown file type; expected FASTA (.fa/.fasta/.fna/.fas, optionally .gz), "
                           ".csv, .tsv, .txt (tab-separated) or .parquet")
    if kind == "fasta":
        for record in stream_fasta(path):
            yield Record(record.number - 1, record.name, f"record {record.name!r}", record.pieces())
        return
    yield from _table_records(path)


def _table_records(path: Path) -> Iterator[Record]:
    """Rows of a CSV/TSV/Parquet table with a `sequence` column (only the needed columns are read)."""
    try:
        if path.name.lower().endswith(tuple(PARQUET_SUFFIXES)):
            lazy = pl.scan_parquet(path)
        else:  # every column as text: a name column of digits stays as written
            lazy = pl.scan_csv(path, separator=TABLE_SEPARATORS[path.suffix.lower()], infer_schema=False)
        columns = lazy.collect_schema().names()
        if "sequence" not in columns:
            raise PredictError(f"{path}: no column 'sequence' (columns: {', '.join(columns) or 'none'})")
        name_column = next((c for c in ("name", "id") if c in columns), None)
        frame = lazy.select(["sequence"] + ([name_column] if name_column else [])).collect()
    except (pl.exceptions.PolarsError, OSError) as error:
        raise PredictError(f"{path}: cannot read it as a table ({str(error).splitlines()[0]})") from None
    if frame.height == 0:
        raise PredictError(f"{path}: holds no sequences")
    sequences = frame["sequence"].cast(pl.Utf8).to_list()
    names = (frame[name_column].cast(pl.Utf8).to_list() if name_column
             else [str(i + 1) for i in range(frame.height)])
    for i, (name, sequence) in enumerate(zip(names, sequences)):
        yield Record(i, "" if name is None else name, f"row {i + 1}", iter([sequence] if sequence else []))


def _encode(piece: bytes | str, record: Record, offset: int) -> np.ndarray:
    """Token ids of one piece of a record; a bad character names the record and its position in the record."""
    try:
        return encode(piece)
    except TokenizerError:
        pass
    if isinstance(piece, str):  # code points; anything past 255 is not DNA either
        codes = np.frombuffer(piece.encode("utf-32-le"), dtype=np.uint32)
        bad = (codes > 255) | (ENCODE_TABLE[np.minimum(codes, 255)] == _INVALID)
        position = int(np.flatnonzero(bad)[0])
        shown = repr(piece[position])
    else:
        position = int(np.flatnonzero(ENCODE_TABLE[np.frombuffer(piece, dtype=np.uint8)] == _INVALID)[0])
        shown = repr(piece[position:position + 1])[1:]  # b'-' -> '-', b'\xe9' -> '\xe9'
    raise PredictError(f"{record.label}: invalid character {shown} at position {offset + position}; {_EXPECTED}")


def _encoded(record: Record) -> Iterator[np.ndarray]:
    """The record's pieces as ids, front to back."""
    offset = 0
    for piece in record.pieces:
        yield _encode(piece, record, offset)
        offset += len(piece)


def _head(pieces: Iterator[np.ndarray], limit: int) -> tuple[list[np.ndarray], int, bool]:
    """Read encoded pieces until more than `limit` ids or the end: (pieces read, ids read, record ended)."""
    parts, count = [], 0
    for part in pieces:
        parts.append(part)
        count += len(part)
        if count > limit:
            return parts, count, False
    return parts, count, True


def _empty(record: Record) -> PredictError:
    return PredictError(f"{record.label}: empty sequence (no bases)")


# ---- batching -----------------------------------------------------------------------------------------------
@dataclass
class Item:
    index: int
    name: str
    ids: np.ndarray  # (length,) uint8


def length_batches(items: Iterable[Item], batch_size: int, max_tokens: int) -> Iterator[list[Item]]:
    """Batches of items of similar length: a bounded buffer is sorted by length and cut into batches of at most
    `batch_size` items and `max_tokens` padded tokens (a single longer item makes a batch of its own)."""
    buffer, buffered = [], 0
    for item in items:
        buffer.append(item)
        buffered += len(item.ids)
        if buffered >= 16 * max_tokens or len(buffer) >= 64 * batch_size:
            yield from _cut(buffer, batch_size, max_tokens)
            buffer, buffered = [], 0
    yield from _cut(buffer, batch_size, max_tokens)


def _cut(buffer: list[Item], batch_size: int, max_tokens: int) -> Iterator[list[Item]]:
    buffer.sort(key=lambda item: len(item.ids))
    batch: list[Item] = []
    for item in buffer:  # ascending: the item being added is the batch's longest
        if batch and (len(batch) == batch_size or (len(batch) + 1) * len(item.ids) > max_tokens):
            yield batch
            batch = []
        batch.append(item)
    if batch:
        yield batch


def _pad(batch: list[Item]) -> tuple[np.ndarray, np.ndarray]:
    """(ids (B, L) uint8 right-padded with PAD_ID, lengths (B,) int64)."""
    lengths = np.array([len(item.ids) for item in batch], dtype=np.int64)
    ids = np.full((len(batch), int(lengths.max())), PAD_ID, dtype=np.uint8)
    for row, item in enumerate(batch):
        ids[row, :len(item.ids)] = item.ids
    return ids, lengths


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Host array -> device tensor; on CUDA through pinned memory with an asynchronous copy."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _rechunk(parts: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The concatenation of `parts`, cut into arrays of `size` (the last one shorter)."""
    pending, count = [], 0
    for part in parts:
        while len(part):
            take = part[:size - count]
            pending.append(take)
            count += len(take)
            part = part[len(take):]
            if count == size:
                yield np.concatenate(pending)
                pending, count = [], 0
    if count:
        yield np.concatenate(pending)


# ---- LM scoring ---------------------------------------------------------------------------------------------
@dataclass
class Score:
    """Next-base log-likelihood of one record."""

    log_likelihood: float  # nats, summed over scored bases
    scored: int
    logprob: np.ndarray | None = None  # (length,) float32, NaN where not scored


def _target_logprobs(logp: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """logp (..., L, V) log-probabilities predicting targets (..., L) -> (log p of each target, scored mask)."""
    picked = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (..., L)
    return picked, (targets != N_ID) & (targets != PAD_ID)


@torch.no_grad()
def lm_scores(model: MambaModel, tokens: torch.Tensor, lengths: np.ndarray, per_position: bool) -> list[Score]:
    """One pass over a right-padded batch: tokens (B, L) int64 on the model's device -> a Score per row.

    The model is causal, so padding after a record does not change its log-probabilities."""
    with autocast_for(tokens.device):
        logits = model(tokens)  # (B, L, V)
    logp = logits.float().log_softmax(-1)
    picked, scored = _target_logprobs(logp[:, :-1], tokens[:, 1:])  # (B, L-1): position t+1 predicted at t
    totals = torch.where(scored, picked.double(), 0.0).sum(1).cpu().numpy()  # (B,)
    counts = scored.sum(1).cpu().numpy()
    positions = None
    if per_position:
        positions = torch.nn.functional.pad(torch.where(scored, picked, torch.nan), (1, 0), value=torch.nan)
        positions = positions.cpu().numpy()  # (B, L)
    return [Score(float(totals[row]), int(counts[row]),
                  None if positions is None else positions[row, :lengths[row]].copy())
            for row in range(len(lengths))]


@torch.no_grad()
def lm_stream_score(model: MambaModel, chunks: Iterable[np.ndarray], device: torch.device, per_position: bool,
                    advance: Callable[[int], None] = lambda n: None) -> Score:
    """Score one record given as consecutive id chunks, carrying the recurrent state from chunk to chunk.

    Equals one pass over the whole record (up to float rounding): chunk k's first base is predicted by the
    last log-probabilities of chunk k-1. Memory: one chunk of activations, whatever the record's length.
    """
    cache = model.allocate_cache(1, device)
    carry = None  # (1, V) log-probabilities of the base after the previous chunk
    total, count, positions = 0.0, 0, []
    for ids in chunks:
        tokens = to_device(ids[None], device).long()  # (1, L)
        with autocast_for(device):
            logits = model(tokens, cache=cache)  # (1, L, V)
        logp = logits[0].float().log_softmax(-1)  # (L, V)
        if carry is None:  # the record's first base has no context
            predictors, targets = logp[:-1], tokens[0, 1:]
        else:
            predictors, targets = torch.cat([carry, logp[:-1]]), tokens[0]
        picked, scored = _target_logprobs(predictors, targets)
        total += torch.where(scored, picked.double(), 0.0).sum().item()
        count += int(scored.sum())
        if per_position:
            values = torch.where(scored, picked, torch.nan).cpu().numpy()
            positions.append(values if carry is not None else np.concatenate([[np.nan], values]).astype(np.float32))
        carry = logp[-1:]
        advance(len(ids))
    return Score(total, count, np.concatenate(positions) if per_position else None)


# ---- tasks ---------------------------------------------------------------------------------------------------
@dataclass
class Context:
    """What a task's per-file function gets: the loaded run and the settings of this predict call."""

    model: MambaModel
    run: RunConfig
    device: torch.device
    batch_size: int
    max_tokens: int
    per_position: bool
    advance: Callable[[int, int], None]  # (records finished, bases) for the progress bar and the manifest


def _check_dna(model_path: Path, cfg: RunConfig) -> None:
    if cfg.extra.get("tokenizer") != "dna" or cfg.model.n_channels != 1:
        raise PredictError(f"{model_path}: a {cfg.task!r} run that does not read DNA; predict expected a DNA run")


def _check_lm(model_path: Path, cfg: RunConfig) -> None:
    _check_dna(model_path, cfg)
    if cfg.model.bidirectional:
        raise PredictError(f"{model_path}: a bidirectional LM sees both sides of every base, so it has no "
                           "next-base likelihood to score")


def _check_promoter(model_path: Path, cfg: RunConfig) -> None:
    _check_dna(model_path, cfg)
    if cfg.model.n_classes < 2 or (cfg.model.n_classes == 2 and cfg.extra.get("threshold") is None):
        raise PredictError(f"{model_path}: a promoter run needs a classification head (and, with two classes, a "
                           "threshold in config.json), as `mambaseq finetune promoter` writes")


def _lm_file(ctx: Context, path: Path) -> pl.DataFrame:
    """Next-base log-likelihood of every record of one DNA file."""
    rows: dict[int, tuple[str, int, Score]] = {}

    def short_records() -> Iterator[Item]:
        for record in read_records(path):
            pieces = _encoded(record)
            parts, count, ended = _head(pieces, ctx.max_tokens)
            if count == 0:
                raise _empty(record)
            if ended:
                yield Item(record.index, record.name, np.concatenate(parts))
                continue
            seen = [0]  # a long record streams through the model now, chunk by chunk

            def advance(n: int) -> None:
                seen[0] += n
                ctx.advance(0, n)

            score = lm_stream_score(ctx.model, _rechunk(_chain(parts, pieces), ctx.max_tokens), ctx.device,
                                    ctx.per_position, advance)
            rows[record.index] = (record.name, seen[0], score)
            ctx.advance(1, 0)

    for batch in length_batches(short_records(), ctx.batch_size, ctx.max_tokens):
        ids, lengths = _pad(batch)
        scores = lm_scores(ctx.model, to_device(ids, ctx.device).long(), lengths, ctx.per_position)
        for item, score in zip(batch, scores):
            rows[item.index] = (item.name, len(item.ids), score)
        ctx.advance(len(batch), int(lengths.sum()))
    order = sorted(rows)
    scores = [rows[i][2] for i in order]
    lengths = [rows[i][1] for i in order]
    columns = {"record": pl.Series(order, dtype=pl.Int64),
               "name": pl.Series([rows[i][0] for i in order], dtype=pl.Utf8),
               "length": pl.Series(lengths, dtype=pl.Int64),
               "scored_bases": pl.Series([s.scored for s in scores], dtype=pl.Int64),
               "log_likelihood": pl.Series([s.log_likelihood for s in scores], dtype=pl.Float64),
               "bits_per_base": pl.Series([-s.log_likelihood / s.scored / LN2 if s.scored else math.nan
                                           for s in scores], dtype=pl.Float64)}
    if ctx.per_position:
        columns["logprob"] = pl.Series([s.logprob for s in scores], dtype=pl.List(pl.Float32))
    return pl.DataFrame(columns)


def _chain(first: list[np.ndarray], rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    yield from first
    yield from rest


def _promoter_file(ctx: Context, path: Path) -> pl.DataFrame:
    """Class probabilities and the call for every record of one DNA file, as finetune's predictions.parquet:
    two classes: `prob` = P(class 1) and `predicted` = prob >= the run's threshold; K classes: `prob_<class>`
    for each and `predicted` = the argmax."""
    from mambaseq.pipelines.promoter import predict_probs  # here: it imports scikit-learn, which lm runs never need

    limit = ctx.run.train.seq_len
    rc_average = bool(ctx.run.extra.get("rc_average", False))
    n_classes = ctx.run.model.n_classes
    classes = ctx.run.extra.get("classes") or [str(k) for k in range(n_classes)]

    def records() -> Iterator[Item]:
        for record in read_records(path):
            parts, count, ended = _head(_encoded(record), limit)
            if not ended:
                raise PredictError(f"{record.label}: longer than {limit:,} bases, the longest sequence this promoter "
                                   "run was trained on; predict refuses it (`mambaseq scan` slides the classifier "
                                   "along long sequences)")
            if count == 0:
                raise _empty(record)
            yield Item(record.index, record.name, np.concatenate(parts))

    rows: dict[int, tuple[str, int, np.ndarray]] = {}
    for batch in length_batches(records(), ctx.batch_size, ctx.max_tokens):
        ids, lengths = _pad(batch)
        # predict_probs takes tensors already on the device as well as arrays: the copy stays asynchronous
        probs = predict_probs(ctx.model, to_device(ids, ctx.device), to_device(lengths, ctx.device),
                              rc_average=rc_average, batch_size=len(batch), device=ctx.device)  # (B, K)
        for item, prob in zip(batch, probs):
            rows[item.index] = (item.name, len(item.ids), prob)
        ctx.advance(len(batch), int(lengths.sum()))
    order = sorted(rows)
    probs = np.stack([rows[i][2] for i in order]) if order else np.zeros((0, n_classes))  # (n, K)
    columns = {"record": pl.Series(order, dtype=pl.Int64),
               "name": pl.Series([rows[i][0] for i in order], dtype=pl.Utf8),
               "length": pl.Series([rows[i][1] for i in order], dtype=pl.Int64)}
    if n_classes == 2:
        threshold = float(ctx.run.extra["threshold"])
        columns |= {"prob": probs[:, 1], "predicted": (probs[:, 1] >= threshold).astype(np.int64)}
    else:
        columns |= {f"prob_{name}": probs[:, k] for k, name in enumerate(classes)}
        columns["predicted"] = probs.argmax(1).astype(np.int64)
    return pl.DataFrame(columns)


@dataclass(frozen=True)
class Task:
    """How predict serves one kind of run."""

    folder_suffixes: tuple[str, ...]  # the files a folder input contributes
    check: Callable[[Path, RunConfig], None]  # refuses (PredictError) a run of this task it cannot use
    predict_file: Callable[[Context, Path], pl.DataFrame]  # one input file -> its output rows
    per_position: bool = False  # whether --per-position means something for this task


def _check_anomaly(model_path: Path, cfg: RunConfig) -> None:
    from mambaseq.pipelines.anomaly import AnomalyError, anomaly_from_run

    try:
        with torch.device("meta"):  # only the settings are checked here: no weights are needed
            anomaly_from_run(model_path, MambaModel(cfg.model), cfg, torch.device("cpu"))
    except AnomalyError as error:
        raise PredictError(str(error)) from None


def _anomaly_file(ctx: Context, path: Path) -> pl.DataFrame:
    """Per-step anomaly scores of one series file, as `mambaseq anomaly score` writes them (no plot, no events)."""
    from mambaseq.pipelines.anomaly import anomaly_from_run, read_for, score_series

    anomaly = anomaly_from_run(path, ctx.model, ctx.run, ctx.device)
    series = read_for(anomaly.settings, path, anomaly.settings.columns)
    frame = score_series(anomaly, series, chunk=ctx.max_tokens)
    ctx.advance(1, frame.height)
    return frame


TASKS: dict[str, Task] = {
    "lm": Task(DNA_FOLDER_SUFFIXES, _check_lm, _lm_file, per_position=True),
    "promoter": Task(DNA_FOLDER_SUFFIXES, _check_promoter, _promoter_file),
    "anomaly": Task((".csv", ".tsv", ".parquet", ".pq"), _check_anomaly, _anomaly_file),
}


def task_for(model_path: Path, cfg: RunConfig) -> Task:
    task = TASKS.get(cfg.task)
    if task is None:
        raise PredictError(f"{model_path}: is a {cfg.task!r} run; predict does not support that task yet "
                           f"(it predicts with {', '.join(sorted(TASKS))} runs)")
    task.check(model_path, cfg)
    return task


# ---- inputs and outputs ---------------------------------------------------------------------------------------
def collect_inputs(specs: Iterable[str | Path], suffixes: tuple[str, ...], out: Path) -> list[Path]:
    """Absolute input files from files, folders (recursive, by suffix) and globs; sorted, without duplicates,
    without anything under `out`."""
    out = out.resolve()
    found: dict[str, Path] = {}

    def add(path: Path) -> None:
        path = path.resolve()
        if path != out and out not in path.parents:
            found[str(path)] = path

    def add_folder(folder: Path) -> int:
        hits = [f for f in folder.rglob("*") if f.name.lower().endswith(suffixes) and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(folder).parts)]
        for hit in hits:
            add(hit)
        return len(hits)

    for spec in map(str, specs):
        path = Path(spec)
        if path.is_dir():
            if not add_folder(path):
                raise PredictError(f"{spec}: folder holds no input file ({' '.join(suffixes)})")
        elif path.exists():
            add(path)
        elif glob.has_magic(spec):
            matches = sorted(glob.glob(spec, recursive=True))
            if not matches:
                raise PredictError(f"{spec}: no file matches this pattern")
            for match in map(Path, matches):
                add_folder(match) if match.is_dir() else add(match)
        else:
            raise PredictError(f"{spec}: no such file or folder")
    if not found:
        raise PredictError(f"no input file left once {out} (the output folder) is left out")
    return [found[key] for key in sorted(found)]


def output_name(path: Path) -> str:
    """The output file of an input: its name, made safe, plus 12 hex digits of its absolute path's sha256."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", path.name)
    return f"{safe}-{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}.parquet"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _parquet_complete(path: Path) -> bool:
    """A whole Parquet file starts and ends with the magic bytes PAR1."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
            handle.seek(-4, os.SEEK_END)
            return head == b"PAR1" and handle.read(4) == b"PAR1"
    except OSError:
        return False


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    with open_atomic(path, "wb") as handle:
        frame.write_parquet(handle)


# ---- manifest ---------------------------------------------------------------------------------------------------
_COMPARED = ("task", "weights_sha256", "per_position")  # settings that change the numbers of an output


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PredictError(f"{path}: unreadable ({error}); remove it or pass --force") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(data.get("files"), dict):
        raise PredictError(f"{path}: not a mambaseq predict manifest; remove it or choose another --out")
    return data


def _same_settings(a: dict, b: dict) -> bool:
    return all(a.get(key) == b.get(key) for key in _COMPARED)


def _part_path(out: Path, rank: int) -> Path:
    return out / f"manifest.part-{rank}.json"


def _prepare_output(out: Path, settings: dict, force: bool) -> dict:
    """Rank 0, before any work: check the settings of what DIR holds, merge leftover manifest parts, remove the
    temporary files of a killed run; write and return the manifest."""
    manifest = _read_json_or_none(out / MANIFEST, lenient=force)
    files: dict = {}
    if manifest is not None:
        if _same_settings(manifest["settings"], settings):
            files = manifest["files"]
        elif not force:
            differ = [key for key in _COMPARED if manifest["settings"].get(key) != settings.get(key)]
            raise PredictError(f"{out}: holds predictions of another run or settings (different "
                               f"{', '.join(differ)}; made with {manifest['settings'].get('model')}); pass --force "
                               "to redo every input, or choose another --out")
    for part in sorted(out.glob("manifest.part-*.json")):
        data = _read_json_or_none(part, True)
        if data is not None and _same_settings(data.get("settings", {}), settings):
            files.update(data["files"])
        part.unlink()
    for temporary in out.glob(".*.tmp"):  # open_atomic's files: a killed run cannot remove its own
        temporary.unlink(missing_ok=True)
    manifest = {"format": MANIFEST_FORMAT, "settings": settings, "files": files}
    _write_manifest(out / MANIFEST, manifest)
    return manifest


def _read_json_or_none(path: Path, lenient: bool) -> dict | None:
    """The manifest at `path`; an unreadable one is None when `lenient` (--force, or a leftover part)."""
    try:
        return _read_json(path)
    except PredictError:
        if lenient:
            return None
        raise


def _write_manifest(path: Path, manifest: dict) -> None:
    write_bytes_atomic(path, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())


class _ManifestWriter:
    """Rewrites a manifest atomically after each update, but at most every 20x the time one rewrite took, so
    thousands of files do not spend their time rewriting it (an entry lost to a kill only means a redo)."""

    def __init__(self, path: Path, manifest: dict):
        self.path, self.manifest = path, manifest
        self.last, self.cost, self.dirty = 0.0, 0.0, False

    def update(self, key: str, entry: dict) -> None:
        self.manifest["files"][key] = entry
        self.dirty = True
        if time.monotonic() - self.last >= 20 * self.cost:
            self.flush()

    def flush(self) -> None:
        if not self.dirty:
            return
        started = time.monotonic()
        _write_manifest(self.path, self.manifest)
        self.last = time.monotonic()
        self.cost, self.dirty = self.last - started, False


# ---- the pipeline ---------------------------------------------------------------------------------------------
def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=Console(stderr=True),
                    disable=not enabled, transient=False)


def _one_line(error: BaseException, path: Path) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    text = text.removeprefix(f"{path}: ")
    return text if isinstance(error, (ValueError, OSError)) else f"{type(error).__name__}: {text}"


def _join_ranks(device: str) -> tuple[int, int, torch.device, bool]:
    """(rank, world size, this rank's device, whether this call joined torchrun's process group)."""
    dev, joined = join_process_group(device)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), dev, joined
    return 0, 1, dev, joined


def predict(model_path: str | Path, inputs: Iterable[str | Path], out: str | Path, *, force: bool = False,
            per_position: bool = False, batch_size: int = 32, max_tokens: int | None = None,
            device: str = "auto", show_progress: bool = True) -> dict:
    """Predict every input file with the run `model_path` into the folder `out`; return a summary.

    Usage errors (the run, the inputs, the settings, the output folder) raise PredictError (or the
    CheckpointError of a bad run) before any file is touched; a bad input file is recorded as failed in the
    manifest and reported on stderr, and the others go on.
    """
    model_path, out = Path(model_path), Path(out)
    if batch_size < 1:
        raise PredictError(f"--batch-size must be >= 1 (got {batch_size})")
    if max_tokens is not None and max_tokens < 2:
        raise PredictError(f"--max-tokens must be >= 2 (got {max_tokens})")
    rank, world, dev, joined = _join_ranks(device)
    max_tokens = max_tokens or DEFAULT_MAX_TOKENS.get(dev.type, DEFAULT_MAX_TOKENS["cpu"])
    model, cfg = load_run(model_path, dev)
    model.eval()
    task = task_for(model_path, cfg)
    if per_position and not task.per_position:
        raise PredictError(f"--per-position: {cfg.task} runs give one value per record; it is for lm runs")
    files = collect_inputs(inputs, task.folder_suffixes, out)
    if out.exists() and not out.is_dir():
        raise PredictError(f"{out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PredictError(f"{out}: cannot create the output folder ({error.strerror})") from None
    settings = {"task": cfg.task, "model": str(model_path.resolve()),
                "weights_sha256": sha256_file(model_path / WEIGHTS), "per_position": per_position}

    problem = None
    if rank == 0:
        try:
            manifest = _prepare_output(out, settings, force)
        except (PredictError, OSError) as error:
            problem = " ".join(str(error).split())
    if world > 1:  # every rank learns rank 0's verdict, then reads the merged manifest
        verdict = [problem]
        dist.broadcast_object_list(verdict, src=0)
        problem = verdict[0]
    if problem is not None:
        raise PredictError(problem)
    if rank != 0:
        manifest = _read_json(out / MANIFEST)
    previous = dict(manifest["files"])
    writer = _ManifestWriter(out / MANIFEST, manifest) if world == 1 else _ManifestWriter(
        _part_path(out, rank), {"format": MANIFEST_FORMAT, "settings": settings, "files": {}})

    mine = files[rank::world]
    counts = {"done": 0, "skipped": 0, "failed": 0, "records": 0, "bases": 0}
    started = time.monotonic()
    with _progress(show_progress and rank == 0) as progress:
        files_bar = progress.add_task("files", total=len(mine), status="")
        records_bar = progress.add_task("records", total=None, status="")
        file_counts = [0, 0]

        def advance(records: int, bases: int) -> None:
            file_counts[0] += records
            file_counts[1] += bases
            counts["bases"] += bases
            rate = counts["bases"] / max(time.monotonic() - started, 1e-9)
            progress.update(records_bar, advance=records, status=f"{counts['bases']:,} bases  {rate:,.0f} bases/s")

        ctx = Context(model, cfg, dev, batch_size, max_tokens, per_position, advance)
        for path in mine:
            key, name = str(path), output_name(path)
            progress.update(files_bar, status=path.name)
            entry = {"input": key, "output": name, "rank": rank, "status": "failed", "reason": None,
                     "records": 0, "bases": 0, "seconds": 0.0}
            tick = time.monotonic()
            file_counts[:] = [0, 0]
            try:
                entry.update(size=path.stat().st_size, sha256=sha256_file(path))
                old = previous.get(key)
                if (not force and old is not None and old.get("status") == "done"
                        and old.get("sha256") == entry["sha256"] and _parquet_complete(out / old["output"])):
                    counts["skipped"] += 1
                    progress.update(files_bar, advance=1)
                    continue
                frame = task.predict_file(ctx, path)
                _write_parquet(frame, out / name)
                entry.update(status="done", records=frame.height)
                counts["done"] += 1
            except Exception as error:  # a bad file (or a device error on it) must not end the other files
                if os.environ.get("MAMBASEQ_DEBUG"):
                    raise
                entry["reason"] = _one_line(error, path)
                (out / name).unlink(missing_ok=True)  # an output of an earlier version of this input is stale
                counts["failed"] += 1
                message = f"failed: {path}: {entry['reason']}"
                if progress.live.is_started:
                    progress.console.print(message, markup=False, highlight=False, soft_wrap=True)
                else:
                    print(message, file=sys.stderr, flush=True)
            entry.update(bases=file_counts[1], seconds=round(time.monotonic() - tick, 3),
                         finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            counts["records"] += entry["records"]
            writer.update(key, entry)
            progress.update(files_bar, advance=1)
        writer.flush()

    if world > 1:
        dist.barrier()  # every part is written
        if rank == 0:
            merged = _read_json(out / MANIFEST)
            for part in sorted(out.glob("manifest.part-*.json")):
                data = _read_json_or_none(part, True)
                if data is not None:
                    merged["files"].update(data["files"])
                part.unlink()
            _write_manifest(out / MANIFEST, merged)
        totals = torch.tensor([counts[k] for k in ("done", "skipped", "failed", "records", "bases")],
                              dtype=torch.float64, device=dev if dev.type == "cuda" else "cpu")
        dist.all_reduce(totals)  # rank 0 joins after merging: the manifest is complete when any rank returns
        counts = dict(zip(("done", "skipped", "failed", "records", "bases"), (int(v) for v in totals.tolist())))
        if joined:
            dist.destroy_process_group()
    elapsed = time.monotonic() - started
    return {**counts, "files": len(files), "seconds": elapsed, "bases_per_s": counts["bases"] / max(elapsed, 1e-9),
            "manifest": str(out / MANIFEST), "task": cfg.task, "world_size": world, "device": str(dev)}
