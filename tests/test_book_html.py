"""Browser check of the built book (_build/html), with no network.

Serves _build/html on 127.0.0.1 (a free port, Python's http.server in a
thread) and opens every page of _toc.yml in headless Debian chromium through
Playwright. Every request that is not to 127.0.0.1 is blocked, so a page that
needs the network fails. On each page it asserts:

- no console errors, no uncaught exceptions, no failed request, no HTTP error;
- math typeset by the site's own MathJax: every ``.math`` element holds an
  ``mjx-container`` and MathJax reported no ``mjx-merror``;
- every ``<img>`` loaded (``naturalWidth > 0``);
- on Markdown pages (book/intro), one pasted value per glue role of the source;
- on chapter notebooks, the Colab launch button and the title-cell link point
  to ``https://colab.research.google.com/github/<owner>/<repo>/blob/<branch>/book/<name>.ipynb``.

A full-page screenshot of each page goes to _build/screenshots/<name>.png.

Without the browser: the API reference (book/api.html) has an anchor for every
object that book/api.md documents (tests/test_api_reference.py), and napoleon
rendered the docstrings' Args, Returns and Raises sections.

Build the book first (``make html``). Without _build/html, chromium or
Playwright the tests skip, unless EWCBOOK_REQUIRE_BROWSER=1 (CI), where they fail.
Chromium: ``apt-get install -y chromium`` (or set EWCBOOK_CHROMIUM to another binary).
"""

from __future__ import annotations

import functools
import http.server
import os
import pathlib
import re
import threading
import urllib.parse

import pytest
import yaml
from conftest import toc_documents
from test_api_reference import documented_names

ROOT = pathlib.Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("EWCBOOK_CHROMIUM", "/usr/bin/chromium")
REQUIRE = os.environ.get("EWCBOOK_REQUIRE_BROWSER", "") not in ("", "0")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 90_000  # two shared CPU cores: MathJax on a long chapter can take a while


def _source(doc: str) -> pathlib.Path | None:
    for ext in (".ipynb", ".md"):
        if (ROOT / (doc + ext)).exists():
            return ROOT / (doc + ext)
    return None


def _colab_url(doc: str) -> str:
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    repo = config["repository"]
    owner_repo = urllib.parse.urlparse(repo["url"]).path.strip("/").removesuffix(".git")
    book = repo.get("path_to_book", "").strip("/")
    path = f"{book}/{doc}.ipynb" if book else f"{doc}.ipynb"
    colab = config["launch_buttons"]["colab_url"].rstrip("/")
    return f"{colab}/github/{owner_repo}/blob/{repo.get('branch', 'main')}/{path}"


def _unavailable(reason: str):
    if REQUIRE:
        pytest.fail(f"{reason} (EWCBOOK_REQUIRE_BROWSER is set, so this is an error, not a skip)")
    pytest.skip(reason)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 (the base class's name)
        pass


@pytest.fixture(scope="module")
def site():
    """Base URL of _build/html served on 127.0.0.1."""
    if not (HTML / "index.html").exists():
        _unavailable(f"{HTML.relative_to(ROOT)} is not built: run `make html` first")
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no chromium at {CHROMIUM}: apt-get install -y chromium (or set EWCBOOK_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("python playwright is not installed: pip install -e '.[test]'")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


# Waits for MathJax (when the page loads it), then for every image, lazy ones included.
_SETTLE_JS = """
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  await Promise.all(Array.from(document.images).map((img) => {
    img.loading = "eager";
    if (img.complete) return null;
    return new Promise((resolve) => { img.addEventListener("load", resolve); img.addEventListener("error", resolve); });
  }));
  const math = Array.from(document.querySelectorAll(".math"));
  return {
    mathjax: window.MathJax && MathJax.version ? MathJax.version : null,
    math: math.length,
    untypeset: math.filter((el) => !el.querySelector("mjx-container")).map((el) => el.textContent.slice(0, 80)),
    containers: document.querySelectorAll("mjx-container").length,
    merrors: Array.from(document.querySelectorAll("mjx-merror")).map((el) => el.textContent.slice(0, 80)),
    brokenImages: Array.from(document.images).filter((img) => !(img.naturalWidth > 0)).map((img) => img.src),
    images: document.images.length,
  };
}
"""

DOCS = toc_documents()


@pytest.mark.parametrize("doc", DOCS, ids=[pathlib.PurePosixPath(d).name for d in DOCS])
def test_page_renders_offline(doc, site, browser):
    html = HTML / f"{doc}.html"
    assert html.exists(), f"{doc} is listed in _toc.yml but {html.relative_to(ROOT)} was not built"
    source = _source(doc)
    assert source is not None, f"{doc} is listed in _toc.yml but has no .ipynb or .md"

    problems: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 900}, service_workers="block")
    context.set_default_timeout(TIMEOUT_MS)

    def only_local(route):
        url = urllib.parse.urlparse(route.request.url)
        if url.scheme in ("data", "blob") or url.hostname == "127.0.0.1":
            route.continue_()
        else:
            problems.append(f"blocked request to the network: {route.request.url}")
            route.abort("blockedbyclient")

    context.route("**/*", only_local)
    page = context.new_page()
    page.on("console", lambda msg: msg.type == "error" and problems.append(f"console error: {msg.text}"))
    page.on("pageerror", lambda exc: problems.append(f"uncaught exception: {exc}"))
    page.on("requestfailed", lambda req: problems.append(f"request failed: {req.url} ({req.failure})"))
    page.on("response", lambda resp: resp.status >= 400 and problems.append(f"HTTP {resp.status}: {resp.url}"))
    try:
        page.goto(site + f"{doc}.html", wait_until="load")
        state = page.evaluate(_SETTLE_JS)
        page.wait_for_load_state("networkidle")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{pathlib.PurePosixPath(doc).name}.png"), full_page=True)
        colab_links = page.eval_on_selector_all("a[href*='colab.research.google.com']", "els => els.map(e => e.href)")
        launch_button = page.locator(".dropdown-launch-buttons a[href*='colab.research.google.com']").count()
    finally:
        context.close()

    if state["math"]:
        if not state["mathjax"] or not state["mathjax"].startswith("3."):
            problems.append(f"page has {state['math']} math elements but MathJax 3 did not load ({state['mathjax']})")
        if state["untypeset"]:
            problems.append(f"math not typeset: {state['untypeset'][:5]}")
        if state["containers"] == 0:
            problems.append("no mjx-container on a page with math")
    if state["merrors"]:
        problems.append(f"MathJax errors: {state['merrors'][:5]}")
    if state["brokenImages"]:
        problems.append(f"images that did not load: {state['brokenImages']}")

    if source.suffix == ".md":
        # every glue role of the page was replaced by its value (a missing key
        # only warns, and drops the value, in a build without -W)
        roles = len(re.findall(r"\{glue(?::text)?\}`", source.read_text()))
        pasted = len(re.findall(r'class="pasted-text"', html.read_text()))
        if pasted != roles:
            problems.append(f"{roles} glue roles in {source.name} but {pasted} pasted values in the page")

    if source.suffix == ".ipynb":
        expected = _colab_url(doc)
        if launch_button == 0:
            problems.append("no Colab launch button (launch_buttons.colab_url in _config.yml)")
        if expected not in colab_links:
            problems.append(f"no link to {expected}; Colab links on the page: {colab_links}")
        wrong = sorted({link for link in colab_links if link != expected})
        if wrong:
            problems.append(f"Colab links to another notebook: {wrong}")

    assert not problems, f"{doc}:\n  " + "\n  ".join(problems)


def test_api_reference_anchors():
    page = HTML / "book" / "api.html"
    if not page.exists():
        _unavailable(f"{page.relative_to(ROOT)} is not built: run `make html` first")
    html = page.read_text()
    ids = set(re.findall(r'\sid="([^"]+)"', html))
    expected = [f"module-{name}" if kind == "module" else name for name, kind in documented_names().items()]
    missing = [anchor for anchor in expected if anchor not in ids]
    assert not missing, f"{page.relative_to(ROOT)} has no anchor for {missing} (a stale build? run `make html`)"
    fields = set(re.findall(r'<dt class="field-(?:odd|even)">(\w[\w ]*)<span class="colon">', html))
    assert {"Parameters", "Returns", "Raises"} <= fields, f"napoleon sections not rendered: {sorted(fields)}"
