"""Genome-wide promoter scan: slide a promoter classifier over a FASTA, write a bedGraph track and a BED of calls.

The run must be a two-class (promoter / non-promoter) classifier: a run with K > 2 declared classes is refused.

Windows: `window` bases (default: the longest training sequence of the run, `train.seq_len`) starting every
`stride` bases from each contig's start: window k covers [k*stride, k*stride + window), the last window ends at
or before the contig's end. Each window is scored on both strands: p+ = P(promoter | window as read on the
forward strand), p- = P(promoter | its reverse complement). The window's score is the run's own rule: the mean
(p+ + p-) / 2 for a run trained with RC averaging (the quantity its threshold was picked on), else max(p+, p-)
(a promoter on either strand). Windows with more than `max_n_fraction` N bases are skipped: they get no
bedGraph value and are never called (assembly gaps and masked stretches are not sequence the model knows).

bedGraph (0-based, half-open, sorted, non-overlapping): each window k reports its score on its centre bin
[k*stride + o, k*stride + o + stride) with o = (window - stride) // 2, so consecutive bins tile the contig
without overlap and each base gets the window centred on it (to within half a base). The first o bases and the
tail after the last bin have no value. A `track` line opens the file (IGV and UCSC read it).

BED (BED6: chrom, start, end, name, score, strand): windows with score >= threshold (the run's, picked on its
dev set, or --threshold), merged where they overlap or touch into one region per run of called windows. Its
score is round(1000 * the highest window score), its strand the strand with the higher peak probability ('.'
on a tie, e.g. a palindrome), its name `promoter_<n>`.

Memory: windows are fetched, encoded and scored `batch_size` at a time per contig; only per-window scores
(three float32 per window: 12 bytes / stride bases) are kept for a contig, never its windows.

Glossary: W windows in a chunk, L = window length, B batch of windows, o centre-bin offset.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from mambaseq.io.atomic import open_atomic
from mambaseq.io.fasta import open_fasta
from mambaseq.pipelines.training import autocast_for, pick_device
from mambaseq.pipelines.promoter import load_promoter_run, status_progress
from mambaseq.tokenizers import N_ID, encode, reverse_complement


class ScanError(ValueError):
    """The settings or the genome cannot make a scan."""


@torch.no_grad()
def strand_probs(model, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B, L) equal-length windows -> (p+ (B,), p- (B,)), both strands in one forward pass of 2B rows."""
    both = torch.cat([tokens, reverse_complement(tokens)])  # (2B, L)
    with autocast_for(tokens.device):
        logits = model.classify(both)  # (2B, 2); no PAD in a window, so every position counts
    return logits.float().softmax(-1)[:, 1].chunk(2)


def _score_contig(model, genome, contig: str, window: int, stride: int, batch_size: int, max_n: float,
                  device: torch.device, advance) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(p+ (K,), p- (K,), scanned (K,) bool) for the contig's K windows; skipped windows hold NaN.

    advance(position) is called after each chunk with the contig position scanned up to.
    """
    n_windows = (genome.lengths[contig] - window) // stride + 1
    plus = np.full(n_windows, np.nan, dtype=np.float32)
    minus = np.full(n_windows, np.nan, dtype=np.float32)
    for k0 in range(0, n_windows, batch_size):
        k1 = min(k0 + batch_size, n_windows)
        start, end = k0 * stride, (k1 - 1) * stride + window
        ids = encode(genome.fetch(contig, start, end), name=f"{contig}:{start + 1}-{end}")  # (end - start,)
        windows = np.lib.stride_tricks.sliding_window_view(ids, window)[::stride]  # (W, L) view, no copy
        n_before = np.concatenate([[0], np.cumsum(ids == N_ID)])  # (end - start + 1,) N bases before each position
        first = np.arange(len(windows)) * stride  # (W,) window starts within the chunk
        n_per_window = n_before[first + window] - n_before[first]  # (W,)
        keep = n_per_window <= max_n * window  # (W,)
        if keep.any():
            tokens = torch.from_numpy(windows[keep].astype(np.int64)).to(device)  # (W', L)
            p_plus, p_minus = strand_probs(model, tokens)
            rows = np.flatnonzero(keep) + k0
            plus[rows], minus[rows] = p_plus.cpu().numpy(), p_minus.cpu().numpy()
        advance(end)
    return plus, minus, ~np.isnan(plus)


def _calls(contig: str, score: np.ndarray, plus: np.ndarray, minus: np.ndarray, window: int, stride: int,
           threshold: float) -> pl.DataFrame:
    """Merged called regions of one contig (BED6 columns but the name)."""
    called = np.flatnonzero(score >= threshold)  # NaN (skipped) compares False
    if not len(called):
        return pl.DataFrame(schema={"chrom": pl.Utf8, "start": pl.Int64, "end": pl.Int64, "score": pl.Int64,
                                    "strand": pl.Utf8})
    # windows k < k' overlap or touch when (k' - k) * stride <= window
    first = np.concatenate([[True], np.diff(called) * stride > window])  # (C,) starts a region
    starts, ends = called[first], called[np.append(first[1:], True)]
    peak = np.maximum.reduceat(score[called], np.flatnonzero(first))
    peak_plus = np.maximum.reduceat(plus[called], np.flatnonzero(first))
    peak_minus = np.maximum.reduceat(minus[called], np.flatnonzero(first))
    strand = np.where(peak_plus > peak_minus, "+", np.where(peak_plus < peak_minus, "-", "."))
    return pl.DataFrame({"chrom": contig, "start": starts * stride, "end": ends * stride + window,
                         "score": np.rint(1000 * peak).astype(np.int64), "strand": strand})


def scan(model_path: str | Path, genome_path: str | Path, out: str | Path, *, bed: str | Path | None = None,
         window: int | None = None, stride: int | None = None, threshold: float | None = None,
         contigs: list[str] | None = None, batch_size: int = 64, max_n_fraction: float = 0.1,
         device: str = "auto", show_progress: bool = True) -> dict:
    """Scan `genome_path` with the promoter run `model_path`; write the bedGraph `out` and the BED `bed`
    (default: `out` with suffix .bed); return a summary."""
    out = Path(out)
    bed = Path(bed) if bed is not None else out.with_suffix(".bed")
    dev = pick_device(device)
    model, cfg = load_promoter_run(model_path, dev)
    if cfg.model.n_classes != 2:  # the track and the calls are one probability and one threshold
        raise ScanError(f"{model_path}: a {cfg.model.n_classes}-class run ({', '.join(cfg.extra.get('classes', []))}); "
                        "scan needs a two-class (promoter / non-promoter) run")
    window = window or cfg.train.seq_len
    stride = stride or max(1, window // 2)
    threshold = cfg.extra["threshold"] if threshold is None else threshold
    rc_average = bool(cfg.extra.get("rc_average", False))
    if not 1 <= stride <= window:
        raise ScanError(f"--stride {stride} must lie in 1..window ({window}) so the centre bins tile the genome")
    if not 0 <= max_n_fraction <= 1:
        raise ScanError(f"--max-n-fraction {max_n_fraction} must lie in [0, 1]")
    offset = (window - stride) // 2
    summary = {"window": window, "stride": stride, "threshold": threshold, "rc_average": rc_average,
               "max_n_fraction": max_n_fraction, "contigs": {}, "bedgraph": str(out), "bed": str(bed)}
    started = time.monotonic()
    with open_fasta(genome_path) as genome:
        names = contigs or genome.names
        for name in names:
            if name not in genome.lengths:
                raise ScanError(f"{genome.path}: no contig named {name!r}")
            if genome.lengths[name] < window:
                raise ScanError(f"{genome.path}: window {window:,} is larger than contig {name!r} "
                                f"({genome.lengths[name]:,} bases); pass a smaller --window or choose --contig")
        out.parent.mkdir(parents=True, exist_ok=True)
        bed.parent.mkdir(parents=True, exist_ok=True)
        n_calls = 0
        with status_progress(show_progress) as progress, open_atomic(out) as track, open_atomic(bed) as calls:
            track.write(f'track type=bedGraph name="promoter" description="P(promoter), window {window} '
                        f'stride {stride}, {Path(model_path).name}" visibility=full autoScale=off viewLimits=0:1\n')
            for name in names:
                task = progress.add_task(name, total=genome.lengths[name], status="")
                plus, minus, scanned = _score_contig(
                    model, genome, name, window, stride, batch_size, max_n_fraction, dev,
                    lambda position, task=task: progress.update(task, completed=position))
                score = (plus + minus) / 2 if rc_average else np.fmax(plus, minus)  # NaN stays NaN
                k = np.flatnonzero(scanned)
                bins = pl.DataFrame({"chrom": name, "start": k * stride + offset, "end": k * stride + offset + stride,
                                     "score": score[k]})
                track.write(bins.write_csv(separator="\t", include_header=False, float_precision=4))
                regions = _calls(name, score, plus, minus, window, stride, threshold)
                regions = regions.with_columns(name=pl.format("promoter_{}", pl.int_range(n_calls, n_calls + regions.height)))
                n_calls += regions.height
                calls.write(regions.select("chrom", "start", "end", "name", "score", "strand")
                            .write_csv(separator="\t", include_header=False))
                progress.update(task, completed=genome.lengths[name],
                                status=f"{len(k):,} windows, {regions.height} called")
                summary["contigs"][name] = {"windows": len(scanned), "scanned": int(scanned.sum()),
                                            "skipped_n": int((~scanned).sum()), "called_regions": regions.height}
    elapsed = time.monotonic() - started
    bases = sum(genome.lengths[name] for name in names)
    summary.update(called_regions=n_calls, bases=bases, elapsed_s=elapsed, bases_per_s=bases / elapsed,
                   device=str(dev))
    return summary
