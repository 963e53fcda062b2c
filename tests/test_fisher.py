"""The diagonal Fisher: every method against a brute-force per-example loop."""

import gc
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

import ewcbook as eb


def _data(n=37, d=12, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype("float32"), rng.integers(0, classes, n)


def _dense_stack(d=12, classes=4):
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((d,)),
            keras.layers.Dense(9, activation="tanh"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(7),
            keras.layers.Activation("relu"),
            keras.layers.Dense(classes),
        ]
    )


def _brute_force(model, x, onehots_and_weights):
    """Σ_i Σ_c w_ic (∂ log p(c|x_i) / ∂θ)² / N, one example at a time, in float64."""
    sums = [np.zeros(v.shape) for v in model.trainable_variables]
    for i in range(len(x)):
        for c, w in onehots_and_weights(i):
            with tf.GradientTape() as tape:
                log_p = tf.nn.log_softmax(model(x[i : i + 1], training=False))[0, c]
            for k, g in enumerate(tape.gradient(log_p, model.trainable_variables)):
                sums[k] += w * np.square(g.numpy().astype(np.float64))
    return [s / len(x) for s in sums]


def _assert_close(fisher, reference, rtol=1e-5):
    for f, r in zip(fisher, reference):
        assert f.shape == r.shape
        scale = np.abs(r).max()
        np.testing.assert_allclose(np.asarray(f, np.float64), r, rtol=0, atol=rtol * scale)


@pytest.mark.parametrize("method", ["fast", "vectorized", "loop"])
def test_empirical_fisher_matches_brute_force(method):
    x, y = _data()
    model = _dense_stack()
    fisher = eb.diagonal_fisher(model, (x, y), estimator="empirical", algorithm=method, batch_size=16)
    _assert_close(fisher, _brute_force(model, x, lambda i: [(y[i], 1.0)]))


@pytest.mark.parametrize("method", ["fast", "vectorized", "loop"])
def test_exact_fisher_matches_brute_force(method):
    x, y = _data()
    model = _dense_stack()
    probs = tf.nn.softmax(model(x)).numpy()
    fisher = eb.diagonal_fisher(model, (x, y), estimator="exact", algorithm=method, batch_size=16)
    _assert_close(fisher, _brute_force(model, x, lambda i: [(c, probs[i, c]) for c in range(4)]))


def test_true_fisher_methods_agree_and_average_to_the_exact_fisher():
    x, y = _data(n=64)
    model = _dense_stack()
    algorithms = ("fast", "vectorized", "loop")
    runs = [eb.diagonal_fisher(model, (x, y), algorithm=a, seed=5, batch_size=16) for a in algorithms]
    _assert_close(runs[0], [r.numpy() for r in runs[2]])
    _assert_close(runs[1], [r.numpy() for r in runs[2]])
    # the sampled labels differ per seed; their average converges to the exact Fisher
    x_big = np.repeat(x, 50, axis=0)
    sampled = eb.diagonal_fisher(model, (x_big, np.repeat(y, 50)), seed=0)
    exact = eb.diagonal_fisher(model, (x, y), estimator="exact")
    for s, e in zip(sampled, exact):
        assert abs(float(tf.reduce_sum(s)) / float(tf.reduce_sum(e)) - 1) < 0.05


def test_fisher_is_not_the_square_of_the_batch_gradient():
    x, y = _data()
    model = _dense_stack()
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(tf.gather(tf.nn.log_softmax(model(x)), y, batch_dims=1))
    batch_sq = [np.square(g.numpy()) / len(x) for g in tape.gradient(total, model.trainable_variables)]
    fisher = eb.diagonal_fisher(model, (x, y), estimator="empirical")
    assert not np.allclose(fisher[0].numpy(), batch_sq[0], rtol=0.1)


def test_functional_model_uses_the_vectorized_fallback():
    x, y = _data()
    inputs = keras.Input((12,))
    hidden = keras.layers.Dense(6, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4)(hidden))
    fisher = eb.diagonal_fisher(model, (x, y), estimator="empirical")
    _assert_close(fisher, _brute_force(model, x, lambda i: [(y[i], 1.0)]))
    with pytest.raises(ValueError, match="algorithm='fast'"):
        eb.diagonal_fisher(model, (x, y), algorithm="fast")


def test_fisher_of_a_continual_model_and_its_network_agree():
    x, y = _data()
    network = _dense_stack()
    a = eb.diagonal_fisher(network, (x, y), estimator="exact")
    b = eb.diagonal_fisher(eb.ContinualModel(network), (x, y), estimator="exact", algorithm="fast")
    for f, g in zip(a, b):
        np.testing.assert_array_equal(f.numpy(), g.numpy())


def test_num_samples_uses_the_first_examples_and_dataset_input_works():
    x, y = _data(n=40)
    model = _dense_stack()
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    first = eb.diagonal_fisher(model, ds, estimator="empirical", num_samples=20)
    direct = eb.diagonal_fisher(model, (x[:20], y[:20]), estimator="empirical")
    for f, g in zip(first, direct):
        np.testing.assert_allclose(f.numpy(), g.numpy(), rtol=1e-5)


def test_same_seed_same_fisher_and_shapes_match_variables():
    x, y = _data()
    model = _dense_stack()
    a = eb.diagonal_fisher(model, (x, y), seed=3)
    b = eb.diagonal_fisher(model, (x, y), seed=3)
    assert [f.shape for f in a] == [v.shape for v in model.trainable_variables]
    for f, g in zip(a, b):
        np.testing.assert_array_equal(f.numpy(), g.numpy())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"estimator": "fisher"}, ValueError, "estimator"),
        ({"algorithm": "magic"}, ValueError, "algorithm"),
        ({"num_samples": 2.0}, TypeError, "num_samples"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"num_samples": -3}, ValueError, "num_samples"),
        ({"seed": 1.5}, TypeError, "seed"),
    ],
)
def test_bad_arguments_are_named(kwargs, error, match):
    x, y = _data()
    with pytest.raises(error, match=match):
        eb.diagonal_fisher(_dense_stack(), (x, y), **kwargs)


def test_bad_models_and_data_are_refused():
    x, y = _data()
    with pytest.raises(TypeError, match="model"):
        eb.diagonal_fisher("model", (x, y))
    with pytest.raises(ValueError, match="built"):
        eb.diagonal_fisher(keras.Sequential([keras.layers.Dense(3)]), (x, y))
    softmax = keras.Sequential([keras.Input((12,)), keras.layers.Dense(4, activation="softmax")])
    with pytest.raises(ValueError, match="logits"):
        eb.diagonal_fisher(softmax, (x, y))
    model = _dense_stack()
    with pytest.raises(ValueError, match="empty"):
        eb.diagonal_fisher(model, (x[:0], y[:0]))
    with pytest.raises(TypeError, match="floats"):
        eb.diagonal_fisher(model, (x.astype("uint8"), y))
    with pytest.raises(ValueError, match="same length"):
        eb.diagonal_fisher(model, (x, y[:3]))
    with pytest.raises(TypeError, match="data"):
        eb.diagonal_fisher(model, [x, y])
    with pytest.raises(ValueError, match="batched"):
        eb.diagonal_fisher(model, tf.data.Dataset.from_tensor_slices((x[0], x[0])))


def test_unbatched_images_wrong_shapes_and_bad_labels_name_data():
    network = eb.mlp(5, (8,))
    images = np.random.default_rng(0).random((6, 28, 28, 1)).astype("float32")
    labels = np.arange(6) % 5
    unbatched = tf.data.Dataset.from_tensor_slices((images, labels))
    with pytest.raises(ValueError, match=r"data must be batched.*\(28, 28, 1\)"):
        eb.diagonal_fisher(network, unbatched)
    with pytest.raises(ValueError, match=r"data's inputs have shape \(32, 32, 3\).*\(28, 28, 1\)"):
        eb.diagonal_fisher(network, (np.zeros((4, 32, 32, 3), "float32"), labels[:4]))
    with pytest.raises(ValueError, match=r"data's labels must be class indices in \[0, 5\).*7"):
        eb.diagonal_fisher(network, (images, labels + 3), estimator="empirical")
    with pytest.raises(ValueError, match="labels"):
        eb.diagonal_fisher(eb.ContinualModel(network), (images, labels - 1), estimator="empirical")
    with pytest.raises(ValueError, match=r"integer class indices.*float64 labels such as \[0.5, 1.5"):
        eb.diagonal_fisher(network, (images, labels + 0.5), estimator="empirical")  # no silent rounding
    eb.diagonal_fisher(network, (images, labels.astype("float32")), estimator="empirical")  # whole floats: fine
    eb.diagonal_fisher(network, unbatched.batch(3), estimator="empirical")  # batched: fine


def test_sampled_is_the_default_and_true_is_refused_naming_sampled_and_exact():
    x, y = _data()
    model = _dense_stack()
    default = eb.diagonal_fisher(model, (x, y), seed=3)
    for a, b in zip(default, eb.diagonal_fisher(model, (x, y), estimator="sampled", seed=3)):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with pytest.raises(ValueError, match="estimator"):
        eb.diagonal_fisher(model, (x, y), estimator="monte-carlo")
    # once an alias of "sampled"; the true Fisher of the literature is the exact expectation
    for call in (lambda: eb.diagonal_fisher(model, (x, y), estimator="true"),
                 lambda: eb.kronecker_factors(model, (x, y), estimator="true"),
                 lambda: eb.Consolidation("ewc", 1.0, estimator="true"),
                 lambda: eb.KroneckerConsolidation(1.0, estimator="true")):
        with pytest.raises(ValueError, match=r"estimator 'true' was an alias of 'sampled'.*'sampled' or 'exact'"):
            call()


@pytest.mark.parametrize("method", ["fast", "vectorized"])
def test_traced_functions_are_reused_and_do_not_keep_models_alive(method):
    x, y = _data()
    model = _dense_stack()
    eb.diagonal_fisher(model, (x, y), algorithm=method)
    eb.diagonal_fisher(model, (x[:5], y[:5]), algorithm=method, batch_size=2)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    traced = eb.fisher.traced(model, (method, "sampled", None), None, dataset)  # the cached function of that signature
    assert traced.experimental_get_tracing_count() == 1, "one trace serves every call"
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None
