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
    genome: Path = typer.Option(..., help="FASTA file (.fa, or bgzip .fa.gz)"),
    out: Path = typer.Option(..., help="run folder to write"),
    seq_len: int = typer.Option(1024, help="window length in bases"),
    batch_size: int = typer.Option(8),
    steps: int = typer.Option(1000, help="optimizer steps"),
    minutes: float = typer.Option(0.0, help="stop after this many minutes (0: no limit)"),
    d_model: int = typer.Option(128),
    n_layer: int = typer.Option(4),
    lr: float = typer.Option(2e-3),
    warmup_steps: int = typer.Option(100),
    eval_every: int = typer.Option(200, help="evaluate held-out bits/base every this many steps"),
    eval_windows: int = typer.Option(64, help="held-out windows per evaluation"),
    valid_fraction: float = typer.Option(0.1, help="held-out tail fraction of every contig"),
    contig: Optional[list[str]] = typer.Option(None, help="train on these contigs only (repeatable)"),
    seed: int = typer.Option(0),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1 ..."),
) -> None:
    """Pretrain a causal next-base Mamba LM on random windows of a genome.

    Example: mambaseq pretrain --genome hg38.fa --out runs/hg38 --seq-len 4096 --steps 20000
    """
    from mambaseq.config import ModelConfig, TrainConfig
    from mambaseq.pipelines.pretrain import pretrain as run_pretrain

    model_cfg = ModelConfig(d_model=d_model, n_layer=n_layer)
    train_cfg = TrainConfig(seq_len=seq_len, batch_size=batch_size, steps=steps, max_minutes=minutes, lr=lr,
                            warmup_steps=warmup_steps, eval_every=eval_every, eval_windows=eval_windows,
                            valid_fraction=valid_fraction, seed=seed)
    summary = run_pretrain(genome, out, model_cfg, train_cfg, device=device, contigs=contig or None)
    typer.echo(f"held-out bits/base {summary['valid_bits_per_base']:.4f} after {summary['steps']} steps; "
               f"run folder: {out}")


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
