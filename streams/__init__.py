"""The worker runtime: the Faust app, its stages (clean, window, dead letters) and the batch pipeline."""
