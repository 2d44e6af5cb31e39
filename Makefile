# Two commands do everything on a fresh machine:
#   make demo   - set up, then run the main job on the embedded default
#   make test   - set up, then run the whole test suite (needs PostgreSQL on 127.0.0.1:5432)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: demo test install lint schema clean

# Re-installs only when pyproject.toml changes; a no-op (well under a second) otherwise.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing vowvault and its test tools into $(VENV) ..."
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]' 2>&1 \
		| grep -v "^WARNING: Location" || true
	@$(BIN)/python -c "import vowvault, prefect" # fail here, not later, if install broke
	@touch $(STAMP)

install: $(STAMP)

demo: install
	@$(BIN)/vowvault demo

# Azurite (the Azure Storage emulator) from npm, for the storage tests.
AZURITE := .tools/node_modules/.bin/azurite-blob
$(AZURITE):
	@echo "installing azurite (npm) into .tools ..."
	@mkdir -p .tools && npm install --prefix .tools --no-audit --no-fund --silent azurite@3

test: install $(AZURITE)
	PATH="$(CURDIR)/.tools/node_modules/.bin:$$PATH" $(BIN)/pytest -n 2 --dist worksteal -q \
		$(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

# schema.sql is generated from the migrations; a test fails when it is stale.
schema: install
	$(BIN)/vowvault catalog schema > schema.sql

clean:
	rm -rf $(VENV) .tools .pytest_cache .ruff_cache .hypothesis
