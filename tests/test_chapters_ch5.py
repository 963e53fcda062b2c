"""ewcbook.chapters.ch5: paired differences and verdicts, selection, importances, and the two-head plumbing."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from published import NUMBER

import ewcbook as eb
from ewcbook.chapters import ch5, style


def rows_of(means: dict, setting="one head") -> list[dict]:
    """{method: [mean per seed]} -> rows as seed_runs returns them."""
    return [
        dict(setting=setting, method=m, strength=0.0, seed=s, acc_A=v, acc_B=v, mean=v)
        for m, values in means.items()
        for s, v in enumerate(values)
    ]


def test_paired_difference_pairs_by_seed_and_verdicts_follow_the_interval():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.6, 0.8, 10)  # a large spread between seeds, a small, steady difference
    rows = rows_of({"l2": base, "ewc": base + 0.01 + rng.normal(0, 0.002, 10), "none": base - 0.05})
    better = ch5.difference(rows, "one head", "ewc", "l2")
    assert better.kind == "better" and better.low > 0 and better.seeds == 10
    assert ch5.sentence(better).startswith(f"EWC (sampled Fisher) beats the L2 anchor by {better.diff:.3f}")
    worse = ch5.difference(rows, "one head", "none", "l2")
    assert worse.kind == "worse"
    assert ch5.sentence(worse).startswith("the L2 anchor beats no penalty by 0.050")
    tie = ch5.difference(rows_of({"l2": base, "ewc": base + rng.normal(0, 0.01, 10)}), "one head",
                                       "ewc", "l2")  # fmt: skip
    text = ch5.sentence(tie)
    assert tie.kind == "inconclusive" and "are not resolved" in text and f"{tie.low:+.3f}" in text
    # a verdict and its interval use one sign convention: the winner first
    assert f"(95 % interval of L2 − none: {-worse.high:+.3f} to {-worse.low:+.3f}, 10 seeds)" in ch5.sentence(worse)
    assert f"EWC (sampled) − L2: {better.low:+.3f} to {better.high:+.3f}" in ch5.sentence(better)


def test_a_difference_within_the_margin_of_zero_is_not_resolved():
    # the interval excludes 0, but an end lies within ch5.MARGIN of it: another CPU could flip it
    d = ch5.Difference("ewc", "l2", 0.0067, 0.0047, 0.0087, 10)
    assert d.kind == "inconclusive"
    text = ch5.sentence(d)
    assert "are not resolved" in text
    assert "+0.005 to +0.009 (10 seeds); the interval does not clear 0 by more than 0.005" in text
    clear = ch5.Difference("ewc", "l2", 0.0077, 0.0057, 0.0097, 10)
    assert clear.kind == "better"
    # one wording whether the interval contains 0 or not: the sentence does not change when an end crosses 0
    straddles = ch5.sentence(ch5.Difference("ewc", "l2", 0.003, -0.001, 0.007, 10))
    assert NUMBER.sub("#", straddles) == NUMBER.sub("#", text)


def grid_rows(scores: dict, grid, noise=(-0.01, 0.0, 0.01)) -> list[dict]:
    return [
        dict(setting="one head", method=m, strength=lam, seed=s, acc_A=0.5, acc_B=v + e, mean=v + e)
        for m, values in scores.items()
        for lam, v in zip(grid, values)
        for s, e in enumerate(noise)
    ]


def test_dominance_sentence_follows_the_paired_best_points():
    grid = [0.1, 1.0, 10.0]
    rows = grid_rows({"l2": [0.7, 0.8, 0.6], "ewc": [0.65, 0.7, 0.7], "ewc_eps": [0.6, 0.79, 0.6]}, grid)
    assert ch5.best_point(rows, "one head", "ewc") == (1.0, pytest.approx(0.7))
    d = ch5.best_difference(rows, "one head", "l2", "ewc")
    assert d.diff == pytest.approx(0.1) and d.kind == "better"
    text = ch5.dominance_sentence(rows, "one head", ["l2", "ewc"])
    assert text.startswith("no other method reaches the L2 anchor's best point (0.800 at λ = 1; 3 selection seeds)")
    assert "EWC (sampled Fisher) 0.700 at λ = 1 (L2 − EWC (sampled): +0.100" in text
    rows = grid_rows({"l2": [0.7, 0.8, 0.6], "ewc_eps": [0.6, 0.85, 0.6]}, grid)
    text = ch5.dominance_sentence(rows, "one head", ["l2", "ewc_eps"])
    assert text.startswith("somewhere on the grid, some methods go above") and "(EWC (F + ε) − L2: +0.050" in text


def test_strong_end_sentence_and_ratio_text():
    rows = grid_rows({"l2": [0.9, 0.5, 0.21], "ewc": [0.9, 0.8, 0.6]}, [0.1, 1.0, 10.0], noise=(0.0, 0.0))
    text = ch5.strong_end_sentence(rows, "one head", ["l2", "ewc"], chance=0.2)
    assert text.startswith("at λ = 10, on validation images (chance is 0.2)")
    assert "the L2 anchor learns next to nothing of task B (0.210)" in text
    assert "EWC (sampled Fisher) still learns part of task B (0.600)" in text
    assert ch5.ratio_text(908.6) == "909 times more" and ch5.ratio_text(0.4) == "2.5 times less"
    with pytest.raises(ValueError, match="ratio"):
        ch5.ratio_text(0.0)


def test_select_keeps_the_weakest_strength_within_noise_of_the_best_and_flags_the_ends():
    grid = [0.1, 1.0, 10.0, 100.0]
    rows = [
        dict(setting="one head", method=m, strength=lam, seed=s, acc_A=0.5, acc_B=0.5, mean=score)
        for m, scores in {"l2": [0.6, 0.7, 0.5, 0.4], "ewc": [0.6, 0.55, 0.5, 0.4], "ewc_exact": [0.5, 0.6, 0.703, 0.7]}
        .items()
        for lam, score in zip(grid, scores)
        for s in (0, 1)
    ]
    n = 20_000  # noise band: sqrt(0.703 * 0.297 / 20000) + MARGIN = 0.0082
    assert ch5.select(rows, "one head", "l2", grid, n) == (1.0, True)
    assert ch5.select(rows, "one head", "ewc", grid, n) == (0.1, False)
    assert ch5.select(rows, "one head", "ewc_exact", grid, n) == (10.0, True)  # 0.703 and 0.7: within noise
    sentence = ch5.choice_sentence(rows, "one head", ["l2", "ewc_exact"], grid, n)
    assert "the L2 anchor, λ = 1 alone (best 0.700 at λ = 1)" in sentence
    assert "λ ∈ {10, 100} (best 0.703 at λ = 10)" in sentence and "20,000 validation images" in sentence
    sentence = ch5.edge_sentence({"l2": (1.0, True), "ewc": (0.1, False)})
    assert "EWC (sampled Fisher) (λ = 0.1)" in sentence and "L2" not in sentence
    assert "inside the grid" in ch5.edge_sentence({"l2": (1.0, True)})


def test_flat_sentence_names_the_curves_the_seeds_cannot_resolve():
    grid = [0.1, 1.0, 10.0]
    rows = [
        dict(setting="one head", method=m, strength=lam, seed=s, acc_A=0.5, acc_B=0.5, mean=score + noise)
        for m, scores in {"l2": [0.6, 0.8, 0.5], "ewc": [0.70, 0.71, 0.70]}.items()
        for lam, score in zip(grid, scores)
        for s, noise in ((0, -0.02), (1, 0.0), (2, 0.02))
    ]
    sentence = ch5.flat_sentence(rows, "one head", ["l2", "ewc"])
    assert "EWC (sampled Fisher)" in sentence and "L2" not in sentence and "spans 0.010" in sentence
    assert ch5.flat_sentence(rows, "one head", ["l2"]).startswith("Every method's criterion varies")


def test_importances_are_normalised_to_mean_one():
    rng = np.random.default_rng(1)
    fisher = {e: [rng.exponential(1e-4, (4, 3)), np.zeros(3)] for e in ("sampled", "exact", "empirical")}
    imp = ch5.importances(fisher)
    assert imp["l2"] is None
    for m in ("ewc", "ewc_exact", "ewc_empirical", "ewc_eps"):
        assert ch5.flat(imp[m]).mean() == pytest.approx(1.0, rel=1e-5)
    # F + ε with ε = mean(F) is the average of the EWC and L2 importances; an exactly zero Fisher stays zero in EWC
    np.testing.assert_allclose(ch5.flat(imp["ewc_eps"]), (ch5.flat(imp["ewc"]) + 1) / 2, rtol=1e-5)
    assert np.all(imp["ewc"][1] == 0) and np.all(imp["ewc_eps"][1] == 0.5)
    with pytest.raises(ValueError, match="zero everywhere"):
        ch5.importances({e: [np.zeros(3)] for e in ("sampled", "exact", "empirical")})


def random_task(name, n=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    return eb.Task(name, x, rng.integers(0, 5, n), x[:64], rng.integers(0, 5, 64), num_classes=5)


def test_two_head_runs_match_one_network_trained_alone():
    task_a, task_b = random_task("A", seed=0), random_task("B", seed=1)
    eb.set_seed(0)
    learner = eb.ContinualModel(eb.mlp())
    eb.fit_task(learner, task_a, epochs=1, seed=0)
    theta_a = learner.network.get_weights()
    accs = ch5.two_head_runs(
        learner.network, [task_a, task_b], [("none", 0.0)], {}, epochs=1, seed=3, read=[task_a, task_b]
    )
    assert accs.shape == (1, 4) and np.array_equal(accs[:, 2:], accs[:, :2])  # read: the same copies, more tasks
    # the same run by hand: trunk from A, a fresh head B, trained alone; A read through head A
    head_b = tf.keras.initializers.GlorotUniform(seed=3)((128, 5)).numpy()
    net_b = eb.mlp()
    net_b.set_weights(theta_a[:2] + [head_b, np.zeros(5, np.float32)])
    eb.fit_task(eb.ContinualModel(net_b), task_b, epochs=1, seed=3)
    net_a = eb.mlp()
    net_a.set_weights(net_b.get_weights()[:2] + theta_a[2:])
    expected = [eb.evaluate_tasks(eb.ContinualModel(net_a), [task_a])[0],
                eb.evaluate_tasks(eb.ContinualModel(net_b), [task_b])[0]]  # fmt: skip
    np.testing.assert_allclose(accs[0, :2], expected, atol=2 / 64)
    assert np.array_equal(learner.network.get_weights()[0], theta_a[0])  # the starting network is left alone


def test_two_head_loss_reads_each_label_at_its_own_head():
    logits = tf.constant(np.random.default_rng(2).normal(size=(4, 10)), tf.float32)
    y = tf.constant([0, 4, 5, 9])
    loss = ch5.TwoHeadLoss(eb.mlp(10)).compute_loss(y=y, y_pred=logits)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits
    expected = np.mean(
        [ce(labels=[0, 4], logits=logits[:2, :5]).numpy(), ce(labels=[0, 4], logits=logits[2:, 5:]).numpy()]
    )
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_one_colour_per_method_for_the_whole_book():
    colours = [colour for colour, _ in style.METHOD_STYLE.values()]
    names = [name for _, name in style.METHOD_STYLE.values()]
    assert len(set(colours)) == len(colours) and len(set(names)) == len(names)
    assert not set(colours) & set(style.TASK_COLORS)


def test_colours_and_labels():
    assert ch5.color("l2") == style.color("l2") and ch5.label("ewc_exact") == style.label("ewc_exact")
    assert ch5.label("ewc") == "EWC (sampled Fisher)"  # the chapter names the estimator it compares
    assert len({ch5.color(m) for m in ch5.METHODS}) == len(ch5.METHODS)
    with pytest.raises(ValueError, match="method"):
        ch5.label("nope")


def test_seed_runs_in_two_processes_give_the_same_rows_as_in_one():
    """seed_runs(workers=2): every row (accuracies, read-only test columns, joint) as in this process."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(96, 28, 28, 1), dtype=np.uint8)
    tasks = [eb.Task(name, x[k::2], rng.integers(0, 2, 48), x[k::2][:20], rng.integers(0, 2, 20), num_classes=2)
             for k, name in enumerate("AB")]
    kwargs = dict(seeds=[0, 1], epochs=(1, 1), one_head=[("none", 0.0), ("ewc", 1.0)], two_heads=[("l2", 0.5)],
                  joint=True, read=tasks)
    here = ch5.seed_runs(tasks, **kwargs)
    there = ch5.seed_runs(tasks, workers=2, **kwargs)
    assert here == there and len(here) == 2 * (2 + 1 + 2)
    with pytest.raises(ValueError, match="workers"):
        ch5.seed_runs(tasks, workers=0, **kwargs)
