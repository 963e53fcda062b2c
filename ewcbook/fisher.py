"""The diagonal Fisher information of a classifier's parameters.

For a model p(y | x, θ) and inputs x_1..x_N, the diagonal Fisher is::

    F = 1/N Σ_i E_{y ~ q_i} [ (∂ log p(y | x_i, θ) / ∂θ)² ]

computed from *per-example* gradients. The estimators differ in q_i and
are named as in the literature (e.g. van de Ven 2025):

* ``"sampled"``: one y sampled from the model's own prediction p(· | x_i),
  a one-sample Monte Carlo estimate of the true Fisher;
* ``"exact"``: the expectation over every class, weighted by p(· | x_i):
  the true Fisher itself;
* ``"empirical"``: q_i puts all its mass on the data label y_i (not a
  Fisher of the model, a second moment of the data's gradients).

Why per example. With labels drawn from the model, E[g_i] = 0, so the
squared gradient of a batch's *sum* divided by its size n is still an
unbiased estimate of the (sampled) Fisher; chapter 4 measures its variance
across batches of 128 at 1.009 times that of the per-example estimate at
the median weight (1.63 times summed over the weights). With data labels
(the empirical Fisher) E[g_i] ≠ 0, and the n(n−1) cross terms add a bias of
(n−1)·ḡ² per weight, ḡ its mean gradient over the training set (the
gradient of the training loss, up to sign), which vanishes only at a
stationary point: what the batch's square gets wrong is a bias, not noise.
Per-example squares have no cross terms, and the fast algorithm below gets
them for the price of a batch gradient.

Algorithms, all giving the same numbers:

* ``"fast"``: for stacks of Dense, Conv2D and BatchNormalization layers
  (:func:`ewcbook.models.layer_steps`). One batch's backward pass gives the
  gradient δ_i at every layer's output for every example i, and each
  layer's per-example gradient is a small function of δ_i:

  - Dense: the kernel's gradient is the outer product a_iᵀ δ_i of the
    layer's input a_i and δ_i, so Σ_i (a_iᵀ δ_i)² = (a ∘ a)ᵀ (δ ∘ δ), one
    matmul per layer; the bias's is δ_i.
  - Conv2D: the kernel's gradient is Σ_p patch_i(p)ᵀ δ_i(p) over the output
    positions p, patch_i(p) the input patch the kernel sees at p
    (:func:`conv_patches`): formed one kernel offset at a time, a batched
    matmul of the input window of that offset (:func:`conv_windows`) and δ_i,
    squared and summed over examples; the bias's is Σ_p δ_i(p).
  - BatchNormalization (inference mode, moving statistics fixed): gamma's
    gradient is Σ_p δ_i(p) x̂_i(p), x̂ the normalised input; beta's Σ_p δ_i(p).

* ``"vectorized"``: per-example gradients of any model with
  ``tf.GradientTape.jacobian`` (vectorised with pfor; :func:`per_example_jacobian`).
* ``"loop"``: the definition, one example at a time. Slow; a reference.

``"auto"`` picks ``"fast"`` when the model allows it, else ``"vectorized"``,
with a warning (once per model) naming the layer that kept it off the fast path.

The building blocks below (:func:`checked_data`, :func:`estimator_targets`,
:func:`layer_forward`, :func:`traced`, :func:`accumulate`) are shared with the
Kronecker factors of :mod:`ewcbook.kfac`.
"""

from __future__ import annotations

import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf

from ewcbook.checks import check_data, check_labels, check_model, integer, one_of, optional_integer
from ewcbook.models import (
    PARAMETRIC,
    all_layers,
    has_convolutions,
    layer_variables,
    network_of,
    num_outputs,
    parametric_steps,
    restrict_logits,
    units_mask,
    walk_layers,
)

ESTIMATORS = ("sampled", "exact", "empirical")
ALGORITHMS = ("auto", "fast", "vectorized", "loop")


def diagonal_fisher(
    model: keras.Model,
    data,
    *,
    estimator: str = "sampled",
    num_samples: int | None = None,
    seed: int | None = None,
    algorithm: str = "auto",
    batch_size: int | None = None,
    units: tuple[int, int] | None = None,
) -> list[tf.Tensor]:
    """Diagonal Fisher information of ``model``'s trainable variables.

    Args:
        model: a built Keras model whose output is logits (no softmax).
        data: a ``tf.data.Dataset`` of ``(x, y)`` batches (extra elements,
            such as sample weights, are ignored), or a tuple ``(x, y)`` of
            arrays with float inputs. The labels are used only by
            ``"empirical"``.
        estimator: ``"sampled"``, ``"exact"`` or ``"empirical"`` (see module).
        num_samples: use only the first ``num_samples`` examples of ``data``
            (a positive int); ``None`` uses all.
        seed: int seed of the labels sampled by ``"sampled"``; ``None`` draws
            one from NumPy's global generator (seeded by
            ``keras.utils.set_random_seed``).
        algorithm: ``"auto"``, ``"fast"``, ``"vectorized"`` or ``"loop"``.
        batch_size: batch size used when ``data`` is a tuple of arrays;
            ``None``: :func:`default_batch_size` (1024, but smaller for a
            network with convolutions).
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
    steps, obstacle = walk_layers(model)
    if algorithm == "fast" and steps is None:
        raise ValueError(
            "algorithm='fast' needs a Sequential stack of Dense, Conv2D and BatchNormalization layers "
            f"(ewcbook.models.layer_steps); {model.name!r} is not one: {obstacle}. "
            "Use algorithm='auto' or 'vectorized'."
        )
    fallback = algorithm == "auto" and steps is None
    if algorithm == "auto":
        algorithm = "fast" if steps is not None else "vectorized"
    batch_size = default_batch_size(model, algorithm) if batch_size is None else batch_size
    dataset, seed = checked_data(model, data, num_samples, seed, batch_size)
    if fallback:
        _warn_slow(model, obstacle)
    outputs = num_outputs(model)
    mask = None if units is None else tuple(units_mask(units, outputs).tolist())
    variables, order = model.trainable_variables, model.trainable_variables
    if algorithm == "fast":
        batch_fn = traced(model, ("fast", estimator, mask),
                          lambda x, y, s: fast_batch(steps, x, y, s, estimator, mask), dataset)
        order = [v for _, layer in parametric_steps(steps) for v in layer_variables(layer)]
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


def default_batch_size(model: keras.Model, algorithm: str) -> int:
    """The batch size for data given as arrays: 1024, but for a network with
    convolutions (:func:`ewcbook.models.has_convolutions`) 256 with
    ``"fast"`` and 32 with the other algorithms.

    A Conv2D layer's per-example gradients (a kh·kw·c_in × c_out matrix per
    image) and the input windows they are made of take a quarter of the
    memory in batches of 256, and the CNN of ``benchmarks/fisher.py`` is as
    fast or faster in them as in batches of 1024 (up to twice on a busy CPU).
    The per-example Jacobians of ``"vectorized"`` cost time and memory in the
    square of the batch size (every example's backward pass runs over the
    whole batch), which a CNN's feature maps make gigabytes in batches of 256.
    """
    if not has_convolutions(model):
        return 1024
    return 256 if algorithm == "fast" else 32


_WARNED = weakref.WeakSet()  # the models already told that they take the slow path


def _warn_slow(model, obstacle: str) -> None:
    """Warn, once per model, that ``algorithm="auto"`` falls back to per-example Jacobians, and why."""
    if model not in _WARNED:
        _WARNED.add(model)
        warnings.warn(
            f"diagonal_fisher falls back to the slow 'vectorized' algorithm (per-example Jacobians, tens of times "
            f"slower than 'fast') for {model.name!r}: {obstacle}",
            stacklevel=3,
        )


# --- checks shared by every curvature estimator ----------------------------------------


def check_estimator(estimator) -> str:
    """The estimator's name, if it is one of :data:`ESTIMATORS`. ``"true"``, once an alias of
    ``"sampled"``, is refused: the true Fisher of the literature is ``"exact"``'s expectation."""
    if isinstance(estimator, str) and estimator == "true":
        raise ValueError("estimator 'true' was an alias of 'sampled' (a one-sample Monte Carlo estimate); the true "
                         "Fisher in the literature is the exact expectation: use 'sampled' or 'exact'")
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
    and the seed to sample labels with (drawn from NumPy's generator when ``None``: the first
    replica's draw under a ``tf.distribute`` strategy, so that every worker samples the same labels)."""
    optional_integer(num_samples, "num_samples", minimum=1)
    seed = _first_replicas(int(np.random.randint(2**31 - 1))) if seed is None else integer(seed, "seed")
    return check_data(data, network_of(model), batch_size), seed


def _strategy_of_many():
    """The current ``tf.distribute`` strategy if it has more than one replica and this is its
    cross-replica context (where a Fisher is asked for, not inside a training step), else ``None``."""
    strategy = tf.distribute.get_strategy()
    return strategy if strategy.num_replicas_in_sync > 1 and tf.distribute.in_cross_replica_context() else None


def _first_replicas(value: int) -> int:
    """``value`` as the first replica has it (the workers of a multi-worker strategy drew their own)."""
    strategy = _strategy_of_many()
    if strategy is None:
        return value
    parts = strategy.experimental_distribute_values_from_function(
        lambda context: tf.constant(value if context.replica_id_in_sync_group == 0 else 0, tf.int64))
    return int(strategy.reduce(tf.distribute.ReduceOp.SUM, parts, axis=None))


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

    Under ``tf.distribute``. Called within the scope of a strategy with more
    than one replica (``MirroredStrategy`` on several devices,
    ``MultiWorkerMirroredStrategy``), a traced ``batch_fn`` runs on every
    replica at once: the batches are dealt out *whole*, replica r of R taking
    batches r, R + r, 2R + r, ... each with its own seed ``[seed, step]``; every
    replica sums its own, and ``strategy.reduce(SUM)`` adds the replicas' sums
    (and every worker's: each gets the whole total). Whole batches, not each
    batch cut into R parts, because the sampled estimator draws its labels
    with ``tf.random.stateless_categorical`` over a whole batch, and a draw over
    part of a batch is not that part of the draw over all of it: dealt whole,
    every batch gives exactly what it gives on one device, so the total is the
    one device's to float rounding (the order of the sum), for every estimator.
    A replica holds one batch at a time, as one device does. Every worker must
    read the same batches (no unseeded shuffle). A ``batch_fn`` that is not a
    ``tf.function`` (the ``"loop"`` reference) runs on the replicas eagerly.

    Returns:
        ``(totals, count)``: one summed tensor per output of ``batch_fn``, and
        the number of examples.
    """
    batches = _batches(dataset, num_samples, check)
    strategy = _strategy_of_many()
    if strategy is not None:
        totals, count = _on_replicas(strategy, batches, batch_fn, seed)
    else:
        totals, count = None, 0
        for step, x, y in batches:
            sums = batch_fn(x, y, tf.constant([seed, step]))
            totals = list(sums) if totals is None else [t + s for t, s in zip(totals, sums)]
            count += int(tf.shape(x)[0])
    if count == 0:
        raise ValueError("data must contain at least one example, got an empty dataset")
    return totals, count


def _batches(dataset, num_samples, check):
    """``(step, x, y)`` of each batch :func:`accumulate` sums: ``num_samples`` examples at most."""
    count = 0
    for step, batch in enumerate(dataset):
        x, y = batch[0], batch[1]
        if check is not None:
            check(y)
        if num_samples is not None:
            x, y = x[: num_samples - count], y[: num_samples - count]
        n = int(tf.shape(x)[0])
        if n == 0:
            return
        yield step, tf.convert_to_tensor(x), tf.convert_to_tensor(y)
        count += n
        if num_samples is not None and count >= num_samples:
            return


def _on_replicas(strategy, batches, batch_fn, seed):
    """:func:`accumulate`'s sum with the batches dealt out whole to ``strategy``'s replicas, R a round."""
    run, totals, count = _replica_runner(strategy, batch_fn), None, 0
    for round_ in _rounds(batches, strategy.num_replicas_in_sync):
        count += sum(int(tf.shape(x)[0]) for _, x, _ in round_)
        sums = [strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in run(*_dealt(strategy, round_, seed))]
        totals = sums if totals is None else [t + s for t, s in zip(totals, sums)]
    return totals, count


def _rounds(batches, size: int):
    """``batches`` in lists of ``size`` (the last one shorter, if they do not divide evenly)."""
    round_ = []
    for batch in batches:
        round_.append(batch)
        if len(round_) == size:
            yield round_
            round_ = []
    if round_:
        yield round_


def _dealt(strategy, round_, seed):
    """The distributed ``(x, y, seed, busy)`` of one round: batch r of ``round_`` on replica r (a
    replica without a batch, in the last round, repeats one and adds nothing)."""

    def batch_of(context):
        r = context.replica_id_in_sync_group
        step, x, y = round_[min(r, len(round_) - 1)]
        return x, y, tf.constant([seed, step]), tf.constant(r < len(round_))

    return strategy.experimental_distribute_values_from_function(batch_of)


_RUNNERS = weakref.WeakKeyDictionary()  # batch_fn -> (strategy, batch_fn run on each of its replicas)


def _replica_runner(strategy, batch_fn):
    """``batch_fn`` on every replica of ``strategy`` at once, a ``tf.function`` if ``batch_fn`` is one
    (made once per batch function and strategy; it holds no strong reference to ``batch_fn``)."""
    runner = _RUNNERS.get(batch_fn)
    if runner is None or runner[0] is not strategy:
        ref = weakref.ref(batch_fn)

        def on_replica(x, y, seeds, busy):
            return [tf.where(busy, s, tf.zeros_like(s)) for s in ref()(x, y, seeds)]

        def run(x, y, seeds, busy):
            return strategy.run(on_replica, args=(x, y, seeds, busy))

        if isinstance(batch_fn, tf.types.experimental.PolymorphicFunction):
            run = tf.function(run, reduce_retracing=True)  # traced again once at most, for a smaller batch
        runner = _RUNNERS[batch_fn] = (strategy, run)
    return runner[1]


# --- the fast algorithm for stacks of Dense, Conv2D and BatchNormalization layers ----------


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


def layer_forward(steps, x, tape):
    """The forward pass of :func:`ewcbook.models.layer_steps`, keeping what per-example gradients are made of.

    Returns ``(logits, inputs, outputs)``, one entry of ``inputs`` and of
    ``outputs`` per step with parameters: its output z (watched by ``tape``,
    so that one backward pass from the logits gives the gradient δ at every
    output), and what its per-example gradient is made of besides δ: a Dense
    or Conv2D layer's input a (kernel gradient aᵀδ, or Σ_p patch(p)ᵀ δ(p) over
    the patches of a, :func:`conv_patches`), a BatchNormalization layer's
    normalised input x̂.
    """
    a, inputs, outputs = x, [], []
    for kind, layer in steps:
        if kind not in PARAMETRIC:
            a = layer(a)
            continue
        if kind == "norm":  # inference mode: z = gamma x̂ + beta with the moving statistics
            z = (a - layer.moving_mean) * tf.math.rsqrt(layer.moving_variance + layer.epsilon)
            inputs.append(z)
            z = z if layer.gamma is None else z * layer.gamma
            z = z if layer.beta is None else z + layer.beta
        else:
            inputs.append(a)
            z = tf.matmul(a, layer.kernel) if kind == "dense" else layer.convolution_op(a, layer.kernel)
            z = z + layer.bias if layer.use_bias else z
        tape.watch(z)
        outputs.append(z)
        a = z if kind == "norm" else layer.activation(z)
    return a, inputs, outputs



def conv_windows(layer: keras.layers.Conv2D, a) -> list[tf.Tensor]:
    """What each entry of a Conv2D layer's kernel sees: for every kernel offset (u, v), in the kernel's
    order, the input channels at each output position p, ``(batch, positions, c_in)``.

    That is a[p·strides + (u, v)·dilation] after the layer's padding ("valid",
    or "same" as TensorFlow pads: the odd pixel, if any, after), taken as one
    strided slice per offset.
    """
    (kh, kw), (sh, sw), (rh, rw) = layer.kernel_size, layer.strides, layer.dilation_rate
    if layer.padding == "same":
        pads = [max((-(-n // s) - 1) * s + (k - 1) * r + 1 - n, 0)
                for n, k, s, r in zip(a.shape[1:3], (kh, kw), (sh, sw), (rh, rw))]
        a = tf.pad(a, [[0, 0], [pads[0] // 2, pads[0] - pads[0] // 2], [pads[1] // 2, pads[1] - pads[1] // 2], [0, 0]])
    oh, ow = (a.shape[1] - (kh - 1) * rh - 1) // sh + 1, (a.shape[2] - (kw - 1) * rw - 1) // sw + 1
    return [tf.reshape(a[:, u * rh : u * rh + (oh - 1) * sh + 1 : sh, v * rw : v * rw + (ow - 1) * sw + 1 : sw, :],
                       [tf.shape(a)[0], oh * ow, a.shape[-1]])
            for u in range(kh) for v in range(kw)]


def conv_patches(layer: keras.layers.Conv2D, a) -> tf.Tensor:
    """The input patches a Conv2D layer's kernel sees, one row per output position.

    Shape ``(batch, positions, kh·kw·c_in)``, each row ordered as the kernel's
    first three axes, so that the layer's output at position p is
    patch(p) @ kernel reshaped to ``(kh·kw·c_in, c_out)``: the
    :func:`conv_windows` side by side, the same numbers as
    ``tf.image.extract_patches`` (which is slower on CPU).
    """
    return tf.concat(conv_windows(layer, a), axis=-1)


def norm_gradients(layer: keras.layers.BatchNormalization, x_hat, d) -> list[tf.Tensor]:
    """Per-example gradients of a BatchNormalization layer's gamma (Σ_p δ x̂) and beta (Σ_p δ), those it has,
    from its normalised input x̂ and the gradient δ at its output; each ``(batch, channels)``."""
    positions = list(range(1, len(d.shape) - 1))  # none for (batch, features)
    grads = [d * x_hat] if layer.gamma is not None else []
    grads += [d] if layer.beta is not None else []
    return [tf.reduce_sum(g, positions) if positions else g for g in grads]


def example_weighted(t, w):
    """``t`` with example i (its first axis) scaled by ``w[i]``; ``t`` itself for ``w=None``."""
    return t if w is None else t * tf.reshape(w, [-1] + [1] * (len(t.shape) - 1))


def dense_squares(layer, a, d, w=None) -> list[tf.Tensor]:
    """Σ_i w_i g_i² of a Dense layer's kernel (and bias): g_i = a_iᵀ δ_i, so the kernel's is (a ∘ a)ᵀ (w δ ∘ δ)."""
    d2 = example_weighted(tf.square(d), w)
    kernel = tf.matmul(tf.square(a), d2, transpose_a=True)
    return [kernel, tf.reduce_sum(d2, axis=0)] if layer.use_bias else [kernel]


def conv_squares(layer, a, d, w=None) -> list[tf.Tensor]:
    """Σ_i w_i g_i² of a Conv2D layer's kernel (and bias) from its input a: g_i = Σ_p patch_i(p)ᵀ δ_i(p),
    formed one kernel offset at a time (:func:`conv_windows`, each a batched matmul), the bias's Σ_p δ_i(p)."""
    d = tf.reshape(d, [tf.shape(d)[0], -1, d.shape[-1]])  # (batch, positions, c_out)
    per_offset = [tf.matmul(window, d, transpose_a=True) for window in conv_windows(layer, a)]  # (batch, c_in, c_out)
    squares = [tf.reduce_sum(example_weighted(tf.square(g), w), axis=0) for g in per_offset]
    kernel = tf.reshape(tf.stack(squares), layer.kernel.shape)
    if not layer.use_bias:
        return [kernel]
    return [kernel, tf.reduce_sum(example_weighted(tf.square(tf.reduce_sum(d, axis=1)), w), axis=0)]


def norm_squares(layer, x_hat, d, w=None) -> list[tf.Tensor]:
    """Σ_i w_i g_i² of a BatchNormalization layer's gamma and beta (:func:`norm_gradients`)."""
    return [tf.reduce_sum(example_weighted(tf.square(g), w), axis=0) for g in norm_gradients(layer, x_hat, d)]


SQUARES = {"dense": dense_squares, "conv": conv_squares, "norm": norm_squares}


def fast_batch(steps, x, y, seed, estimator, mask=None):
    """The fast algorithm on one batch: Σ_i g_i² for every variable of the layers with parameters
    (:func:`ewcbook.models.parametric_steps`, in that order), from one forward and one backward pass
    per label (the softmax over the units where ``mask`` is True, if given)."""
    with tf.GradientTape(persistent=True) as tape:
        logits, inputs, outputs = layer_forward(steps, x, tape)
        if mask is not None:
            logits = restrict_logits(logits, tf.constant(mask))
    probs = tf.nn.softmax(logits)
    sums = []
    for onehot, w in estimator_targets(logits, y, seed, estimator):
        # d log p(y|x) / d logits = onehot(y) - p, pushed back to every layer's output
        deltas = tape.gradient(logits, outputs, output_gradients=onehot - probs)
        part = []
        for (kind, layer), a_in, d in zip(parametric_steps(steps), inputs, deltas):
            part += SQUARES[kind](layer, a_in, d, w)
        sums = part if not sums else [s + p for s, p in zip(sums, part)]
    return sums


# --- the general algorithms ----------------------------------------------------------------


def _restricted(logits, mask):
    return logits if mask is None else restrict_logits(logits, tf.constant(mask))


def per_example_jacobian(tape, target, model: keras.Model) -> list[tf.Tensor]:
    """``tape.jacobian`` of a batch's per-example ``target`` with respect to ``model``'s trainable variables,
    each ``(batch, *shape)``: vectorised with pfor, but with a while loop for a network with a grouped
    convolution, which Keras runs on CPU as an XLA-compiled function whose Jacobian pfor gets wrong
    (TensorFlow 2.21, Keras 3.15: every per-example kernel gradient mixes the batch's examples)."""
    grouped = any(getattr(layer, "groups", 1) > 1 for layer in all_layers(model))
    return tape.jacobian(target, model.trainable_variables, experimental_use_pfor=not grouped)


def _vectorized_batch(model, x, y, seed, estimator, mask=None):
    variables = model.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        log_probs = tf.nn.log_softmax(_restricted(model(x, training=False), mask))
        targets = estimator_targets(tf.stop_gradient(log_probs), y, seed, estimator)
        picked = [tf.reduce_sum(onehot * log_probs, axis=-1) for onehot, _ in targets]
    sums = [tf.zeros(v.shape) for v in variables]
    for target, (_, w) in zip(picked, targets):
        for k, jac in enumerate(per_example_jacobian(tape, target, model)):
            sums[k] += tf.reduce_sum(example_weighted(tf.square(jac), w), axis=0)
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
