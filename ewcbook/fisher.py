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
have neither problem, and the fast algorithm below gets them for the price
of a batch gradient.

Algorithms, all giving the same numbers:

* ``"fast"``: for stacks of Dense layers (:func:`ewcbook.models.dense_stack`).
  The gradient of a Dense kernel for example i is the outer product a_iᵀ δ_i
  of the layer's input a_i and the gradient δ_i at its output, so
  Σ_i (a_iᵀ δ_i)² = (a ∘ a)ᵀ (δ ∘ δ): one matmul per layer on top of a
  batch's backward pass.
* ``"vectorized"``: per-example gradients of any model with
  ``tf.GradientTape.jacobian`` (vectorised with pfor).
* ``"loop"``: the definition, one example at a time. Slow; a reference.

``"auto"`` picks ``"fast"`` when the model allows it, else ``"vectorized"``.

The building blocks below (:func:`checked_data`, :func:`estimator_targets`,
:func:`dense_forward`, :func:`traced`, :func:`accumulate`) are shared with the
Kronecker factors of :mod:`ewcbook.kfac`.
"""

from __future__ import annotations

import weakref

import keras
import numpy as np
import tensorflow as tf

from ewcbook.checks import check_data, check_labels, check_model, integer, one_of, optional_integer
from ewcbook.models import (
    dense_layers,
    dense_stack,
    layer_variables,
    network_of,
    num_outputs,
    restrict_logits,
    units_mask,
)

ESTIMATORS = ("sampled", "exact", "empirical")
ALIASES = {"true": "sampled"}  # the book's first name for the sampled estimator
ALGORITHMS = ("auto", "fast", "vectorized", "loop")


def diagonal_fisher(
    model: keras.Model,
    data,
    *,
    estimator: str = "sampled",
    num_samples: int | None = None,
    seed: int | None = None,
    algorithm: str = "auto",
    batch_size: int = 1024,
    units: tuple[int, int] | None = None,
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
        algorithm: ``"auto"``, ``"fast"``, ``"vectorized"`` or ``"loop"``.
        batch_size: batch size used when ``data`` is a tuple of arrays.
        units: ``(start, stop)``: the model's distribution is the softmax over
            logits ``start:stop`` only, as when it trains on a task with those
            :attr:`~ewcbook.data.Task.units` (a task's own head); ``None``: all.

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
    check_logits_model(model)
    estimator = check_estimator(estimator)
    one_of(algorithm, "algorithm", ALGORITHMS)
    dataset, seed = checked_data(model, data, num_samples, seed, batch_size)
    steps = dense_stack(model)
    outputs = num_outputs(model)
    mask = None if units is None else tuple(units_mask(units, outputs).tolist())
    if algorithm == "fast" and steps is None:
        raise ValueError(
            "algorithm='fast' needs a Sequential stack of Dense, Flatten, Dropout and "
            f"activation layers whose variables are all trainable; {model.name!r} is not one. "
            "Use algorithm='auto' or 'vectorized'."
        )
    if algorithm == "auto":
        algorithm = "fast" if steps is not None else "vectorized"
    variables, order = model.trainable_variables, model.trainable_variables
    if algorithm == "fast":
        batch_fn = traced(model, ("fast", estimator, mask),
                          lambda x, y, s: fast_batch(steps, x, y, s, estimator, mask), dataset)
        order = [v for layer in dense_layers(steps) for v in layer_variables(layer)]
    elif algorithm == "vectorized":
        ref = weakref.ref(model)  # the cache must not keep the model alive
        batch_fn = traced(model, ("vectorized", estimator, mask),
                          lambda x, y, s: _vectorized_batch(ref(), x, y, s, estimator, mask), dataset)
    else:
        batch_fn = lambda x, y, s: _loop_batch(model, x, y, s, estimator, mask)  # noqa: E731
    check = (lambda y: check_labels(y, outputs)) if estimator == "empirical" else None
    totals, count = accumulate(dataset, batch_fn, seed=seed, num_samples=num_samples, check=check)
    by_id = {id(v): t / count for v, t in zip(order, totals)}
    return [by_id[id(v)] for v in variables]


# --- checks shared by every curvature estimator ----------------------------------------


def check_estimator(estimator) -> str:
    """The estimator's name (``"true"`` read as ``"sampled"``), if it is one of :data:`ESTIMATORS`."""
    if isinstance(estimator, str):
        estimator = ALIASES.get(estimator, estimator)
    return one_of(estimator, "estimator", ESTIMATORS)


def check_logits_model(model) -> keras.Model:
    """``model`` if it is built, has trainable variables and does not end in a softmax."""
    check_model(model)
    last = model.layers[-1] if model.layers else None
    if getattr(getattr(last, "activation", None), "__name__", "") == "softmax":
        raise ValueError(
            f"model must output logits, but the last layer of {model.name!r} applies softmax; "
            "use activation=None and from_logits=True in the loss"
        )
    return model


def checked_data(model, data, num_samples, seed, batch_size):
    """``data`` as a batched dataset that fits ``model`` (:func:`ewcbook.checks.check_data`),
    and the seed to sample labels with (drawn from NumPy's generator when ``None``)."""
    optional_integer(num_samples, "num_samples", minimum=1)
    seed = int(np.random.randint(2**31 - 1)) if seed is None else integer(seed, "seed")
    return check_data(data, network_of(model), batch_size), seed


# --- the loop over batches, and its traced functions ---------------------------------------


_TRACED = weakref.WeakKeyDictionary()  # model -> {(kind, input signature): tf.function}


def traced(model, kind, fn, dataset: tf.data.Dataset):
    """``fn(x, y, seed)`` as a ``tf.function``, traced once per model, ``kind`` and input signature
    (repeated calls, a loop over sample sizes say, do not trace again; the cache keeps no model alive)."""
    x_spec, y_spec = dataset.element_spec[0], dataset.element_spec[1]
    shape = tuple(x_spec.shape[1:])
    cache = _TRACED.setdefault(model, {})
    key = (kind, shape, x_spec.dtype, y_spec.dtype)
    if key not in cache:
        spec = [tf.TensorSpec([None, *shape], x_spec.dtype), tf.TensorSpec([None], y_spec.dtype),
                tf.TensorSpec([2], tf.int32)]
        cache[key] = tf.function(fn, input_signature=spec)
    return cache[key]


def accumulate(dataset: tf.data.Dataset, batch_fn, *, seed: int, num_samples: int | None = None, check=None):
    """Sum ``batch_fn(x, y, [seed, step])`` over the batches of ``dataset``.

    Stops after ``num_samples`` examples (the last batch cut to fit);
    ``check(y)``, if given, sees every batch's labels first.

    Returns:
        ``(totals, count)``: one summed tensor per output of ``batch_fn``, and
        the number of examples.
    """
    totals, count = None, 0
    for step, batch in enumerate(dataset):
        x, y = batch[0], batch[1]
        if check is not None:
            check(y)
        if num_samples is not None:
            x, y = x[: num_samples - count], y[: num_samples - count]
        n = int(tf.shape(x)[0])
        if n == 0:
            break
        sums = batch_fn(tf.convert_to_tensor(x), tf.convert_to_tensor(y), tf.constant([seed, step]))
        totals = list(sums) if totals is None else [t + s for t, s in zip(totals, sums)]
        count += n
        if num_samples is not None and count >= num_samples:
            break
    if count == 0:
        raise ValueError("data must contain at least one example, got an empty dataset")
    return totals, count


# --- the fast algorithm for Dense stacks ---------------------------------------------------


def estimator_targets(logits, y, seed, estimator):
    """The (one-hot label, per-example weight or ``None``) pairs an estimator averages over."""
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


def fast_batch(steps, x, y, seed, estimator, mask=None):
    """The fast algorithm on one batch: Σ_i g_i² for every variable of a Dense stack, in
    :func:`dense_layers` order, from one forward and one backward pass per label
    (the softmax over the units where ``mask`` is True, if given)."""
    with tf.GradientTape(persistent=True) as tape:
        logits, inputs, outputs = dense_forward(steps, x, tape)
        if mask is not None:
            logits = restrict_logits(logits, tf.constant(mask))
    probs = tf.nn.softmax(logits)
    sums = []
    for onehot, w in estimator_targets(logits, y, seed, estimator):
        # d log p(y|x) / d logits = onehot(y) - p, pushed back to every Dense output
        deltas = tape.gradient(logits, outputs, output_gradients=onehot - probs)
        part = []
        for layer, a_in, d in zip(dense_layers(steps), inputs, deltas):
            a2, d2 = tf.square(a_in), tf.square(d)
            if w is not None:
                d2 = d2 * w[:, None]
            part.append(tf.matmul(a2, d2, transpose_a=True))
            if layer.use_bias:
                part.append(tf.reduce_sum(d2, axis=0))
        sums = part if not sums else [s + p for s, p in zip(sums, part)]
    return sums


# --- the general algorithms ----------------------------------------------------------------


def _restricted(logits, mask):
    return logits if mask is None else restrict_logits(logits, tf.constant(mask))


def _vectorized_batch(model, x, y, seed, estimator, mask=None):
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        log_probs = tf.nn.log_softmax(_restricted(model(x, training=False), mask))
        targets = estimator_targets(tf.stop_gradient(log_probs), y, seed, estimator)
        picked = [tf.reduce_sum(onehot * log_probs, axis=-1) for onehot, _ in targets]
    sums = [tf.zeros(v.shape) for v in variables]
    for target, (_, w) in zip(picked, targets):
        jacobians = tape.jacobian(target, variables, experimental_use_pfor=True)  # (batch, *shape)
        for k, jac in enumerate(jacobians):
            sq = tf.square(jac)
            if w is not None:
                sq = sq * tf.reshape(w, [-1] + [1] * (len(sq.shape) - 1))
            sums[k] += tf.reduce_sum(sq, axis=0)
    return sums


def _loop_batch(model, x, y, seed, estimator, mask=None):
    variables = model.trainable_variables
    logits = _restricted(model(x, training=False), mask)
    targets = estimator_targets(logits, y, seed, estimator)
    sums = [np.zeros(v.shape, np.float64) for v in variables]
    for i in range(int(tf.shape(x)[0])):
        for onehot, w in targets:
            with tf.GradientTape() as tape:
                logits_i = _restricted(model(x[i : i + 1], training=False), mask)[0]
                log_p = tf.reduce_sum(onehot[i] * tf.nn.log_softmax(logits_i))
            weight = 1.0 if w is None else float(w[i])
            for k, grad in enumerate(tape.gradient(log_p, variables)):
                sums[k] += weight * np.square(grad.numpy().astype(np.float64))
    return [tf.constant(s, tf.float32) for s in sums]
