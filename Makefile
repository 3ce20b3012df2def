# Two commands on a fresh machine with Python 3.11+:
#   make run    set up .venv and run the whole service (embedded Redis, web, one worker)
#   make test   set up .venv (with the test tools) and run the tests (make test-fast: the unit layer)
# Installs use constraints.txt: the versions the tests ran against, as the images do.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
PIP_INSTALL := $(BIN)/pip install --quiet -c constraints.txt

.PHONY: run dream test test-fast lint-imports constraints clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(PIP_INSTALL) -e '.[worker]'
	touch $@

# One install with the test tools (not the service's install, then a second one for them).
$(VENV)/.installed-test: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(PIP_INSTALL) -e '.[worker,test]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/dreamq up --port $(PORT)

dream: $(VENV)/.installed
	$(BIN)/dreamq dream dreamq/samples/astronaut.jpg -o out/astronaut_dream.png --model vgg16_hed

# The layers (tests/unit, integration, system) in parallel: most tests wait on processes, so more
# pytest workers than cores; a module's tests stay together (its server or worker starts once).
TEST_JOBS ?= 3

test: $(VENV)/.installed-test lint-imports
	$(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadscope $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/unit -n 2 $(PYTEST_ARGS)

# The layer contracts (pyproject.toml, [tool.importlinter]): a back-arrow fails the tests.
lint-imports: $(VENV)/.installed-test
	$(BIN)/lint-imports

# After changing dependencies (or upgrading them in the venv and passing the tests):
# pin what is installed, for the next installs and the images.
constraints: $(VENV)/.installed-test
	$(BIN)/python .ci/constraints.py > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) out data
