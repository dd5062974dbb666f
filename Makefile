# drillkit: everything bootstraps itself from a bare Python 3.11 (virtualenv, uv, locked deps).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
UV_VERSION := 0.13.9
UV := $(VENV)/bin/uv
SYNCED := $(VENV)/.synced
export UV_PROJECT_ENVIRONMENT := $(abspath $(VENV))
export UV_PYTHON := $(abspath $(VENV))/bin/python
DEMO_DIR ?= $(CURDIR)/demo
AIRFLOW_PORT ?= 8080
PYTEST_ARGS ?=

.PHONY: install system-deps test demo bench lint format clean airflow

$(UV):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(SYNCED): $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --quiet
	@rm -rf src/*.egg-info
	@touch $@

install: $(SYNCED)

system-deps:
	@bash scripts/system_deps.sh

# pytest exits 5 when it collected no test: that is a failure here, never a pass.
test: install system-deps
	@$(VENV)/bin/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; exit $$rc

demo: install
	@$(VENV)/bin/python scripts/demo.py "$(DEMO_DIR)"

airflow: install
	@PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/python scripts/airflow_local.py --port $(AIRFLOW_PORT)

bench: install
	@$(VENV)/bin/python bench/run.py

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) demo .pytest_cache
