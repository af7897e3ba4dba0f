"""NAB: do several fits of the same model (different seeds) beat one? Offline, on saved raw scores.

Each H200 fit of `anomaly_variants.py --datasets nab --nab-steps 100 --nab-time-of-day --seed S --save-raw DIR`
left the model's raw per-row score (rps, with the quantiser's out-of-range excess) for all 58 NAB files in
`results/nab_seeds_h200/nab_raw_100_tod[_seedS].npz` (seeds 0-5). An ensemble's raw score is the mean of its
members' raw scores; it then goes through the shipped stream post-processing exactly as `anomaly score` runs it
(`ScoreSmoother` with the settings `anomaly_bench.py` fits NAB with: baseline window 2000 at the 0.995 quantile,
5 days of time-of-day memory, range novelty weight 2 over 2 steps, context novelty weight 10 over 24 lags and 6
bins, flat-run weight 25, the novelties' warm-up capped at the fitted part, gate 60 with a margin of 1.2, the
model's excess capped at 17.5), and NAB's three profiles are scored with one corpus-wide threshold each.
`--model-cap 0 --gate-margin 1` is session 8's recipe; with also `--context-weight 0 --flat-weight 0 --gate 30`,
session 7's.

    .venv/bin/python benchmarks/nab_ensemble.py --out benchmarks/results/nab_ensemble.md

With session 7's recipe seed 0 alone reproduces its record run (`anomaly_h200_run5_nab_range`, 62.2 standard).
Tuned on NAB itself like the rest of the NAB recipe (the seeds were not chosen: 0-5 in order).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anomaly_bench import NAB_PROFILES, nab_labels  # noqa: E402
from mambaseq import metrics as M  # noqa: E402
from mambaseq.io.series import read_nab  # noqa: E402
from mambaseq.pipelines.anomaly import STREAM_RECIPE, ScoreSmoother, steps_per_day  # noqa: E402

SEEDS = Path(__file__).resolve().parent / "results" / "nab_seeds_h200"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # beside the repository


def raw_path(seed: int) -> Path:
    return SEEDS / ("nab_raw_100_tod.npz" if seed == 0 else f"nab_raw_100_tod_seed{seed}.npz")


def shipped_score(raw: np.ndarray, values: np.ndarray, period: int, fitted: int, context_weight: float,
                  flat_weight: float, gate: int, model_cap: float = STREAM_RECIPE["model_cap"],
                  gate_margin: float = STREAM_RECIPE["gate_margin"]) -> np.ndarray:
    recipe = {k: v for k, v in STREAM_RECIPE.items() if k != "threshold"}  # NAB optimises its own
    recipe |= dict(context_weight=context_weight, flat_weight=flat_weight, gate=gate, model_cap=model_cap,
                   gate_margin=gate_margin)
    smoother = ScoreSmoother(1, season_period=period, range_steps=2, range_warmup=min(750, fitted), **recipe)
    return smoother.update(raw, values)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--context-weight", type=float, default=STREAM_RECIPE["context_weight"])
    ap.add_argument("--flat-weight", type=float, default=STREAM_RECIPE["flat_weight"])
    ap.add_argument("--gate", type=int, default=STREAM_RECIPE["gate"])
    ap.add_argument("--gate-margin", type=float, default=STREAM_RECIPE["gate_margin"])
    ap.add_argument("--model-cap", type=float, default=STREAM_RECIPE["model_cap"])
    ap.add_argument("--singles", action="store_true", help="rate each seed alone, no ensembles")
    ap.add_argument("--files", type=Path, nargs="+", help="rate each of these raw-score files alone (not --seeds)")
    ap.add_argument("--fixed-threshold", type=float, help="also print each group's standard score at this "
                    "threshold (the product's --recipe stream flags at 14) beside its optimised threshold")
    ap.add_argument("--out", type=Path, help="write the table here (markdown)")
    args = ap.parse_args()

    corpus = read_nab(args.data / "nab")
    names = [n for n, _, _ in corpus]
    stamps, windows = nab_labels(corpus)
    paths = {f.stem: f for f in args.files} if args.files else {seed: raw_path(seed) for seed in args.seeds}
    raws = {}
    for key, path in paths.items():
        with np.load(path) as z:
            raws[key] = {n: z[f"{n}|rps"].astype(np.float64) for n in names}

    def rate(members: tuple[int, ...]) -> list[float]:
        scores = {}
        for name, series, _ in corpus:
            raw = np.mean([raws[s][name] for s in members], axis=0)
            scores[name] = shipped_score(raw, series.values, steps_per_day(series), int(round(0.15 * len(series))),
                                         args.context_weight, args.flat_weight, args.gate, args.model_cap,
                                         args.gate_margin)
        rated = [M.optimise_nab_threshold(stamps, scores, windows, p) for p in NAB_PROFILES]
        if args.fixed_threshold is not None:
            fixed = M.nab_score(stamps, scores, windows, "standard", args.fixed_threshold).score
            print(f"{members}: standard threshold {rated[0].threshold:.2f}; at {args.fixed_threshold:g}: "
                  f"{fixed:.2f}", flush=True)
        return [r.score for r in rated]

    singles = args.singles or args.files
    title = "single fits" if singles else "ensembles of fits (mean of the members' raw scores)"
    lines = [f"# NAB: {title}, shipped post-processing", "",
             "Generated by `benchmarks/nab_ensemble.py` (see its docstring) with context weight "
             f"{args.context_weight:g}, flat weight {args.flat_weight:g}, gate {args.gate} (margin "
             f"{args.gate_margin:g}) and model cap {args.model_cap:g}. Standard / low FP / "
             "low FN NAB scores, 58 series, one threshold per profile.", "",
             "| members | size | standard | low FP | low FN |", "|---|---|---|---|---|"]
    by_size: dict[int, list[list[float]]] = {}
    seeds = tuple(raws)
    groups = [(s,) for s in seeds]
    if not singles:
        groups += [seeds[i:i + 2] for i in range(0, len(seeds) - 1, 2)]
        groups += [seeds[i:i + 3] for i in range(0, len(seeds) - 2, 3)] + [seeds]
    for members in dict.fromkeys(groups):
        row = rate(members)
        by_size.setdefault(len(members), []).append(row)
        lines.append(f"| {' '.join(map(str, members))} | {len(members)} | " + " | ".join(f"{v:.1f}" for v in row)
                     + " |")
        print(lines[-1], flush=True)
    lines += ["", "Mean over the groups of each size:", "", "| size | groups | standard | low FP | low FN |",
              "|---|---|---|---|---|"]
    for size, rows in sorted(by_size.items()):
        lines.append(f"| {size} | {len(rows)} | " + " | ".join(f"{v:.1f}" for v in np.mean(rows, axis=0)) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
