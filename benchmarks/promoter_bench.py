"""GUE promoter benchmark in one command: Mamba from scratch and from a pretrained run, a k-mer baseline, scan speed.

For GUE prom_300_tata (300 nt) and prom_core_all (70 nt), on the GUE train/dev/test files:
- scratch: `mambaseq finetune promoter` with the task's recipe (pipelines/recipes/gue_<task>.json), one run per seed;
- init: the same recipe, with its `init_finetune` options on top, started from a pretrained run (`--init`;
  d_model/n_layer are the run's). The run is
  --init RUN, or made first by `mambaseq pretrain` on the first 90% of --genome (recipes/pretrain_chr2_bench.json,
  the same width and depth as the from-scratch recipes);
- kmer: logistic regression on k-mer frequencies, on the same splits (`load_splits`) and through the same metric
  functions as the classifier (`evaluate`, `pick_threshold`, `selection_score` of pipelines/promoter.py): C is
  picked on dev AUROC, the threshold is the dev max-MCC one. Deterministic, so one run per task;
- scan: bases/s of `mambaseq scan` (both strands) with a trained prom_300_tata run over the bundled 300 kb chr2
  piece on the benchmark's device (after a warm-up), and over its first --scan-cpu-bases on the CPU.

Training runs are subprocesses of the real CLI, up to --parallel at a time: these small models leave a big GPU
mostly idle (a d128x4 step is a few hundred tiny kernels, ~50 ms of mostly launch overhead on the H200), so
concurrent runs should share it well (not yet measured when this was written: the report's `steps` column shows
whether the caps cut runs short; --parallel lowers the sharing). Every run is capped by its recipe's `minutes`, so
the wall time is bounded whatever the GPU: about two waves of (cap + start-up), then the scan; past
--deadline-minutes the runs still going are stopped and reported as failures, so the report is always written.
Writes --out/promoter_bench.{json,md} (mean +- sample sd over seeds of test AUROC, AUPRC, MCC, F1, accuracy, dev
AUROC), --out/metrics/*.json (each run's metrics.json, the pretraining summary) and --out/logs/. Run folders
(model weights, not meant for committing) go to --work, default --out/runs.

    python benchmarks/promoter_bench.py --tasks-dir .dev/promoters --genome .dev/genome/hg38_chr2_1-2333275.fa \
        --out benchmarks/results/promoter_gue_h200                    # GPU: ~6 min, every run capped
    python benchmarks/promoter_bench.py --smoke --out /tmp/bench      # CPU, toy sizes: checks the plumbing
    python benchmarks/promoter_bench.py --runs kmer --out /tmp/kmer   # the k-mer baseline alone (CPU)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import polars as pl
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from mambaseq.io.atomic import write_bytes_atomic, write_json_atomic
from mambaseq.io.sequences import SequenceSet
from mambaseq.pipelines.promoter import evaluate, load_splits, pick_threshold, selection_score
from mambaseq.tokenizers import A_ID, C_ID, G_ID, T_ID

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "pipelines" / "recipes"
TASKS = {"prom_300_tata": "gue_prom_300_tata", "prom_core_all": "gue_prom_core_all"}  # name -> recipe file stem
ANCHORS = {  # from the issue: k-mer LR measured by its author, best published frozen embeddings, and the targets
    "prom_300_tata": "6-mer LR AUROC 0.748, MCC 0.378 (issue); frozen embeddings AUROC 0.808 (HyenaDNA); "
                     "target AUROC >= 0.85, MCC >= 0.55",
    "prom_core_all": "4-mer LR AUROC 0.862, MCC 0.560 (issue); frozen embeddings AUROC 0.875 (Caduceus-Ph); "
                     "target AUROC >= 0.90",
}
METRICS = ("auroc", "auprc", "mcc", "f1", "accuracy")
KMER_THREADS = 4  # BLAS threads of the k-mer fits, which share the CPU with the training processes


class BenchError(ValueError):
    """Missing data or settings the benchmark cannot run with."""


# ---- k-mer logistic regression --------------------------------------------------------------------------------
_BASE = np.full(256, 4, dtype=np.int64)  # token id -> 0..3 for A, C, G, T; 4 for N, IUPAC and padding
_BASE[[A_ID, C_ID, G_ID, T_ID]] = np.arange(4)


def kmer_counts(data: SequenceSet, k: int) -> sparse.csr_matrix:
    """(n, 4^k) counts of every k-mer of each row (A=0, C=1, G=2, T=3, first base most significant); k-mers
    that touch N or padding are not counted."""
    base = _BASE[data.ids]  # (n, L)
    n, width = base.shape
    span = width - k + 1
    if span < 1:
        raise BenchError(f"{data.source}: sequences of {width} bases are shorter than k = {k}")
    code = np.zeros((n, span), dtype=np.int64)
    valid = np.ones((n, span), dtype=bool)
    for j in range(k):  # k vectorised passes over (n, span), not a loop over positions
        piece = base[:, j:j + span]
        code = code * 4 + np.minimum(piece, 3)
        valid &= piece < 4
    rows = np.broadcast_to(np.arange(n)[:, None], code.shape)[valid]
    counts = sparse.coo_matrix((np.ones(len(rows)), (rows, code[valid])), shape=(n, 4 ** k))
    return counts.tocsr()  # duplicates (a k-mer seen twice) are summed here


def kmer_features(data: SequenceSet, k: int) -> sparse.csr_matrix:
    """k-mer frequencies: counts / the row's number of counted k-mers (rows of unequal length compare)."""
    counts = kmer_counts(data, k)
    totals = np.asarray(counts.sum(1)).ravel()
    return sparse.diags(1.0 / np.maximum(totals, 1)) @ counts


def kmer_baseline(sets: dict[str, SequenceSet], k: int, grid: list[float]) -> dict:
    """Logistic regression on standardised k-mer frequencies; C with the best dev `selection_score`.

    Returns {"dev": metrics, "test": metrics, "threshold", "C", "k", "dev_score_per_C", "elapsed_s"}, the
    metrics made by the pipeline's own `evaluate` (so they are comparable with the classifier's).
    """
    started = time.monotonic()
    scaler = StandardScaler(with_mean=False)  # keeps the matrix sparse; puts every k-mer on one scale for C
    features = {part: kmer_features(s, k) for part, s in sets.items()}
    train = scaler.fit_transform(features["train"])
    scores, best = {}, None
    for c in grid:
        model = LogisticRegression(C=c, max_iter=3000, tol=1e-5).fit(train, sets["train"].labels)
        dev_probs = model.predict_proba(scaler.transform(features["dev"]))  # (n_dev, K)
        scores[c] = selection_score(sets["dev"].labels, dev_probs)
        if best is None or scores[c] > scores[best[0]]:
            best = (c, model, dev_probs)
    c, model, dev_probs = best
    probs = {"dev": dev_probs, "test": model.predict_proba(scaler.transform(features["test"]))}
    threshold = pick_threshold(sets["dev"].labels, probs["dev"])
    result = {part: evaluate(sets[part].labels, p, threshold) for part, p in probs.items()}
    return result | {"threshold": threshold, "C": c, "k": k, "dev_score_per_C": {str(g): s for g, s in scores.items()},
                     "n_train": len(sets["train"]), "elapsed_s": time.monotonic() - started}


# ---- jobs: CLI subprocesses run up to `parallel` at a time --------------------------------------------------
class Job:
    def __init__(self, name: str, argv: list[str], log: Path, after: tuple[str, ...] = ()):
        self.name, self.argv, self.log, self.after = name, argv, log, after
        self.process: subprocess.Popen | None = None
        self.started = self.wall_s = None
        self.error: str | None = None

    def start(self, env: dict) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "w") as handle:
            handle.write(" ".join(self.argv) + "\n\n")
            handle.flush()
            self.process = subprocess.Popen(self.argv, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        self.started = time.monotonic()

    def poll(self) -> bool:
        """True once finished (sets wall_s, and error from the log's last line when it failed)."""
        code = self.process.poll()
        if code is None:
            return False
        self.wall_s = time.monotonic() - self.started
        if code != 0:
            lines = [line for line in self.log.read_text(errors="replace").splitlines() if line.strip()]
            self.error = f"exit {code}: {lines[-1] if lines else 'no output'}"
        return True


def run_jobs(jobs: list[Job], parallel: int, env: dict, say, deadline: float) -> None:
    """Start each job once the jobs it comes after succeeded (skip it if one failed); at most `parallel` at once.
    At time.monotonic() >= deadline the running jobs are terminated and the waiting ones skipped."""
    waiting, running, done = list(jobs), [], {}
    while waiting or running:
        if time.monotonic() >= deadline:
            for job in running:
                job.process.terminate()
                job.process.wait()
                job.wall_s, job.error = time.monotonic() - job.started, "stopped at the deadline"
            for job in waiting:
                job.error = "skipped: deadline"
            say(f"deadline: stopped {len(running)} runs, skipped {len(waiting)}")
            return
        for job in list(waiting):
            failed = [name for name in job.after if name in done and done[name].error]
            if failed:
                job.error = f"skipped: {failed[0]} failed"
                waiting.remove(job)
                done[job.name] = job
                say(f"{job.name}: {job.error}")
            elif len(running) < parallel and all(name in done for name in job.after):
                job.start(env)
                waiting.remove(job)
                running.append(job)
                say(f"{job.name}: started")
        for job in list(running):
            if job.poll():
                running.remove(job)
                done[job.name] = job
                say(f"{job.name}: {'FAILED ' + job.error if job.error else 'done'} after {job.wall_s:.0f} s")
        time.sleep(0.5)


def cli_options(options: dict) -> list[str]:
    """{'batch_size': 64, 'bidirectional': True} -> ['--batch-size', '64', '--bidirectional']."""
    argv = []
    for key, value in options.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            argv += [flag, str(value)]
    return argv


# ---- data --------------------------------------------------------------------------------------------------
def task_files(folder: Path) -> dict[str, Path]:
    files = {part: folder / f"{part}.csv" for part in ("train", "dev", "test")}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise BenchError(f"missing {', '.join(missing)}; --tasks-dir must hold gue_prom_300_tata/ and "
                         "gue_prom_core_all/ with train.csv, dev.csv, test.csv")
    return files


def smoke_copy(files: dict[str, Path], out: Path, rows_per_class: int) -> dict[str, Path]:
    """The first `rows_per_class` rows of each class of each split (real rows, toy size)."""
    out.mkdir(parents=True, exist_ok=True)
    copies = {}
    for part, path in files.items():
        table = pl.read_csv(path, infer_schema=False)
        table = table.filter(pl.int_range(pl.len()).over("label") < rows_per_class)
        copies[part] = out / path.name
        write_bytes_atomic(copies[part], table.write_csv().encode())
    return copies


def fasta_slice(source: Path, bases: int, out: Path) -> Path:
    """The first `bases` bases of the first record of `source`, as a one-record FASTA."""
    from mambaseq.io.fasta import open_fasta

    with open_fasta(source) as genome:
        name = genome.names[0]
        sequence = genome.fetch(name, 0, min(bases, genome.lengths[name])).decode()
    write_bytes_atomic(out, f">{name}\n{sequence}\n".encode())
    return out


# ---- scan throughput ---------------------------------------------------------------------------------------
def scan_speed(run: Path, piece: Path, device: str, cpu_bases: int, work: Path) -> list[dict]:
    """bases/s of the scan with `run`: whole `piece` on `device` (batch 64 and 512) and a slice on the CPU."""
    import torch

    from mambaseq.pipelines.scan import scan

    rows = []
    settings = [("cpu", cpu_bases, 64)]
    if device != "cpu" and torch.cuda.is_available():
        settings = [(device, None, 64), (device, None, 512)] + settings
    for where, bases, batch in settings:
        target = piece if bases is None else fasta_slice(piece, bases, work / f"slice_{bases}.fa")
        warm = fasta_slice(piece, 1_000, work / "warm.fa")  # first calls pay for kernel compilation
        scan(run, warm, work / "warm.bedGraph", device=where, batch_size=batch, show_progress=False)
        summary = scan(run, target, work / "scan.bedGraph", device=where, batch_size=batch, show_progress=False)
        rows.append({"device": summary["device"], "batch_size": batch, "window": summary["window"],
                     "stride": summary["stride"], "bases": summary["bases"], "seconds": summary["elapsed_s"],
                     "bases_per_s": summary["bases_per_s"], "called_regions": summary["called_regions"]})
    return rows


# ---- report ------------------------------------------------------------------------------------------------
def mean_sd(values: list[float]) -> dict:
    values = [v for v in values if v is not None]
    return {"mean": float(np.mean(values)) if values else None,
            "sd": float(np.std(values, ddof=1)) if len(values) > 1 else None, "values": values}


def fmt(stat: dict) -> str:
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.3f}" + ("" if stat["sd"] is None else f" ± {stat['sd']:.3f}")


def summarise(runs: list[dict]) -> dict:
    """{task: {variant: {metric: mean/sd/values}}} over seeds."""
    out: dict = {}
    for run in runs:
        out.setdefault(run["task"], {}).setdefault(run["variant"], []).append(run)
    return {task: {variant: {"n": len(rs), "steps": mean_sd([r["steps"] for r in rs]),
                             "dev_auroc": mean_sd([r["dev"]["auroc"] for r in rs]),
                             **{m: mean_sd([r["test"][m] for r in rs]) for m in METRICS}}
                   for variant, rs in variants.items()}
            for task, variants in out.items()}


def markdown(report: dict) -> str:
    meta = report["meta"]
    lines = [f"# GUE promoter benchmark ({meta['device_name']})", "",
             f"{meta['date']} · torch {meta['torch']} · triton {meta['triton']} · python {meta['python']} · "
             f"{meta['wall_s'] / 60:.1f} min wall in all, {meta['parallel']} runs at a time"
             + (" · **smoke mode (toy sizes: the figures mean nothing)**" if meta["smoke"] else ""), "",
             f"Command: `{meta['command']}`", "",
             "Test-split metrics, mean ± sample sd over seeds. scratch: from random weights; init: from the "
             "pretrained run below; k-mer LR: logistic regression on k-mer frequencies (C picked on dev AUROC), same "
             "splits and metric code. Threshold (binary MCC, F1, accuracy) = max MCC on dev for every model.", ""]
    for task, recipe in report["recipes"].items():
        variants = report["summary"].get(task, {})
        lines += [f"## {task}", "", f"Anchors and target: {ANCHORS[task]}.", "",
                  f"Recipe `pipelines/recipes/{TASKS[task]}.json`: {json.dumps(recipe['finetune'])}"
                  + (f"; init variant: {json.dumps(recipe['init_finetune'])}" if "init_finetune" in recipe else ""), "",
                  "| model | seeds | steps | test AUROC | test AUPRC | test MCC | test F1 | accuracy | dev AUROC |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for variant, s in variants.items():
            lines.append(f"| {variant} | {s['n']} | {s['steps']['mean']:.0f} | {fmt(s['auroc'])} | {fmt(s['auprc'])} | "
                         f"{fmt(s['mcc'])} | {fmt(s['f1'])} | {fmt(s['accuracy'])} | {fmt(s['dev_auroc'])} |")
        kmer = report["kmer"].get(task)
        if kmer and "test" in kmer:
            t = kmer["test"]
            lines.append(f"| {kmer['k']}-mer LR (C={kmer['C']}) | - | - | {t['auroc']:.3f} | {t['auprc']:.3f} | "
                         f"{t['mcc']:.3f} | {t['f1']:.3f} | {t['accuracy']:.3f} | {kmer['dev']['auroc']:.3f} |")
        lines.append("")
    if report.get("pretrain"):
        p = report["pretrain"]
        lines += ["## Pretrained run (init variant)", "",
                  f"{p['source']}" + (f": {p['steps']} steps, held-out bits/base {p['valid_bits_per_base']:.3f} "
                                      f"(train {p['train_bits_per_base']:.3f}), {p['elapsed_s']:.0f} s"
                                      if "steps" in p else ""), ""]
    if report.get("scan"):
        lines += ["## Scan throughput (`mambaseq scan`, both strands, trained prom_300_tata run)", "",
                  "| device | batch | window | stride | bases | s | bases/s |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['device']} | {r['batch_size']} | {r['window']} | {r['stride']} | {r['bases']:,} | "
                  f"{r['seconds']:.2f} | {r['bases_per_s']:,.0f} |" for r in report["scan"]]
        lines.append("")
    if report["failures"]:
        lines += ["## Failures", ""] + [f"- {name}: {error}" for name, error in report["failures"].items()] + [""]
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------------------------
def load_recipes(smoke: bool) -> tuple[dict, dict, dict]:
    tasks = {task: json.loads((RECIPES / f"{stem}.json").read_text()) for task, stem in TASKS.items()}
    pretrain = json.loads((RECIPES / "pretrain_chr2_bench.json").read_text())["pretrain"]
    smoke_recipe = json.loads((RECIPES / "promoter_bench_smoke.json").read_text()) if smoke else {}
    if smoke:
        for recipe in tasks.values():
            recipe["finetune"] |= smoke_recipe["finetune"]
            recipe["init_finetune"] = {k: v for k, v in recipe.get("init_finetune", {}).items()
                                       if k not in smoke_recipe["finetune"]}
            recipe["kmer"] |= smoke_recipe["kmer"]
        pretrain = pretrain | smoke_recipe["pretrain"]
    return tasks, pretrain, smoke_recipe


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    shared = REPO.parent / "shared" / "data"
    parser.add_argument("--out", type=Path, required=True, help="folder for the report, metrics, logs and runs")
    parser.add_argument("--tasks-dir", type=Path, default=shared / "promoters",
                        help="folder holding gue_prom_300_tata/ and gue_prom_core_all/ (train/dev/test.csv)")
    parser.add_argument("--genome", type=Path, default=shared / "genome" / "hg38_chr2_1-2333275.fa",
                        help="FASTA to pretrain on (first 90%% trained, last 10%% held out)")
    parser.add_argument("--init", type=Path, default=None, help="use this pretrained run; skips pretraining")
    parser.add_argument("--piece", type=Path, default=REPO / "data" / "hg38_chr2_1000001-1300000.fa",
                        help="FASTA scanned for the throughput figure")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--runs", nargs="+", choices=("scratch", "init", "kmer", "scan"),
                        default=["scratch", "init", "kmer", "scan"])
    parser.add_argument("--seeds", nargs="+", type=int, default=None, help="default 0 1 2 (smoke: 0 1)")
    parser.add_argument("--parallel", type=int, default=None,
                        help="training runs at a time (default: 7 on a GPU, 1 on a CPU)")
    parser.add_argument("--scan-cpu-bases", type=int, default=10_000,
                        help="bases of --piece scanned on the CPU (a slow device for the full piece)")
    parser.add_argument("--device", default="auto", help="device of the training runs and the scan")
    parser.add_argument("--work", type=Path, default=None, help="folder for the run folders (weights; default "
                        "OUT/runs)")
    parser.add_argument("--deadline-minutes", type=float, default=8.0,
                        help="stop training runs still going after this long (they count as failures) so the "
                        "report is always written")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU (recipes/promoter_bench_smoke.json)")
    args = parser.parse_args(argv)

    import torch  # after argument parsing: --help stays quick

    started = time.monotonic()
    out = args.out.resolve()
    device = "cpu" if args.smoke else args.device
    on_gpu = device != "cpu" and torch.cuda.is_available()
    tasks, pretrain_options, smoke_recipe = load_recipes(args.smoke)
    seeds = args.seeds or (smoke_recipe["seeds"] if args.smoke else [0, 1, 2])
    parallel = args.parallel or (7 if on_gpu else 1)
    work = (args.work or out / "runs").resolve()
    for path in (work, out / "logs", out / "metrics"):
        path.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []

    def say(message: str) -> None:
        line = f"[{time.monotonic() - started:6.0f} s] {message}"
        log_lines.append(line)
        print(line, flush=True)

    data = {task: task_files(args.tasks_dir / recipe["data"]) for task, recipe in tasks.items()
            if task in args.tasks}
    if "init" in args.runs and args.init is None and not args.genome.is_file():
        raise BenchError(f"{args.genome}: no such genome to pretrain on; pass --genome FASTA or --init RUN")
    if args.init is not None and not (args.init / "config.json").is_file():
        raise BenchError(f"--init {args.init}: not a run folder (no config.json)")
    if args.smoke:
        data = {task: smoke_copy(files, out / "smoke_data" / task, smoke_recipe["rows_per_class"])
                for task, files in data.items()}

    # k-mer baseline in a thread of this process (CPU) while the training subprocesses use the GPU
    kmer: dict = {}

    def kmer_all() -> None:
        for task, files in data.items():
            try:
                sets = load_splits(files["train"], files["dev"], files["test"], None, 0.1, 0)
                with threadpool_limits(KMER_THREADS):  # leave the other cores to the training processes
                    kmer[task] = kmer_baseline(sets, tasks[task]["kmer"]["k"], tasks[task]["kmer"]["C"])
                say(f"kmer {task}: test AUROC {kmer[task]['test']['auroc']:.3f} MCC {kmer[task]['test']['mcc']:.3f}"
                    f" (k={kmer[task]['k']}, C={kmer[task]['C']}, {kmer[task]['elapsed_s']:.0f} s)")
            except Exception as error:  # report it with the rest; the training runs go on
                kmer[task] = {"error": f"{type(error).__name__}: {error}"}
                say(f"kmer {task}: FAILED {kmer[task]['error']}")

    kmer_thread = threading.Thread(target=kmer_all) if "kmer" in args.runs else None
    if kmer_thread:
        kmer_thread.start()

    cli = [sys.executable, "-m", "mambaseq"]
    jobs: list[Job] = []
    init_run = args.init.resolve() if args.init else None
    if "init" in args.runs and init_run is None:
        init_run = work / "pretrain"
        shutil.rmtree(init_run, ignore_errors=True)  # a fresh run, never a half-finished earlier one
        jobs.append(Job("pretrain", cli + ["pretrain", "--genome", str(args.genome.resolve()), "--out", str(init_run),
                                           "--device", device, *cli_options(pretrain_options)],
                        out / "logs" / "pretrain.log"))
    runs = []
    for variant in ("scratch", "init"):
        if variant not in args.runs:
            continue
        for task, files in data.items():
            options = dict(tasks[task]["finetune"])
            if variant == "init":  # the architecture is the pretrained run's; the recipe may tune the rest
                options = {k: v for k, v in options.items() if k not in ("d_model", "n_layer")}
                options |= tasks[task].get("init_finetune", {})
            for seed in seeds:
                name = f"{task}_{variant}_seed{seed}"
                folder = work / name
                shutil.rmtree(folder, ignore_errors=True)  # no metrics or weights left from an earlier benchmark
                command = cli + ["finetune", "promoter", "--train", str(files["train"]), "--dev", str(files["dev"]),
                                 "--test", str(files["test"]), "--out", str(folder), "--seed", str(seed),
                                 "--device", device, *cli_options(options)]
                if variant == "init":
                    command += ["--init", str(init_run)]
                jobs.append(Job(name, command, out / "logs" / f"{name}.log",
                                after=("pretrain",) if variant == "init" and args.init is None else ()))
                runs.append({"task": task, "variant": variant, "seed": seed, "name": name, "folder": folder})

    # a GPU run needs one core for its Python loop; more torch threads per process only contend
    threads = max(1, ((os.cpu_count() or 2) - (KMER_THREADS if kmer_thread else 0)) // max(parallel, 1))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    say(f"{len(jobs)} runs, {parallel} at a time, device {device}")
    run_jobs(jobs, parallel, env, say, started + 60 * args.deadline_minutes)
    failures = {job.name: job.error for job in jobs if job.error}
    walls = {job.name: job.wall_s for job in jobs if job.wall_s is not None}

    finished = []
    for run in runs:
        metrics_path = run["folder"] / "metrics.json"
        if run["name"] in failures or not metrics_path.is_file():
            continue
        metrics = json.loads(metrics_path.read_text())
        shutil.copyfile(metrics_path, out / "metrics" / f"{run['name']}.json")
        finished.append({"task": run["task"], "variant": run["variant"], "seed": run["seed"],
                         "steps": metrics["steps"], "best_step": metrics["best_step"],
                         "elapsed_s": metrics["elapsed_s"], "wall_s": walls[run["name"]],
                         "dev": metrics["dev"], "test": metrics["test"]})

    pretrain_report = None
    if "init" in args.runs:
        pretrain_report = {"source": f"--init {args.init}" if args.init else
                           f"pretrained here on {args.genome.name} (recipes/pretrain_chr2_bench.json: "
                           f"{json.dumps(pretrain_options)})"}
        if args.init is None and (init_run / "summary.json").is_file():
            pretrain_report |= json.loads((init_run / "summary.json").read_text())
            shutil.copyfile(init_run / "summary.json", out / "metrics" / "pretrain_summary.json")

    if kmer_thread:  # before the scan, whose CPU figure must not share the CPU with the fits
        kmer_thread.join()
    scan_rows = []
    if "scan" in args.runs:
        tata = [r for r in runs if r["task"] == "prom_300_tata" and (r["folder"] / "model.safetensors").is_file()]
        if not tata:
            failures["scan"] = "no trained prom_300_tata run to scan with"
        else:
            try:
                cpu_bases = smoke_recipe["scan"]["cpu_bases"] if args.smoke else args.scan_cpu_bases
                with tempfile.TemporaryDirectory(dir=out) as work:
                    scan_rows = scan_speed(tata[0]["folder"], args.piece, device, cpu_bases, Path(work))
                for row in scan_rows:
                    say(f"scan {row['device']} batch {row['batch_size']}: {row['bases_per_s']:,.0f} bases/s")
            except Exception as error:
                failures["scan"] = f"{type(error).__name__}: {error}"
    failures |= {f"kmer {task}": k["error"] for task, k in kmer.items() if "error" in k}

    def package(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    report = {
        "meta": {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "device_name": torch.cuda.get_device_name(0) if on_gpu else f"CPU ({os.cpu_count()} cores)",
                 "torch": torch.__version__, "triton": package("triton"), "python": platform.python_version(),
                 "command": " ".join([Path(sys.argv[0]).name if argv is None else "promoter_bench.py"]
                                     + (sys.argv[1:] if argv is None else argv)),
                 "smoke": args.smoke, "parallel": parallel, "seeds": seeds, "wall_s": time.monotonic() - started,
                 "run_wall_s": walls},
        "recipes": {task: tasks[task] for task in data}, "pretrain_recipe": pretrain_options,
        "summary": summarise(finished), "runs": finished, "kmer": kmer, "pretrain": pretrain_report,
        "scan": scan_rows, "failures": failures, "log": log_lines}
    write_json_atomic(out / "promoter_bench.json", report)
    write_bytes_atomic(out / "promoter_bench.md", markdown(report).encode())
    say(f"wrote {out / 'promoter_bench.md'} and .json" + (f"; {len(failures)} failures" if failures else ""))
    return report


if __name__ == "__main__":
    try:
        main()
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
