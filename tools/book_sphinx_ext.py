"""Local Sphinx extension of the book (enabled in _config.yml, sphinx.local_extensions).

Two fixes to what Jupyter Book 1 / Sphinx 7 produce:

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
"""

from __future__ import annotations

from myst_nb.ext.glue.utils import PendingGlueReference


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


def setup(app):
    app.connect("doctree-read", _note_glue_sources)
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
