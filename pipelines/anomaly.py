"""Time-series anomaly detection: values become characters, a Mamba LM predicts the next one, surprise = anomaly.

Fit (`fit`): read the training series (mambaseq.io.series), fit a `ValueQuantiser` per channel on the
training part only (robust scaling, uniform bins, MISSING and out-of-range ids), and train a causal Mamba LM
with one embedding per channel (summed) and one next-bin head per channel on random windows. The last
`calibration_fraction` of every training series is held out of the windows: the threshold is the
`threshold_quantile` of the scores there (scores the model did not train on, so the false-alarm rate on
normal data is about 1 - quantile), unless `threshold` fixes it.

Score (`StreamScorer`): per step t >= 1, NLL_t = -sum over channels of log p(bin_t | bins_<t), in nats,
channels whose value is missing at t left out; step 0 has no context and scores 0. score_t = the mean of the
last `smooth` NLLs (causal, so a stream scores the same as a file). With `adaptive_window` W > 0 the score
is instead that mean's z-score against the NLLs of the W steps before it (the idea of Numenta's anomaly
likelihood, Ahmad et al. 2017): for drifting streams with no separate training file, a lasting change scores
high when it starts and fades as it becomes the new normal. With `baseline_window` W > 0 it is instead the
excess over a high quantile of the last W steps' scores, raised to the day-before scores at the same time of
day (`season_days`), and `gate` keeps one alert per rise (`ScoreSmoother`; on NAB this beat the z-score, see
benchmarks/results/anomaly.md). Beside the model, three novelties of the values themselves can raise the score
(each as the excess over its own baseline, times a weight): how far they leave their range (`RangeNovelty`), how
new a value is after the values before it (`ContextNovelty`) and a run of equal values longer than any before
(`FlatRunNovelty`). A step is flagged when score > threshold;
flagged runs (merged across gaps of at most `merge_gap` steps) are events. The scorer carries the model's
recurrent state (conv + SSM), the last step's logits and the smoothing window between calls: O(1) memory
per step, and any cut of the series into chunks gives the same scores as one pass.

Run folder: config.json (task "anomaly"; extra: columns, quantiser, threshold, smoothing, reader settings,
calibration statistics), model.safetensors, train.jsonl, loss.png.

Glossary: T steps, C channels, V vocabulary (bins + 3), B batch, L window length.
"""
from __future__ import annotations

import bisect
import json
import math
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from mambaseq.checkpoint import load_run, save_run
from mambaseq.config import ModelConfig, RunConfig, TrainConfig
from mambaseq.io.atomic import open_atomic, save_figure_atomic, write_bytes_atomic, write_json_atomic
from mambaseq.io.series import Series, check_same_columns, read_series
from mambaseq.model import MambaModel
from mambaseq.pipelines.progress import TrainingProgress
from mambaseq.pipelines.training import autocast_for, cosine_schedule, optimizer_step, pick_device
from mambaseq.tokenizers import ValueQuantiser


# Per-step scores, each summed over channels (a missing value adds 0). nll: -log p(observed bin). rps: the ranked
# probability score sum_k (P(bin <= k) - [observed <= k])^2 over the value bins, which grows with how many bins off
# the value is (NLL only sees how improbable its bin was, so a harmless one-bin blip of a quiet channel can outrank a
# large jump), plus how many bin widths the value lies past the bin range: the edge bins hold every value beyond
# it, and past the range the predicted CDF is flat, so the CRPS of the value's true position grows by exactly that
# distance. benchmarks/results/anomaly_variants_*: rps ranks SMD and ASD anomalies better than nll.
SCORES = ("rps", "nll")
THRESHOLD_QUANTILES = (0.99, 0.995, 0.999)  # fit.json lists the threshold each would give, to pick another
# The stream post-processing for series with no separate training file (fit on their first part), chosen on NAB
# (benchmarks/results/anomaly.md: 71.9 standard, 70.0 on average over twelve fresh seeds of the fits):
# `anomaly fit --recipe stream`, anomaly_bench.py's NAB defaults. Its gated scores are <= 0 on most steps, so a
# quantile of the short held-out part says little: the threshold is fixed near NAB's optimised ones for the
# standard profile (12.0-15.5 over twelve fresh fits; at 14 they score 69.4 on average, 70.0 at their own).
STREAM_RECIPE = {"baseline_window": 2000, "baseline_quantile": 0.995, "season_days": 5, "gate": 60,
                 "gate_margin": 1.2, "model_cap": 17.5, "range_weight": 2.0, "context_weight": 10.0,
                 "flat_weight": 25.0, "threshold": 14.0}


class AnomalyError(ValueError):
    """The data, the settings or a run folder cannot make or use an anomaly model."""


@dataclass
class AnomalySettings:
    """What fitting decides besides the network: how values are read, binned, scored and thresholded."""

    n_bins: int = 64
    fit_fraction: float = 1.0  # use only this leading fraction of each training file (NAB: 0.15)
    calibration_fraction: float = 0.15  # trailing part of each training series held out for the threshold
    threshold_quantile: float = 0.99  # chosen on ASD by range-F1, then checked on SMD (results/anomaly.md)
    threshold: float | None = None  # a fixed threshold instead of the quantile (STREAM_RECIPE's)
    score: str = "rps"  # per-step score, "rps" or "nll" (see SCORES)
    smooth: int = 1  # trailing mean over this many steps of the per-step score
    adaptive_window: int = 0  # > 0: score = z-score of that mean against this many steps' scores before it
    baseline_window: int = 0  # > 0: score = that mean's excess over a baseline of this many steps (ScoreSmoother)
    baseline_quantile: float = 0.995  # the baseline: this quantile of the window ...
    season_days: int = 0  # ... raised to the highest mean at the same time of day on each of these past days
    season_slack: int = 6  # ... +- this many steps
    season_period: int = 0  # steps per day: set by fit from the training timestamps when season_days > 0
    range_weight: float = 0.0  # > 0: the score is at least this times the values' range novelty's excess (RangeNovelty)
    range_steps: int = 2  # ... the novelty of the mean of this many trailing values
    range_warmup: int = 750  # ... 0 for this many steps of a stream (fit caps it at the fitted part's length); the
    # context and flat novelties share this warm-up
    context_weight: float = 0.0  # > 0: ... and at least this times the context novelty's excess (ContextNovelty)
    context_lags: int = 24  # ... the facts (value bin d steps back, value bin now) for d = 1..context_lags
    context_bins: int = 6  # ... bins over the warm-up's range, plus one edge bin each side
    flat_weight: float = 0.0  # > 0: ... and at least this times the flat-run record's excess (FlatRunNovelty)
    gate: int = 0  # > 0: a step keeps its score only above all of the previous `gate` steps' (one alert per rise)
    gate_margin: float = 1.0  # ... and only when above their max m by (gate_margin - 1) * m too (m > 0)
    model_cap: float = 0.0  # > 0 (with baseline_window): the model's excess counts at most this much
    time_of_day: bool = False  # the model also reads the time of day (from datetime timestamps) as an input channel
    merge_gap: int = 0  # flagged runs at most this many steps apart form one event
    columns: list[str] | None = None
    timestamp: str | None = "auto"
    label: str | None = "auto"
    order: str = "error"

    def __post_init__(self) -> None:
        if not (2 <= self.n_bins <= 4096):
            raise AnomalyError(f"n_bins must be in 2..4096, got {self.n_bins}")
        if not (0 < self.fit_fraction <= 1):
            raise AnomalyError(f"fit_fraction must be in (0, 1], got {self.fit_fraction}")
        if not (0 < self.calibration_fraction < 1):
            raise AnomalyError(f"calibration_fraction must be in (0, 1), got {self.calibration_fraction}")
        if not (0 < self.threshold_quantile <= 1):
            raise AnomalyError(f"threshold_quantile must be in (0, 1], got {self.threshold_quantile}")
        if self.score not in SCORES:
            raise AnomalyError(f"score must be one of {', '.join(SCORES)}, got {self.score!r}")
        if self.smooth < 1 or min(self.merge_gap, self.adaptive_window, self.baseline_window, self.season_days,
                                  self.season_slack, self.season_period, self.gate) < 0:
            raise AnomalyError("smooth must be >= 1; merge_gap, adaptive_window, baseline_window, season_days, "
                               "season_slack and gate >= 0")
        if self.adaptive_window and self.baseline_window:
            raise AnomalyError("adaptive_window and baseline_window are two ways to normalise the score: "
                               "choose one")
        if self.season_days and not self.baseline_window:
            raise AnomalyError("season_days raises the baseline: it needs baseline_window > 0")
        if self.range_weight < 0 or self.range_steps < 1 or self.range_warmup < 1:
            raise AnomalyError("range_weight must be >= 0, range_steps and range_warmup >= 1")
        if self.context_weight < 0 or self.flat_weight < 0 or self.context_lags < 1 or self.context_bins < 1:
            raise AnomalyError("context_weight and flat_weight must be >= 0, context_lags and context_bins >= 1")
        if (self.range_weight or self.context_weight or self.flat_weight) and not self.baseline_window:
            raise AnomalyError("range_weight, context_weight and flat_weight compare a novelty to its own baseline: "
                               "they need baseline_window > 0")
        if not (0 < self.baseline_quantile <= 1):
            raise AnomalyError(f"baseline_quantile must be in (0, 1], got {self.baseline_quantile}")
        if self.gate_margin < 1 or self.model_cap < 0:
            raise AnomalyError("gate_margin must be >= 1 and model_cap >= 0")
        if self.model_cap and not self.baseline_window:
            raise AnomalyError("model_cap caps the model's excess over its baseline: it needs baseline_window > 0")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise AnomalyError(f"threshold must be a finite number, got {self.threshold}")


def read_for(settings: AnomalySettings, path: str | Path, columns: list[str] | None = None) -> Series:
    """Read with the fitted settings; scoring (columns given) looks for a label column even if fit had none."""
    label = settings.label if columns is None or settings.label is not None else "auto"
    return read_series(path, columns=columns or settings.columns, timestamp=settings.timestamp,
                       label=label, order=settings.order)


# ---- fitting -------------------------------------------------------------------------------------------------

def steps_per_day(series: Series) -> int:
    """Steps per day of a series with datetime timestamps: 1 day / the median interval between steps."""
    stamps = series.timestamps
    if stamps is None or stamps.dtype.kind != "M" or len(stamps) < 2:
        raise AnomalyError(f"{series.name}: season_days needs datetime timestamps to know the steps per day "
                           "(or give season_period)")
    interval = float(np.median(np.diff(stamps.astype("datetime64[ms]").astype(np.int64)))) / 1000.0
    per_day = int(round(86400.0 / interval)) if interval > 0 else 0
    if per_day < 2:
        raise AnomalyError(f"{series.name}: one step every {interval:.0f} s is not several steps a day; "
                           "season_days needs sub-daily data")
    return per_day


def day_fraction(stamps: np.ndarray | None, name: str) -> np.ndarray:
    """Time of day of each datetime timestamp as a fraction of the day, in [0, 1): the `time_of_day` input."""
    if stamps is None or stamps.dtype.kind != "M":
        raise AnomalyError(f"{name}: the model reads the time of day (time_of_day): it needs datetime timestamps")
    ms = stamps.astype("datetime64[ms]")
    return (ms - ms.astype("datetime64[D]")).astype(np.int64) / 86_400_000.0


def model_inputs(values: np.ndarray, stamps: np.ndarray | None, time_of_day: bool, name: str) -> np.ndarray:
    """The model's input columns: the values, then the time of day when the model reads it."""
    return np.column_stack([values, day_fraction(stamps, name)]) if time_of_day else values


def _split_parts(series: list[Series], settings: AnomalySettings) -> tuple[list[np.ndarray], list[int]]:
    """Each series' fit part cut into (train part, calibration start); checks every part is long enough."""
    parts, cal_starts = [], []
    for s in series:
        n = max(1, int(round(settings.fit_fraction * len(s))))
        cal = int(round(n * (1 - settings.calibration_fraction)))
        if cal < 8 or n - cal < 2:
            raise AnomalyError(f"{s.name}: {n} training steps are too few (need at least 10 with "
                               f"{settings.calibration_fraction:.0%} held out for the threshold)")
        parts.append(s.values[:n])
        cal_starts.append(cal)
    return parts, cal_starts


def _windows(tokens: list[torch.Tensor], ends: list[int], length: int, batch: int, rng: np.random.Generator):
    """A (B, length, C) batch of random windows from the training parts, each part weighted by its length."""
    weights = np.array([max(1, e - length + 1) for e in ends], np.float64)
    which = rng.choice(len(tokens), size=batch, p=weights / weights.sum())
    rows = []
    for i in which:
        start = int(rng.integers(0, max(1, ends[i] - length + 1)))
        rows.append(tokens[i][start:start + length])
    return torch.stack(rows)


def channel_logits(model: MambaModel, tokens: torch.Tensor, cache=None) -> torch.Tensor:
    """tokens (B, L, C) -> logits (B, L, C, V) for any C (a one-channel model takes and gives no channel axis)."""
    if model.config.n_channels == 1:
        return model(tokens[..., 0], cache=cache).unsqueeze(-2)
    return model(tokens, cache=cache)


def next_bin_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of each channel's next bin; MISSING targets are left out. logits (B, L, C, V)."""
    target = tokens[:, 1:]  # (B, L-1, C)
    return F.cross_entropy(logits[:, :-1].flatten(0, 2).float(), target.flatten(),
                           ignore_index=ValueQuantiser.MISSING)


@torch.no_grad()
def heldout_bits(model: MambaModel, tokens: list[torch.Tensor], cal_starts: list[int], context: int,
                 n_values: int | None = None) -> float:
    """Mean next-bin cross-entropy (bits per value) of the first `n_values` channels (all: None; the rest are
    inputs such as the time of day) over the held-out calibration parts, each read after up to `context` training
    steps before it."""
    model.eval()
    total, count = 0.0, 0
    for t, cal in zip(tokens, cal_starts):
        start = max(0, cal - context)
        window = t[start:][None]  # (1, T, C)
        with autocast_for(t.device):
            logits = channel_logits(model, window)[0, cal - start - 1:-1, :n_values].float()  # predictions of cal ..
        target = window[0, cal - start:, :n_values]
        total += F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=ValueQuantiser.MISSING,
                                 reduction="sum").item()
        count += int((target != ValueQuantiser.MISSING).sum())
    model.train()
    return total / max(count, 1) / math.log(2)


def _keep_best(model: MambaModel, tokens, cal_starts, context: int, n_values: int, record: dict,
               best: tuple) -> tuple:
    """Score the held-out parts into `record`; (bits, step, weights) of the better of this and `best`."""
    held = heldout_bits(model, tokens, cal_starts, context, n_values)
    record["heldout_bits_per_value"] = held
    if held < best[0]:
        return held, record["step"], {k: v.detach().clone() for k, v in model.state_dict().items()}
    return best


def fit(train_paths: list[str | Path], out: str | Path, *, settings: AnomalySettings | None = None,
        model_cfg: ModelConfig | None = None, train_cfg: TrainConfig | None = None, device: str = "auto",
        show_progress: bool = True) -> dict:
    """Fit an anomaly model on normal data, write the run folder `out`, return a summary dict.

    The held-out calibration parts are scored every `train_cfg.eval_every` steps and at the last step; the
    weights with the lowest held-out loss are kept (eval_every >= steps: the last ones)."""
    settings = settings or AnomalySettings()
    train_cfg = train_cfg or TrainConfig(seq_len=256, batch_size=16, steps=300, lr=3e-3, warmup_steps=30,
                                         eval_every=300)
    if not train_paths:
        raise AnomalyError("no training files given")
    series = [read_for(settings, p) for p in train_paths]
    for s in series[1:]:
        check_same_columns(series[0], s)
    parts, cal_starts = _split_parts(series, settings)
    if settings.season_days and not settings.season_period:
        settings = replace(settings, season_period=steps_per_day(series[0]))
    if settings.range_weight or settings.context_weight or settings.flat_weight:
        # the novelties start once a stream is as long as the shortest fitted part
        settings = replace(settings, range_warmup=min(settings.range_warmup, min(len(p) for p in parts)))
    stamps = [None if s.timestamps is None else s.timestamps[:len(p)] for s, p in zip(series, parts)]
    inputs = [model_inputs(p, t, settings.time_of_day, s.name) for p, t, s in zip(parts, stamps, series)]
    fit_values = np.concatenate([p[:c] for p, c in zip(inputs, cal_starts)])
    for name, column in zip(series[0].columns, fit_values.T):
        if np.isnan(column).all():
            raise AnomalyError(f"column {name!r} has no value in the training part")
    quantiser = ValueQuantiser.fit(fit_values, settings.n_bins)
    seq_len = min(train_cfg.seq_len, min(cal_starts))  # windows never cross into the calibration part
    train_cfg = TrainConfig(**{**train_cfg.to_dict(), "seq_len": seq_len})

    base = model_cfg or ModelConfig(d_model=64, n_layer=2)
    cfg = ModelConfig(**{**base.to_dict(), "vocab_size": quantiser.vocab_size, "n_channels": quantiser.n_channels,
                         "n_classes": 0, "bidirectional": False})
    dev = pick_device(device)
    torch.manual_seed(train_cfg.seed)
    rng = np.random.default_rng(train_cfg.seed)
    model = MambaModel(cfg).to(dev)
    optimizer = torch.optim.AdamW(model.param_groups(train_cfg.weight_decay), lr=train_cfg.lr, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(train_cfg.warmup_steps, train_cfg.steps))
    tokens = [torch.from_numpy(quantiser.encode(p)[0]).to(dev) for p in inputs]  # (T_i, C) each
    n_values = len(series[0].columns)  # the model's other channel, if any, is the time of day (read, not scored)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    history, started = [], time.monotonic()
    best = (math.inf, 0, None)  # held-out bits per value, step, weights
    with TrainingProgress(train_cfg.steps, enabled=show_progress, description="fitting",
                          unit="bits/value") as progress:
        for step in range(1, train_cfg.steps + 1):
            if train_cfg.max_minutes and time.monotonic() - started > 60 * train_cfg.max_minutes:
                break
            tick = time.monotonic()
            batch = _windows(tokens, cal_starts, seq_len, train_cfg.batch_size, rng)  # (B, L, C)
            with autocast_for(dev):
                loss = next_bin_loss(channel_logits(model, batch), batch)
            loss.backward()
            optimizer_step(model, optimizer, scheduler, train_cfg.grad_clip)
            bits = loss.item() / math.log(2)
            history.append({"step": step, "train_bits_per_value": bits, "lr": scheduler.get_last_lr()[0],
                            "steps_per_s": batch.shape[0] * batch.shape[1] / (time.monotonic() - tick),
                            "elapsed_s": time.monotonic() - started})
            progress.update(step, bits, history[-1]["steps_per_s"])
            if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
                best = _keep_best(model, tokens, cal_starts, seq_len, n_values, history[-1], best)
    if history and "heldout_bits_per_value" not in history[-1]:  # stopped by max_minutes
        best = _keep_best(model, tokens, cal_starts, seq_len, n_values, history[-1], best)
    if best[2] is not None:
        model.load_state_dict(best[2])

    model.eval()
    calibration = []
    for p, t, c in zip(parts, stamps, cal_starts):
        scorer = StreamScorer(model, quantiser, dev, settings.score, ScoreSmoother.from_settings(settings),
                              settings.time_of_day)
        calibration.append(scorer.push(p, timestamps=t)["score"][c:])
    calibration = np.concatenate(calibration)
    threshold = float(np.quantile(calibration, settings.threshold_quantile))
    rule = f"quantile {settings.threshold_quantile} of held-out training scores"
    if settings.threshold is not None:
        threshold, rule = float(settings.threshold), "fixed"
    run_cfg = RunConfig(task="anomaly", model=cfg, train=train_cfg, extra={
        "settings": {**settings.__dict__, "columns": series[0].columns},
        "quantiser": quantiser.to_dict(), "threshold": threshold,
        "threshold_rule": rule,
        "calibration": {"mean": float(calibration.mean()), "std": float(calibration.std()),
                        "n": int(calibration.size)},
        "data": [str(Path(p)) for p in train_paths]})
    save_run(out, model.cpu(), run_cfg)
    write_bytes_atomic(out / "train.jsonl", "".join(json.dumps(r) + "\n" for r in history).encode())
    _plot_loss(history, out / "loss.png")
    summary = {"threshold": threshold, "steps": len(history), "seq_len": seq_len,
               "final_train_bits_per_value": history[-1]["train_bits_per_value"] if history else None,
               "heldout_bits_per_value": best[0] if best[2] is not None else None, "kept_step": best[1],
               "calibration_mean_score": float(calibration.mean()),
               "threshold_at_quantile": {str(q): float(np.quantile(calibration, q)) for q in THRESHOLD_QUANTILES},
               "elapsed_s": time.monotonic() - started,
               "device": str(dev), "columns": series[0].columns}
    write_json_atomic(out / "fit.json", summary)
    return summary


# ---- scoring -------------------------------------------------------------------------------------------------

def ranked_probability_score(probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """probs (..., V) over ordered bins, targets (...) bin ids -> (...) sum_k (P(bin <= k) - [target <= k])^2."""
    bins = torch.arange(probs.shape[-1], device=probs.device)
    return ((probs.cumsum(-1) - (bins >= targets.unsqueeze(-1)).to(probs.dtype)) ** 2).sum(-1)


def step_terms(logits: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (NLL, RPS) of observed bins `ids` (T, C) under predictions `logits` (T, C, V); 0 where missing.

    The NLL is over the whole vocabulary (as trained); the RPS over the value bins, MISSING left out."""
    targets = ids.long()
    nll = -F.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    value_bins = logits.index_fill(-1, torch.tensor([ValueQuantiser.MISSING], device=logits.device), -torch.inf)
    rps = ranked_probability_score(F.softmax(value_bins, dim=-1), targets)
    missing = targets == ValueQuantiser.MISSING
    return nll.masked_fill(missing, 0.0), rps.masked_fill(missing, 0.0)


class WindowQuantiles:
    """The last `size` numbers, also kept sorted: quantiles with linear interpolation (as np.quantile); 0.0 while
    empty."""

    def __init__(self, size: int):
        self.size, self.order, self.sorted = size, deque(), []

    def quantile(self, q: float) -> float:
        ordered, n = self.sorted, len(self.sorted)
        if not n:
            return 0.0
        pos = q * (n - 1)
        lo = int(pos)
        return ordered[lo] + (ordered[min(lo + 1, n - 1)] - ordered[lo]) * (pos - lo)

    def add(self, value: float) -> None:
        self.order.append(value)
        bisect.insort(self.sorted, value)
        if len(self.order) > self.size:
            self.sorted.pop(bisect.bisect_left(self.sorted, self.order.popleft()))


class _ChannelRange:
    """One channel of RangeNovelty: its recent values, the extremes of their means over the window, its spread."""

    def __init__(self, steps: int, window: int):
        self.recent: deque = deque(maxlen=steps)
        self.window, self.count = window, 0
        self.highs: deque = deque()  # (index, mean), means decreasing: the window's maximum first
        self.lows: deque = deque()  # (index, mean), means increasing: the window's minimum first
        self.values = WindowQuantiles(window)
        self.lowest, self.highest = math.inf, -math.inf

    def step(self, value: float) -> float:
        """The value's novelty (NaN while nothing is remembered, or when the value is missing), then remember it."""
        if math.isnan(value):
            return math.nan
        self.recent.append(value)
        mean = sum(self.recent) / len(self.recent)
        novelty = math.nan
        if self.count:
            for extremes in (self.highs, self.lows):
                while extremes[0][0] < self.count - self.window:
                    extremes.popleft()
            spread = max(self.values.quantile(0.75) - self.values.quantile(0.25),
                         0.02 * (self.highest - self.lowest), 1e-9)
            novelty = max(mean - self.highs[0][1], self.lows[0][1] - mean) / spread
        while self.highs and self.highs[-1][1] <= mean:
            self.highs.pop()
        while self.lows and self.lows[-1][1] >= mean:
            self.lows.pop()
        self.highs.append((self.count, mean))
        self.lows.append((self.count, mean))
        self.values.add(value)
        self.lowest, self.highest = min(self.lowest, value), max(self.highest, value)
        self.count += 1
        return novelty


class _ChannelwiseNovelty:
    """A novelty made of one state per channel (`_channel()`, made at the first row, `.step(value)` -> the value's
    novelty, NaN when it is missing): the step's novelty is the largest over the channels, 0 in the first `warmup`
    steps and where every value is missing."""

    def __init__(self, warmup: int):
        self.warmup, self.channels, self.seen = warmup, [], 0

    def step(self, row) -> float:
        if not self.channels:
            self.channels = [self._channel() for _ in row]
        scores = [c.step(v) for c, v in zip(self.channels, row)]
        self.seen += 1
        finite = [e for e in scores if not math.isnan(e)]
        return max(finite) if finite and self.seen > self.warmup else 0.0


class RangeNovelty(_ChannelwiseNovelty):
    """How far a stream's values leave the range they have kept, one step at a time: a value no training window
    ever reached can still be predicted tolerably by the model (NAB: art_increase_spike_density).

    Per channel, with m_t the mean of the last `steps` values: e_t = max(m_t - max(m over the past `window`
    values), min(m over them) - m_t) / spread, spread = max(the IQR of the past `window` values, 2% of the range of
    all past values, 1e-9): positive outside the range, negative inside. The step's novelty is the largest e_t over
    the channels, 0 in the first `warmup` steps (and where every value is missing; a missing value is not
    remembered). Memory O(window) per channel."""

    def __init__(self, steps: int = 2, window: int = 2000, warmup: int = 750):
        super().__init__(warmup)
        self.steps, self.window = steps, window

    def _channel(self) -> _ChannelRange:
        return _ChannelRange(self.steps, self.window)


class _ChannelContext:
    """One channel of ContextNovelty: the warm-up's values (until the bins are set), the last `lags` symbols, and
    per lag the counts of every (earlier symbol, symbol) fact and how many facts were seen exactly once."""

    def __init__(self, lags: int, bins: int, warmup: int):
        self.bins, self.warmup, self.edges = bins, warmup, None
        self.pending: list[float] = []  # the values before the bins are set
        size = bins + 4  # bins, two edge bins, missing, and the padding before the stream's first step
        self.symbols: deque = deque([bins + 3] * lags, maxlen=lags)  # symbols[-d]: d steps back
        self.counts = [[[0] * size for _ in range(size)] for _ in range(lags)]
        self.singles = [0] * lags
        self.count = 0

    def set_bins(self) -> None:
        """Bins uniform over the warm-up's [min, max] (missing values left out), then the warm-up replayed."""
        seen = [v for v in self.pending if not math.isnan(v)]
        lo, hi = (min(seen), max(seen)) if seen else (0.0, 0.0)
        self.edges = (lo, max(hi - lo, 1e-9 * max(abs(lo), abs(hi), 1.0)) / self.bins)
        pending, self.pending = self.pending, []
        for value in pending:
            self.step(value)

    def symbol(self, value: float) -> int:
        if math.isnan(value):
            return self.bins + 2
        lo, width = self.edges
        return int(min(max(math.floor((value - lo) / width), -1), self.bins)) + 1

    def step(self, value: float) -> float:
        """The value's novelty (NaN when it is missing), then count its facts."""
        if self.edges is None:
            self.pending.append(value)
            if len(self.pending) == self.warmup:
                self.set_bins()
            return 0.0
        now = self.symbol(value)
        surprise = 0.0
        for d, counts in enumerate(self.counts):
            row = counts[self.symbols[-1 - d]]
            seen = row[now]
            if seen == 0:  # a new fact scores -log of the Good-Turing probability of one: (singletons + 1) / steps
                surprise += -math.log((self.singles[d] + 1.0) / (self.count + 1.0))
                self.singles[d] += 1
            elif seen == 1:
                self.singles[d] -= 1
            row[now] = seen + 1
        self.symbols.append(now)
        self.count += 1
        return math.nan if math.isnan(value) else surprise / len(self.counts)


class ContextNovelty(_ChannelwiseNovelty):
    """How new the present value is in the context of the values before it, one step at a time: a value seen
    often, but never after the values that precede it now, is a shape the stream never made (the idea of contexts
    is that of Numenta's CAD-OSE detector).

    Per channel, each value becomes a symbol: one of `bins` bins uniform over the range of the first `warmup`
    values, or an edge bin below or above it (or "missing"). The facts of step t are (d, symbol_{t-d}, symbol_t)
    for d = 1..lags, counted since the stream's first step. A fact never seen before scores -log((n1 + 1) / (t +
    1)), n1 the facts of its lag seen exactly once (the Good-Turing estimate of how likely any new fact still is:
    a new one weighs more once the stream stops making them); the channel's novelty is the mean over the lags.
    The step's novelty is the largest over the channels, 0 in the first `warmup` steps (the bins are set from
    them, then they are counted) and where every value is missing. Memory O(lags * bins^2) per channel."""

    def __init__(self, lags: int = 24, bins: int = 6, warmup: int = 750):
        super().__init__(warmup)
        self.lags, self.bins = lags, bins

    def _channel(self) -> _ChannelContext:
        return _ChannelContext(self.lags, self.bins, self.warmup)


class _ChannelFlat:
    """One channel of FlatRunNovelty: its last value, the current run of equal values, the longest earlier run."""

    def __init__(self, min_run: int):
        self.min_run, self.last, self.run, self.longest = min_run, math.nan, 0, 0

    def step(self, value: float) -> float:
        """1.0 where the current run first outlasts every earlier one (and `min_run`), else 0.0; NaN if missing."""
        fired = 0.0
        if value == self.last:
            self.run += 1
            fired = float(self.run == max(self.longest, self.min_run) + 1)
        else:  # a missing value (NaN equals nothing) ends the run too
            self.longest, self.run = max(self.longest, self.run), 0
        self.last = value
        return math.nan if math.isnan(value) else fired


class FlatRunNovelty(_ChannelwiseNovelty):
    """Absence of activity: 1.0 at the step where a run of equal consecutive values (in any channel) first grows
    longer than every run that channel made before it and than `min_run` steps, else 0.0; 0 in the first `warmup`
    steps (their runs count as earlier runs). O(1) memory per channel."""

    def __init__(self, min_run: int = 10, warmup: int = 750):
        super().__init__(warmup)
        self.min_run = min_run

    def _channel(self) -> _ChannelFlat:
        return _ChannelFlat(self.min_run)


class ScoreSmoother:
    """Per-step score -> final score, one step at a time (so any cut of a stream into chunks gives the same scores),
    in up to three stages:

    1. m_t = the trailing mean of the last `smooth` per-step scores.
    2. Either `adaptive_window` W > 0: the z-score of m_t against the W means before the mean's window; or
       `baseline_window` W > 0: the excess of m_t over a baseline, m_t - max(Q, S), where Q is the
       `baseline_quantile` of m over the W steps before t (linear interpolation, as np.quantile) and S the
       highest m at the same time of day on each of the last `season_days` days (lags j * season_period +-
       season_slack steps, j = 1..season_days; days not yet seen are left out). Errors the model makes every day
       at the same hour then stop raising alerts. With `range_weight` w > 0 the step then scores at least
       w * (r_t - Q'), r_t the values' `RangeNovelty` and Q' the same quantile of r over the W steps before t: a
       value far outside the range the stream has kept raises an alert even where the model is not surprised
       (+1.7 on NAB, benchmarks/results/anomaly.md). `context_weight` and `flat_weight` add `ContextNovelty` and
       `FlatRunNovelty` the same way, each against its own baseline. `model_cap` C > 0 caps the model's excess
       at C before the novelties join (they are not capped): once a burst of model errors reaches C its later
       steps tie there and the gate lets none of them alert again (with gate_margin 1.2: +1.5 on NAB over twelve
       fresh fits, benchmarks/results/anomaly.md).
    3. `gate` K > 0: one alert per rise. A step keeps its value only when it is above all of the previous K
       values of stage 2, and by `gate_margin` - 1 of their max m too when m > 0 (a new high must beat m * 1.2
       at 1.2); otherwise it scores min(value, 0).

    Memory: O(smooth + W + season_days * season_period + K) plus the novelties', whatever the stream length."""

    def __init__(self, smooth: int = 1, adaptive_window: int = 0, baseline_window: int = 0,
                 baseline_quantile: float = 0.995, season_days: int = 0, season_period: int = 0,
                 season_slack: int = 6, gate: int = 0, range_weight: float = 0.0, range_steps: int = 2,
                 range_warmup: int = 750, context_weight: float = 0.0, context_lags: int = 24,
                 context_bins: int = 6, flat_weight: float = 0.0, model_cap: float = 0.0, gate_margin: float = 1.0):
        if adaptive_window and baseline_window:
            raise AnomalyError("adaptive_window and baseline_window are two ways to normalise: choose one")
        if (range_weight or context_weight or flat_weight) and not baseline_window:
            raise AnomalyError("range_weight, context_weight and flat_weight need baseline_window > 0")
        if model_cap and not baseline_window:
            raise AnomalyError("model_cap needs baseline_window > 0")
        self.model_cap, self.gate_margin = model_cap, gate_margin
        self.window: deque = deque(maxlen=smooth)
        self.history: deque = deque()
        self.adaptive_window, self.history_sum, self.history_sq = adaptive_window, 0.0, 0.0
        self.baseline_window, self.baseline_quantile = baseline_window, baseline_quantile
        # every (lag of its day's centre, lag) of the seasonal term, all days at once
        days = season_days if season_period > 0 else 0
        self.season_lags = [(j * season_period, lag) for j in range(1, days + 1)
                            for lag in range(max(1, j * season_period - season_slack),
                                             j * season_period + season_slack + 1)]
        size = max([0] + [lag for _, lag in self.season_lags]) + 1
        self.past = [0.0] * size  # ring of the last `size` means; past[(self.seen - lag) % size] is m_{t-lag}
        self.seen = 0
        # Fast path when a day's window lies wholly in the past (period > slack): the max of m over
        # [s - slack, s + slack] is final once m_{s + slack} arrives, so it is kept per step s and each day costs
        # one lookup instead of a window (a 5x faster scorer on NAB-like settings).
        self.day_centres = [j * season_period for j in range(1, days + 1)] if season_period > season_slack else []
        self.window_max = [0.0] * (days * season_period + 1)  # ring: max of m around step s, at s % len
        self.recent: deque = deque(maxlen=2 * season_slack + 1)  # m_{t - 2 slack} .. m_t
        self.slack = season_slack
        self.baseline = WindowQuantiles(baseline_window)  # the last baseline_window means
        # (weight, novelty, the baseline of its last baseline_window values) of each novelty term in use
        terms = [(range_weight, lambda: RangeNovelty(range_steps, baseline_window, range_warmup)),
                 (context_weight, lambda: ContextNovelty(context_lags, context_bins, range_warmup)),
                 (flat_weight, lambda: FlatRunNovelty(warmup=range_warmup))]
        self.novelties = [(w, make(), WindowQuantiles(baseline_window)) for w, make in terms if w]
        self.gated: deque = deque(maxlen=max(gate, 1))
        self.gate = gate

    @classmethod
    def from_settings(cls, settings: "AnomalySettings") -> "ScoreSmoother":
        return cls(settings.smooth, settings.adaptive_window, settings.baseline_window, settings.baseline_quantile,
                   settings.season_days, settings.season_period, settings.season_slack, settings.gate,
                   settings.range_weight, settings.range_steps, settings.range_warmup, settings.context_weight,
                   settings.context_lags, settings.context_bins, settings.flat_weight, settings.model_cap,
                   settings.gate_margin)

    def update(self, raw: np.ndarray, values: np.ndarray | None = None) -> np.ndarray:
        """raw (T,) per-step scores -> (T,) final scores; `values` (T, C), NaN where missing, feed the novelties
        (needed when one of their weights is > 0)."""
        raw = np.asarray(raw, dtype=np.float64)
        if self.novelties:
            if values is None or len(values) != len(raw):
                raise AnomalyError("a novelty weight > 0: the smoother needs the values of every scored step")
            rows = np.asarray(values, dtype=np.float64).reshape(len(raw), -1).tolist()
        score = []
        for i, v in enumerate(raw.tolist()):  # Python floats: cheaper one at a time
            if self.adaptive_window and len(self.window) == self.window.maxlen:
                self._remember(self.window[0])
            self.window.append(v)
            value = sum(self.window) / len(self.window)
            if self.adaptive_window:
                value = self._z(value)
            elif self.baseline_window:
                value = self._excess(value)
                if self.model_cap:
                    value = min(value, self.model_cap)
                for weight, novelty, baseline in self.novelties:
                    n = novelty.step(rows[i])
                    value = max(value, weight * (n - baseline.quantile(self.baseline_quantile)))
                    baseline.add(n)
            if self.gate:
                top = max(self.gated) if self.gated else None
                keep = top is None or value > top + (self.gate_margin - 1.0) * max(top, 0.0)
                self.gated.append(value)
                value = value if keep else min(value, 0.0)
            score.append(value)
        return np.array(score, dtype=np.float64)

    def _remember(self, value: float) -> None:
        self.history.append(value)
        self.history_sum += value
        self.history_sq += value * value
        if len(self.history) > self.adaptive_window:
            old = self.history.popleft()
            self.history_sum -= old
            self.history_sq -= old * old

    def _z(self, mean: float) -> float:
        """z-score against the history; 0 until it holds 10 steps (the std is floored at 1e-3 nats)."""
        n = len(self.history)
        if n < 10:
            return 0.0
        centre = self.history_sum / n
        var = max(self.history_sq / n - centre * centre, 0.0)
        return (mean - centre) / max(math.sqrt(var), 1e-3)

    def _excess(self, mean: float) -> float:
        """mean - max(quantile of the last baseline_window means, seasonal maximum); then remember mean."""
        base = self.baseline.quantile(self.baseline_quantile)
        t = self.seen
        if self.day_centres:
            for centre in self.day_centres:  # day j's window is centred on step t - j * period
                if centre > t:
                    break
                base = max(base, self.window_max[(t - centre) % len(self.window_max)])
        elif self.season_lags:  # a period within the slack: windows reach the present, clipped to the past
            seen = [self.past[(t - lag) % len(self.past)] for centre, lag in self.season_lags
                    if centre <= t and lag <= t]
            if seen:
                base = max(base, max(seen))
        self.past[t % len(self.past)] = mean
        self.seen += 1
        if self.day_centres:
            self.recent.append(mean)
            if t >= self.slack:  # the window around step t - slack is complete
                self.window_max[(t - self.slack) % len(self.window_max)] = max(self.recent)
        self.baseline.add(mean)
        return mean - base


class StreamScorer:
    """Scores a series chunk by chunk with the model's recurrent state carried: same scores for any chunking."""

    def __init__(self, model: MambaModel, quantiser: ValueQuantiser, device: torch.device | str = "cpu",
                 score: str = "rps", smoother: ScoreSmoother | None = None, time_of_day: bool = False):
        self.model, self.quantiser, self.device = model, quantiser, torch.device(device)
        self.time_of_day = time_of_day
        self.n_values = quantiser.n_channels - int(time_of_day)  # the scored channels; the time of day is input
        self.cache = model.allocate_cache(1, device=self.device)
        self.last_logits = None  # (C, V) the prediction of the next step, from the last step pushed
        self.smoother = smoother or ScoreSmoother()
        self.score = score
        self.steps = 0

    @torch.no_grad()
    def push(self, values: np.ndarray, chunk: int = 8192, timestamps: np.ndarray | None = None,
             name: str = "input") -> dict[str, np.ndarray]:
        """values (T, C) raw with NaN where missing (and their datetime timestamps when the model reads the time of
        day) -> {"nll", "rps", "score", "out_of_range"} arrays of (T,). `name` goes into error messages."""
        if values.ndim != 2 or values.shape[1] != self.n_values:
            raise AnomalyError(f"expected {self.n_values} value columns, got {values.shape[1:]}")
        inputs = model_inputs(values, timestamps, self.time_of_day, name)
        ids, out_of_range = self.quantiser.encode(inputs)
        terms = np.empty((len(ids), 2))
        for start in range(0, len(ids), chunk):
            terms[start:start + chunk] = self._terms(torch.from_numpy(ids[start:start + chunk]).to(self.device))
        self.steps += len(ids)
        nll, rps = terms.T
        rps = rps + self.quantiser.excess(inputs)[:, :self.n_values].sum(1)  # see SCORES
        raw = rps if self.score == "rps" else nll
        return {"nll": nll, "rps": rps, "score": self.smoother.update(raw, values),
                "out_of_range": out_of_range[:, :self.n_values].any(axis=1)}

    def _terms(self, ids: torch.Tensor) -> np.ndarray:
        """ids (T, C) -> (T, 2): NLL and RPS of each step given everything pushed before it (see SCORES)."""
        with autocast_for(self.device):
            logits = channel_logits(self.model, ids.unsqueeze(0), self.cache)[0].float()  # (T, C, V)
        prev = logits[:-1] if self.last_logits is None else torch.cat([self.last_logits[None], logits[:-1]])
        self.last_logits = logits[-1]
        nll, rps = step_terms(prev, ids[len(ids) - len(prev):])  # the steps that have a prediction
        per_step = torch.stack([nll[..., :self.n_values].sum(-1), rps[..., :self.n_values].sum(-1)], -1)
        head = np.zeros((len(ids) - len(prev), 2))  # the very first step of the stream: no context
        return np.concatenate([head, per_step.double().cpu().numpy()])


@dataclass
class AnomalyModel:
    model: MambaModel
    quantiser: ValueQuantiser
    settings: AnomalySettings
    threshold: float
    calibration: dict
    device: torch.device

    def scorer(self) -> StreamScorer:
        return StreamScorer(self.model, self.quantiser, self.device, self.settings.score,
                            ScoreSmoother.from_settings(self.settings), self.settings.time_of_day)


def load_anomaly_run(path: str | Path, device: str = "auto") -> AnomalyModel:
    dev = pick_device(device)
    model, run_cfg = load_run(path, dev)
    return anomaly_from_run(path, model, run_cfg, dev)


def anomaly_from_run(path: str | Path, model: MambaModel, run_cfg: RunConfig, device: torch.device) -> AnomalyModel:
    """The anomaly model of a loaded run folder; clear errors for a run of another task or broken settings."""
    if run_cfg.task != "anomaly":
        raise AnomalyError(f"{path}: a {run_cfg.task!r} run, not an anomaly model")
    extra = run_cfg.extra
    try:
        settings = AnomalySettings(**{"score": "nll", **extra["settings"]})  # runs from before `score`: nll
        quantiser = ValueQuantiser.from_dict(extra["quantiser"])
        threshold = float(extra["threshold"])
        calibration = dict(extra["calibration"])
    except (KeyError, TypeError, ValueError) as err:
        raise AnomalyError(f"{path}: anomaly settings in config.json are incomplete or invalid ({err})") from None
    if quantiser.n_channels != model.config.n_channels or quantiser.vocab_size != model.config.vocab_size:
        raise AnomalyError(f"{path}: quantiser and model disagree on channels or bins")
    return AnomalyModel(model.eval(), quantiser, settings, threshold, calibration, device)


def events_from_flags(flags: np.ndarray, score: np.ndarray, merge_gap: int = 0) -> list[tuple[int, int, float]]:
    """Flagged runs as (start, end, peak score), rows [start, end), runs at most merge_gap apart merged."""
    padded = np.concatenate([[False], flags.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    runs = [[int(a), int(b)] for a, b in zip(edges[::2], edges[1::2])]
    merged: list[list[int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] <= merge_gap:
            merged[-1][1] = b
        else:
            merged.append([a, b])
    return [(a, b, float(score[a:b].max())) for a, b in merged]


def score_series(anomaly: AnomalyModel, series: Series, chunk: int = 8192) -> pl.DataFrame:
    """One series -> per-step frame: row, [timestamp], value columns, nll, rps, score, flagged, out_of_range,
    [label].

    The model reads `chunk` steps at a time with its state carried, so memory is bounded on any length."""
    result = anomaly.scorer().push(series.values, chunk=chunk, timestamps=series.timestamps, name=series.name)
    frame = {"row": np.arange(len(series))}
    if series.timestamps is not None:
        frame["timestamp"] = series.timestamps
    frame.update({c: series.values[:, i] for i, c in enumerate(series.columns)})
    frame.update(nll=result["nll"], rps=result["rps"], score=result["score"],
                 flagged=result["score"] > anomaly.threshold,
                 out_of_range=result["out_of_range"])
    if series.labels is not None:
        frame["label"] = series.labels
    return pl.DataFrame(frame)


def score_files(model_path: str | Path, inputs: list[str | Path], out: str | Path, *, fmt: str = "parquet",
                plot: bool = True, device: str = "auto", show_progress: bool = True) -> list[dict]:
    """Score every input file; write `<stem>.scores.<fmt>`, `<stem>.events.csv`, `<stem>.png` under `out`."""
    from mambaseq import metrics

    if fmt not in ("parquet", "csv"):
        raise AnomalyError(f"output format must be parquet or csv, got {fmt!r}")
    stems = [Path(p).stem for p in inputs]
    clash = next((stem for stem in stems if stems.count(stem) > 1), None)
    if clash is not None:
        raise AnomalyError(f"two inputs are named {clash!r}: their outputs would collide; score them into "
                           "different --out folders")
    anomaly = load_anomaly_run(model_path, device)
    columns = anomaly.settings.columns
    series = []
    for path in inputs:  # read (and check) every input before writing anything
        s = read_for(anomaly.settings, path, columns)
        if s.columns != columns:
            raise AnomalyError(f"{path}: columns differ from the training data")
        series.append(s)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = []
    for path, s in zip(inputs, series):
        started = time.monotonic()
        frame = score_series(anomaly, s)
        stem = Path(path).stem
        _write_frame(frame, out / f"{stem}.scores.{fmt}", fmt)
        events = events_from_flags(frame["flagged"].to_numpy(), frame["score"].to_numpy(),
                                   anomaly.settings.merge_gap)
        _write_events(events, s, out / f"{stem}.events.csv")
        summary = {"input": str(path), "steps": len(s), "events": len(events),
                   "flagged_fraction": float(frame["flagged"].mean()), "seconds": time.monotonic() - started}
        if s.labels is not None and 0 < s.labels.sum() < len(s):
            score = frame["score"].to_numpy()
            summary.update(auc_roc=metrics.auc_roc(s.labels, score), auc_pr=metrics.auc_pr(s.labels, score),
                           vus_pr=metrics.vus_pr(s.labels, score),
                           range_f1=metrics.range_f1(s.labels, frame["flagged"].to_numpy().astype(np.int64)))
        if plot:
            plot_scores(s, frame, anomaly.threshold, events, out / f"{stem}.png")
        summaries.append(summary)
        if show_progress:
            print(f"{path}: {len(s)} steps, {len(events)} events"
                  + (f", AUC-PR {summary['auc_pr']:.3f}, VUS-PR {summary['vus_pr']:.3f}" if "auc_pr" in summary else ""))
    write_json_atomic(out / "summary.json", summaries)
    return summaries


def _write_frame(frame: pl.DataFrame, path: Path, fmt: str) -> None:
    with open_atomic(path, "wb") as handle:
        frame.write_parquet(handle) if fmt == "parquet" else frame.write_csv(handle)


def _write_events(events: list[tuple[int, int, float]], series: Series, path: Path) -> None:
    stamps = series.timestamps
    frame = pl.DataFrame({
        "start_row": [a for a, _, _ in events], "end_row": [b for _, b, _ in events],
        "start": [str(stamps[a]) if stamps is not None else "" for a, _, _ in events],
        "end": [str(stamps[b - 1]) if stamps is not None else "" for _, b, _ in events],
        "peak_score": [p for _, _, p in events]},
        schema={"start_row": pl.Int64, "end_row": pl.Int64, "start": pl.String, "end": pl.String,
                "peak_score": pl.Float64})
    _write_frame(frame, path, "csv")


# ---- plots ---------------------------------------------------------------------------------------------------

def plot_scores(series: Series, frame: pl.DataFrame, threshold: float, events, path: Path,
                max_channels: int = 6) -> None:
    """Series (top, up to max_channels), score with threshold (bottom); labels shaded, events marked red."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(series))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 5), sharex=True, height_ratios=(2, 1))
    for i, name in enumerate(series.columns[:max_channels]):
        top.plot(x, series.values[:, i], lw=0.6, label=name)
    if len(series.columns) > max_channels:
        top.set_title(f"first {max_channels} of {len(series.columns)} channels", fontsize=9)
    bottom.plot(x, frame["score"].to_numpy(), lw=0.6, color="k", label="score")
    bottom.axhline(threshold, color="tab:orange", lw=0.8, ls="--", label="threshold")
    for ax in (top, bottom):
        if series.labels is not None:
            labelled = np.concatenate([[0], series.labels, [0]])
            edges = np.flatnonzero(np.diff(labelled))
            for a, b in zip(edges[::2], edges[1::2]):
                ax.axvspan(a, b, color="tab:blue", alpha=0.15, lw=0)
        for a, b, _ in events:
            ax.axvspan(a, b, color="tab:red", alpha=0.25, lw=0)
    top.legend(loc="upper left", fontsize=7, ncol=3)
    bottom.legend(loc="upper left", fontsize=7)
    bottom.set(xlabel="step (blue: labelled anomalies, red: flagged events)", ylabel="score")
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)


def _plot_loss(history: list[dict], path: Path) -> None:
    if not history:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in history], [r["train_bits_per_value"] for r in history], lw=0.8)
    ax.set(xlabel="step", ylabel="bits per value (mean over channels)", title="training loss")
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)


def score_stream(model_path: str | Path, source: str, *, follow: bool = False, idle_seconds: float = 0.0,
                 device: str = "auto", sink=None) -> int:
    """Score a CSV/TSV stream ('-' = stdin) row by row as it arrives; print `row,timestamp,nll,rps,score,
    flagged,out_of_range` lines (flushed per chunk) to `sink` (stdout). Returns the number of rows scored."""
    import os
    import sys

    from mambaseq.io.series import parse_timestamps, stream_rows

    anomaly = load_anomaly_run(model_path, device)
    sink = sink or sys.stdout
    fd = sys.stdin.fileno() if source == "-" else os.open(source, os.O_RDONLY)
    scorer, row = anomaly.scorer(), 0
    try:
        chunks = stream_rows(fd, anomaly.settings.columns, anomaly.settings.timestamp, name=source, follow=follow,
                             idle_seconds=idle_seconds)
        sink.write("row,timestamp,nll,rps,score,flagged,out_of_range\n")
        for stamps, values in chunks:
            times = parse_timestamps(stamps, source) if anomaly.settings.time_of_day else None
            result = scorer.push(values, timestamps=times, name=source)
            flagged = result["score"] > anomaly.threshold
            sink.write("".join(
                f"{row + i},{stamps[i]},{result['nll'][i]:.6g},{result['rps'][i]:.6g},{result['score'][i]:.6g},"
                f"{int(flagged[i])},"
                f"{int(result['out_of_range'][i])}\n" for i in range(len(values))))
            sink.flush()
            row += len(values)
    finally:
        if source != "-":
            os.close(fd)
    return row
