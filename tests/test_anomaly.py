"""Time-series anomaly detection on real data: reader policies, quantiser, fit -> score end to end (bundled ASD
omi-1, NAB, SMD), stream == batch scoring, events, baselines, and a one-line error for every bad input."""
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mambaseq.config import ModelConfig, TrainConfig
from mambaseq.io.series import Series, SeriesError, read_nab, read_series, read_train_test, stream_rows
import torch

from mambaseq.pipelines.anomaly import (AnomalyError, AnomalySettings, ContextNovelty, FlatRunNovelty,
                                        RangeNovelty, STREAM_RECIPE, ScoreSmoother, StreamScorer,
                                        channel_logits, day_fraction, events_from_flags, fit, heldout_bits,
                                        load_anomaly_run, ranked_probability_score, score_files, score_stream,
                                        step_terms, steps_per_day)
from mambaseq.pipelines.anomaly_baselines import BASELINES, fill_forward
from mambaseq.metrics import auc_roc
from mambaseq.tokenizers import ValueQuantiser

from conftest import BUNDLED_DATA, run_main

ASD = BUNDLED_DATA / "anomaly"
TINY = ModelConfig(d_model=16, n_layer=1, d_state=4)
QUICK = TrainConfig(seq_len=128, batch_size=8, steps=40, lr=1e-2, warmup_steps=4, seed=0)


@pytest.fixture(scope="module")
def asd_run(tmp_path_factory):
    """Fitted once on the bundled real ASD omi-1 training file; scored on its labelled test file."""
    root = tmp_path_factory.mktemp("asd")
    summary = fit([ASD / "omi-1_train.parquet"], root / "run", settings=AnomalySettings(timestamp="t", smooth=3),
                  model_cfg=TINY, train_cfg=QUICK, device="cpu", show_progress=False)
    scored = score_files(root / "run", [ASD / "omi-1_test.parquet"], root / "scores", device="cpu",
                         show_progress=False)
    return root, summary, scored[0]


def write_csv(path, text):
    path.write_text(text)
    return path


# ---- quantiser -----------------------------------------------------------------------------------------------

def test_quantiser_constant_missing_and_out_of_range():
    train = np.column_stack([np.full(100, 5.0), np.linspace(0, 1, 100)])
    q = ValueQuantiser.fit(train, n_bins=16)
    assert np.all(np.isfinite(q.scale)) and np.all(q.scale > 0)  # constant channel: no division by zero
    ids, flagged = q.encode(train)
    assert len(np.unique(ids[:, 0])) == 1 and not flagged.any()
    ids, flagged = q.encode(np.array([[np.nan, 0.5], [5.0, 100.0], [5.0, -100.0]]))
    assert ids[0, 0] == ValueQuantiser.MISSING
    assert ids[1, 1] == q.above and ids[2, 1] == ValueQuantiser.BELOW
    assert flagged[1, 1] and flagged[2, 1] and not flagged[0, 1]
    assert ids.min() >= 0 and ids.max() < q.vocab_size
    assert ValueQuantiser.from_dict(json.loads(json.dumps(q.to_dict()))).to_dict() == q.to_dict()


def test_quantiser_bins_are_ordered_and_use_the_range():
    values = np.linspace(-3, 3, 1000)[:, None]
    q = ValueQuantiser.fit(values, n_bins=32)
    ids, flagged = q.encode(values)
    assert np.all(np.diff(ids[:, 0]) >= 0) and not flagged.any()
    assert len(np.unique(ids)) >= 25  # the 0.1-99.9% range spread over the bins


def test_quantiser_excess_counts_bin_widths_past_the_range():
    q = ValueQuantiser.fit(np.linspace(-3, 3, 1000)[:, None], n_bins=32)
    width = (q.high - q.low)[0] * q.scale[0] / q.n_bins  # one bin in raw units
    top, bottom = q.center[0] + q.high[0] * q.scale[0], q.center[0] + q.low[0] * q.scale[0]
    values = np.array([[0.0], [np.nan], [top + 2.5 * width], [bottom - 10 * width], [top - 0.5 * width]])
    np.testing.assert_allclose(q.excess(values)[:, 0], [0, 0, 2.5, 10, 0], atol=1e-9)
    assert q.encode(values)[1][:, 0].tolist() == [False, False, True, True, False]


# ---- reader --------------------------------------------------------------------------------------------------

def test_reader_columns_labels_missing_values(tmp_path):
    path = write_csv(tmp_path / "s.csv", "timestamp,a,b,note,label\n"
                     "2024-01-01 00:00:00,1.5,2,x,0\n2024-01-01 00:05:00,,3,y,1\n2024-01-01 00:10:00,NA,4,z,0\n")
    s = read_series(path)
    assert s.columns == ["a", "b"] and s.values.shape == (3, 2)  # the text column is not a value column
    assert np.isnan(s.values[1:, 0]).all() and s.values[0, 0] == 1.5
    assert s.labels.tolist() == [0, 1, 0] and s.timestamps.dtype.kind == "M"
    assert read_series(path, columns=["b"]).columns == ["b"]
    tsv = write_csv(tmp_path / "s.tsv", "a\tb\n1\t2\n3\t4\n")
    assert read_series(tsv).values.tolist() == [[1, 2], [3, 4]]


def test_reader_timestamp_order_policies(tmp_path):
    path = write_csv(tmp_path / "s.csv", "timestamp,v\n2024-01-01 00:10:00,1\n2024-01-01 00:00:00,2\n"
                     "2024-01-01 00:20:00,3\n")
    with pytest.raises(SeriesError, match=r"row 2\) goes back"):
        read_series(path)
    assert read_series(path, order="keep").values[:, 0].tolist() == [1, 2, 3]
    assert read_series(path, order="sort").values[:, 0].tolist() == [2, 1, 3]
    dup = write_csv(tmp_path / "d.csv", "timestamp,v\n2024-01-01,1\n2024-01-01,2\n")
    with pytest.raises(SeriesError, match="repeats"):
        read_series(dup)


@pytest.mark.parametrize("text, message", [
    ("", "empty file"),
    ("timestamp,v\n", "no rows"),
    ("name,kind\nx,y\nz,w\n", "no numeric value columns"),
    ("v,w\n1,\n2,\n", "column 'w' has no values"),
    ("v\n1\n2\nthree\n", "mixes numbers and text"),
    ("timestamp,v\n2024-01-01,1\nyesterday,2\n", "is not a date/time"),
    ("v,label\n1,0\n2,7\n", "must hold only 0 and 1"),
])
def test_reader_bad_files(tmp_path, text, message):
    with pytest.raises(SeriesError, match=message):
        read_series(write_csv(tmp_path / "bad.csv", text))


def test_reader_missing_file_and_column(tmp_path):
    with pytest.raises(SeriesError, match="no such file"):
        read_series(tmp_path / "absent.csv")
    path = write_csv(tmp_path / "s.csv", "v\n1\n")
    with pytest.raises(SeriesError, match="no column 'w'"):
        read_series(path, columns=["w"])
    with pytest.raises(SeriesError, match="unknown time-series format"):
        read_series(tmp_path / "s.xlsx")


def test_reader_benchmark_layouts(shared_data):
    train, test = read_train_test(shared_data / "smd", "machine-2-1")
    assert train.values.shape[1] == 38 and test.labels.sum() > 0 and train.labels is None
    corpus = read_nab(shared_data / "nab")
    assert len(corpus) == 58
    name, series, windows = next(c for c in corpus if c[0] == "realKnownCause/nyc_taxi.csv")
    assert len(windows) == 5 and 0 < series.labels.sum() < len(series)
    # NAB keeps file order where timestamps repeat; the default policy would refuse that file
    with pytest.raises(SeriesError, match="repeats"):
        read_series(shared_data / "nab" / "data" / "realAdExchange" / "exchange-2_cpc_results.csv")


# ---- fit and score -------------------------------------------------------------------------------------------

def test_fit_and_score_bundled_asd(asd_run):
    root, summary, scored = asd_run
    run = load_anomaly_run(root / "run", device="cpu")
    assert run.model.config.n_channels == 19 and run.quantiser.vocab_size == run.model.config.vocab_size
    history = [json.loads(line) for line in (root / "run" / "train.jsonl").read_text().splitlines()]
    assert history[-1]["train_bits_per_value"] < history[0]["train_bits_per_value"] - 1  # it learns
    frame = pl.read_parquet(root / "scores" / "omi-1_test.scores.parquet")
    assert frame.height == 4320 and frame["score"].is_finite().all()
    assert (frame["flagged"] == (frame["score"] > run.threshold)).all()
    assert 0 <= scored["vus_pr"] <= 1 and 0 <= scored["auc_roc"] <= 1 and 0 <= scored["range_f1"] <= 1
    events = pl.read_csv(root / "scores" / "omi-1_test.events.csv")
    assert events.height == scored["events"] and (events["end_row"] > events["start_row"]).all()
    assert (root / "scores" / "omi-1_test.png").stat().st_size > 10_000
    assert (root / "run" / "loss.png").is_file()


def test_injected_anomaly_stands_out(asd_run):
    """Real omi-1 test rows with 30 steps of one metric jammed at 3x its training maximum: those steps score
    far above the rest."""
    root, _, _ = asd_run
    run = load_anomaly_run(root / "run", device="cpu")
    test = read_series(ASD / "omi-1_test.parquet", timestamp="t")
    normal = np.flatnonzero(test.labels == 0)[:1500]
    values = test.values[normal].copy()
    train_max = read_series(ASD / "omi-1_train.parquet", timestamp="t").values.max(axis=0)
    values[1000:1030, 2] = 3 * train_max[2] + 0.1
    labels = np.zeros(len(values), np.int8)
    labels[1000:1030] = 1
    result = run.scorer().push(values)
    assert auc_roc(labels, result["score"]) > 0.95
    assert result["out_of_range"][1000:1030].all()


def test_ranked_probability_score_grows_with_distance():
    """All mass on bin 10: an observation d bins away costs d (NLL would call every miss equally improbable)."""
    sure = torch.zeros(20)
    sure[10] = 1.0
    got = ranked_probability_score(sure.expand(4, 20), torch.tensor([10, 11, 14, 7]))
    assert got.tolist() == [0.0, 1.0, 4.0, 3.0]
    spread = torch.full((20,), 0.05)  # uniform: sum over k of (F_k - [x <= k])^2 by hand
    by_hand = sum(((k + 1) * 0.05 - (5 <= k)) ** 2 for k in range(20))
    assert ranked_probability_score(spread, torch.tensor(5)).item() == pytest.approx(by_hand, rel=1e-6)


def test_scores_match_the_model_predictions(asd_run):
    """The scorer's per-step NLL and RPS (bins plus the distance past their range) against numpy sums over the
    model's own next-step distributions; the run's default score is the smoothed RPS; a run folder saved before
    `score` existed is read as NLL."""
    root, _, _ = asd_run
    run = load_anomaly_run(root / "run", device="cpu")
    assert run.settings.score == "rps"
    values = read_series(ASD / "omi-1_test.parquet", timestamp="t").values[:200]
    values[50, 4] = 1e6  # far past the bin range: the RPS adds the distance in bin widths
    ids = run.quantiser.encode(values)[0]
    with torch.no_grad():
        logits = channel_logits(run.model, torch.from_numpy(ids)[None])[0].double().numpy()  # (T, C, V)
    nll, rps = np.zeros(len(ids)), np.zeros(len(ids))
    for t in range(1, len(ids)):
        for c, x in enumerate(ids[t]):
            z = logits[t - 1, c]
            nll[t] -= z[x] - np.log(np.exp(z - z.max()).sum()) - z.max()
            p = np.exp(z[1:] - z[1:].max())  # value bins only (bin 0 is MISSING)
            cdf = np.cumsum(p / p.sum())
            rps[t] += ((cdf - (np.arange(1, len(z)) >= x)) ** 2).sum()
    excess = run.quantiser.excess(values).sum(1)
    assert excess[50] > 1000
    rps += excess
    result = run.scorer().push(values)
    np.testing.assert_allclose(result["nll"], nll, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(result["rps"], rps, rtol=1e-4, atol=1e-4)
    smoothed = [rps[max(0, t - 2):t + 1].mean() for t in range(len(rps))]  # smooth=3
    np.testing.assert_allclose(result["score"], smoothed, rtol=1e-4, atol=1e-4)
    config = json.loads((root / "run" / "config.json").read_text())
    del config["extra"]["settings"]["score"]
    old = root / "old_run"
    old.mkdir(exist_ok=True)
    for f in (root / "run").iterdir():
        (old / f.name).write_bytes(f.read_bytes())
    (old / "config.json").write_text(json.dumps(config))
    assert load_anomaly_run(old, device="cpu").settings.score == "nll"


def test_threshold_flags_about_the_quantile_on_training_data(asd_run):
    root, _, _ = asd_run
    run = load_anomaly_run(root / "run", device="cpu")
    train = read_series(ASD / "omi-1_train.parquet", timestamp="t")
    score = run.scorer().push(train.values)["score"]
    held_out = score[int(round(len(score) * 0.85)):]
    # the threshold is the quantile of exactly these scores (rescoring may differ by float rounding)
    assert np.mean(held_out > run.threshold) <= 1 - run.settings.threshold_quantile + 0.002


def test_stream_chunks_equal_one_pass(asd_run):
    root, _, _ = asd_run
    run = load_anomaly_run(root / "run", device="cpu")
    values = read_series(ASD / "omi-1_test.parquet", timestamp="t").values[:700]
    values[5:9, 3] = np.nan  # missing values stream the same way
    whole = run.scorer().push(values)
    scorer, parts, rng, at = run.scorer(), [], np.random.default_rng(0), 0
    while at < len(values):
        size = int(rng.integers(1, 60))
        parts.append(scorer.push(values[at:at + size]))
        at += size
    for key in ("nll", "rps", "score"):
        np.testing.assert_allclose(np.concatenate([p[key] for p in parts]), whole[key], rtol=1e-4, atol=1e-4)
    for post in (dict(smooth=3, adaptive_window=100),
                 dict(baseline_window=50, season_days=2, season_period=40, season_slack=2, gate=5)):
        scorer = StreamScorer(run.model, run.quantiser, "cpu", smoother=ScoreSmoother(**post))
        pieces = [scorer.push(values[a:a + 37])["score"] for a in range(0, len(values), 37)]
        expected = StreamScorer(run.model, run.quantiser, "cpu", smoother=ScoreSmoother(**post)).push(values)
        np.testing.assert_allclose(np.concatenate(pieces), expected["score"], rtol=1e-4, atol=1e-4)


def test_predict_scores_series_files_like_anomaly_score(asd_run, tmp_path, monkeypatch, capsys):
    """`mambaseq predict` with an anomaly run: the same per-step scores; a bad file fails alone (exit 1)."""
    root, _, _ = asd_run
    inputs = tmp_path / "in"
    inputs.mkdir()
    pl.read_parquet(ASD / "omi-1_test.parquet").head(500).write_csv(inputs / "part.csv")
    write_csv(inputs / "broken.csv", "t,f00\n0,1\n")  # other columns than the training data
    code, _, err = run_main(monkeypatch, capsys, "predict", "--model", root / "run", inputs, "--out",
                            tmp_path / "out", "--device", "cpu", "--max-tokens", "128")
    assert code == 1 and "broken.csv" in err and "no column 'f01'" in err, err
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    done = [e for e in manifest["files"].values() if e["status"] == "done"]
    assert len(done) == 1 and done[0]["records"] == 500
    predicted = pl.read_parquet(tmp_path / "out" / done[0]["output"])
    score_files(root / "run", [inputs / "part.csv"], tmp_path / "ref", plot=False, device="cpu", show_progress=False)
    expected = pl.read_parquet(tmp_path / "ref" / "part.scores.parquet")
    np.testing.assert_allclose(predicted["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-4, atol=1e-4)


def test_adaptive_score_fades_after_a_lasting_change():
    """The adaptive score is a z-score against recent history: a level shift spikes, then becomes normal."""
    nll = np.where(np.arange(600) < 300, 1.0, 5.0) + 0.1 * np.sin(np.arange(600))
    score = ScoreSmoother(smooth=1, adaptive_window=50).update(nll)
    assert np.argmax(score) == 300 and score[300] > 20 and abs(score[599]) < 3
    assert ScoreSmoother(smooth=4).update(np.arange(6.0)).tolist() == [0, 0.5, 1, 1.5, 2.5, 3.5]


def excess_reference(x, window, q, days, period, slack, gate, cap=0.0, margin=1.0):
    """ScoreSmoother's baseline, cap and gate stages written plainly over the whole array (smooth = 1)."""
    s = np.empty(len(x))
    for t in range(len(x)):
        base = np.quantile(x[max(0, t - window):t], q) if t else 0.0
        season = [x[max(0, t - j * period - slack):t - max(1, j * period - slack) + 1]
                  for j in range(1, days + 1) if j * period <= t]
        s[t] = x[t] - max([base] + [v.max() for v in season])
        if cap:
            s[t] = min(s[t], cap)
    return gate_reference(s, gate, margin) if gate else s


def gate_reference(s, gate, margin=1.0):
    def passes(t):
        top = s[max(0, t - gate):t].max()
        return s[t] > top + (margin - 1.0) * max(top, 0.0)
    return np.array([s[t] if t == 0 or passes(t) else min(s[t], 0.0) for t in range(len(s))])


@pytest.mark.parametrize("window, q, days, period, slack, gate, cap, margin", [
    (20, 0.9, 2, 7, 1, 3, 0.0, 1.0), (5, 0.5, 0, 0, 6, 0, 0.0, 1.0), (30, 1.0, 3, 4, 6, 10, 0.0, 1.0),
    (20, 0.9, 2, 7, 1, 6, 3.0, 1.3), (10, 0.8, 0, 0, 6, 4, 0.0, 1.5)])
def test_baseline_excess_cap_and_gate_match_a_plain_reference(window, q, days, period, slack, gate, cap, margin):
    x = np.random.default_rng(window).gamma(1.0, size=300)
    x[150:160] += 8.0
    smoother = ScoreSmoother(baseline_window=window, baseline_quantile=q, season_days=days, season_period=period,
                             season_slack=slack, gate=gate, model_cap=cap, gate_margin=margin)
    got = np.concatenate([smoother.update(x[a:a + 23]) for a in range(0, len(x), 23)])
    want = excess_reference(x, window, q, days, period, slack, gate, cap, margin)
    np.testing.assert_allclose(got, want, atol=1e-12)
    if cap:  # the cap is reached: the burst's first step alerts at the cap, none of its later steps does
        assert got.max() == cap and (got[151:160] <= 0).all()


def test_daily_repeats_stop_alerting_the_gate_keeps_one_alert_and_settings_are_checked():
    x = np.zeros(24 * 6)
    x[24 * np.arange(6) + 7] = 10.0  # a spike at the same hour every day: an alert on the first day only
    score = ScoreSmoother(baseline_window=200, season_days=3, season_period=24, season_slack=1).update(x)
    assert score[7] == 10.0 and (score[24 * np.arange(1, 6) + 7] == 0.0).all()
    plateau = np.concatenate([np.zeros(50), np.full(10, 5.0), np.zeros(10)])
    gated = ScoreSmoother(baseline_window=100, baseline_quantile=0.5, gate=20).update(plateau)
    assert gated[50] == 5.0 and (gated[51:] <= 0).all()
    for bad in (dict(adaptive_window=10, baseline_window=10), dict(season_days=2), dict(gate=-1),
                dict(baseline_window=10, baseline_quantile=0.0), dict(model_cap=5.0),
                dict(baseline_window=10, model_cap=-1.0), dict(baseline_window=10, gate=5, gate_margin=0.5),
                dict(threshold=float("nan"))):
        with pytest.raises(AnomalyError):
            AnomalySettings(**bad)


def range_reference(values, steps, window, warmup):
    """RangeNovelty written plainly over the whole (T, C) array: every window recomputed from scratch."""
    out = np.zeros(len(values))
    for t in range(warmup, len(values)):
        per_channel = []
        for v in values.T:
            means = np.array([v[max(0, s - steps + 1):s + 1].mean() for s in range(t + 1)])
            past_means, past = means[max(0, t - window):t], v[max(0, t - window):t]
            spread = max(np.quantile(past, 0.75) - np.quantile(past, 0.25), 0.02 * np.ptp(v[:t]), 1e-9)
            per_channel.append(max(means[t] - past_means.max(), past_means.min() - means[t]) / spread)
        out[t] = max(per_channel)
    return out


def test_range_novelty_matches_a_plain_reference_and_leaves_the_model_score_alone_inside_the_range():
    rng = np.random.default_rng(3)
    values = np.cumsum(rng.normal(size=(260, 3)), axis=0)
    values[200:205, 1] += 100.0  # far outside channel 1's range
    values[:, 2] = np.where(np.arange(260) % 37 == 0, 1.0, 0.0)  # IQR 0: its spread is 2% of the range
    values[5, 2], values[230, 2] = -1.0, 3.0
    novelty = RangeNovelty(steps=3, window=50, warmup=25)  # the smoother below uses its baseline window
    got = np.array([novelty.step(row) for row in values.tolist()])
    np.testing.assert_allclose(got, range_reference(values, 3, 50, 25), rtol=1e-9, atol=1e-12)
    assert got[200] > 5 and (got[:25] == 0).all()

    raw = rng.gamma(1.0, size=len(values))
    base = dict(baseline_window=50, baseline_quantile=0.9, gate=5)
    plain = ScoreSmoother(**base).update(raw)
    smoother = ScoreSmoother(**base, range_weight=2.0, range_steps=3, range_warmup=25)
    chunked = np.concatenate([smoother.update(raw[a:a + 17], values[a:a + 17]) for a in range(0, len(raw), 17)])
    excess = ScoreSmoother(baseline_window=50, baseline_quantile=0.9).update(got)  # the novelty's own excess
    ungated = np.maximum(ScoreSmoother(**dict(base, gate=0)).update(raw), 2.0 * excess)
    np.testing.assert_allclose(chunked, gate_reference(ungated, 5), atol=1e-12)
    assert chunked[200] > 5 > plain[200]
    # the model cap leaves the novelty alone: the model's excess is capped at 0.5, the range term is not
    capped = ScoreSmoother(**base, range_weight=2.0, range_steps=3, range_warmup=25, model_cap=0.5).update(raw, values)
    model_capped = np.minimum(ScoreSmoother(**dict(base, gate=0)).update(raw), 0.5)
    np.testing.assert_allclose(capped, gate_reference(np.maximum(model_capped, 2.0 * excess), 5), atol=1e-12)
    assert capped[200] == chunked[200] > 5
    with pytest.raises(AnomalyError, match="values"):
        ScoreSmoother(**base, range_weight=2.0).update(raw)
    # a missing value scores 0 for its channel and is not remembered: the other channels decide that step
    gappy = values.copy()
    gappy[100:110, 0] = np.nan
    with_gap = RangeNovelty(steps=3, window=50, warmup=25)
    scores = np.array([with_gap.step(row) for row in gappy.tolist()])
    np.testing.assert_allclose(scores[100:110], range_reference(values[:, 1:], 3, 50, 25)[100:110], rtol=1e-9)
    assert RangeNovelty(warmup=1).step([np.nan]) == 0.0 and np.isfinite(scores).all()
    for bad in (dict(range_weight=1.0), dict(baseline_window=10, range_weight=-1.0),
                dict(baseline_window=10, range_weight=1.0, range_steps=0)):
        with pytest.raises(AnomalyError):
            AnomalySettings(**bad)


def context_reference(values, lags, bins, warmup):
    """ContextNovelty written plainly: bins from the warm-up, every past step's facts recounted at each step."""
    out = np.zeros(len(values))
    per_channel = np.full((len(values), values.shape[1]), np.nan)
    for c, v in enumerate(values.T):
        seen = v[:warmup][~np.isnan(v[:warmup])]
        lo, hi = (seen.min(), seen.max()) if len(seen) else (0.0, 0.0)
        width = max(hi - lo, 1e-9 * max(abs(lo), abs(hi), 1.0)) / bins
        sym = [bins + 2 if np.isnan(x) else int(np.clip(np.floor((x - lo) / width), -1, bins)) + 1 for x in v]
        fact = lambda s, d: (sym[s - d] if s >= d else "pad", sym[s])  # noqa: E731
        for t in range(len(v)):
            total = 0.0
            for d in range(1, lags + 1):
                past = [fact(s, d) for s in range(t)]
                if fact(t, d) not in past:
                    singles = sum(past.count(f) == 1 for f in set(past))
                    total += -np.log((singles + 1) / (t + 1))
            per_channel[t, c] = np.nan if np.isnan(v[t]) else total / lags
    for t in range(warmup, len(values)):
        finite = per_channel[t][~np.isnan(per_channel[t])]
        out[t] = finite.max() if len(finite) else 0.0
    return out


def flat_reference(values, min_run, warmup):
    """FlatRunNovelty written plainly: run lengths of equal consecutive values, records over all earlier runs."""
    out = np.zeros(len(values))
    for v in values.T:
        run = np.zeros(len(v), int)
        for t in range(1, len(v)):
            run[t] = run[t - 1] + 1 if v[t] == v[t - 1] else 0
        for t in range(warmup, len(v)):
            earlier = run[:t - run[t] + 1].max()  # the runs that ended before the current one began
            out[t] = max(out[t], float(run[t] == max(earlier, min_run) + 1))
    return out


def test_context_and_flat_novelties_match_plain_references_and_join_the_score():
    rng = np.random.default_rng(5)
    t = np.arange(240)
    values = np.column_stack([np.sin(t / 5.0) + 0.05 * rng.normal(size=240), np.round(rng.normal(size=240), 1)])
    values[150, 0] = -values[150, 0]  # a familiar value (the crest) right after the trough: never seen
    values[60:75, 1] = 0.3  # a 14-step flat run in the warm-up: the record to beat
    values[180:200, 1] = 0.7  # a 19-step run after it
    values[100:104, 0] = np.nan  # missing values: their own symbol, no novelty of their own
    context = ContextNovelty(lags=5, bins=4, warmup=80)
    got = np.array([context.step(row) for row in values.tolist()])
    np.testing.assert_allclose(got, context_reference(values, 5, 4, 80), rtol=1e-12, atol=1e-12)
    assert (got[:80] == 0).all() and got[150] > 2 * np.median(got[80:150])
    flat = FlatRunNovelty(min_run=10, warmup=80)
    fired = np.array([flat.step(row) for row in values.tolist()])
    np.testing.assert_array_equal(fired, flat_reference(values, 10, 80))
    assert fired.nonzero()[0].tolist() == [180 + 15]  # the step the run first outlasts the 14-step record (+1)

    raw = rng.gamma(1.0, size=len(values))
    base = dict(baseline_window=50, baseline_quantile=0.9, gate=5)
    smoother = ScoreSmoother(**base, range_warmup=80, context_weight=3.0, context_lags=5, context_bins=4,
                             flat_weight=25.0)
    chunked = np.concatenate([smoother.update(raw[a:a + 23], values[a:a + 23]) for a in range(0, len(raw), 23)])
    own_excess = lambda n: ScoreSmoother(baseline_window=50, baseline_quantile=0.9).update(n)  # noqa: E731
    ungated = np.maximum.reduce([ScoreSmoother(**dict(base, gate=0)).update(raw), 3.0 * own_excess(got),
                                 25.0 * own_excess(fired)])
    np.testing.assert_allclose(chunked, gate_reference(ungated, 5), atol=1e-12)
    assert chunked[195] >= 25 > ScoreSmoother(**base).update(raw)[195]  # the flat record alone raises an alert
    for bad in (dict(context_weight=1.0), dict(baseline_window=10, flat_weight=-1.0),
                dict(baseline_window=10, context_weight=1.0, context_lags=0),
                dict(baseline_window=10, context_weight=1.0, context_bins=0)):
        with pytest.raises(AnomalyError):
            AnomalySettings(**bad)
    with pytest.raises(AnomalyError, match="values"):
        ScoreSmoother(baseline_window=10, flat_weight=1.0).update(raw)


def test_steps_per_day_from_timestamps():
    stamps = np.datetime64("2024-01-01T00:00") + np.arange(10) * np.timedelta64(5, "m")
    assert steps_per_day(Series("s", np.zeros((10, 1)), ["v"], stamps)) == 288
    with pytest.raises(AnomalyError, match="datetime timestamps"):
        steps_per_day(Series("s", np.zeros((10, 1)), ["v"], np.arange(10.0)))
    every_two_days = np.datetime64("2024-01-01T00:00") + np.arange(3) * np.timedelta64(2, "D")
    with pytest.raises(AnomalyError, match="sub-daily"):
        steps_per_day(Series("s", np.zeros((3, 1)), ["v"], every_two_days))


def test_cli_stream_matches_file_scores(asd_run, tmp_path, monkeypatch, capsys):
    root, _, _ = asd_run
    csv = tmp_path / "test.csv"
    pl.read_parquet(ASD / "omi-1_test.parquet").head(400).write_csv(csv)
    code, out, err = run_main(monkeypatch, capsys, "anomaly", "score", "--model", root / "run", "--stream", csv,
                              "--device", "cpu")
    assert code in (0, None), err
    streamed = pl.read_csv(out.encode())
    batch = score_files(root / "run", [csv], tmp_path / "batch", plot=False, device="cpu", show_progress=False)
    frame = pl.read_parquet(tmp_path / "batch" / "test.scores.parquet")
    assert streamed.height == 400 == batch[0]["steps"]
    np.testing.assert_allclose(streamed["score"].to_numpy(), frame["score"].to_numpy(), rtol=1e-4, atol=1e-4)
    assert streamed["row"].to_list() == list(range(400))


def test_stream_follows_a_growing_file(asd_run, tmp_path):
    root, _, _ = asd_run
    rows = pl.read_parquet(ASD / "omi-1_test.parquet").head(120)
    path = tmp_path / "live.csv"
    lines = rows.write_csv().splitlines(keepends=True)
    path.write_text("".join(lines[:50]))

    def append():  # the rest arrives later, in pieces, one split mid-line
        time.sleep(0.4)
        rest = "".join(lines[50:])
        with open(path, "a") as f:
            f.write(rest[:1000])
            f.flush()
            time.sleep(0.4)
            f.write(rest[1000:])

    writer = threading.Thread(target=append)
    writer.start()
    import io
    sink = io.StringIO()
    n = score_stream(root / "run", str(path), follow=True, idle_seconds=1.5, device="cpu", sink=sink)
    writer.join()
    assert n == 120 and len(sink.getvalue().splitlines()) == 121


def test_stream_reader_errors(tmp_path):
    path = write_csv(tmp_path / "s.csv", "a,b\n1,2\n3,x\n")
    fd = os.open(path, os.O_RDONLY)
    with pytest.raises(SeriesError, match="'x' is not a number"):
        list(stream_rows(fd, ["a", "b"], None, name="s.csv"))
    os.close(fd)
    fd = os.open(path, os.O_RDONLY)
    with pytest.raises(SeriesError, match="no column 'c'"):
        list(stream_rows(fd, ["c"], None, name="s.csv"))
    os.close(fd)


def test_streaming_over_stdin_in_a_subprocess(asd_run, tmp_path):
    root, _, _ = asd_run
    text = pl.read_parquet(ASD / "omi-1_test.parquet").head(30).write_csv()
    proc = subprocess.run([sys.executable, "-m", "mambaseq", "anomaly", "score", "--model", str(root / "run"),
                           "--stream", "-", "--device", "cpu"], input=text, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 31


def test_constant_series_is_defined(tmp_path):
    """A constant training series: no division by zero, finite scores, a change stands out."""
    path = write_csv(tmp_path / "flat.csv", "v\n" + "3.0\n" * 400)
    fit([path], tmp_path / "run", model_cfg=TINY, train_cfg=TrainConfig(seq_len=64, batch_size=4, steps=20,
        lr=1e-2, warmup_steps=2), device="cpu", show_progress=False)
    run = load_anomaly_run(tmp_path / "run", device="cpu")
    result = run.scorer().push(np.r_[np.full(50, 3.0), [9.0], np.full(10, 3.0)][:, None])
    assert np.isfinite(result["score"]).all()
    assert set(np.argsort(result["score"])[-2:].tolist()) == {50, 51}  # the jump away and the jump back


def test_fit_on_nab_probationary_part(tmp_path):
    """NAB style: fit on the first 15% of the bundled nyc_taxi file (30-minute steps), score the whole file with
    the stream post-processing and the three value novelties (anomaly_bench.py's NAB recipe); the steps per day
    come from the timestamps."""
    settings = AnomalySettings(fit_fraction=0.15, **STREAM_RECIPE)
    summary = fit([ASD / "nyc_taxi.csv"], tmp_path / "run", settings=settings, model_cfg=TINY,
                  train_cfg=QUICK, device="cpu", show_progress=False)
    assert summary["seq_len"] == 128
    run = load_anomaly_run(tmp_path / "run", device="cpu")
    assert run.settings.season_period == 48 and (run.settings.gate, run.settings.gate_margin) == (60, 1.2)
    assert run.settings.model_cap == 17.5 and run.threshold == summary["threshold"] == 14.0
    assert (run.settings.context_weight, run.settings.flat_weight, run.settings.range_warmup) == (10, 25, 750)
    scored = score_files(tmp_path / "run", [ASD / "nyc_taxi.csv"], tmp_path / "out", plot=False, device="cpu",
                         show_progress=False)
    frame = pl.read_parquet(tmp_path / "out" / "nyc_taxi.scores.parquet")
    assert frame.height == 10320 and frame["timestamp"].dtype.is_temporal()
    assert scored[0]["steps"] == 10320
    raw = frame["rps"].to_numpy()
    values = read_series(ASD / "nyc_taxi.csv", order="keep").values
    np.testing.assert_allclose(frame["score"].to_numpy(),
                               ScoreSmoother.from_settings(run.settings).update(raw, values), rtol=1e-6, atol=1e-6)


def test_stream_recipe_from_the_cli_fills_the_options_left_at_their_defaults(tmp_path, monkeypatch, capsys):
    code, _, err = run_main(monkeypatch, capsys, "anomaly", "fit", ASD / "nyc_taxi.csv", "--fit-fraction", "0.15",
                            "--recipe", "stream", "--gate", "30", "--steps", "2", "--batch-size", "2", "--d-model",
                            "16", "--n-layer", "1", "--device", "cpu", "--out", tmp_path / "run")
    assert code in (0, None), err
    settings = load_anomaly_run(tmp_path / "run", device="cpu").settings
    assert settings.gate == 30  # given: kept
    assert {k: getattr(settings, k) for k in STREAM_RECIPE if k != "gate"} == \
        {k: v for k, v in STREAM_RECIPE.items() if k != "gate"}
    code, _, err = run_main(monkeypatch, capsys, "anomaly", "fit", ASD / "nyc_taxi.csv", "--recipe", "nab",
                            "--device", "cpu", "--out", tmp_path / "bad")
    assert code == 2 and err.strip() == "error: --recipe must be none or stream, got 'nab'"
    assert not (tmp_path / "bad").exists()


def test_heldout_selection_keeps_the_weights_with_the_lowest_loss(tmp_path):
    """eval_every: the held-out calibration part is scored during the fit and the best weights are the ones saved
    (the run's held-out loss, recomputed from the saved model, is the lowest of the recorded ones)."""
    settings = AnomalySettings(fit_fraction=0.15, order="keep")
    cfg = TrainConfig(seq_len=128, batch_size=8, steps=30, lr=3e-2, warmup_steps=2, seed=0, eval_every=5)
    summary = fit([ASD / "nyc_taxi.csv"], tmp_path / "run", settings=settings, model_cfg=TINY, train_cfg=cfg,
                  device="cpu", show_progress=False)
    history = [json.loads(line) for line in (tmp_path / "run" / "train.jsonl").read_text().splitlines()]
    held = {r["step"]: r["heldout_bits_per_value"] for r in history if "heldout_bits_per_value" in r}
    assert sorted(held) == [5, 10, 15, 20, 25, 30]
    assert summary["kept_step"] == min(held, key=held.get)
    assert summary["heldout_bits_per_value"] == pytest.approx(min(held.values()))

    run = load_anomaly_run(tmp_path / "run", device="cpu")
    values = read_series(ASD / "nyc_taxi.csv", order="keep").values
    n = int(round(0.15 * len(values)))
    tokens = torch.from_numpy(run.quantiser.encode(values[:n])[0])
    again = heldout_bits(run.model, [tokens], [int(round(n * 0.85))], 128)
    assert again == pytest.approx(summary["heldout_bits_per_value"], abs=1e-4)

    last = fit([ASD / "nyc_taxi.csv"], tmp_path / "last", settings=settings, model_cfg=TINY, device="cpu",
               train_cfg=TrainConfig(**{**cfg.to_dict(), "eval_every": 30}), show_progress=False)
    assert last["kept_step"] == 30 and last["heldout_bits_per_value"] == pytest.approx(held[30], abs=1e-4)


def daily_csv(path, days=8, per_day=96, quiet_day=None, seed=0):
    """15-minute steps; the value jumps from 10 to 60 from 9:00 to 17:00 every day but `quiet_day`."""
    rng = np.random.default_rng(seed)
    n = days * per_day
    stamps = np.datetime64("2024-01-01T00:00") + np.arange(n) * np.timedelta64(24 * 60 // per_day, "m")
    hour = (np.arange(n) % per_day) * 24 / per_day
    busy = (hour >= 9) & (hour < 17)
    if quiet_day is not None:
        busy[quiet_day * per_day:(quiet_day + 1) * per_day] = False
    pl.DataFrame({"timestamp": stamps.astype(str), "value": 10 + 50 * busy + rng.normal(0, 1, n)}).write_csv(path)
    return path


def test_time_of_day_input_is_read_not_scored_and_streams_like_files(tmp_path, monkeypatch, capsys):
    """--time-of-day: the model reads the fraction of the day as a second input channel; the scores sum over the
    value channel only (checked against the model's own predictions); the stream gives the file's scores; and the
    input makes a missing daily event stand out (a plain next-value model expects no jump, so it sees none)."""
    train = daily_csv(tmp_path / "train.csv")
    cfg = TrainConfig(**{**QUICK.to_dict(), "steps": 60})
    test = daily_csv(tmp_path / "test.csv", days=3, quiet_day=1, seed=1)
    series = read_series(test)
    expected_jump = slice(96 + 36, 96 + 40)  # 9:00-10:00 on the quiet day
    missed = {}
    for time_of_day in (False, True):
        fit([train], tmp_path / str(time_of_day), settings=AnomalySettings(fit_fraction=0.5, time_of_day=time_of_day),
            model_cfg=TINY, train_cfg=cfg, device="cpu", show_progress=False)
        scored = load_anomaly_run(tmp_path / str(time_of_day), device="cpu").scorer().push(
            series.values, timestamps=series.timestamps)
        missed[time_of_day] = scored["rps"][expected_jump].mean()
    assert missed[True] > 10 * missed[False]
    run = load_anomaly_run(tmp_path / "True", device="cpu")
    assert run.settings.time_of_day and run.model.config.n_channels == 2
    inputs = np.column_stack([series.values, day_fraction(series.timestamps, "test")])
    assert inputs[1, 1] == pytest.approx(0.25 / 24) and np.all((inputs[:, 1] >= 0) & (inputs[:, 1] < 1))
    ids = torch.from_numpy(run.quantiser.encode(inputs)[0])
    with torch.no_grad():
        logits = channel_logits(run.model, ids[None])[0]
    _, rps = step_terms(logits[:-1], ids[1:])
    expected = np.concatenate([[0.0], rps[:, 0].double().numpy()]) + run.quantiser.excess(inputs)[:, 0]
    score_files(tmp_path / "True", [test], tmp_path / "out", plot=False, device="cpu", show_progress=False)
    frame = pl.read_parquet(tmp_path / "out" / "test.scores.parquet")
    np.testing.assert_allclose(frame["rps"].to_numpy(), expected, rtol=1e-4, atol=1e-4)

    code, out, err = run_main(monkeypatch, capsys, "anomaly", "score", "--model", tmp_path / "True", "--stream", test,
                              "--device", "cpu")
    assert code in (0, None), err
    np.testing.assert_allclose(pl.read_csv(out.encode())["score"].to_numpy(), frame["score"].to_numpy(),
                               rtol=1e-4, atol=1e-4)

    numeric = tmp_path / "numeric.csv"
    pl.DataFrame({"t": np.arange(200), "value": np.sin(np.arange(200.0))}).write_csv(numeric)
    code, _, err = run_main(monkeypatch, capsys, "anomaly", "fit", numeric, "--timestamp", "t", "--time-of-day",
                            "--out", tmp_path / "bad", "--steps", "2", "--device", "cpu")
    assert code == 2 and err.strip() == ("error: numeric: the model reads the time of day (time_of_day): it needs "
                                         "datetime timestamps")
    code, _, err = run_main(monkeypatch, capsys, "anomaly", "fit", numeric, "--timestamp", "t", "--model-cap", "5",
                            "--out", tmp_path / "bad", "--steps", "2", "--device", "cpu")
    assert code == 2 and err.strip() == ("error: model_cap caps the model's excess over its baseline: it needs "
                                         "baseline_window > 0")
    assert not (tmp_path / "bad").exists()
    no_time = tmp_path / "no_time.csv"
    pl.read_csv(test).drop("timestamp").write_csv(no_time)
    code, _, err = run_main(monkeypatch, capsys, "anomaly", "score", "--model", tmp_path / "True", no_time, "--out",
                            tmp_path / "nope", "--device", "cpu")
    assert code == 2 and err.strip().startswith("error: no_time: the model reads the time of day")
    assert not (tmp_path / "nope" / "no_time.scores.parquet").exists()

def test_fit_and_score_real_smd(shared_data, tmp_path):
    smd = shared_data / "smd"
    settings = AnomalySettings(timestamp="t", smooth=5)
    fit([smd / "machine-2-1_train.parquet"], tmp_path / "run", settings=settings, model_cfg=TINY, train_cfg=QUICK,
        device="cpu", show_progress=False)
    scored = score_files(tmp_path / "run", [smd / "machine-2-1_test.parquet"], tmp_path / "out", plot=False,
                         device="cpu", show_progress=False)
    assert scored[0]["steps"] == 23694 and 0 <= scored[0]["vus_pr"] <= 1 and 0 <= scored[0]["auc_roc"] <= 1


def test_events_merge_gaps():
    flags = np.array([0, 1, 1, 0, 0, 1, 0, 1, 0, 0, 0, 1], bool)
    score = np.arange(12, dtype=float)
    assert events_from_flags(flags, score) == [(1, 3, 2.0), (5, 6, 5.0), (7, 8, 7.0), (11, 12, 11.0)]
    assert events_from_flags(flags, score, merge_gap=2) == [(1, 8, 7.0), (11, 12, 11.0)]
    assert events_from_flags(np.zeros(5, bool), score[:5]) == []


# ---- baselines -----------------------------------------------------------------------------------------------

def test_fill_forward():
    x = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, np.nan], [4.0, 5.0]])
    assert fill_forward(x).tolist() == [[2.0, 1.0], [2.0, 1.0], [2.0, 1.0], [4.0, 5.0]]


def test_baselines_on_real_asd():
    train = read_series(ASD / "omi-1_train.parquet", timestamp="t").values
    test = read_series(ASD / "omi-1_test.parquet", timestamp="t")
    aucs = {name: auc_roc(test.labels, cls().fit(train).score(test.values)) for name, cls in BASELINES.items()}
    assert abs(aucs["random"] - 0.5) < 0.05
    assert all(0 <= a <= 1 for a in aucs.values())
    # injected faults: one metric jammed far above its training range (PCA's reconstruction misses it), and
    # every metric at once (IsolationForest cannot extrapolate along one axis: a lone out-of-range feature
    # lands in the same leaf as the largest training values)
    labels = np.zeros(1500, np.int8)
    labels[700:730] = 1
    one, every = test.values[:1500].copy(), test.values[:1500].copy()
    one[700:730, 4] = 5 * np.nanmax(train[:, 4]) + 1
    every[700:730] = 5 * np.nanmax(train, axis=0) + 1
    assert auc_roc(labels, BASELINES["pca"]().fit(train).score(one)) > 0.95
    assert auc_roc(labels, BASELINES["isolation_forest"]().fit(train).score(every)) > 0.95


# ---- bad input through the command line ----------------------------------------------------------------------

def test_cli_fit_and_score_bad_input(asd_run, tmp_path, monkeypatch, capsys):
    root, _, _ = asd_run
    cases = [
        (["fit", tmp_path / "absent.csv", "--out", tmp_path / "r"], "no such file"),
        (["fit", write_csv(tmp_path / "e.csv", ""), "--out", tmp_path / "r"], "empty file"),
        (["fit", write_csv(tmp_path / "t.csv", "a,b\nx,y\n"), "--out", tmp_path / "r"], "no numeric value columns"),
        (["fit", ASD / "omi-1_train.parquet", "--columns", "f00,zz", "--out", tmp_path / "r"], "no column 'zz'"),
        (["fit", write_csv(tmp_path / "n.csv", "v,w\n1,\n2,\n"), "--out", tmp_path / "r"], "has no values"),
        (["fit", write_csv(tmp_path / "m.csv", "v\n1\nx\n"), "--out", tmp_path / "r"], "mixes numbers and text"),
        (["fit", write_csv(tmp_path / "u.csv", "timestamp,v\n2024-01-02,1\n2024-01-01,2\n"), "--out",
          tmp_path / "r"], "goes back"),
        (["fit", write_csv(tmp_path / "short.csv", "v\n1\n2\n3\n"), "--out", tmp_path / "r"], "too few"),
        (["fit", ASD / "omi-1_train.parquet", "--score", "mse", "--out", tmp_path / "r"], "score must be one of"),
        (["fit", ASD / "omi-1_train.parquet", "--season-days", "2", "--out", tmp_path / "r"], "needs baseline_window"),
        (["fit", ASD / "omi-1_train.parquet", "--timestamp", "t", "--baseline-window", "50", "--season-days", "2",
          "--out", tmp_path / "r"], "needs datetime timestamps"),
        (["fit", ASD / "omi-1_train.parquet", "--adaptive-window", "9", "--baseline-window", "9", "--out",
          tmp_path / "r"], "choose one"),
        (["score", "--model", root / "run", write_csv(tmp_path / "other.csv", "t,x,y\n0,1,2\n"), "--out",
          tmp_path / "o"], "no column 'f00'"),
        (["score", "--model", tmp_path / "nowhere", ASD / "omi-1_test.parquet", "--out", tmp_path / "o"],
         "not found"),
        (["score", "--model", root / "run"], "give input files and --out"),
        (["score", "--model", root / "run", ASD / "omi-1_test.parquet", write_csv(tmp_path / "omi-1_test.csv", "v\n1\n"),
          "--out", tmp_path / "o"], "two inputs are named 'omi-1_test'"),
    ]
    for args, message in cases:
        code, _, err = run_main(monkeypatch, capsys, "anomaly", *args, "--device", "cpu")
        assert code == 2 and message in err and err.startswith("error: ") and len(err.splitlines()) == 1, (args, err)
    assert not (tmp_path / "o").exists()  # nothing half-written when an input is refused


def test_score_refuses_a_run_of_another_task(tmp_path, monkeypatch, capsys):
    from mambaseq.checkpoint import save_run
    from mambaseq.config import RunConfig
    from mambaseq.model import MambaModel

    save_run(tmp_path / "lm", MambaModel(TINY), RunConfig(task="lm", model=TINY))
    code, _, err = run_main(monkeypatch, capsys, "anomaly", "score", "--model", tmp_path / "lm",
                            ASD / "omi-1_test.parquet", "--out", tmp_path / "o", "--device", "cpu")
    assert code == 2 and "not an anomaly model" in err


# ---- property tests of the reader ------------------------------------------------------------------------------


FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64, min_value=-1e12, max_value=1e12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(table=st.lists(st.lists(st.one_of(FINITE, st.none()), min_size=2, max_size=2), min_size=1, max_size=30),
       crlf=st.booleans(), tsv=st.booleans(), parquet=st.booleans())
def test_reader_round_trips_any_numeric_table(tmp_path, table, crlf, tsv, parquet):
    """Whatever the numbers, missing cells, line endings and format: values come back exactly, NaN where empty."""
    columns = list(zip(*table))
    if any(all(v is None for v in col) for col in columns):
        return  # an all-missing column is refused (tested above)
    frame = pl.DataFrame({"a": columns[0], "b": columns[1]}, schema={"a": pl.Float64, "b": pl.Float64})
    if parquet:
        path = tmp_path / "t.parquet"
        frame.write_parquet(path)
    else:
        path = tmp_path / ("t.tsv" if tsv else "t.csv")
        text = frame.write_csv(separator="\t" if tsv else ",", float_precision=None)
        path.write_bytes(text.replace("\n", "\r\n" if crlf else "\n").encode())
    values = read_series(path).values
    expected = np.array([[np.nan if v is None else v for v in row] for row in table])
    np.testing.assert_array_equal(values, expected)
