# Two commands for a new user: `make demo` and `make test`. Each does its own set-up.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: demo test lint format bench system-packages clean image

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
# so that the project's stays small. It is kept outside the clone, keyed by the pinned
# requirements, so a new clone reuses it (and the databases it caches); tests/openstack_cloud.py
# computes the same path when NEAT_OPENSTACK_VENV is not set.
OPENSTACK_VENV ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/neat-exporter/venv-openstack-$(shell sha256sum tests/openstack-requirements.txt | cut -c1-12)
export NEAT_OPENSTACK_VENV := $(OPENSTACK_VENV)
$(OPENSTACK_VENV)/.installed: tests/openstack-requirements.txt
	$(PYTHON) -m venv $(OPENSTACK_VENV)
	$(OPENSTACK_VENV)/bin/pip install -q --upgrade pip
	$(OPENSTACK_VENV)/bin/pip install -q -r tests/openstack-requirements.txt
	touch $@

# make demo LISTEN=127.0.0.1:9850 serves on another address; DEMO_ARGS passes any other flags.
demo: $(BIN)/.runtime
	$(BIN)/neat-exporter demo $(if $(LISTEN),--listen $(LISTEN)) $(DEMO_ARGS)

test: system-packages
	$(MAKE) $(BIN)/.test $(OPENSTACK_VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: $(BIN)/.test
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(BIN)/.test
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(OPENSTACK_VENV) .pytest_cache .ruff_cache .hypothesis

# The container image, built into the local podman storage; the last line is its reference.
# IMAGE, BASE, EXTRAS and RUNTIME_PACKAGES are passed through (see scripts/build-image.sh).
image:
	@./scripts/build-image.sh
