"""The conventions of CONTRIBUTING.md, checked on every document of _toc.yml.

Each chapter notebook must have: a Markdown "Open in Colab" link to its own
path in the repository of _config.yml (repository.url, branch, path_to_book);
an install cell that pip-installs ``git+<repository.url>`` only when
``"google.colab" in sys.modules``; exactly one ``parameters`` cell setting
``profile = "full"``; a python3 kernelspec; no stored errors; no Keras
per-batch progress bars in its outputs; at least one cell tagged
``nbval-check-output``; no image loaded from the network. Every
``{cite}`` key of every document must be in the book's .bib files, and every
glue value that a Markdown page pastes from a chapter
(``{glue:text}`01_forgetting.ipynb::key```) must be glued in that chapter's
stored outputs.

A document listed in _toc.yml that does not exist fails its tests.
"""

from __future__ import annotations

import ast
import pathlib
import re
import urllib.parse

import nbformat
import pytest
import yaml
from conftest import glued_values, toc_documents

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPO_URL = CONFIG["repository"]["url"].rstrip("/").removesuffix(".git")
BRANCH = CONFIG["repository"].get("branch", "main")
PATH_TO_BOOK = CONFIG["repository"].get("path_to_book", "").strip("/")
OWNER_REPO = urllib.parse.urlparse(REPO_URL).path.strip("/")

# {cite}`a`, {cite:p}`a,b`, {cite:t}`a`, {cite:ps}`a`...
CITE = re.compile(r"\{cite(?::\w+)?\}`([^`]+)`")
# {glue:text}`doc.ipynb::key:.3f`, {glue}`doc.ipynb::key`, {glue:any}`...`
GLUE_REF = re.compile(r"\{glue(?::\w+)?\}`([^`:]+\.ipynb)::([^`:]+)(?::[^`]*)?`")
# Keras per-batch progress bars: "12/469 ━━━━━━━━━━━━━━━━━━━━ 1s 3ms/step"
PROGRESS_BAR = re.compile(r"━|\r|\d+/\d+ \[=*[>.]")
REMOTE_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*https?://|<img[^>]+src=[\"']https?://", re.I)


DOCS = toc_documents()


def _source(doc: str) -> pathlib.Path:
    for ext in (".ipynb", ".md"):
        path = ROOT / (doc + ext)
        if path.exists():
            return path
    pytest.fail(f"{doc} is listed in _toc.yml but neither {doc}.ipynb nor {doc}.md exists")


def _notebook(doc: str):
    path = _source(doc)
    assert path.suffix == ".ipynb", f"{path.name} is not a notebook"
    return nbformat.read(path, as_version=4)


def _colab_url(doc: str) -> str:
    path = f"{PATH_TO_BOOK}/{doc}.ipynb" if PATH_TO_BOOK else f"{doc}.ipynb"
    return f"https://colab.research.google.com/github/{OWNER_REPO}/blob/{BRANCH}/{path}"


def _tags(cell) -> list[str]:
    return list(cell.get("metadata", {}).get("tags", []))


# code that shows MyST syntax rather than using it: ``inline`` spans, ```python fences
_CODE_FENCE = re.compile(r"^(`{3,}|~{3,})(?!\{)[^\n]*\n.*?^\1[ \t]*$", re.M | re.S)
_CODE_SPAN = re.compile(r"(?<!`)``(?!`).+?(?<!`)``(?!`)", re.S)


def _markdown_texts(doc: str) -> list[str]:
    """Markdown of a document (its Markdown cells), without code fences and ``code spans``."""
    path = _source(doc)
    if path.suffix == ".md":
        texts = [path.read_text()]
    else:
        texts = [cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "markdown"]
    return [_CODE_SPAN.sub("", _CODE_FENCE.sub("", text)) for text in texts]


def _bib_keys() -> set[str]:
    keys = set()
    for bib in CONFIG.get("bibtex_bibfiles", []):
        keys |= set(re.findall(r"^\s*@\w+\s*\{\s*([^,\s]+)\s*,", (ROOT / bib).read_text(), re.M))
    return keys


def _glued_keys(notebook) -> set[str]:
    return {
        out.get("metadata", {}).get("scrapbook", {}).get("name")
        for cell in notebook.cells
        for out in cell.get("outputs", [])
        if out.get("metadata", {}).get("scrapbook", {}).get("name")
    }


def _ids(docs):
    return [pathlib.PurePosixPath(d).name for d in docs]


# Chapters are notebooks; the Markdown pages (intro, bibliography) only get the
# checks that apply to any document. A listed document that is missing counts
# as a notebook, and fails.
CHAPTERS = [doc for doc in DOCS if not (ROOT / (doc + ".md")).exists()]
documents = pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
notebooks = pytest.mark.parametrize("doc", CHAPTERS, ids=_ids(CHAPTERS))


def test_config_repository_url():
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", REPO_URL), REPO_URL
    assert CONFIG["execute"]["execute_notebooks"] == "off", "chapters are rendered from their committed outputs"


@documents
def test_document_exists(doc):
    _source(doc)


@notebooks
def test_colab_link(doc):
    nb = _notebook(doc)
    expected = _colab_url(doc)
    markdown = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "markdown")
    assert f"]({expected})" in markdown, f"no Markdown link [Open in Colab]({expected})"
    links = set(re.findall(r"https://colab\.research\.google\.com/[^\s)\"'>]+", markdown))
    assert links == {expected}, f"Colab links to another notebook: {sorted(links - {expected})}"


@notebooks
def test_install_cell(doc):
    nb = _notebook(doc)
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    install = [i for i, cell in enumerate(code) if f"git+{REPO_URL}" in cell.source]
    assert len(install) == 1, f"expected one code cell installing git+{REPO_URL}, found {len(install)}"
    lines = code[install[0]].source.splitlines()
    guard = [i for i, line in enumerate(lines) if re.fullmatch(r"if [\"']google\.colab[\"'] in sys\.modules:", line)]
    assert guard, 'the install cell must be guarded by `if "google.colab" in sys.modules:`'
    assert any(line.strip() == "import sys" for line in lines[: guard[0]]), "the install cell must import sys"
    body = []
    for line in lines[guard[0] + 1 :]:
        if line and not line[0].isspace():
            break
        body.append(line)
    assert any(f"git+{REPO_URL}" in line and "pip install" in line for line in body), (
        f"`%pip install ... git+{REPO_URL}` must be inside the google.colab guard"
    )
    params = [i for i, cell in enumerate(code) if "parameters" in _tags(cell)]
    assert not params or install[0] < params[0], "the install cell comes before the parameters cell"


@notebooks
def test_parameters_cell(doc):
    nb = _notebook(doc)
    cells = [cell for cell in nb.cells if "parameters" in _tags(cell)]
    assert len(cells) == 1, f"expected exactly one cell tagged `parameters`, found {len(cells)}"
    assert cells[0].cell_type == "code"
    profiles = [
        node.value.value
        for node in ast.parse(cells[0].source).body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "profile" for t in node.targets)
        and isinstance(node.value, ast.Constant)
    ]
    assert profiles == ["full"], f'the parameters cell must set profile = "full" (found {profiles})'


@notebooks
def test_kernelspec(doc):
    nb = _notebook(doc)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@notebooks
def test_no_stored_errors(doc):
    nb = _notebook(doc)
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", (
                f"cell {index} stores an error: {out.get('ename')}: {out.get('evalue')}"
            )


@notebooks
def test_no_stored_warnings(doc):
    """No stored output prints a TensorFlow or AutoGraph warning: nbval compares stdout, and a warning
    that depends on the run (AutoGraph's, when a module's file changed under a running kernel) fails it."""
    nb = _notebook(doc)
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                text = out.get("text", "")
                assert "WARNING:" not in text and "AutoGraph" not in text, (
                    f"cell {index} stores a warning in its stdout: {text[:120]!r}"
                )


@notebooks
def test_no_progress_bars(doc):
    nb = _notebook(doc)
    for index, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            if out.get("output_type") != "stream":
                continue
            text = out.get("text", "")
            match = PROGRESS_BAR.search(text)
            assert match is None, (
                f"cell {index} prints a per-batch progress bar "
                f"({text[max(0, match.start() - 40) : match.end() + 40]!r}): use verbose=0 (or 2) in Keras calls"
            )


@notebooks
def test_nbval_checked_cell(doc):
    nb = _notebook(doc)
    tagged = [cell for cell in nb.cells if "nbval-check-output" in _tags(cell)]
    assert tagged, "tag at least one cell that prints the chapter's results `nbval-check-output`"
    assert all(cell.cell_type == "code" for cell in tagged)


@documents
def test_no_remote_images(doc):
    for text in _markdown_texts(doc):
        match = REMOTE_IMAGE.search(text)
        assert match is None, f"image loaded from the network (the built book must work offline): {match.group(0)}"


@documents
def test_citations_exist(doc):
    keys = _bib_keys()
    cited = {key.strip() for text in _markdown_texts(doc) for group in CITE.findall(text) for key in group.split(",")}
    missing = sorted(cited - keys)
    assert not missing, f"cited but not in {CONFIG.get('bibtex_bibfiles')}: {missing}"


@documents
def test_pasted_glue_values_exist(doc):
    """Values pasted from another notebook ({glue:text}`doc.ipynb::key`) are glued there."""
    here = _source(doc).parent
    missing = []
    for text in _markdown_texts(doc):
        for ref, key in GLUE_REF.findall(text):
            target = here / ref
            if not target.exists():
                missing.append(f"{ref} (no such notebook) for {key}")
            elif key not in _glued_keys(nbformat.read(target, as_version=4)):
                missing.append(f"{key} in {ref}")
    assert not missing, f"pasted glue values that the chapters do not glue: {missing}"


def test_bibliography_rendered_once():
    """One {bibliography} directive in the whole book: more give duplicate-citation warnings."""
    existing = [doc for doc in DOCS if any((ROOT / (doc + ext)).exists() for ext in (".ipynb", ".md"))]
    directive = re.compile(r"(?:```|:::)\{bibliography\}")
    count = sum(len(directive.findall(text)) for doc in existing for text in _markdown_texts(doc))
    assert count == 1, f"expected one {{bibliography}} directive in the book, found {count}"


# The page shows about 79 characters of a code line (1280 px wide); longer ones scroll off to the right.
PAGE_WIDTH = 79
HIDDEN_INPUT = {"remove-input", "remove-cell"}
# a notebook's shell or magic install line (a URL that cannot be cut)
INSTALL_LINE = re.compile(r"^\s*[%!]pip\b")
# inline or display math, which MathJax typesets (the asterisks and underscores in it are TeX's)
_MATH = re.compile(r"\$\$.+?\$\$|\$[^$]+\$", re.S)
# TeX-style sub- and superscripts typed outside math: Markdown reads "θ*_A ... θ*_{A,j}" as emphasis
TEX_OUTSIDE_MATH = re.compile(r"\*_|_\{|\^\{")
# a whole glued value set in bold: **{glue:text}`key`**
BOLD_GLUE = re.compile(r"\*\*\{glue(?::\w+)?\}`([^`:]+)(?::[^`]*)?`\*\*")


@notebooks
def test_visible_code_fits_the_page(doc):
    """Every line of a visible code cell fits the page: at most 79 characters."""
    long = []
    for index, cell in enumerate(_notebook(doc).cells):
        if cell.cell_type != "code" or HIDDEN_INPUT & set(_tags(cell)):
            continue
        for line in cell.source.splitlines():
            if len(line) > PAGE_WIDTH and not INSTALL_LINE.match(line):
                long.append(f"cell {index}: {len(line)} characters: {line[:60]}...")
    assert not long, f"{len(long)} visible code lines longer than {PAGE_WIDTH} characters: {long[:5]}"


@documents
def test_math_is_written_as_math(doc):
    """Sub- and superscripts in Markdown are inside $...$, where MathJax reads them, not Markdown."""
    found = []
    for text in _markdown_texts(doc):
        prose = _MATH.sub("", text)
        for match in TEX_OUTSIDE_MATH.finditer(prose):
            found.append(prose[max(0, match.start() - 25) : match.end() + 10].replace("\n", " "))
    assert not found, f"math typed outside $...$: {found[:5]}"


@notebooks
def test_no_glued_sentence_in_bold(doc):
    """Numbers may be bold; a whole glued sentence in bold reads as shouting."""
    notebook = _notebook(doc)
    values = glued_values(notebook)
    bold = []
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for key in BOLD_GLUE.findall(cell.source):
                value = values.get(key)
                if isinstance(value, str) and len(value.split()) > 3:
                    bold.append(f"{key}: {value[:60]}")
    assert not bold, f"glued sentences set in bold: {bold}"


@notebooks
def test_each_glue_key_once(doc):
    """A key glued twice in one notebook is a duplicate-glue warning, which fails the -W builds."""
    names = [
        out.get("metadata", {}).get("scrapbook", {}).get("name")
        for cell in _notebook(doc).cells
        for out in cell.get("outputs", [])
    ]
    names = [name for name in names if name]
    twice = sorted({name for name in names if names.count(name) > 1})
    assert not twice, f"glued more than once: {twice}"
