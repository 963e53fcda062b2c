"""The PDF edition (``make pdf``: _build/latex/ewcbook.pdf), read as a reader would.

Checks, with poppler's pdftotext, pdfinfo and pdfimages (Debian's
poppler-utils), and on the LaTeX log:

- every document of _toc.yml is in it, by its title;
- nothing is left unresolved: no glue role or ``{cite}`` printed as source,
  no ``??`` of an undefined LaTeX reference, no "undefined" reference or
  citation in the log;
- no character fell out for want of a glyph ("Missing character" in the
  log: XeLaTeX prints nothing in its place);
- every figure the chapters show is embedded (one image per displayed PNG
  output, at least);
- the HTML book, where it was built after the PDF, carries the same file
  and its landing page links to it.

The page count is printed (``pytest -s`` shows it; ``make pdf`` prints it too).

Without the PDF the tests skip, unless EWCBOOK_REQUIRE_PDF=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import nbformat
import pytest
from conftest import toc_documents

ROOT = pathlib.Path(__file__).resolve().parents[1]
LATEX = ROOT / "_build" / "latex"
PDF = LATEX / "ewcbook.pdf"
LOG = LATEX / "ewcbook.log"
HTML = ROOT / "_build" / "html"
REQUIRE = os.environ.get("EWCBOOK_REQUIRE_PDF", "") not in ("", "0")
HIDDEN_OUTPUT = {"remove-output", "remove-cell"}


def _need(path: pathlib.Path, what: str) -> None:
    if path.exists():
        return
    reason = f"{path.relative_to(ROOT)} is missing: {what}"
    if REQUIRE:
        pytest.fail(f"{reason} (EWCBOOK_REQUIRE_PDF is set, so this is an error, not a skip)")
    pytest.skip(reason)


def _poppler(tool: str, *args: str) -> str:
    if shutil.which(tool) is None:
        if REQUIRE:
            pytest.fail(f"{tool} not found: apt-get install poppler-utils")
        pytest.skip(f"{tool} not found (poppler-utils)")
    return subprocess.run([tool, *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def text() -> str:
    _need(PDF, "make pdf builds it")
    raw = _poppler("pdftotext", "-enc", "UTF-8", str(PDF), "-")
    return re.sub(r"\s+", " ", raw)


def _title(doc: str) -> str:
    """The document's first heading, without the chapter number the PDF leaves to LaTeX."""
    path = ROOT / f"{doc}.ipynb"
    if path.exists():
        sources = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown"]
    else:
        sources = [(ROOT / f"{doc}.md").read_text()]
    for source in sources:
        match = re.search(r"^# (.+)$", source, re.M)
        if match:
            return re.sub(r"^\d+\.\s+", "", match.group(1)).strip()
    raise AssertionError(f"{doc} has no title")


def test_page_count(text):
    info = _poppler("pdfinfo", str(PDF))
    pages = int(re.search(r"^Pages:\s+(\d+)", info, re.M).group(1))
    print(f"{PDF.relative_to(ROOT)}: {pages} pages")
    assert pages > 50, f"the PDF has only {pages} pages"


@pytest.mark.parametrize("doc", toc_documents())
def test_every_document_is_in_the_pdf(doc, text):
    title = re.sub(r"\s+", " ", _title(doc))
    plain = re.sub(r"[*_`$]", "", title)
    assert plain.lower() in text.lower(), f"the PDF has no {plain!r} ({doc})"


def test_nothing_left_unresolved(text):
    for pattern, what in [
        (r"\{glue(?::\w+)?\}", "a glue role printed as source"),
        (r"\{cite(?::\w+)?\}`", "a citation printed as source"),
        (r"\{doc\}`|\{ref\}`|\{numref\}`", "a cross-reference printed as source"),
        (r"\?\?", "'??', an undefined LaTeX reference"),
    ]:
        found = re.findall(r".{0,60}" + pattern + r".{0,40}", text)
        assert not found, f"{what}: {found[:3]}"


def test_latex_log_is_clean():
    _need(LOG, "make pdf writes it")
    log = LOG.read_text(errors="replace")
    undefined = re.findall(r"(?:Reference|Citation) `[^']*' on page \d+ undefined", log)
    assert not undefined, f"{len(undefined)} undefined references: {undefined[:5]}"
    missing = sorted(set(re.findall(r"Missing character: There is no (.+?) in font ([^!/]+)", log)))
    assert not missing, f"characters without a glyph, printed as nothing: {missing}"


def _shown_images() -> int:
    count = 0
    for doc in toc_documents():
        path = ROOT / f"{doc}.ipynb"
        if not path.exists():
            continue
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type != "code" or HIDDEN_OUTPUT & set(cell.metadata.get("tags", [])):
                continue
            count += sum("image/png" in output.get("data", {}) for output in cell.get("outputs", []))
    return count


def test_every_figure_is_embedded(text):
    listing = _poppler("pdfimages", "-list", str(PDF)).splitlines()[2:]
    embedded = sum(line.split()[2] == "image" for line in listing if len(line.split()) > 2)
    shown = _shown_images()
    assert shown > 0
    assert embedded >= shown, f"the chapters show {shown} figures, the PDF embeds {embedded} images"


def test_html_book_carries_the_pdf():
    _need(PDF, "make pdf builds it")
    if not (HTML / "index.html").exists() and not (HTML / "book" / "intro.html").exists():
        pytest.skip("no HTML book built")
    copy = HTML / PDF.name
    assert copy.exists(), f"_build/html has no {PDF.name}: build the PDF before the HTML (make pdf, then make html)"
    assert copy.read_bytes() == PDF.read_bytes(), "_build/html carries another PDF than _build/latex"
    intro = HTML / "book" / "intro.html"
    links = re.findall(r'href="([^"#?]*\.pdf)"', intro.read_text())
    targets = {(intro.parent / link).resolve() for link in links}
    assert copy.resolve() in targets, f"the landing page does not link to {copy.relative_to(ROOT)}: {links}"
