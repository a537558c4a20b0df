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

# pytest, ruff and mypy all run even when an earlier one fails, so one run shows every problem;
# the target still fails at the end if any of them did.
test: setup
	@status=0; \
	$(BIN)/python -m pytest -q || status=1; \
	echo "ruff check stoker tests examples benchmarks"; $(BIN)/ruff check stoker tests examples benchmarks || status=1; \
	echo "mypy stoker"; $(BIN)/mypy stoker || status=1; \
	exit $$status

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache lightning_logs reports
