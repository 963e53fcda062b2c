"""Argument checks for every public function: an error that names the argument.

A value of the wrong type raises ``TypeError``, a value out of range
``ValueError``; nothing is coerced silently (``True`` is not an int, ``2.0``
is not an int, ``"1e-3"`` is not a number). Each check returns the value in
its plain Python type, so a caller can write ``epochs = integer(epochs,
"epochs", minimum=1)``. The last three check what every curvature estimator
is given: a model, its data and the data's labels.
"""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np
import tensorflow as tf


def integer(value, name: str, *, minimum: int | None = None) -> int:
    """``value`` as an ``int``: an int or NumPy integer (not a bool), at least ``minimum``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r:.60}")
    if minimum is not None and value < minimum:
        bound = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return int(value)


def units(value, name: str = "units", outputs: int | None = None) -> tuple[int, int] | None:
    """``None``, or ``value`` as a ``(start, stop)`` pair of ints with 0 <= start < stop (<= ``outputs``)."""
    if value is None:
        return None
    if not isinstance(value, (tuple, list)) or len(value) != 2 or any(
            not isinstance(u, numbers.Integral) or isinstance(u, bool) for u in value):
        raise TypeError(f"{name} must be None or a (start, stop) pair of ints, got {value!r:.60}")
    start, stop = int(value[0]), int(value[1])
    if not 0 <= start < stop or (outputs is not None and stop > outputs):
        bound = "" if outputs is None else f" <= {outputs} outputs"
        raise ValueError(f"{name} must satisfy 0 <= start < stop{bound}, got {value!r}")
    return start, stop


def optional_integer(value, name: str, *, minimum: int | None = None) -> int | None:
    """``None``, or :func:`integer`."""
    return None if value is None else integer(value, name, minimum=minimum)


def real(
    value, name: str, *, low: float = -math.inf, high: float = math.inf, open_low=False, open_high=False
) -> float:
    """``value`` as a ``float``: a finite real number (not a bool) between ``low`` and ``high``,
    each end excluded when ``open_low`` / ``open_high``."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r:.60}")
    value = float(value)
    inside = (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not (math.isfinite(value) and inside):
        raise ValueError(f"{name} must be a finite number {_range(low, high, open_low, open_high)}, got {value!r}")
    return value


def _range(low, high, open_low, open_high) -> str:
    if high == math.inf:
        return f"{'>' if open_low else '>='} {low:g}"
    if low == -math.inf:
        return f"{'<' if open_high else '<='} {high:g}"
    return f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"


def boolean(value, name: str) -> bool:
    """``value`` if it is a ``bool``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r:.60}")
    return value


def one_of(value, name: str, options):
    """``value`` if it is one of ``options``."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r:.60}")
    return value


def instance(value, name: str, kind: type, what: str | None = None):
    """``value`` if it is an instance of ``kind`` (``what`` names it in the message)."""
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be {what or 'a ' + kind.__name__}, got {type(value).__name__}")
    return value


def check_model(model, name: str = "model") -> keras.Model:
    """``model`` if it is a built Keras model with trainable variables."""
    instance(model, name, keras.Model, "a keras.Model")
    if not model.built or not model.trainable_variables:
        raise ValueError(
            f"{name} must be built and have trainable variables; {model.name!r} has none "
            "(build it with an Input layer or call it on a batch first)"
        )
    return model


def check_data(data, network: keras.Model, batch_size: int) -> tf.data.Dataset:
    """``data`` as a batched ``tf.data.Dataset`` of ``(x, y)`` with float inputs that fit ``network``.

    ``data`` is such a dataset already, or a tuple ``(x, y)`` of arrays, batched
    here by ``batch_size``. Unbatched data, integer images and images of
    another shape than ``network``'s input are refused, naming ``data``.
    """
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise TypeError("data must yield (x, y) batches; its elements are not tuples of at least 2")
        if not spec[0].dtype.is_floating:
            raise TypeError(f"data's inputs must be floats (normalised images), got {spec[0].dtype.name}")
        if spec[0].shape.rank is not None and spec[0].shape.rank < 2:
            raise ValueError("data must be batched: its inputs have rank < 2 (use dataset.batch(...))")
    elif isinstance(data, tuple) and len(data) == 2:
        x, y = data
        dtype = tf.as_dtype(x.dtype) if hasattr(x, "dtype") else tf.as_dtype(np.asarray(x).dtype)
        if not dtype.is_floating:
            raise TypeError(f"data's inputs must be floats (normalised images), got {dtype.name}")
        if len(x) != len(y):
            raise ValueError(f"data's x and y must have the same length, got {len(x)} and {len(y)}")
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(integer(batch_size, "batch_size", minimum=1))
    else:
        raise TypeError(f"data must be a tf.data.Dataset or a tuple (x, y), got {type(data).__name__}")
    inputs = getattr(network, "inputs", None)
    x_spec = data.element_spec[0]
    if not inputs or x_spec.shape.rank is None:
        return data
    expected, got = tuple(inputs[0].shape), tuple(x_spec.shape)
    if len(got) == len(expected) - 1 and all(g in (None, e) for g, e in zip(got, expected[1:])):
        raise ValueError(
            f"data must be batched: its inputs have shape {got}, one example of {network.name!r}; "
            "use dataset.batch(...)"
        )
    mismatch = any(g is not None and e is not None and g != e for g, e in zip(got[1:], expected[1:]))
    if len(got) != len(expected) or mismatch:
        raise ValueError(
            f"data's inputs have shape {got[1:]} per example, but {network.name!r} takes inputs of shape {expected[1:]}"
        )
    return data


def check_labels(y, outputs: int | None) -> None:
    """Refuse labels that are not class indices in [0, ``outputs``), naming ``data``."""
    labels = np.asarray(y)
    if labels.dtype.kind not in "iub" and not (labels.dtype.kind == "f" and np.all(labels == np.round(labels))):
        sample = labels[labels != np.round(labels)][:3] if labels.dtype.kind == "f" else labels.ravel()[:3]
        raise ValueError(
            "data's labels must be integer class indices (estimator='empirical' uses them), got "
            f"{labels.dtype} labels such as {sample.tolist()}"
        )
    if labels.size and (labels.min() < 0 or (outputs is not None and labels.max() >= outputs)):
        raise ValueError(
            f"data's labels must be class indices in [0, {outputs}) for the model's {outputs} outputs "
            f"(estimator='empirical' uses them), got labels from {labels.min()} to {labels.max()}"
        )
