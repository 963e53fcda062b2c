"""How fast is the diagonal Fisher? Timed against one training epoch.

On task A's full training set (29,492 images) and the seed's 784-128-5 MLP:
one training epoch (batch 128, Adam, after the step is traced), the fast Fisher for each estimator, the
vectorised fallback, and a per-example loop on a sample (scaled to the whole
set). Every timing is the second of two runs, so tracing is not counted.

Then the same for a small CNN (Conv2D 32 and 64, 3x3, each with 2x2 max
pooling, Dense 128, 5 logits) on the first ``--cnn-images`` (3,000) images of
task A: one training epoch over them (batch 128, Adam) against the fast
Fisher of each estimator over the same images (given as arrays, so in
batches of :func:`ewcbook.fisher.default_batch_size`), and the vectorised
path on a sample, scaled. The CPU may be shared, so the CNN's timings are
the best of three runs after the tracing one.

    TFDS_DATA_DIR=... python benchmarks/fisher.py [--cnn-only] [--cnn-images N]

The MLP's last line prints the two ratios of its goals (default estimator,
all of task A): ``fast/epoch`` (goal <= 0.5) and ``fallback/fast`` (goal >= 30);
the CNN's ``cnn_fast/epoch`` (goal <= 1.5) and ``cnn_vectorized/fast``.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import ewcbook as eb  # noqa: E402

LOOP_SAMPLE = 200
CNN_IMAGES = 3000
CNN_VECTORIZED_SAMPLE = 256


def timed(fn, warmup=None, repeats=1):
    """Seconds of one call of ``fn`` after a warm-up call (``warmup``, or ``fn`` itself) that traces
    (the fastest of ``repeats`` calls)."""
    (warmup or fn)()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def fisher(learner, data, **kwargs):
    return lambda: eb.diagonal_fisher(learner, data, seed=0, **kwargs)


def print_table(rows, epoch):
    print("| algorithm | examples | seconds | / epoch |\n|---|---|---|---|")
    for name, count, seconds in rows:
        print(f"| {name} | {count} | {seconds:.2f} | {seconds / epoch:.2f} |")


def cnn() -> keras.Sequential:
    """The benchmark's CNN: Conv2D 32 and 64 (3x3, ReLU, each followed by 2x2 max pooling), Dense 128, 5 logits."""
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu", name="conv_1"),
            layers.MaxPooling2D(name="pool_1"),
            layers.Conv2D(64, 3, activation="relu", name="conv_2"),
            layers.MaxPooling2D(name="pool_2"),
            layers.Flatten(name="flatten"),
            layers.Dense(128, activation="relu", name="hidden_1"),
            layers.Dense(5, name="logits"),
        ],
        name="cnn",
    )


def cnn_benchmark(task_a, n: int) -> None:
    """The CNN's table and ratios, on the first ``n`` images of task A."""
    learner = eb.ContinualModel(cnn())
    train = task_a.dataset("train", batch_size=128, seed=1, limit=n)
    eb.fit_task(learner, task_a, epochs=1, data=train)  # compiles and traces the training step
    epoch = timed(lambda: learner.fit(train, epochs=1, verbose=0, shuffle=False), repeats=3)
    images = (task_a.inputs("train", n), task_a.arrays("train")[1][:n])
    rows = [(f"training epoch (batch 128, Adam), {n} images", n, epoch)]
    fast = {}
    for estimator in eb.fisher.ESTIMATORS:
        fast[estimator] = timed(fisher(learner, images, estimator=estimator, algorithm="fast"), repeats=3)
        rows.append((f"fast Fisher, {estimator}", n, fast[estimator]))
    sample = CNN_VECTORIZED_SAMPLE
    vectorized = timed(
        fisher(learner, images, algorithm="vectorized", num_samples=sample),
        fisher(learner, images, algorithm="vectorized", num_samples=8),
    ) * n / sample
    rows.append((f"vectorized, sampled (x {n / sample:.1f} from {sample})", n, vectorized))
    print(f"\nCNN (conv 32-64, dense 128, 5 outputs) on {n} images of task A")
    print_table(rows, epoch)
    print(f"cnn_fast/epoch={fast['sampled'] / epoch:.2f} (goal <= 1.5)")
    print(f"cnn_vectorized/fast={vectorized / fast['sampled']:.0f}")


def mlp_benchmark(task_a) -> None:
    """The MLP's table and ratios, on all of task A."""
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

    print_table(rows, epoch)
    print(f"exact/epoch={fast['exact'] / epoch:.2f} (goal <= 2.5)")
    print(f"fast/epoch={fast['sampled'] / epoch:.3f} fallback/fast={fallback / fast['sampled']:.1f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cnn-only", action="store_true", help="time the CNN only")
    parser.add_argument("--cnn-images", type=int, default=CNN_IMAGES, help="images of task A for the CNN")
    args = parser.parse_args(argv)
    eb.set_seed(0)
    task_a, _ = eb.split_mnist()
    if not args.cnn_only:
        mlp_benchmark(task_a)
    cnn_benchmark(task_a, args.cnn_images)


if __name__ == "__main__":
    main()
