"""The networks of the book, and how the library reads a network's layers.

:func:`mlp` builds the multilayer perceptrons of every chapter.
:func:`layer_steps` reads a network as a stack of steps: Dense, Conv2D and
BatchNormalization layers with parameter-free layers (pooling, Flatten,
Dropout, activations) between them. It is the one walk over layers behind the
fast diagonal Fisher and the Kronecker factors; :func:`dense_stack`, its
Dense-only subset, is what the stacked copies can copy.
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


#: Kinds of steps with parameters, whose per-example gradients the fast algorithms form.
PARAMETRIC = ("dense", "conv", "norm")
#: Activation layers: ``"act"`` steps (the only parameter-free steps a :func:`dense_stack` has besides Flatten).
ACTIVATIONS = (keras.layers.Activation, keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU)


def layer_steps(model: keras.Model) -> list[tuple[str, keras.layers.Layer]]:
    """The network of ``model`` as a list of steps, the walk over layers of the fast curvature algorithms.

    The network must be a ``Sequential`` (nested ones allowed) whose trainable
    variables are exactly those of its float32 Dense, Conv2D (channels last,
    ``groups=1``) and BatchNormalization (last axis) layers. Each step is
    ``(kind, layer)``:

    * ``"dense"``, ``"conv"``, ``"norm"`` (:data:`PARAMETRIC`): a Dense,
      Conv2D or BatchNormalization layer; BatchNormalization is read in
      inference mode, its moving mean and variance fixed;
    * ``"flatten"``, ``"act"``: a Flatten or activation layer;
    * ``"call"``: any other layer without trainable variables (pooling,
      padding, a frozen layer), called as it is.

    Dropout layers are left out: they are the identity at inference, where
    curvature is measured.

    Raises:
        ValueError: if the network is no such stack, naming the layer that is not.
    """
    steps, reason = walk_layers(model)
    if steps is None:
        raise ValueError(
            "model must be a Sequential stack of Dense, Conv2D and BatchNormalization layers (parameter-free "
            "layers such as pooling, Flatten, Dropout and activations between them) whose trainable variables "
            f"are all theirs; {model.name!r} is not one: {reason}"
        )
    return steps


def walk_layers(model: keras.Model) -> tuple[list | None, str | None]:
    """``(steps, None)`` with the steps of :func:`layer_steps`, or ``(None, why the network is no such stack)``:
    a reason that names the layer in the way, if one is."""
    model = network_of(model)
    if not isinstance(model, keras.Sequential):
        return None, f"{model.name!r} is a {type(model).__name__}, not a keras.Sequential"
    steps = []
    for layer in model.layers:
        if isinstance(layer, keras.Sequential) and layer.trainable_variables:
            inner, reason = walk_layers(layer)
            if inner is None:
                return None, reason
            steps += inner
        elif not isinstance(layer, keras.layers.Dropout):
            kind = _kind(layer)
            problem = _problem(kind, layer)
            if problem:
                return None, f"layer {layer.name!r} ({type(layer).__name__}) {problem}"
            steps.append((kind, layer))
    own = [id(v) for kind, layer in steps if kind in PARAMETRIC for v in layer_variables(layer)]
    if sorted(own) != sorted(id(v) for v in model.trainable_variables):
        return None, f"the trainable variables of {model.name!r} are not exactly its layers' own"
    return steps, None


def _kind(layer) -> str | None:
    """The kind of step of a layer (``None``: a layer with trainable variables the walk does not read)."""
    if isinstance(layer, keras.layers.Flatten):
        return "flatten"
    if isinstance(layer, ACTIVATIONS):
        return "act"
    if not layer.trainable_variables:
        return "call"
    for kind, cls in zip(PARAMETRIC, (keras.layers.Dense, keras.layers.Conv2D, keras.layers.BatchNormalization)):
        if isinstance(layer, cls):
            return kind
    return None


def _problem(kind, layer) -> str | None:
    """What keeps a layer out of the walk, if anything."""
    if kind is None:
        return "has trainable variables and is not a Dense, Conv2D or BatchNormalization layer"
    if kind not in PARAMETRIC:
        return None
    if layer.compute_dtype != "float32" or any(v.dtype != "float32" for v in layer.trainable_variables):
        return f"computes in {layer.compute_dtype}, not float32"
    if kind != "norm" and layer.non_trainable_variables:
        return "has non-trainable variables"
    rank = len(layer.input.shape)
    if kind == "dense" and rank != 2:
        return f"takes inputs of rank {rank}; only Dense layers on (batch, features) inputs are read"
    if kind == "conv" and layer.groups != 1:
        return f"has groups={layer.groups}; only groups=1 is read"
    if kind == "conv" and layer.data_format != "channels_last":
        return f"has data_format={layer.data_format!r}; only 'channels_last' is read"
    if kind == "conv" and None in tuple(layer.input.shape[1:]):
        return f"takes inputs of shape {tuple(layer.input.shape[1:])}; only inputs of a known size are read"
    if kind == "norm" and layer.axis % rank != rank - 1:
        return f"normalises axis {layer.axis}; only the last (channel) axis is read"
    return None


def dense_stack(model: keras.Model) -> list[tuple[str, keras.layers.Layer]] | None:
    """The network of ``model`` as a list of steps, or ``None`` if it is no Dense stack.

    A Dense stack is the Dense-only subset of :func:`layer_steps`: a
    ``Sequential`` (nested ones allowed) of float32 Dense layers with
    Flatten, Dropout and activation layers between them, whose trainable
    variables are exactly the Dense layers' kernels and biases. Its steps are
    ``("dense" | "flatten" | "act", layer)``.
    """
    steps, _ = walk_layers(model)
    if steps is None or any(kind not in ("dense", "flatten", "act") for kind, _ in steps):
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


#: Keras' convolution layers, of every rank and flavour.
CONVOLUTIONS = tuple(
    getattr(keras.layers, name)
    for name in ("Conv1D", "Conv2D", "Conv3D", "Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose",
                 "DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D")
)


def all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The layers of the network of ``model`` and, in their place, those of the models nested in it."""
    found = []
    for layer in getattr(network_of(model), "layers", []):
        found += all_layers(layer) if isinstance(layer, keras.Model) else [layer]
    return found


def has_convolutions(model: keras.Model) -> bool:
    """Whether the network of ``model`` (nested models included) has a convolution layer (:data:`CONVOLUTIONS`)."""
    return any(isinstance(layer, CONVOLUTIONS) for layer in all_layers(model))


def parametric_steps(steps) -> list[tuple[str, keras.layers.Layer]]:
    """The steps of :func:`layer_steps` that have parameters (:data:`PARAMETRIC`), in order."""
    return [(kind, layer) for kind, layer in steps if kind in PARAMETRIC]


def layer_variables(layer: keras.layers.Layer) -> list:
    """The trainable variables of a Dense, Conv2D or BatchNormalization layer, in the library's order:
    the kernel and the bias if it has one; BatchNormalization's gamma and beta, those it has."""
    if isinstance(layer, keras.layers.BatchNormalization):
        return [v for v in (layer.gamma, layer.beta) if v is not None]
    return [layer.kernel, layer.bias] if layer.use_bias else [layer.kernel]
