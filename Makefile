# Two commands do everything on a fresh machine:
#   make demo   - set up, then run the main job on the embedded default
#   make test   - set up, then run the whole test suite (needs PostgreSQL on 127.0.0.1:5432)
# Others:
#   make install      - only the set-up: .venv/ with vowvault and its test tools
#   make azurite      - the Azure Storage emulator (npm) into .tools/, for the storage tests
#   make lint, make schema
#   make constraints  - re-pins constraints.txt after a change of pyproject.toml's dependencies
#                       (keeps the pins that still fit; UPGRADE=1 moves every pin to the newest)
#   make clean        - removes what the set-up made in this folder (.venv, .tools, the tools'
#                       caches), one line each, then names what it leaves: the demo's state in
#                       VOWVAULT_HOME (default ~/.vowvault) and its database grand_hall on the
#                       local PostgreSQL, and how to remove them
#   make distclean    - what clean does, and removes those two as well, saying so
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: demo test install azurite lint schema constraints clean distclean

# The install, in one line of output. uv (from PyPI, installed into the venv by pip) installs the
# versions pinned in constraints.txt: about 10 s on an empty cache (8 to 28 s as the machine is
# busy), where pip took 52 to 131 s and the pip fallback below takes 33 to 42 s.
# Where uv cannot be installed or fails (its words in $(VENV)/install.log), pip installs the same
# pins. Then bytecode is compiled ahead, for the packages and for src/ (about 20 s on two cores):
# where PYTHONDONTWRITEBYTECODE is set (these machines set it), Python never caches what it
# compiles, and every command paid about 2.5 s compiling its imports (measured: importing the
# CLI 3.5 s without .pyc files, 0.8 to 1.2 s with them). `make test` recompiles src/ (well
# under a second when little changed): a stale .pyc is only ignored, never wrong. Re-installs
# only when pyproject.toml or constraints.txt change; a no-op (well under a second) otherwise.
$(STAMP): pyproject.toml constraints.txt
	@printf 'installing vowvault and its test tools into $(VENV) ... '; set -o pipefail; \
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || exit 1; \
	if $(PIP) install --quiet --only-binary uv -c constraints.txt uv >$(VENV)/install.log 2>&1 \
	    && $(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt -e '.[test]' \
	        >>$(VENV)/install.log 2>&1; \
	then how=uv; \
	else how=pip; printf 'uv failed (see $(VENV)/install.log), pip instead ... '; \
	    $(PIP) install --quiet --no-compile -c constraints.txt -e '.[test]' 2>&1 \
	        | { grep -v '^WARNING: Location' || true; } || exit 1; \
	fi; \
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib src >/dev/null 2>&1 || true; \
	PREFECT_HOME=$(VENV)/.prefect-check $(BIN)/python -c "import vowvault, prefect" || exit 1; \
	rm -rf $(VENV)/.prefect-check; \
	touch $(STAMP); echo "done in $$SECONDS s ($$how)"

install: $(STAMP)

demo: install
	@$(BIN)/vowvault demo

# Azurite (the Azure Storage emulator) from npm, for the storage tests.
AZURITE := .tools/node_modules/.bin/azurite-blob
$(AZURITE):
	@printf 'installing azurite 3 (npm) into .tools ... '; \
	mkdir -p .tools && npm install --prefix .tools --no-audit --no-fund --silent azurite@3 \
	&& echo "done in $$SECONDS s"

azurite: $(AZURITE)

# Three pytest workers on two cores: a quarter of the suite's time is spent waiting on
# servers and child processes (measured: 781 s with -n 2, 621 s with -n 3 on 2 cores).
test: install $(AZURITE)
	@$(BIN)/python -m compileall -q -j 0 src >/dev/null 2>&1 || true
	PATH="$(CURDIR)/.tools/node_modules/.bin:$$PATH" $(BIN)/pytest -n 3 --dist worksteal -q --durations=15 \
		$(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .

# schema.sql is generated from the migrations; a test fails when it is stale.
schema: install
	$(BIN)/vowvault db schema > schema.sql

# constraints.txt pins every package the install takes (and uv itself), so a first install
# resolves nothing and installs what was measured and tested. Needs uv: run make install first.
constraints: install
	@echo uv | $(BIN)/uv pip compile --quiet --python $(BIN)/python --extra test \
		$(if $(UPGRADE),--upgrade) --custom-compile-command "make constraints" \
		pyproject.toml - -o constraints.txt
	@echo "constraints.txt: $$(grep -c '==' constraints.txt) pins"

# What the demo leaves outside this folder (see clean, distclean).
DEMO_HOME := $(or $(VOWVAULT_HOME),$(HOME)/.vowvault)
DEMO_DB ?= grand_hall
PG := -h 127.0.0.1 -U postgres
CLEANED := $(VENV) .tools .pytest_cache .ruff_cache .hypothesis

define remove_local
	@gone=0; for p in $(CLEANED); do \
	    if [ -e "$$p" ]; then rm -rf "$$p" && echo "removed $$p" && gone=1; fi; \
	done; [ $$gone = 1 ] || echo "nothing to remove here ($(CLEANED))"
endef

clean:
	$(remove_local)
	@echo "left: $(DEMO_HOME) (VOWVAULT_HOME: the demo's catalog, keys, backups, Prefect data)" \
	    "and the database $(DEMO_DB) on 127.0.0.1, if there; 'make distclean' removes both," \
	    "or by hand: rm -rf $(DEMO_HOME); dropdb $(PG) $(DEMO_DB)"

distclean:
	$(remove_local)
	@case "$(DEMO_HOME)" in ""|/|"$(HOME)"|"$(HOME)/"|"$(CURDIR)") \
	    echo "VOWVAULT_HOME is '$(DEMO_HOME)': not removing that"; exit 1;; esac; \
	if [ -e "$(DEMO_HOME)" ]; then rm -rf "$(DEMO_HOME)" && echo "removed $(DEMO_HOME) (VOWVAULT_HOME)"; \
	else echo "no $(DEMO_HOME) (VOWVAULT_HOME) to remove"; fi
	@if ! command -v psql >/dev/null; then echo "database $(DEMO_DB): no psql here, not dropped"; \
	elif ! found=$$(PGCONNECT_TIMEOUT=3 psql $(PG) -d postgres -Atqc \
	        "SELECT 1 FROM pg_database WHERE datname = '$(DEMO_DB)'" 2>/dev/null); then \
	    echo "database $(DEMO_DB): PostgreSQL on 127.0.0.1 did not answer, not dropped"; \
	elif [ "$$found" = 1 ]; then \
	    dropdb $(PG) $(DEMO_DB) && echo "removed the database $(DEMO_DB) on 127.0.0.1"; \
	else echo "no database $(DEMO_DB) on 127.0.0.1 to remove"; fi
