"""A pytest plugin for nbval runs of the chapters: ``pytest -p nbval_record --nbval-lax book/*.ipynb``.

nbval runs each chapter once, in a fresh kernel, and compares the outputs of
the cells tagged ``nbval-check-output`` with the committed ones (text, with
numbers masked by ``tests/nbval_sanitize.cfg``). This plugin writes the outputs
that run produced to ``_build/executed/<path of the notebook>``, so that the
same single execution also feeds the numeric check of the published numbers
(``tests/test_published.py``), the chapters' claims and the HTML build.

It also leaves stderr out of nbval's comparison: TensorFlow writes start-up
lines there from C++ (time stamps, process ids, and not always from the same
cell), which no setting silences and which are not the chapter's output. The
executed copies keep them; the HTML book hides stderr (``nb_output_stderr``).
"""

from __future__ import annotations

import pathlib

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "_build" / "executed"
_RUNS: dict[str, dict[int, list]] = {}


def _without_stderr(outputs):
    return [out for out in outputs if not (out.get("output_type") == "stream" and out.get("name") == "stderr")]


def pytest_configure(config):
    from nbval.plugin import IPyNbCell

    compare = IPyNbCell.compare_outputs
    if getattr(compare, "ewcbook_without_stderr", False):
        return

    def compare_outputs(self, test, ref, skip_compare=None):
        return compare(self, _without_stderr(test), _without_stderr(ref), skip_compare)

    compare_outputs.ewcbook_without_stderr = True
    IPyNbCell.compare_outputs = compare_outputs


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    yield  # nbval has run the cell (even if it then failed the comparison)
    outputs = getattr(item, "test_outputs", None)
    if outputs is not None and hasattr(item, "cell_num"):
        _RUNS.setdefault(str(item.parent.path), {})[item.cell_num] = [dict(out) for out in outputs]


def pytest_sessionfinish(session):
    for path, outputs in _RUNS.items():
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        for number, cell in enumerate(code):
            cell.outputs = [nbformat.from_dict(out) for out in outputs.get(number, [])]
            cell.execution_count = number + 1 if number in outputs else None
        target = EXECUTED / pathlib.Path(path).resolve().relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, target)
