class BadMetrics:
    def predict(self, X, names):
        return X

    def metrics(self):
        return [{"type": "HISTOGRAM", "key": "nope", "value": 1}]
