"""The diagonal Fisher information of a classifier's parameters.

For a model p(y | x, θ) and inputs x_1..x_N, the diagonal Fisher is

    F = 1/N Σ_i E_{y ~ q_i} [ (∂ log p(y | x_i, θ) / ∂θ)² ]

computed from *per-example* gradients. The estimators differ in q_i and
are named as in the literature (e.g. van de Ven 2025):

* ``"sampled"``: one y sampled from the model's own prediction p(· | x_i),
  a one-sample Monte Carlo estimate of the true Fisher (``"true"`` is kept
  as an alias of ``"sampled"`` for code written before the rename);
* ``"exact"``: the expectation over every class, weighted by p(· | x_i):
  the true Fisher itself;
* ``"empirical"``: q_i puts all its mass on the data label y_i (not a
  Fisher of the model, a second moment of the data's gradients).

Why per example. With labels drawn from the model, E[g_i] = 0, so the
squared gradient of a batch's *sum* divided by its size n is still an
unbiased estimate of the (sampled) Fisher, only far noisier: it is one
effective sample per batch instead of n. With data labels (the empirical
Fisher) E[g_i] ≠ 0 and the n(n−1) cross terms bias it. Per-example squares
have neither problem, and the fast method below gets them for the price of
a batch gradient.

Methods, all giving the same numbers:

* ``"fast"``: for stacks of Dense layers (Flatten, Dropout and activations
  allowed in between). The gradient of a Dense kernel for example i is the
  outer product a_iᵀ δ_i of the layer's input a_i and the gradient δ_i at its
  output, so Σ_i (a_iᵀ δ_i)² = (a ∘ a)ᵀ (δ ∘ δ): one matmul per layer on
  top of a batch's backward pass.
* ``"vectorized"``: per-example gradients of any model with
  ``tf.GradientTape.jacobian`` (vectorised with pfor).
* ``"loop"``: the definition, one example at a time. Slow; a reference.

``"auto"`` picks ``"fast"`` when the model allows it, else ``"vectorized"``.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

ESTIMATORS = ("sampled", "exact", "empirical")
ALIASES = {"true": "sampled"}  # the book's first name for the sampled estimator
METHODS = ("auto", "fast", "vectorized", "loop")


def diagonal_fisher(
    model: keras.Model,
    data,
    *,
    estimator: str = "sampled",
    num_samples: int | None = None,
    seed: int | None = None,
    method: str = "auto",
    batch_size: int = 1024,
) -> list[tf.Tensor]:
    """Diagonal Fisher information of ``model``'s trainable variables.

    Args:
        model: a built Keras model whose output is logits (no softmax).
        data: a ``tf.data.Dataset`` of ``(x, y)`` batches (extra elements,
            such as sample weights, are ignored), or a tuple ``(x, y)`` of
            arrays with float inputs. The labels are used only by
            ``"empirical"``.
        estimator: ``"sampled"``, ``"exact"`` or ``"empirical"`` (see module);
            ``"true"`` is an alias of ``"sampled"``.
        num_samples: use only the first ``num_samples`` examples of ``data``
            (a positive int); ``None`` uses all.
        seed: int seed of the labels sampled by ``"sampled"``; ``None`` draws
            one from NumPy's global generator (seeded by
            ``keras.utils.set_random_seed``).
        method: ``"auto"``, ``"fast"``, ``"vectorized"`` or ``"loop"``.
        batch_size: batch size used when ``data`` is a tuple of arrays.

    Returns:
        One float32 tensor per ``model.trainable_variables``, of the same
        shape: the mean over examples of squared per-example gradients of
        log p(y | x).

    Raises:
        TypeError, ValueError: for any argument that is not as described,
            naming the argument.

    Example:
        >>> fisher = diagonal_fisher(model, task_a.dataset("train", shuffle=False))
        >>> [f.shape for f in fisher] == [v.shape for v in model.trainable_variables]
        True
    """
    _check_model(model)
    estimator = ALIASES.get(estimator, estimator)
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS} (or its alias 'true'), got {estimator!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    dataset, seed = checked_data(model, data, num_samples, seed, batch_size)
    num_outputs = _num_outputs(model)

    steps = _dense_steps(model)
    if method == "fast" and steps is None:
        raise ValueError(
            "method='fast' needs a Sequential stack of Dense, Flatten, Dropout and "
            f"activation layers whose variables are all trainable; {model.name!r} is not one. "
            "Use method='auto' or 'vectorized'."
        )
    if method == "auto":
        method = "fast" if steps is not None else "vectorized"
    variables = model.trainable_variables
    x_spec, y_spec = dataset.element_spec[0], dataset.element_spec[1]
    signature = (tuple(x_spec.shape[1:]), x_spec.dtype, y_spec.dtype)
    if method == "loop":
        batch_fn = lambda x, y, s: _loop_batch(model, x, y, s, estimator)  # noqa: E731
    else:
        batch_fn = _compiled(model, steps if method == "fast" else None, estimator, signature)
    order = (
        [v for kind, layer in steps if kind == "dense" for v in _dense_variables(layer)]
        if method == "fast"
        else variables
    )

    totals = [tf.zeros(v.shape, tf.float32) for v in order]
    count = 0
    for step, batch in enumerate(dataset):
        x, y = batch[0], batch[1]
        if estimator == "empirical":
            _check_labels(y, num_outputs)
        if num_samples is not None:
            x, y = x[: num_samples - count], y[: num_samples - count]
        n = int(tf.shape(x)[0])
        if n == 0:
            break
        sums = batch_fn(tf.convert_to_tensor(x), tf.convert_to_tensor(y), tf.constant([seed, step]))
        totals = [t + s for t, s in zip(totals, sums)]
        count += n
        if num_samples is not None and count >= num_samples:
            break
    if count == 0:
        raise ValueError("data must contain at least one example, got an empty dataset")
    by_id = {id(v): t / count for v, t in zip(order, totals)}
    return [by_id[id(v)] for v in variables]


_COMPILED = weakref.WeakKeyDictionary()  # model -> {(method, estimator, input signature): tf.function}


def _compiled(model, steps, estimator, signature):
    """The traced per-batch function, made once per model, method, estimator and input
    signature, so repeated calls (a loop over sample sizes, say) do not trace again."""
    cache = _COMPILED.setdefault(model, {})
    layers = None if steps is None else tuple(id(layer) for _, layer in steps)
    key = (layers, estimator, signature)
    if key not in cache:
        shape, x_dtype, y_dtype = signature
        spec = [tf.TensorSpec([None, *shape], x_dtype), tf.TensorSpec([None], y_dtype), tf.TensorSpec([2], tf.int32)]
        if steps is not None:
            fn = lambda x, y, s: _fast_batch(steps, x, y, s, estimator)  # noqa: E731
        else:
            ref = weakref.ref(model)  # the cache must not keep the model alive
            fn = lambda x, y, s: _vectorized_batch(ref(), x, y, s, estimator)  # noqa: E731
        cache[key] = tf.function(fn, input_signature=spec)
    return cache[key]


def _check_model(model) -> None:
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if not model.built or not model.trainable_variables:
        raise ValueError(
            f"model must be built and have trainable variables; {model.name!r} has none "
            "(build it with an Input layer or call it on a batch first)"
        )
    last = model.layers[-1] if model.layers else None
    if getattr(getattr(last, "activation", None), "__name__", "") == "softmax":
        raise ValueError(
            f"model must output logits, but the last layer of {model.name!r} applies softmax; "
            "use activation=None and from_logits=True in the loss"
        )


def checked_data(model, data, num_samples, seed, batch_size):
    """``data`` as a batched dataset that fits ``model``, and the seed to sample labels with.

    Shared by every estimator of curvature (this module, :mod:`ewcbook.kfac`);
    raises a ValueError or TypeError naming the argument that is not as expected.
    """
    if num_samples is not None and (
        not isinstance(num_samples, (int, np.integer)) or isinstance(num_samples, bool) or num_samples <= 0
    ):
        raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}")
    if seed is None:
        seed = int(np.random.randint(2**31 - 1))
    elif not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    dataset = _as_dataset(data, batch_size)
    _check_inputs_fit(model, dataset.element_spec[0])
    return dataset, seed


def _model_input_shape(model):
    from ewcbook.training import ContinualModel

    if isinstance(model, ContinualModel):
        model = model.network
    inputs = getattr(model, "inputs", None)
    return tuple(inputs[0].shape) if inputs else None


def _check_inputs_fit(model, x_spec) -> None:
    """Refuse unbatched data or images of another shape than the model's input, naming ``data``."""
    expected = _model_input_shape(model)
    got = tuple(x_spec.shape)
    if expected is None or x_spec.shape.rank is None:
        return
    if len(got) == len(expected) - 1 and all(g in (None, e) for g, e in zip(got, expected[1:])):
        raise ValueError(
            f"data must be batched: its inputs have shape {got}, one example of {model.name!r}; "
            "use dataset.batch(...)"
        )
    mismatch = any(g is not None and e is not None and g != e for g, e in zip(got[1:], expected[1:]))
    if len(got) != len(expected) or mismatch:
        raise ValueError(
            f"data's inputs have shape {got[1:]} per example, but {model.name!r} takes inputs of shape {expected[1:]}"
        )


def _num_outputs(model) -> int | None:
    from ewcbook.training import ContinualModel

    network = model.network if isinstance(model, ContinualModel) else model
    outputs = getattr(network, "outputs", None)
    return int(outputs[0].shape[-1]) if outputs and outputs[0].shape[-1] is not None else None


def _check_labels(y, num_outputs) -> None:
    labels = np.asarray(y)
    if labels.size and (labels.min() < 0 or (num_outputs is not None and labels.max() >= num_outputs)):
        raise ValueError(
            f"data's labels must be class indices in [0, {num_outputs}) for the model's {num_outputs} outputs "
            f"(estimator='empirical' uses them), got labels from {labels.min()} to {labels.max()}"
        )


def _as_dataset(data, batch_size: int) -> tf.data.Dataset:
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        if not isinstance(spec, tuple) or len(spec) < 2:
            raise TypeError("data must yield (x, y) batches; its elements are not tuples of at least 2")
        if not spec[0].dtype.is_floating:
            raise TypeError(f"data's inputs must be floats (normalised images), got {spec[0].dtype.name}")
        if spec[0].shape.rank is not None and spec[0].shape.rank < 2:
            raise ValueError("data must be batched: its inputs have rank < 2 (use dataset.batch(...))")
        return data
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
        dtype = tf.as_dtype(x.dtype) if hasattr(x, "dtype") else tf.as_dtype(np.asarray(x).dtype)
        if not dtype.is_floating:
            raise TypeError(f"data's inputs must be floats (normalised images), got {dtype.name}")
        if len(x) != len(y):
            raise ValueError(f"data's x and y must have the same length, got {len(x)} and {len(y)}")
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)
    raise TypeError(f"data must be a tf.data.Dataset or a tuple (x, y), got {type(data).__name__}")


# --- the fast path for Dense stacks -------------------------------------------------


def _dense_steps(model: keras.Model):
    """The model as a list of ("flatten" | "act" | "dense", layer), or None."""
    from ewcbook.training import ContinualModel

    if isinstance(model, ContinualModel):
        model = model.network
    if not isinstance(model, keras.Sequential):
        return None
    steps = []
    for layer in model.layers:
        if isinstance(layer, keras.Sequential):
            inner = _dense_steps(layer)
            if inner is None:
                return None
            steps += inner
        elif isinstance(layer, keras.layers.Dense):
            if layer.non_trainable_variables or not layer.trainable or layer.kernel.dtype != "float32":
                return None
            steps.append(("dense", layer))
        elif isinstance(layer, keras.layers.Flatten):
            steps.append(("flatten", layer))
        elif isinstance(layer, keras.layers.Dropout):
            continue  # the identity at inference, where the Fisher is taken
        elif isinstance(layer, (keras.layers.Activation, keras.layers.ReLU)):
            steps.append(("act", layer))
        else:
            return None
    dense_vars = [id(v) for kind, layer in steps if kind == "dense" for v in _dense_variables(layer)]
    if sorted(dense_vars) != sorted(id(v) for v in model.trainable_variables):
        return None
    return steps


def _dense_variables(layer):
    return [layer.kernel, layer.bias] if layer.use_bias else [layer.kernel]


def _labels(logits, y, seed, estimator):
    """The (one-hot label, per-example weight or None) pairs an estimator averages over."""
    num_classes = logits.shape[-1]
    if estimator == "exact":
        probs = tf.nn.softmax(logits)
        return [(tf.one_hot(tf.fill([tf.shape(logits)[0]], c), num_classes), probs[:, c]) for c in range(num_classes)]
    if estimator == "sampled":
        y = tf.random.stateless_categorical(logits, 1, seed=seed)[:, 0]
    else:
        tf.debugging.assert_less(tf.cast(y, tf.int64), tf.cast(num_classes, tf.int64), "labels out of range")
    return [(tf.one_hot(tf.cast(y, tf.int32), num_classes), None)]


def dense_forward(steps, x, tape):
    """The forward pass of a Dense stack, keeping what per-example gradients are made of.

    Returns ``(logits, inputs, outputs)``: each Dense layer's input a and output
    z (watched by ``tape``), so that one backward pass from the logits gives the
    gradient δ at every output, and a layer's per-example kernel gradient is aᵀδ.
    """
    a, inputs, outputs = x, [], []
    for kind, layer in steps:
        if kind == "flatten":
            a = tf.reshape(a, [tf.shape(a)[0], -1])
        elif kind == "act":
            a = layer(a)
        else:
            inputs.append(a)
            z = tf.matmul(a, layer.kernel) + (layer.bias if layer.use_bias else 0.0)
            tape.watch(z)
            outputs.append(z)
            a = layer.activation(z)
    return a, inputs, outputs


def _fast_batch(steps, x, y, seed, estimator):
    with tf.GradientTape(persistent=True) as tape:
        logits, inputs, outputs = dense_forward(steps, x, tape)
    probs = tf.nn.softmax(logits)
    sums = []
    for onehot, w in _labels(logits, y, seed, estimator):
        # d log p(y|x) / d logits = onehot(y) - p, pushed back to every Dense output
        deltas = tape.gradient(logits, outputs, output_gradients=onehot - probs)
        part = []
        for (_, layer), a_in, d in zip([s for s in steps if s[0] == "dense"], inputs, deltas):
            a2, d2 = tf.square(a_in), tf.square(d)
            if w is not None:
                d2 = d2 * w[:, None]
            part.append(tf.matmul(a2, d2, transpose_a=True))
            if layer.use_bias:
                part.append(tf.reduce_sum(d2, axis=0))
        sums = part if not sums else [s + p for s, p in zip(sums, part)]
    return sums


# --- the general methods -------------------------------------------------------------


def _vectorized_batch(model, x, y, seed, estimator):
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        log_probs = tf.nn.log_softmax(model(x, training=False))
        labels = _labels(tf.stop_gradient(log_probs), y, seed, estimator)
        targets = [tf.reduce_sum(onehot * log_probs, axis=-1) for onehot, _ in labels]
    sums = [tf.zeros(v.shape) for v in variables]
    for target, (_, w) in zip(targets, labels):
        jacobians = tape.jacobian(target, variables, experimental_use_pfor=True)  # (batch, *shape)
        for k, jac in enumerate(jacobians):
            sq = tf.square(jac)
            if w is not None:
                sq = sq * tf.reshape(w, [-1] + [1] * (len(sq.shape) - 1))
            sums[k] += tf.reduce_sum(sq, axis=0)
    return sums


def _loop_batch(model, x, y, seed, estimator):
    variables = model.trainable_variables
    logits = model(x, training=False)
    labels = _labels(logits, y, seed, estimator)
    sums = [np.zeros(v.shape, np.float64) for v in variables]
    for i in range(int(tf.shape(x)[0])):
        for onehot, w in labels:
            with tf.GradientTape() as tape:
                log_p = tf.reduce_sum(onehot[i] * tf.nn.log_softmax(model(x[i : i + 1], training=False)[0]))
            weight = 1.0 if w is None else float(w[i])
            for k, grad in enumerate(tape.gradient(log_p, variables)):
                sums[k] += weight * np.square(grad.numpy().astype(np.float64))
    return [tf.constant(s, tf.float32) for s in sums]
