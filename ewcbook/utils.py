"""Reproducibility: one call makes a run repeatable."""

from __future__ import annotations

import keras
import tensorflow as tf

from ewcbook.checks import integer


def set_seed(seed: int = 0) -> None:
    """Seed Python, NumPy and TensorFlow and turn on TF op determinism, so
    the same code on the same machine prints the same numbers."""
    keras.utils.set_random_seed(integer(seed, "seed", minimum=0))
    tf.config.experimental.enable_op_determinism()
