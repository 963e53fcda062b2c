"""The house of ewcbook: the library apart from the book's chapter helpers, imports that only go down.

README's "Project layout" describes the layers below; these tests hold the
code to them, reading the source (no module is run, but for the import test).
"""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "ewcbook"

#: The library's modules, bottom first: a module imports only modules of lower layers.
LAYERS = [
    ["checks"],
    ["utils", "data", "models", "optimizers"],
    ["fisher", "penalties", "distillation", "evaluation", "stats"],
    ["callbacks"],
    ["training"],
    ["protocol", "replay", "copies", "kfac"],
    ["state"],
    ["__init__"],
    ["__main__"],
]
LAYER = {name: depth for depth, names in enumerate(LAYERS) for name in names}
LIBRARY = sorted(p for p in PACKAGE.glob("*.py"))
CHAPTERS = sorted((PACKAGE / "chapters").glob("*.py"))


def _imports(path: pathlib.Path) -> list[tuple[ast.AST, str, list[str]]]:
    """(node, imported module, imported names) of every import in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node, node.module, [alias.name for alias in node.names]))
    return found


def _ewcbook_module(name: str, names: list[str]) -> list[str]:
    """The modules of ewcbook that an import of ``name`` (``from name import names``) loads."""
    if name == "ewcbook":
        return [n for n in names if (PACKAGE / f"{n}.py").exists()] or ["__init__"]
    if name.startswith("ewcbook."):
        return [name.split(".", 1)[1]]
    return []


def test_every_library_module_has_a_layer():
    assert sorted(p.stem for p in LIBRARY) == sorted(LAYER)


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.stem)
def test_the_library_imports_only_downwards_and_never_the_chapters(path):
    for node, module, names in _imports(path):
        assert not module.startswith("matplotlib"), f"{path.name} imports {module}"
        for target in _ewcbook_module(module, names):
            assert not target.startswith("chapters"), f"{path.name}:{node.lineno} imports the book's {module}"
            assert LAYER[target] < LAYER[path.stem], (
                f"{path.name}:{node.lineno} imports {target}, which is not below it (README, Project layout)"
            )


@pytest.mark.parametrize("path", LIBRARY + CHAPTERS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_no_private_names_across_modules_and_no_imports_inside_functions(path):
    tree = ast.parse(path.read_text())
    for node, module, names in _imports(path):
        if module.startswith("ewcbook"):
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{path.name}:{node.lineno} imports private {private} from {module}"
    modules = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
               and n.module.startswith("ewcbook") for a in n.names}
    modules |= {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
                if a.name.startswith("ewcbook")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            assert not node.attr.startswith("_"), f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}"
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            inner = [n for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))]
            assert not inner, f"{path.name}:{inner[0].lineno if inner else 0} imports inside {node.name}"


@pytest.mark.parametrize("path", [p for p in CHAPTERS if p.stem.startswith("ch")], ids=lambda p: p.stem)
def test_a_chapter_module_does_not_import_another_chapter(path):
    for node, module, names in _imports(path):
        for target in _ewcbook_module(module, names) + [f"chapters.{n}" for n in names if module == "ewcbook.chapters"]:
            if re.fullmatch(r"chapters\.ch\d+", target):  # a chapter's module, not a name like choice_resolved
                assert target == f"chapters.{path.stem}", f"{path.name}:{node.lineno} imports {target}"


def test_import_ewcbook_needs_neither_matplotlib_nor_the_chapters():
    """``pip install ewcbook`` without the book's extras: matplotlib cannot be imported, and the library works."""
    script = textwrap.dedent(
        """
        import importlib.abc, sys

        class NoMatplotlib(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "matplotlib" or name.startswith("matplotlib."):
                    raise ImportError(f"No module named {name!r} (blocked by the test)")

        sys.meta_path.insert(0, NoMatplotlib())
        import numpy as np
        import ewcbook as eb

        network = eb.mlp(3, (4,), input_shape=(5,))
        x, y = np.ones((8, 5), "float32"), np.arange(8) % 3
        penalty = eb.EWC(network, eb.diagonal_fisher(network, (x, y), seed=0), strength=1.0)
        assert float(penalty()) == 0.0
        loaded = sorted(name for name in sys.modules if name.startswith(("matplotlib", "ewcbook.chapters")))
        print("LOADED", loaded)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LOADED []" in done.stdout
