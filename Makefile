# The two set-up commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint install clean

$(BIN)/mailroute: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

install: $(BIN)/mailroute

demo: install
	$(BIN)/mailroute demo

test: install
	$(BIN)/ruff check
	$(BIN)/mypy mailroute
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check
	$(BIN)/mypy mailroute

clean:
	rm -rf $(VENV) build *.egg-info
