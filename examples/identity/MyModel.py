"""The smallest Seldon model: returns what it is given."""


class MyModel:
    def predict(self, X, feature_names):
        return X
