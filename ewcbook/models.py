"""The networks of the book, and how the library reads a network's layers.

:func:`mlp` builds the multilayer perceptrons of every chapter.
:func:`dense_stack` reads a network as a stack of Dense layers (with Flatten,
Dropout and activations between them): the one walk over layers behind the
fast diagonal Fisher, the Kronecker factors and the stacked copies.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ewcbook.checks import integer, real
from ewcbook.checks import units as check_units

#: The logit given to an inactive output unit: its softmax probability is 0 in float32.
MASKED_LOGIT = -1e9


def mlp(
    num_classes: int = 5,
    hidden: tuple[int, ...] = (128,),
    *,
    dropout: float = 0.0,
    input_shape: tuple[int, ...] = (28, 28, 1),
    name: str = "mlp",
) -> keras.Sequential:
    """A built ``Sequential`` MLP: Flatten, ReLU Dense layers, logits.

    The seed post's network is ``mlp(5, (128,))`` (784-128-5). Layers get
    fixed names (``hidden_1``..., ``logits``) so that consolidation state
    saved from one model loads into a fresh one built the same way.

    Args:
        num_classes: size of the output layer (an int >= 2).
        hidden: widths of the hidden layers (positive ints).
        dropout: dropout rate after each hidden layer, in [0, 1).
        input_shape: shape of one example.
        name: the model's name.
    """
    integer(num_classes, "num_classes", minimum=2)
    if not isinstance(hidden, (tuple, list)):
        raise TypeError(f"hidden must be a tuple of positive ints, got {type(hidden).__name__}")
    for width in hidden:
        integer(width, "hidden (each width)", minimum=1)
    dropout = real(dropout, "dropout", low=0.0, high=1.0, open_high=True)
    layers = [keras.Input(shape=tuple(input_shape)), keras.layers.Flatten(name="flatten")]
    for i, width in enumerate(hidden, start=1):
        layers.append(keras.layers.Dense(width, activation="relu", name=f"hidden_{i}"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout, name=f"dropout_{i}"))
    layers.append(keras.layers.Dense(num_classes, name="logits"))
    return keras.Sequential(layers, name=name)


def network_of(model: keras.Model) -> keras.Model:
    """The network that maps inputs to logits: ``model.network`` for a model that
    wraps one (:class:`ewcbook.training.ContinualModel`), else ``model`` itself."""
    network = getattr(model, "network", None)
    return network if isinstance(network, keras.Model) else model


def num_outputs(model: keras.Model) -> int | None:
    """The number of logits the network of ``model`` outputs, if it says."""
    outputs = getattr(network_of(model), "outputs", None)
    return int(outputs[0].shape[-1]) if outputs and outputs[0].shape[-1] is not None else None


def units_mask(units: tuple[int, int] | None, outputs: int) -> np.ndarray:
    """A boolean mask over ``outputs`` logits, True on ``units = (start, stop)`` (everywhere for ``None``)."""
    units = check_units(units, "units", outputs)
    mask = np.ones(outputs, bool)
    if units is not None:
        mask[:] = False
        mask[units[0] : units[1]] = True
    return mask


def restrict_logits(logits, mask):
    """``logits`` with the units where ``mask`` (broadcast against them) is False set to
    :data:`MASKED_LOGIT`: a softmax over the active units only, and no gradient to the others."""
    return tf.where(mask, logits, tf.constant(MASKED_LOGIT, logits.dtype))


def dense_stack(model: keras.Model) -> list[tuple[str, keras.layers.Layer]] | None:
    """The network of ``model`` as a list of steps, or ``None`` if it is no Dense stack.

    A Dense stack is a ``Sequential`` (nested ones allowed) of float32 Dense
    layers with Flatten, Dropout and activation layers between them, whose
    trainable variables are exactly the Dense layers' kernels and biases.
    Each step is ``("dense" | "flatten" | "act", layer)``; Dropout is left
    out (it is the identity at inference, where curvature is measured).
    """
    model = network_of(model)
    if not isinstance(model, keras.Sequential):
        return None
    steps = []
    for layer in model.layers:
        if isinstance(layer, keras.Sequential):
            inner = dense_stack(layer)
            if inner is None:
                return None
            steps += inner
        elif isinstance(layer, keras.layers.Dense):
            if layer.non_trainable_variables or not layer.trainable or layer.kernel.dtype != "float32":
                return None
            steps.append(("dense", layer))
        elif isinstance(layer, keras.layers.Flatten):
            steps.append(("flatten", layer))
        elif isinstance(layer, (keras.layers.Activation, keras.layers.ReLU)):
            steps.append(("act", layer))
        elif not isinstance(layer, keras.layers.Dropout):
            return None
    dense_variables = [id(v) for layer in dense_layers(steps) for v in layer_variables(layer)]
    if sorted(dense_variables) != sorted(id(v) for v in model.trainable_variables):
        return None
    return steps


def require_dense_stack(model: keras.Model) -> list[tuple[str, keras.layers.Layer]]:
    """:func:`dense_stack` of ``model``, or a ValueError naming ``model`` if it is no Dense stack."""
    steps = dense_stack(model)
    if steps is None:
        raise ValueError(
            "model must be a Sequential stack of Dense, Flatten, Dropout and activation layers whose "
            f"variables are all trainable; {model.name!r} is not one"
        )
    return steps


def dense_layers(steps) -> list[keras.layers.Dense]:
    """The Dense layers of a :func:`dense_stack`, in order."""
    return [layer for kind, layer in steps if kind == "dense"]


def layer_variables(layer: keras.layers.Dense) -> list:
    """A Dense layer's kernel, and its bias if it has one."""
    return [layer.kernel, layer.bias] if layer.use_bias else [layer.kernel]
