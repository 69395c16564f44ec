# Pathways Lab — set-up, lab and tests.  `make lab` opens the lab; `make test` runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of PyTorch. On this lab's reference machine pip finds the wheel locally;
# elsewhere add PyTorch's CPU wheel index, e.g.
#   make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
PORT ?= 8888

.PHONY: setup lab test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev,hf]"
	touch $@

lab: setup
	$(BIN)/pwlab lab --port $(PORT)

test: setup
	$(BIN)/python -m pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg tests notebooks

test-fast: setup
	$(BIN)/python -m pytest tests -m "not slow and not browser" -x -q

bench: setup
	$(BIN)/pwlab bench moe --quick

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis test-artifacts
