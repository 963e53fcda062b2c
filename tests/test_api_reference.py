"""The API reference (book/api.md) documents the whole library, from its docstrings.

The page is MyST with ``{eval-rst}`` blocks of autodoc directives
(``automodule``, ``autofunction``, ``autoclass``, ``autoexception``,
``autodata``). These tests read those directives from the page's source and
check, with no build:

- every module of the library (but ``ewcbook.chapters``, the chapters' own
  helpers, and ``ewcbook.__main__``, the command line) has an ``automodule``
  and a module docstring;
- every public callable of a documented module (a function or class defined
  there whose name has no leading underscore) has a docstring and a directive
  of its own, and so does every name of ``ewcbook.__all__``;
- every documented name exists, and is documented once;
- the page is in _toc.yml.

That the built page renders an anchor for each of these names is checked on
the HTML, after the build, by tests/test_book_html.py (``make browser``), with
:func:`documented_names` from here.
"""

from __future__ import annotations

import importlib
import inspect
import pathlib
import pkgutil
import re

import pytest
from conftest import toc_documents

import ewcbook

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "api.md"
EXCLUDED = {"ewcbook.chapters", "ewcbook.__main__"}

_EVAL_RST = re.compile(r"^```\{eval-rst\}\n(.*?)^```", re.M | re.S)
# the name, without the explicit signature a directive may give (Keras classes: autodoc reads ``__new__``)
_DIRECTIVE = re.compile(r"^\.\. auto(module|function|class|exception|data|method|attribute)::\s+([\w.]+)", re.M)


def page_directives(text: str | None = None) -> list[tuple[str, str]]:
    """``(kind, qualified name)`` of every autodoc directive in the page's ``{eval-rst}`` blocks."""
    text = PAGE.read_text() if text is None else text
    return [match.groups() for block in _EVAL_RST.findall(text) for match in _DIRECTIVE.finditer(block)]


def documented_names() -> dict[str, str]:
    """Qualified name -> directive kind, for every object the page documents."""
    return {name: kind for kind, name in page_directives()}


def library_modules() -> list[str]:
    """The modules of the library that the reference must cover."""
    names = [f"ewcbook.{info.name}" for info in pkgutil.iter_modules(ewcbook.__path__)]
    return sorted(name for name in names if name not in EXCLUDED)


def public_callables(module_name: str) -> list[str]:
    """Qualified names of the functions and classes that ``module_name`` defines, without a leading underscore.

    An alias (``old_name = new_name``) counts as the object it names.
    """
    module = importlib.import_module(module_name)
    names = [
        f"{module_name}.{getattr(obj, '__qualname__', name)}"
        for name, obj in vars(module).items()
        if not name.startswith("_")
        and callable(obj)
        and not inspect.ismodule(obj)
        and getattr(obj, "__module__", None) == module_name
    ]
    return list(dict.fromkeys(names))


def _resolve(qualified: str):
    module_name, _, attribute = qualified.rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def _qualified(obj) -> str:
    return obj.__name__ if inspect.ismodule(obj) else f"{obj.__module__}.{obj.__qualname__}"


def test_page_is_in_the_toc():
    assert "book/api" in toc_documents(), "book/api.md is not listed in _toc.yml"


def test_page_title():
    assert PAGE.read_text().startswith("# API reference\n")


def test_every_module_is_documented():
    modules = {name for kind, name in page_directives() if kind == "module"}
    missing = [name for name in library_modules() if name not in modules]
    assert not missing, f"modules without `.. automodule::` in {PAGE.relative_to(ROOT)}: {missing}"
    excluded = sorted(modules & EXCLUDED)
    assert not excluded, f"{excluded} are not part of the library's interface; leave them out of the reference"


@pytest.mark.parametrize("module_name", ["ewcbook", *library_modules()])
def test_module_docstring(module_name):
    doc = inspect.getdoc(importlib.import_module(module_name))
    assert doc and doc.strip(), f"{module_name} has no module docstring"


@pytest.mark.parametrize("module_name", library_modules())
def test_public_callables_documented(module_name):
    documented = documented_names()
    names = public_callables(module_name)
    undocumented = [name for name in names if not (inspect.getdoc(_resolve(name)) or "").strip()]
    assert not undocumented, f"public callables without a docstring: {undocumented}"
    missing = [name for name in names if name not in documented]
    assert not missing, (
        f"public callables of {module_name} missing from {PAGE.relative_to(ROOT)} "
        f"(add an autofunction/autoclass to its section): {missing}"
    )


@pytest.mark.parametrize("name", ewcbook.__all__)
def test_top_level_names_documented(name):
    obj = getattr(ewcbook, name)
    assert (inspect.getdoc(obj) or "").strip(), f"ewcbook.{name} has no docstring"
    qualified = _qualified(obj)
    assert qualified in documented_names(), f"ewcbook.{name} ({qualified}) is not documented in {PAGE.name}"


def test_top_level_names_in_summary_table():
    """The table at the top of the page lists every name of ``ewcbook.__all__`` that is no module."""
    text = PAGE.read_text()
    table = re.search(r"^\.\. autosummary::\n((?:   .*\n|\n)*)", text, re.M)
    assert table, "no `.. autosummary::` table of the top-level names"
    listed = {"ewcbook." + line.strip() for line in table.group(1).splitlines() if line.strip() and ":" not in line}
    objects = [getattr(ewcbook, name) for name in ewcbook.__all__]
    expected = {_qualified(obj) for obj in objects if not inspect.ismodule(obj)}
    assert sorted(expected - listed) == [], "names of ewcbook.__all__ missing from the summary table"
    assert sorted(listed - expected) == [], "the summary table lists names that are not in ewcbook.__all__"


def test_documented_names_exist_once():
    directives = page_directives()
    names = [name for _, name in directives]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    assert not duplicates, f"documented twice (duplicate object warnings): {duplicates}"
    for kind, name in directives:
        if kind == "module":
            importlib.import_module(name)
        else:
            _resolve(name)


def test_parser_reads_directives():
    text = (
        "intro\n```{eval-rst}\n.. automodule:: a.b\n\n.. autofunction:: a.b.f\n   :no-index:\n\n"
        ".. autoclass:: a.b.C(x, y=1)\n```\n"
    )
    assert page_directives(text) == [("module", "a.b"), ("function", "a.b.f"), ("class", "a.b.C")]
    assert page_directives("```python\n.. autofunction:: a.b.f\n```\n") == []
