"""How fast is the diagonal Fisher? Timed against one training epoch.

On task A's full training set (29,492 images) and the seed's 784-128-5 MLP:
one training epoch (batch 128, Adam, after the step is traced), the fast Fisher for each estimator, the
vectorised fallback, and a per-example loop on a sample (scaled to the whole
set). Every timing is the second of two runs, so tracing is not counted.

    TFDS_DATA_DIR=... python benchmarks/fisher.py

The last line prints the two ratios of the issue's goals (default estimator,
all of task A): ``fast/epoch`` (goal <= 0.5) and ``fallback/fast`` (goal >= 30).
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ewcbook as eb  # noqa: E402

LOOP_SAMPLE = 200


def timed(fn, warmup=None):
    """Seconds of one call of ``fn`` after a warm-up call (``warmup``, or ``fn`` itself) that traces."""
    (warmup or fn)()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fisher(learner, data, **kwargs):
    return lambda: eb.diagonal_fisher(learner, data, seed=0, **kwargs)


def main():
    eb.set_seed(0)
    task_a, _ = eb.split_mnist()
    n = len(task_a.x_train)
    learner = eb.ContinualModel(eb.mlp())
    eb.fit_task(learner, task_a, epochs=1)  # compiles and traces the training step
    train = task_a.dataset("train", batch_size=128, seed=1)
    epoch = timed(lambda: learner.fit(train, epochs=1, verbose=0, shuffle=False))
    data = task_a.dataset("train", batch_size=1024, shuffle=False)
    rows = [("training epoch (batch 128, Adam)", n, epoch)]
    fast = {}
    for estimator in eb.fisher.ESTIMATORS:
        fast[estimator] = timed(
            lambda e=estimator: eb.diagonal_fisher(learner, data, estimator=e, algorithm="fast", seed=0)
        )
        rows.append((f"fast Fisher, {estimator}", n, fast[estimator]))
    fallback = timed(
        fisher(learner, data, algorithm="vectorized"), fisher(learner, data, algorithm="vectorized", num_samples=1024)
    )
    rows.append(("vectorized fallback, sampled", n, fallback))
    loop = timed(
        fisher(learner, data, algorithm="loop", num_samples=LOOP_SAMPLE),
        fisher(learner, data, algorithm="loop", num_samples=2),
    )
    rows.append((f"per-example loop, sampled (x {n / LOOP_SAMPLE:.0f} from {LOOP_SAMPLE})", n, loop * n / LOOP_SAMPLE))

    print("| algorithm | examples | seconds | / epoch |\n|---|---|---|---|")
    for name, count, seconds in rows:
        print(f"| {name} | {count} | {seconds:.2f} | {seconds / epoch:.2f} |")
    print(f"exact/epoch={fast['exact'] / epoch:.2f} (goal <= 2.5)")
    print(f"fast/epoch={fast['sampled'] / epoch:.3f} fallback/fast={fallback / fast['sampled']:.1f}")


if __name__ == "__main__":
    main()
