"""Model and training settings: validated dataclasses with a JSON round trip.

A run folder stores `config.json` = {"model": ModelConfig, "train": TrainConfig, "task": ..., extra}; both
dataclasses refuse unknown keys and out-of-range values with a one-line ValueError, so a foreign or
hand-edited config fails loudly at load time instead of deep inside a forward pass.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration value or file is invalid."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _from_dict(cls, data: dict[str, Any]):
    _check(isinstance(data, dict), f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    _check(not unknown, f"{cls.__name__}: unknown key(s) {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as err:  # wrong argument types surface here as TypeError from validation maths
        raise ConfigError(f"{cls.__name__}: {err}") from None


@dataclass
class ModelConfig:
    """A character-level Mamba: embedding -> n_layer x [RMSNorm -> mixer] -> norm -> head.

    Defaults follow the Mamba paper (Gu & Dao 2023, section 3.6 and appendix E): expand 2, d_state 16,
    conv width 4, dt_rank = ceil(d_model / 16), dt initialised log-uniform in [dt_min, dt_max].
    """

    vocab_size: int = 8
    d_model: int = 128
    n_layer: int = 4
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    dt_rank: int = 0  # 0 means ceil(d_model / 16)
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    dt_init_floor: float = 1e-4
    norm_eps: float = 1e-5
    bidirectional: bool = False  # Caduceus-style: a forward and a reversed scan per layer, outputs summed
    selective: bool = True  # False: dt, B, C are learned but input-independent (S4D-like ablation)
    fixed_dt: float = 0.0  # > 0: dt is this constant, not learned (ablation)
    n_channels: int = 1  # time series: one embedding and one next-bin head per channel
    n_classes: int = 0  # > 0 adds a sequence classification head (mean pooling over valid positions)
    pad_id: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layer", "d_state", "d_conv", "expand", "n_channels"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, f"model.{name} must be a positive integer, got {value!r}")
        _check(isinstance(self.dt_rank, int) and self.dt_rank >= 0, f"model.dt_rank must be >= 0, got {self.dt_rank!r}")
        _check(0 < self.dt_min <= self.dt_max, "model.dt_min/dt_max must satisfy 0 < dt_min <= dt_max")
        _check(self.fixed_dt >= 0, f"model.fixed_dt must be >= 0, got {self.fixed_dt}")
        _check(self.n_classes >= 0 and self.n_classes != 1, f"model.n_classes must be 0 or >= 2, got {self.n_classes}")
        _check(0 <= self.pad_id < self.vocab_size, f"model.pad_id {self.pad_id} outside the vocabulary")
        _check(self.norm_eps > 0, "model.norm_eps must be > 0")

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def resolved_dt_rank(self) -> int:
        return self.dt_rank or math.ceil(self.d_model / 16)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        return _from_dict(cls, data)


@dataclass
class TrainConfig:
    """Optimisation and data settings for a training run (pretraining or fine-tuning)."""

    seq_len: int = 1024
    batch_size: int = 8
    steps: int = 1000
    max_minutes: float = 0.0  # > 0 stops after this wall time even if steps remain
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_steps: int = 100
    grad_clip: float = 1.0
    grad_accum: int = 1
    eval_every: int = 200
    eval_windows: int = 64
    max_n_fraction: float = 0.5  # windows with more N than this are skipped
    rc_augment: bool = True
    seed: int = 0
    valid_fraction: float = 0.1  # single-sequence genomes: held-out tail fraction
    num_workers: int = 0
    checkpoint_every: int = 0  # steps between resumable checkpoints (0: at every evaluation)
    checkpoint_minutes: float = 0.0  # > 0: also checkpoint when this much time passed since the last one
    keep_checkpoints: int = 2  # the newest k checkpoints are kept
    # sequence-length warm-up (pretraining; as in HyenaDNA, Nguyen et al. 2023): over the first
    # seq_len_warmup_steps steps the window starts at seq_len_start bases and doubles in equal stages up to
    # seq_len; 0 steps: always seq_len
    seq_len_warmup_steps: int = 0
    seq_len_start: int = 64

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size", "steps", "grad_accum", "eval_every", "eval_windows",
                     "keep_checkpoints"):
            value = getattr(self, name)
            _check(isinstance(value, int) and value >= 1, f"train.{name} must be a positive integer, got {value!r}")
        _check(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, "train.weight_decay must be >= 0")
        _check(self.warmup_steps >= 0, "train.warmup_steps must be >= 0")
        _check(self.grad_clip >= 0, "train.grad_clip must be >= 0 (0 disables clipping)")
        _check(self.max_minutes >= 0, "train.max_minutes must be >= 0")
        _check(0 <= self.max_n_fraction <= 1, "train.max_n_fraction must be in [0, 1]")
        _check(0 < self.valid_fraction < 1, "train.valid_fraction must be in (0, 1)")
        _check(self.num_workers >= 0, "train.num_workers must be >= 0")
        _check(self.checkpoint_every >= 0 and self.checkpoint_minutes >= 0,
               "train.checkpoint_every and train.checkpoint_minutes must be >= 0")
        _check(isinstance(self.seq_len_warmup_steps, int) and self.seq_len_warmup_steps >= 0,
               f"train.seq_len_warmup_steps must be an integer >= 0, got {self.seq_len_warmup_steps!r}")
        if self.seq_len_warmup_steps:  # 2 bases: the shortest window with a next-base target
            _check(isinstance(self.seq_len_start, int) and 2 <= self.seq_len_start < self.seq_len,
                   f"train.seq_len_start must be an integer in [2, seq_len {self.seq_len}) for a sequence-length "
                   f"warm-up, got {self.seq_len_start!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        return _from_dict(cls, data)


@dataclass
class RunConfig:
    """What a run folder's config.json holds: the task, the model, how it was trained, task extras."""

    task: str = "lm"  # "lm" | "promoter" | "anomaly"
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    extra: dict[str, Any] = field(default_factory=dict)  # task data: tokenizer, bins, threshold, split ...

    TASKS = ("lm", "promoter", "anomaly")

    def __post_init__(self) -> None:
        _check(self.task in self.TASKS, f"unknown task {self.task!r} (expected one of {', '.join(self.TASKS)})")

    def to_dict(self) -> dict[str, Any]:
        return {"format": "mambaseq-run/1", "task": self.task, "model": self.model.to_dict(),
                "train": self.train.to_dict(), "extra": self.extra}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        _check(isinstance(data, dict) and data.get("format") == "mambaseq-run/1",
               "not a mambaseq run config (missing \"format\": \"mambaseq-run/1\")")
        return cls(task=data.get("task", "lm"), model=ModelConfig.from_dict(data.get("model", {})),
                   train=TrainConfig.from_dict(data.get("train", {})), extra=dict(data.get("extra", {})))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"config is not valid JSON: {err}") from None
        return cls.from_dict(data)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"cannot read {path}: {err}") from None
        return cls.from_json(text)
