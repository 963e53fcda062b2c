"""Kronecker-factored curvature for EWC: one full block per Dense, Conv2D or BatchNormalization layer.

The diagonal Fisher of chapters 4 to 6 forgets that a layer's weights act
together. The Fisher block of one Dense layer, with W̄ the kernel with the
bias appended as a last row (shape ``(d_in + 1, d_out)``), is::

    F_W = E[ vec(ā δᵀ) vec(ā δᵀ)ᵀ ] = E[ (ā āᵀ) ⊗ (δ δᵀ) ]

with ā the layer's input with a 1 appended and δ = ∂ log p(y|x)/∂z the
gradient at its output z = ā W̄; vec is NumPy's row-major flatten of the
Keras kernel (the column-stacking vec of the literature swaps the factors).
K-FAC (Martens & Grosse 2015) assumes activations and output gradients are
independent, so that the expectation splits::

    F_W ≈ A ⊗ G,   A = E[ā āᵀ],   G = E[δ δᵀ],

a block of (d_in+1)·d_out squared numbers stored as two small matrices, and
the EWC penalty of a layer becomes (Ritter, Botev & Barber 2018)::

    λ/2 · vec(ΔW̄)ᵀ (A ⊗ G) vec(ΔW̄) = λ/2 · tr(ΔW̄ᵀ A ΔW̄ G),

two matrix products instead of a (d_in+1)·d_out square matrix; its gradient,
λ · A ΔW̄ G (A and G symmetric), comes from the same two products.

Convolutions: KFC (Grosse & Martens 2016). A Conv2D layer applies one kernel
at every output position p of the set T of an image's positions. With ā(p)
the input patch it sees at p (kh·kw·c_in numbers in the kernel's order,
:func:`ewcbook.fisher.conv_patches`, and a 1 appended for the bias; zero
padding enters as zeros) and δ(p) the gradient at its output there, the
kernel reshaped to ``(kh·kw·c_in [+ 1], c_out)`` (bias as a last row) is the
W̄ above, its per-example gradient is Σ_p ā(p) δ(p)ᵀ and its Fisher block::

    F_W = E[ Σ_p Σ_q (ā(p) ā(q)ᵀ) ⊗ (δ(p) δ(q)ᵀ) ].

KFC assumes that activations are independent of the derivatives (IAD, as
K-FAC), that the derivatives' statistics are spatially homogeneous
(E[δ(p) δ(p)ᵀ] the same at every p) and that derivatives at different
positions are uncorrelated (E[δ(p) δ(q)ᵀ] = 0 for p ≠ q). Then, with the
normalisation of the paper's equation (23)::

    F_W ≈ Ω ⊗ Γ,   Ω = E[ Σ_p ā(p) ā(p)ᵀ ],   Γ = E[ 1/|T| Σ_p δ(p) δ(p)ᵀ ]:

a sum over positions in the activations' factor, a mean in the derivatives'
(tensorflow/kfac's ConvKFCBasicFB writes the same as ``|T|`` times the product of
the two means over examples and positions). Only Ω ⊗ Γ enters the penalty;
the split sets the scales that factored damping sees. With one output
position (``|T| = 1``) KFC is K-FAC, and with one example both are exact.

BatchNormalization layers (read in inference mode, :func:`ewcbook.models.layer_steps`)
get their exact block: per channel c of C, the per-example gradients of
gamma and beta are Σ_p δ_c(p) x̂_c(p) and Σ_p δ_c(p) (x̂ the normalised
input), together a vector g of at most 2C numbers, and their Fisher block
E[g gᵀ] is small enough to keep whole. It is stored as a Kronecker pair like
the others, A = [[1]] and G = E[g gᵀ], with W̄ the single row [gamma, beta],
so that penalty, damping, merging (exact here: the A's are all [[1]]) and
saving need nothing of their own.

:func:`kronecker_factors` computes the factors of every such layer from
one forward and one backward pass per batch (the walk, labels and batch loop
of the fast diagonal Fisher, :mod:`ewcbook.fisher`); :class:`KroneckerEWC`
is the penalty, and :class:`KroneckerConsolidation` the method that
:func:`ewcbook.protocol.train_sequence` runs with it. Many tasks: the precision of the online Laplace approximation
is a *sum* Σ_t A_t ⊗ G_t, which is not a Kronecker product. One penalty per
task keeps the sum exactly, at a cost per training step that grows with the
number of tasks; :meth:`KroneckerEWC.consolidate` instead replaces the sum by
its nearest Kronecker product in the Frobenius norm (Van Loan & Pitsianis
1993), so memory and time per step stay those of one task.
:func:`nearest_kronecker` reports what that costs in accuracy.

:func:`full_fisher` gives the whole P × P Fisher of a small model, the
reference the approximations are measured against.
"""

from __future__ import annotations

import dataclasses
import weakref

import keras
import numpy as np
import tensorflow as tf

from ewcbook.checks import check_labels, check_model, instance, integer, optional_integer, real
from ewcbook.data import Task
from ewcbook.fisher import (
    accumulate,
    check_estimator,
    check_logits_model,
    checked_data,
    conv_patches,
    estimator_targets,
    example_weighted,
    layer_forward,
    norm_gradients,
    per_example_jacobian,
    traced,
)
from ewcbook.models import layer_steps, layer_variables, num_outputs, parametric_steps

# --- the factors ------------------------------------------------------------------


def kronecker_factors(
    model: keras.Model,
    data,
    *,
    estimator: str = "sampled",
    num_samples: int | None = None,
    seed: int | None = None,
    batch_size: int = 1024,
) -> list[tuple[tf.Tensor, tf.Tensor]]:
    """Kronecker factors (A, G) of the Fisher block of every Dense, Conv2D and BatchNormalization layer.

    Args:
        model: a built stack of Dense, Conv2D and BatchNormalization layers
            (:func:`ewcbook.models.layer_steps`: pooling, Flatten, Dropout and
            activations allowed in between) that outputs logits, or a
            :class:`ewcbook.training.ContinualModel` around one.
        data: a ``tf.data.Dataset`` of ``(x, y)`` batches or a tuple ``(x, y)``
            of arrays with float inputs, as for
            :func:`ewcbook.fisher.diagonal_fisher`.
        estimator: ``"sampled"``, ``"exact"`` or ``"empirical"`` (the labels
            δ is taken at).
        num_samples: use only the first ``num_samples`` examples; ``None``: all.
        seed: int seed of the sampled labels; ``None`` draws one from NumPy.
        batch_size: batch size when ``data`` is a tuple of arrays.

    Returns:
        One pair ``(A, G)`` per layer with parameters, in order (means over
        examples; δ the gradient of log p(y | x) at the layer's output,
        weighted by p(y | x) over every class for ``"exact"``):

        * Dense: A = E[ā āᵀ] of shape ``(d_in + 1, d_in + 1)`` (``(d_in, d_in)``
          without a bias), the last row and column belonging to the appended 1;
          G = E[δ δᵀ] of shape ``(d_out, d_out)``.
        * Conv2D (KFC, see the module): Ω = E[Σ_p ā(p) ā(p)ᵀ] of shape
          ``(kh·kw·c_in + 1, kh·kw·c_in + 1)`` (without the 1 if no bias) and
          ``Γ = E[1/|T| Σ_p δ(p) δ(p)ᵀ]`` of shape ``(c_out, c_out)``.
        * BatchNormalization: A = [[1]] and G = E[g gᵀ], g the per-example
          gradient of gamma then beta (those the layer has), the exact block.

    Raises:
        TypeError, ValueError: for any argument that is not as described,
            naming the argument (and the layer of ``model`` in the way).

    Example:
        >>> factors = kronecker_factors(learner, task.dataset("train", shuffle=False))
        >>> [(a.shape, g.shape) for a, g in factors]   # 784-400-400-10
        [((785, 785), (400, 400)), ((401, 401), (400, 400)), ((401, 401), (10, 10))]
    """
    check_logits_model(model)
    steps = layer_steps(model)
    estimator = check_estimator(estimator)
    dataset, seed = checked_data(model, data, num_samples, seed, batch_size)
    batch_fn = traced(model, ("kfac", estimator), lambda x, y, s: _factor_batch(steps, x, y, s, estimator), dataset)
    check = (lambda y: check_labels(y, num_outputs(model))) if estimator == "empirical" else None
    totals, count = accumulate(dataset, batch_fn, seed=seed, num_samples=num_samples, check=check)
    return [(totals[2 * k] / count, totals[2 * k + 1] / count) for k in range(len(totals) // 2)]


def _factor_batch(steps, x, y, seed, estimator):
    """Σ over the batch of both factors of every layer with parameters: [A_1, G_1, A_2, G_2, ...]."""
    layers = parametric_steps(steps)
    with tf.GradientTape(persistent=estimator == "exact") as tape:
        logits, inputs, outputs = layer_forward(steps, x, tape)
    probs = tf.nn.softmax(logits)
    targets = estimator_targets(logits, y, seed, estimator)
    g_sums = [0.0] * len(layers)  # the exact estimator takes one backward pass per class
    for onehot, w in targets:
        # d log p(y|x) / d logits = onehot(y) - p, pushed back to every layer's output in one pass
        deltas = tape.gradient(logits, outputs, output_gradients=onehot - probs)
        for k, ((kind, layer), a_in, d) in enumerate(zip(layers, inputs, deltas)):
            g_sums[k] = g_sums[k] + _output_factor_sum(kind, layer, a_in, d, w)
    sums = []
    for (kind, layer), a_in, g in zip(layers, inputs, g_sums):
        sums += [_input_factor_sum(kind, layer, a_in), g]
    return sums


def _input_factor_sum(kind, layer, a_in):
    """Σ over the batch of ā āᵀ (Dense), of Σ_p ā(p) ā(p)ᵀ (Conv2D, ā(p) the patches of its input ``a_in``),
    or of [[1]] (BatchNormalization)."""
    if kind == "norm":
        return tf.fill([1, 1], tf.cast(tf.shape(a_in)[0], a_in.dtype))
    a_in = conv_patches(layer, a_in) if kind == "conv" else a_in
    a_in = tf.reshape(a_in, [-1, a_in.shape[-1]])  # a Conv2D layer's every position of every example
    if layer.use_bias:
        a_in = tf.concat([a_in, tf.ones_like(a_in[:, :1])], axis=1)
    return tf.matmul(a_in, a_in, transpose_a=True)


def _output_factor_sum(kind, layer, a_in, d, w):
    """Σ over the batch, weighted by ``w``, of δ δᵀ (Dense), of 1/|T| Σ_p δ(p) δ(p)ᵀ (Conv2D, |T| positions),
    or of g gᵀ, g the per-example gradient of gamma and beta (BatchNormalization, ``a_in`` its x̂)."""
    if kind == "norm":
        d = tf.concat(norm_gradients(layer, a_in, d), axis=1)
    positions = int(np.prod(d.shape[1:-1]))  # 1 but for a Conv2D layer
    dw = example_weighted(d, w)
    d, dw = tf.reshape(d, [-1, d.shape[-1]]), tf.reshape(dw, [-1, d.shape[-1]])
    return tf.matmul(dw, d, transpose_a=True) / positions


# --- the penalty ------------------------------------------------------------------


class KroneckerEWC:
    """λ/2 · Σ_layers tr(ΔW̄ᵀ A ΔW̄ G): EWC with a Kronecker-factored Fisher block per layer.

    ΔW̄ is a layer's W̄ minus the same at the anchor (the weights when the
    penalty was made): for a Dense or Conv2D layer its kernel as a
    ``(d_in, d_out)`` matrix (a Conv2D kernel reshaped to
    ``(kh·kw·c_in, c_out)``) with its bias appended as a last row, for a
    BatchNormalization layer the single row [gamma, beta] (module docstring).

    Args:
        model: the model right after training on the task (the anchor): a
            stack of Dense, Conv2D and BatchNormalization layers
            (:func:`ewcbook.models.layer_steps`), or a ``ContinualModel`` around one.
        factors: its Kronecker factors, one ``(A, G)`` per layer with
            parameters, e.g. from :func:`kronecker_factors`.
        strength: λ, on the scale of :class:`ewcbook.penalties.EWC` (the
            factors are means over examples, like the diagonal Fisher).
        gamma: decay γ in (0, 1] of older tasks in :meth:`consolidate`.
        damping: δ >= 0, added as factored Tikhonov damping (Martens & Grosse
            2015, section 6.3): A + π√δ·I and G + √δ/π·I with
            π² = (tr A / dim A) / (tr G / dim G). The penalty inverts nothing,
            so δ = 0 (the default) is well defined; δ > 0 adds a pull of
            roughly λδ/2 · ‖ΔW̄‖² on every weight.

    One task: ``learner.penalties = [KroneckerEWC(learner, factors, strength)]``.
    Many tasks: either one penalty per task (exact, time per step grows with
    the tasks) or one penalty and :meth:`consolidate` after each task
    (constant memory and time, the sum approximated by one Kronecker product).
    """

    kind = "kfac"

    def __init__(self, model: keras.Model, factors, strength: float, *, gamma: float = 1.0, damping: float = 0.0):
        self.steps = _penalised_steps(model)  # (kind, layer) of every layer with parameters
        self.layers = [layer for _, layer in self.steps]
        self.variables = [v for layer in self.layers for v in layer_variables(layer)]
        self.strength = real(strength, "strength", low=0.0)
        self.gamma = real(gamma, "gamma", low=0.0, high=1.0, open_low=True)
        self.damping = real(damping, "damping", low=0.0)
        factors = _check_factors(factors, self.steps)
        self.anchors = [tf.Variable(v.numpy(), trainable=False) for v in self.variables]
        self.factors = [
            (tf.Variable(a, trainable=False), tf.Variable(g, trainable=False)) for a, g in factors
        ]  # undamped, as estimated (and merged)
        self._damped = [(tf.Variable(a, trainable=False), tf.Variable(g, trainable=False)) for a, g in factors]
        self._apply_damping()
        self.task_count = 1
        self.merge_errors = []  # relative Frobenius error of each consolidation's Kronecker merge, per layer

    def __call__(self) -> tf.Tensor:
        total = tf.constant(0.0)
        k = 0
        for (kind, layer), (a, g) in zip(self.steps, self._damped):
            variables = layer_variables(layer)
            delta = _matrix(kind, [tf.convert_to_tensor(v) - anchor for v, anchor in zip(variables, self.anchors[k:])])
            k += len(variables)
            total += _trace_form(delta, tf.convert_to_tensor(a), tf.convert_to_tensor(g))
        return 0.5 * self.strength * total

    def consolidate(self, factors) -> None:
        """Fold the factors of the task just learned in and re-anchor at the current weights.

        The precision γ·(A ⊗ G) + A_new ⊗ G_new is replaced by its nearest
        Kronecker product (:func:`nearest_kronecker`); its relative error is
        appended to :attr:`merge_errors` (one number per layer).
        """
        factors = _check_factors(factors, self.steps)
        errors = []
        for (a, g), (a_new, g_new) in zip(self.factors, factors):
            merged_a, merged_g, error = nearest_kronecker([(self.gamma * a.numpy(), g.numpy()), (a_new, g_new)])
            a.assign(merged_a)
            g.assign(merged_g)
            errors.append(error)
        self.merge_errors.append(errors)
        self._apply_damping()
        for anchor, variable in zip(self.anchors, self.variables):
            anchor.assign(variable.numpy())
        self.task_count += 1

    def num_stored_floats(self) -> int:
        """Numbers this penalty keeps: anchors plus both factors of every layer."""
        return sum(int(np.prod(v.shape)) for v in self.anchors) + sum(
            int(np.prod(a.shape)) + int(np.prod(g.shape)) for a, g in self.factors
        )

    def _apply_damping(self) -> None:
        for (a, g), (a_d, g_d) in zip(self.factors, self._damped):
            a_np, g_np = a.numpy().astype(np.float64), g.numpy().astype(np.float64)
            if self.damping > 0:
                mean_a, mean_g = np.trace(a_np) / len(a_np), np.trace(g_np) / len(g_np)
                pi = np.sqrt(mean_a / mean_g) if mean_a > 0 and mean_g > 0 else 1.0
                a_np = a_np + pi * np.sqrt(self.damping) * np.eye(len(a_np))
                g_np = g_np + np.sqrt(self.damping) / pi * np.eye(len(g_np))
            # symmetric to the last bit, as _trace_form's gradient assumes (a merge leaves rounding asymmetry)
            a_d.assign(((a_np + a_np.T) / 2).astype(np.float32))
            g_d.assign(((g_np + g_np.T) / 2).astype(np.float32))

    # --- saving (the protocol of ewcbook.state) ---

    def get_config(self) -> dict:
        """What :meth:`from_state` needs besides the arrays (JSON-able)."""
        return {
            "strength": self.strength,
            "gamma": self.gamma,
            "damping": self.damping,
            "task_count": self.task_count,
            "layers": [_signature(kind, layer) for kind, layer in self.steps],
        }

    def state_arrays(self) -> dict[str, np.ndarray]:
        """The anchors and the (undamped) factors, as NumPy arrays."""
        arrays = {f"anchor_{k}": anchor.numpy() for k, anchor in enumerate(self.anchors)}
        for k, (a, g) in enumerate(self.factors):
            arrays[f"A_{k}"], arrays[f"G_{k}"] = a.numpy(), g.numpy()
        return arrays

    @classmethod
    def from_state(cls, model: keras.Model, config: dict, arrays: dict) -> KroneckerEWC:
        """The penalty saved by :meth:`get_config` and :meth:`state_arrays`, bound to ``model``.

        Raises:
            ValueError: if ``model``'s layers with parameters differ from the
                saved ones, or an array is missing or has the wrong shape.
        """
        steps = _penalised_steps(model)
        current = [_signature(kind, layer) for kind, layer in steps]
        if current != config.get("layers"):
            raise ValueError(
                f"model {model.name!r} does not match the saved state: its layers with parameters are {current}, "
                f"the saved ones {config.get('layers')}"
            )
        try:
            factors = [(arrays[f"A_{k}"], arrays[f"G_{k}"]) for k in range(len(steps))]
            anchors = [arrays[f"anchor_{k}"] for k in range(sum(len(layer_variables(lay)) for _, lay in steps))]
        except KeyError as error:
            raise ValueError(f"arrays lacks {error.args[0]!r}, saved by KroneckerEWC.state_arrays") from None
        penalty = cls(model, factors, config["strength"], gamma=config["gamma"], damping=config["damping"])
        for anchor, value, variable in zip(penalty.anchors, anchors, penalty.variables):
            if tuple(np.shape(value)) != tuple(variable.shape):
                raise ValueError(f"anchor for {variable.path} has shape {np.shape(value)}, expected {variable.shape}")
            anchor.assign(value)
        penalty.task_count = int(config["task_count"])
        return penalty

    def __repr__(self) -> str:
        return (
            f"KroneckerEWC(strength={self.strength:g}, gamma={self.gamma:g}, damping={self.damping:g}, "
            f"tasks={self.task_count})"
        )


def nearest_kronecker(terms) -> tuple[np.ndarray, np.ndarray, float]:
    """The Kronecker product A ⊗ G nearest to Σ_k A_k ⊗ G_k in the Frobenius norm.

    Rearranged (Van Loan & Pitsianis 1993), the sum is the matrix
    R = Σ_k vec(A_k) vec(G_k)ᵀ and the nearest Kronecker product is its best
    rank-one approximation. R has rank at most K (the number of terms), so
    the top singular pair comes from a K × K eigenproblem on the Gram matrices
    ⟨A_i, A_j⟩ and ⟨G_i, G_j⟩; nothing of size dim(A)·dim(G) is formed.
    For symmetric positive semi-definite terms the result is too.

    Args:
        terms: a non-empty list of ``(A_k, G_k)`` pairs of square arrays, all
            A_k of one shape and all G_k of one shape.

    Returns:
        ``(A, G, relative_error)``: ‖Σ A_k ⊗ G_k − A ⊗ G‖_F / ‖Σ A_k ⊗ G_k‖_F
        (0 when the terms share a factor up to scale).
    """
    if not isinstance(terms, (list, tuple)) or not terms:
        raise ValueError("terms must be a non-empty list of (A, G) pairs")
    a_list = [np.asarray(a, np.float64) for a, _ in terms]
    g_list = [np.asarray(g, np.float64) for _, g in terms]
    if len({a.shape for a in a_list}) != 1 or len({g.shape for g in g_list}) != 1:
        raise ValueError("terms must all have A of one shape and G of one shape")
    gram_a = np.array([[np.vdot(x, y) for y in a_list] for x in a_list])
    gram_g = np.array([[np.vdot(x, y) for y in g_list] for x in g_list])
    total = float(np.sum(gram_a * gram_g))  # ‖Σ A_k ⊗ G_k‖²_F
    if total <= 0:
        return np.zeros_like(a_list[0]), np.zeros_like(g_list[0]), 0.0
    # R Rᵀ u = σ² u with u = Σ c_k vec(A_k):  (Gram_G Gram_A) c = σ² c
    values, vectors = np.linalg.eig(gram_g @ gram_a)
    top = int(np.argmax(values.real))
    sigma2 = float(values.real[top])
    c = vectors[:, top].real
    c = c if c.sum() >= 0 else -c
    u = sum(ck * a for ck, a in zip(c, a_list))
    u /= np.linalg.norm(u)
    v = sum(np.vdot(a, u) * g for a, g in zip(a_list, g_list))  # Rᵀ u
    # balance the scale between the two factors (only their product matters)
    scale = np.sqrt(np.linalg.norm(v)) if np.linalg.norm(v) > 0 else 1.0
    error = float(np.sqrt(max(total - sigma2, 0.0) / total))
    return (u * scale).astype(np.float32), (v / scale).astype(np.float32), error


def _penalised_steps(model):
    return parametric_steps(layer_steps(check_model(model)))


@tf.custom_gradient
def _trace_form(delta, a, g):
    """tr(Δᵀ A Δ G) for symmetric A and G, and its gradient 2·A Δ G from
    the same two products.

    Autodiff of the value would take two more products of the same size,
    Aᵀ(ΔG) and (AΔ)Gᵀ; on a wide layer the penalty costs several training
    steps, so this halves what K-FAC adds to a step.
    """
    m = tf.matmul(tf.matmul(a, delta), g)

    def grad(upstream):
        return 2.0 * upstream * m, None, None

    return tf.reduce_sum(delta * m), grad


def _matrix(kind, values):
    """A layer's W̄ from its variables (or their changes) in :func:`ewcbook.models.layer_variables` order:
    the kernel as a (rows, d_out) matrix with the bias appended as a last row (Dense, Conv2D), or the single
    row [gamma, beta] (BatchNormalization)."""
    if kind == "norm":
        return tf.concat(values, axis=0)[None, :]
    kernel = tf.reshape(values[0], [-1, values[0].shape[-1]])
    return tf.concat([kernel, values[1][None, :]], axis=0) if len(values) == 2 else kernel


def _matrix_shape(kind, layer) -> tuple[int, int]:
    """The shape of :func:`_matrix` for ``layer``: A is (rows, rows), G (columns, columns)."""
    variables = layer_variables(layer)
    if kind == "norm":
        return 1, sum(int(v.shape[0]) for v in variables)
    return int(np.prod(variables[0].shape[:-1])) + len(variables) - 1, int(variables[0].shape[-1])


def _signature(kind, layer) -> list:
    """What :meth:`KroneckerEWC.from_state` compares: the layer's name, the shape of its first variable, and
    whether a Dense or Conv2D layer has a bias (the format of Dense-only states) or a BatchNormalization
    layer's variable names."""
    variables = layer_variables(layer)
    more = [v.name for v in variables] if kind == "norm" else len(variables) == 2
    return [layer.name, [int(d) for d in variables[0].shape], more]


def _check_factors(factors, steps) -> list[tuple[np.ndarray, np.ndarray]]:
    if not isinstance(factors, (list, tuple)):
        raise TypeError(
            f"factors must be a list of (A, G) pairs, one per layer with parameters, got {type(factors).__name__}"
        )
    if len(factors) != len(steps):
        kinds = sorted({type(layer).__name__ for _, layer in steps})
        kinds = " and ".join([", ".join(kinds[:-1]), kinds[-1]] if len(kinds) > 1 else kinds)
        raise ValueError(f"factors has {len(factors)} pairs but the model has {len(steps)} {kinds} layers")
    checked = []
    for pair, (kind, layer) in zip(factors, steps):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise TypeError(f"factors must hold (A, G) pairs; the entry for layer {layer.name!r} is not a pair")
        a, g = (np.asarray(m, np.float32) for m in pair)
        rows, columns = _matrix_shape(kind, layer)
        if a.shape != (rows, rows) or g.shape != (columns, columns):
            raise ValueError(
                f"factors do not match layer {layer.name!r}: A must be {(rows, rows)} and G {(columns, columns)}, "
                f"got {a.shape} and {g.shape}"
            )
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(g))):
            raise ValueError(f"factors must be finite (layer {layer.name!r})")
        checked.append((a, g))
    return checked


# --- the whole Fisher of a small model -----------------------------------------------


def full_fisher(
    model: keras.Model,
    data,
    *,
    estimator: str = "exact",
    seed: int | None = None,
    batch_size: int = 256,
    max_params: int = 20_000,
) -> np.ndarray:
    """The full P × P Fisher of a small model, from per-example gradients.

    Parameters are ordered as ``model.trainable_variables``, each flattened
    row-major (so a Dense layer's block is ordered as in :class:`KroneckerEWC`
    when its kernel and bias are stacked: kernel rows first, then the bias).

    Args:
        model: a built Keras model that outputs logits, with at most
            ``max_params`` trainable parameters.
        data: as for :func:`kronecker_factors`.
        estimator: ``"exact"`` (default), ``"sampled"`` or ``"empirical"``.
        seed: seed of the sampled labels.
        batch_size: batch size when ``data`` is a tuple of arrays.
        max_params: refuse larger models (P² floats of memory).

    Returns:
        A float64 array of shape (P, P).
    """
    check_logits_model(model)
    estimator = check_estimator(estimator)
    max_params = integer(max_params, "max_params", minimum=1)
    size = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    if size > max_params:
        raise ValueError(f"model has {size} parameters, more than max_params={max_params}: P² floats would not fit")
    dataset, seed = checked_data(model, data, None, seed, batch_size)
    ref = weakref.ref(model)  # the cache must not keep the model alive
    batch_fn = traced(model, ("full", estimator), lambda x, y, s: _full_batch(ref(), x, y, s, estimator), dataset)
    (total,), count = accumulate(dataset, batch_fn, seed=seed)
    return total.numpy() / count


def _full_batch(model, x, y, seed, estimator):
    """Σ over the batch (and over classes, weighted, for "exact") of g gᵀ, g the whole gradient, in float64."""
    with tf.GradientTape(persistent=True) as tape:
        log_probs = tf.nn.log_softmax(model(x, training=False))
        targets = estimator_targets(tf.stop_gradient(log_probs), y, seed, estimator)
        picked = [tf.reduce_sum(onehot * log_probs, axis=-1) for onehot, _ in targets]
    total = 0.0
    for target, (_, w) in zip(picked, targets):
        jac = per_example_jacobian(tape, target, model)  # (batch, *shape) each
        g = tf.concat([tf.reshape(j, [tf.shape(x)[0], -1]) for j in jac], axis=1)
        if w is not None:
            g = g * tf.sqrt(w)[:, None]
        total += tf.matmul(g, g, transpose_a=True)
    return [tf.cast(total, tf.float64)]  # summed over batches in float64


# --- task sequences ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class KroneckerConsolidation:
    """The method of :class:`KroneckerEWC` in a sequence (:func:`ewcbook.protocol.train_sequence`).

    The first :meth:`consolidate` adds the penalty; later calls fold each task
    in with :meth:`KroneckerEWC.consolidate` (merged factors, anchor moved to
    the current weights), so one penalty serves any number of tasks.

    Attributes:
        strength, gamma, damping: those of :class:`KroneckerEWC`.
        estimator: the labels the factors are taken at (:func:`kronecker_factors`).
        fisher_samples: the factors from the first ``fisher_samples`` training
            examples of the task; ``None``: all of them.
    """

    strength: float
    gamma: float = 1.0
    damping: float = 0.0
    estimator: str = "sampled"
    fisher_samples: int | None = None

    def __post_init__(self):
        real(self.strength, "strength", low=0.0)
        real(self.gamma, "gamma", low=0.0, high=1.0, open_low=True)
        real(self.damping, "damping", low=0.0)
        check_estimator(self.estimator)
        optional_integer(self.fisher_samples, "fisher_samples", minimum=1)

    def consolidate(self, learner: keras.Model, task: Task, seed: int = 0) -> None:
        """Add ``task``, just learned, to ``learner``'s :class:`KroneckerEWC` penalty."""
        instance(task, "task", Task)
        data = task.dataset("train", batch_size=1024, shuffle=False, limit=self.fisher_samples)
        factors = kronecker_factors(learner, data, estimator=self.estimator, seed=seed)
        existing = [p for p in getattr(learner, "penalties", []) if isinstance(p, KroneckerEWC)]
        if existing:
            existing[0].consolidate(factors)
        else:
            penalty = KroneckerEWC(learner, factors, self.strength, gamma=self.gamma, damping=self.damping)
            learner.penalties = list(learner.penalties) + [penalty]
