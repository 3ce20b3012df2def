# Two commands on a fresh machine with Python 3.11+:
#   make run    set up .venv and run the whole service (embedded Redis, web, one worker)
#   make test   set up .venv (with the test tools) and run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: run dream test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/dreamq up --port $(PORT)

dream: $(VENV)/.installed
	$(BIN)/dreamq dream dreamq/samples/astronaut.jpg -o out/astronaut_dream.png --model vgg16_hed

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) out data
