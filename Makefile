# `make demo` and `make test` both set up .venv first (only when pyproject.toml or
# constraints.txt changed since the last install), then run the main job or the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stoker-installed

.PHONY: setup demo test lint typecheck clean

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@echo "installing stoker[all] into $(VENV) (torch pinned by constraints.txt)"
	@$(BIN)/python -m pip install -q -c constraints.txt -e '.[all]'
	@touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/stoker fit --config recipes/quickstart.yaml
	$(BIN)/stoker report --config recipes/quickstart.yaml --out reports/quickstart

test: setup
	$(BIN)/python -m pytest -q
	$(BIN)/ruff check stoker tests examples benchmarks
	$(BIN)/mypy stoker

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache lightning_logs reports
