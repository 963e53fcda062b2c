"""Consolidation state on disk: exact round trip, atomic write, refusal of mismatched models."""

import os

import keras
import numpy as np
import pytest

import ewcbook as eb


def _penalties():
    keras.utils.set_random_seed(0)
    model = eb.mlp(4, (6,), input_shape=(5,))
    rng = np.random.default_rng(0)
    fisher = [rng.random(v.shape).astype("float32") for v in model.trainable_variables]
    online = eb.OnlineEWC(model, fisher, strength=12.5, gamma=0.9)
    online.consolidate([f * 2 for f in fisher])
    return model, [eb.L2Anchor(model, 0.5), eb.EWC(model, fisher, 3.0), online]


def test_round_trip_is_exact(tmp_path):
    model, penalties = _penalties()
    path = tmp_path / "state.npz"
    eb.save_state(path, penalties)
    fresh = eb.mlp(4, (6,), input_shape=(5,))
    loaded = eb.load_state(path, fresh)
    assert [type(p) for p in loaded] == [type(p) for p in penalties]
    for old, new in zip(penalties, loaded):
        assert (new.strength, new.task_count, getattr(new, "gamma", None)) == (
            old.strength,
            old.task_count,
            getattr(old, "gamma", None),
        )
        for a, b in zip(old.anchors, new.anchors):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
        if old.importance is not None:
            for a, b in zip(old.importance, new.importance):
                np.testing.assert_array_equal(a.numpy(), b.numpy())
        assert new.variables == list(fresh.trainable_variables)
    fresh.set_weights(model.get_weights())
    for old, new in zip(penalties, loaded):
        assert float(old()) == float(new())


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    _, penalties = _penalties()
    path = tmp_path / "state.npz"
    eb.save_state(path, penalties[0])
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(OSError, match="disk full"):
        eb.save_state(path, penalties)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["state.npz"]


def test_mismatched_models_are_refused(tmp_path):
    _, penalties = _penalties()
    path = tmp_path / "state.npz"
    eb.save_state(path, penalties)
    with pytest.raises(ValueError, match="does not match"):
        eb.load_state(path, eb.mlp(4, (7,), input_shape=(5,)))
    with pytest.raises(ValueError, match="does not match"):
        eb.load_state(path, eb.mlp(4, (6,), input_shape=(5,), name="other"))


def test_bad_arguments_are_named(tmp_path):
    model, penalties = _penalties()
    with pytest.raises(TypeError, match="penalties"):
        eb.save_state(tmp_path / "s.npz", [])
    with pytest.raises(ValueError, match="path"):
        eb.save_state(tmp_path / "s.pkl", penalties)
    missing = tmp_path / "no such folder" / "s.npz"
    with pytest.raises(FileNotFoundError, match="no such folder.*does not exist") as info:
        eb.save_state(missing, penalties)
    assert "tmp" not in str(info.value).replace(str(tmp_path), "")  # names the path given, not a temporary file
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="not an ewcbook"):
        eb.load_state(tmp_path / "other.npz", model)
    with pytest.raises(TypeError, match="model"):
        eb.load_state(tmp_path / "other.npz", "model")


def test_a_file_that_is_not_an_npz_is_refused_with_a_clear_message(tmp_path):
    model, _ = _penalties()
    for name, content in (("text.npz", b"not a numpy file at all"), ("empty.npz", b"")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=r"path .* is not an ewcbook consolidation file \(.npz written by"):
            eb.load_state(tmp_path / name, model)


def test_merged_per_task_penalties_round_trip(tmp_path):
    model, _ = _penalties()
    rng = np.random.default_rng(2)
    ewc = eb.EWC(model, [rng.random(v.shape).astype("float32") for v in model.trainable_variables], 2.0)
    for v in model.trainable_variables:
        v.assign(v.numpy() + 0.1)
    ewc.consolidate([rng.random(v.shape).astype("float32") for v in model.trainable_variables])
    moving = eb.L2Anchor(model, 1.5, moving=True)
    eb.save_state(tmp_path / "s.npz", [ewc, moving])
    loaded = eb.load_state(tmp_path / "s.npz", model)
    assert loaded[0].task_count == 2 and loaded[1].moving is True
    assert float(loaded[0]()) == pytest.approx(float(ewc()), rel=1e-6)
    assert float(loaded[0].constant.numpy()) == float(ewc.constant.numpy())


def test_a_penalty_of_ones_own_is_saved_and_loaded_by_its_kind(tmp_path):
    model, _ = _penalties()

    class Scaled(eb.EWC):
        kind = "scaled_ewc"

    penalty = Scaled(model, [np.ones(v.shape, np.float32) for v in model.trainable_variables], 2.0)
    eb.save_state(tmp_path / "s.npz", penalty)
    with pytest.raises(ValueError, match="custom_penalties"):
        eb.load_state(tmp_path / "s.npz", model)
    (loaded,) = eb.load_state(tmp_path / "s.npz", model, custom_penalties={"scaled_ewc": Scaled})
    assert type(loaded) is Scaled and float(loaded()) == float(penalty())
    with pytest.raises(TypeError, match="penalties"):
        eb.save_state(tmp_path / "t.npz", [lambda: 0.0])
