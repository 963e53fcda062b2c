"""Runs of the chapters in several processes: ``process_map(fn, jobs, workers)``.

A chapter's runs depend on their job alone (a seed sets every random number
and op determinism is on), so they give the same numbers in any process with
the same number of threads. The workers share the cores out: each has
``cores // workers`` threads (one each for two workers on two cores), since
two processes that each start a thread per core slow each other down
(chapter 6's runs took about 8 % longer so). A matrix product cut among
another number of threads may add in another order, so a run in one
process of a two-core machine can differ in the last digits from the same
run in a worker, and a learning curve can then drift apart. Two processes
keep two cores busy while one of them traces a training step in Python:
chapter 8 measured 694 s in one process and 461 s in two for the same runs.

``fn`` and the jobs must be picklable (top-level functions, dataclasses; not
lambdas), since the workers are started with ``spawn``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import os

import tensorflow as tf

from ewcbook.checks import integer


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _start_worker(threads: int):
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    tf.config.experimental.enable_op_determinism()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # no retracing notices from the workers


def process_map(fn, jobs, workers: int = 1) -> list:
    """``[fn(job) for job in jobs]``, in order; with ``workers`` > 1, in that many processes at once,
    each with ``cores() // workers`` threads (at least one)."""
    jobs = list(jobs)
    workers = integer(workers, "workers", minimum=1)
    if workers == 1 or len(jobs) < 2:
        return [fn(job) for job in jobs]
    context = multiprocessing.get_context("spawn")
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL")
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # the workers inherit it: no start-up log of theirs on the page
    try:
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                                    initargs=(max(1, cores() // workers),)) as pool:
            return list(pool.map(fn, jobs))
    finally:
        if level is None:
            del os.environ["TF_CPP_MIN_LOG_LEVEL"]
        else:
            os.environ["TF_CPP_MIN_LOG_LEVEL"] = level
