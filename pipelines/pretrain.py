"""Causal next-base pretraining on a FASTA genome: random windows in, a resumable run folder out.

Split (written to config.json's extra.split): a BED of `chrom start end split` intervals (train / valid /
test, the HyenaDNA/Caduceus/Basenji layout; or fold labels as in Borzoi's bed, by default fold4 valid, fold3
test, the other folds train: `split_names` changes that), or whole held-out contigs (`valid_contigs`), or by
default the last `valid_fraction` of every contig, so a single-sequence genome still gets a validation set.
Contigs: the main chromosomes (chr1-22, X, Y) when the genome has any, else all; `contigs` picks explicitly.

Windows: uniform over the training regions, weighted by length; windows with more than `max_n_fraction` N
are redrawn; half are reverse-complemented (`rc_augment`). N is an input token but never a target, so loss
and bits/base (= cross-entropy in nats / ln 2) count real bases only, and an all-N batch gives 0, not NaN.
Step s draws its windows from an RNG seeded by (seed, s, rank): the data order is the same after a resume
and different on every DDP rank. DataLoader workers (`num_workers`) each open their own FASTA handle.
Optional sequence-length warm-up (`seq_len_warmup_steps`, HyenaDNA's): windows start at `seq_len_start`
bases and double in equal stages up to `seq_len` (`window_length`); held-out windows are always seq_len.

Run folder: config.json + model.safetensors + train_state.safetensors (final), checkpoints/step-NNNNNNNN/
(the same, every `checkpoint_every` steps or `checkpoint_minutes`, written to a temporary folder and renamed,
newest `keep_checkpoints` kept), train.jsonl, summary.json, loss.png. `resume=True` continues from the newest
checkpoint with the saved settings. Under torchrun each rank trains on its own windows (DDP); rank 0 writes.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mambaseq.checkpoint import TrainState, load_run, load_train_state, save_run
from mambaseq.config import ModelConfig, RunConfig, TrainConfig
from mambaseq.io.atomic import save_figure_atomic, write_bytes_atomic, write_json_atomic
from mambaseq.io.fasta import Genome, main_chromosomes, open_fasta
from mambaseq.model import MambaModel
from mambaseq.pipelines.progress import TrainingProgress
from mambaseq.pipelines.training import autocast_for, cosine_schedule, join_process_group, optimizer_step
from mambaseq.tokenizers import N_ID, PAD_ID, encode, reverse_complement

LN2 = math.log(2.0)
SPLIT_NAMES = {"train": "train", "valid": "valid", "val": "valid", "validation": "valid", "test": "test"}
# Borzoi's bed (calico/borzoi data/sequences_human.bed.gz) labels its intervals fold0..fold7 and holds out
# fold3 (test) and fold4 (valid); a fold not named in the mapping trains
DEFAULT_SPLIT_NAMES = {"fold4": "valid", "fold3": "test"}
FOLD = re.compile(r"fold\d+")


class PretrainError(ValueError):
    """The genome, the intervals or the settings cannot make a pretraining run."""


@dataclass(frozen=True)
class Region:
    contig: str
    start: int
    end: int


# ---- split ------------------------------------------------------------------------------------------------
def parse_split_names(text: str) -> dict[str, str]:
    """'valid=fold4,test=fold3' -> {'fold4': 'valid', 'fold3': 'test'} (bed label -> split)."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        part, _, name = (x.strip() for x in item.partition("="))
        if part.lower() not in SPLIT_NAMES or not name:
            raise PretrainError(f"--split-names: expected SPLIT=LABEL pairs with SPLIT train, valid or test (e.g. "
                                f"valid=fold4,test=fold3), got {item!r}")
        if name.lower() in mapping:
            raise PretrainError(f"--split-names: label {name!r} is given twice")
        mapping[name.lower()] = SPLIT_NAMES[part.lower()]
    if not mapping:
        raise PretrainError("--split-names: no SPLIT=LABEL pair given (e.g. valid=fold4,test=fold3)")
    return mapping


def split_of(label: str, split_names: dict[str, str]) -> str | None:
    """The split a bed label belongs to: the mapping first, then train/valid/test, then any other foldK
    trains; None for an unknown label."""
    label = label.lower()
    if label in split_names:
        return split_names[label]
    if label in SPLIT_NAMES:
        return SPLIT_NAMES[label]
    return "train" if FOLD.fullmatch(label) else None


def read_split_bed(path: str | Path, lengths: dict[str, int], chosen: set[str],
                   split_names: dict[str, str] | None = None) -> dict[str, list[Region]]:
    """{'train': [...], 'valid': [...], 'test': [...]} from a 4-column BED.

    The split column may say train/valid/test or hold fold labels, placed by `split_names` (label -> split;
    default DEFAULT_SPLIT_NAMES, Borzoi's). A contig missing from the genome (`lengths`) is an error; one left
    out by the contig filter (`chosen`) is skipped."""
    path = Path(path)
    split_names = DEFAULT_SPLIT_NAMES if split_names is None else split_names
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise PretrainError(f"{path}: cannot read the intervals ({err})") from None
    split: dict[str, list[Region]] = {"train": [], "valid": [], "test": []}
    labels: dict[str, int] = {}  # label -> intervals used, for the message when a split is empty
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 4 or not fields[1].isdigit() or not fields[2].isdigit():
            raise PretrainError(f"{path}:{number}: expected 'chrom start end split', got {line[:80]!r}")
        chrom, start, end, part = fields[0], int(fields[1]), int(fields[2]), split_of(fields[3], split_names)
        if part is None:
            raise PretrainError(f"{path}:{number}: unknown split {fields[3]!r} (expected train, valid, test or a "
                                f"foldK label; map other labels with --split-names, e.g. valid=holdout)")
        if chrom not in lengths:
            raise PretrainError(f"{path}:{number}: contig {chrom!r} is not in the genome")
        if chrom not in chosen:
            continue
        if not start < end <= lengths[chrom]:
            raise PretrainError(f"{path}:{number}: interval {chrom}:{start}-{end} is empty or runs past the "
                                f"contig's end ({lengths[chrom]:,})")
        split[part].append(Region(chrom, start, end))
        labels[fields[3]] = labels.get(fields[3], 0) + 1
    if not split["train"] and not split["valid"]:
        raise PretrainError(f"{path}: no train or valid interval lies on the contigs in use")
    for part in ("train", "valid"):
        if not split[part]:
            found = ", ".join(f"{label} x{count} -> {split_of(label, split_names)}" for label, count in labels.items())
            raise PretrainError(f"{path}: no {part} interval lies on the contigs in use (labels: {found}; split "
                                f"names: {describe_split_names(split_names)}; change them with --split-names)")
    return split


def describe_split_names(split_names: dict[str, str]) -> str:
    """'valid=fold4, test=fold3, other folds train', as written to the run's split record."""
    return ", ".join(f"{part}={label}" for label, part in split_names.items()) + ", other folds train"


def plan_split(genome: Genome, seq_len: int, valid_fraction: float, contigs: list[str] | None = None,
               valid_contigs: list[str] | None = None, intervals: str | Path | None = None,
               all_contigs: bool = False, split_names: dict[str, str] | None = None) -> dict:
    """Train and valid regions (each at least seq_len long) and how they were chosen."""
    names = contigs or (genome.names if all_contigs else main_chromosomes(genome.names) or genome.names)
    for name in list(names) + list(valid_contigs or []):
        if name not in genome.lengths:
            raise PretrainError(f"{genome.path}: no contig named {name!r}")
    if intervals is not None:
        split_names = DEFAULT_SPLIT_NAMES if split_names is None else split_names
        split = read_split_bed(intervals, genome.lengths, set(names) | set(valid_contigs or []), split_names)
        how = f"intervals from {Path(intervals).resolve()} ({describe_split_names(split_names)})"
    elif valid_contigs:
        split = {"train": [Region(n, 0, genome.lengths[n]) for n in names if n not in valid_contigs],
                 "valid": [Region(n, 0, genome.lengths[n]) for n in valid_contigs], "test": []}
        how = f"held-out contigs {', '.join(valid_contigs)}"
    else:
        split = {"train": [], "valid": [], "test": []}
        for name in names:
            length = genome.lengths[name]
            cut = int(round(length * (1 - valid_fraction)))
            split["train"].append(Region(name, 0, cut))
            split["valid"].append(Region(name, cut, length))
        how = f"last {valid_fraction:.0%} of every contig held out"
    for part in ("train", "valid"):
        split[part] = [r for r in split[part] if r.end - r.start >= seq_len]
        if not split[part]:
            raise PretrainError(f"{genome.path}: no {part} region is at least seq_len {seq_len:,} long "
                                f"({how}; longest contig {max(genome.lengths.values()):,} bases)")
    return {"how": how, **{k: [[r.contig, r.start, r.end] for r in v] for k, v in split.items()}}


def window_length(cfg: TrainConfig, step: int) -> int:
    """Training window length at 0-based `step`: the sequence-length warm-up schedule.

    With K = seq_len_warmup_steps > 0 and n = ceil(log2(seq_len / seq_len_start)) stages, stage i (steps
    [i K / n, (i+1) K / n)) uses seq_len_start * 2**i bases; from step K on, seq_len. The batch size stays the
    same, so early steps carry fewer tokens and memory never exceeds the full length's. A pure function of the
    step: a resumed run and every DDP rank and DataLoader worker agree on it.
    """
    warmup, start = cfg.seq_len_warmup_steps, cfg.seq_len_start
    if step >= warmup:
        return cfg.seq_len
    stages = math.ceil(math.log2(cfg.seq_len / start))
    return start * 2 ** (step * stages // warmup)


class WindowSampler:
    """Training and validation windows of `seq_len` bases (training: up to seq_len) from a planned split."""

    def __init__(self, genome: Genome, split: dict, seq_len: int, max_n_fraction: float):
        self.genome, self.seq_len, self.max_n_fraction = genome, seq_len, max_n_fraction
        self.train = [Region(*r) for r in split["train"]]
        self.valid = [Region(*r) for r in split["valid"]]
        self._weights: dict[int, np.ndarray] = {}

    def _region_weights(self, length: int) -> np.ndarray:
        """P(region) proportional to its number of window starts, so windows are uniform over all starts."""
        if length not in self._weights:
            spans = np.array([r.end - r.start - length + 1 for r in self.train], dtype=np.float64)
            self._weights[length] = spans / spans.sum()
        return self._weights[length]

    def _window(self, region: Region, start: int, length: int | None = None) -> np.ndarray:
        length = length or self.seq_len
        raw = self.genome.fetch(region.contig, start, start + length)
        return encode(raw, name=f"{region.contig}:{start + 1}-{start + length}")

    def train_batch(self, rng: np.random.Generator, batch_size: int, rc_augment: bool,
                    length: int | None = None) -> torch.Tensor:
        """(batch, length) int64 ids (length: seq_len by default, at most seq_len); windows over the N limit are
        redrawn (100 tries, then kept)."""
        length = length or self.seq_len
        if not 1 <= length <= self.seq_len:
            raise PretrainError(f"window length {length} outside [1, seq_len {self.seq_len}]")
        weights = self._region_weights(length)
        rows = []
        for _ in range(batch_size):
            for _attempt in range(100):
                region = self.train[rng.choice(len(self.train), p=weights)]
                start = region.start + int(rng.integers(0, region.end - region.start - length + 1))
                ids = self._window(region, start, length)
                if np.count_nonzero(ids == N_ID) <= self.max_n_fraction * length:
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


class TrainBatches(IterableDataset):
    """Micro-batches for steps [first_step, last_step), step s drawn with RNG (seed, s, rank), its windows
    `window_length(cfg, s)` long.

    With k DataLoader workers, worker w makes every k-th micro-batch; the loader's round-robin order then
    gives them back in step order, so the data is the same for any k.
    """

    def __init__(self, sampler: WindowSampler, cfg: TrainConfig, rank: int, first_step: int, last_step: int):
        self.sampler, self.cfg, self.rank = sampler, cfg, rank
        self.first_step, self.last_step = first_step, last_step

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        items = [(s, m) for s in range(self.first_step, self.last_step) for m in range(self.cfg.grad_accum)]
        for step, micro in items[worker::workers]:
            rng = np.random.default_rng([self.cfg.seed, step, self.rank, micro])
            yield self.sampler.train_batch(rng, self.cfg.batch_size, self.cfg.rc_augment,
                                           window_length(self.cfg, step))


# ---- loss and evaluation ----------------------------------------------------------------------------------
def next_base_loss(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed cross-entropy in nats, number of counted targets) for predicting tokens[:, 1:].

    N and PAD targets are left out; a batch with no real base gives (0, 0), never NaN.
    """
    targets = tokens[:, 1:]  # (B, L-1)
    counted = (targets != N_ID) & (targets != PAD_ID)
    losses = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), targets.flatten(), reduction="none")
    return (losses * counted.flatten()).sum(), counted.sum()


@torch.no_grad()
def evaluate(model: torch.nn.Module, windows: torch.Tensor, batch_size: int, device: torch.device) -> float:
    """Held-out bits per base over non-N targets (each DDP rank takes its share, sums are all-reduced)."""
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    mine = windows[rank::world]
    for i in range(0, len(mine), batch_size):
        tokens = mine[i:i + batch_size].to(device)
        with autocast_for(device):
            logits = model(tokens)
        loss, count = next_base_loss(logits, tokens)
        sums += torch.stack([loss.double(), count.double()])
    if world > 1:
        dist.all_reduce(sums)
    model.train()
    return (sums[0] / sums[1].clamp(min=1)).item() / LN2


# ---- checkpoints ------------------------------------------------------------------------------------------
def _checkpoint_dir(out: Path, step: int) -> Path:
    return out / "checkpoints" / f"step-{step:08d}"


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint folder (temporary folders of a killed write are ignored)."""
    found = sorted((out / "checkpoints").glob("step-*")) if (out / "checkpoints").is_dir() else []
    return found[-1] if found else None


def _write_checkpoint(out: Path, step: int, model, run_cfg: RunConfig, state: TrainState, keep: int) -> None:
    final = _checkpoint_dir(out, step)
    tmp = final.with_name(f".tmp-{final.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_run(tmp, model, run_cfg, state)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)  # a folder appears whole or not at all
    for old in sorted((out / "checkpoints").glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _truncate_log(path: Path, last_step: int) -> list[dict]:
    """Keep the log lines up to `last_step` (a resumed run redoes the steps after its checkpoint)."""
    if not path.is_file():
        return []
    kept = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = [r for r in kept if r["step"] <= last_step]
    write_bytes_atomic(path, "".join(json.dumps(r) + "\n" for r in kept).encode())
    return kept


# ---- the run ----------------------------------------------------------------------------------------------
def _rank0_decides(value: bool, dev: torch.device) -> bool:
    """Rank 0's value on every rank (steps where all ranks must take the same branch)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    flag = torch.tensor(float(value), device=dev)  # on the rank's device: NCCL has no CPU tensors
    dist.broadcast(flag, 0)
    return bool(flag.item())


def _check_writable(out: Path, rank: int, dev: torch.device) -> None:
    """Fail at once, on every rank, when rank 0 cannot create or write the run folder."""
    problem = None
    if rank == 0:
        # folders the probe creates, deepest first: removed again, so a run that fails later leaves none behind
        made = [p for p in [out, *out.parents] if not p.exists()]
        try:
            if out.exists() and not out.is_dir():
                problem = "it is a file, not a folder"
            else:
                out.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=out, prefix=".write-test-"):
                    pass
        except OSError as err:  # a path under a file, no permission, read-only file system ...
            problem = err.strerror or type(err).__name__
        for folder in made:
            with suppress(OSError):
                folder.rmdir()
    if _rank0_decides(problem is not None, dev):
        raise PretrainError(f"{out}: cannot write the run folder ({problem or 'rank 0 cannot write it'})")


def pretrain(genome_path: str | Path | None, out: str | Path, model_cfg: ModelConfig | None = None,
             train_cfg: TrainConfig | None = None, device: str = "auto", contigs: list[str] | None = None,
             valid_contigs: list[str] | None = None, intervals: str | Path | None = None,
             all_contigs: bool = False, resume: bool = False, show_progress: bool = True,
             split_names: dict[str, str] | None = None) -> dict:
    """Train a causal LM on `genome_path`, write the run folder `out`, return the summary.

    resume=True: continue `out` from its newest checkpoint with its saved settings (model_cfg, train_cfg and
    the split are taken from it; genome_path may point to the genome's new location). A new run into a folder
    that holds a run replaces it: the old checkpoints go, so a later resume cannot pick up the other model.
    split_names: bed label -> split (see read_split_bed). Under torchrun, the process group this call creates
    is destroyed again when it returns or fails, so a process makes one call (gloo cannot reliably join a new
    group after destroying one); a caller that wants several initialises the group itself, which is then left
    alone.
    """
    dev, created = join_process_group(device)
    try:
        return _pretrain(genome_path, Path(out), model_cfg, train_cfg, dev, contigs, valid_contigs, intervals,
                         all_contigs, resume, show_progress, split_names)
    finally:
        if created:
            dist.destroy_process_group()


def _pretrain(genome_path, out: Path, model_cfg, train_cfg, dev: torch.device, contigs, valid_contigs,
              intervals, all_contigs, resume, show_progress, split_names) -> dict:
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    start_step, resumed_from = 0, None
    if resume:
        resumed_from = latest_checkpoint(out)
        if resumed_from is None:
            raise PretrainError(f"{out}: nothing to resume (no checkpoints/step-* folder)")
        model, run_cfg = load_run(resumed_from, device=dev)
        model_cfg, train_cfg, split = run_cfg.model, run_cfg.train, run_cfg.extra["split"]
        genome_path = genome_path or run_cfg.extra["genome"]
    elif model_cfg is None or train_cfg is None:
        raise PretrainError("a new run needs model and training settings")
    if genome_path is None:
        raise PretrainError("no genome given")
    _check_writable(out, rank, dev)  # before any work that a late failure would waste

    with open_fasta(genome_path) as genome:
        if not resume:
            split = plan_split(genome, train_cfg.seq_len, train_cfg.valid_fraction, contigs, valid_contigs,
                               intervals, all_contigs, split_names)
            torch.manual_seed(train_cfg.seed)
            model = MambaModel(model_cfg).to(dev)
            run_cfg = RunConfig(task="lm", model=model_cfg, train=train_cfg,
                                extra={"tokenizer": "dna", "genome": str(Path(genome_path).resolve()),
                                       "split": split})
        sampler = WindowSampler(genome, split, train_cfg.seq_len, train_cfg.max_n_fraction)
        valid = sampler.valid_windows(train_cfg.eval_windows)
        optimizer = torch.optim.AdamW(model.param_groups(train_cfg.weight_decay), lr=train_cfg.lr,
                                      betas=(0.9, 0.95), fused=dev.type == "cuda")
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, cosine_schedule(train_cfg.warmup_steps, train_cfg.steps))
        state = TrainState(optimizer=optimizer, scheduler=scheduler, counters={})
        counters = load_train_state(resumed_from, state, restore_rng=False) if resume else {}
        start_step, tokens_seen = int(counters.get("step", 0)), int(counters.get("tokens_seen", 0))
        train_model = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
        batches = DataLoader(TrainBatches(sampler, train_cfg, rank, start_step, train_cfg.steps), batch_size=None,
                             num_workers=train_cfg.num_workers, pin_memory=dev.type == "cuda")

        log_path = out / "train.jsonl"
        history = []
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            if resume:
                history = _truncate_log(log_path, start_step)
            else:
                log_path.unlink(missing_ok=True)
                shutil.rmtree(out / "checkpoints", ignore_errors=True)  # another run's: resume must not find them
        started = last_checkpoint = time.monotonic()
        step = start_step
        every = train_cfg.checkpoint_every or train_cfg.eval_every
        micro_batches = iter(batches)
        with TrainingProgress(train_cfg.steps, start_step, enabled=show_progress and rank == 0) as progress, \
                (log_path.open("a") if rank == 0 else nullcontext()) as log:
            while step < train_cfg.steps:
                # every rank must stop at the same step
                if _rank0_decides(bool(train_cfg.max_minutes)
                                  and time.monotonic() - started > 60 * train_cfg.max_minutes, dev):
                    break
                tick, step_tokens = time.monotonic(), 0
                loss_sum, count_sum = torch.zeros((), device=dev), torch.zeros((), device=dev)
                for micro in range(train_cfg.grad_accum):
                    tokens = next(micro_batches).to(dev, non_blocking=True)
                    sync = micro == train_cfg.grad_accum - 1 or world == 1
                    with autocast_for(dev), (nullcontext() if sync else train_model.no_sync()):
                        logits = train_model(tokens)
                        loss, count = next_base_loss(logits, tokens)
                        (loss / count.clamp(min=1) / train_cfg.grad_accum).backward()
                    loss_sum, count_sum = loss_sum + loss.detach(), count_sum + count
                    step_tokens += tokens.numel() * world
                optimizer_step(model, optimizer, scheduler, train_cfg.grad_clip)
                step += 1
                tokens_seen += step_tokens
                bits = loss_sum.item() / max(count_sum.item(), 1) / LN2
                rate = step_tokens / (time.monotonic() - tick)
                record = {"step": step, "train_bits_per_base": bits, "tokens_per_s": rate,
                          "lr": scheduler.get_last_lr()[0], "elapsed_s": time.monotonic() - started}
                if train_cfg.seq_len_warmup_steps:
                    record["seq_len"] = tokens.shape[1]
                if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
                    record["valid_bits_per_base"] = evaluate(model, valid, train_cfg.batch_size, dev)
                state.counters = {"step": step, "tokens_seen": tokens_seen}
                due = _rank0_decides(step % every == 0 or bool(
                    train_cfg.checkpoint_minutes
                    and time.monotonic() - last_checkpoint > 60 * train_cfg.checkpoint_minutes), dev)
                history.append(record)  # on every rank: the end of the run decides on it collectively
                if rank == 0:
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    progress.update(step, bits, rate, record.get("valid_bits_per_base"))
                    if due:
                        _write_checkpoint(out, step, model, run_cfg, state, train_cfg.keep_checkpoints)
                        last_checkpoint = time.monotonic()
                if due and world > 1:
                    dist.barrier()
        last = history[-1] if history else {}
        valid_bits = last.get("valid_bits_per_base")
        # stopped by the time limit between evaluations; rank 0's history decides: evaluation is collective
        if _rank0_decides(valid_bits is None, dev):
            valid_bits = evaluate(model, valid, train_cfg.batch_size, dev)
    summary = {"valid_bits_per_base": valid_bits, "train_bits_per_base": last.get("train_bits_per_base"),
               "steps": step, "tokens_seen": tokens_seen, "elapsed_s": time.monotonic() - started,
               "valid_windows": len(valid), "device": str(dev), "world_size": world,
               "resumed_from_step": start_step if resume else None}
    if rank == 0:
        if latest_checkpoint(out) != _checkpoint_dir(out, step):
            _write_checkpoint(out, step, model, run_cfg, state, train_cfg.keep_checkpoints)
        save_run(out, model, run_cfg, state)
        write_json_atomic(out / "summary.json", summary)
        _plot_history(history, out / "loss.png")
    if world > 1:
        dist.barrier()
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
    save_figure_atomic(fig, path)
