"""The training engine and its parts: optimizer, checkpoints, precision, signals, metrics, distribution."""
