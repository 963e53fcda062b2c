"""Local Sphinx extension of the book (enabled in _config.yml, sphinx.local_extensions).

Three fixes to what Jupyter Book 1 / Sphinx 7 produce, and one addition:

1. Pages that paste glue values from other notebooks (book/intro.md uses
   ``{glue:text}`01_forgetting.ipynb::ch1_joint_acc_a:.3f```) are rebuilt when
   those notebooks change. myst-nb resolves such references at write time, but
   Sphinx only re-reads a page whose own source changed, so after re-executing a
   chapter an incremental ``jupyter-book build`` would keep the old numbers in
   the intro. Each referenced notebook becomes a dependency of the page.

2. Inline scripts are not repeated. Extensions that call
   ``app.add_js_file(None, body=...)`` after the builder is set up
   (sphinx-thebe, sphinx-togglebutton) get their script twice in every page,
   once as filename None and once as '', which Sphinx does not see as the same
   asset; sphinx-thebe's copy declares ``const THEBE_JS_URL`` twice, a
   SyntaxError in the browser console. tests/test_book_html.py fails on
   console errors.

3. In the PDF, a chapter is not numbered twice. The chapters' titles carry
   their number ("1. Catastrophic forgetting"), which the HTML book needs;
   LaTeX numbers chapters itself, so the PDF would read "Chapter 1. 1.
   Catastrophic forgetting" in every running head. The number is dropped
   from the title of each document the LaTeX builder assembles (the HTML
   build's doctrees are untouched: this runs on the LaTeX builder's copy).

4. The HTML book carries the PDF edition. ``make pdf`` (or ``make book``)
   builds ``_build/latex/ewcbook.pdf`` first; the HTML build then copies it
   to ``_build/html/ewcbook.pdf``, which the landing page links to. Without
   a PDF beside it (``make html`` alone, no TeX), the HTML build says so.
"""

from __future__ import annotations

import pathlib
import re
import shutil

from docutils import nodes
from myst_nb.ext.glue.utils import PendingGlueReference
from sphinx import addnodes
from sphinx.util import logging

LOGGER = logging.getLogger(__name__)
PDF_NAME = "ewcbook.pdf"

CHAPTER_NUMBER = re.compile(r"^\d+\.\s+")


def _note_glue_sources(app, doctree) -> None:
    env = app.env
    for refdoc in sorted({node.refdoc for node in doctree.findall(PendingGlueReference)}):
        env.note_dependency(str(env.doc2path(refdoc)))


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        filename = getattr(script, "filename", script) or ""
        attributes = getattr(script, "attributes", {})
        key = (filename, tuple(sorted((k, str(v)) for k, v in attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def _unnumber_chapters(app, doctree, docname) -> None:
    if app.builder.format != "latex":
        return
    for start in doctree.findall(addnodes.start_of_file):
        section = next(iter(start.findall(nodes.section)), None)
        if section is None or not isinstance(section[0], nodes.title):
            continue
        title = section[0]
        first = title[0] if len(title) else None
        if isinstance(first, nodes.Text) and CHAPTER_NUMBER.match(first):
            title.replace(first, nodes.Text(CHAPTER_NUMBER.sub("", first, count=1)))


def _copy_pdf(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    pdf = pathlib.Path(app.outdir).parent / "latex" / PDF_NAME
    if pdf.exists():
        shutil.copyfile(pdf, pathlib.Path(app.outdir) / PDF_NAME)
    else:
        LOGGER.info(f"no {pdf}: the site links to {PDF_NAME} without it (make pdf builds it)")


def setup(app):
    app.connect("doctree-read", _note_glue_sources)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("doctree-resolved", _unnumber_chapters)
    app.connect("build-finished", _copy_pdf)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
