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
	# Every pipeline (theory, toy sweeps, LM suite -> losses -> analysis, QDG, validation) and
	# one HTML report: $(OUT)/report.html. Resumable: run it again after an interruption.
	$(BIN)/quanta reproduce --preset cpu --out $(OUT)

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
	$(BIN)/python benchmarks/bench_losses.py --shape mini
	$(BIN)/python benchmarks/bench_losses.py --shape pythia70m --docs 16
	$(BIN)/python benchmarks/bench_qdg.py
	$(BIN)/python benchmarks/bench_lm_train.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
