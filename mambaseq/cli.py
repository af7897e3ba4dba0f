"""The `mambaseq` command line: a thin typer app over mambaseq.pipelines.

Errors the user can fix (bad files, bad settings, a forced backend that cannot run) print one line on stderr
and exit with status 2; set MAMBASEQ_DEBUG=1 to see the traceback instead.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Character-level Mamba models for genomes and time series.")


@app.command()
def info() -> None:
    """Versions, the selective-scan backend each device would use, and the devices present.

    Example: mambaseq info
    """
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from mambaseq.ops import resolve_backend, triton_status

    for package in ("mambaseq", "torch", "triton", "numpy", "polars", "pyfaidx", "biopython", "safetensors"):
        try:
            typer.echo(f"{package:12s} {version(package)}")
        except PackageNotFoundError:
            typer.echo(f"{package:12s} not installed")
    typer.echo(f"{'python':12s} {platform.python_version()}")
    reason = triton_status()
    typer.echo(f"triton scan  {'importable' if reason is None else reason}")
    typer.echo(f"cpu          scan backend: {resolve_backend(torch.device('cpu'))}, {os.cpu_count()} cores")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            typer.echo(f"cuda:{i}       {torch.cuda.get_device_name(i)}, scan backend: "
                       f"{resolve_backend(torch.device('cuda', i))}")
    else:
        typer.echo("cuda         no GPU visible")


@app.command()
def pretrain(
    ctx: typer.Context,
    genome: Optional[Path] = typer.Option(None, help="FASTA file (.fa, or bgzip .fa.gz with .fai/.gzi)"),
    out: Optional[Path] = typer.Option(None, help="run folder to write"),
    resume: Optional[Path] = typer.Option(None, help="continue this run folder from its newest checkpoint, "
                                          "with its saved settings (--genome: only if the genome moved)"),
    intervals: Optional[Path] = typer.Option(None, help="BED 'chrom start end split' (train/valid/test, or "
                                             "fold labels: see --split-names)"),
    split_names: Optional[str] = typer.Option(None, help="which bed labels are held out, as SPLIT=LABEL pairs; "
                                              "other foldK labels train (default: valid=fold4,test=fold3, "
                                              "Borzoi's folds)"),
    valid_contig: Optional[list[str]] = typer.Option(None, help="hold out these whole contigs (repeatable)"),
    contig: Optional[list[str]] = typer.Option(None, help="train on these contigs only (repeatable)"),
    all_contigs: bool = typer.Option(False, help="use every contig, not only chr1-22, X, Y"),
    seq_len: int = typer.Option(1024, help="window length in bases"),
    seq_len_warmup_steps: int = typer.Option(0, help="sequence-length warm-up: over this many first steps the "
                                             "window doubles from --seq-len-start up to --seq-len, in equal "
                                             "stages (0: off)"),
    seq_len_start: int = typer.Option(64, help="first window length of the sequence-length warm-up"),
    batch_size: int = typer.Option(8),
    grad_accum: int = typer.Option(1, help="micro-batches per optimizer step"),
    steps: int = typer.Option(1000, help="optimizer steps"),
    minutes: float = typer.Option(0.0, help="stop after this many minutes (0: no limit)"),
    d_model: int = typer.Option(128),
    n_layer: int = typer.Option(4),
    lr: float = typer.Option(2e-3),
    warmup_steps: int = typer.Option(100),
    eval_every: int = typer.Option(200, help="evaluate held-out bits/base every this many steps"),
    eval_windows: int = typer.Option(64, help="held-out windows per evaluation"),
    valid_fraction: float = typer.Option(0.1, help="held-out tail fraction of every contig (no bed, no "
                                         "--valid-contig)"),
    checkpoint_every: int = typer.Option(0, help="steps between checkpoints (0: at every evaluation)"),
    checkpoint_minutes: float = typer.Option(0.0, help="also checkpoint after this many minutes"),
    keep_checkpoints: int = typer.Option(2, help="checkpoints kept"),
    workers: int = typer.Option(0, help="DataLoader worker processes reading the FASTA"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 ..."),
) -> None:
    """Pretrain a causal next-base Mamba LM on random windows of a genome (torchrun: DDP over ranks).

    Example: mambaseq pretrain --genome hg38.fa --out runs/hg38 --seq-len 4096 --steps 20000
    """
    from mambaseq.config import ModelConfig, TrainConfig
    from mambaseq.pipelines.pretrain import PretrainError, parse_split_names
    from mambaseq.pipelines.pretrain import pretrain as run_pretrain

    if resume is not None:
        changed = [name for name in ctx.params if name not in ("resume", "genome", "device")
                   and ctx.get_parameter_source(name).name == "COMMANDLINE"]
        if changed:  # silently ignoring them would train something other than what was asked
            raise PretrainError(f"--resume continues {resume} with its saved settings; drop "
                                + ", ".join("--" + name.replace("_", "-") for name in changed))
        summary = run_pretrain(genome, resume, device=device, resume=True)
        out = resume
    else:
        if genome is None or out is None:
            raise PretrainError("a new run needs --genome and --out (or --resume RUN)")
        model_cfg = ModelConfig(d_model=d_model, n_layer=n_layer)
        train_cfg = TrainConfig(seq_len=seq_len, batch_size=batch_size, grad_accum=grad_accum, steps=steps,
                                max_minutes=minutes, lr=lr, warmup_steps=warmup_steps, eval_every=eval_every,
                                eval_windows=eval_windows, valid_fraction=valid_fraction, seed=seed,
                                checkpoint_every=checkpoint_every, checkpoint_minutes=checkpoint_minutes,
                                keep_checkpoints=keep_checkpoints, num_workers=workers,
                                seq_len_warmup_steps=seq_len_warmup_steps, seq_len_start=seq_len_start)
        if split_names is not None and intervals is None:
            raise PretrainError("--split-names labels the intervals of an --intervals bed; none was given")
        summary = run_pretrain(genome, out, model_cfg, train_cfg, device=device, contigs=contig or None,
                               valid_contigs=valid_contig or None, intervals=intervals, all_contigs=all_contigs,
                               split_names=None if split_names is None else parse_split_names(split_names))
    typer.echo(f"held-out bits/base {summary['valid_bits_per_base']:.4f} after {summary['steps']} steps; "
               f"run folder: {out}")


finetune_app = typer.Typer(no_args_is_help=True, help="Fine-tune a classifier on labelled sequences.")
app.add_typer(finetune_app, name="finetune")


@finetune_app.command("promoter")
def finetune_promoter(
    train: Path = typer.Option(..., help="training sequences: CSV/TSV/Parquet with sequence,label, FASTA, or "
                               "BED with --genome (label: column 7, else the name column)"),
    out: Path = typer.Option(..., help="run folder to write"),
    dev: Optional[Path] = typer.Option(None, help="dev set (picks the threshold and the best step); "
                                       "default: --split-fraction of the training rows"),
    test: Optional[Path] = typer.Option(None, help="test set; default: --split-fraction of the training rows"),
    labels: Optional[Path] = typer.Option(None, help="name,label table for FASTA (or named BED) inputs"),
    genome: Optional[Path] = typer.Option(None, help="FASTA that BED inputs are cut from ('-' strand: reverse "
                                          "complement)"),
    classes: Optional[str] = typer.Option(None, help="declare the classes: names in index order "
                                          "('TATA,nonTATA,none') or a count ('3'); labels are names or indices. "
                                          "Default: 0 = non-promoter, 1 = promoter"),
    init: Optional[Path] = typer.Option(None, help="start from this run's backbone (e.g. a pretrain run)"),
    bidirectional: bool = typer.Option(False, help="forward and reverse scan in every layer (Caduceus-style)"),
    rc_average: bool = typer.Option(True, help="average P(promoter) over both strands at inference"),
    split_fraction: float = typer.Option(0.1, help="fraction of the training rows split off for a missing "
                                         "dev or test set (stratified, seeded)"),
    d_model: Optional[int] = typer.Option(None, help="model width (default 128; with --init: the run's)"),
    n_layer: Optional[int] = typer.Option(None, help="layers (default 4; with --init: the run's)"),
    batch_size: int = typer.Option(32),
    steps: int = typer.Option(500, help="optimizer steps"),
    minutes: float = typer.Option(0.0, help="stop after this many minutes (0: no limit)"),
    lr: float = typer.Option(2e-3),
    warmup_steps: int = typer.Option(20),
    eval_every: int = typer.Option(50, help="dev AUROC every this many steps; the best weights are kept"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 ..."),
) -> None:
    """Train a promoter / non-promoter classifier (or K declared classes); threshold = max MCC on dev (K > 2:
    argmax); metrics on dev and test.

    Example: mambaseq finetune promoter --train train.csv --dev dev.csv --test test.csv --init runs/hg38 --out runs/prom
    """
    from mambaseq.config import ModelConfig, TrainConfig
    from mambaseq.pipelines.promoter import finetune, parse_classes

    model_cfg = None
    if init is None or d_model is not None or n_layer is not None:
        base = ModelConfig() if init is None else _init_model_config(init)
        model_cfg = ModelConfig(**{**base.to_dict(), **({"d_model": d_model} if d_model else {}),
                                   **({"n_layer": n_layer} if n_layer else {})})
    train_cfg = TrainConfig(batch_size=batch_size, steps=steps, max_minutes=minutes, lr=lr, warmup_steps=warmup_steps,
                            eval_every=eval_every, valid_fraction=split_fraction, seed=seed)
    metrics = finetune(train, out, train_cfg, model_cfg=model_cfg, dev=dev, test=test, labels=labels, init=init,
                       bidirectional=bidirectional, rc_average=rc_average, genome=genome,
                       classes=None if classes is None else parse_classes(classes), device=device)
    for part in ("dev", "test"):
        typer.echo(_metrics_line(part, metrics[part]))
    threshold = "no threshold" if metrics["threshold"] is None else f"threshold {metrics['threshold']:.4f}"
    typer.echo(f"{threshold} ({metrics['threshold_rule']}); run folder: {out}")


def _init_model_config(init: Path):
    """The --init run's model config, so options the user leaves out are taken from it."""
    from mambaseq.checkpoint import CheckpointError
    from mambaseq.config import ConfigError, RunConfig

    try:
        return RunConfig.load(init / "config.json").model
    except ConfigError as err:
        raise CheckpointError(f"--init {init}: {err}") from None


def _metrics_line(part: str, m: dict) -> str:
    auc = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731  (one class only: undefined)
    return (f"{part}: AUROC {auc(m['auroc'])}  AUPRC {auc(m['auprc'])}  MCC {m['mcc']:.3f}  F1 {m['f1']:.3f}  "
            f"accuracy {m['accuracy']:.3f}  (n={m['n']})")


@app.command()
def scan(
    model: Path = typer.Option(..., help="promoter run folder (from `mambaseq finetune promoter`)"),
    genome: Path = typer.Option(..., help="FASTA file (.fa, or bgzip .fa.gz)"),
    out: Path = typer.Option(..., help="bedGraph of P(promoter) to write"),
    bed: Optional[Path] = typer.Option(None, help="BED of called regions (default: --out with suffix .bed)"),
    window: Optional[int] = typer.Option(None, help="window length (default: the run's training length)"),
    stride: Optional[int] = typer.Option(None, help="bases between window starts = bedGraph bin size "
                                         "(default: window / 2)"),
    threshold: Optional[float] = typer.Option(None, help="call windows at or above this (default: the run's)"),
    contig: Optional[list[str]] = typer.Option(None, help="scan these contigs only (repeatable)"),
    max_n_fraction: float = typer.Option(0.1, help="skip windows with more N than this fraction"),
    batch_size: int = typer.Option(64, help="windows per forward pass (each scored on both strands)"),
    device: str = typer.Option("auto"),
) -> None:
    """Slide a promoter classifier over a genome, both strands: a bedGraph track and a BED of called regions.

    Each stride-sized bin of the bedGraph holds the score of the window centred on it (0-based, half-open).

    Example: mambaseq scan --model runs/prom --genome hg38.fa --out promoters.bedGraph --stride 50
    """
    from mambaseq.pipelines.scan import scan as run_scan

    summary = run_scan(model, genome, out, bed=bed, window=window, stride=stride, threshold=threshold,
                       contigs=contig or None, batch_size=batch_size, max_n_fraction=max_n_fraction, device=device)
    skipped = sum(c["skipped_n"] for c in summary["contigs"].values())
    typer.echo(f"scanned {summary['bases']:,} bases in {len(summary['contigs'])} contig(s) "
               f"({summary['bases_per_s']:,.0f} bases/s; {skipped} windows skipped for N); "
               f"{summary['called_regions']} regions called at threshold {summary['threshold']:.4f}")
    typer.echo(f"bedGraph: {summary['bedgraph']}  BED: {summary['bed']}")


@app.command()
def embed(
    model: Path = typer.Option(..., help="any DNA run folder (pretrain or promoter)"),
    inputs: Path = typer.Argument(..., help="FASTA, CSV/TSV/Parquet with a sequence column, or BED with --genome"),
    out: Path = typer.Option(..., help="Parquet file to write"),
    per_position: bool = typer.Option(False, help="one row per base instead of the mean per sequence"),
    genome: Optional[Path] = typer.Option(None, help="FASTA that BED intervals are cut from ('-' strand: reverse "
                                          "complement)"),
    batch_size: int = typer.Option(32),
    device: str = typer.Option("auto"),
) -> None:
    """Embeddings of your sequences: the mean final hidden state over each sequence (or every position).

    Example: mambaseq embed --model runs/hg38 seqs.fa --out emb.parquet
    """
    from mambaseq.pipelines.embed import embed as run_embed

    summary = run_embed(model, inputs, out, per_position=per_position, batch_size=batch_size, genome=genome,
                        device=device)
    typer.echo(f"{summary['rows']:,} embeddings of dimension {summary['d_model']} "
               f"({summary['sequences']:,} sequences) written to {out}")


anomaly_app = typer.Typer(no_args_is_help=True, help="Time-series anomaly detection: fit on normal data, score.")
app.add_typer(anomaly_app, name="anomaly")


def _column_list(columns: Optional[str]) -> Optional[list[str]]:
    return [c.strip() for c in columns.split(",") if c.strip()] if columns else None


@anomaly_app.command("fit")
def anomaly_fit(
    train: list[Path] = typer.Argument(..., help="CSV/TSV/Parquet files of normal behaviour (same columns)"),
    out: Path = typer.Option(..., help="run folder to write"),
    columns: Optional[str] = typer.Option(None, help="value columns, comma-separated (default: every numeric "
                                          "column but the timestamp and label)"),
    timestamp: str = typer.Option("auto", help="timestamp column ('auto': timestamp/time/datetime/date if "
                                  "present; 'none': no timestamp)"),
    label: str = typer.Option("auto", help="label column left out of the values ('auto': label/is_anomaly/"
                              "anomaly if present; 'none')"),
    order: str = typer.Option("error", help="timestamps that go back or repeat: error, keep (row order), sort"),
    fit_fraction: float = typer.Option(1.0, help="use only this leading fraction of each file (NAB: 0.15)"),
    calibration_fraction: float = typer.Option(0.15, help="trailing part of the training data held out to "
                                               "set the threshold"),
    threshold_quantile: float = typer.Option(0.99, help="threshold = this quantile of held-out scores"),
    threshold: Optional[float] = typer.Option(None, help="a fixed threshold instead (--recipe stream: 14)"),
    score: str = typer.Option("rps", help="per-step score: rps (ranked probability score over the value bins: "
                              "grows with how far off a value is) or nll (negative log-likelihood)"),
    smooth: int = typer.Option(1, help="score = mean per-step score over this many trailing steps"),
    adaptive_window: int = typer.Option(0, help="> 0: score = z-score of that mean against the per-step scores "
                                        "of this many steps before it (drifting streams with no training file)"),
    baseline_window: int = typer.Option(0, help="> 0: score = the mean's excess over the --baseline-quantile of "
                                        "the previous this-many steps' means (instead of --adaptive-window)"),
    baseline_quantile: float = typer.Option(0.995, help="quantile of the baseline window"),
    season_days: int = typer.Option(0, help="raise the baseline to the scores at the same time of day on each of "
                                    "this many past days (needs datetime timestamps or --season-period)"),
    season_slack: int = typer.Option(6, help="... within +- this many steps"),
    season_period: int = typer.Option(0, help="steps per day (0: from the training timestamps)"),
    recipe: str = typer.Option("none", help="stream: the post-processing chosen on NAB for series with no separate "
                               "training file (--baseline-window 2000 --season-days 5 --gate 60 --gate-margin 1.2 "
                               "--model-cap 17.5 --range-weight 2 --context-weight 10 --flat-weight 25 "
                               "--threshold 14); options left at their defaults take its values"),
    gate: int = typer.Option(0, help="> 0: one alert per rise: a step keeps its score only when it is above all "
                             "of the previous this-many steps' (NAB: 60)"),
    gate_margin: float = typer.Option(1.0, help="... and above their max m by this factor (a new high must beat "
                                      "m x 1.2 at 1.2; NAB: 1.2)"),
    model_cap: float = typer.Option(0.0, help="> 0 (with --baseline-window): the model's excess counts at most "
                                    "this much, so a burst of model errors alerts once (NAB: 17.5)"),
    range_weight: float = typer.Option(0.0, help="> 0 (with --baseline-window): a step scores at least this times "
                                       "how far its values leave the range they kept, beyond that novelty's own "
                                       "baseline (NAB: 2)"),
    range_steps: int = typer.Option(2, help="... the range novelty of the mean of this many trailing values"),
    context_weight: float = typer.Option(0.0, help="> 0 (with --baseline-window): a step scores at least this times "
                                         "how new its value is after the values before it (bins of the value "
                                         "now and up to --context-lags steps back never seen together), beyond "
                                         "that novelty's own baseline (NAB: 10)"),
    context_lags: int = typer.Option(24, help="... pairs of the value now and the value 1 .. this many steps back"),
    context_bins: int = typer.Option(6, help="... value bins over the first steps' range (plus two edge bins)"),
    flat_weight: float = typer.Option(0.0, help="> 0 (with --baseline-window): a step scores at least this much "
                                      "where a run of equal values first outlasts every earlier run (and 10 "
                                      "steps): a stalled signal (NAB: 25)"),
    merge_gap: int = typer.Option(0, help="flagged runs at most this many steps apart form one event"),
    time_of_day: bool = typer.Option(False, help="the model also reads the time of day (needs datetime "
                                     "timestamps): daily patterns become predictable, so a missing or shifted "
                                     "daily event stands out"),
    n_bins: int = typer.Option(64, help="value bins per channel"),
    seq_len: int = typer.Option(256, help="training window length (cut to the shortest training part)"),
    batch_size: int = typer.Option(16),
    steps: int = typer.Option(300, help="optimizer steps"),
    eval_every: int = typer.Option(0, help="score the held-out part every this many steps and keep the weights "
                                   "with the lowest loss (small training sets overfit; 0: keep the last)"),
    minutes: float = typer.Option(0.0, help="stop after this many minutes (0: no limit)"),
    d_model: int = typer.Option(64),
    n_layer: int = typer.Option(2),
    lr: float = typer.Option(3e-3),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 ..."),
) -> None:
    """Fit a next-value Mamba LM on normal data; the threshold comes from held-out training data.

    Example: mambaseq anomaly fit data/machine-1_train.parquet --timestamp t --out runs/ts
    """
    from mambaseq.config import ModelConfig, TrainConfig
    from mambaseq.pipelines.anomaly import STREAM_RECIPE, AnomalyError, AnomalySettings, fit

    if recipe not in ("none", "stream"):
        raise AnomalyError(f"--recipe must be none or stream, got {recipe!r}")
    post = dict(baseline_window=baseline_window, baseline_quantile=baseline_quantile, season_days=season_days,
                gate=gate, gate_margin=gate_margin, model_cap=model_cap, range_weight=range_weight,
                context_weight=context_weight, flat_weight=flat_weight, threshold=threshold)  # what the recipe sets
    if recipe == "stream":
        defaults = AnomalySettings()
        post |= {k: v for k, v in STREAM_RECIPE.items() if post[k] == getattr(defaults, k)}
    none = lambda v: None if v.lower() == "none" else v  # noqa: E731
    settings = AnomalySettings(n_bins=n_bins, fit_fraction=fit_fraction, calibration_fraction=calibration_fraction,
                               threshold_quantile=threshold_quantile, score=score, smooth=smooth,
                               merge_gap=merge_gap, adaptive_window=adaptive_window, season_slack=season_slack,
                               season_period=season_period,
                               range_steps=range_steps, context_lags=context_lags, context_bins=context_bins,
                               time_of_day=time_of_day, columns=_column_list(columns), timestamp=none(timestamp),
                               label=none(label), order=order, **post)
    if eval_every < 0:
        raise AnomalyError(f"--eval-every must be >= 0, got {eval_every}")
    train_cfg = TrainConfig(seq_len=seq_len, batch_size=batch_size, steps=steps, max_minutes=minutes, lr=lr,
                            warmup_steps=max(1, steps // 10), seed=seed, eval_every=eval_every or steps)
    summary = fit(train, out, settings=settings, model_cfg=ModelConfig(d_model=d_model, n_layer=n_layer),
                  train_cfg=train_cfg, device=device)
    typer.echo(f"fitted on {len(summary['columns'])} channel(s), {summary['steps']} steps "
               f"({summary['elapsed_s']:.0f} s); threshold {summary['threshold']:.4f}; run folder: {out}")


@anomaly_app.command("score")
def anomaly_score(
    model: Path = typer.Option(..., help="anomaly run folder (from `mambaseq anomaly fit`)"),
    inputs: Optional[list[Path]] = typer.Argument(None, help="CSV/TSV/Parquet files to score"),
    out: Optional[Path] = typer.Option(None, help="folder for scores, events and plots (file mode)"),
    stream: Optional[str] = typer.Option(None, help="score rows as they arrive from this CSV/TSV file, or '-' "
                                         "for stdin; one CSV line per row on stdout"),
    follow: bool = typer.Option(False, help="with --stream FILE: keep waiting for new rows at end of file"),
    idle_seconds: float = typer.Option(0.0, help="with --follow: stop after this long without new rows "
                                       "(0: never)"),
    fmt: str = typer.Option("parquet", "--format", help="per-step scores as parquet or csv"),
    plot: bool = typer.Option(True, help="write a PNG per input"),
    device: str = typer.Option("auto"),
) -> None:
    """Per-step anomaly scores (NLL of each next value), flagged events and plots; or a live stream.

    Example: mambaseq anomaly score --model runs/ts test/*.parquet --out scores/
    Example: tail -f metrics.csv | mambaseq anomaly score --model runs/ts --stream -
    """
    from mambaseq.pipelines.anomaly import AnomalyError, score_files, score_stream

    if stream is not None:
        if inputs or out:
            raise AnomalyError("--stream reads one stream and writes to stdout: give no input files or --out")
        score_stream(model, stream, follow=follow, idle_seconds=idle_seconds, device=device)
        return
    if not inputs or out is None:
        raise AnomalyError("give input files and --out (or --stream)")
    score_files(model, inputs, out, fmt=fmt, plot=plot, device=device)
    typer.echo(f"scores, events and plots written to {out}")


@app.command()
def predict(
    inputs: list[str] = typer.Argument(..., help="input files, folders (searched recursively) or globs: FASTA "
                                       "(.fa/.fasta/.fna[.gz]), CSV/TSV or Parquet with a sequence column"),
    model: Path = typer.Option(..., help="run folder (lm or promoter)"),
    out: Path = typer.Option(..., help="output folder: one Parquet per input and manifest.json"),
    force: bool = typer.Option(False, help="redo inputs already done"),
    per_position: bool = typer.Option(False, help="lm runs: also the log-probability of every base"),
    batch_size: int = typer.Option(32, help="records per forward pass, at most"),
    max_tokens: Optional[int] = typer.Option(None, help="padded tokens per forward pass, at most (default 131072 "
                                             "on a GPU, 16384 on the CPU; memory grows with it); longer LM records "
                                             "are streamed in chunks of this size"),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 ... (torchrun: one GPU per rank)"),
    quiet: bool = typer.Option(False, help="no progress bar (also off when stderr is not a terminal)"),
) -> None:
    """Predict every record of many files with a trained run: resumable, one Parquet per input file.

    lm runs: log-likelihood and bits/base per record; promoter runs: P(promoter) and the call. A rerun skips
    inputs already done (same sha256); a bad file is reported and recorded as failed (exit status 1) while the
    others complete. torchrun --nproc-per-node K -m mambaseq predict ... shares the files among K ranks.

    Example: mambaseq predict --model runs/prom inputs/*.fa.gz tables/ --out preds/
    """
    from mambaseq.pipelines.predict import predict as run_predict

    summary = run_predict(model, inputs, out, force=force, per_position=per_position, batch_size=batch_size,
                          max_tokens=max_tokens, device=device, show_progress=not quiet and sys.stderr.isatty())
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(f"{summary['done']} done, {summary['skipped']} skipped (already done), {summary['failed']} "
                   f"failed of {summary['files']} files; {summary['records']:,} records, {summary['bases']:,} "
                   f"bases in {summary['seconds']:.1f} s; manifest: {summary['manifest']}")
    if summary["failed"]:
        raise typer.Exit(1)


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="folder for the demo's runs"),
    data: Optional[Path] = typer.Option(None, help="bundled data folder (default: data/ of this clone)"),
    device: str = typer.Option("auto"),
) -> None:
    """Run every pipeline on the real data bundled under data/ (CPU-sized, a few minutes).

    Example: mambaseq demo --out runs/demo
    """
    from mambaseq.pipelines.demo import run_demo

    results = run_demo(out, data, device=device)
    pre = results["pretrain"]
    typer.echo(f"pretrain: held-out bits/base {pre['valid_bits_per_base']:.4f} on hg38 chr2 "
               f"({pre['steps']} steps, {pre['elapsed_s']:.0f} s); run folder {pre['run']}")
    prom = results["promoter"]
    typer.echo(f"promoter: GUE prom_300_tata subset, test AUROC {prom['test']['auroc']:.3f} MCC "
               f"{prom['test']['mcc']:.3f} (dev AUROC {prom['dev']['auroc']:.3f}; {prom['steps']} steps from the "
               f"pretrained run, {prom['elapsed_s']:.0f} s); run folder {prom['run']}")
    found = prom["scan"]
    typer.echo(f"scan: {found['bases']:,} bases of chr2, both strands, {found['bases_per_s']:,.0f} bases/s; "
               f"{found['called_regions']} promoter regions called; {found['bedgraph']}, {found['bed']}")
    emb = results["embed"]
    typer.echo(f"embed: {emb['sequences']} test sequences -> {emb['d_model']}-dim vectors from the pretrained run; "
               f"{emb['out']}")
    anomaly = results["anomaly"]
    typer.echo(f"anomaly: ASD omi-1 test ({anomaly['steps']} steps of 19 server metrics): VUS-PR "
               f"{anomaly['vus_pr']:.3f}, AUC-PR {anomaly['auc_pr']:.3f}, {anomaly['events']} events flagged; "
               + ", ".join(f"{name} VUS-PR {b['vus_pr']:.3f}" for name, b in anomaly["baselines"].items())
               + f"; {anomaly['scores']}")
    typer.echo(f"outputs are in {out}")


def _user_errors() -> tuple[type[BaseException], ...]:
    from mambaseq.ops import BackendUnavailable
    return (ValueError, OSError, BackendUnavailable)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except _user_errors() as err:
        if os.environ.get("MAMBASEQ_DEBUG"):
            raise
        message = " ".join(str(err).split()) or type(err).__name__
        typer.echo(f"error: {message}", err=True)
        sys.exit(2)
