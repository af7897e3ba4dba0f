"""Sequence embeddings from any DNA run (a pretrained LM or a promoter classifier), written as Parquet.

Per sequence (default): the final hidden states (after the last RMSNorm) averaged over the sequence's valid
positions, the same pooling the classifier head reads. Per position: one row per base with its hidden state.
Sequences are batched in order of length (less padding) and written back in input order; padding is masked,
so a sequence's embedding does not depend on what it was batched with.

Parquet columns, per sequence: name, length, [label], embedding (Array(Float32, D)).
Per position: name, position (0-based), embedding (Array(Float32, D)).

Glossary: B batch, L padded length, D d_model.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from mambaseq.checkpoint import load_run
from mambaseq.io.atomic import open_atomic
from mambaseq.io.sequences import read_sequences
from mambaseq.pipelines.training import autocast_for, pick_device
from mambaseq.pipelines.promoter import status_progress


class EmbedError(ValueError):
    """The run cannot embed DNA."""


@torch.no_grad()
def embed(model_path: str | Path, inputs: str | Path, out: str | Path, *, per_position: bool = False,
          batch_size: int = 32, genome: str | Path | None = None, device: str = "auto",
          show_progress: bool = True) -> dict:
    """Embed every sequence of `inputs` (FASTA, CSV/TSV/Parquet with a `sequence` column, or a BED of intervals
    cut from `genome`, '-' strand reverse-complemented) into `out`."""
    out = Path(out)
    dev = pick_device(device)
    model, cfg = load_run(model_path, dev)
    if cfg.extra.get("tokenizer") != "dna" or cfg.model.n_channels != 1:
        raise EmbedError(f"{model_path}: a {cfg.task!r} run that does not read DNA cannot embed sequences")
    model.eval()
    data = read_sequences(inputs, genome=genome)
    order = np.argsort(data.lengths, kind="stable")  # similar lengths share a batch: less padding
    vectors: list[np.ndarray | None] = [None] * len(data)  # per row: (D,) or (length, D)
    started = time.monotonic()
    with status_progress(show_progress) as progress:
        task = progress.add_task("embedding", total=len(data), status="")
        for i in range(0, len(data), batch_size):
            rows = order[i:i + batch_size]
            lengths = torch.as_tensor(data.lengths[rows], device=dev)  # (B,)
            tokens = torch.as_tensor(data.ids[rows, :int(lengths.max())].astype(np.int64), device=dev)  # (B, L)
            mask = torch.arange(tokens.shape[1], device=dev) < lengths[:, None]  # (B, L)
            with autocast_for(dev):
                hidden = model.embed(tokens, mask=mask).float()  # (B, L, D)
            if per_position:
                for row, h, n in zip(rows, hidden.cpu().numpy(), lengths.tolist()):
                    vectors[row] = h[:n]
            else:
                w = mask.unsqueeze(-1).float()  # (B, L, 1)
                pooled = ((hidden * w).sum(1) / w.sum(1)).cpu().numpy()  # (B, D)
                for row, v in zip(rows, pooled):
                    vectors[row] = v
            progress.update(task, completed=i + len(rows))
    d_model = cfg.model.d_model
    if per_position:
        frame = pl.DataFrame({
            "name": np.repeat(np.array(data.names, dtype=object), data.lengths).tolist(),
            "position": np.concatenate([np.arange(n) for n in data.lengths]),
            "embedding": pl.Series(np.concatenate(vectors).astype(np.float32), dtype=pl.Array(pl.Float32, d_model)),
        })
    else:
        columns = {"name": data.names, "length": data.lengths}
        if data.labels is not None:
            columns["label"] = data.labels
        columns["embedding"] = pl.Series(np.stack(vectors).astype(np.float32), dtype=pl.Array(pl.Float32, d_model))
        frame = pl.DataFrame(columns)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open_atomic(out, "wb") as handle:
        frame.write_parquet(handle)
    return {"sequences": len(data), "rows": frame.height, "d_model": d_model, "per_position": per_position,
            "task": cfg.task, "elapsed_s": time.monotonic() - started, "out": str(out)}
