# Two commands for a new user: `make demo` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test lint format bench system-packages clean

# The runtime install: no compiler or libvirt-dev needed.
$(BIN)/.runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

# Everything the tests use: libvirt binding, plotting, test tools.
$(BIN)/.test: pyproject.toml $(BIN)/.runtime
	$(BIN)/pip install -q -e '.[libvirt,plot,test,openstack]'
	touch $@

system-packages:
	./scripts/install-system-packages.sh

# The OpenStack services the `openstack` tests start (tests/openstack_cloud.py), in their own venv
# so that the project's stays small.
OPENSTACK_VENV ?= .venv-openstack
$(OPENSTACK_VENV)/.installed: tests/openstack-requirements.txt
	$(PYTHON) -m venv $(OPENSTACK_VENV)
	$(OPENSTACK_VENV)/bin/pip install -q --upgrade pip
	$(OPENSTACK_VENV)/bin/pip install -q -r tests/openstack-requirements.txt
	touch $@

demo: $(BIN)/.runtime
	$(BIN)/neat-exporter demo $(DEMO_ARGS)

test: system-packages
	$(MAKE) $(BIN)/.test $(OPENSTACK_VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(BIN)/.test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(BIN)/.test
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(OPENSTACK_VENV) .pytest_cache .ruff_cache .hypothesis
