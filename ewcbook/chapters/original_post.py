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

Two more things the post's code does are not bugs of a function but of its
protocol, and change what its EWC run measured. Its hand-written loop for
task B calls ``model(imgs)`` with no ``training`` flag, which is inference
mode, so the dropout it credits was off while it trained B and computed its
Fisher (on only inside ``fit``, on task A); and it steps with
``model.optimizer``, the Adam that trained task A, moments and step count
kept. :func:`post_train_b` is that loop and :func:`post_ewc_runs` that whole
experiment, each of the two changeable in turn (:data:`POST_CHANGES`).
"""

from __future__ import annotations

from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from ewcbook.checks import boolean, check_model, instance, integer, real
from ewcbook.data import Task
from ewcbook.evaluation import task_accuracy
from ewcbook.models import mlp
from ewcbook.penalties import EWC
from ewcbook.utils import set_seed


def post_fisher(
    model: keras.Model, dataset: tf.data.Dataset, num_batches: int, *, broadcast: bool = True, training: bool = False
):
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
        training: the flag passed to ``model(x)``. ``False`` (default) is
            what the post's ``model(imgs)`` ran with: inference, dropout off.

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
    boolean(training, "training")

    variables = model.trainable_variables

    @tf.function
    def totals_over(batches):
        totals = tuple(tf.zeros(v.shape[1:], v.dtype) for v in variables)
        count = tf.constant(0)
        for batch in batches:  # one graph loop over the batches
            with tf.GradientTape() as tape:
                log_probs = tf.nn.log_softmax(model(batch[0], training=training))
            # bug 1 and 2: the gradient of the sum of all log-probabilities
            grads = tape.gradient(log_probs, variables)
            # bug 3: the mean over the first axis of each tensor
            totals = tuple(t + tf.reduce_mean(g**2, axis=0) for t, g in zip(totals, grads))
            count += 1
        return totals, count

    totals, count = totals_over(dataset.repeat().take(num_batches))
    if int(count) == 0:
        raise ValueError("dataset must contain at least one batch, got an empty dataset")
    means = [t / tf.cast(count, t.dtype) for t in totals]
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
        >>> eb.fit_task(learner, task_b)   # raises eb.NonFiniteLossError
    """

    def __init__(self, model: keras.Model, strength: float = 1.0):
        self.variables = check_model(model).trainable_variables
        self.anchors = [tf.constant(v.numpy()) for v in self.variables]
        self.strength = real(strength, "strength", low=0.0)

    def __call__(self) -> tf.Tensor:
        return self.strength * post_l2_penalty(self.variables, self.anchors)

    def __repr__(self) -> str:
        return f"PostL2Anchor(strength={self.strength:g})"


class PostLoop(NamedTuple):
    """What :func:`post_train_b` ran with, and the mean loss of each epoch."""

    training: bool  #: the flag the loop passed to ``model(x)`` (the post's: ``False``)
    shared_optimizer: bool  #: whether it stepped with ``model.optimizer``, task A's (the post's: ``True``)
    epochs: int
    losses: tuple[float, ...]


def post_train_b(
    model: keras.Model,
    dataset: tf.data.Dataset,
    penalty=None,
    *,
    epochs: int,
    training: bool = False,
    optimizer: keras.optimizers.Optimizer | None = None,
) -> PostLoop:
    """The post's hand-written loop for task B: cross-entropy plus a penalty, one step per batch.

    Like the post's loop, it calls ``model(x, training=training)``, and the
    post's ``model(imgs)`` is ``training=False``: inference, dropout off. It
    steps with ``model.optimizer`` unless given another: the post compiled
    one Adam, trained task A with it through ``fit`` and kept stepping with
    it here, so B starts from A's moments and step count.

    Args:
        model: a Keras model that outputs logits, compiled unless
            ``optimizer`` is given.
        dataset: a batched ``tf.data.Dataset`` of ``(x, y)`` of task B, with
            at least one batch.
        penalty: a callable returning a scalar tensor, added to the mean
            sparse cross-entropy of each batch (the post's
            ``compute_elastic_penalty`` is ``eb.EWC(model, fisher, alpha)``),
            or ``None``.
        epochs: positive int.
        training: the flag passed to ``model(x)``; ``True`` turns dropout on.
        optimizer: ``None`` (default): ``model.optimizer``, its state kept;
            else a Keras optimizer to step with instead.

    Returns:
        A :class:`PostLoop` recording ``training``, whether the optimizer was
        ``model.optimizer``, and the mean loss of each epoch.

    Raises:
        TypeError, ValueError: for arguments not as described.

    Example:
        >>> loop = post_train_b(model, post_pipeline(task_b), penalty, epochs=9)
        >>> loop.training, loop.shared_optimizer
        (False, True)
    """
    check_model(model)
    instance(dataset, "dataset", tf.data.Dataset)
    if penalty is not None and not callable(penalty):
        raise TypeError(f"penalty must be a callable returning a scalar, or None, got {type(penalty).__name__}")
    integer(epochs, "epochs", minimum=1)
    boolean(training, "training")
    if optimizer is None:
        optimizer = getattr(model, "optimizer", None)
        if optimizer is None:
            raise ValueError("model must be compiled (the loop steps with model.optimizer), or optimizer given")
    instance(optimizer, "optimizer", keras.optimizers.Optimizer, "a Keras optimizer")
    variables = model.trainable_variables
    if not optimizer.built:
        optimizer.build(variables)
    cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def epoch(batches):
        total, count = tf.constant(0.0), tf.constant(0)
        for batch in batches:
            with tf.GradientTape() as tape:
                loss = cross_entropy(batch[1], model(batch[0], training=training))
                if penalty is not None:
                    loss += penalty()
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            total, count = total + loss, count + 1
        return total, count

    losses = []
    for _ in range(epochs):
        total, count = epoch(dataset)
        if int(count) == 0:
            raise ValueError("dataset must contain at least one batch, got an empty dataset")
        losses.append(float(total) / int(count))
    return PostLoop(training, optimizer is getattr(model, "optimizer", None), epochs, tuple(losses))


class PostRun(NamedTuple):
    """One run of :func:`post_ewc_runs`: accuracies after task B, and how B was trained."""

    acc_a: float
    acc_b: float
    loop: PostLoop
    fisher_training: bool  #: the ``training`` flag :func:`post_fisher` ran with


#: The post's EWC run as its code ran it, and each of two changes on its own:
#: ``training`` is the flag of B's loop and of the Fisher, ``fresh_optimizer``
#: whether B starts with a new Adam instead of task A's.
POST_CHANGES = {
    "as run": {"training": False, "fresh_optimizer": False},
    "dropout on": {"training": True, "fresh_optimizer": False},
    "fresh Adam": {"training": False, "fresh_optimizer": True},
}


def post_ewc_runs(
    task_a: Task,
    task_b: Task,
    configurations: dict | None = None,
    *,
    seed: int = 0,
    epochs: tuple[int, int] = (3, 9),
    fisher_batches: int = 1000,
    strength: float = 25.0,
    dropout: float = 0.5,
) -> dict[str, PostRun]:
    """The post's EWC experiment, once per configuration, from one network trained on task A.

    As the post's code: the 784-128-5 MLP with dropout after the hidden
    layer, compiled with ``"adam"``, is fit on task A (``fit`` turns dropout
    on) for ``epochs[0]`` epochs from :func:`post_pipeline`; then, for each
    configuration, from the same weights and the same Adam state,
    :func:`post_fisher` of A's training pipeline, and :func:`post_train_b`
    for ``epochs[1]`` epochs on B with ``eb.EWC`` at ``strength`` (the
    post's α) and that Fisher.

    Args:
        task_a, task_b: the two tasks (:func:`ewcbook.data.split_mnist`).
        configurations: ``{name: {"training": bool, "fresh_optimizer": bool}}``;
            ``None``: :data:`POST_CHANGES`.
        seed: int >= 0: the network's initial weights (:func:`ewcbook.utils.set_seed`),
            A's data order (``seed``) and B's (``seed + 1``).
        epochs: epochs on A and on B (the post's: 3 and 9).
        fisher_batches: batches of :func:`post_fisher` (the post's: 1000).
        strength: the penalty's strength (the post's α: 25).
        dropout: the rate of the dropout layer (the post's: 0.5).

    Returns:
        ``{name: PostRun}``, in the order of ``configurations``.

    Raises:
        TypeError, ValueError: for arguments not as described.

    Example:
        >>> runs = post_ewc_runs(task_a, task_b, seed=0)
        >>> runs["as run"].loop.training, runs["as run"].loop.shared_optimizer
        (False, True)
    """
    configurations = POST_CHANGES if configurations is None else configurations
    instance(configurations, "configurations", dict)
    if not configurations:
        raise ValueError("configurations must name at least one configuration")
    for name, config in configurations.items():
        if not isinstance(config, dict) or set(config) != {"training", "fresh_optimizer"}:
            raise ValueError(f"configurations[{name!r}] must be a dict with keys 'training' and 'fresh_optimizer'")
        boolean(config["training"], f"configurations[{name!r}]['training']")
        boolean(config["fresh_optimizer"], f"configurations[{name!r}]['fresh_optimizer']")
    instance(task_a, "task_a", Task)
    instance(task_b, "task_b", Task)
    if not isinstance(epochs, tuple) or len(epochs) != 2:
        raise TypeError(f"epochs must be a tuple (epochs on A, epochs on B), got {epochs!r}")
    for count in epochs:
        integer(count, "epochs (each)", minimum=1)
    integer(fisher_batches, "fisher_batches", minimum=1)
    strength = real(strength, "strength", low=0.0)
    seed = integer(seed, "seed", minimum=0)

    set_seed(seed)
    model = mlp(dropout=dropout)
    # steps_per_execution: fewer trips to Python, the same steps in the same order
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  steps_per_execution=32)
    train_a, train_b = post_pipeline(task_a, seed=seed), post_pipeline(task_b, seed=seed + 1)
    model.fit(train_a, epochs=epochs[0], verbose=0, shuffle=False)
    weights = model.get_weights()
    adam_state = [v.numpy() for v in model.optimizer.variables]
    fishers = {flag: post_fisher(model, train_a, fisher_batches, training=flag)
               for flag in sorted({c["training"] for c in configurations.values()})}
    runs = {}
    for name, config in configurations.items():
        model.set_weights(weights)
        for variable, value in zip(model.optimizer.variables, adam_state):
            variable.assign(value)
        penalty = EWC(model, fishers[config["training"]], strength)
        fresh = keras.optimizers.Adam() if config["fresh_optimizer"] else None
        loop = post_train_b(model, train_b, penalty, epochs=epochs[1], training=config["training"], optimizer=fresh)
        runs[name] = PostRun(task_accuracy(model, task_a), task_accuracy(model, task_b), loop, config["training"])
    return runs
