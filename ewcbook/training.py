"""Training with penalties through ``model.fit``.

:class:`ContinualModel` wraps any Keras model and adds the sum of its
penalties to the loss in Keras' own training step, so ``fit`` keeps its
progress bar, callbacks and ``History``; the penalty is logged as its own
metric, ``penalty``. :func:`fit_task` trains it on one task as every
chapter does (Adam, a fresh optimizer state per task by default).

    learner = ContinualModel(mlp())
    fit_task(learner, task_a, epochs=6)
    learner.penalties = [EWC(learner, diagonal_fisher(learner, data_a), strength=100)]
    fit_task(learner, task_b, epochs=6)   # model.fit underneath: logs loss, accuracy, penalty

What is logged. In ``fit``, ``loss`` is the task's loss *plus* the penalty
(the quantity being minimised) and ``penalty`` the penalty alone. In
``evaluate``, ``loss`` is the task's loss only (a held-out loss measures the
task, and a penalty has nothing to do with held-out data); ``penalty`` is
still reported beside it.

Distribution. Under ``tf.distribute`` (e.g. ``MirroredStrategy``) Keras
divides each replica's loss by the number of replicas and sums the
replicas' gradients; the penalty, computed on every replica, is divided the
same way, so training on N replicas takes the same steps as on one device.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ewcbook.callbacks import StopOnNonFiniteLoss
from ewcbook.checks import boolean, instance, integer, real
from ewcbook.data import Task
from ewcbook.optimizers import FusedAdam


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

    def call(self, x, training=False):
        return self.network(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        if not self._penalties:
            return loss
        penalty = tf.add_n([p() for p in self._penalties])
        self.penalty_tracker.update_state(penalty)
        if not training:
            return loss
        # every replica adds the penalty; Keras sums the replicas' gradients (see the module's note)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss + penalty / replicas

    def fit(self, *args, callbacks=None, **kwargs):
        callbacks = list(callbacks or []) + [StopOnNonFiniteLoss()]
        return super().fit(*args, callbacks=callbacks, **kwargs)

    def compile_for_tasks(self, learning_rate: float = 1e-3, steps_per_execution: int = 32) -> None:
        """Compile as :func:`fit_task` trains: :class:`FusedAdam`, sparse categorical
        cross-entropy on logits, accuracy.

        Compiles only if the settings changed or the model was compiled otherwise
        since, so the traced training step is reused from task to task.
        """
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
    steps_per_execution: int = 32,
    reset_optimizer: bool = True,
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
            Batch-level callbacks run once per execution.
        reset_optimizer: ``True`` (default) starts every task with a fresh
            Adam (zero moments, step 0); ``False`` keeps its state from the
            previous task.

    The learner is compiled once (:meth:`ContinualModel.compile_for_tasks`), so
    every later task reuses the traced training step.
    """
    instance(learner, "learner", ContinualModel)
    instance(task, "task", Task)
    integer(epochs, "epochs", minimum=1)
    boolean(reset_optimizer, "reset_optimizer")
    learner.compile_for_tasks(learning_rate, steps_per_execution)
    if reset_optimizer:
        learner.reset_optimizer()
    data = task.dataset("train", batch_size=batch_size, seed=seed)
    return learner.fit(data, epochs=epochs, verbose=verbose, callbacks=list(callbacks), shuffle=False)
