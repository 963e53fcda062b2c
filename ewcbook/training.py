"""Training with penalties through ``model.fit``.

:class:`ContinualModel` wraps any Keras model and adds the sum of its
penalties to the loss in Keras' own training step, so ``fit`` keeps its
progress bar, callbacks and ``History``; the penalty is logged as its own
metric, ``penalty``. :func:`fit_task` trains it on one task as every
chapter does (Adam, a fresh optimizer state per task by default)::

    learner = ContinualModel(mlp())
    fit_task(learner, task_a, epochs=6)
    learner.penalties = [EWC(learner, diagonal_fisher(learner, data_a), strength=100)]
    fit_task(learner, task_b, epochs=6)   # model.fit underneath: logs loss, accuracy, penalty

What is logged. In ``fit``, ``loss`` is the task's loss *plus* the penalty
(the quantity being minimised) and ``penalty`` the penalty alone. In
``evaluate``, ``loss`` is the task's loss only (a held-out loss measures the
task, and a penalty has nothing to do with held-out data); ``penalty`` is
still reported beside it.

Output units. A task may train on some of the network's outputs only
(:attr:`ewcbook.data.Task.units`: a task's own head, or the classes seen so
far). The learner holds a table of which units are active for an example of
each label (:meth:`ContinualModel.set_units`, :func:`unit_table`), so one
batch can mix examples of different heads (replayed ones) and the traced
step is not rebuilt from task to task.

What a penalty may ask for. A penalty is called with no arguments, unless it
has ``uses_batch = True``: then it is called with the batch's inputs and the
network's logits on them (distillation, :class:`ewcbook.distillation.LwF`).
A penalty with a method ``track_step(gradients, before)`` is told, after
every optimizer step, the gradients the step applied and the weights before
it (the path integral of :class:`ewcbook.penalties.SynapticIntelligence`).

Distribution. Under ``tf.distribute`` (e.g. ``MirroredStrategy``) Keras
divides each replica's loss by the number of replicas and sums the
replicas' gradients; the penalty, computed on every replica, is divided the
same way, so training on N replicas takes the same steps as on one device.
That holds for ``MultiWorkerMirroredStrategy`` too (a worker's replicas take
their share of each global batch), with two repairs of Keras 3's ``fit`` on
several workers here (keras-team/keras#20585: it builds with a batch it
cannot reduce, and averages a step's scalar logs along an axis they lack).
Under a strategy, :func:`fit_task` runs one batch per execution unless told
otherwise (Keras 3 fails with more on several replicas, keras-team/keras#19246).
"""

from __future__ import annotations

import threading

import keras
import numpy as np
import tensorflow as tf

from ewcbook.callbacks import StopOnNonFiniteLoss
from ewcbook.checks import boolean, instance, integer, real
from ewcbook.data import Task
from ewcbook.models import num_outputs, restrict_logits, units_mask
from ewcbook.optimizers import FusedAdam

_STEP = threading.local()  # the gradients the optimizer was handed in the step being traced, per thread


def _watch_gradients(optimizer) -> None:
    """Let ``optimizer.apply_gradients`` note the gradients it is handed (in :data:`_STEP`, while
    a step of a learner with a ``track_step`` penalty is traced); once per optimizer."""
    if getattr(optimizer, "_ewcbook_watched", False):
        return
    apply = optimizer.apply_gradients

    def apply_and_note(grads_and_vars, *args, **kwargs):
        grads_and_vars = list(grads_and_vars)
        if getattr(_STEP, "watching", False):
            _STEP.gradients = [g for g, _ in grads_and_vars]
        return apply(grads_and_vars, *args, **kwargs)

    optimizer.apply_gradients = apply_and_note
    optimizer._ewcbook_watched = True


class _Units:
    """The active-unit table of a learner, a (labels, outputs) boolean variable (kept out of
    Keras' tracking, so it is no weight of the model)."""

    def __init__(self, table: np.ndarray):
        self.table = tf.Variable(table, trainable=False)

    def restrict(self, y, y_pred):
        rows = tf.gather(self.table, tf.cast(tf.reshape(y, [-1]), tf.int32))
        return restrict_logits(y_pred, rows)


class ContinualModel(keras.Model):
    """A Keras model whose training loss is the task's loss plus penalties.

    Args:
        network: the Keras model that maps inputs to logits. Its variables
            are this model's variables (nothing is copied).
        penalties: callables returning a scalar tensor, such as
            :class:`ewcbook.penalties.EWC`; their sum is added to the loss.

    Set :attr:`penalties` between tasks; the training step is rebuilt for the
    new list. A penalty that changes in place (``EWC.consolidate``) needs no
    rebuild. ``fit`` always adds :class:`StopOnNonFiniteLoss`.
    :meth:`compile_for_tasks` and :meth:`reset_optimizer` are what
    :func:`fit_task` compiles with and how it starts each task afresh.
    """

    def __init__(self, network: keras.Model, penalties=(), **kwargs):
        instance(network, "network", keras.Model, "a keras.Model")
        super().__init__(name=kwargs.pop("name", f"continual_{network.name}"), **kwargs)
        self.network = network
        self.penalty_tracker = keras.metrics.Mean(name="penalty")
        self._penalties = []
        self.penalties = penalties
        self._for_tasks = None  # (settings, optimizer, its initial state): see compile_for_tasks
        self._units = None  # _Units, once set_units gave a table
        if network.built:
            self.build(network.inputs[0].shape if getattr(network, "inputs", None) else None)

    def build(self, input_shape=None):
        self.built = True

    @property
    def penalties(self) -> list:
        return list(self._penalties)

    @penalties.setter
    def penalties(self, penalties) -> None:
        penalties = list(penalties)
        for p in penalties:
            if not callable(p):
                raise TypeError(f"penalties must be callables returning a scalar, got {type(p).__name__}")
        self._penalties = penalties
        # the traced training and evaluation steps captured the old list (prediction has no penalty)
        self.train_function = self.test_function = None

    def set_units(self, table) -> None:
        """Train on some output units only: ``table[c]`` says which logits are active
        (a softmax over them) for an example with label ``c``; ``None``: every unit
        for every label. See :func:`unit_table`."""
        if table is None:
            if self._units is not None:
                self._units.table.assign(np.ones(self._units.table.shape, bool))
            return
        table = np.asarray(table)
        outputs = num_outputs(self)
        if table.dtype != bool or table.shape != (outputs, outputs) or not table.any(axis=1).all():
            raise ValueError(f"table must be a boolean array ({outputs} labels, {outputs} outputs) with an active "
                             f"unit in every row, got {table.dtype} of shape {table.shape}")
        if self._units is None or self._units.table.shape != table.shape:
            self._units = _Units(table)
            self.train_function = self.test_function = None
        else:
            self._units.table.assign(table)

    def call(self, x, training=False):
        return self.network(x, training=training)

    def _trackers(self) -> list:
        return [p for p in self._penalties if callable(getattr(p, "track_step", None))]

    def train_step(self, data):
        trackers = self._trackers()
        if not trackers:
            return self._across_workers(super().train_step(data))
        _watch_gradients(self.optimizer)
        before = [tf.identity(v) for v in self.trainable_variables]
        _STEP.gradients, _STEP.watching = None, True  # per thread: replicas are traced in threads of their own
        try:
            logs = super().train_step(data)
        finally:
            _STEP.watching = False
        for tracker in trackers:
            tracker.track_step(_STEP.gradients, before)
        return self._across_workers(logs)

    def test_step(self, data):
        return self._across_workers(super().test_step(data))

    def _across_workers(self, logs: dict) -> dict:
        """A step's logs, each scalar as a vector of one under a strategy spanning several workers: there
        Keras 3 averages them with ``reduce(MEAN, axis=0)``, which a scalar lacks (keras-team/keras#20585)."""
        strategy = self.distribute_strategy
        replicas = strategy.num_replicas_in_sync
        if replicas == 1 or len(strategy.extended.worker_devices) == replicas:
            return logs
        return {k: tf.reshape(v, [1]) if getattr(v, "shape", None) == () else v for k, v in logs.items()}

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        if self._units is not None:
            y_pred = self._units.restrict(y, y_pred)
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits = y_pred
        if self._units is not None:
            y_pred = self._units.restrict(y, y_pred)
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if not self._penalties:
            return loss
        penalty = tf.add_n([p(x, logits) if getattr(p, "uses_batch", False) else p() for p in self._penalties])
        self.penalty_tracker.update_state(penalty)
        if not training:
            return loss
        # every replica adds the penalty; Keras sums the replicas' gradients (see the module's note)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss + penalty / replicas

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a strategy, Keras 3 builds with a first batch it draws from the data and reduces across the
        # replicas: a pass more over a dataset that reshuffles on each (Task.dataset), so the epochs differ from
        # one device's, and one that MultiWorkerMirroredStrategy cannot reduce (keras-team/keras#20585). A build
        # needs only shapes and types: the dataset's element spec.
        if iterator is not None and self._distribute_strategy is not None:
            data_batch, iterator = iterator.data_adapter.get_tf_dataset().element_spec, None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def fit(self, *args, callbacks=None, **kwargs):
        if self._trackers():
            _watch_gradients(self.optimizer)  # here, in the main thread, before any replica traces a step
        callbacks = list(callbacks or []) + [StopOnNonFiniteLoss()]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def compile_for_tasks(self, learning_rate: float = 1e-3, steps_per_execution: int | None = None) -> None:
        """Compile as :func:`fit_task` trains: :class:`FusedAdam`, sparse categorical
        cross-entropy on logits, accuracy.

        Compiles only if the settings changed or the model was compiled otherwise
        since, so the traced training step is reused from task to task.
        ``steps_per_execution=None`` is 32, or 1 under a ``tf.distribute``
        strategy (the learner's, or the scope's): above 1, Keras 3 fails under
        ``MirroredStrategy`` with several replicas (keras-team/keras#19246). The
        optimizer is made in the learner's strategy's scope, so this (and
        :func:`fit_task`) may be called outside it.
        """
        with self.distribute_strategy.scope():
            if steps_per_execution is None:
                steps_per_execution = 1 if tf.distribute.has_strategy() else 32
            settings = (real(learning_rate, "learning_rate", low=0.0, open_low=True),
                        integer(steps_per_execution, "steps_per_execution", minimum=1))
            if self._for_tasks is not None and self._for_tasks[0] == settings and self._for_tasks[1] is self.optimizer:
                return
            self.compile(
                optimizer=FusedAdam(settings[0]),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
                steps_per_execution=settings[1],
            )
            self.optimizer.build(self.trainable_variables)
        self._for_tasks = (settings, self.optimizer, [v.numpy() for v in self.optimizer.variables])

    @property
    def task_settings(self) -> tuple[float, int] | None:
        """``(learning_rate, steps_per_execution)`` of :meth:`compile_for_tasks`, or ``None``."""
        return None if self._for_tasks is None else self._for_tasks[0]

    def reset_optimizer(self) -> None:
        """Give the optimizer of :meth:`compile_for_tasks` its initial state again
        (zero moments, step 0): the same as a fresh Adam, without tracing anew."""
        if self._for_tasks is None or self._for_tasks[1] is not self.optimizer:
            raise RuntimeError("reset_optimizer needs the optimizer of compile_for_tasks; call that first")
        for variable, value in zip(self.optimizer.variables, self._for_tasks[2]):
            variable.assign(value)


def fit_task(
    learner: ContinualModel,
    task: Task,
    *,
    epochs: int,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    callbacks=(),
    verbose: int = 0,
    steps_per_execution: int | None = None,
    reset_optimizer: bool = True,
    data: tf.data.Dataset | None = None,
    units=None,
) -> keras.callbacks.History:
    """Train ``learner`` on ``task`` with Adam and sparse categorical
    cross-entropy on logits; its penalties are added to the loss.

    Args:
        learner: the model to train.
        task: the task; its training split is shuffled afresh every epoch
            from ``seed``.
        epochs, batch_size, learning_rate: the protocol.
        callbacks, verbose: passed to ``fit``.
        steps_per_execution: batches per call of the traced training step
            (Keras' ``compile`` argument): fewer round trips to Python.
            Batch-level callbacks run once per execution. ``None``: 32, or 1
            under a ``tf.distribute`` strategy (see
            :meth:`ContinualModel.compile_for_tasks`).
        reset_optimizer: ``True`` (default) starts every task with a fresh
            Adam (zero moments, step 0); ``False`` keeps its state from the
            previous task.
        data: batches to train on instead of the task's training split
            (e.g. :meth:`ewcbook.replay.ReplayMemory.mixed_dataset`).
        units: the active-unit table (:meth:`ContinualModel.set_units`);
            ``None``: :func:`unit_table` of ``task``.

    The learner is compiled once (:meth:`ContinualModel.compile_for_tasks`), so
    every later task reuses the traced training step.
    """
    instance(learner, "learner", ContinualModel)
    if isinstance(task, tf.data.Dataset):
        raise TypeError(
            "task must be an ewcbook Task (e.g. from eb.split_mnist()), got a tf.data.Dataset; to train on your own "
            "batches, call learner.fit(dataset) after learner.compile(...), or pass them as data= beside a Task"
        )
    instance(task, "task", Task)
    integer(epochs, "epochs", minimum=1)
    boolean(reset_optimizer, "reset_optimizer")
    if data is not None:
        instance(data, "data", tf.data.Dataset, "a tf.data.Dataset")
    learner.compile_for_tasks(learning_rate, steps_per_execution)
    if reset_optimizer:
        learner.reset_optimizer()
    if units is not None or task.units is not None or learner._units is not None:
        learner.set_units(unit_table(task, num_outputs(learner)) if units is None else units)
    if data is None:
        data = task.dataset("train", batch_size=batch_size, seed=seed)
    return learner.fit(data, epochs=epochs, verbose=verbose, callbacks=list(callbacks), shuffle=False)


def unit_table(task: Task, outputs: int, others: dict | None = None) -> np.ndarray:
    """Which output units are active for an example of each label while training on ``task``.

    Every label trains on ``task``'s :attr:`~ewcbook.data.Task.units`, except a
    label of ``others`` (``{label: units}``, e.g. replayed examples of earlier
    tasks) that lies outside them: it trains on its own units. So a replayed
    digit of a task-incremental task is read at its own head, and a replayed
    class-incremental digit, already among the classes seen so far, with them.

    Returns:
        A boolean array ``(outputs, outputs)``: row ``c`` for label ``c``.
    """
    instance(task, "task", Task)
    current = units_mask(task.units, outputs)
    table = np.tile(current, (outputs, 1))
    for label, units in (others or {}).items():
        if not current[label]:
            table[label] = units_mask(units, outputs)
    return table
