"""Chapter 4 (Fisher information): the measurements behind its statements on squared batch gradients.

Two questions, for a Dense stack such as :func:`ewcbook.models.mlp`:

* Is the squared gradient of a batch's *sum*, divided by the batch size n,
  an estimate of the diagonal Fisher? :func:`batch_square_check` computes,
  batch after batch, both that and the per-example squares Σ_i g_i² / n of
  the same gradients, so their means and variances can be compared. With
  labels sampled from the model, E[g_i] = 0 and E[(Σ_i g_i)²] = Σ_i E[g_i²]:
  unbiased, only noisier. With the data's labels E[g_i] ≠ 0 and the cross
  terms add (n − 1)·E[g]² per weight: :func:`gradient_moments` measures
  E[g] and E[g²] over a data set, and :func:`expected_batch_square` gives
  what the squared batch gradient averages to, batches drawn from it
  without replacement.
* What makes the seed post's "Fisher" so large? :func:`post_gap_factors`
  splits the ratio of its total to the sampled Fisher's into the factors
  that its code changes one after the other.

Both use the same trick as ``diagonal_fisher(algorithm="fast")``, and its
forward pass (:func:`ewcbook.fisher.layer_forward`): for a Dense layer the
per-example gradient of the kernel is the outer product of the layer's input
and the gradient at its output.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ewcbook.chapters.original_post import post_fisher
from ewcbook.checks import integer, one_of
from ewcbook.fisher import estimator_targets, layer_forward
from ewcbook.models import dense_layers, require_dense_stack

MODES = ("sampled", "empirical", "class_sum")


def _terms_function(model, mode):
    steps = require_dense_stack(model)

    @tf.function(reduce_retracing=True)
    def terms(x, y, seed):
        with tf.GradientTape() as tape:
            logits, inputs, outputs = layer_forward(steps, x, tape)
        probs = tf.nn.softmax(logits)
        if mode == "class_sum":  # the gradient of Σ_c log p(c | x): every class with weight 1
            out = 1.0 - tf.cast(tf.shape(logits)[1], tf.float32) * probs
        else:  # d log p(label | x) / d logits, at a label drawn from the model or the data's
            ((onehot, _),) = estimator_targets(logits, y, seed, mode)
            out = onehot - probs
        deltas = tape.gradient(logits, outputs, output_gradients=out)
        squares, sums = [], []
        for layer, a_in, d in zip(dense_layers(steps), inputs, deltas):
            squares.append(tf.matmul(tf.square(a_in), tf.square(d), transpose_a=True))
            sums.append(tf.matmul(a_in, d, transpose_a=True))
            if layer.use_bias:
                squares.append(tf.reduce_sum(tf.square(d), 0))
                sums.append(tf.reduce_sum(d, 0))
        flat = lambda ts: tf.concat([tf.reshape(t, [-1]) for t in ts], 0)  # noqa: E731
        return flat(squares), flat(sums)

    return terms


def batch_terms(model, dataset: tf.data.Dataset, mode: str, *, seed: int = 0):
    """Per batch of ``dataset``: Σ_i g_i² and Σ_i g_i, for every weight.

    Args:
        model: a built :func:`ewcbook.models.mlp` (or its ``ContinualModel``).
        dataset: batched ``(x, y)`` with float inputs.
        mode: ``"sampled"`` (g_i at a label drawn from the model),
            ``"empirical"`` (at the data's label) or ``"class_sum"`` (the
            gradient of Σ_c log p(c | x_i), as the seed post takes it).
        seed: int seed of the sampled labels.

    Yields:
        ``(n, squares, sums)`` per batch: its size and two float64 vectors
        over all weights, in the order of ``model.trainable_variables``.
    """
    one_of(mode, "mode", MODES)
    terms = _terms_function(model, mode)
    for step, (x, y) in enumerate(dataset):
        squares, sums = terms(tf.convert_to_tensor(x), tf.convert_to_tensor(y), tf.constant([seed, step]))
        yield int(tf.shape(x)[0]), squares.numpy().astype(np.float64), sums.numpy().astype(np.float64)


def batch_square_check(model, dataset: tf.data.Dataset, mode: str, *, seed: int = 0) -> dict:
    """Compare two estimates of the diagonal Fisher, one value per batch of ``dataset``.

    * per-example: Σ_i g_i² / n, the library's estimator on one batch;
    * batch-squared: (Σ_i g_i)² / n, the square of the batch's gradient.

    Returns:
        A dict with, for each of ``"per_example"`` and ``"batch"``, the mean
        over batches (one value per weight; key ``"<name>_mean"``) and the
        variance over batches (``"<name>_var"``), plus ``"num_batches"`` and
        ``"batch_sizes"`` (the size of each batch, in order).
    """
    stats = {name: [0.0, 0.0] for name in ("per_example", "batch")}
    sizes = []
    for n, squares, sums in batch_terms(model, dataset, mode, seed=seed):
        for name, value in (("per_example", squares / n), ("batch", sums**2 / n)):
            stats[name][0] = stats[name][0] + value
            stats[name][1] = stats[name][1] + value**2
        sizes.append(n)
    count = len(sizes)
    if count < 2:
        raise ValueError("dataset must hold at least 2 batches")
    out = {"num_batches": count, "batch_sizes": np.array(sizes)}
    for name, (total, total_sq) in stats.items():
        mean = total / count
        out[f"{name}_mean"] = mean
        out[f"{name}_var"] = np.maximum(total_sq / count - mean**2, 0.0) * count / (count - 1)
    return out



def gradient_moments(model, dataset: tf.data.Dataset, mode: str, *, seed: int = 0):
    """The mean gradient and the mean squared gradient per weight over all of ``dataset``.

    Args:
        model: a built :func:`ewcbook.models.mlp` (or its ``ContinualModel``).
        dataset: batched ``(x, y)`` with float inputs (every example once).
        mode: as in :func:`batch_terms`.
        seed: int seed of the sampled labels.

    Returns:
        ``(count, mean, second)``: the number of examples N, and per weight
        ḡ = Σ_i g_i / N (for ``"empirical"``, the gradient of the mean
        log-likelihood: minus the gradient of the training loss) and
        Σ_i g_i² / N (for ``"empirical"``, the empirical Fisher).
    """
    count, total, total_sq = 0, 0.0, 0.0
    for n, squares, sums in batch_terms(model, dataset, mode, seed=seed):
        count, total, total_sq = count + n, total + sums, total_sq + squares
    if count == 0:
        raise ValueError("dataset must hold at least one example")
    return count, total / count, total_sq / count


def expected_batch_square(mean, second, count: int, batch_size: int) -> np.ndarray:
    """What (Σ_{i∈B} g_i)² / n averages to over batches B of n examples drawn without replacement.

    For N examples with per-weight mean ḡ and mean square s (those of
    :func:`gradient_moments`), a batch of n distinct examples drawn
    uniformly has E[Σ_i g_i²] = n s and, for i ≠ k, E[g_i g_k] =
    (N² ḡ² − N s) / (N (N − 1)), so::

        E[(Σ_i g_i)² / n] = s + (n − 1) (N ḡ² − s) / (N − 1),

    which is s + (n − 1) ḡ² when N ≫ n: the per-example estimate s plus a
    bias that vanishes where ḡ = 0 (at a stationary point of the mean
    log-likelihood).

    Args:
        mean, second: arrays of ḡ and s, one value per weight.
        count: N, an int >= 2.
        batch_size: n, an int with 1 <= n <= N.

    Returns:
        The expectation, one value per weight.

    Example:
        >>> expected_batch_square(np.array([0.1]), np.array([1.0]), 10**6, 128)
        array([2.2698...])
    """
    count = integer(count, "count", minimum=2)
    batch_size = integer(batch_size, "batch_size", minimum=1)
    if batch_size > count:
        raise ValueError(f"batch_size must be at most count ({count}), got {batch_size}")
    mean, second = np.asarray(mean, np.float64), np.asarray(second, np.float64)
    return second + (batch_size - 1) * (count * mean**2 - second) / (count - 1)

def post_gap_factors(model, dataset: tf.data.Dataset, num_batches: int, *, sampled_total: float,
                     exact_total: float) -> dict:
    """Split the seed post's "Fisher" total over the sampled Fisher's into factors.

    Going from the sampled Fisher to the post's values, one change at a time
    (totals over all weights):

    1. ``"sampling"``: the exact Fisher instead of one sampled label (noise only);
    2. ``"class_sum"``: Σ_c ∇log p(c | x) instead of the expectation over c,
       still per example;
    3. ``"cross_terms"``: (Σ_i g_i)² / n of a batch instead of Σ_i g_i² / n;
    4. ``"no_mean"``: not dividing by the batch size n;
    5. ``"axis0_mean"``: the mean over each tensor's first axis, broadcast
       back (it keeps every total, so this factor is 1 up to rounding).

    Args:
        model: a built MLP.
        dataset: the post's pipeline (:func:`ewcbook.chapters.original_post.post_pipeline`),
            read as :func:`ewcbook.chapters.original_post.post_fisher` reads it.
        num_batches: how many batches, as given to ``post_fisher``.
        sampled_total, exact_total: totals of ``diagonal_fisher`` with
            ``estimator="sampled"`` and ``"exact"``, per example.

    Returns:
        ``{factor: value}`` in the order above, plus ``"total"`` (their
        product, the post's total over ``sampled_total``) and ``"post_total"``.
    """
    per_example, batch_over_n, batch, count = 0.0, 0.0, 0.0, 0
    for n, squares, sums in batch_terms(model, dataset.repeat().take(num_batches), "class_sum"):
        per_example += squares.sum() / n
        batch_over_n += (sums**2).sum() / n
        batch += (sums**2).sum()
        count += 1
    per_example, batch_over_n, batch = per_example / count, batch_over_n / count, batch / count
    post_total = float(sum(tf.reduce_sum(f) for f in post_fisher(model, dataset, num_batches)))
    factors = {
        "sampling": exact_total / sampled_total,
        "class_sum": per_example / exact_total,
        "cross_terms": batch_over_n / per_example,
        "no_mean": batch / batch_over_n,
        "axis0_mean": post_total / batch,
    }
    factors["total"] = float(np.prod(list(factors.values())))
    factors["post_total"] = post_total
    return factors
