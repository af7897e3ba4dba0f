"""Baseline anomaly detectors, scored by the same harness as the Mamba model (benchmarks/anomaly_bench.py).

Each detector: `fit(train (T, C))` on normal data, then `score(test (T, C)) -> (T,)`, higher = more anomalous.
Inputs are raw values with NaN where missing; every detector but the windowed Gaussian (which is NAB's own,
univariate and online) sees them robust-scaled with the training part's median/IQR (the Mamba model's
scaling) and filled forward.

- random: uniform scores (the floor any metric must be judged against).
- windowed Gaussian: NAB's `windowedGaussian` detector: 1 - Q(|x - mean| / std) with mean/std over the last
  6400 values, refreshed every 100 (NAB, Lavin & Ahmad 2015); channels averaged for multivariate series.
- PCA: squared reconstruction error from the principal components that explain 95% of the training variance.
- IsolationForest (Liu et al. 2008, scikit-learn): -score_samples of each step's channel vector.
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest

from mambaseq.tokenizers import ValueQuantiser


def fill_forward(values: np.ndarray) -> np.ndarray:
    """(T, C) with NaN -> each NaN replaced by the last value before it (the first value for leading NaNs)."""
    out = values.copy()
    for c in range(out.shape[1]):
        col = out[:, c]
        valid = ~np.isnan(col)
        if not valid.any():
            col[:] = 0.0
            continue
        index = np.where(valid, np.arange(col.size), 0)
        np.maximum.accumulate(index, out=index)
        first = int(np.argmax(valid))
        index[:first] = first
        out[:, c] = col[index]
    return out


class _Scaled:
    """Robust scaling fitted on the training part, then forward filling: the input of PCA and IsolationForest."""

    def _prepare_fit(self, train: np.ndarray) -> np.ndarray:
        self._quantiser = ValueQuantiser.fit(train)
        return self._prepare(train)

    def _prepare(self, values: np.ndarray) -> np.ndarray:
        return fill_forward(self._quantiser.scale_values(values))


class RandomDetector:
    name = "random"

    def __init__(self, seed: int = 0):
        self.seed = seed

    def fit(self, train: np.ndarray) -> "RandomDetector":
        return self

    def score(self, test: np.ndarray) -> np.ndarray:
        return np.random.default_rng(self.seed).random(test.shape[0])


def windowed_gaussian(values: np.ndarray, window: int = 6400, step: int = 100) -> np.ndarray:
    """NAB's windowedGaussian detector on one channel (T,) -> (T,) in [0, 1].

    mean/std come from the last `window` values seen, refreshed every value until the window is full,
    then every `step` values; row 0 scores 0. np.mean/np.std per refresh keep NAB's floating point.
    """
    n = values.size
    updates = np.concatenate([np.arange(min(n, window)), np.arange(window - 1 + step, n, step)])
    mean = np.array([values[max(0, u - window + 1):u + 1].mean() for u in updates])
    std = np.array([values[max(0, u - window + 1):u + 1].std() for u in updates])
    std[std == 0.0] = 0.000001
    src = np.searchsorted(updates, np.arange(1, n) - 1, side="right") - 1   # last refresh before row i
    m, sd, x = mean[src], std[src], values[1:]
    z = (np.where(x < m, 2 * m - x, x) - m) / sd         # NAB mirrors x below the mean first
    q = np.array([0.5 * math.erfc(v / math.sqrt(2)) for v in z])
    return np.concatenate([[0.0], 1 - q])


class WindowedGaussianDetector:
    """Online: needs no training part (fit is a no-op); missing values are filled forward."""

    name = "windowed Gaussian"

    def fit(self, train: np.ndarray) -> "WindowedGaussianDetector":
        return self

    def score(self, test: np.ndarray) -> np.ndarray:
        filled = fill_forward(test)
        return np.mean([windowed_gaussian(filled[:, c]) for c in range(filled.shape[1])], axis=0)


class PCADetector(_Scaled):
    name = "PCA"

    def __init__(self, variance: float = 0.95):
        self.variance = variance

    def fit(self, train: np.ndarray) -> "PCADetector":
        x = self._prepare_fit(train)
        # one channel, or variance held by one direction: keep at least one component, never all of them
        n = min(x.shape[1], x.shape[0])
        self._pca = PCA(n_components=self.variance if n > 1 else 1, svd_solver="full").fit(x)
        return self

    def score(self, test: np.ndarray) -> np.ndarray:
        x = self._prepare(test)
        rebuilt = self._pca.inverse_transform(self._pca.transform(x))
        return ((x - rebuilt) ** 2).sum(axis=1)


class IsolationForestDetector(_Scaled):
    name = "IsolationForest"

    def __init__(self, seed: int = 0, n_estimators: int = 100):
        self.seed, self.n_estimators = seed, n_estimators

    def fit(self, train: np.ndarray) -> "IsolationForestDetector":
        self._forest = IsolationForest(n_estimators=self.n_estimators, random_state=self.seed).fit(
            self._prepare_fit(train))
        return self

    def score(self, test: np.ndarray) -> np.ndarray:
        return -self._forest.score_samples(self._prepare(test))


BASELINES = {"random": RandomDetector, "windowed_gaussian": WindowedGaussianDetector, "pca": PCADetector,
             "isolation_forest": IsolationForestDetector}
