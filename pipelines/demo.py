"""`mambaseq demo`: every pipeline that exists, on the real data bundled under data/, sized for a laptop CPU.

Now: causal next-base pretraining on 300 kb of hg38 chr2 (recipe: recipes/demo_pretrain.json), reporting
held-out bits/base on the last 10% of the piece.
"""
from __future__ import annotations

import json
from pathlib import Path

from mambaseq.config import ModelConfig, TrainConfig
from mambaseq.pipelines.pretrain import pretrain

RECIPES = Path(__file__).resolve().parent / "recipes"
GENOME_PIECE = "hg38_chr2_1000001-1300000.fa"


class DemoError(ValueError):
    """The bundled data cannot be found."""


def bundled_data_dir() -> Path:
    """data/ of the source tree this package runs from (a clone, installed editable)."""
    folder = Path(__file__).resolve().parent.parent / "data"
    if not (folder / GENOME_PIECE).is_file():
        raise DemoError(f"bundled data not found at {folder}; run the demo from a clone of the repository "
                        "(pip install -e .) or pass --data DIR")
    return folder


def load_recipe(name: str) -> tuple[ModelConfig, TrainConfig]:
    recipe = json.loads((RECIPES / f"{name}.json").read_text())
    return ModelConfig.from_dict(recipe["model"]), TrainConfig.from_dict(recipe["train"])


def run_demo(out: str | Path, data_dir: str | Path | None = None, device: str = "auto",
             show_progress: bool = True) -> dict:
    """Run each demo step into its own folder under `out`; return {step: summary}."""
    out = Path(out)
    data = Path(data_dir) if data_dir else bundled_data_dir()
    model_cfg, train_cfg = load_recipe("demo_pretrain")
    results = {"pretrain": pretrain(data / GENOME_PIECE, out / "pretrain", model_cfg, train_cfg, device=device,
                                    show_progress=show_progress)}
    results["pretrain"]["run"] = str(out / "pretrain")
    return results
