"""An online Mahalanobis outlier detector, as an input transformer (Seldon's reference parameters).

The request passes through unchanged; each row's score is the Mahalanobis distance to the
running mean in the space of the top principal components of the running covariance. Rows
scoring above ``threshold`` are outliers: the flags go out as ``tags()["outlier-predictions"]``
(so they flow down the graph in meta.tags) and the scores as GAUGE metrics.
"""
from __future__ import annotations

from typing import Any

import numpy as np


class MahalanobisOutlier:
    def __init__(self, threshold: float = 25.0, n_components: int = 3, n_stdev: float = 3.0, start_clip: int = 50,
                 max_n: int = -1):
        self.threshold = float(threshold)
        self.n_components = int(n_components)
        self.n_stdev = float(n_stdev)
        self.start_clip = int(start_clip)
        self.max_n = int(max_n)
        self.n = 0
        self.mean: np.ndarray | None = None
        self.cov: np.ndarray | None = None
        self._last_flags: list[int] = []
        self._last_scores: list[float] = []
        self.nb_outliers = 0

    def score(self, X: np.ndarray) -> np.ndarray:
        """Score each row against what was seen so far, then learn from the rows."""
        X = np.atleast_2d(np.asarray(X, dtype=float))
        scores = np.zeros(X.shape[0])
        for i, row in enumerate(X):
            if self.mean is None or self.cov is None:
                self.mean = np.zeros_like(row)
                self.cov = np.zeros((row.size, row.size))
            if self.n >= 2:
                scores[i] = self._distance(row)
            if self.n > self.start_clip and self.n_stdev > 0:  # clip before learning so outliers don't drag the mean
                stdev = np.sqrt(np.clip(np.diag(self.cov), 0, None))
                row = np.clip(row, self.mean - self.n_stdev * stdev, self.mean + self.n_stdev * stdev)
            self._learn(row)
        return scores

    def _distance(self, row: np.ndarray) -> float:
        assert self.mean is not None and self.cov is not None
        eigvals, eigvecs = np.linalg.eigh(self.cov)
        top = np.argsort(eigvals)[::-1][: max(1, min(self.n_components, row.size))]
        values, vectors = eigvals[top], eigvecs[:, top]
        projected = (row - self.mean) @ vectors
        keep = values > 1e-12
        if not keep.any():
            return 0.0
        return float(np.sum(projected[keep] ** 2 / values[keep]))

    def _learn(self, row: np.ndarray) -> None:
        assert self.mean is not None and self.cov is not None
        n = self.n + 1 if self.max_n < 0 else min(self.n + 1, self.max_n)
        delta = row - self.mean
        self.mean = self.mean + delta / n
        self.cov = self.cov + (np.outer(delta, row - self.mean) - self.cov) / n
        self.n += 1

    def transform_input(self, X: Any, feature_names: Any) -> Any:
        scores = self.score(X)
        flags = (scores > self.threshold).astype(int)
        self._last_scores = [float(s) for s in scores]
        self._last_flags = [int(f) for f in flags]
        self.nb_outliers += int(flags.sum())
        return X

    def tags(self) -> dict[str, Any]:
        return {"outlier-predictions": list(self._last_flags)}

    def metrics(self) -> list[dict[str, Any]]:
        if not self._last_scores:
            return []
        return [
            {"type": "GAUGE", "key": "is_outlier", "value": float(max(self._last_flags))},
            {"type": "GAUGE", "key": "outlier_score", "value": float(max(self._last_scores))},
            {"type": "GAUGE", "key": "nb_outliers", "value": float(self.nb_outliers)},
            {"type": "GAUGE", "key": "fraction_outliers", "value": self.nb_outliers / max(1, self.n)},
            {"type": "GAUGE", "key": "observation", "value": float(self.n)},
            {"type": "GAUGE", "key": "threshold", "value": self.threshold},
        ]
