"""Reproducibility: one call makes a run repeatable."""

from __future__ import annotations

import keras
import tensorflow as tf


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and TensorFlow and turn on TF op determinism, so
    the same code on the same machine prints the same numbers."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
