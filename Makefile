# ewcbook: `make book` builds the book, `make test` runs every check.
# Both work on a fresh machine with Python 3.11: they create .venv and install
# the project (pinned by constraints.txt) when it is missing or out of date.
# Offline, point TFDS at a prepared MNIST first: export TFDS_DATA_DIR=...
#
# The committed chapters hold the published outputs. Nothing but
# `make update-book` (for maintainers) rewrites them: `make book` and
# `make test` execute copies under _build/executed/ and build the HTML from those.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHAPTERS := $(sort $(wildcard book/[0-9]*.ipynb)) $(wildcard book/howto_*.ipynb) $(wildcard book/appendix*.ipynb)
EXECUTED := _build/executed
PAPERMILL := $(BIN)/papermill --cwd book -k python3 --no-progress-bar --log-level WARNING
# pytest -k expression that selects the published-number tests of $(CHAPTERS)
empty :=
space := $(empty) $(empty)
CHAPTER_NAMES := $(subst $(space), or ,$(strip $(basename $(notdir $(CHAPTERS)))))
# a stage of `make test` prints the time it ends (with `make -j2`, each stream when it starts and ends too):
# the profile of a CI run
STAMP_TIME = @echo "== $$(date +%T) $@ $(1)"
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: help install lint unit smoke nbval nbval-run published streams stream-heavy stream-light colab-check claims execute executed-tree html html-executed pdf pdf-executed book \
	update-book browser test reproduce benchmark clean

help:
	@echo "make book         execute every chapter (full profile, real MNIST) into _build/executed, build _build/html"
	@echo "make test         lint, unit tests, nbval + published numbers + claims on one fresh run, HTML, browser"
	@echo "make nbval        execute chapters once (nbval), check their text and their published numbers"
	@echo "                  (one chapter: make nbval CHAPTERS=book/01_forgetting.ipynb)"
	@echo "make smoke        run every chapter's smoke profile (seconds each) and its claims"
	@echo "make colab-check  every chapter's smoke profile alone in an empty folder, ewcbook from the built wheel"
	@echo "make html         build _build/html from the committed chapter outputs"
	@echo "make pdf          build the PDF edition, _build/latex/ewcbook.pdf (XeLaTeX; the HTML build then links it)"
	@echo "make update-book  maintainers: re-run every chapter in place and commit the new published outputs"
	@echo "make reproduce    python -m ewcbook reproduce --profile full"
	@echo "make benchmark    training and Fisher benchmarks against a raw TensorFlow loop"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,test]"
	touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

# fast tests: the library, and the chapters' claims on their committed outputs
unit: install
	$(BIN)/python -m pytest tests -m "not notebooks" --ignore=tests/test_book_html.py --ignore=tests/test_book_pdf.py

# every chapter's smoke profile with papermill, and its claims (for development; CI runs the full profile once)
smoke: install
	$(BIN)/python -m pytest tests -m notebooks

# nbval executes each chapter once (full profile) and compares the text of its checked cells, numbers
# masked (tests/nbval_sanitize.cfg); tests/nbval_record.py keeps the run in _build/executed/, whose glued
# numbers tests/test_published.py then compares with the committed ones (tolerances: tests/published.py)
nbval: nbval-run published

# the cell timeout is a safety net for slow machines (2.6x apart in this project) and busy cores, not the budget:
# no cell of a chapter's full profile takes over 8 minutes where a raw epoch takes 1.06 s (CONTRIBUTING.md)
nbval-run: install
	rm -f $(addprefix $(EXECUTED)/,$(CHAPTERS))
	PYTHONPATH=tests$${PYTHONPATH:+:$$PYTHONPATH} $(BIN)/python -m pytest -p nbval_record --nbval-lax --nbval-current-env \
		--nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=2400 -p no:randomly -p no:cacheprovider \
		--durations=15 $(CHAPTERS)

published: install
	EWCBOOK_REQUIRE_EXECUTED=1 $(BIN)/python -m pytest tests/test_published.py -k "$(CHAPTER_NAMES)"
	$(call STAMP_TIME,ends)

# `make test` keeps both cores busy: chapters 5, 6 and 8 (whose runs go to two processes in their longest cells)
# in one stream; the unit tests, then the other chapters (chapter 7 last), then the Colab check (`make
# colab-check`: every chapter's smoke profile alone in an empty folder with the wheel) in the other, at the same
# time. The second stream ends some 20 minutes before the first, so the Colab check costs CI little wall time
HEAVY := $(filter book/05_% book/06_% book/08_%,$(CHAPTERS))
LIGHT := $(filter-out $(HEAVY) book/07_%,$(CHAPTERS)) $(filter book/07_%,$(CHAPTERS))

streams: install
	$(MAKE) -j2 --output-sync=line stream-heavy stream-light

stream-heavy:
	$(call STAMP_TIME,starts)
	$(MAKE) nbval-run CHAPTERS="$(HEAVY)"
	$(call STAMP_TIME,ends)

stream-light:
	$(call STAMP_TIME,starts)
	$(MAKE) unit
	$(call STAMP_TIME,unit tests done)
	$(MAKE) nbval-run CHAPTERS="$(LIGHT)"
	$(call STAMP_TIME,chapters done)
	$(MAKE) colab-check
	$(call STAMP_TIME,ends)

# every chapter as a reader opens it on Colab: the notebook alone in an empty folder, `ewcbook` from the built
# wheel (whatever a chapter reads must ship with the package), the smoke profile
WHEEL_DIR := _build/wheel
colab-check: install
	rm -rf $(WHEEL_DIR) && mkdir -p $(WHEEL_DIR)/dist
	$(BIN)/python -m pip wheel --quiet --no-deps -w $(WHEEL_DIR)/dist .
	$(BIN)/python -m pip install --quiet --no-deps --target $(WHEEL_DIR)/site $(WHEEL_DIR)/dist/ewcbook-*.whl
	@for nb in $(CHAPTERS); do \
		dir=$$(mktemp -d) && cp $$nb $$dir/ && echo "== $$nb alone in $$dir, ewcbook from the wheel" && \
		start=$$(date +%s) && \
		( cd $$dir && PYTHONPATH=$(CURDIR)/$(WHEEL_DIR)/site $(CURDIR)/$(BIN)/papermill -k python3 --no-progress-bar \
			--log-level WARNING $$(basename $$nb) out.ipynb -p profile smoke ) || exit 1; \
		echo "== $$nb passed in $$(( $$(date +%s) - start )) s"; \
		rm -rf $$dir; \
	done

# every chapter's claims, on the committed outputs and on the fresh run of `make nbval`
claims: install
	EWCBOOK_REQUIRE_EXECUTED=1 $(BIN)/python -m pytest tests/test_chapter_*.py tests/test_howto.py tests/test_appendix.py -m "not notebooks"
	$(call STAMP_TIME,ends)

# execute every chapter's full profile into _build/executed/book/ (the committed chapters stay as they are)
execute: install
	@mkdir -p $(EXECUTED)/book
	@for nb in $(CHAPTERS); do \
		echo "== $$nb"; \
		$(PAPERMILL) $$nb $(EXECUTED)/$$nb || exit 1; \
	done

# the book's sources beside the executed chapters, so that Jupyter Book can build from them
executed-tree:
	bash tools/fetch_mathjax.sh
	mkdir -p $(EXECUTED)/book $(EXECUTED)/build
	cp _config.yml _toc.yml $(EXECUTED)/
	cp book/*.md book/*.bib $(EXECUTED)/book/
	cp -r tools $(EXECUTED)/
	rm -rf $(EXECUTED)/build/mathjax_static && cp -r build/mathjax_static $(EXECUTED)/build/
	@for nb in $(CHAPTERS); do test -f $(EXECUTED)/$$nb || { echo "$(EXECUTED)/$$nb missing: make execute"; exit 1; }; done

# _build/html from the committed outputs (what the published book shows)
html: install
	bash tools/fetch_mathjax.sh
	$(BIN)/jupyter-book build . -W --keep-going

# _build/html from the chapters executed into _build/executed
html-executed: install executed-tree
	$(BIN)/jupyter-book build $(EXECUTED) --path-output . --all -W --keep-going
	$(call STAMP_TIME,ends)

# the PDF edition, _build/latex/ewcbook.pdf, with Sphinx's LaTeX builder and XeLaTeX (TeX Live from Debian:
# texlive-xetex texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended latexmk fonts-freefont-otf
# fonts-dejavu-core; .ci/run installs what is missing). Build it before the HTML, which copies it and links to it.
PDF_PAGES = @command -v pdfinfo >/dev/null && pdfinfo _build/latex/ewcbook.pdf | sed -n 's/^Pages: */_build\/latex\/ewcbook.pdf: pages: /p' || true

pdf: install
	$(BIN)/jupyter-book build . --builder pdflatex -W --keep-going
	$(PDF_PAGES)

pdf-executed: install executed-tree
	$(BIN)/jupyter-book build $(EXECUTED) --path-output . --builder pdflatex -W --keep-going
	$(PDF_PAGES)
	$(call STAMP_TIME,ends)

book: execute pdf-executed html-executed

# maintainers: re-run every chapter in place; commit the notebooks, whose outputs are the published numbers
update-book: install
	@for nb in $(CHAPTERS); do \
		echo "== $$nb"; \
		$(PAPERMILL) $$nb $$nb || exit 1; \
	done

browser: install
	$(BIN)/python -m pytest tests/test_book_html.py tests/test_book_pdf.py
	$(call STAMP_TIME,ends)

test: lint streams published claims pdf-executed html-executed browser

reproduce: install
	$(BIN)/python -m ewcbook reproduce --profile full

benchmark: install
	$(BIN)/python benchmarks/training.py
	$(BIN)/python benchmarks/fisher.py

clean:
	rm -rf _build
