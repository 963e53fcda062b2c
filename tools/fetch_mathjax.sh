#!/usr/bin/env bash
# Install MathJax 3 from npm and lay it out where the book build picks it up,
# so the built HTML typesets math with no network.
#
#   tools/fetch_mathjax.sh            # -> build/mathjax_static/mathjax/tex-mml-chtml.js (+ fonts, extensions)
#
# _config.yml points sphinx at it: html_static_path: [build/mathjax_static] and
# mathjax_path: mathjax/tex-mml-chtml.js, so the build copies it to
# _build/html/_static/mathjax/. Nothing here is committed (build/ is ignored).
# Run it before `jupyter-book build`; it is quick when MathJax is already there.
set -euo pipefail

MATHJAX_VERSION="${MATHJAX_VERSION:-3.2.2}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NPM_PREFIX="$ROOT/build/npm"
SRC="$NPM_PREFIX/node_modules/mathjax"
DEST="$ROOT/build/mathjax_static/mathjax"

installed_version() {
    [ -f "$SRC/package.json" ] || return 0
    python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' "$SRC/package.json"
}

if [ "$(installed_version)" != "$MATHJAX_VERSION" ]; then
    command -v npm >/dev/null || { echo "fetch_mathjax: npm not found (apt-get install -y npm)" >&2; exit 1; }
    mkdir -p "$NPM_PREFIX"
    npm install --prefix "$NPM_PREFIX" --no-save --no-audit --no-fund --loglevel=error "mathjax@$MATHJAX_VERSION"
fi

# The combined component plus what it loads at run time, relative to itself:
# fonts (output/chtml/fonts/woff-v2), TeX extensions autoloaded by
# \require or unknown macros (input/tex/extensions), and the menu/accessibility
# pieces (ui, a11y, sre, adaptors). Not the other combined components.
rm -rf "$DEST"
mkdir -p "$DEST"
cp "$SRC/es5/tex-mml-chtml.js" "$DEST/"
for dir in input output ui a11y sre adaptors; do
    cp -r "$SRC/es5/$dir" "$DEST/"
done
cp "$SRC/LICENSE" "$DEST/LICENSE"
test -f "$DEST/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff"
echo "fetch_mathjax: MathJax $MATHJAX_VERSION in ${DEST#"$ROOT"/}"
