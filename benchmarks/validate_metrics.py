"""Cross-check mambaseq.metrics against reference implementations -> results/metrics_validation.md.

1. TSB-AD (PyPI `tsb-ad`, run in a side environment because it pins numpy < 2): AUC-ROC, AUC-PR,
   VUS-ROC, VUS-PR, every range-AUC slice of the VUS surface, R-based F1 (given predictions and
   TSB-AD's oracle threshold) and point-adjusted F1 on random labelled cases with anomaly ranges.
2. NAB: `../shared/data/nab` has NAB's per-file score tables but not the detectors' raw outputs, so the
   windowed-Gaussian and random detectors are re-run here as NAB defines them, then scored, threshold-
   optimised and normalised by mambaseq.metrics, and compared with NAB's tables and final_results.json.

Side environment (TSB-AD's own dependencies pull torch; its metrics need only numpy and scikit-learn):
    python3 -m venv /tmp/tsbad && /tmp/tsbad/bin/pip install --no-deps TSB-AD==1.5 \
        && /tmp/tsbad/bin/pip install "numpy<2" scikit-learn
Run from the repository root with the project's environment:
    .venv/bin/python benchmarks/validate_metrics.py --tsbad-python /tmp/tsbad/bin/python
The same file is the TSB-AD worker (`--worker IN.npz OUT.json`, run by the side interpreter).
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from mambaseq.pipelines.anomaly_baselines import windowed_gaussian  # NAB's detector, shared with the harness

REPO = Path(__file__).resolve().parents[1]
NAB = REPO.parent / "shared" / "data" / "nab"
OUT = REPO / "benchmarks" / "results" / "metrics_validation.md"
VUS_WINDOWS = (100, 20, 7)          # TSB-AD's default slidingWindow first
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


# ----------------------------------------------------------------------------- random cases

def make_cases(n_cases: int, seed: int = 0) -> list[dict]:
    """Random series with anomaly ranges: close ranges (buffer merging), edges, ties, weak/strong signal."""
    rng = np.random.default_rng(seed)
    cases = []
    for c in range(n_cases):
        n = int(rng.choice([300, 800, 2000, 5000]))
        y = np.zeros(n, np.int64)
        for _ in range(int(rng.integers(1, 9))):
            length = int(rng.integers(1, min(150, n // 10) + 1))
            start = int(rng.integers(0, n - length))
            y[start:start + length] = 1
        if c % 4 == 1:                                        # ranges touching both series edges
            y[:int(rng.integers(1, 20))] = 1
            y[n - int(rng.integers(1, 20)):] = 1
        if c % 4 == 2:                                        # a cluster of short ranges 2-6 apart
            at = int(rng.integers(0, n - 60))
            y[at:at + 60:int(rng.integers(3, 8))] = 1
        score = rng.random(n) + y * rng.uniform(0.0, 1.5)
        score = np.convolve(score, np.ones(3) / 3, mode="same")  # some temporal smoothness
        if c % 3 == 0:
            score = np.round(score, 1)                        # heavy ties
        pred = (score > np.quantile(score, rng.uniform(0.8, 0.99))).astype(np.int64)
        cases.append({"labels": y, "score": score, "pred": pred})
    return cases


# ----------------------------------------------------------------------------- TSB-AD worker

def tsbad_worker(npz_in: str, json_out: str) -> None:
    """Runs in the side environment: TSB-AD's numbers for every case."""
    from importlib.metadata import version

    import warnings

    import sklearn
    from TSB_AD.evaluation.basic_metrics import basic_metricor
    from TSB_AD.evaluation.metrics import get_metrics

    warnings.filterwarnings("ignore")      # sklearn's zero-division notes from TSB-AD's threshold sweeps
    data = np.load(npz_in)
    out = {"versions": {"tsb-ad": version("TSB-AD"), "numpy": np.__version__,
                        "scikit-learn": sklearn.__version__, "python": platform.python_version()},
           "cases": []}
    for c in range(int(data["n_cases"])):
        y, s, pred = data[f"labels_{c}"], data[f"score_{c}"], data[f"pred_{c}"]
        g = basic_metricor()
        row = {"get_metrics": get_metrics(s, y, slidingWindow=VUS_WINDOWS[0]),
               "RF1_pred": g.metric_RF1(y, s, preds=pred),
               "PAF1_pred": g.metric_PointF1PA(y, s, preds=pred), "vus": {}}
        for w in VUS_WINDOWS:
            tpr, fpr, prec, _, vroc, vpr = basic_metricor().RangeAUC_volume_opt(y, s, w, 250)
            # Each slice, integrated with TSB-AD's own rules (RangeAUC_volume_opt's loop body).
            slice_roc = [float(np.dot(fpr[i, 1:] - fpr[i, :-1], (tpr[i, 1:] + tpr[i, :-1]) / 2))
                         for i in range(w + 1)]
            slice_pr = [float(np.dot(tpr[i, 1:-1] - tpr[i, :-2], prec[i, 1:])) for i in range(w + 1)]
            row["vus"][str(w)] = {"VUS_ROC": float(vroc), "VUS_PR": float(vpr),
                                  "slice_roc": slice_roc, "slice_pr": slice_pr}
        row["get_metrics"] = {k: float(v) for k, v in row["get_metrics"].items()}
        out["cases"].append(row)
    Path(json_out).write_text(json.dumps(out))


def check_tsbad(tsbad_python: str, n_cases: int) -> tuple[list[str], float]:
    from mambaseq import metrics as M

    cases = make_cases(n_cases)
    with tempfile.TemporaryDirectory() as tmp:
        npz, js = Path(tmp) / "cases.npz", Path(tmp) / "tsbad.json"
        arrays = {"n_cases": np.array(len(cases))}
        for c, case in enumerate(cases):
            arrays.update({f"{k}_{c}": v for k, v in case.items()})
        np.savez(npz, **arrays)
        t0 = time.perf_counter()
        subprocess.run([tsbad_python, __file__, "--worker", str(npz), str(js)], check=True)
        t_ref = time.perf_counter() - t0
        ref = json.loads(js.read_text())

    diffs: dict[str, list[float]] = {}
    def put(name, ours, theirs):
        diffs.setdefault(name, []).append(abs(float(ours) - float(theirs)))

    t0 = time.perf_counter()
    for case, r in zip(cases, ref["cases"]):
        y, s, pred = case["labels"], case["score"], case["pred"]
        gm = r["get_metrics"]
        put("AUC-ROC (get_metrics)", M.auc_roc(y, s), gm["AUC-ROC"])
        put("AUC-PR (get_metrics)", M.auc_pr(y, s), gm["AUC-PR"])
        put("VUS-ROC, W=100 (get_metrics)", M.vus_roc(y, s), gm["VUS-ROC"])
        put("VUS-PR, W=100 (get_metrics)", M.vus_pr(y, s), gm["VUS-PR"])
        for w in VUS_WINDOWS:
            v = r["vus"][str(w)]
            put(f"VUS-ROC, W={w} (RangeAUC_volume_opt)", M.vus_roc(y, s, max_window=w), v["VUS_ROC"])
            put(f"VUS-PR, W={w} (RangeAUC_volume_opt)", M.vus_pr(y, s, max_window=w), v["VUS_PR"])
        for ell, (a, b) in enumerate(zip(r["vus"]["100"]["slice_roc"], r["vus"]["100"]["slice_pr"])):
            put("range-AUC-ROC, every ell in 0..100", M.range_auc_roc(y, s, window=ell), a)
            put("range-AUC-PR, every ell in 0..100", M.range_auc_pr(y, s, window=ell), b)
        put("R-based F1, given predictions (metric_RF1)", M.range_f1(y, pred), r["RF1_pred"])
        put("R-based F1, oracle threshold (get_metrics)", M.best_range_f1(y, s)[0], gm["R-based-F1"])
        # TSB-AD never adjusts step 0 (module docstring of mambaseq.metrics): keep those cases apart.
        pa = "PA-F1, {} (" + ("range at step 0: TSB-AD quirk" if y[0] else "{}") + ")"
        put(pa.format("given predictions", "metric_PointF1PA"), M.point_adjusted_f1(y, pred), r["PAF1_pred"])
        put(pa.format("oracle threshold", "get_metrics"),
            max(M.point_adjusted_f1(y, s > t) for t in np.linspace(s.min(), s.max(), 100)), gm["PA-F1"])
    t_ours = time.perf_counter() - t0

    v = ref["versions"]
    worst = max(max(d) for k, d in diffs.items() if "quirk" not in k)
    lines = [
        "## 1. TSB-AD cross-check",
        "",
        f"Reference: `tsb-ad` {v['tsb-ad']} (PyPI) in a side venv: numpy {v['numpy']}, scikit-learn "
        f"{v['scikit-learn']}, Python {v['python']}. Ours: numpy {np.__version__}, scikit-learn "
        f"{__import__('sklearn').__version__}, Python {platform.python_version()}.",
        f"{len(cases)} random cases (n in 300..5000, 1-8 anomaly ranges of 1-150 steps, ranges at both "
        "series edges, clusters of short ranges 2-6 steps apart, a third with heavily tied scores); "
        "250 thresholds as in TSB-AD. Reference time "
        f"{t_ref:.1f} s, ours {t_ours:.1f} s (ours also recomputes each of the 101 slices separately).",
        "",
        "| metric (TSB-AD entry point) | comparisons | max abs diff |",
        "|---|---|---|",
    ]
    lines += [f"| {k} | {len(d)} | {max(d):.1e} |" for k, d in diffs.items()]
    lines += [
        "",
        f"**Max abs diff over everything but the PA-F1 step-0 rows: {worst:.1e}** (target 1e-6).",
        "",
        "PA-F1 rows marked 'range at step 0' are the cases whose first anomaly range starts at step 0: "
        "TSB-AD's `_adjust_predicts` never adjusts step 0 (its backward loop stops at index 1), ours "
        "adjusts the whole range (the standard definition), so those may differ by design.",
        "TSB-AD 1.5's legacy `RangeAUC` (commented out of its `get_metrics`) is not a reference: it "
        "finds segments on the soft labels with `diff == 1` and raises ZeroDivisionError for buffers "
        ">= 4, so range-AUC here is the slice of TSB-AD's VUS surface at a fixed buffer; at buffer 0 "
        "both agree.",
        "",
    ]
    return lines, worst


# ----------------------------------------------------------------------------- NAB

def as_nab_csv(scores: np.ndarray) -> np.ndarray:
    """Scores as NAB's results CSVs hold them: Python 2 str(float), 12 significant digits.

    It matters: windowed-Gaussian scores within 5e-13 of 1 become 1.0 and count at threshold 1.0.
    """
    return np.array([float(f"{x:.12g}") for x in scores])


def random_detector(n: int, seed: int) -> np.ndarray:
    """NAB's random detector: random.seed(seed) per file, then random.uniform(0, 1) per row."""
    random.seed(seed)
    return np.array([random.uniform(0, 1) for _ in range(n)])


def load_nab(nab: Path, files: list[str] | None = None) -> tuple[dict, dict, dict]:
    """Timestamps and values of NAB's data files (all 58 by default) and every file's windows."""
    import polars as pl

    windows = json.loads((nab / "labels" / "combined_windows.json").read_text())
    ts, values = {}, {}
    for name in files or sorted(windows):
        df = pl.read_csv(nab / "data" / name, try_parse_dates=True)
        ts[name], values[name] = df["timestamp"].to_numpy(), df["value"].cast(pl.Float64).to_numpy()
    return ts, values, windows


def read_score_table(path: Path) -> dict[str, dict]:
    import polars as pl

    df = pl.read_csv(path)
    return {r["File"] or r["Detector"]: r for r in df.iter_rows(named=True)}  # last row: "Totals"


def check_nab(nab: Path) -> tuple[list[str], dict]:
    from mambaseq import metrics as M

    published = json.loads((nab / "results" / "final_results.json").read_text())
    profiles = json.loads((nab / "config" / "profiles.json").read_text())
    for p in PROFILES:
        assert all(M.NAB_PROFILES[p][k] == profiles[p]["CostMatrix"][k] for k in M.NAB_PROFILES[p])
    ts, values, windows = load_nab(nab)
    nab_thresholds = json.loads((nab / "config" / "thresholds.json").read_text())
    t0 = time.perf_counter()
    wg_exact = {name: windowed_gaussian(v) for name, v in values.items()}
    t_wg = time.perf_counter() - t0
    wg = {name: as_nab_csv(v) for name, v in wg_exact.items()}
    summary: dict = {}
    lines = [
        "## 2. NAB scorer",
        "",
        f"Data: `../shared/data/nab` (NAB commit ea702d7), {len(ts)} files, "
        f"{sum(v.size for v in values.values())} rows, "
        f"{sum(len(w) for w in windows.values())} windows. NAB ships per-file score tables, not the "
        "detectors' raw outputs, so the windowed-Gaussian detector (window 6400, step 100) and the "
        "random detector (Python `random`, seeded per file) are re-run here as NAB defines them "
        f"(windowed Gaussian: {t_wg:.1f} s for the corpus), and their scores rounded to 12 significant "
        "digits as NAB's results CSVs store them (Python 2 `str(float)`).",
        "",
        "### Windowed Gaussian at NAB's threshold 1.0, file by file against NAB's score tables",
        "",
        "| profile | files with equal TP/TN/FP/FN and row count | max abs diff of per-file raw score "
        "| raw total ours / NAB | normalised ours | published | without the 12-digit rounding |",
        "|---|---|---|---|---|---|---|",
    ]
    t_score = []
    for p in PROFILES:
        table = read_score_table(nab / "results" / f"windowedGaussian_{p}_scores.csv")
        t0 = time.perf_counter()
        res = M.nab_score(ts, wg, windows, p, threshold=1.0)
        t_score.append(time.perf_counter() - t0)
        unrounded = M.nab_score(ts, wg_exact, windows, p, threshold=1.0).score
        same = sum(all(getattr(res.per_file[f], c.lower()) == table[f][c] for c in ("TP", "TN", "FP", "FN"))
                   and res.per_file[f].n_rows == table[f]["Total_Count"] for f in res.per_file)
        worst = max(abs(res.per_file[f].raw - table[f]["Score"]) for f in res.per_file)
        lines.append(f"| {p} | {same}/{len(res.per_file)} | {worst:.1e} | {res.raw:.4f} / "
                     f"{table['Totals']['Score']:.4f} | **{res.score:.4f}** | "
                     f"{published['windowedGaussian'][p]:.4f} | {unrounded:.2f} |")
    lines += ["", "NAB's table scores carry 12 significant digits, hence per-file differences near 1e-12. "
              f"nab_score on the whole corpus: {max(t_score):.2f} s per profile.", ""]

    lines += [
        "### End to end: detector -> `optimise_nab_threshold` -> normalised score",
        "",
        "| detector | profile | our optimal threshold | ours | published (final_results.json) | "
        "NAB's threshold (config/thresholds.json) | ours at NAB's threshold |",
        "|---|---|---|---|---|---|---|",
    ]
    t_opt = []
    rnd42 = {name: as_nab_csv(random_detector(v.size, 42)) for name, v in values.items()}
    for det, scores in (("windowedGaussian", wg), ("random", rnd42)):
        for p in PROFILES:
            t0 = time.perf_counter()
            res = M.optimise_nab_threshold(ts, scores, windows, p)
            t_opt.append(time.perf_counter() - t0)
            fixed = M.nab_score(ts, scores, windows, p, nab_thresholds[det][p]["threshold"]).score
            lines.append(f"| {det}{' (seed 42)' if det == 'random' else ''} | {p} | {res.threshold:.12g} | "
                         f"**{res.score:.4f}** | {published[det][p]:.4f} | "
                         f"{nab_thresholds[det][p]['threshold']:.12g} | {fixed:.4f} |")
            summary[f"{det}{' seed 42' if det == 'random' else ''}, optimised, {p}"] = (res.score, published[det][p])
            if det == "random":
                summary[f"random seed 42 at NAB's threshold, {p}"] = (fixed, published[det][p])
    lines += [
        "",
        "Windowed Gaussian: the exact sweep lands on NAB's threshold 1.0 and its published scores. Random: "
        "NAB's published numbers are the seed-42 scores at the thresholds in config/thresholds.json "
        "(reproduced exactly in the last column); those thresholds come from an earlier optimiser run "
        "(the scores recorded beside them in thresholds.json do not match the current scorer either), "
        "and the exact sweep over every distinct score finds a slightly better one.",
        f"optimise_nab_threshold on the whole corpus: {max(t_opt):.2f} s at most.",
        "",
    ]

    seeds = range(10)
    spread = {p: [] for p in PROFILES}
    for sd in seeds:
        scores = {n: as_nab_csv(random_detector(v.size, sd)) for n, v in values.items()}
        for p in PROFILES:
            spread[p].append((M.optimise_nab_threshold(ts, scores, windows, p).score,
                              M.nab_score(ts, scores, windows, p, nab_thresholds["random"][p]["threshold"]).score))
    lines += [
        "NAB's README scoreboard lists Random as 11.0 / 1.2 / 19.5 (standard / low FP / low FN), \"the mean "
        "across a range of random seeds\" (seeds not named), spread 7.95-16.83, -1.56-2.14 and 11.34-23.68. "
        "Seeds 0-9 here:",
        "",
        "| profile | optimised: mean (min-max) | at NAB's threshold: mean (min-max) |",
        "|---|---|---|",
    ]
    for p, v in spread.items():
        a = np.array(v)
        lines.append(f"| {p} | {a[:, 0].mean():.2f} ({a[:, 0].min():.2f}-{a[:, 0].max():.2f}) | "
                     f"{a[:, 1].mean():.2f} ({a[:, 1].min():.2f}-{a[:, 1].max():.2f}) |")
    lines.append("")

    # Numenta HTM: raw outputs not available; its published per-file totals normalised with our null/perfect.
    null_detector = {name: np.zeros(v.size) for name, v in values.items()}
    lines += ["### Normalisation of NAB's own per-file tables (null and perfect from our scorer)", "",
              "| detector | profile | our null / perfect | normalised from NAB's total | published |",
              "|---|---|---|---|---|"]
    for det in ("numenta", "windowedGaussian"):
        for p in PROFILES:
            base = M.nab_score(ts, null_detector, windows, p, threshold=1.0)
            total = read_score_table(nab / "results" / f"{det}_{p}_scores.csv")["Totals"]["Score"]
            ours = 100 * (total - base.null) / (base.perfect - base.null)
            lines.append(f"| {det} | {p} | {base.null:g} / {base.perfect:g} | {ours:.2f} | "
                         f"{published[det][p]:.2f} |")
            summary[f"{det} normalised from NAB's table, {p}"] = (ours, published[det][p])
    lines.append("")
    return lines, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tsbad-python", default="/tmp/tsbad/bin/python", help="interpreter with tsb-ad")
    ap.add_argument("--cases", type=int, default=12, help="random TSB-AD cases")
    ap.add_argument("--worker", nargs=2, metavar=("IN_NPZ", "OUT_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        tsbad_worker(*args.worker)
        return
    tsbad_lines, worst = check_tsbad(args.tsbad_python, args.cases)
    nab_lines, summary = check_nab(NAB)
    head = [
        "# mambaseq.metrics validation",
        "",
        f"Generated by `.venv/bin/python benchmarks/validate_metrics.py --tsbad-python /tmp/tsbad/bin/python` "
        f"on {time.strftime('%Y-%m-%d')} (CPU only; setup in the script's docstring).",
        "",
        f"- TSB-AD agreement: max abs diff {worst:.1e} over all metrics and cases.",
    ]
    head += [f"- NAB {k}: ours {a:.4f}, published {b:.4f} (diff {a - b:+.1e})" for k, (a, b) in summary.items()]
    OUT.write_text("\n".join(head + [""] + tsbad_lines + nab_lines))
    print(OUT.read_text())


if __name__ == "__main__":
    main()
