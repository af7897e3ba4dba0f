"""Run folders: `config.json` (RunConfig) + `model.safetensors`, and `train_state.safetensors` for resuming.

Nothing here unpickles: weights and training state are safetensors, structure is JSON. Files are written to a
temporary file in the same folder and moved into place with os.replace (mambaseq.io.atomic), so a crash never
leaves half a file. Every failure to read a run is a one-line `CheckpointError` naming the path.

Training state (one file, so it is replaced atomically): the optimizer's and LR scheduler's state dicts, the
torch/python/numpy RNG states and user counters (step, tokens seen...). Their tensors (Adam moments, the
torch RNG's uint8 state) become safetensors entries; the rest is JSON in the file's metadata, where a tensor is
written as {"__tensor__": key}, a tuple as {"__tuple__": [...]} and a dict with non-string keys (optimizer
state is keyed by parameter index) as {"__items__": [[key, value], ...]}.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from mambaseq.config import ConfigError, RunConfig
from mambaseq.io.atomic import write_bytes_atomic
from mambaseq.model import MambaModel

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
TRAIN_STATE = "train_state.safetensors"
WEIGHTS_FORMAT = "mambaseq-weights/1"
TRAIN_FORMAT = "mambaseq-train-state/1"


class CheckpointError(ValueError):
    """A run folder or one of its files cannot be read or written."""


@dataclass
class TrainState:
    """What resuming needs besides the weights. `load_train_state` restores into it in place."""

    optimizer: torch.optim.Optimizer
    scheduler: Any = None  # a torch.optim.lr_scheduler instance, or None
    counters: dict[str, Any] = field(default_factory=dict)  # JSON values: step, tokens seen, best metric ...


# ---- files ------------------------------------------------------------------------------------------------
def _pickle_kind(head: bytes) -> str | None:
    """What pickle-based format the first bytes reveal, if any (torch.save writes a zip or a bare pickle)."""
    if head.startswith(b"PK\x03\x04"):
        return "a zip archive (torch.save format)"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "a pickle stream"
    return None


def _read_safetensors(path: Path, device: str | torch.device) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors on `device`, metadata); refuses pickle and reports corrupt or truncated files."""
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    data = path.read_bytes()
    kind = _pickle_kind(data[:4])
    if kind is not None:
        raise CheckpointError(f"{path}: is {kind}; refusing to unpickle (mambaseq reads safetensors only)")
    try:
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
        tensors = st_load(data)
    except Exception as err:  # safetensors raises its own error type; JSON/struct errors for garbage
        raise CheckpointError(f"{path}: not a readable safetensors file (corrupt or truncated: "
                              f"{str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    return {k: v.to(device) for k, v in tensors.items()}, metadata


def _check_run_folder(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as f:
            kind = _pickle_kind(f.read(4))
        if kind is not None:
            raise CheckpointError(f"{path}: is {kind}; refusing to unpickle (mambaseq reads safetensors run folders)")
        raise CheckpointError(f"{path}: is a file; expected a run folder with {CONFIG} and {WEIGHTS}")
    if not path.is_dir():
        raise CheckpointError(f"{path}: run folder not found")


# ---- weights and config ---------------------------------------------------------------------------------
def save_run(path: str | Path, model: MambaModel, run_config: RunConfig,
             train_state: TrainState | None = None) -> Path:
    """Write (or overwrite) the run folder `path`; returns it."""
    path = Path(path)
    if run_config.model != model.config:
        raise CheckpointError(f"{path}: run_config.model differs from the model's config; refusing to save")
    path.mkdir(parents=True, exist_ok=True)
    # the LM head is F.linear with the embedding weight, so no two state-dict entries share storage
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_bytes_atomic(path / WEIGHTS, st_save(tensors, metadata={"format": WEIGHTS_FORMAT}))
    write_bytes_atomic(path / CONFIG, (run_config.to_json() + "\n").encode())
    if train_state is not None:
        save_train_state(path, train_state)
    return path


def load_run(path: str | Path, device: str | torch.device = "cpu") -> tuple[MambaModel, RunConfig]:
    """(model with the saved weights, bit for bit, in their saved dtype, on `device`; its RunConfig)."""
    path = Path(path)
    _check_run_folder(path)
    if not (path / CONFIG).is_file():
        raise CheckpointError(f"{path / CONFIG}: file not found")
    try:
        run_config = RunConfig.load(path / CONFIG)
    except (ConfigError, TypeError) as err:  # TypeError: a JSON value of the wrong type, e.g. "extra": 5
        raise CheckpointError(f"{path / CONFIG}: {err}") from None
    tensors, _ = _read_safetensors(path / WEIGHTS, device)
    with torch.device("meta"):  # no wasted initialisation: every tensor is replaced below
        model = MambaModel(run_config.model)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path / WEIGHTS}: tensor names do not match {CONFIG} (missing: "
                              f"{', '.join(missing[:3]) or '-'}; unexpected: {', '.join(unexpected[:3]) or '-'})")
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            raise CheckpointError(f"{path / WEIGHTS}: {name} has shape {tuple(tensors[name].shape)}, "
                                  f"{CONFIG} implies {shape}")
    model.load_state_dict(tensors, strict=True, assign=True)  # assign keeps each saved dtype: bit-exact
    return model, run_config


def from_pretrained(path: str | Path, device: str | torch.device = "cpu") -> MambaModel:
    """The model of a run folder, in eval mode."""
    return load_run(path, device)[0].eval()


# ---- training state -------------------------------------------------------------------------------------
def _encode(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able form of obj; tensors are moved into `tensors` under dotted keys."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: _encode(v, f"{key}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, _encode(v, f"{key}.{k}", tensors)] for k, v in obj.items()]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"training state entry {key!r} has type {type(obj).__name__}, which cannot be stored")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__ndarray__" in obj:
        return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k: _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": np.random.get_state(legacy=False)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available() and torch.cuda.device_count() == len(state["cuda"]):
        torch.cuda.set_rng_state_all(state["cuda"])


def save_train_state(path: str | Path, state: TrainState) -> None:
    """Write `train_state.safetensors` into the run folder `path` (optimizer, scheduler, RNGs, counters)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    tree = {"optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
            "rng": _rng_state(), "counters": state.counters}
    meta = json.dumps(_encode(tree, "state", tensors))
    write_bytes_atomic(path / TRAIN_STATE, st_save(tensors, metadata={"format": TRAIN_FORMAT, "state": meta}))


def load_train_state(path: str | Path, state: TrainState, restore_rng: bool = True) -> dict[str, Any]:
    """Restore optimizer, scheduler and (by default) the RNGs from the run folder `path`; return the counters.

    The optimizer must be built over the loaded model's parameters, in the same order as when saved.
    """
    path = Path(path)
    _check_run_folder(path)
    file = path / TRAIN_STATE
    tensors, metadata = _read_safetensors(file, "cpu")  # the optimizer moves its state to its parameters
    if metadata.get("format") != TRAIN_FORMAT or "state" not in metadata:
        raise CheckpointError(f"{file}: not a mambaseq training state (no \"format\": \"{TRAIN_FORMAT}\")")
    tree = _decode(json.loads(metadata["state"]), tensors)
    if (tree["scheduler"] is None) != (state.scheduler is None):
        raise CheckpointError(f"{file}: saved {'without' if tree['scheduler'] is None else 'with'} an LR "
                              f"scheduler, but one was {'given' if state.scheduler is not None else 'not given'}")
    try:
        state.optimizer.load_state_dict(tree["optimizer"])
    except (ValueError, KeyError) as err:
        raise CheckpointError(f"{file}: optimizer state does not fit this optimizer ({err})") from None
    if state.scheduler is not None:
        state.scheduler.load_state_dict(tree["scheduler"])
    if restore_rng:
        _set_rng_state(tree["rng"])
    state.counters = tree["counters"]
    return state.counters
