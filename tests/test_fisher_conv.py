"""The fast diagonal Fisher of convolutional networks against the per-example loop, and what it refuses."""

import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import ewcbook as eb
from ewcbook.fisher import conv_patches, default_batch_size
from ewcbook.models import dense_stack, layer_steps

L = keras.layers
SHAPE, CLASSES = (8, 8, 2), 3


def _data(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *SHAPE)).astype("float32"), rng.integers(0, CLASSES, n)


def _trained(model, steps=3):
    """``model`` after a few Adam steps on random data, so that BatchNormalization's moving statistics move."""
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(n=16, seed=1)
    model.fit(x, y, batch_size=16, epochs=steps, verbose=0)
    return model


def _model(name):
    keras.utils.set_random_seed(3)
    layers = {
        "valid": [L.Conv2D(3, 3, activation="relu"), L.Flatten(), L.Dense(CLASSES)],
        "same_stride_2_no_bias": [L.Conv2D(3, 3, strides=2, padding="same", use_bias=False, activation="tanh"),
                                  L.Flatten(), L.Dense(CLASSES)],
        "uneven_kernel_and_strides": [L.Conv2D(2, (2, 3), strides=(2, 1), padding="same"), L.ReLU(),
                                      L.Conv2D(3, (3, 1), strides=(1, 3)), L.Flatten(), L.Dense(CLASSES)],
        "dilation_2": [L.Conv2D(3, 3, dilation_rate=2, padding="same", activation="relu"),
                       L.Conv2D(2, 2, dilation_rate=(2, 1)), L.GlobalAveragePooling2D(), L.Dense(CLASSES)],
        "pooling": [L.Conv2D(4, 2, activation="relu"), L.MaxPooling2D(), L.Conv2D(3, 2, padding="same"),
                    L.AveragePooling2D(pool_size=2, strides=1), L.GlobalMaxPooling2D(), L.Dense(CLASSES)],
        "batchnorm": [L.Conv2D(4, 3, padding="same"), L.BatchNormalization(momentum=0.5), L.ReLU(),
                      L.MaxPooling2D(), keras.Sequential([L.Conv2D(3, 2), L.BatchNormalization(momentum=0.5,
                                                                                              center=False)]),
                      L.Flatten(), L.Dense(5, activation="relu"), L.BatchNormalization(momentum=0.5, scale=False),
                      L.Dropout(0.5), L.Dense(CLASSES)],
    }[name]
    model = keras.Sequential([keras.Input(SHAPE), *layers], name=name)
    return _trained(model) if name == "batchnorm" else model


def _assert_close(fisher, reference, rtol=1e-5):
    assert len(fisher) == len(reference)
    for f, r in zip(fisher, reference):
        f, r = np.asarray(f, np.float64), np.asarray(r, np.float64)
        assert f.shape == r.shape
        np.testing.assert_allclose(f, r, rtol=0, atol=rtol * np.abs(r).max())


def _fast_and_loop(model, **kwargs):
    x, y = _data()
    fast = eb.diagonal_fisher(model, (x, y), algorithm="fast", seed=4, batch_size=4, **kwargs)  # batches of 4 and 2
    loop = eb.diagonal_fisher(model, (x, y), algorithm="loop", seed=4, batch_size=4, **kwargs)
    return fast, loop


@pytest.mark.parametrize(
    "name", ["valid", "same_stride_2_no_bias", "uneven_kernel_and_strides", "dilation_2", "pooling", "batchnorm"]
)
def test_fast_conv_fisher_matches_the_per_example_loop(name):
    model = _model(name)
    _assert_close(*_fast_and_loop(model, estimator="exact"))


@pytest.mark.parametrize("estimator", ["sampled", "empirical"])
def test_every_estimator_matches_the_loop_through_batchnorm(estimator):
    model = _model("batchnorm")
    norm = [layer for kind, layer in layer_steps(model) if kind == "norm"]
    assert len(norm) == 3 and all(np.abs(layer.moving_variance.numpy() - 1).max() > 0.1 for layer in norm)
    _assert_close(*_fast_and_loop(model, estimator=estimator))


def test_units_mask_and_continual_model():
    model = _model("pooling")
    fast, loop = _fast_and_loop(eb.ContinualModel(model), estimator="exact", units=(1, 3))
    _assert_close(fast, loop)
    assert float(tf.reduce_sum(fast[-2][:, 0])) == float(fast[-1][0]) == 0.0  # nothing reaches the masked logit


def test_batchnorm_gamma_and_beta_are_in_the_fisher_and_its_moving_statistics_are_not():
    model = _model("batchnorm")
    fisher = eb.diagonal_fisher(model, _data(), estimator="exact")  # "auto" picks "fast"
    assert [f.shape for f in fisher] == [v.shape for v in model.trainable_variables]
    names = [v.name for v in model.trainable_variables]
    assert names.count("gamma") == 2 and names.count("beta") == 2 and "moving_mean" not in names


def test_frozen_layers_are_called_as_they_are():
    keras.utils.set_random_seed(5)
    frozen = L.Conv2D(3, 3, name="frozen_conv")
    model = keras.Sequential([keras.Input(SHAPE), frozen, L.BatchNormalization(), L.Conv2D(2, 2), L.Flatten(),
                              L.Dense(CLASSES)])
    frozen.trainable = False
    model.layers[1].trainable = False
    assert [kind for kind, _ in layer_steps(model)] == ["call", "call", "conv", "flatten", "dense"]
    _assert_close(*_fast_and_loop(model, estimator="exact"))


def test_conv_patches_are_those_of_extract_patches():
    rng = np.random.default_rng(0)
    for size, kernel, strides, dilation in [((8, 8), 3, 1, 1), ((7, 9), (2, 3), (2, 3), 1), ((7, 6), 3, 1, 2)]:
        for padding in ("valid", "same"):
            layer = L.Conv2D(2, kernel, strides=strides, dilation_rate=dilation, padding=padding)
            layer.build((None, *size, 3))
            a = tf.constant(rng.normal(size=(2, *size, 3)).astype("float32"))
            patches = conv_patches(layer, a)
            k, s, r = layer.kernel_size, layer.strides, layer.dilation_rate
            expected = tf.image.extract_patches(a, [1, *k, 1], [1, *s, 1], [1, *r, 1], padding.upper())
            np.testing.assert_array_equal(patches.numpy(), tf.reshape(expected, patches.shape).numpy())
            outputs = tf.matmul(patches, tf.reshape(layer.kernel, [-1, 2])) + layer.bias
            np.testing.assert_allclose(outputs.numpy().ravel(), layer(a).numpy().ravel(), atol=1e-5)


def test_default_batch_sizes():
    cnn, mlp = _model("valid"), eb.mlp(3, (4,), input_shape=SHAPE)
    assert default_batch_size(cnn, "fast") == 256 and default_batch_size(cnn, "vectorized") == 32
    assert default_batch_size(mlp, "fast") == default_batch_size(mlp, "vectorized") == 1024
    assert dense_stack(cnn) is None and dense_stack(mlp) is not None  # the stacked copies still take MLPs only


# --- refusals ---


def _grouped():
    keras.utils.set_random_seed(6)
    return keras.Sequential(
        [keras.Input(SHAPE), L.Conv2D(4, 3, groups=2, name="grouped_conv"), L.Flatten(), L.Dense(CLASSES)]
    )


def test_grouped_conv_is_refused_by_fast_and_auto_falls_back_with_one_warning():
    model = _grouped()
    x, y = _data()
    with pytest.raises(ValueError, match=r"algorithm='fast'.*'grouped_conv' \(Conv2D\) has groups=2"):
        eb.diagonal_fisher(model, (x, y), algorithm="fast")
    with pytest.warns(UserWarning, match=r"slow 'vectorized'.*'grouped_conv' \(Conv2D\) has groups=2"):
        auto = eb.diagonal_fisher(model, (x, y), estimator="exact")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per model
        again = eb.diagonal_fisher(model, (x, y), estimator="exact")
    loop = eb.diagonal_fisher(model, (x, y), estimator="exact", algorithm="loop")
    _assert_close(auto, loop)
    _assert_close(again, loop)


@pytest.mark.parametrize(
    "layer, match",
    [
        (L.Conv2D(2, 1, data_format="channels_first", name="nchw"),
         r"'nchw' \(Conv2D\) has data_format='channels_first'"),
        (L.LayerNormalization(name="layer_norm"), r"'layer_norm' \(LayerNormalization\) has trainable variables"),
        (L.BatchNormalization(axis=1, name="rows"), r"'rows' \(BatchNormalization\) normalises axis 1"),
    ],
)
def test_other_layers_are_refused_naming_them(layer, match):
    model = keras.Sequential([keras.Input(SHAPE), layer, L.Flatten(), L.Dense(CLASSES)])
    with pytest.raises(ValueError, match=match):
        layer_steps(model)
    with pytest.raises(ValueError, match=match):
        eb.diagonal_fisher(model, _data(), algorithm="fast")
