"""Anomaly-detection metrics for scored time series: point, range (VUS), range-based F1 and NAB.

Every function takes per-step arrays: `labels` (0/1 or bool, 1 = anomalous step), `scores` (finite
floats, higher = more anomalous) or binary `predictions`. Inputs are checked: a length mismatch,
NaN/inf scores, non-binary labels or single-class labels raise ValueError with the reason.

Glossary: n steps; y labels; s scores; P = sum(y); a *range* is a maximal run of consecutive 1s
[start, end] (inclusive); K thresholds; ell the buffer length of range-AUC; W the largest ell of VUS.

Point metrics (threshold-free)
  auc_roc  scikit-learn `roc_auc_score`.
  auc_pr   scikit-learn `average_precision_score`: AP = sum_k (R_k - R_{k-1}) P_k (step-wise, no
           trapezoid, so it is not optimistic).

Range-AUC and VUS -- Paparrizos et al., "Volume Under the Surface: A New Accuracy Evaluation Measure
for Time-Series Anomaly Detection", PVLDB 15(11), 2022; as computed by TSB-AD (Liu & Paparrizos,
"The Elephant in the Room: Towards A Reliable Time-Series Anomaly Detection Benchmark", NeurIPS 2024
Datasets & Benchmarks; PyPI `tsb-ad` 1.5, `basic_metricor.RangeAUC_volume_opt`, the code path behind
its reported VUS-ROC / VUS-PR). Definitions, for a buffer ell (h = ell // 2):
  * Soft labels: each normal step at distance d in 1..h before a range start or after a range end
    gets sqrt(1 - d / ell); contributions of several ranges add up and are clipped at 1; anomalous
    steps keep 1. Segments: the ranges widened by h on both sides (clipped to the series), merged
    where they overlap.
  * K = 250 thresholds t_k = k-th largest score at rank floor(linspace(0, n - 1, K)); pred = s >= t_k.
  * B = sum of soft labels of flagged normal steps; TP = (flagged anomalous steps) + B;
    P' = P + B / 2; recall = min(TP / P', 1); existence = flagged segments / segments;
    TPR = recall * existence; FPR = (#flagged - TP) / (n - P'); precision = TP / #flagged.
  * Range-AUC-ROC: trapezoid area under (FPR, TPR) with (0, 0) and (1, 1) added; Range-AUC-PR:
    sum_k (TPR_k - TPR_{k-1}) * precision_k with TPR_0 = 0 (the AP rule above).
  * VUS-ROC / VUS-PR: the mean of those over ell = 0, 1, ..., W (TSB-AD default W = 100, its
    `slidingWindow`; TSB-AD's own benchmark sets it per series from the dominant period).
  `range_auc_*` is one slice of that surface at a fixed ell. TSB-AD 1.5's legacy `RangeAUC` is not
  used: it finds segments on the soft labels with `diff == 1` and divides by zero for ell >= 4.

Range-based F1 -- Tatbul et al., "Precision and Recall for Time Series", NeurIPS 2018, with the
settings of TSB-AD's "R-based-F1": flat positional bias, cardinality factor 1 / (number of
overlapping ranges of the other side), existence weight alpha = 0.2 for recall and 0 for precision.
  recall    = mean over true ranges R of  alpha * [R overlaps a predicted range]
                                        + (1 - alpha) * |R & pred| / |R| * cardinality(R)
  precision = the same with true and predicted swapped, alpha = 0; F1 = 2 R P / (R + P) (0 if both 0).
`best_range_f1` is TSB-AD's oracle (K = 100 thresholds linspace(min s, max s), pred = s > t): it
peeks at the test labels, so it is for analysis only. Headline figures threshold with a value fixed on
training data and report `range_f1` of those predictions.

Point-adjusted F1 -- Xu et al., "Unsupervised Anomaly Detection via Variational Auto-Encoder for
Seasonal KPIs in Web Applications" (Donut), WWW 2018: a true range counts as fully detected once any
of its steps is flagged, then point-wise F1. Kim et al., "Towards a Rigorous Evaluation of Time-Series
Anomaly Detection", AAAI 2022, show random scores reach high PA-F1 (about 0.9 on SMD), so report it
only beside the same metric for a random-score baseline. TSB-AD's `_adjust_predicts` never adjusts
step 0 (its backward loop stops at index 1); here a range starting at step 0 is adjusted like any other.

NAB score -- Lavin & Ahmad, "Evaluating Real-time Anomaly Detection Algorithms -- the Numenta
Anomaly Benchmark", arXiv:1510.03336 (2015); Ahmad et al., Neurocomputing 262 (2017); scoring as in
numenta/NAB v1.1 `nab/sweeper.py`, `nab/optimizer.py` and `Runner.normalize`:
  * Per file, the first min(floor(0.15 n), 750) rows are probationary and ignored. A window is entered
    at the first row whose timestamp equals its start and left at the row equal to its end; rows are
    addressed by position, so duplicate timestamps (DST repeats in NAB's data) are handled as NAB does.
  * sigma(x) = 2 / (1 + exp(5 x)) - 1 (NAB's scaled sigmoid; -1 for x > 3).
  * Detections are rows with score >= threshold. A window of width w and right edge e scores
    tpWeight * sigma(-(e - i + 1) / w) / sigma(-1) for its earliest detection i, -fnWeight if it has
    none. A detection outside windows scores fpWeight * sigma((i - e) / (w - 1)) against the last
    window (e, w) that ended before it, and -fpWeight before any window.
  * Normalised score = 100 (raw - null) / (perfect - null): null = raw score of no detections
    (-fnWeight per scorable window), perfect = tpWeight * number of windows.
  * `optimise_nab_threshold` sweeps every distinct score over all files together and keeps the best
    total raw score (ties: the highest threshold), as NAB's optimiser does per profile.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

__all__ = [
    "NAB_PROFILES", "NabFileScore", "NabResult",
    "auc_roc", "auc_pr", "range_auc_roc", "range_auc_pr", "vus_roc", "vus_pr",
    "range_f1", "best_range_f1", "point_adjusted_f1", "nab_score", "optimise_nab_threshold",
]


# --------------------------------------------------------------------------------- input checks

def _binary(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
    if a.dtype != bool:
        if not np.issubdtype(a.dtype, np.number) or not np.isin(a, (0, 1)).all():
            raise ValueError(f"{name} must contain only 0/1 (or booleans)")
        a = a == 1
    return a


def _finite(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contain NaN or inf at {np.flatnonzero(~np.isfinite(a))[:5].tolist()}")
    return a


def _same_length(a: np.ndarray, b: np.ndarray, na: str, nb: str) -> None:
    if a.size != b.size:
        raise ValueError(f"{na} ({a.size}) and {nb} ({b.size}) differ in length")


def _labels_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    y, s = _binary(labels, "labels"), _finite(scores, "scores")
    _same_length(y, s, "labels", "scores")
    if y.all() or not y.any():
        raise ValueError("labels hold a single class; the metric needs both normal and anomalous steps")
    return y, s


def _labels_predictions(labels, predictions) -> tuple[np.ndarray, np.ndarray]:
    y, p = _binary(labels, "labels"), _binary(predictions, "predictions")
    _same_length(y, p, "labels", "predictions")
    return y, p


def _ranges(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inclusive [start, end] of every run of True."""
    d = np.diff(mask.astype(np.int8), prepend=0, append=0)
    return np.flatnonzero(d == 1), np.flatnonzero(d == -1) - 1


# --------------------------------------------------------------------------------- point metrics

def auc_roc(labels, scores) -> float:
    """Area under the ROC curve (scikit-learn)."""
    y, s = _labels_scores(labels, scores)
    return float(roc_auc_score(y, s))


def auc_pr(labels, scores) -> float:
    """Average precision (scikit-learn), the step-wise area under the precision-recall curve."""
    y, s = _labels_scores(labels, scores)
    return float(average_precision_score(y, s))


# --------------------------------------------------------------------------------- range AUC / VUS

def _ramp(d: np.ndarray, h: int, ell: int) -> np.ndarray:
    """Soft label sqrt(1 - d / ell) of a normal step d <= h steps from a range, else 0."""
    return np.where(d <= h, np.sqrt(1 - np.minimum(d, h) / max(ell, 1)), 0.0)


def _range_auc_surface(y: np.ndarray, s: np.ndarray, buffers: np.ndarray, n_thresholds: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Range-AUC-ROC and Range-AUC-PR for each buffer length in `buffers` (module docstring)."""
    if n_thresholds < 1:
        raise ValueError(f"n_thresholds must be >= 1, got {n_thresholds}")
    n, P = s.size, int(y.sum())
    starts, ends = _ranges(y)
    thr = np.sort(s)[::-1][np.linspace(0, n - 1, n_thresholds).astype(int)]         # (K,)
    n_flag = n - np.searchsorted(np.sort(s), thr, side="left")                       # (K,) s >= t
    tp_anom = P - np.searchsorted(np.sort(s[y]), thr, side="left")                   # (K,)

    # Normal steps near a range: distances to the nearest and second-nearest range end before
    # and range start after (a second contribution always saturates the soft label at 1).
    idx = np.flatnonzero(~y)
    k = np.searchsorted(ends, idx)                     # ends[k - 1] < idx < starts[j], j == k
    m = starts.size
    d_prev = np.where(k >= 1, idx - ends[np.maximum(k - 1, 0)], np.inf)
    d_prev2 = np.where(k >= 2, idx - ends[np.maximum(k - 2, 0)], np.inf)
    d_next = np.where(k < m, starts[np.minimum(k, m - 1)] - idx, np.inf)
    d_next2 = np.where(k + 1 < m, starts[np.minimum(k + 1, m - 1)] - idx, np.inf)
    near = np.minimum(d_prev, d_next) <= int(buffers.max()) // 2
    order = np.argsort(-s[idx[near]], kind="stable")
    d_prev, d_prev2, d_next, d_next2 = (d[near][order] for d in (d_prev, d_prev2, d_next, d_next2))
    s_near = s[idx[near]][order]                                                    # descending
    n_near_flag = s_near.size - np.searchsorted(s_near[::-1], thr, side="left")     # (K,)

    roc, pr = np.empty(buffers.size), np.empty(buffers.size)
    for b, ell in enumerate(buffers):
        h = int(ell) // 2
        hits = sum((d <= h).astype(np.int8) for d in (d_prev, d_prev2, d_next, d_next2))
        soft = np.where(hits >= 2, 1.0, _ramp(d_prev, h, ell) + _ramp(d_next, h, ell))
        B = np.concatenate(([0.0], np.cumsum(soft)))[n_near_flag]                  # (K,)

        # Segments: ranges widened by h, merged where they overlap; flagged if their max >= t.
        split = ends[:-1] + h < starts[1:] - h
        a = np.maximum(starts[np.concatenate(([True], split))] - h, 0)
        z = np.minimum(ends[np.concatenate((split, [True]))] + h, n - 1)
        bounds = np.column_stack((a, z + 1)).ravel()
        seg_max = np.maximum.reduceat(s, bounds[bounds < n])[::2]
        exist = (a.size - np.searchsorted(np.sort(seg_max), thr, side="left")) / a.size

        tp = tp_anom + B
        p_new = (P + (P + B)) / 2
        tpr = np.concatenate(([0.0], np.minimum(tp / p_new, 1) * exist, [1.0]))
        fpr = np.concatenate(([0.0], (n_flag - tp) / (n - p_new), [1.0]))
        precision = tp / n_flag
        roc[b] = np.dot(np.diff(fpr), (tpr[1:] + tpr[:-1]) / 2)
        pr[b] = np.dot(np.diff(tpr[:-1]), precision)
    return roc, pr


def _check_window(window: int, name: str) -> None:
    if int(window) != window or window < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {window}")


def range_auc_roc(labels, scores, window: int = 100, n_thresholds: int = 250) -> float:
    """Range-AUC-ROC at buffer length `window` (one slice of the VUS-ROC surface)."""
    y, s = _labels_scores(labels, scores)
    _check_window(window, "window")
    return float(_range_auc_surface(y, s, np.array([int(window)]), n_thresholds)[0][0])


def range_auc_pr(labels, scores, window: int = 100, n_thresholds: int = 250) -> float:
    """Range-AUC-PR at buffer length `window` (one slice of the VUS-PR surface)."""
    y, s = _labels_scores(labels, scores)
    _check_window(window, "window")
    return float(_range_auc_surface(y, s, np.array([int(window)]), n_thresholds)[1][0])


def vus_roc(labels, scores, max_window: int = 100, n_thresholds: int = 250) -> float:
    """VUS-ROC: mean Range-AUC-ROC over buffer lengths 0..max_window (TSB-AD's VUS-ROC)."""
    y, s = _labels_scores(labels, scores)
    _check_window(max_window, "max_window")
    return float(_range_auc_surface(y, s, np.arange(int(max_window) + 1), n_thresholds)[0].mean())


def vus_pr(labels, scores, max_window: int = 100, n_thresholds: int = 250) -> float:
    """VUS-PR: mean Range-AUC-PR over buffer lengths 0..max_window (TSB-AD's VUS-PR)."""
    y, s = _labels_scores(labels, scores)
    _check_window(max_window, "max_window")
    return float(_range_auc_surface(y, s, np.arange(int(max_window) + 1), n_thresholds)[1].mean())


# --------------------------------------------------------------------------------- F1 variants

def _range_recall(real: np.ndarray, pred: np.ndarray, alpha: float) -> float:
    """Tatbul et al. range recall of `pred` against `real` (flat bias, cardinality 1/x)."""
    rs, re = _ranges(real)
    if rs.size == 0:
        return 0.0
    ps, pe = _ranges(pred)
    cum = np.concatenate(([0], np.cumsum(pred)))
    hit = cum[re + 1] - cum[rs]                                    # flagged steps inside each range
    n_over = np.searchsorted(ps, re, side="right") - np.searchsorted(pe, rs, side="left")
    overlap = hit / (re - rs + 1) / np.maximum(n_over, 1)          # n_over == 0 implies hit == 0
    return float((alpha * np.count_nonzero(hit) + (1 - alpha) * overlap.sum()) / rs.size)


def _range_f1(y: np.ndarray, p: np.ndarray) -> float:
    recall, precision = _range_recall(y, p, 0.2), _range_recall(p, y, 0.0)
    return 0.0 if recall + precision == 0 else 2 * recall * precision / (recall + precision)


def range_f1(labels, predictions) -> float:
    """Range-based F1 (Tatbul et al. 2018) with TSB-AD's "R-based-F1" settings; 0 if nothing overlaps."""
    return _range_f1(*_labels_predictions(labels, predictions))


def best_range_f1(labels, scores, n_thresholds: int = 100) -> tuple[float, float]:
    """(best range_f1, its threshold) over linspace(min, max) thresholds, pred = score > t.

    Oracle: it uses the test labels to pick the threshold. For analysis only, never a headline figure.
    """
    y, s = _labels_scores(labels, scores)
    if n_thresholds < 1:
        raise ValueError(f"n_thresholds must be >= 1, got {n_thresholds}")
    thresholds = np.linspace(s.min(), s.max(), n_thresholds)
    f1 = [_range_f1(y, s > t) for t in thresholds]                 # K vectorised passes
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def point_adjusted_f1(labels, predictions) -> float:
    """Point-adjusted F1 (Xu et al. 2018). Inflated by design: report only beside a random baseline."""
    y, p = _labels_predictions(labels, predictions)
    starts, ends = _ranges(y)
    cum = np.concatenate(([0], np.cumsum(p)))
    detected = np.zeros(y.size + 1, dtype=np.int64)
    hit = cum[ends + 1] > cum[starts]
    np.add.at(detected, starts[hit], 1)                            # +1 / -1 marks, then a running sum
    np.add.at(detected, ends[hit] + 1, -1)
    adjusted = p | (np.cumsum(detected)[:-1] > 0)
    return float(f1_score(y, adjusted, zero_division=0))


# --------------------------------------------------------------------------------- NAB

NAB_PROFILES: dict[str, dict[str, float]] = {            # NAB config/profiles.json (tnWeight unused)
    "standard": {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 1.0},
    "reward_low_FP_rate": {"tpWeight": 1.0, "fpWeight": 0.22, "fnWeight": 1.0},
    "reward_low_FN_rate": {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 2.0},
}


@dataclass(frozen=True)
class NabFileScore:
    """One file at one threshold: raw NAB score and row counts over the scored (post-probation) rows."""
    raw: float
    tp: int
    tn: int
    fp: int
    fn: int
    n_rows: int


@dataclass(frozen=True)
class NabResult:
    """Corpus NAB score: `score` normalised (0 = no detections, 100 = perfect), raw sums, per file."""
    score: float
    raw: float
    null: float
    perfect: float
    threshold: float
    per_file: dict[str, NabFileScore]


@dataclass(frozen=True)
class _NabFile:
    scores: np.ndarray      # scored rows only (probation dropped)
    sweep: np.ndarray       # each row's contribution if detected (TP candidate or FP penalty)
    window: np.ndarray      # window index per scored row, -1 outside windows
    counted: np.ndarray     # windows with at least one scored row (the others never count)
    n_windows: int
    n_rows: int


def _sigma(x: np.ndarray) -> np.ndarray:
    """NAB's scaled sigmoid 2 * sigmoid(-5 x) - 1, cut to -1 beyond 3 window widths."""
    with np.errstate(over="ignore"):
        return np.where(x > 3.0, -1.0, 2 * (1 / (1 + np.exp(5 * x))) - 1.0)


def _times(x, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind in "iuf":
        return a
    try:
        return a.astype("datetime64[ns]")
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name}: timestamps must be datetime64, ISO-8601 strings or numbers ({err})") from None


def _cost(profile) -> dict[str, float]:
    if isinstance(profile, str):
        if profile not in NAB_PROFILES:
            raise ValueError(f"unknown NAB profile {profile!r}; known: {sorted(NAB_PROFILES)}")
        return NAB_PROFILES[profile]
    missing = {"tpWeight", "fpWeight", "fnWeight"} - set(profile)
    if missing:
        raise ValueError(f"cost matrix lacks {sorted(missing)}")
    return {k: float(profile[k]) for k in ("tpWeight", "fpWeight", "fnWeight")}


def _nab_file(name: str, timestamps, scores, windows, cost: Mapping[str, float],
              probation_fraction: float) -> _NabFile:
    ts = _times(timestamps, name)
    s = _finite(scores, f"{name}: scores")
    if ts.ndim != 1:
        raise ValueError(f"{name}: timestamps must be 1-D")
    _same_length(ts, s, f"{name}: timestamps", "scores")
    limits = np.asarray(windows)
    limits = _times(limits.reshape(-1, 2), f"{name}: windows") if limits.size else np.empty((0, 2), ts.dtype)
    if (limits.dtype.kind == "M") != (ts.dtype.kind == "M"):
        raise ValueError(f"{name}: windows and timestamps must both be times or both be numbers")
    n = s.size
    left, right = np.empty(len(limits), np.int64), np.empty(len(limits), np.int64)
    prev_end = -1
    for w, (t0, t1) in enumerate(limits):                # a handful of windows per file
        first = np.flatnonzero(ts == t0)
        first = first[first > prev_end]
        last = np.flatnonzero(ts == t1)
        last = last[last >= first[0]] if first.size else last[:0]
        if not last.size:
            raise ValueError(f"{name}: window {w} ({t0} .. {t1}) must start and end on timestamps of "
                             "the file, after the previous window")
        left[w], right[w], prev_end = first[0], last[0], last[0]
    width = right - left + 1

    i = np.arange(n)
    window = np.full(n, -1, np.int64)
    for w in range(len(limits)):
        window[left[w]:right[w] + 1] = w
    inside = window >= 0
    prev = np.searchsorted(right, i, side="left") - 1      # last window whose right edge < i
    sweep = np.where(prev >= 0, 0.0, -1.0)                 # before any window: the full FP penalty
    after = (~inside) & (prev >= 0)
    p = prev[after]
    # A one-row window followed by rows divides by zero in NAB; we clip its width - 1 to 1.
    sweep[after] = _sigma((i[after] - right[p]) / np.maximum(width[p] - 1, 1).astype(float))
    sweep[~inside] *= cost["fpWeight"]
    w_in = window[inside]
    sweep[inside] = (_sigma(-(right[w_in] - i[inside] + 1) / width[w_in].astype(float))
                     * cost["tpWeight"] / _sigma(np.array(-1.0)))

    keep = i >= min(np.floor(probation_fraction * n), probation_fraction * 5000)
    counted = np.zeros(len(limits), bool)
    counted[window[keep & inside]] = True
    return _NabFile(s[keep], sweep[keep], window[keep], counted, len(limits), n)


def _prepare_nab(per_file_timestamps: Mapping[str, Sequence], per_file_scores: Mapping[str, Sequence],
                 windows: Mapping[str, Sequence], profile, probation_fraction: float
                 ) -> tuple[dict[str, _NabFile], dict[str, float], float, float]:
    cost = _cost(profile)
    if set(per_file_timestamps) != set(per_file_scores):
        raise ValueError("per_file_timestamps and per_file_scores must name the same files; differ in "
                         f"{sorted(set(per_file_timestamps) ^ set(per_file_scores))[:5]}")
    if not per_file_scores:
        raise ValueError("no files to score")
    missing = sorted(set(per_file_scores) - set(windows))
    if missing:
        raise ValueError(f"no window list for {missing[:5]} (an empty list means no anomalies)")
    if not 0 <= probation_fraction < 1:
        raise ValueError(f"probation_fraction must be in [0, 1), got {probation_fraction}")
    files = {name: _nab_file(name, per_file_timestamps[name], per_file_scores[name], windows[name],
                             cost, probation_fraction) for name in per_file_scores}
    null = -cost["fnWeight"] * sum(int(f.counted.sum()) for f in files.values())
    perfect = cost["tpWeight"] * sum(f.n_windows for f in files.values())
    if perfect == null:
        raise ValueError("no anomaly windows in these files: the normalised NAB score is undefined")
    return files, cost, null, perfect


def _score_file(f: _NabFile, threshold: float, fn_weight: float) -> NabFileScore:
    det = f.scores >= threshold
    inside = f.window >= 0
    best = np.full(f.n_windows, -fn_weight)
    np.maximum.at(best, f.window[det & inside], f.sweep[det & inside])   # earliest detection counts
    raw = float(best[f.counted].sum() + f.sweep[det & ~inside].sum())
    return NabFileScore(raw=raw, tp=int((det & inside).sum()), tn=int((~det & ~inside).sum()),
                        fp=int((det & ~inside).sum()), fn=int((~det & inside).sum()), n_rows=f.n_rows)


def _nab_result(files: dict[str, _NabFile], cost: Mapping[str, float], null: float, perfect: float,
                threshold: float) -> NabResult:
    per_file = {name: _score_file(f, threshold, cost["fnWeight"]) for name, f in files.items()}
    raw = float(sum(r.raw for r in per_file.values()))
    return NabResult(score=100 * (raw - null) / (perfect - null), raw=raw, null=null, perfect=perfect,
                     threshold=float(threshold), per_file=per_file)


def nab_score(per_file_timestamps: Mapping[str, Sequence], per_file_scores: Mapping[str, Sequence],
              windows: Mapping[str, Sequence], profile="standard", threshold: float = 0.5,
              probation_fraction: float = 0.15) -> NabResult:
    """NAB score of anomaly scores thresholded at `threshold` (detection: score >= threshold).

    per_file_timestamps / per_file_scores: {file name: 1-D array} (datetime64, ISO strings or numbers);
    windows: {file name: [[start, end], ...]} as in NAB's labels/combined_windows.json (extra files
    ignored); profile: a NAB_PROFILES name or a {tpWeight, fpWeight, fnWeight} mapping.
    """
    return _nab_result(*_prepare_nab(per_file_timestamps, per_file_scores, windows, profile,
                                     probation_fraction), threshold)


def optimise_nab_threshold(per_file_timestamps: Mapping[str, Sequence],
                           per_file_scores: Mapping[str, Sequence], windows: Mapping[str, Sequence],
                           profile="standard", probation_fraction: float = 0.15) -> NabResult:
    """NAB's threshold optimisation: the corpus-wide threshold with the best total raw score.

    Sweeps every distinct score at once (sort + cumulative sums), so it is exact, not a search. The
    result's `threshold` may be just above the largest score when no detections score best.
    """
    files, cost, null, perfect = _prepare_nab(per_file_timestamps, per_file_scores, windows, profile,
                                              probation_fraction)
    offsets = np.cumsum([0] + [f.n_windows for f in files.values()])[:-1]
    s = np.concatenate([f.scores for f in files.values()])
    v = np.concatenate([f.sweep for f in files.values()])
    g = np.concatenate([np.where(f.window >= 0, f.window + o, -1) for f, o in zip(files.values(), offsets)])
    order = np.argsort(-s, kind="stable")
    s, v, g = s[order], v[order], g[order]

    # Score change when each row joins the detections, in order of decreasing score: its FP penalty,
    # or how much it raises its window's best (earliest) detection so far.
    delta = np.where(g < 0, v, 0.0)
    rows = np.flatnonzero(g >= 0)
    rows = rows[np.argsort(g[rows], kind="stable")]                   # grouped by window, order kept
    for part in np.split(rows, np.flatnonzero(np.diff(g[rows])) + 1):   # one pass per window
        if part.size:
            delta[part] = np.diff(np.maximum.accumulate(np.concatenate(([-cost["fnWeight"]], v[part]))))
    total = null + np.cumsum(delta)
    last_of_tie = np.concatenate((s[1:] != s[:-1], [True]))
    above = np.nextafter(s[0], np.inf) if s.size else np.inf
    cand_threshold = np.concatenate(([above], s[last_of_tie]))
    cand_total = np.concatenate(([null], total[last_of_tie]))
    # NAB keeps the first of equal scores in decreasing-threshold order; 1e-9 absorbs summation order.
    best = int(np.flatnonzero(cand_total >= cand_total.max() - 1e-9)[0])
    return _nab_result(files, cost, null, perfect, float(cand_threshold[best]))
