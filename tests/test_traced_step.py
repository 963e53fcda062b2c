"""The training step Keras traced once computes, task after task, the penalty an eager evaluation computes.

Keras traces a learner's training step the first time ``fit`` runs it and reuses it from then on: whatever
the step read as Python structure at that time (a list, ``None`` or not) stays as it was, however the
penalty changes later. Every method of the library keeps what its step reads in Variables of fixed shape
that consolidation changes in place (or rebuilds the step explicitly), so the compiled step must agree with
an eager evaluation at the same weights after any number of consolidations.

For every method, over three tiny tasks (task-incremental heads, so the active-unit table changes from task
to task too; one head growing over the classes seen for class-incremental LwF), two ways:

(a) :func:`ewcbook.protocol.train_sequence` with the method (:class:`~ewcbook.protocol.Consolidation`,
    :class:`~ewcbook.kfac.KroneckerConsolidation`, :class:`~ewcbook.replay.Replay`): the penalty is added
    after task 0, which rebuilds the step; task 1 traces it; the consolidation after task 1 is in place.
    It trains with :class:`~ewcbook.optimizers.FusedAdam`: after
    :meth:`~ewcbook.training.ContinualModel.reset_optimizer` and with a learning rate of 0, one step leaves
    the weights where they are and Adam's first moment at (1 − β₁)·g, the gradient the step computed.
(b) plain ``fit`` with plain SGD: the penalty is made before task 0 (anchored at the starting weights),
    task 0 traces the step, the consolidations after tasks 0 and 1 are in place. One step with learning
    rate 1 moves the weights by −g.

After the last task, with the weights moved a little off (no penalty is 0 by accident), one more step of
the *same* compiled function (no retrace: checked) on one batch of that task, of its element spec (the
traced batch shape): its logged ``penalty`` must equal the eager sum of the penalties, and its gradient (of
the task's loss plus the penalties) the eager one.
"""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import ewcbook as eb
from ewcbook.protocol import merge_heads

OUTPUTS, N, BATCH, STRENGTH = 6, 64, 32, 5.0
SI_STRENGTH = 200.0  # SI's importance, from the path of two steps a task, is small
TASK_UNITS = [(0, 2), (2, 4), (4, 6)]  # task-incremental: a head of its own per task
CLASS_UNITS = [(0, 2), (0, 4), (0, 6)]  # class-incremental: one head over the classes seen so far
METHODS = ["l2", "l2_moving", "ewc", "online_ewc", "si", "lwf_task", "lwf_class", "kfac", "ewc_replay"]


def _tasks(method):
    """Three tiny tasks of random images, two new labels each (task 0 unpermuted, then permuted)."""
    rng = np.random.default_rng(0)
    units = CLASS_UNITS if method == "lwf_class" else TASK_UNITS
    tasks = []
    for k, u in enumerate(units):
        x = rng.integers(0, 256, size=(N, 28, 28, 1), dtype=np.uint8)
        y = rng.integers(2 * k, 2 * k + 2, N)
        perm = np.arange(784) if k == 0 else rng.permutation(784)
        tasks.append(eb.Task(f"T{k}", x, y, x[:8], y[:8], num_classes=OUTPUTS, permutation=perm, units=u,
                             test_units=u))
    return tasks


class _TraceWatch(keras.callbacks.Callback):
    """Counts the traces of the learner's training step and notes, at the end of every ``fit``, the
    compiled function it ran and the traces so far."""

    def __init__(self):
        super().__init__()
        self.traces, self.seen = 0, []

    def set_model(self, model):  # before fit first runs (and so traces) its training function
        super().set_model(model)
        if not getattr(model, "_trace_watched", False):
            step = model.train_step

            def counted(data):
                self.traces += 1  # Python runs only while the step is traced
                return step(data)

            model.train_step, model._trace_watched = counted, True

    def on_train_end(self, logs=None):
        self.seen.append((self.model.train_function, self.traces))


def _one_batch(data):
    """The first batch of ``data`` as a dataset of one batch, of ``data``'s element spec, the same on every pass."""
    one = data.take(1).cache()
    list(one)  # fill the cache: later passes read this very batch
    assert one.element_spec == data.element_spec  # the traced step takes it without a retrace
    return one


def _perturb(learner, scale=0.05):
    """Move every weight a little: no penalty is 0 by accident (a weight at its anchor, a student at its teacher)."""
    rng = np.random.default_rng(7)
    for v in learner.trainable_variables:
        v.assign(v.numpy() + scale * rng.standard_normal(v.shape).astype(np.float32))


def _eager(learner, batch):
    """Evaluated eagerly: the sum of the penalties, the gradient of the task's loss plus that sum, and the
    share of the penalties in that gradient (its norm over the whole's)."""
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
    with tf.GradientTape(persistent=True) as tape:
        logits = learner(x, training=True)
        loss = learner.compute_loss(x, y, logits, sample_weight, training=True)  # the task's loss + penalties
        penalty = tf.add_n([p(x, logits) if getattr(p, "uses_batch", False) else p() for p in learner.penalties])
    grads = [g.numpy() for g in tape.gradient(loss, learner.trainable_variables)]
    norm = lambda gs: np.sqrt(sum(float(np.sum(np.square(g))) for g in gs))  # noqa: E731
    share = norm(tape.gradient(penalty, learner.trainable_variables)) / norm(grads)
    return float(penalty), grads, share


def _assert_agree(logged, compiled_grads, eager):
    penalty, grads, share = eager
    assert penalty > 1e-2 and share > 0.05  # nothing trivially 0: the weights are away from their anchors
    np.testing.assert_allclose(logged, penalty, rtol=1e-5, err_msg="penalty: traced step vs eager")
    scale = max(np.abs(g).max() for g in grads)
    for g, e in zip(compiled_grads, grads):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6 * scale, err_msg="gradient: traced step vs eager")


def _assert_same_step(watch, traced_at):
    """The step of every fit from ``traced_at`` on (and of the check) is the one traced by then, never traced again."""
    assert len(watch.seen) == 4  # three tasks and the check
    function, traces = watch.seen[traced_at]
    assert traces >= 1
    for later, count in watch.seen[traced_at + 1:]:
        assert later is function and count == traces


# --- (a) through train_sequence ---------------------------------------------------------------------------------


def _sequence_method(method):
    if method == "kfac":
        return eb.KroneckerConsolidation(STRENGTH, gamma=0.9, damping=1e-3)
    if method == "ewc_replay":
        return [eb.Consolidation("ewc", STRENGTH), eb.Replay(per_class=4)]
    name = "lwf" if method.startswith("lwf") else method
    return eb.Consolidation(name, SI_STRENGTH if method == "si" else STRENGTH, gamma=0.9, temperature=2.0)


@pytest.mark.parametrize("method", METHODS)
def test_train_sequence_steps_with_the_penalty_of_the_last_consolidation(method):
    eb.set_seed(0)
    tasks, watch, way = _tasks(method), _TraceWatch(), _sequence_method(method)
    fit = functools.partial(eb.fit_task, steps_per_execution=1)  # one trace of one step: quicker to make
    result = eb.train_sequence(eb.mlp(OUTPUTS, (8,)), tasks, way, epochs=1, batch_size=BATCH, fit=fit,
                               callbacks=[watch], evaluate_unseen=False)
    learner = result.learner
    if method == "ewc_replay":  # the last task trained on its batches beside the memory of the first two
        data = way[1].memory.mixed_dataset(tasks[-1], batch_size=BATCH, seed=5)
    else:
        data = tasks[-1].dataset("train", batch_size=BATCH, seed=5)
    check = _one_batch(data)
    _perturb(learner)
    eager = _eager(learner, next(iter(check)))
    learner.reset_optimizer()
    learner.optimizer.learning_rate.assign(0.0)
    before = [v.numpy() for v in learner.trainable_variables]
    logged = learner.fit(check, epochs=1, verbose=0, shuffle=False, callbacks=[watch]).history["penalty"][-1]
    for v, b in zip(learner.trainable_variables, before):
        np.testing.assert_array_equal(v.numpy(), b)  # learning rate 0: the weights stayed
    opt = learner.optimizer
    beta = 1.0 - np.float32(opt.beta_1)
    compiled = [opt._momentums[opt._get_variable_index(v)].numpy() / beta for v in learner.trainable_variables]
    _assert_agree(logged, compiled, eager)
    # the step of task 1 (of task 0 for SI, in the penalties from the start) ran on task 2 and in the check
    _assert_same_step(watch, 0 if method == "si" else 1)


# --- (b) through plain fit, consolidating in place ----------------------------------------------------------------


class _Plain:
    """One method by hand: the penalty made before task 0 (anchored at the starting weights, with what it
    needs of task 0), then consolidated in place after every task but the last; ``data(k)`` the batches of
    task k and its unit table."""

    def __init__(self, method, learner, tasks):
        self.method, self.learner, self.tasks = method, learner, tasks
        self.memory = eb.ReplayMemory(4) if method == "ewc_replay" else None
        task = tasks[0]
        if method in ("l2", "l2_moving"):
            penalty = eb.L2Anchor(learner, STRENGTH, moving=method == "l2_moving")
        elif method in ("ewc", "ewc_replay"):
            penalty = eb.EWC(learner, self._fisher(task), STRENGTH)
        elif method == "online_ewc":
            penalty = eb.OnlineEWC(learner, self._fisher(task), STRENGTH, gamma=0.9)
        elif method == "si":
            penalty = eb.SynapticIntelligence(learner, SI_STRENGTH)
        elif method == "kfac":
            penalty = eb.KroneckerEWC(learner, self._factors(task, 0), STRENGTH, gamma=0.9, damping=1e-3)
        else:  # lwf_task, lwf_class
            penalty = eb.LwF(learner, STRENGTH, [task.units], temperature=2.0)
        self.penalty = penalty
        learner.penalties = [penalty]

    def _fisher(self, task):
        return eb.diagonal_fisher(self.learner, (task.inputs("train"), task.arrays("train")[1]), seed=1)

    def _factors(self, task, k):
        return eb.kronecker_factors(self.learner, task.dataset("train", shuffle=False), seed=k)

    def data(self, k):
        task = self.tasks[k]
        if self.memory is not None and len(self.memory):
            return self.memory.mixed_dataset(task, batch_size=BATCH, seed=k), self.memory.table(task, OUTPUTS)
        return task.dataset("train", batch_size=BATCH, seed=k), eb.unit_table(task, OUTPUTS)

    def consolidate(self, k):
        """After task k: the penalty takes it in, in place."""
        task, p, method = self.tasks[k], self.penalty, self.method
        if self.memory is not None:
            self.memory.add(task)
        if method in ("ewc", "ewc_replay", "online_ewc"):
            p.consolidate(self._fisher(task))
        elif method == "kfac":
            p.consolidate(self._factors(task, k))
        elif method.startswith("lwf"):
            p.consolidate(merge_heads(p.heads, task.units))
        else:  # l2, l2_moving, si
            p.consolidate()


@pytest.mark.parametrize("method", METHODS)
def test_fit_steps_with_the_penalty_consolidated_in_place(method):
    eb.set_seed(0)
    tasks, watch = _tasks(method), _TraceWatch()
    learner = eb.ContinualModel(eb.mlp(OUTPUTS, (8,)))
    learner.compile(optimizer=keras.optimizers.SGD(0.05), steps_per_execution=1,
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain = _Plain(method, learner, tasks)
    for k in range(len(tasks)):
        data, table = plain.data(k)
        learner.set_units(table)
        learner.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[watch])
        if k < len(tasks) - 1:
            plain.consolidate(k)
    _perturb(learner)
    check = _one_batch(data)
    eager = _eager(learner, next(iter(check)))
    learner.optimizer.learning_rate.assign(1.0)
    before = [v.numpy() for v in learner.trainable_variables]
    logged = learner.fit(check, epochs=1, verbose=0, shuffle=False, callbacks=[watch]).history["penalty"][-1]
    compiled = [b - v.numpy() for v, b in zip(learner.trainable_variables, before)]  # −(learning rate 1) · g
    _assert_agree(logged, compiled, eager)
    _assert_same_step(watch, 1 if method == "ewc_replay" else 0)  # the batches beside the memory: traced at task 1
