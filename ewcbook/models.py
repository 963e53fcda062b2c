"""The networks of the book: multilayer perceptrons that output logits."""

from __future__ import annotations

import keras


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
        num_classes: size of the output layer (positive int).
        hidden: widths of the hidden layers (positive ints).
        dropout: dropout rate after each hidden layer, in [0, 1).
        input_shape: shape of one example.
        name: the model's name.
    """
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not isinstance(hidden, (tuple, list)) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden
    ):
        raise ValueError(f"hidden must be a tuple of positive ints, got {hidden!r}")
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a float in [0, 1), got {dropout!r}")
    layers = [keras.Input(shape=tuple(input_shape)), keras.layers.Flatten(name="flatten")]
    for i, width in enumerate(hidden, start=1):
        layers.append(keras.layers.Dense(width, activation="relu", name=f"hidden_{i}"))
        if dropout:
            layers.append(keras.layers.Dropout(dropout, name=f"dropout_{i}"))
    layers.append(keras.layers.Dense(num_classes, name="logits"))
    return keras.Sequential(layers, name=name)
