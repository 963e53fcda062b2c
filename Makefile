# ewcbook: `make book` builds the book, `make test` runs every check.
# Both work on a fresh machine with Python 3.11: they create .venv and install
# the project (pinned by constraints.txt) when it is missing or out of date.
# Offline, point TFDS at a prepared MNIST first: export TFDS_DATA_DIR=...

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CHAPTERS := $(sort $(wildcard book/[0-9]*.ipynb)) $(wildcard book/appendix*.ipynb)
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: help install lint unit chapters nbval execute html book browser test reproduce benchmark clean

help:
	@echo "make book       execute every chapter (full profile, real MNIST) and build _build/html"
	@echo "make test       lint, unit tests, chapter claims (smoke), nbval, HTML build and browser check"
	@echo "make execute    re-run every chapter in place with papermill (full profile)"
	@echo "make html       build _build/html from the committed chapter outputs"
	@echo "make reproduce  python -m ewcbook reproduce --profile full"

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[book,test]"
	touch $@

install: $(STAMP)

lint: install
	$(BIN)/ruff check .

unit: install
	$(BIN)/python -m pytest tests -m "not notebooks" --ignore=tests/test_book_html.py

chapters: install
	$(BIN)/python -m pytest tests -m notebooks

nbval: install
	$(BIN)/python -m pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=1200 -p no:randomly $(CHAPTERS)

execute: install
	@for nb in $(CHAPTERS); do \
		echo "== $$nb"; \
		$(BIN)/papermill $$nb $$nb --cwd book -k python3 --no-progress-bar --log-level WARNING || exit 1; \
	done

html: install
	bash tools/fetch_mathjax.sh
	$(BIN)/jupyter-book build . -W --keep-going

book: execute html

browser: install
	$(BIN)/python -m pytest tests/test_book_html.py

test: lint unit chapters nbval html browser

reproduce: install
	$(BIN)/python -m ewcbook reproduce --profile full

benchmark: install
	$(BIN)/python benchmarks/fisher.py

clean:
	rm -rf _build
