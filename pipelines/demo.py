"""`mambaseq demo`: every pipeline that exists, on the real data bundled under data/, sized for a laptop CPU.

Now:
1. pretrain: causal next-base pretraining on 300 kb of hg38 chr2 (recipe: recipes/demo_pretrain.json), reporting
   held-out bits/base on the last 10% of the piece.
2. promoter: fine-tunes that run (`--init`) on the bundled GUE prom_300_tata subset (400 train, 150 dev, 150 test
   rows; recipe: recipes/demo_promoter.json, time-capped), reports dev/test AUROC and MCC, then scans the same
   chr2 piece on both strands into a bedGraph and a BED of called regions.
3. embed: per-sequence embeddings of the subset's test sequences from the pretrained run, as Parquet.
4. anomaly: fits the next-value model on the bundled ASD omi-1 server metrics (recipes/demo_anomaly.json),
   scores the labelled test file (scores, events, plot) and reports VUS-PR / AUC-PR beside the PCA and
   IsolationForest baselines fitted on the same training file.
"""
from __future__ import annotations

import json
from pathlib import Path

from mambaseq import metrics
from mambaseq.config import ModelConfig, TrainConfig
from mambaseq.io.series import read_train_test
from mambaseq.pipelines.anomaly import AnomalySettings, fit, score_files
from mambaseq.pipelines.anomaly_baselines import IsolationForestDetector, PCADetector
from mambaseq.pipelines.embed import embed
from mambaseq.pipelines.pretrain import pretrain
from mambaseq.pipelines.promoter import finetune
from mambaseq.pipelines.scan import scan

RECIPES = Path(__file__).resolve().parent / "recipes"
GENOME_PIECE = "hg38_chr2_1000001-1300000.fa"
PROMOTER_SUBSET = "gue_prom_300_tata_subset"
ANOMALY_DIR, ANOMALY_ENTITY = "anomaly", "omi-1"


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
    results["promoter"] = promoter_step(out, data, device, show_progress)
    results["embed"] = embed(out / "pretrain", data / PROMOTER_SUBSET / "test.csv", out / "embeddings.parquet",
                             device=device, show_progress=show_progress)
    results["anomaly"] = anomaly_step(out, data, device, show_progress)
    return results


def anomaly_step(out: Path, data: Path, device: str, show_progress: bool) -> dict:
    """Fit on ASD omi-1's training file, score its test file, and compare with two baselines on the same split."""
    recipe = json.loads((RECIPES / "demo_anomaly.json").read_text())
    folder = data / ANOMALY_DIR
    run = out / "anomaly"
    fit([folder / f"{ANOMALY_ENTITY}_train.parquet"], run, settings=AnomalySettings(**recipe["settings"]),
        model_cfg=ModelConfig.from_dict(recipe["model"]), train_cfg=TrainConfig.from_dict(recipe["train"]),
        device=device, show_progress=show_progress)
    scored = score_files(run, [folder / f"{ANOMALY_ENTITY}_test.parquet"], run / "scores", device=device,
                         show_progress=False)[0]
    train, test = read_train_test(folder, ANOMALY_ENTITY)
    baselines = {}
    for detector in (PCADetector(), IsolationForestDetector()):
        score = detector.fit(train.values).score(test.values)
        baselines[detector.name] = {"vus_pr": metrics.vus_pr(test.labels, score),
                                    "auc_pr": metrics.auc_pr(test.labels, score)}
    return {"run": str(run), "scores": str(run / "scores"), **scored, "baselines": baselines}


def promoter_step(out: Path, data: Path, device: str, show_progress: bool) -> dict:
    """Fine-tune the demo's pretrained run on the GUE subset, then scan the chr2 piece with it."""
    recipe = json.loads((RECIPES / "demo_promoter.json").read_text())
    subset = data / PROMOTER_SUBSET
    run = out / "promoter"
    metrics = finetune(subset / "train.csv", run, TrainConfig.from_dict(recipe["train"]), dev=subset / "dev.csv",
                       test=subset / "test.csv", init=out / "pretrain", rc_average=recipe["rc_average"],
                       device=device, show_progress=show_progress)
    scanned = scan(run, data / GENOME_PIECE, run / "chr2_piece.bedGraph", device=device,
                   show_progress=show_progress, **recipe["scan"])
    return {"run": str(run), "dev": metrics["dev"], "test": metrics["test"], "steps": metrics["steps"],
            "elapsed_s": metrics["elapsed_s"], "scan": scanned}
