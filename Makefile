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

.PHONY: install demo test test-fast lint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

# `make demo` again runs the demo again: --overwrite moves the run already in $(RUN_DIR) aside to
# $(RUN_DIR).replaced-<its run id> (nothing is deleted; `make clean` removes runs/). To continue an interrupted demo
# instead: $(BIN)/onnxbench run --resume $(RUN_DIR)
demo: install
	$(BIN)/onnxbench run --out $(RUN_DIR) --overwrite $(DEMO_FLAGS)

test: install
	$(BIN)/python -m pytest -q

# The edit-test loop: everything but the tests marked `slow` (gpt2-small exports, repeated matrices).
test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check onnxbench tests
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache
