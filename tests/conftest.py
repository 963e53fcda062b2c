"""Shared fixtures: MNIST availability and running chapters with papermill."""

from __future__ import annotations

import ast
import functools
import os
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
EXECUTED = ROOT / "_build" / "executed"  # what `make check` (nbval) last executed, see tests/nbval_record.py
GLUE_PREFIX = "application/papermill.record/"
FULL_RUNS = ["committed", "executed"]


def toc_documents() -> list[str]:
    """The documents of _toc.yml in reading order, as paths without extension (book/intro, ...)."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    docs = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                docs.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return docs


def mnist_error() -> str | None:
    """None if tfds.load("mnist") works here (from its cache, or by downloading), else why not."""
    from ewcbook.data import MNISTUnavailableError, load_mnist

    try:
        load_mnist("test")
    except MNISTUnavailableError as error:
        return str(error)
    return None


def pytest_collection_modifyitems(config, items):
    """Tests marked `mnist` (and chapters run on MNIST) skip when MNIST cannot be had,
    unless EWCBOOK_REQUIRE_MNIST=1 (set by CI), where they run and fail."""
    needing = [item for item in items if "mnist" in item.keywords]
    if not needing or os.environ.get("EWCBOOK_REQUIRE_MNIST") == "1":
        return
    error = mnist_error()
    if error is not None:
        for item in needing:
            item.add_marker(pytest.mark.skip(reason=error))


def glued_values(notebook) -> dict:
    """{name: value} of everything a notebook glued with myst_nb.glue.

    Values are parsed from their text/plain repr with ast.literal_eval (numbers,
    strings, lists, dicts); anything else is kept as its repr string.
    """
    values = {}
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name is None:
                continue
            data = out["data"]
            text = data.get("text/plain", data.get(GLUE_PREFIX + "text/plain"))
            try:
                values[name] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                values[name] = text
    return values


def full_run(chapter: str, source: str) -> dict:
    """Glued values of a chapter's full profile: as committed, or as executed by CI's nbval run.

    ``source="executed"`` reads ``_build/executed/book/<chapter>``; without it (or if it was executed
    from other code than the committed chapter) the test skips,
    unless EWCBOOK_REQUIRE_EXECUTED=1 (CI, after the nbval stage), where it fails. Use with
    ``@pytest.mark.parametrize("source", FULL_RUNS)`` so that every claim is checked on the
    published numbers and on the fresh run.
    """
    import nbformat

    path = (BOOK if source == "committed" else EXECUTED / "book") / chapter
    message = None
    if not path.exists():
        message = f"{path.relative_to(ROOT)} does not exist: run `make nbval` first"
    else:
        notebook = nbformat.read(path, as_version=4)
        committed = nbformat.read(BOOK / chapter, as_version=4)
        if [c.source for c in notebook.cells if c.cell_type == "code"] != [
            c.source for c in committed.cells if c.cell_type == "code"
        ]:
            message = f"{path.relative_to(ROOT)} was executed from older code: run `make nbval` again"
    if message:
        if os.environ.get("EWCBOOK_REQUIRE_EXECUTED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    values = glued_values(notebook)
    if not values:
        pytest.fail(f"{path.relative_to(ROOT)} holds no glued values: execute it (full profile)")
    return values


@functools.cache
def _run_chapter(name: str, params: tuple) -> dict:
    import tempfile

    import nbformat
    import papermill

    out = pathlib.Path(tempfile.mkdtemp()) / name
    papermill.execute_notebook(
        str(BOOK / name),
        str(out),
        parameters=dict(params),
        kernel_name="python3",
        cwd=str(BOOK),
        progress_bar=False,
    )
    return glued_values(nbformat.read(out, as_version=4))


@pytest.fixture(scope="session")
def run_chapter():
    """run_chapter("01_forgetting.ipynb", profile="smoke") -> glued values (cached per session)."""

    def run(name: str, **params) -> dict:
        params.setdefault("profile", "smoke")
        return _run_chapter(name, tuple(sorted(params.items())))

    return run


def small_permuted_tasks(count: int = 3, n: int = 64) -> list:
    """``count`` tiny permuted-MNIST-shaped tasks of random images (the first unpermuted), for sequence tests."""
    import ewcbook as eb  # the library's import (TensorFlow) only for the tests that use it

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, size=n)
    perms = [np.arange(784)] + [rng.permutation(784) for _ in range(count - 1)]
    return [eb.Task(f"P{k}", x, y, x[:16], y[:16], num_classes=10, permutation=perms[k]) for k in range(count)]
