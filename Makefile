# Two commands on a fresh machine with Python 3.11+:
#   make run    set up .venv and run dreamq
#   make test   set up .venv and run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= vgg16_hed

.PHONY: run test setup clean

$(BIN)/dreamq: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/dreamq

run: setup
	$(BIN)/dreamq dream dreamq/samples/astronaut.jpg -o out/astronaut_dream.png --model $(MODEL)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) out
