# The two entry points of the project (see README.md):
#   make book   set up a virtual environment and build the executed book into _build/html
#   make test   set up the same environment and run the test suite
# Both work on a fresh machine with Python >= 3.10, pip and npm (npm fetches MathJax so that the
# built pages render math offline).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: book test env web-assets benchmark clean

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

web-assets:
	bash book/fetch_web_assets.sh

book: env web-assets
	rm -rf _build
	LIGHTM_EDU_BOOK_BUILD=1 $(BIN)/jupyter-book build --all -W --keep-going .

test: env
	$(BIN)/python -m pytest

benchmark: env
	$(BIN)/python benchmarks/scan.py
	$(BIN)/python benchmarks/model.py

clean:
	rm -rf _build .pytest_cache
