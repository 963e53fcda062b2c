"""Kronecker factors for convolutions (KFC) and BatchNormalization blocks against their explicit forms."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import ewcbook as eb
from ewcbook.kfac import KroneckerEWC, full_fisher, kronecker_factors

L = keras.layers
SHAPE, CLASSES = (6, 6, 2), 3


def _data(n=5, seed=0, shape=SHAPE):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *shape)).astype("float32"), rng.integers(0, CLASSES, n)


def _cnn(norm=False):
    """Conv (same, stride 2) [BatchNormalization], conv (valid, no bias), Dense: trained a few steps."""
    keras.utils.set_random_seed(2)
    layers = [L.Conv2D(3, 3, strides=2, padding="same", activation="relu", name="conv_1")]
    layers += [L.BatchNormalization(momentum=0.5, name="norm")] if norm else []
    layers += [L.Conv2D(2, 2, use_bias=False, activation="tanh", name="conv_2"), L.Flatten()]
    layers += [L.Dense(CLASSES, name="logits")]
    model = keras.Sequential([keras.Input(SHAPE), *layers], name="cnn")
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*_data(n=16, seed=1), batch_size=16, epochs=3, verbose=0)
    return model


def _explicit_factors(model, x, labels_and_weights):
    """The factors of every layer, one example at a time, in float64: for a Conv2D layer Ω = mean Σ_p ā āᵀ
    (patches from tf.image.extract_patches) and Γ = mean Σ_c w_c 1/|T| Σ_p δ δᵀ; for a Dense layer K-FAC's;
    for BatchNormalization [[1]] and mean Σ_c w_c g gᵀ, g = (Σ_p δ x̂, Σ_p δ)."""
    sums = {}
    for i in range(len(x)):
        a, found = tf.constant(x[i : i + 1]), []  # (layer, ā of every position, its output z, x̂ or None)
        with tf.GradientTape(persistent=True) as tape:
            for layer in model.layers:
                x_hat = None
                if isinstance(layer, L.Conv2D):
                    k, s, r, pad = layer.kernel_size, layer.strides, layer.dilation_rate, layer.padding.upper()
                    bar = tf.image.extract_patches(a, [1, *k, 1], [1, *s, 1], [1, *r, 1], pad).numpy()
                    z = tf.nn.conv2d(a, layer.kernel, s, pad, dilations=r) + (layer.bias if layer.use_bias else 0)
                elif isinstance(layer, L.Dense):
                    bar, z = a.numpy(), tf.matmul(a, layer.kernel) + layer.bias
                elif isinstance(layer, L.BatchNormalization):
                    x_hat = (a - layer.moving_mean) / tf.sqrt(layer.moving_variance + layer.epsilon)
                    bar, z = np.ones(1), x_hat * layer.gamma + layer.beta
                else:
                    a = layer(a)
                    continue
                bar = bar.reshape(-1, bar.shape[-1]).astype(np.float64)
                if getattr(layer, "use_bias", False):
                    bar = np.hstack([bar, np.ones((len(bar), 1))])
                tape.watch(z)
                found.append((layer, bar, z, x_hat))
                a = z if x_hat is not None else layer.activation(z)
            log_p = tf.nn.log_softmax(a)[0]
            targets = [log_p[c] for c in range(CLASSES)]
        for layer, bar, _, _ in found:
            sums.setdefault(layer.name, [0.0, 0.0])[0] += bar.T @ bar
        for c, w in labels_and_weights(i):
            for layer, _, z, x_hat in found:
                d = tape.gradient(targets[c], z).numpy().astype(np.float64)
                if x_hat is None:
                    d = d.reshape(-1, d.shape[-1])
                    out = d.T @ d / len(d)  # 1/|T| Σ_p δ(p) δ(p)ᵀ (|T| = 1 for a Dense layer)
                else:
                    g = np.concatenate([(d * x_hat.numpy()).sum(axis=(0, 1, 2)), d.sum(axis=(0, 1, 2))])
                    out = np.outer(g, g)
                sums[layer.name][1] += w * out
    return [(a / len(x), g / len(x)) for a, g in sums.values()]


def _assert_close(actual, expected, rtol=1e-5):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * np.abs(expected).max())


def _weights(model, x, y, estimator):
    probs = tf.nn.softmax(model(x)).numpy()
    if estimator == "empirical":
        return lambda i: [(y[i], 1.0)]
    return lambda i: [(c, probs[i, c]) for c in range(CLASSES)]


@pytest.mark.parametrize("estimator", ["exact", "empirical"])
@pytest.mark.parametrize("norm", [False, True], ids=["conv", "conv_batchnorm"])
def test_factors_match_the_explicit_sums_over_positions(norm, estimator):
    model = _cnn(norm)
    x, y = _data()
    factors = kronecker_factors(model, (x, y), estimator=estimator, batch_size=2)  # batches of 2, 2 and 1
    reference = _explicit_factors(model, x, _weights(model, x, y, estimator))
    assert len(factors) == len(reference) == 3 + norm
    for (a, g), (a_ref, g_ref) in zip(factors, reference):
        _assert_close(a, a_ref)
        _assert_close(g, g_ref)
    shapes = [(a.shape, g.shape) for a, g in factors]
    assert shapes[0] == ((3 * 3 * 2 + 1,) * 2, (3, 3))  # Ω over kh·kw·c_in + 1 (the bias), Γ over c_out
    assert shapes[-2] == ((2 * 2 * 3,) * 2, (2, 2))  # conv_2 has no bias
    if norm:
        assert shapes[1] == ((1, 1), (6, 6))  # gamma and beta of 3 channels


def _vec_penalty(model, anchors, factors, strength):
    """λ/2 Σ_layers vec(ΔW̄)ᵀ (A ⊗ G) vec(ΔW̄), every W̄ built in NumPy and every A ⊗ G formed."""
    deltas = {id(v): v.numpy().astype(np.float64) - a for v, a in zip(model.trainable_variables, anchors)}
    total, k = 0.0, 0
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            delta = np.concatenate([deltas[id(layer.gamma)], deltas[id(layer.beta)]])[None]  # the row [γ, β]
        elif isinstance(layer, (L.Conv2D, L.Dense)):
            kernel = deltas[id(layer.kernel)].reshape(-1, layer.kernel.shape[-1])  # (kh·kw·c_in, c_out)
            delta = np.vstack([kernel, deltas[id(layer.bias)][None]]) if layer.use_bias else kernel
        else:
            continue
        a, g = (np.asarray(f, np.float64) for f in factors[k])
        k += 1
        total += delta.reshape(-1) @ np.kron(a, g) @ delta.reshape(-1)
    return 0.5 * strength * total


def test_penalty_is_the_explicit_kronecker_quadratic():
    model = _cnn(norm=True)
    factors = kronecker_factors(model, _data(), estimator="exact")
    penalty = KroneckerEWC(model, factors, strength=3.0)
    anchors = [v.numpy().astype(np.float64) for v in model.trainable_variables]
    assert float(penalty()) == 0.0
    rng = np.random.default_rng(3)
    for v in model.trainable_variables:
        v.assign(v.numpy() + 0.1 * rng.normal(size=v.shape).astype("float32"))
    np.testing.assert_allclose(float(penalty()), _vec_penalty(model, anchors, factors, 3.0), rtol=1e-4)


@pytest.mark.parametrize("estimator", ["exact", "empirical"])
def test_one_position_one_example_kfc_is_the_exact_block(estimator):
    # a 3x3 kernel on a 3x3 image: one output position, where KFC is K-FAC; one example: ā is fixed, so
    # E[vec(ā δᵀ) vec(ā δᵀ)ᵀ] = ā āᵀ ⊗ E[δ δᵀ] exactly
    keras.utils.set_random_seed(4)
    model = keras.Sequential([keras.Input((3, 3, 2)), L.Conv2D(4, 3, activation="relu"), L.Flatten(), L.Dense(3)])
    x, y = _data(n=1, shape=(3, 3, 2))
    (omega, gamma), _ = kronecker_factors(model, (x, y), estimator=estimator)
    block = full_fisher(model, (x, y), estimator=estimator)[: 19 * 4, : 19 * 4]  # the kernel row-major, then the bias
    _assert_close(np.kron(omega.numpy(), gamma.numpy()), block)


def test_batchnorm_block_is_the_exact_fisher_of_gamma_and_beta():
    model = _cnn(norm=True)
    x, y = _data(n=7)
    factors = kronecker_factors(model, (x, y), estimator="exact")
    sizes = [int(np.prod(v.shape)) for v in model.trainable_variables]
    start = sum(sizes[: [v.name for v in model.trainable_variables].index("gamma")])
    block = full_fisher(model, (x, y), estimator="exact")[start : start + 6, start : start + 6]
    a, g = factors[1]
    assert a.numpy().tolist() == [[1.0]]
    _assert_close(g, block)


def test_merging_saving_and_training_serve_cnns(tmp_path):
    model = _cnn(norm=True)
    penalty = KroneckerEWC(model, kronecker_factors(model, _data(), estimator="exact"), strength=2.0, gamma=0.5)
    rng = np.random.default_rng(5)
    for v in model.trainable_variables:
        v.assign(v.numpy() + 0.05 * rng.normal(size=v.shape).astype("float32"))
    penalty.consolidate(kronecker_factors(model, _data(seed=2), estimator="exact"))
    errors = penalty.merge_errors[0]
    assert len(errors) == 4 and errors[1] < 1e-6 and all(0 <= e < 1 for e in errors)  # BatchNormalization: exact
    for v in model.trainable_variables:
        v.assign(v.numpy() + 0.05 * rng.normal(size=v.shape).astype("float32"))
    eb.save_state(tmp_path / "kfc.npz", [penalty])
    fresh = _cnn(norm=True)
    fresh.set_weights(model.get_weights())
    (loaded,) = eb.load_state(tmp_path / "kfc.npz", fresh)
    assert float(penalty()) > 0 and float(loaded()) == pytest.approx(float(penalty()), rel=1e-6)
    assert loaded.task_count == 2
    with pytest.raises(ValueError, match="does not match the saved state"):
        eb.load_state(tmp_path / "kfc.npz", _cnn(norm=False))
    learner = eb.ContinualModel(fresh)
    learner.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    learner.penalties = [loaded]
    history = learner.fit(*_data(n=8), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["penalty"][-1]) and history.history["penalty"][-1] > 0


def test_grouped_convolutions_are_refused_naming_the_layer():
    model = keras.Sequential([keras.Input(SHAPE), L.Conv2D(4, 3, groups=2, name="grouped"), L.Flatten(), L.Dense(3)])
    with pytest.raises(ValueError, match=r"'grouped' \(Conv2D\) has groups=2"):
        kronecker_factors(model, _data())
    with pytest.raises(ValueError, match=r"'grouped' \(Conv2D\) has groups=2"):
        KroneckerEWC(model, [], strength=1.0)
