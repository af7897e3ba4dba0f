"""Causal next-base pretraining on a FASTA genome: random windows in, a run folder out.

Split: the last `valid_fraction` of every contig is held out (a single-sequence genome still gets a
validation set); training windows are drawn uniformly from the rest, weighted by contig length.
Windows with more than `max_n_fraction` N are redrawn; N is an input token but never a target, so the loss
and bits/base count real bases only. Half of the training windows are reverse-complemented.

Run folder: config.json, model.safetensors, train_state.* (resume data), train.jsonl (one line per log
step and evaluation), loss.png. Bits/base = cross-entropy in nats / ln 2 over non-N targets.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mambaseq.checkpoint import TrainState, save_run
from mambaseq.config import ModelConfig, RunConfig, TrainConfig
from mambaseq.io.fasta import Genome, open_fasta
from mambaseq.model import MambaModel
from mambaseq.io.atomic import write_json_atomic
from mambaseq.pipelines.progress import TrainingProgress
from mambaseq.tokenizers import N_ID, PAD_ID, encode, reverse_complement

LN2 = math.log(2.0)


class PretrainError(ValueError):
    """The genome or the settings cannot make a pretraining run."""


@dataclass(frozen=True)
class Region:
    contig: str
    start: int
    end: int


class WindowSampler:
    """Train and validation windows of `seq_len` bases from one genome's held-out split."""

    def __init__(self, genome: Genome, seq_len: int, valid_fraction: float, max_n_fraction: float,
                 contigs: list[str] | None = None):
        self.genome, self.seq_len, self.max_n_fraction = genome, seq_len, max_n_fraction
        names = contigs or genome.names
        missing = [c for c in names if c not in genome.lengths]
        if missing:
            raise PretrainError(f"{genome.path}: no contig named {missing[0]!r}")
        self.train, self.valid = [], []
        for name in names:
            length = genome.lengths[name]
            cut = int(round(length * (1 - valid_fraction)))
            if cut >= seq_len:
                self.train.append(Region(name, 0, cut))
            if length - cut >= seq_len:
                self.valid.append(Region(name, cut, length))
        if not self.train or not self.valid:
            longest = max(genome.lengths.values())
            raise PretrainError(
                f"{genome.path}: seq_len {seq_len} does not fit in both the training part and the held-out "
                f"{valid_fraction:.0%} of any contig (longest contig {longest:,} bases)")
        spans = np.array([r.end - r.start - seq_len + 1 for r in self.train], dtype=np.float64)
        self._weights = spans / spans.sum()

    def split(self) -> dict:
        as_list = lambda regions: [[r.contig, r.start, r.end] for r in regions]  # noqa: E731
        return {"train": as_list(self.train), "valid": as_list(self.valid)}

    def _window(self, region: Region, start: int) -> np.ndarray:
        raw = self.genome.fetch(region.contig, start, start + self.seq_len)
        return encode(raw, name=f"{region.contig}:{start + 1}-{start + self.seq_len}")

    def train_batch(self, rng: np.random.Generator, batch_size: int, rc_augment: bool) -> torch.Tensor:
        """(batch, seq_len) int64 ids; windows over the N limit are redrawn (bounded tries, then kept)."""
        rows = []
        for _ in range(batch_size):
            for _attempt in range(100):
                region = self.train[rng.choice(len(self.train), p=self._weights)]
                start = region.start + int(rng.integers(0, region.end - region.start - self.seq_len + 1))
                ids = self._window(region, start)
                if np.count_nonzero(ids == N_ID) <= self.max_n_fraction * self.seq_len:
                    break
            if rc_augment and rng.random() < 0.5:
                ids = reverse_complement(ids)
            rows.append(ids)
        return torch.from_numpy(np.stack(rows).astype(np.int64))

    def valid_windows(self, count: int) -> torch.Tensor:
        """Up to `count` non-overlapping held-out windows, spread evenly over the validation regions."""
        slots = [(r, s) for r in self.valid for s in range(r.start, r.end - self.seq_len + 1, self.seq_len)]
        picks = np.linspace(0, len(slots) - 1, num=min(count, len(slots))).round().astype(int)
        return torch.from_numpy(np.stack([self._window(*slots[i]) for i in picks]).astype(np.int64))


def next_base_loss(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy in nats, number of counted targets) for predicting tokens[:, 1:].

    N and PAD targets are left out; a batch with no real base gives (0, 0), never NaN.
    """
    targets = tokens[:, 1:]  # (B, L-1)
    counted = (targets != N_ID) & (targets != PAD_ID)
    losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none")
    return (losses * counted.flatten()).sum(), counted.sum()


@torch.no_grad()
def evaluate(model: MambaModel, windows: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Held-out bits per base over non-N targets."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        tokens = windows[i:i + batch_size].to(device)
        with _autocast(device):
            logits = model(tokens)
        loss, n = next_base_loss(logits, tokens)
        total, count = total + loss.item(), count + int(n)
    model.train()
    return total / max(count, 1) / LN2


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)


def cosine_schedule(warmup: int, total: int):
    """LR multiplier: linear warm-up, then cosine decay to 10% (as in the Mamba/GPT-3 recipes)."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
    return factor


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PretrainError(f"device {name!r} requested but no CUDA GPU is available")
    return torch.device(name)


def pretrain(genome_path: str | Path, out: str | Path, model_cfg: ModelConfig, train_cfg: TrainConfig,
             device: str = "auto", contigs: list[str] | None = None, show_progress: bool = True) -> dict:
    """Train a causal LM on `genome_path`, write the run folder `out`, return the summary."""
    out = Path(out)
    dev = pick_device(device)
    torch.manual_seed(train_cfg.seed)
    rng = np.random.default_rng(train_cfg.seed)
    with open_fasta(genome_path) as genome:
        sampler = WindowSampler(genome, train_cfg.seq_len, train_cfg.valid_fraction, train_cfg.max_n_fraction,
                                contigs)
        valid = sampler.valid_windows(train_cfg.eval_windows)
        model = MambaModel(model_cfg).to(dev)
        optimizer = torch.optim.AdamW(model.param_groups(train_cfg.weight_decay), lr=train_cfg.lr,
                                      betas=(0.9, 0.95), fused=dev.type == "cuda")
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, cosine_schedule(train_cfg.warmup_steps, train_cfg.steps))
        run_cfg = RunConfig(task="lm", model=model_cfg, train=train_cfg,
                            extra={"tokenizer": "dna", "genome": str(Path(genome_path).resolve()),
                                   "split": sampler.split()})
        out.mkdir(parents=True, exist_ok=True)
        log_path = out / "train.jsonl"
        log_path.unlink(missing_ok=True)
        history, summary = [], {}
        started = time.monotonic()
        tokens_seen, step = 0, 0
        with TrainingProgress(train_cfg.steps, enabled=show_progress) as progress, log_path.open("a") as log:
            while step < train_cfg.steps:
                if train_cfg.max_minutes and time.monotonic() - started > 60 * train_cfg.max_minutes:
                    break
                tick = time.monotonic()
                loss_sum, count_sum = 0.0, 0
                for _ in range(train_cfg.grad_accum):
                    tokens = sampler.train_batch(rng, train_cfg.batch_size, train_cfg.rc_augment).to(dev)
                    with _autocast(dev):
                        logits = model(tokens)
                    loss, count = next_base_loss(logits, tokens)
                    (loss / count.clamp(min=1) / train_cfg.grad_accum).backward()
                    loss_sum, count_sum = loss_sum + loss.item(), count_sum + int(count)
                    tokens_seen += tokens.numel()
                if train_cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bits = loss_sum / max(count_sum, 1) / LN2
                rate = train_cfg.batch_size * train_cfg.grad_accum * train_cfg.seq_len / (time.monotonic() - tick)
                record = {"step": step, "train_bits_per_base": bits, "tokens_per_s": rate,
                          "lr": scheduler.get_last_lr()[0], "elapsed_s": time.monotonic() - started}
                if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
                    record["valid_bits_per_base"] = evaluate(model, valid, train_cfg.batch_size, dev)
                log.write(json.dumps(record) + "\n")
                log.flush()
                history.append(record)
                progress.update(step, bits, rate, record.get("valid_bits_per_base"))
        last = history[-1] if history else {}
        summary["valid_bits_per_base"] = last.get("valid_bits_per_base")
        if summary["valid_bits_per_base"] is None:  # stopped by the time limit between evaluations
            summary["valid_bits_per_base"] = evaluate(model, valid, train_cfg.batch_size, dev)
    summary.update(steps=step, tokens_seen=tokens_seen, elapsed_s=time.monotonic() - started,
                   valid_windows=len(valid), train_bits_per_base=last.get("train_bits_per_base"),
                   device=str(dev))
    train_state = TrainState(optimizer=optimizer, scheduler=scheduler, counters={"step": step, "tokens_seen": tokens_seen})
    save_run(out, model, run_cfg, train_state)
    write_json_atomic(out / "summary.json", summary)
    _plot_history(history, out / "loss.png")
    return summary


def _plot_history(history: list[dict], path: Path) -> None:
    """Training and held-out bits/base against steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in history], [r["train_bits_per_base"] for r in history], label="train", lw=1)
    evals = [r for r in history if "valid_bits_per_base" in r]
    ax.plot([r["step"] for r in evals], [r["valid_bits_per_base"] for r in evals], "o-", label="held-out")
    ax.set(xlabel="step", ylabel="bits / base", title="next-base cross-entropy")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
