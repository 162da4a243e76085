"""Multi-armed bandit routers with the parameters and learning rules of Seldon's reference routers.

Both read a feedback's ``reward`` as the fraction of successes over the request's rows: with
``rows`` rows, ``int(reward * rows)`` successes and the rest failures go to the branch the
router chose (``routing``, its own entry of the response's ``meta.routing``).
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np


def _rows(features: Any) -> int:
    arr = np.asarray(features) if features is not None else np.array([])
    return int(arr.shape[0]) if arr.ndim > 0 and arr.shape[0] > 0 else 1


def _branch_names(n_branches: int, branch_names: str | None) -> list[str]:
    if not branch_names:
        return [f"branch-{i}" for i in range(n_branches)]
    names = branch_names.split(":")
    if len(names) != n_branches:
        raise ValueError(f"branch_names has {len(names)} names for {n_branches} branches")
    return names


class EpsilonGreedy:
    """Best branch with probability 1 - epsilon, otherwise a uniformly random other branch."""

    def __init__(self, n_branches: int | None = None, epsilon: float = 0.1, best_branch: int | None = None,
                 verbose: bool = False, seed: int | None = None, history: bool = False, branch_names: str | None = None):
        if n_branches is None or int(n_branches) < 1:
            raise ValueError("n_branches parameter must be given and be a positive integer")
        self.n_branches = int(n_branches)
        if not 0.0 <= float(epsilon) <= 1.0:
            raise ValueError("epsilon must be between 0 and 1")
        self.epsilon = float(epsilon)
        self.rng = random.Random(seed)
        self.best_branch = int(best_branch) if best_branch is not None else self.rng.randrange(self.n_branches)
        if not 0 <= self.best_branch < self.n_branches:
            raise ValueError(f"best_branch must be in 0..{self.n_branches - 1}")
        self.verbose = bool(verbose)
        self.keep_history = bool(history)
        self.history: list[tuple[int, float]] = []
        self.branch_names = _branch_names(self.n_branches, branch_names)
        self.branches_success = [0] * self.n_branches
        self.branches_tries = [0] * self.n_branches
        self.branch_values = [0.0] * self.n_branches

    def route(self, features: Any, feature_names: Any) -> int:
        if self.n_branches == 1 or self.rng.random() > self.epsilon:
            return self.best_branch
        others = [b for b in range(self.n_branches) if b != self.best_branch]
        return self.rng.choice(others)

    def send_feedback(self, features: Any, feature_names: Any, reward: float, truth: Any, routing: int | None = None) -> None:
        if routing is None or not 0 <= int(routing) < self.n_branches:
            return  # the request did not come through this router's branches
        branch, rows = int(routing), _rows(features)
        successes = int(float(reward) * rows)
        self.branches_success[branch] += successes
        self.branches_tries[branch] += rows
        self.branch_values[branch] = self.branches_success[branch] / self.branches_tries[branch]
        best = max(self.branch_values)
        self.best_branch = self.rng.choice([b for b, v in enumerate(self.branch_values) if v == best])
        if self.keep_history:
            self.history.append((branch, float(reward)))

    def tags(self) -> dict[str, Any]:
        return {"best_branch": self.branch_names[self.best_branch]} if self.verbose else {}


class ThompsonSampling:
    """Draw from each branch's Beta(successes + 1, failures + 1) and take the largest."""

    def __init__(self, n_branches: int | None = None, verbose: bool = False, seed: int | None = None,
                 history: bool = False, branch_names: str | None = None):
        if n_branches is None or int(n_branches) < 1:
            raise ValueError("n_branches parameter must be given and be a positive integer")
        self.n_branches = int(n_branches)
        self.verbose = bool(verbose)
        self.rng = np.random.default_rng(seed)
        self.keep_history = bool(history)
        self.history: list[tuple[int, float]] = []
        self.branch_names = _branch_names(self.n_branches, branch_names)
        self.alpha = np.ones(self.n_branches)
        self.beta = np.ones(self.n_branches)

    def route(self, features: Any, feature_names: Any) -> int:
        return int(np.argmax(self.rng.beta(self.alpha, self.beta)))

    def send_feedback(self, features: Any, feature_names: Any, reward: float, truth: Any, routing: int | None = None) -> None:
        if routing is None or not 0 <= int(routing) < self.n_branches:
            return
        branch, rows = int(routing), _rows(features)
        successes = int(float(reward) * rows)
        self.alpha[branch] += successes
        self.beta[branch] += rows - successes
        if self.keep_history:
            self.history.append((branch, float(reward)))
