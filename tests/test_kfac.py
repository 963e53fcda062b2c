"""Kronecker-factored EWC: factors, penalty, merging and saving against brute force."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import ewcbook as eb
from ewcbook.kfac import KroneckerEWC, _matrix, full_fisher, kronecker_factors, nearest_kronecker
from ewcbook.models import layer_variables


def _data(n=23, d=6, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)).astype("float32"), rng.integers(0, classes, n)


def _stack(d=6, classes=4, use_bias=True):
    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((d,)),
            keras.layers.Dense(5, activation="tanh", use_bias=use_bias, name="hidden_1"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(3, name="hidden_2"),
            keras.layers.Activation("relu"),
            keras.layers.Dense(classes, name="logits"),
        ]
    )


def _one_layer(d=6, classes=4):
    keras.utils.set_random_seed(2)
    return keras.Sequential([keras.Input((d,)), keras.layers.Dense(classes)])


def _perturb(model, scale=0.1, seed=3):
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(v.numpy() + scale * rng.normal(size=v.shape).astype("float32"))


def _per_example_factors(model, x, labels_and_weights):
    """A = mean ā āᵀ and G = mean Σ w δ δᵀ, one example at a time, in float64."""
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    a_sums = [0.0] * len(dense)
    g_sums = [0.0] * len(dense)
    for i in range(len(x)):
        a, inputs, outputs = tf.constant(x[i : i + 1]), [], []
        with tf.GradientTape(persistent=True) as tape:
            for layer in model.layers:
                if isinstance(layer, keras.layers.Dense):
                    inputs.append(a)
                    z = tf.matmul(a, layer.kernel) + layer.bias
                    tape.watch(z)
                    outputs.append(z)
                    a = layer.activation(z)
                elif not isinstance(layer, keras.layers.Dropout):
                    a = layer(a)
            log_p = tf.nn.log_softmax(a)[0]
            targets = [log_p[c] for c in range(log_p.shape[0])]  # indexed under the tape
        for k, a_in in enumerate(inputs):
            bar = np.append(a_in.numpy()[0].astype(np.float64), 1.0)
            a_sums[k] = a_sums[k] + np.outer(bar, bar)
        for c, w in labels_and_weights(i):
            for k, d in enumerate(tape.gradient(targets[c], outputs)):
                d = d.numpy()[0].astype(np.float64)
                g_sums[k] = g_sums[k] + w * np.outer(d, d)
    return [(a / len(x), g / len(x)) for a, g in zip(a_sums, g_sums)]


def _assert_close(actual, expected, rtol=1e-5):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * np.abs(expected).max())


# --- the factors ---


@pytest.mark.parametrize("estimator", ["empirical", "exact"])
def test_batch_factors_match_a_per_example_loop(estimator):
    x, y = _data()
    model = _stack()
    probs = tf.nn.softmax(model(x)).numpy()
    if estimator == "empirical":
        reference = _per_example_factors(model, x, lambda i: [(y[i], 1.0)])
    else:
        reference = _per_example_factors(model, x, lambda i: [(c, probs[i, c]) for c in range(4)])
    factors = kronecker_factors(model, (x, y), estimator=estimator, batch_size=7)  # batches of uneven size
    assert len(factors) == 3
    for (a, g), (a_ref, g_ref) in zip(factors, reference):
        _assert_close(a, a_ref)
        _assert_close(g, g_ref)


def test_sampled_factors_average_to_the_exact_ones():
    x, y = _data(n=32)
    model = _stack()
    exact = kronecker_factors(model, (x, y), estimator="exact")
    sampled = kronecker_factors(model, (np.repeat(x, 100, axis=0), np.repeat(y, 100)), seed=0)
    again = kronecker_factors(model, (np.repeat(x, 100, axis=0), np.repeat(y, 100)), seed=0, estimator="sampled")
    for (a, g), (a_e, g_e), (_, g_again) in zip(sampled, exact, again):
        _assert_close(a, a_e)  # A does not depend on the labels
        np.testing.assert_array_equal(g.numpy(), g_again.numpy())  # same seed, same labels; "sampled" is the default
        assert abs(np.trace(g) / np.trace(g_e) - 1) < 0.05


@pytest.mark.parametrize("estimator", ["exact", "empirical"])
def test_one_layer_one_example_factors_give_the_exact_fisher_block(estimator):
    # with one example, E[ā āᵀ ⊗ δ δᵀ] = E[ā āᵀ] ⊗ E[δ δᵀ]: K-FAC's independence assumption costs nothing
    x, y = _data(n=1)
    model = _one_layer()
    ((a, g),) = kronecker_factors(model, (x, y), estimator=estimator)
    fisher = full_fisher(model, (x, y), estimator=estimator)  # kernel rows first, then the bias
    _assert_close(np.kron(a.numpy(), g.numpy()), fisher)


def test_many_examples_kfac_is_only_an_approximation_of_the_block():
    x, y = _data(n=50)
    model = _one_layer()
    ((a, g),) = kronecker_factors(model, (x, y), estimator="exact")
    fisher = full_fisher(model, (x, y), estimator="exact")
    error = np.linalg.norm(np.kron(a.numpy(), g.numpy()) - fisher) / np.linalg.norm(fisher)
    assert 1e-3 < error < 1.0


def test_full_fisher_diagonal_is_the_diagonal_fisher():
    x, y = _data()
    model = _stack()
    fisher = full_fisher(model, (x, y), estimator="exact")
    diagonal = np.concatenate([f.numpy().ravel() for f in eb.diagonal_fisher(model, (x, y), estimator="exact")])
    _assert_close(np.diag(fisher), diagonal)


# --- the penalty ---


def _factors(model, seed=0):
    x, y = _data(seed=seed)
    return kronecker_factors(model, (x, y), estimator="exact")


def test_penalty_is_the_brute_force_kronecker_quadratic():
    model = _stack()
    factors = _factors(model)
    penalty = KroneckerEWC(model, factors, strength=3.0)
    anchors = [v.numpy().astype(np.float64) for v in model.trainable_variables]
    assert float(penalty()) == 0.0
    _perturb(model)
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    expected = 0.0
    for k, ((a, g), layer) in enumerate(zip(factors, dense)):
        kernel = layer.kernel.numpy() - anchors[2 * k]
        bias = layer.bias.numpy() - anchors[2 * k + 1]
        delta = np.vstack([kernel, bias[None]])  # W̄: (d_in + 1, d_out)
        kron = np.kron(a.numpy().astype(np.float64), g.numpy().astype(np.float64))
        row_major = delta.reshape(-1)  # NumPy's vec: A ⊗ G
        expected += 0.5 * row_major @ kron @ row_major
        # the column-stacking vec of the literature: the factors swap places
        col_major = delta.reshape(-1, order="F")
        swapped = np.kron(g.numpy().astype(np.float64), a.numpy().astype(np.float64))
        assert np.isclose(col_major @ swapped @ col_major, row_major @ kron @ row_major, rtol=1e-10)
    np.testing.assert_allclose(float(penalty()), 3.0 * expected, rtol=1e-4)


def test_penalty_without_bias_and_its_gradient():
    model = _stack(use_bias=False)
    factors = _factors(model)
    assert factors[0][0].shape == (6, 6)  # no appended 1 for a layer without bias
    penalty = KroneckerEWC(model, factors, strength=2.0)
    _perturb(model)
    first = model.layers[0]
    a, g = (f.numpy().astype(np.float64) for f in factors[0])
    with tf.GradientTape() as tape:
        value = penalty()
    grad = tape.gradient(value, first.kernel).numpy()
    delta = first.kernel.numpy() - penalty.anchors[0].numpy()
    _assert_close(grad, 2.0 * a @ delta @ g, rtol=1e-4)  # ∂/∂W of λ/2 tr(ΔWᵀ A ΔW G) = λ A ΔW G


def test_penalty_gradient_from_its_two_products_is_autodiff_of_the_trace_form():
    # after a merge (SVD output, not symmetric to the last bit) and with damping, as chapter 7 trains it
    model = _stack()
    penalty = KroneckerEWC(model, _factors(model), strength=3.0, damping=1e-3, gamma=0.9)
    _perturb(model)
    penalty.consolidate(_factors(model, seed=1))
    _perturb(model)
    variables = penalty.variables
    with tf.GradientTape(persistent=True) as tape:
        value = penalty()
        total, k = 0.0, 0
        for (kind, layer), (a, g) in zip(penalty.steps, penalty._damped):
            n = len(layer_variables(layer))
            delta = _matrix(kind, [v - anchor for v, anchor in zip(variables[k:k + n], penalty.anchors[k:])])
            k += n
            total += tf.reduce_sum(tf.matmul(a, delta) * tf.matmul(delta, g))  # plain autodiff
        plain = 0.5 * penalty.strength * total
    np.testing.assert_allclose(float(value), float(plain), rtol=1e-5)
    for ours, autodiff in zip(tape.gradient(value, variables), tape.gradient(plain, variables), strict=True):
        _assert_close(ours.numpy(), autodiff.numpy(), rtol=1e-5)


def test_penalty_trains_inside_keras_fit():
    x, y = _data(n=64)
    network = _stack()
    learner = eb.ContinualModel(network)
    learner.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    learner.penalties = [KroneckerEWC(learner, kronecker_factors(learner, (x, y)), strength=10.0)]
    history = learner.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert "penalty" in history.history and np.all(np.isfinite(history.history["penalty"]))
    assert history.history["penalty"][-1] > 0


def test_damping_is_factored_tikhonov():
    model = _stack()
    factors = _factors(model)
    plain = KroneckerEWC(model, factors, strength=1.0)
    damped = KroneckerEWC(model, factors, strength=1.0, damping=0.01)
    _perturb(model)
    assert float(damped()) > float(plain())
    a, g = (f.numpy().astype(np.float64) for f in factors[0])
    pi = np.sqrt((np.trace(a) / len(a)) / (np.trace(g) / len(g)))
    _assert_close(damped._damped[0][0].numpy(), a + pi * 0.1 * np.eye(len(a)))
    _assert_close(damped._damped[0][1].numpy(), g + 0.1 / pi * np.eye(len(g)))


# --- many tasks ---


def _spd(n, rng):
    m = rng.normal(size=(n, n))
    return m @ m.T / n


def test_nearest_kronecker_is_exact_for_shared_factors_and_optimal_otherwise():
    rng = np.random.default_rng(0)
    a1, a2, g = _spd(4, rng), _spd(4, rng), _spd(3, rng)
    a, g_near, error = nearest_kronecker([(a1, g), (a2, 2 * g)])
    _assert_close(np.kron(a, g_near), np.kron(a1, g) + np.kron(a2, 2 * g))
    assert error < 1e-6
    terms = [(_spd(4, rng), _spd(3, rng)) for _ in range(3)]
    target = sum(np.kron(x, y) for x, y in terms)
    a, g, error = nearest_kronecker(terms)
    best = np.linalg.norm(target - np.kron(a, g)) / np.linalg.norm(target)
    assert np.isclose(best, error, atol=1e-6)
    assert np.all(np.linalg.eigvalsh(a.astype(np.float64)) > -1e-6)  # still positive semi-definite
    # no other Kronecker product nearby does better (a local check of optimality)
    for _ in range(20):
        pa, pg = a + 0.01 * _spd(4, rng), g + 0.01 * _spd(3, rng)
        assert np.linalg.norm(target - np.kron(pa, pg)) >= np.linalg.norm(target - np.kron(a, g)) - 1e-9
    # R's best rank-one approximation, checked with an SVD of the rearranged matrix
    rearranged = sum(np.outer(x.ravel(), y.ravel()) for x, y in terms)
    sigma = np.linalg.svd(rearranged, compute_uv=False)
    assert np.isclose(error, np.sqrt(np.sum(sigma[1:] ** 2) / np.sum(sigma**2)), atol=1e-6)


def test_consolidate_merges_moves_the_anchor_and_keeps_memory_constant():
    model = _stack()
    penalty = KroneckerEWC(model, _factors(model, seed=0), strength=1.0, gamma=0.5)
    floats = penalty.num_stored_floats()
    _perturb(model)
    new = _factors(model, seed=1)
    expected = [
        nearest_kronecker([(0.5 * a.numpy(), g.numpy()), (a_n, g_n)])
        for (a, g), (a_n, g_n) in zip(penalty.factors, new)
    ]
    penalty.consolidate(new)
    assert float(penalty()) == 0.0  # re-anchored at the current weights
    assert penalty.task_count == 2 and penalty.num_stored_floats() == floats
    assert len(penalty.merge_errors) == 1 and len(penalty.merge_errors[0]) == 3
    for (a, g), (a_e, g_e, _) in zip(penalty.factors, expected):
        _assert_close(np.kron(a.numpy(), g.numpy()), np.kron(a_e, g_e))


# --- saving ---


def test_state_round_trip_gives_the_same_penalty_and_gradient():
    model = _stack()
    penalty = KroneckerEWC(model, _factors(model), strength=5.0, gamma=0.9, damping=1e-3)
    _perturb(model)
    penalty.consolidate(_factors(model, seed=1))
    _perturb(model, seed=4)
    config = json.loads(json.dumps(penalty.get_config()))  # JSON-able
    arrays = {k: np.array(v) for k, v in penalty.state_arrays().items()}
    fresh = _stack()
    fresh.set_weights(model.get_weights())
    loaded = KroneckerEWC.from_state(fresh, config, arrays)
    assert loaded.kind == "kfac" and loaded.task_count == 2 and repr(loaded) == repr(penalty)
    with tf.GradientTape() as tape:
        value = penalty()
    grads = tape.gradient(value, model.trainable_variables)
    with tf.GradientTape() as tape:
        loaded_value = loaded()
    loaded_grads = tape.gradient(loaded_value, fresh.trainable_variables)
    assert float(value) > 0
    np.testing.assert_allclose(float(loaded_value), float(value), rtol=1e-6)
    for g, h in zip(grads, loaded_grads):
        np.testing.assert_allclose(h.numpy(), g.numpy(), rtol=1e-5, atol=1e-7)


def test_state_refuses_a_different_model_or_missing_arrays():
    model = _stack()
    penalty = KroneckerEWC(model, _factors(model), strength=1.0)
    keras.utils.set_random_seed(0)
    other = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    with pytest.raises(ValueError, match="does not match the saved state"):
        KroneckerEWC.from_state(other, penalty.get_config(), penalty.state_arrays())
    arrays = penalty.state_arrays()
    del arrays["G_1"]
    with pytest.raises(ValueError, match="G_1"):
        KroneckerEWC.from_state(model, penalty.get_config(), arrays)


# --- bad arguments ---


def test_bad_arguments_name_the_argument():
    x, y = _data()
    model = _stack()
    factors = _factors(model)
    with pytest.raises(TypeError, match="model"):
        kronecker_factors("not a model", (x, y))
    with pytest.raises(ValueError, match="estimator"):
        kronecker_factors(model, (x, y), estimator="fisher")
    with pytest.raises(ValueError, match="num_samples"):
        kronecker_factors(model, (x, y), num_samples=0)
    with pytest.raises(TypeError, match="seed"):
        kronecker_factors(model, (x, y), seed="0")
    with pytest.raises(TypeError, match="data"):
        kronecker_factors(model, [x, y])
    unread = keras.Sequential(  # Conv2D layers are read (tests/test_kfac_conv.py), LayerNormalization is not
        [keras.Input((4, 4, 1)), keras.layers.LayerNormalization(), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    with pytest.raises(ValueError, match="model must be a Sequential stack of Dense"):
        kronecker_factors(unread, (np.zeros((2, 4, 4, 1), "float32"), np.zeros(2, "int64")))
    with pytest.raises(ValueError, match="model must be a Sequential stack of Dense"):
        KroneckerEWC(unread, [], strength=1.0)
    with pytest.raises(ValueError, match="strength"):
        KroneckerEWC(model, factors, strength=-1.0)
    with pytest.raises(TypeError, match="strength"):
        KroneckerEWC(model, factors, strength="big")
    with pytest.raises(ValueError, match="gamma"):
        KroneckerEWC(model, factors, strength=1.0, gamma=0.0)
    with pytest.raises(ValueError, match="damping"):
        KroneckerEWC(model, factors, strength=1.0, damping=-1e-3)
    with pytest.raises(TypeError, match="factors"):
        KroneckerEWC(model, "factors", strength=1.0)
    with pytest.raises(ValueError, match="factors has 2 pairs but the model has 3 Dense layers"):
        KroneckerEWC(model, factors[:2], strength=1.0)
    with pytest.raises(ValueError, match="factors do not match layer"):
        KroneckerEWC(model, [factors[1], factors[0], factors[2]], strength=1.0)
    nan = [(np.full_like(a, np.nan), g) for a, g in factors]
    with pytest.raises(ValueError, match="factors must be finite"):
        KroneckerEWC(model, nan, strength=1.0)
    with pytest.raises(ValueError, match="max_params"):
        full_fisher(model, (x, y), max_params=10)
    with pytest.raises(ValueError, match="terms"):
        nearest_kronecker([])


def test_kronecker_penalty_saves_and_loads_through_ewcbook_state(tmp_path):
    keras.utils.set_random_seed(0)
    model = eb.mlp(3, (4,), input_shape=(5,))
    x = np.random.default_rng(0).normal(size=(16, 5)).astype("float32")
    y = np.arange(16) % 3
    penalty = eb.kfac.KroneckerEWC(model, eb.kfac.kronecker_factors(model, (x, y), seed=0), strength=2.0)
    for v in model.trainable_variables:
        v.assign(v.numpy() + 0.1)
    eb.save_state(tmp_path / "kfac.npz", [penalty])
    (loaded,) = eb.load_state(tmp_path / "kfac.npz", model)
    assert type(loaded) is eb.kfac.KroneckerEWC
    assert float(loaded()) == pytest.approx(float(penalty()), rel=1e-6) and float(penalty()) > 0
