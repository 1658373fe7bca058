# Two commands: `make lab` to learn, `make test` to check everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch where one lies at hand (pip's find-links); otherwise pip's usual torch.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tools/nbval_sanitize.cfg

.PHONY: install lab test lint test-lib test-notebooks notebooks exercises bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" || $(BIN)/python -m pip install -q "torch>=2.2"
	$(BIN)/python -m pip install -q -e ".[dev,gpu]"
	touch $(STAMP)

lab: $(STAMP)
	$(BIN)/python -m course_lib.env_check || true
	$(BIN)/jupyter lab --ServerApp.root_dir=. notebooks/00_welcome.ipynb

test: lint test-lib test-notebooks

lint: $(STAMP)
	$(BIN)/ruff check .

test-lib: $(STAMP)
	$(PYTEST) -q tests

test-notebooks: $(STAMP)
	$(PYTEST) -q $(NBVAL) notebooks solutions

# Re-run every lesson and solution in a fresh kernel and store its outputs (authors only).
notebooks: $(STAMP)
	$(BIN)/python tools/nbtool.py run notebooks/*.ipynb solutions/*.ipynb

bench: $(STAMP)
	$(BIN)/python -m course_lib.bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
