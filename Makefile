# quanta — the two commands a fresh machine needs:
#   make demo   set up .venv and run the main job on embedded defaults
#   make test   set up .venv (with dev tools) and run ruff, mypy and the tests
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= runs/demo

.PHONY: demo test lint typecheck bench clean

$(BIN)/quanta: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch==2.13.0 is pinned in pyproject; pip finds the CPU build on this machine's disk.
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/quanta
	$(BIN)/quanta parity train --preset cpu --out $(OUT)/parity
	$(BIN)/quanta parity analyze $(OUT)/parity
	$(BIN)/quanta lm suite train --preset cpu --out $(OUT)/suite
	$(BIN)/quanta lm losses --suite $(OUT)/suite --corpus stdlib:test --max-docs 100 --out $(OUT)/losses
	$(BIN)/quanta lm analyze $(OUT)/losses
	$(BIN)/quanta qdg run $(OUT)/losses --out $(OUT)/qdg --threshold 0.7 --n 400 --ks 10,20,50,100
	$(BIN)/quanta qdg report $(OUT)/qdg
	$(BIN)/quanta qdg validate --samples 1000 --subtasks 30 --dims 100,1000 --sigmas 0.5,2.0 --out $(OUT)/qdg-validate

test: $(BIN)/quanta
	# The HTML browser test opens pages in headless Chromium (Debian's package); install it when
	# missing and possible (CI runs as root), otherwise that test is skipped.
	command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends chromium >/dev/null) || \
		echo "chromium could not be installed: the browser test will be skipped"
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: $(BIN)/quanta
	$(BIN)/python benchmarks/bench_parity.py
	$(BIN)/python benchmarks/bench_fit.py
	$(BIN)/python benchmarks/bench_losses.py
	$(BIN)/python benchmarks/bench_qdg.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
