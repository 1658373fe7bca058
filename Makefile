# Two commands: `make lab` to learn, `make test` to check everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU build of torch where one lies at hand (pip's find-links); otherwise pip's usual torch.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/python -m pytest
# Test processes at a time (pytest-xdist); JOBS=0 runs everything in this process.
JOBS ?= 2
NBVAL := --nbval --nbval-current-env --nbval-sanitize-with tools/nbval_sanitize.cfg

.PHONY: install sandbox lab test lint check-exercises test-lib test-notebooks notebooks exercises bench clean

install: sandbox $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" || $(BIN)/python -m pip install -q "torch>=2.2"
	$(BIN)/python -m pip install -q -e ".[dev,gpu,grading]"
	touch $(STAMP)

# The grader runs student code under bubblewrap: install it where we may (root on Debian/Ubuntu).
sandbox:
	@command -v bwrap >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		apt-get update -qq && apt-get install -y -qq bubblewrap; } || \
		echo "bubblewrap is missing: install it (sudo apt-get install bubblewrap) to grade students' notebooks"

lab: $(STAMP)
	$(BIN)/python -m course_lib.env_check || true
	$(BIN)/jupyter lab --ServerApp.root_dir=. notebooks/00_welcome.ipynb

test: lint check-exercises test-lib test-notebooks

lint: $(STAMP)
	$(BIN)/ruff check .

# exercises/ must be exactly what solutions/ generate
check-exercises: $(STAMP)
	$(BIN)/python -m course_lib.grading.build --check

# library, grader and hidden-test suites; GPU tests run on a GPU machine (benchmarks/gpu_check.sh).
# The slow grading tests run alone: they grade two notebooks at a time themselves.
test-lib: $(STAMP)
	$(PYTEST) -q -n $(JOBS) -m "not gpu and not slow" tests
	$(PYTEST) -q -m "not gpu and slow" tests

# One kernel per notebook, JOBS notebooks at a time; a notebook's cells stay in order on one worker.
test-notebooks: $(STAMP)
	$(PYTEST) -q -n $(JOBS) --dist loadscope $(NBVAL) notebooks solutions

# Re-run every lesson and solution in a fresh kernel and store its outputs (authors only).
notebooks: $(STAMP)
	$(BIN)/python tools/nbtool.py run notebooks/*.ipynb solutions/*.ipynb

# Regenerate exercises/ from solutions/ (authors only).
exercises: $(STAMP)
	$(BIN)/python -m course_lib.grading.build

bench: $(STAMP)
	$(BIN)/python -m course_lib.bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
