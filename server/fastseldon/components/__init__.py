"""Reference graph components, usable as interface names (``fastseldon.components.EpsilonGreedy``).

Routers learn from feedback the way Seldon's reference multi-armed bandits do; the outlier
detector is an input transformer that tags what it flags; the combiner averages its children.
"""
from fastseldon.components.combiners import MeanCombiner
from fastseldon.components.outliers import MahalanobisOutlier
from fastseldon.components.routers import EpsilonGreedy, ThompsonSampling

__all__ = ["EpsilonGreedy", "MahalanobisOutlier", "MeanCombiner", "ThompsonSampling"]
