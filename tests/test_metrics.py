"""mambaseq.metrics: hand-derived cases, plain-loop oracles, invariances, bad input, NAB on real data.

The full cross-checks (tsb-ad package, all 58 NAB files) live in benchmarks/validate_metrics.py.
"""
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mambaseq import metrics as M

R = math.sqrt(0.5)


# ------------------------------------------------------------------ plain-loop oracles (float64, tiny n)

def runs(x):
    """[start, end] of each run of 1s, by walking the list."""
    out, start = [], None
    for i, v in enumerate(list(x) + [0]):
        if v and start is None:
            start = i
        if not v and start is not None:
            out.append((start, i - 1))
            start = None
    return out


def oracle_range_auc(y, s, ell, k):
    """Range-AUC-ROC/PR at buffer ell, written point by point from the module docstring."""
    n, p = len(y), sum(y)
    h = ell // 2
    soft = [0.0] * n
    for a, b in runs(y):
        for x in range(b + 1, min(b + h + 1, n)):
            soft[x] += math.sqrt(1 - (x - b) / ell)
        for x in range(max(a - h, 0), a):
            soft[x] += math.sqrt(1 - (a - x) / ell)
    soft = [1.0 if y[i] else min(1.0, soft[i]) for i in range(n)]
    segments = []
    for a, b in runs(y):
        lo, hi = max(a - h, 0), min(b + h, n - 1)
        if segments and segments[-1][1] >= lo:
            segments[-1][1] = hi
        else:
            segments.append([lo, hi])
    desc = sorted(s, reverse=True)
    tpr, fpr, prec = [0.0], [0.0], []
    for t in [desc[int(v)] for v in np.linspace(0, n - 1, k)]:
        pred = [v >= t for v in s]
        tp = sum(soft[i] for i in range(n) if pred[i])
        labelled = sum(1.0 if y[i] else soft[i] * pred[i] for i in range(n))
        p_new = (p + labelled) / 2
        exist = sum(any(pred[lo:hi + 1]) for lo, hi in segments) / len(segments)
        tpr.append(min(tp / p_new, 1) * exist)
        fpr.append((sum(pred) - tp) / (n - p_new))
        prec.append(tp / sum(pred))
    tpr.append(1.0)
    fpr.append(1.0)
    roc = sum((fpr[i + 1] - fpr[i]) * (tpr[i + 1] + tpr[i]) / 2 for i in range(len(tpr) - 1))
    pr = sum((tpr[i + 1] - tpr[i]) * prec[i] for i in range(k))
    return roc, pr


def oracle_range_recall(real, pred, alpha):
    real_r, pred_r = runs(real), runs(pred)
    if not real_r:
        return 0.0
    total = 0.0
    for a, b in real_r:
        hit = sum(pred[a:b + 1])
        n_over = sum(1 for c, d in pred_r if c <= b and d >= a)
        total += alpha * (hit > 0) + (1 - alpha) * (hit / (b - a + 1)) * (1 / n_over if n_over else 0)
    return total / len(real_r)


def oracle_range_f1(y, p):
    r, q = oracle_range_recall(y, p, 0.2), oracle_range_recall(p, y, 0.0)
    return 0.0 if r + q == 0 else 2 * r * q / (r + q)


two_class = st.integers(2, 60).flatmap(lambda n: st.tuples(
    st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda v: 0 < sum(v) < len(v)),
    st.lists(st.integers(0, 6), min_size=n, max_size=n)))     # few score values: plenty of ties


# ------------------------------------------------------------------ point metrics

def test_point_aucs_hand():
    # Positives score 0.35, 0.8; negatives 0.1, 0.4. ROC: 3 of 4 (pos, neg) pairs ordered -> 0.75.
    # PR by decreasing score: 0.8 (P=1, R=1/2), 0.4 (FP), 0.35 (P=2/3, R=1): AP = 1/2 + 1/2 * 2/3 = 5/6.
    y, s = [0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]
    assert M.auc_roc(y, s) == pytest.approx(0.75)
    assert M.auc_pr(y, s) == pytest.approx(5 / 6)


# ------------------------------------------------------------------ range AUC / VUS

Y6, S6 = [0, 1, 1, 0, 0, 0], [0.1, 0.9, 0.2, 0.8, 0.3, 0.0]


def test_range_auc_buffer_0_hand():
    # One range [1, 2], P = 2, n = 6; K = 6 thresholds = every score. Buffer 0: no soft labels, one
    # segment. Flagged sets and (TPR, FPR, precision), FPR = FP / 4:
    #   0.9 {1}: (.5, 0, 1)   0.8 {1,3}: (.5, .25, .5)   0.3 {1,3,4}: (.5, .5, 1/3)
    #   0.2 {1..4}: (1, .5, .5)   0.1 {0..4}: (1, .75, .4)   0.0 all: (1, 1, 1/3)
    # ROC trapezoids: .25*.5 + .25*.5 + .25*1 + .25*1 = .75 (= the point AUC: 6 of 8 pairs ordered).
    # PR: .5*1 + .5*.5 = .75.
    assert M.range_auc_roc(Y6, S6, window=0, n_thresholds=6) == pytest.approx(0.75)
    assert M.range_auc_pr(Y6, S6, window=0, n_thresholds=6) == pytest.approx(0.75)
    assert M.range_auc_roc(Y6, S6, window=1, n_thresholds=6) == pytest.approx(0.75)   # 1 // 2 = 0


def test_range_auc_buffer_2_hand():
    # Buffer 2 (h = 1): steps 0 and 3 are 1 step from the range -> soft label r = sqrt(1 - 1/2);
    # step 4 is 2 away -> 0. Segment [0, 3] holds the max score, so existence = 1 throughout.
    # B = soft labels flagged, TP = flagged anomalies + B, P' = (2 + 2 + B) / 2, FPR = (#flag - TP) / (6 - P'):
    #   0.9 {1}:      B=0,  TP=1,     P'=2:      TPR .5,              FPR 0,            prec 1
    #   0.8 {1,3}:    B=r,  TP=1+r,   P'=2+r/2:  TPR (1+r)/(2+r/2),   FPR (1-r)/(4-r/2), prec (1+r)/2
    #   0.3 {1,3,4}:  B=r,  TP=1+r:              same TPR,            FPR (2-r)/(4-r/2), prec (1+r)/3
    #   0.2 {1..4}:   B=r,  TP=2+r:              TPR min(>1, 1) = 1,  FPR (2-r)/(4-r/2), prec (2+r)/4
    #   0.1 {0..4}:   B=2r, TP=2+2r,  P'=2+r:    TPR 1,               FPR (3-2r)/(4-r),  prec (2+2r)/5
    #   0.0 all:      B=2r, TP=2+2r:             TPR 1,               FPR (4-2r)/(4-r),  prec (2+2r)/6
    t1 = (1 + R) / (2 + R / 2)
    tpr = np.array([0, 0.5, t1, t1, 1, 1, 1, 1])
    fpr = np.array([0, 0, (1 - R) / (4 - R / 2), (2 - R) / (4 - R / 2), (2 - R) / (4 - R / 2),
                    (3 - 2 * R) / (4 - R), (4 - 2 * R) / (4 - R), 1])
    prec = np.array([1, (1 + R) / 2, (1 + R) / 3, (2 + R) / 4, (2 + 2 * R) / 5, (2 + 2 * R) / 6])
    roc = np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)
    pr = np.sum(np.diff(tpr[:-1]) * prec)
    assert M.range_auc_roc(Y6, S6, window=2, n_thresholds=6) == pytest.approx(roc, abs=1e-12)
    assert M.range_auc_pr(Y6, S6, window=2, n_thresholds=6) == pytest.approx(pr, abs=1e-12)
    # VUS over buffers 0, 1, 2: buffers 0 and 1 are the 0.75 slices above.
    assert M.vus_roc(Y6, S6, max_window=2, n_thresholds=6) == pytest.approx((0.75 + 0.75 + roc) / 3)
    assert M.vus_pr(Y6, S6, max_window=2, n_thresholds=6) == pytest.approx((0.75 + 0.75 + pr) / 3)


@settings(max_examples=80, deadline=None)
@given(two_class, st.integers(0, 14), st.integers(1, 30))
def test_range_auc_matches_loop_oracle(ys, ell, k):
    y, s = ys
    s = [v + 0.25 * (i % 3) for i, v in enumerate(s)]
    roc, pr = oracle_range_auc(y, s, ell, k)
    assert M.range_auc_roc(y, s, window=ell, n_thresholds=k) == pytest.approx(roc, abs=1e-12)
    assert M.range_auc_pr(y, s, window=ell, n_thresholds=k) == pytest.approx(pr, abs=1e-12)


def test_vus_is_mean_of_slices():
    rng = np.random.default_rng(3)
    y = np.zeros(400, int)
    y[[50, 52, 54]] = 1
    y[200:230] = 1
    y[390:] = 1
    s = rng.random(400) + 0.4 * y
    rocs = [M.range_auc_roc(y, s, window=w) for w in range(31)]
    prs = [M.range_auc_pr(y, s, window=w) for w in range(31)]
    assert M.vus_roc(y, s, max_window=30) == pytest.approx(np.mean(rocs), abs=1e-12)
    assert M.vus_pr(y, s, max_window=30) == pytest.approx(np.mean(prs), abs=1e-12)


def test_monotone_transform_leaves_aucs_unchanged():
    rng = np.random.default_rng(0)
    y = np.zeros(1000, int)
    for a in (100, 430, 437, 800):
        y[a:a + int(rng.integers(1, 40))] = 1
    s = rng.random(1000) + 0.3 * y
    t = np.exp(3 * s) + 7                       # strictly increasing
    for f in (M.auc_roc, M.auc_pr, M.vus_roc, M.vus_pr, M.range_auc_roc, M.range_auc_pr):
        assert f(y, t) == pytest.approx(f(y, s), abs=1e-12), f.__name__


# ------------------------------------------------------------------ F1 variants

def test_range_f1_hand():
    # True ranges [2,5], [10,11]; predicted [4,7], [11,11].
    # Recall (alpha .2): [2,5] exists, 2/4 covered, 1 overlapping prediction -> .2 + .8*.5 = .6;
    #                    [10,11] exists, 1/2 covered -> .6; mean .6.
    # Precision (alpha 0): [4,7] 2/4 inside labels -> .5; [11,11] 1/1 -> 1; mean .75.
    # F1 = 2 * .6 * .75 / 1.35 = 2/3.
    y = np.zeros(14, int)
    y[2:6] = y[10:12] = 1
    p = np.zeros(14, int)
    p[4:8] = p[11] = 1
    assert M.range_f1(y, p) == pytest.approx(2 / 3)
    # Cardinality: range [1,6] hit by two predictions {1,2} and {5}: recall .2 + .8 * (3/6) * (1/2) = .4;
    # precision (1 + 1) / 2 = 1; F1 = .8 / 1.4 = 4/7.
    y, p = np.zeros(8, int), np.zeros(8, int)
    y[1:7] = 1
    p[[1, 2, 5]] = 1
    assert M.range_f1(y, p) == pytest.approx(4 / 7)
    assert M.range_f1([0, 1, 1, 0], [1, 0, 0, 1]) == 0.0          # no overlap at all
    assert M.range_f1([0, 1, 1, 0], [0, 0, 0, 0]) == 0.0          # nothing predicted


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 50).flatmap(lambda n: st.tuples(st.lists(st.integers(0, 1), min_size=n, max_size=n),
                                                      st.lists(st.integers(0, 1), min_size=n, max_size=n))))
def test_range_f1_matches_loop_oracle(yp):
    y, p = yp
    assert M.range_f1(y, p) == pytest.approx(oracle_range_f1(y, p), abs=1e-12)


def test_best_range_f1_picks_the_best_threshold():
    # Thresholds linspace(0, 1, 2) = [0, 1]; pred = s > t: t=0 flags exactly the range (F1 1), t=1 nothing.
    assert M.best_range_f1([0, 1, 1, 0], [0.0, 1.0, 1.0, 0.0], n_thresholds=2) == (1.0, 0.0)
    rng = np.random.default_rng(1)
    y = (rng.random(300) < 0.1).astype(int)
    s = rng.random(300) + y
    f1, t = M.best_range_f1(y, s)
    assert f1 == pytest.approx(M.range_f1(y, s > t))
    assert all(M.range_f1(y, s > u) <= f1 for u in np.linspace(s.min(), s.max(), 100))


def test_point_adjusted_f1_hand():
    # Range [1,3] has a hit at 2 -> all 3 steps count; range [6,7] missed; step 5 is a false alarm.
    # TP 3, FP 1, FN 2: precision 3/4, recall 3/5, F1 = 2/3.
    assert M.point_adjusted_f1([0, 1, 1, 1, 0, 0, 1, 1, 0], [0, 0, 1, 0, 0, 1, 0, 0, 0]) == pytest.approx(2 / 3)
    # A range starting at step 0 is adjusted too (TSB-AD leaves step 0 out: see the module docstring).
    assert M.point_adjusted_f1([1, 1, 0, 0], [0, 1, 0, 0]) == 1.0


def test_point_adjusted_f1_rewards_random_flags():
    # Why PA-F1 is only shown beside a random baseline: 1% random flags on five 200-step ranges.
    rng = np.random.default_rng(0)
    y = np.zeros(10_000, int)
    for a in range(1000, 10_000, 2000):
        y[a:a + 200] = 1
    p = (rng.random(10_000) < 0.01).astype(int)
    assert M.point_adjusted_f1(y, p) > 0.8
    assert M.range_f1(y, p) < 0.1


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("f", [M.auc_roc, M.auc_pr, M.vus_roc, M.vus_pr, M.range_auc_roc, M.range_auc_pr,
                               M.best_range_f1])
def test_score_metric_errors(f):
    with pytest.raises(ValueError, match="single class"):
        f([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="single class"):
        f([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="differ in length"):
        f([0, 1, 0], [0.1, 0.2])
    with pytest.raises(ValueError, match="NaN or inf"):
        f([0, 1, 0], [0.1, np.nan, 0.3])
    with pytest.raises(ValueError, match="NaN or inf"):
        f([0, 1, 0], [0.1, np.inf, 0.3])
    with pytest.raises(ValueError, match="only 0/1"):
        f([0, 2, 0], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="1-D"):
        f([], [])
    with pytest.raises(ValueError, match="real numbers"):
        f([0, 1], ["a", "b"])


def test_prediction_metric_errors():
    for f in (M.range_f1, M.point_adjusted_f1):
        with pytest.raises(ValueError, match="predictions must contain only 0/1"):
            f([0, 1, 0], [0.5, 1, 0])
        with pytest.raises(ValueError, match="differ in length"):
            f([0, 1, 0], [0, 1])
    with pytest.raises(ValueError, match="non-negative integer"):
        M.vus_pr([0, 1], [0.1, 0.2], max_window=-1)
    with pytest.raises(ValueError, match="non-negative integer"):
        M.range_auc_roc([0, 1], [0.1, 0.2], window=2.5)
    with pytest.raises(ValueError, match="n_thresholds"):
        M.vus_roc([0, 1], [0.1, 0.2], n_thresholds=0)


# ------------------------------------------------------------------ NAB, synthetic

def nab_one(scores, windows, profile="standard", probation=0.0, threshold=0.5):
    n = len(scores)
    return M.nab_score({"f": np.arange(n)}, {"f": np.asarray(scores, float)}, {"f": windows}, profile,
                       threshold, probation_fraction=probation)


def test_nab_hand_case():
    # 40 rows, one window [5, 9] (width 5), no probation. With sigma(x) = 2/(1 + e^(5x)) - 1 = -tanh(5x/2):
    #   detection at 7: TP at -(9 - 7 + 1)/5 = -0.6 -> tanh(1.5) / tanh(2.5) (scaled so a detection at
    #     the window's first row scores exactly tpWeight); the later detection at 8 is ignored;
    #   detection at 15: FP at (15 - 9)/(5 - 1) = 1.5 -> -0.11 tanh(3.75);
    #   detection at 2 (before any window): -0.11;  detection at 30: (30 - 9)/4 > 3 -> -0.11.
    scores = np.zeros(40)
    scores[[2, 7, 8, 15, 30]] = 1
    raw = math.tanh(1.5) / math.tanh(2.5) - 0.11 * math.tanh(3.75) - 0.11 - 0.11
    r = nab_one(scores, [[5, 9]])
    assert r.raw == pytest.approx(raw, abs=1e-12)
    assert (r.null, r.perfect) == (-1.0, 1.0)
    assert r.score == pytest.approx(100 * (raw + 1) / 2)
    f = r.per_file["f"]
    assert (f.tp, f.fp, f.fn, f.tn, f.n_rows) == (2, 3, 3, 32, 40)
    # Earliest row of the window: exactly tpWeight; no detection: -fnWeight (2 for low-FN).
    assert nab_one(np.eye(40)[5], [[5, 9]]).raw == pytest.approx(1.0, abs=1e-12)
    assert nab_one(np.zeros(40), [[5, 9]], "reward_low_FN_rate").raw == -2.0
    # low-FP doubles the FP weight: the same detections cost twice the penalties.
    assert nab_one(scores, [[5, 9]], "reward_low_FP_rate").raw == pytest.approx(
        math.tanh(1.5) / math.tanh(2.5) - 0.22 * (math.tanh(3.75) + 2), abs=1e-12)


def test_nab_probation_and_thresholds():
    # 40 rows, probation 15% -> rows 0..5 ignored. Window [3, 8] (width 6) starts inside probation:
    # the detection at 4 is ignored, the one at 6 scores tanh(2.5 * 3/6) / tanh(2.5).
    scores = np.zeros(40)
    scores[4] = 1
    assert nab_one(scores, [[3, 8]], probation=0.15).raw == -1.0
    scores[6] = 0.7
    r = nab_one(scores, [[3, 8]], probation=0.15, threshold=0.7)
    assert r.raw == pytest.approx(math.tanh(1.25) / math.tanh(2.5), abs=1e-12)
    assert nab_one(scores, [[3, 8]], probation=0.15, threshold=0.71).raw == -1.0   # score >= threshold
    # A window wholly inside probation never counts for null (nor can it score); perfect, as in NAB's
    # normalisation, counts every labelled window.
    r = M.nab_score({"a": np.arange(40), "b": np.arange(40)}, {"a": scores, "b": scores},
                    {"a": [[0, 2]], "b": [[20, 25]]}, threshold=2.0)
    assert (r.null, r.perfect) == (-1.0, 2.0)


def test_nab_duplicate_timestamps_use_row_positions():
    # A repeated timestamp (DST in NAB's data) before the window: NAB enters at the first row equal to
    # the window start and addresses rows by position.
    ts = np.array(["2014-01-01 00:00", "2014-01-01 01:00", "2014-01-01 01:00", "2014-01-01 02:00",
                   "2014-01-01 03:00", "2014-01-01 04:00"], dtype="datetime64[ns]")
    scores = np.array([0, 0, 0, 0, 1, 0.0])
    r = M.nab_score({"f": ts}, {"f": scores}, {"f": [["2014-01-01 01:00:00.000000", "2014-01-01 03:00"]]},
                    probation_fraction=0.0)
    # Window rows 1..4 (width 4); detection at row 4 = right edge: -(4 - 4 + 1)/4 -> tanh(0.625)/tanh(2.5).
    assert r.raw == pytest.approx(math.tanh(0.625) / math.tanh(2.5), abs=1e-12)


def test_nab_optimiser_matches_brute_force():
    rng = np.random.default_rng(7)
    ts, scores, windows = {}, {}, {}
    for i, n in enumerate((300, 500, 200)):
        ts[f"f{i}"] = np.arange(n) * 60
        scores[f"f{i}"] = np.round(rng.random(n), 2)                 # many ties
        starts = np.sort(rng.choice(np.arange(60, n - 30, 40), size=i + 1, replace=False))
        windows[f"f{i}"] = [[int(a) * 60, int(a + 10 + 5 * i) * 60] for a in starts]
        scores[f"f{i}"][starts + 3] += 0.6
    for profile in M.NAB_PROFILES:
        best = M.optimise_nab_threshold(ts, scores, windows, profile, probation_fraction=0)
        grid = np.unique(np.concatenate(list(scores.values())))
        raws = np.array([M.nab_score(ts, scores, windows, profile, t, probation_fraction=0).raw for t in grid])
        assert best.raw == pytest.approx(raws.max(), abs=1e-9)
        assert best.threshold == grid[np.flatnonzero(raws >= raws.max() - 1e-9)[-1]]
    # No detections best (every detection a false alarm): threshold just above the largest score.
    only_fp = {"f0": np.zeros(300)}
    only_fp["f0"][5] = 1.0
    r = M.optimise_nab_threshold({"f0": ts["f0"]}, only_fp, {"f0": windows["f0"]}, probation_fraction=0)
    assert r.threshold > 1.0 and r.raw == r.null


def test_nab_errors():
    ts, sc = {"f": np.arange(10)}, {"f": np.zeros(10)}
    with pytest.raises(ValueError, match="unknown NAB profile"):
        M.nab_score(ts, sc, {"f": [[2, 4]]}, "strict")
    with pytest.raises(ValueError, match="must start and end on timestamps"):
        M.nab_score(ts, sc, {"f": [[2, 40]]})
    with pytest.raises(ValueError, match="must start and end on timestamps"):
        M.nab_score(ts, sc, {"f": [[5, 7], [4, 8]]})                 # overlapping windows
    with pytest.raises(ValueError, match="no window list"):
        M.nab_score(ts, sc, {})
    with pytest.raises(ValueError, match="same files"):
        M.nab_score(ts, {"g": np.zeros(10)}, {"f": []})
    with pytest.raises(ValueError, match="undefined"):
        M.nab_score(ts, sc, {"f": []})
    with pytest.raises(ValueError, match="both be times"):
        M.nab_score({"f": np.arange(10).astype("datetime64[s]")}, sc, {"f": [[2, 4]]})
    with pytest.raises(ValueError, match="differ in length"):
        M.nab_score(ts, {"f": np.zeros(9)}, {"f": [[2, 4]]})
    with pytest.raises(ValueError, match="lacks"):
        M.nab_score(ts, sc, {"f": [[2, 4]]}, {"tpWeight": 1.0})


# ------------------------------------------------------------------ NAB, real data

WG_FILES = [   # short files where NAB's 12-digit score rounding changes the detections, one with DST repeats
    "realTraffic/speed_7578.csv", "realTraffic/speed_6005.csv", "realTraffic/occupancy_t4013.csv",
    "realKnownCause/ec2_request_latency_system_failure.csv", "artificialWithAnomaly/art_load_balancer_spikes.csv",
    "artificialNoAnomaly/art_daily_no_noise.csv",
]


@pytest.fixture(scope="module")
def validation():
    """benchmarks/validate_metrics.py: NAB's detectors and table readers live there."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "validate_metrics.py"
    spec = importlib.util.spec_from_file_location("validate_metrics", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nab_profiles_match_nab_config(shared_data):
    config = json.loads((shared_data / "nab" / "config" / "profiles.json").read_text())
    for name, weights in M.NAB_PROFILES.items():
        assert weights == {k: config[name]["CostMatrix"][k] for k in weights}


def test_nab_windowed_gaussian_files_match_nab_tables(shared_data, validation):
    nab = shared_data / "nab"
    ts, values, windows = validation.load_nab(nab, WG_FILES)
    scores = {f: validation.as_nab_csv(validation.windowed_gaussian(values[f])) for f in WG_FILES}
    for profile in M.NAB_PROFILES:
        table = validation.read_score_table(nab / "results" / f"windowedGaussian_{profile}_scores.csv")
        res = M.nab_score(ts, scores, windows, profile, threshold=1.0)
        for f in WG_FILES:
            row, ours = table[f], res.per_file[f]
            assert (ours.tp, ours.tn, ours.fp, ours.fn, ours.n_rows) == (
                row["TP"], row["TN"], row["FP"], row["FN"], row["Total_Count"]), (profile, f)
            assert ours.raw == pytest.approx(row["Score"], abs=1e-9), (profile, f)   # table: 12 digits


def test_nab_normalisation_reproduces_published_scores(shared_data, validation):
    # Null and perfect scores from our scorer over all 58 files, applied to NAB's per-file tables.
    nab = shared_data / "nab"
    ts, values, windows = validation.load_nab(nab)
    published = json.loads((nab / "results" / "final_results.json").read_text())
    zeros = {f: np.zeros(v.size) for f, v in values.items()}
    for profile in M.NAB_PROFILES:
        base = M.nab_score(ts, zeros, windows, profile, threshold=1.0)
        assert base.raw == base.null == -116 * M.NAB_PROFILES[profile]["fnWeight"]
        assert base.perfect == 116
        for detector in ("numenta", "windowedGaussian"):
            total = validation.read_score_table(nab / "results" / f"{detector}_{profile}_scores.csv")["Totals"]
            score = 100 * (total["Score"] - base.null) / (base.perfect - base.null)
            assert score == pytest.approx(published[detector][profile], abs=1e-6)
