"""A combiner that averages its children's outputs element-wise (shapes must agree)."""
from __future__ import annotations

from typing import Any

import numpy as np


class MeanCombiner:
    def aggregate(self, features_list: list[Any], feature_names_list: list[Any]) -> np.ndarray:
        if not features_list:
            raise ValueError("Combiner received no inputs")
        arrays = [np.asarray(f, dtype=float) for f in features_list]
        if any(a.shape != arrays[0].shape for a in arrays):
            raise ValueError(f"Combiner inputs differ in shape: {[a.shape for a in arrays]}")
        return np.mean(np.stack(arrays), axis=0)
