# Two commands matter: `make demo` and `make test`. Each builds .venv by itself.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint pytest bench chaos clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m demo $(ARGS)

test: $(STAMP) lint pytest

lint: $(STAMP)
	$(BIN)/ruff check ssf transmitter receiver conformance ssfcli demo tests bench
	$(BIN)/mypy ssf transmitter receiver conformance ssfcli demo

pytest: $(STAMP)
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

# Long-form fault runs (10,000 events with kill -9; private PostgreSQL and Redis restarted
# repeatedly: the shared servers are never touched).
chaos: $(STAMP)
	SSF_CHAOS=1 $(BIN)/pytest -n 2 tests/reliability $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench $(ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
