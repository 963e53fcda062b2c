"""What the seed blog post's code computes: deliberately wrong, for measurement.

The blog post the book grows out of has three bugs that change its results.
This module re-implements each one, in a few lines of our own, so that the
book's appendix and chapters 3 and 4 can measure what they do next to the
book's correct code. **Do not use these functions to train a
model you care about**: use :func:`ewcbook.fisher.diagonal_fisher`,
:class:`ewcbook.penalties.L2Anchor` and :meth:`ewcbook.data.Task.dataset`.

* :func:`post_fisher`: squares the gradient of the *sum* of every
  log-probability of a batch (all classes, all examples), then averages the
  square over the first axis of each weight tensor;
* :func:`post_l2_penalty`: the *unsquared* norm ‖θ − θ*‖, whose gradient is
  NaN at the anchor;
* :func:`post_pipeline`: shuffles *before* caching, so every epoch replays
  the first epoch's order.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from ewcbook.checks import boolean, check_model, instance, integer, real
from ewcbook.data import Task


def post_fisher(model: keras.Model, dataset: tf.data.Dataset, num_batches: int, *, broadcast: bool = True):
    """The post's "Fisher information", bugs included.

    For each of ``num_batches`` batches (the dataset is repeated if it is
    shorter), it takes ``g``, the gradient of Σ_i Σ_c log p(c | x_i): the sum
    over the whole batch *and over every class* of the log-softmax (what
    ``tape.gradient`` returns for a non-scalar target). It then keeps
    ``mean(g**2, axis=0)`` of each weight tensor and averages that over the
    batches. Three things differ from the diagonal Fisher:

    1. the gradient of a *sum* over examples is squared, so the square holds
       the cross terms g_i·g_j of different examples (and grows with the
       batch size) instead of the mean of per-example squares;
    2. every class enters with weight 1 instead of its probability (or the
       label): that is the gradient of no likelihood at all;
    3. ``mean(..., axis=0)`` averages over the first axis of each tensor: a
       kernel of shape (inputs, units) gets one value per unit, shared by all
       its rows (every input pixel looks equally important), and a bias of
       shape (units,) gets one scalar for all its units.

    Args:
        model: a built Keras model that outputs logits.
        dataset: a batched ``tf.data.Dataset`` of ``(x, y)`` with float inputs
            (the labels are not used, as in the post).
        num_batches: positive int, how many batches to average over (the post
            used 1000).
        broadcast: if ``True`` (default), return each value broadcast to the
            shape of its variable, which is how the post's penalty
            ``F * (θ − θ*)**2`` uses it (so it can be given to
            :class:`ewcbook.penalties.EWC`); if ``False``, return the reduced
            shapes the post stores.

    Returns:
        One float32 tensor per ``model.trainable_variables``.

    Raises:
        TypeError, ValueError: for arguments not as described.

    Example:
        >>> f = post_fisher(model, post_pipeline(task_a), num_batches=10)
        >>> bool(np.all(f[0].numpy() == f[0].numpy()[0]))   # all rows equal
        True
    """
    check_model(model)
    instance(dataset, "dataset", tf.data.Dataset)
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise TypeError("dataset must yield (x, y) batches; its elements are not tuples of at least 2")
    if not spec[0].dtype.is_floating:
        raise TypeError(f"dataset's inputs must be floats (normalised images), got {spec[0].dtype.name}")
    integer(num_batches, "num_batches", minimum=1)
    boolean(broadcast, "broadcast")

    variables = model.trainable_variables

    @tf.function
    def batch_value(x):
        with tf.GradientTape() as tape:
            log_probs = tf.nn.log_softmax(model(x))
        # bug 1 and 2: the gradient of the sum of all log-probabilities
        grads = tape.gradient(log_probs, variables)
        # bug 3: the mean over the first axis of each tensor
        return [tf.reduce_mean(g**2, axis=0) for g in grads]

    totals = None
    count = 0
    for batch in dataset.repeat().take(num_batches):
        values = batch_value(tf.convert_to_tensor(batch[0]))
        totals = values if totals is None else [t + v for t, v in zip(totals, values)]
        count += 1
    if count == 0:
        raise ValueError("dataset must contain at least one batch, got an empty dataset")
    means = [t / count for t in totals]
    if broadcast:
        means = [tf.broadcast_to(m, v.shape) for m, v in zip(means, variables)]
    return means


def post_l2_penalty(model_vars, anchors) -> tf.Tensor:
    """The post's L2 penalty: 0.5 · Σ_k ‖θ_k − θ*_k‖, the norms *not* squared.

    The gradient of ‖d‖ is d / ‖d‖, which is 0 / 0 = NaN when d = 0, i.e. at
    the anchor, exactly where training on task B starts. One optimizer step
    with that gradient turns every weight into NaN. (The squared norm of
    :class:`ewcbook.penalties.L2Anchor` has the gradient d, zero at the anchor.)

    Args:
        model_vars: the model's trainable variables (a list of variables or
            tensors).
        anchors: their values after task A, a list of the same length and
            shapes.

    Returns:
        A scalar tensor.

    Raises:
        TypeError, ValueError: if the two lists are not as described.
    """
    for name, value in (("model_vars", model_vars), ("anchors", anchors)):
        if not isinstance(value, (list, tuple)) or not value:
            raise TypeError(f"{name} must be a non-empty list of tensors, got {type(value).__name__}")
    if len(model_vars) != len(anchors):
        raise ValueError(f"model_vars has {len(model_vars)} tensors but anchors has {len(anchors)}")
    for k, (v, a) in enumerate(zip(model_vars, anchors)):
        if tuple(v.shape) != tuple(np.shape(a)):
            raise ValueError(f"anchors[{k}] has shape {tuple(np.shape(a))}, model_vars[{k}] has {tuple(v.shape)}")
    total = tf.add_n([tf.norm(tf.convert_to_tensor(v) - tf.cast(a, v.dtype)) for v, a in zip(model_vars, anchors)])
    return 0.5 * total


def post_pipeline(task: Task, split: str = "train", *, batch_size: int = 128, seed: int = 0) -> tf.data.Dataset:
    """The post's input pipeline: normalise, shuffle, *then* cache, batch.

    Because ``cache()`` comes after ``shuffle()``, the first epoch stores the
    examples in the order it drew, and every later epoch reads that same
    order back from the cache: the data are shuffled once, not every epoch.
    (:meth:`ewcbook.data.Task.dataset` caches first and shuffles after.)

    Args:
        task: a :class:`ewcbook.data.Task` (its labels are already remapped,
            as the post's ``transform_labels`` did).
        split: ``"train"`` or ``"test"``.
        batch_size: positive int (the post's default was 128).
        seed: int seed of the one shuffle (the post used none).

    Returns:
        A batched ``tf.data.Dataset`` of ``(image, label)``, images float32
        in [0, 1]. Read each epoch to its end: a partly read cache is thrown
        away.
    """
    instance(task, "task", Task)
    x, y = task.arrays(split)
    integer(batch_size, "batch_size", minimum=1)
    seed = integer(seed, "seed")
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    ds = ds.map(lambda image, label: (tf.cast(image, tf.float32) / 255.0, label))
    ds = ds.shuffle(len(x), seed=int(seed))  # the bug: shuffle before cache
    ds = ds.cache()
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


class PostL2Anchor:
    """The post's unsquared L2 penalty as a penalty of :class:`ewcbook.training.ContinualModel`.

    Anchored at the model's weights when it is made, it returns
    ``strength`` × :func:`post_l2_penalty` (the post used strength 1), so its
    gradient is NaN at the anchor. For demonstrating that trap only.

    Args:
        model: a built Keras model (or ``ContinualModel``) with trainable variables.
        strength: non-negative float.

    Example:
        >>> learner.penalties = [PostL2Anchor(learner)]
        >>> eb.fit_task(learner, task_b)   # raises eb.NonFiniteLossError at batch 1
    """

    def __init__(self, model: keras.Model, strength: float = 1.0):
        self.variables = check_model(model).trainable_variables
        self.anchors = [tf.constant(v.numpy()) for v in self.variables]
        self.strength = real(strength, "strength", low=0.0)

    def __call__(self) -> tf.Tensor:
        return self.strength * post_l2_penalty(self.variables, self.anchors)

    def __repr__(self) -> str:
        return f"PostL2Anchor(strength={self.strength:g})"
