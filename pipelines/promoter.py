"""Promoter classification: fine-tune a Mamba sequence classifier on labelled DNA, pick a threshold, report.

Input: `sequence,label` tables (GUE layout; CSV/TSV/Parquet), FASTA + a `name,label` table, or BED intervals
+ a genome FASTA (label in column 7 or the name column; '-' strand reverse-complemented), read by
mambaseq.io.sequences. Train/dev/test files, or a train file alone: every missing dev/test part is a stratified
`valid_fraction` of the training rows (seeded).
Classes: promoter / non-promoter (labels 1 / 0) by default; `classes` declares K >= 2 named classes (labels are
names or indices). Declared, never inferred from the training labels: a stray `2` in binary data is an error,
not a silent third class. From scratch, or `init` = a run folder whose backbone
(embedding and layers) is copied into a model with a new, zero-biased classification head.

Training: AdamW with warm-up + cosine decay (as pretraining), cross-entropy on the mean-pooled hidden states
over valid positions (unequal lengths: right-padded with PAD_ID and masked by their lengths), half the training
rows reverse-complemented per batch. Dev AUROC is measured every `eval_every` steps and the weights with the
best one are kept. The decision threshold is the dev probability with the highest Matthews correlation
(MCC: it weighs both classes, unlike F1, which ignores true negatives).

Inference: P(promoter) = softmax(logits)[1]. With RC averaging it is the mean over the sequence and its
reverse complement, computed in one batch, so P(x) == P(rc(x)) exactly: the classifier is strand-symmetric.

More than two classes: softmax over K, the predicted class is the argmax (no threshold to pick), the best step
is the one with the best dev macro AUROC (one-vs-rest, averaged over classes), and the metrics are macro AUROC
and AUPRC (one-vs-rest), MCC (multi-class, Gorodkin's R_K), macro F1 and accuracy. Every class must occur in the
training and dev parts (a one-vs-rest AUROC needs positives and negatives of each).

Run folder: config.json (task "promoter"; extra: classes, threshold, rule, rc_average, data), model.safetensors,
metrics.json (dev and test: AUROC, AUPRC, MCC, F1, accuracy, n), predictions.parquet (binary: prob = P(class 1);
K classes: prob_<class> each), curves.png (ROC and precision-recall; K classes: one-vs-rest per class on test),
train.jsonl.

Glossary: B batch, L padded length, D d_model, K classes; AUROC area under the ROC curve, AUPRC average precision,
MCC Matthews correlation coefficient, F1 harmonic mean of precision and recall at the threshold.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from sklearn.metrics import (accuracy_score, average_precision_score, f1_score, matthews_corrcoef,
                             precision_recall_curve, roc_auc_score, roc_curve)

from mambaseq.checkpoint import load_run, save_run
from mambaseq.config import ModelConfig, RunConfig, TrainConfig
from mambaseq.io.atomic import open_atomic, save_figure_atomic, write_bytes_atomic, write_json_atomic
from mambaseq.io.sequences import SequenceError, SequenceSet, check_classes, read_sequences
from mambaseq.model import MambaModel
from mambaseq.pipelines.training import autocast_for, cosine_schedule, optimizer_step, pick_device
from mambaseq.tokenizers import reverse_complement

CLASSES = ["non-promoter", "promoter"]  # the default: labels 0 and 1
THRESHOLD_RULE = "max MCC on dev"
ARGMAX_RULE = "argmax over classes (more than two: no threshold)"
# settings that fix the shapes of the backbone's weights: an --init run must agree on all of them
ARCHITECTURE = ("vocab_size", "d_model", "n_layer", "d_state", "d_conv", "expand", "dt_rank", "selective",
                "fixed_dt", "n_channels", "pad_id")


class PromoterError(ValueError):
    """The data, the settings or a run folder cannot make or use a promoter classifier."""


def parse_classes(spec: str) -> list[str]:
    """`--classes`: comma-separated names in index order ('TATA,nonTATA,none'), or a count K ('3' -> 0, 1, 2)."""
    spec = spec.strip()
    if spec.isdigit():
        if int(spec) < 2:
            raise PromoterError(f"--classes {spec}: a classifier needs at least 2 classes")
        return [str(i) for i in range(int(spec))]
    classes = [name.strip() for name in spec.split(",")]
    try:
        check_classes(classes)
    except SequenceError as error:
        raise PromoterError(f"--classes {spec!r}: {error}") from None
    return classes


def status_progress(enabled: bool) -> Progress:
    """A rich bar with a free-form status field (training's bar prints bits/base, which fits no classifier)."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[status]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    disable=not enabled)


# ---- metrics ----------------------------------------------------------------------------------------------
def best_threshold(labels: np.ndarray, probs: np.ndarray) -> float:
    """The probability t maximising MCC of `probs >= t` (ties: the highest t), over every distinct probability."""
    order = np.argsort(-probs, kind="stable")
    s, y = probs[order], labels[order].astype(np.float64)
    last_of_tie = np.flatnonzero(np.append(s[1:] != s[:-1], True))  # cut after each group of equal scores
    tp = np.cumsum(y)[last_of_tie]
    fp = np.cumsum(1 - y)[last_of_tie]
    fn, tn = y.sum() - tp, (1 - y).sum() - fp
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    mcc = np.where(denominator > 0, (tp * tn - fp * fn) / np.where(denominator > 0, denominator, 1), 0.0)
    return float(s[last_of_tie[int(np.argmax(mcc))]])


def classification_metrics(labels: np.ndarray, probs: np.ndarray, threshold: float) -> dict:
    """AUROC, AUPRC (None when only one class is present), MCC, F1, accuracy at `threshold`, and counts."""
    predicted = (probs >= threshold).astype(np.int64)
    both = len(np.unique(labels)) == 2
    return {"auroc": float(roc_auc_score(labels, probs)) if both else None,
            "auprc": float(average_precision_score(labels, probs)) if both else None,
            "mcc": float(matthews_corrcoef(labels, predicted)), "f1": float(f1_score(labels, predicted, zero_division=0)),
            "accuracy": float(accuracy_score(labels, predicted)), "threshold": threshold,
            "n": int(len(labels)), "n_positive": int(labels.sum())}


def multiclass_metrics(labels: np.ndarray, probs: np.ndarray) -> dict:
    """labels (n,), probs (n, K) rows summing to 1: macro one-vs-rest AUROC and AUPRC (None unless every class
    is present), multi-class MCC, macro F1 and accuracy of the argmax, and per-class counts."""
    k = probs.shape[1]
    predicted = probs.argmax(1)
    every = len(np.unique(labels)) == k
    one_hot = np.eye(k, dtype=np.int64)[labels]  # (n, K)
    return {"auroc": float(roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=np.arange(k)))
            if every else None,
            "auprc": float(average_precision_score(one_hot, probs, average="macro")) if every else None,
            "mcc": float(matthews_corrcoef(labels, predicted)),
            "f1": float(f1_score(labels, predicted, average="macro", labels=np.arange(k), zero_division=0)),
            "accuracy": float(accuracy_score(labels, predicted)), "threshold": None,
            "n": int(len(labels)), "n_per_class": np.bincount(labels, minlength=k).tolist()}


def evaluate(labels: np.ndarray, probs: np.ndarray, threshold: float | None) -> dict:
    """Metrics of class probabilities probs (n, K): binary at `threshold` on P(class 1), else multi-class.
    The one entry point for every model of the harness (the Mamba classifier and the k-mer baseline alike)."""
    if probs.shape[1] == 2:
        return classification_metrics(labels, probs[:, 1], threshold)
    return multiclass_metrics(labels, probs)


def selection_score(labels: np.ndarray, probs: np.ndarray) -> float:
    """What picks the best step on dev: AUROC of P(class 1), or macro one-vs-rest AUROC for K > 2."""
    if probs.shape[1] == 2:
        return float(roc_auc_score(labels, probs[:, 1]))
    return float(roc_auc_score(labels, probs, multi_class="ovr", average="macro", labels=np.arange(probs.shape[1])))


def pick_threshold(labels: np.ndarray, probs: np.ndarray) -> float | None:
    """The dev threshold on P(class 1) (max MCC) for two classes; None (argmax) for more."""
    return best_threshold(labels, probs[:, 1]) if probs.shape[1] == 2 else None


# ---- model ------------------------------------------------------------------------------------------------
def classifier_from_init(init: str | Path, requested: ModelConfig | None, bidirectional: bool,
                         n_classes: int = len(CLASSES)) -> MambaModel:
    """An `n_classes` model whose backbone is `init`'s; `requested` (if given) must match its architecture.

    A causal run can start a bidirectional classifier: each layer's reverse SSM starts as a copy of the
    forward one (the same filters read in the other direction), so no pretrained layer starts random.
    """
    pretrained, run_cfg = load_run(init)
    if run_cfg.extra.get("tokenizer") != "dna" or run_cfg.model.n_channels != 1:
        raise PromoterError(f"--init {init}: a {run_cfg.task!r} run that does not read DNA; "
                            "use a DNA run (mambaseq pretrain or finetune promoter)")
    source = run_cfg.model
    if requested is not None:
        differ = [f"{name} {getattr(source, name)} (asked {getattr(requested, name)})"
                  for name in ARCHITECTURE if getattr(source, name) != getattr(requested, name)]
        if differ:
            raise PromoterError(f"--init {init} has {', '.join(differ)}; the backbone must have the same shape "
                                "(leave these options out to take them from the run)")
    if source.bidirectional and not bidirectional:
        raise PromoterError(f"--init {init} is bidirectional; pass --bidirectional to fine-tune it")
    cfg = ModelConfig(**{**source.to_dict(), "n_classes": n_classes, "bidirectional": bidirectional})
    model = MambaModel(cfg)
    weights = {k: v for k, v in pretrained.state_dict().items() if not k.startswith("classifier.")}
    if bidirectional and not source.bidirectional:
        weights |= {k.replace(".mixer.ssm.", ".mixer.ssm_rev."): v.clone()
                    for k, v in weights.items() if ".mixer.ssm." in k}
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and all(k.startswith("classifier.") for k in missing), (missing, unexpected)
    return model


# ---- inference --------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_probs(model: MambaModel, ids: np.ndarray, lengths: np.ndarray, *, rc_average: bool,
                  batch_size: int = 64, device: torch.device | str = "cpu") -> np.ndarray:
    """Class probabilities per row: ids (n, L) right-padded uint8, lengths (n,) -> (n, K) float64.

    rc_average: mean of P(x) and P(rc(x)); both halves run in one forward pass of 2B rows.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(ids), batch_size):
        length = torch.as_tensor(lengths[i:i + batch_size], device=device)  # (B,)
        tokens = torch.as_tensor(ids[i:i + batch_size, :int(length.max())], device=device).long()  # (B, L)
        if rc_average:
            tokens = torch.cat([tokens, reverse_complement(tokens, length)])  # (2B, L)
            length = torch.cat([length, length])
        with autocast_for(device):
            logits = model.classify(tokens, lengths=length)  # (B or 2B, K)
        prob = logits.float().softmax(-1).double()  # (B or 2B, K)
        if rc_average:
            forward, reverse = prob.chunk(2)
            prob = (forward + reverse) / 2
        out.append(prob.cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, model.config.n_classes))


def predict_proba(model: MambaModel, ids: np.ndarray, lengths: np.ndarray, *, rc_average: bool,
                  batch_size: int = 64, device: torch.device | str = "cpu") -> np.ndarray:
    """P(class 1) per row, (n,) float64: the promoter probability of a binary classifier."""
    return predict_probs(model, ids, lengths, rc_average=rc_average, batch_size=batch_size, device=device)[:, 1]


def load_promoter_run(path: str | Path, device: torch.device | str = "cpu") -> tuple[MambaModel, RunConfig]:
    """A promoter run's model (eval mode) and config; another task's run is a PromoterError."""
    model, cfg = load_run(path, device)
    if cfg.task != "promoter":
        raise PromoterError(f"{path}: is a {cfg.task!r} run; this needs a promoter classifier "
                            "(made by `mambaseq finetune promoter`)")
    return model.eval(), cfg


# ---- data -------------------------------------------------------------------------------------------------
def _stratified_split(labels: np.ndarray, fraction: float, rng: np.random.Generator,
                      n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """(kept rows, split-off rows): `fraction` of each class, at least one row of each, split off."""
    held = []
    for label in range(n_classes):
        rows = rng.permutation(np.flatnonzero(labels == label))
        held.append(rows[:max(1, int(round(fraction * len(rows))))])
    held_rows = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(labels)), held_rows), held_rows


def _class_label(index: int, name: str) -> str:
    return name if name == str(index) else f"{index} ({name})"


def load_splits(train: str | Path, dev: str | Path | None, test: str | Path | None, labels: str | Path | None,
                fraction: float, seed: int, *, genome: str | Path | None = None,
                classes: list[str] | None = None) -> dict[str, SequenceSet]:
    """{"train", "dev", "test"} sequence sets; missing dev/test parts are split off the training file.

    classes: declared class names (None: binary, labels 0/1); genome: the FASTA that BED inputs are cut from.
    """
    k = len(classes) if classes is not None else len(CLASSES)
    read = dict(labels_path=labels, require_labels=True, genome=genome, classes=classes)
    sets = {"train": read_sequences(train, **read)}
    counts = np.bincount(sets["train"].labels, minlength=k)
    if k == 2 and counts.min() == 0:
        raise PromoterError(f"{train}: every training label is {int(np.argmax(counts))}; "
                            "a classifier needs examples of both classes (0 and 1)")
    if counts.min() == 0:
        absent = [_class_label(i, name) for i, name in enumerate(classes) if counts[i] == 0]
        raise PromoterError(f"{train}: no training row has class {', '.join(absent)}; every declared class "
                            "needs training examples")
    rng = np.random.default_rng(seed)
    for part, path in (("dev", dev), ("test", test)):
        if path is not None:
            sets[part] = read_sequences(path, **read)
            continue
        if min(np.bincount(sets["train"].labels, minlength=k)) < 3:
            raise PromoterError(f"{train}: too few rows of a class to split off a {part} part; pass --{part}")
        keep, held = _stratified_split(sets["train"].labels, fraction, rng, k)
        sets[part] = sets["train"].subset(held)
        sets["train"] = sets["train"].subset(keep)
    present = np.unique(sets["dev"].labels)
    if k == 2 and len(present) < 2:
        raise PromoterError(f"{sets['dev'].source}: the dev part holds one class only; "
                            "picking a threshold needs both")
    if len(present) < k:
        absent = [_class_label(i, name) for i, name in enumerate(classes) if i not in present]
        raise PromoterError(f"{sets['dev'].source}: the dev part has no row of class {', '.join(absent)}; "
                            "choosing the best step by macro AUROC needs every class")
    return sets


def _batch(data: SequenceSet, rows: np.ndarray, rng: np.random.Generator, rc_augment: bool,
           device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(tokens (B, L) int64, lengths (B,), labels (B,)); with rc_augment, each row is RC'd with p = 1/2."""
    lengths = data.lengths[rows]
    ids = data.ids[rows, :int(lengths.max())]  # (B, L)
    if rc_augment:
        flip = rng.random(len(rows)) < 0.5
        ids = ids.copy()
        ids[flip] = reverse_complement(ids[flip], lengths[flip])
    return (torch.from_numpy(ids.astype(np.int64)).to(device), torch.from_numpy(lengths).to(device),
            torch.from_numpy(data.labels[rows]).to(device))


# ---- the pipeline -----------------------------------------------------------------------------------------
def finetune(train: str | Path, out: str | Path, train_cfg: TrainConfig, *, model_cfg: ModelConfig | None = None,
             dev: str | Path | None = None, test: str | Path | None = None, labels: str | Path | None = None,
             init: str | Path | None = None, bidirectional: bool = False, rc_average: bool = True,
             genome: str | Path | None = None, classes: list[str] | None = None, device: str = "auto",
             show_progress: bool = True) -> dict:
    """Train a promoter classifier, write the run folder `out`, return {"dev": metrics, "test": metrics, ...}.

    model_cfg: the architecture from scratch (its n_classes and bidirectional are set here); with `init` it
    may be None (take the run's) or must match the run's architecture. genome: FASTA for BED inputs.
    classes: declared class names in index order (None: non-promoter / promoter, labels 0 and 1).
    """
    out = Path(out)
    dev_device = pick_device(device)
    sets = load_splits(train, dev, test, labels, train_cfg.valid_fraction, train_cfg.seed, genome=genome,
                       classes=classes)
    class_names = list(classes) if classes is not None else CLASSES
    n_classes = len(class_names)
    torch.manual_seed(train_cfg.seed)
    rng = np.random.default_rng(train_cfg.seed)
    if init is not None:
        model = classifier_from_init(init, model_cfg, bidirectional, n_classes)
    else:
        base = model_cfg or ModelConfig()
        model = MambaModel(ModelConfig(**{**base.to_dict(), "n_classes": n_classes, "bidirectional": bidirectional}))
    model.to(dev_device)
    max_length = int(max(s.lengths.max() for s in sets.values()))
    train_cfg = TrainConfig(**{**train_cfg.to_dict(), "seq_len": max_length})  # scan's default window
    optimizer = torch.optim.AdamW(model.param_groups(train_cfg.weight_decay), lr=train_cfg.lr, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_schedule(train_cfg.warmup_steps, train_cfg.steps))

    out.mkdir(parents=True, exist_ok=True)
    data = sets["train"]
    history, best = [], {"auroc": -1.0, "step": 0, "probs": None, "weights": None}
    started, step, order = time.monotonic(), 0, np.zeros(0, dtype=np.int64)

    def evaluate_dev() -> tuple[float, np.ndarray]:
        probs = predict_probs(model, sets["dev"].ids, sets["dev"].lengths, rc_average=rc_average,
                              batch_size=2 * train_cfg.batch_size, device=dev_device)  # (n_dev, K)
        return selection_score(sets["dev"].labels, probs), probs

    with status_progress(show_progress) as progress:
        bar = progress.add_task("fine-tuning", total=train_cfg.steps, status="")
        while step < train_cfg.steps:
            if train_cfg.max_minutes and time.monotonic() - started > 60 * train_cfg.max_minutes:
                break
            if len(order) < train_cfg.batch_size:  # a new epoch: reshuffle
                order = np.concatenate([order, rng.permutation(len(data))])
            rows, order = order[:train_cfg.batch_size], order[train_cfg.batch_size:]
            tick = time.monotonic()
            tokens, lengths, targets = _batch(data, rows, rng, train_cfg.rc_augment, dev_device)
            with autocast_for(dev_device):
                logits = model.classify(tokens, lengths=lengths)  # (B, K)
            loss = F.cross_entropy(logits.float(), targets)
            loss.backward()
            optimizer_step(model, optimizer, scheduler, train_cfg.grad_clip)
            step += 1
            record = {"step": step, "train_loss": loss.item(), "lr": scheduler.get_last_lr()[0],
                      "tokens_per_s": int(lengths.sum()) / (time.monotonic() - tick),
                      "elapsed_s": time.monotonic() - started}
            if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
                record["dev_auroc"], dev_probs = evaluate_dev()
                if record["dev_auroc"] > best["auroc"]:
                    best = {"auroc": record["dev_auroc"], "step": step, "probs": dev_probs,
                            "weights": copy.deepcopy(model.state_dict())}
            history.append(record)
            status = f"loss {record['train_loss']:.3f}  {record['tokens_per_s']:,.0f} tok/s"
            if best["weights"] is not None:
                status += f"  best dev AUROC {best['auroc']:.3f}"
            progress.update(bar, completed=step, status=status)
    if "dev_auroc" not in (history[-1] if history else {}):  # stopped by the time limit between evaluations
        auroc, dev_probs = evaluate_dev()
        if auroc > best["auroc"]:
            best = {"auroc": auroc, "step": step, "probs": dev_probs, "weights": None}
    if best["weights"] is not None:
        model.load_state_dict(best["weights"])
    write_bytes_atomic(out / "train.jsonl", "".join(json.dumps(r) + "\n" for r in history).encode())

    probs = {"dev": best["probs"],  # the kept weights' dev probabilities, computed when they were evaluated
             "test": predict_probs(model, sets["test"].ids, sets["test"].lengths, rc_average=rc_average,
                                   batch_size=2 * train_cfg.batch_size, device=dev_device)}  # each (n, K)
    threshold = pick_threshold(sets["dev"].labels, probs["dev"])
    rule = THRESHOLD_RULE if n_classes == 2 else ARGMAX_RULE
    metrics = {part: evaluate(sets[part].labels, p, threshold) for part, p in probs.items()}
    metrics.update(threshold=threshold, threshold_rule=rule, rc_average=rc_average, classes=class_names,
                   best_step=best["step"], steps=step, elapsed_s=time.monotonic() - started,
                   n_train=len(data), init=None if init is None else str(init), device=str(dev_device))
    run_cfg = RunConfig(task="promoter", model=model.config, train=train_cfg, extra={
        "tokenizer": "dna", "classes": class_names, "positive_class": 1 if n_classes == 2 else None,
        "threshold": threshold, "threshold_rule": rule, "rc_average": rc_average,
        "init": None if init is None else str(Path(init).resolve()),
        "data": {part: {"source": s.source, "n": len(s)} for part, s in sets.items()}
        | ({"genome": str(Path(genome).resolve())} if genome is not None else {})})
    save_run(out, model.cpu(), run_cfg)
    write_json_atomic(out / "metrics.json", metrics)
    _write_predictions(out / "predictions.parquet", sets, probs, threshold, class_names)
    if n_classes == 2:
        _plot_curves(out / "curves.png", {part: (sets[part].labels, p[:, 1]) for part, p in probs.items()})
    else:  # one-vs-rest per class on the test part (dev and test together would be 2K curves per panel)
        _plot_curves(out / "curves.png", {f"test {name}": (sets["test"].labels == i, probs["test"][:, i])
                                          for i, name in enumerate(class_names)})
    return metrics


def _write_predictions(path: Path, sets: dict[str, SequenceSet], probs: dict[str, np.ndarray],
                       threshold: float | None, classes: list[str]):
    """Binary: prob = P(class 1), predicted at the threshold. K classes: prob_<class> each, predicted = argmax."""
    frames = []
    for part, p in probs.items():
        columns = {"split": part, "name": sets[part].names, "label": sets[part].labels}
        if threshold is not None:
            columns |= {"prob": p[:, 1], "predicted": (p[:, 1] >= threshold).astype(np.int64)}
        else:
            columns |= {f"prob_{name}": p[:, i] for i, name in enumerate(classes)} | {"predicted": p.argmax(1)}
        frames.append(pl.DataFrame(columns))
    with open_atomic(path, "wb") as handle:
        pl.concat(frames).write_parquet(handle)


def _plot_curves(path: Path, parts: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """ROC (left) and precision-recall (right) curves of each (labels 0/1, scores) pair that holds both."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(9, 4))
    for part, (labels, probs) in parts.items():
        if len(np.unique(labels)) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels, probs)
        roc_ax.plot(fpr, tpr, label=f"{part} AUROC {roc_auc_score(labels, probs):.3f}")
        precision, recall, _ = precision_recall_curve(labels, probs)
        pr_ax.step(recall, precision, where="post", label=f"{part} AUPRC {average_precision_score(labels, probs):.3f}")
    roc_ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall", ylim=(0, 1.02))
    roc_ax.legend(loc="lower right")
    pr_ax.legend(loc="lower left")
    fig.tight_layout()
    save_figure_atomic(fig, path)
