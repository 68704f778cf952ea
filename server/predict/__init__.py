"""Single-image prediction: policy (pure), cache, and the worker-side predictor."""
