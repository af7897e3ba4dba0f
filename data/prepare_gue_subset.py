"""Cut the bundled GUE prom_300_tata subset from the full task: python data/prepare_gue_subset.py GUE_DIR OUT_DIR

GUE_DIR holds train.csv, dev.csv, test.csv (`sequence,label`). From each split, a fixed number of rows per class
is drawn at random (seed 0, without replacement) and written in the original row order, same header.
"""
import sys
from pathlib import Path

import polars as pl

PER_CLASS = {"train": 200, "dev": 75, "test": 75}


def main(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for split, count in PER_CLASS.items():
        table = pl.read_csv(source / f"{split}.csv").with_row_index("row")
        picked = pl.concat([table.filter(pl.col("label") == label).sample(count, seed=0) for label in (0, 1)])
        picked.sort("row").drop("row").write_csv(target / f"{split}.csv")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
