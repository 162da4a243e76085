"""A numpy linear model with Seldon parameters: y = X @ w * scale + bias.

Serve it with
  fastseldon serve LinearModel --parameters '[{"name":"scale","value":"2.0","type":"FLOAT"},{"name":"n_outputs","value":"3","type":"INT"}]'
"""
import numpy as np


class LinearModel:
    def __init__(self, scale: float = 1.0, bias: float = 0.0, n_outputs: int = 2, seed: int = 0):
        self.scale = scale
        self.bias = bias
        self.n_outputs = n_outputs
        self.seed = seed
        self.weights = None
        self.calls = 0

    def load(self):
        # Weights are built in load(), per worker, as a real model would read them from disk.
        self.weights = None

    def _weights(self, n_features: int) -> np.ndarray:
        if self.weights is None or self.weights.shape[0] != n_features:
            rng = np.random.default_rng(self.seed)
            self.weights = rng.standard_normal((n_features, self.n_outputs))
        return self.weights

    def predict(self, X, feature_names):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim == 1:
            X = X.reshape(1, -1)
        self.calls += 1
        return X @ self._weights(X.shape[1]) * self.scale + self.bias

    def class_names(self):
        return [f"y{i}" for i in range(self.n_outputs)]

    def tags(self):
        return {"model": "linear", "scale": self.scale}

    def metrics(self):
        return [{"type": "COUNTER", "key": "linear_predictions", "value": 1}]

    def init_metadata(self):
        return {
            "name": "linear",
            "versions": ["v1"],
            "platform": "numpy",
            "inputs": [{"messagetype": "tensor", "schema": {"names": [], "shape": [-1, -1]}}],
            "outputs": [{"messagetype": "tensor", "schema": {"names": self.class_names(), "shape": [-1, self.n_outputs]}}],
        }
