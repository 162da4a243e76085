"""Inference graphs: a SeldonDeployment's predictor run by one server (spec, executor, units, app)."""
