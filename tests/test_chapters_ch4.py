"""ewcbook.chapters.ch4: per-example squares and batch gradients, and the post's gap factors."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import ewcbook as eb
from ewcbook.chapters import ch4
from ewcbook.chapters.original_post import post_fisher


@pytest.fixture(scope="module")
def model_and_data():
    eb.set_seed(0)
    model = eb.mlp(num_classes=3, hidden=(6,), input_shape=(4, 4, 1))
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(40, 4, 4, 1)).astype("float32")
    y = rng.integers(0, 3, size=40)
    return model, x, y


def _flat_grad(model, x, y):
    with tf.GradientTape() as tape:
        log_p = tf.reduce_sum(tf.gather(tf.nn.log_softmax(model(x)), y, batch_dims=1))
    return np.concatenate([g.numpy().ravel() for g in tape.gradient(log_p, model.trainable_variables)])


def test_empirical_terms_match_per_example_gradients(model_and_data):
    model, x, y = model_and_data
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    n, squares, sums = next(ch4.batch_terms(model, data, "empirical"))
    per_example = np.stack([_flat_grad(model, x[i : i + 1], y[i : i + 1]) for i in range(8)])
    assert n == 8
    np.testing.assert_allclose(squares, (per_example**2).sum(0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(sums, per_example.sum(0), rtol=1e-4, atol=1e-6)


def test_terms_of_a_stack_with_activation_layers_and_no_bias(model_and_data):
    _, x, y = model_and_data
    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(5, use_bias=False),
                              keras.layers.Activation("tanh"), keras.layers.Dense(3)])
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    n, squares, sums = next(ch4.batch_terms(model, data, "empirical"))
    per_example = np.stack([_flat_grad(model, x[i : i + 1], y[i : i + 1]) for i in range(8)])
    np.testing.assert_allclose(squares, (per_example**2).sum(0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(sums, per_example.sum(0), rtol=1e-4, atol=1e-6)


def test_per_example_mean_is_the_empirical_fisher(model_and_data):
    model, x, y = model_and_data
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    r = ch4.batch_square_check(model, data, "empirical")
    fisher = np.concatenate([f.numpy().ravel() for f in eb.diagonal_fisher(model, (x, y), estimator="empirical")])
    assert r["num_batches"] == 4
    np.testing.assert_allclose(r["per_example_mean"], fisher, rtol=1e-4, atol=1e-8)
    assert np.all(r["per_example_var"] >= 0) and np.all(r["batch_var"] >= 0)


def test_sampled_labels_have_mean_zero_scores_in_expectation(model_and_data):
    # the batch-squared estimate over many label draws approaches the per-example one
    model, x, y = model_and_data
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat(300)
    r = ch4.batch_square_check(model, data, "sampled", seed=1)
    assert r["batch_mean"].sum() / r["per_example_mean"].sum() == pytest.approx(1.0, abs=0.1)



def test_batch_square_bias_formula_against_every_batch_of_a_tiny_data_set(model_and_data):
    # the data's labels: averaged over all C(8, 3) batches of 3 distinct examples, the squared batch gradient over n is
    # the per-example mean square plus (n - 1)(N ḡ² - s)/(N - 1), ḡ the mean gradient over the 8 examples
    model, x, y = model_and_data
    x, y = x[:8], y[:8]
    count, mean, second = ch4.gradient_moments(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(5), "empirical")
    per_example = np.stack([_flat_grad(model, x[i : i + 1], y[i : i + 1]) for i in range(8)])
    assert count == 8
    np.testing.assert_allclose(mean, per_example.mean(0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(second, (per_example**2).mean(0), rtol=1e-4, atol=1e-8)
    subsets = np.array(list(itertools.combinations(range(8), 3))).ravel()  # 56 batches, one after the other
    every_batch = tf.data.Dataset.from_tensor_slices((x[subsets], y[subsets])).batch(3)
    r = ch4.batch_square_check(model, every_batch, "empirical")
    assert r["num_batches"] == 56 and set(r["batch_sizes"].tolist()) == {3}
    expected = ch4.expected_batch_square(mean, second, 8, 3)
    np.testing.assert_allclose(r["batch_mean"], expected, rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(r["per_example_mean"], second, rtol=1e-4, atol=1e-8)  # per-example squares: no bias
    # the bias is not zero here (the model is not at a stationary point), and is what (n - 1) ḡ² approaches
    assert np.sum(expected - second) > 0.01 * np.sum(second)
    big = ch4.expected_batch_square(mean, second, 10**9, 3)
    np.testing.assert_allclose(big - second, 2 * mean**2, rtol=1e-4, atol=1e-12)


def test_expected_batch_square_checks_its_arguments():
    with pytest.raises(TypeError, match="count"):
        ch4.expected_batch_square(np.zeros(2), np.ones(2), 10.0, 2)
    with pytest.raises(ValueError, match="batch_size"):
        ch4.expected_batch_square(np.zeros(2), np.ones(2), 10, 11)
    np.testing.assert_allclose(ch4.expected_batch_square(np.zeros(2), np.ones(2), 10, 1), np.ones(2))


def test_squared_gradient_of_a_batch_mean_loss_is_the_fisher_over_n(model_and_data):
    # most code squares the gradient of the batch's mean loss (as Keras computes it): with labels drawn from the
    # model, its expectation is the per-example Fisher of eb.diagonal_fisher divided by the batch size n
    model, x, y = model_and_data
    xb = tf.constant(x[:2])
    probs = tf.nn.softmax(model(xb)).numpy().astype(np.float64)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # the mean over the batch
    expected = 0.0
    for labels in itertools.product(range(3), repeat=2):  # every label pair, weighted by its probability
        with tf.GradientTape() as tape:
            value = loss(tf.constant(labels), model(xb))
        grad = np.concatenate([g.numpy().ravel() for g in tape.gradient(value, model.trainable_variables)])
        expected = expected + probs[0, labels[0]] * probs[1, labels[1]] * grad.astype(np.float64) ** 2
    fisher = np.concatenate([f.numpy().ravel() for f in eb.diagonal_fisher(model, (x[:2], y[:2]), estimator="exact")])
    np.testing.assert_allclose(expected, fisher / 2, rtol=1e-4, atol=1e-9)

def test_post_gap_factors_multiply_to_the_post_over_sampled(model_and_data):
    model, x, y = model_and_data
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    sampled = float(sum(f.numpy().sum() for f in eb.diagonal_fisher(model, (x, y), estimator="sampled", seed=0)))
    exact = float(sum(f.numpy().sum() for f in eb.diagonal_fisher(model, (x, y), estimator="exact")))
    factors = ch4.post_gap_factors(model, data, 7, sampled_total=sampled, exact_total=exact)
    post_total = float(sum(tf.reduce_sum(f) for f in post_fisher(model, data, 7)))
    assert factors["post_total"] == pytest.approx(post_total, rel=1e-5)
    assert factors["total"] == pytest.approx(post_total / sampled, rel=1e-4)
    assert factors["axis0_mean"] == pytest.approx(1.0, rel=1e-4)  # a mean keeps the total
    assert factors["no_mean"] == pytest.approx(8.0, rel=0.2)  # batches of 8 (the last one of 5 included)


def test_arguments_are_checked(model_and_data):
    model, x, y = model_and_data
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    with pytest.raises(ValueError, match="mode"):
        next(ch4.batch_terms(model, data, "true"))
    with pytest.raises(ValueError, match="at least 2"):
        ch4.batch_square_check(model, data.take(1), "empirical")
    conv = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                             keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="Dense"):
        next(ch4.batch_terms(conv, data, "empirical"))
