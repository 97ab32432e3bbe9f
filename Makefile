# Two commands on a fresh machine:  `make demo` (export + matrix + report)  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU build of torch (taken from local disk here). On a GPU machine: make TORCH_SPEC=torch install
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test
RUN_DIR ?= runs/demo
# Extra flags of the demo's `onnxbench run` (e.g. DEMO_FLAGS="--models tiny" for a shorter one).
DEMO_FLAGS ?=

# Hugging Face Optimum's exporter for `--export-paths optimum` (docs/usage.md, "Export paths"): optimum-onnx 0.1.0
# pins transformers<4.58, so it gets an interpreter of its own; torch pinned so that pip takes the local CPU build.
OPTIMUM_VENV ?= .venv-optimum

.PHONY: install demo test test-slow lint clean optimum-venv

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

optimum-venv: $(OPTIMUM_VENV)/.installed

$(OPTIMUM_VENV)/.installed:
	$(PYTHON) -m venv $(OPTIMUM_VENV)
	$(OPTIMUM_VENV)/bin/python -m pip install -q --upgrade pip
	$(OPTIMUM_VENV)/bin/python -m pip install -q "$(TORCH_SPEC)" "optimum-onnx==0.1.0" "transformers<4.58" onnxruntime
	touch $@
	@echo "export ONNXBENCH_OPTIMUM_PYTHON=$(abspath $(OPTIMUM_VENV))/bin/python"

# `make demo` again runs the demo again: --overwrite moves the run already in $(RUN_DIR) aside to
# $(RUN_DIR).replaced-<its run id> (nothing is deleted; `make clean` removes runs/). To continue an interrupted demo
# instead: $(BIN)/onnxbench run --resume $(RUN_DIR)
demo: install
	$(BIN)/onnxbench run --out $(RUN_DIR) --overwrite $(DEMO_FLAGS)

# The suite without the tests marked `slow`; .ci/run runs both targets.
test: install
	$(BIN)/python -m pytest -q -n 2 -m "not slow" --durations=15

# The slow end-to-end tests: gpt2-small and larger exports, repeated matrices, `make demo` itself.
test-slow: install
	$(BIN)/python -m pytest -q -m slow --durations=15

lint: install
	$(BIN)/ruff check onnxbench tests
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) $(OPTIMUM_VENV) runs .pytest_cache
