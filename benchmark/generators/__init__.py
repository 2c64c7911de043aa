"""Methods on the `generator` axis: baselines (none, class weighting, oversampling) and generative models."""
