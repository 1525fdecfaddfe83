# Gatehouse: `make run` to try it, `make test` to check it. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# The real OpenID provider the sign-in tests start (panva's oidc-provider, pinned by its lock
# file); without Node.js those tests are skipped and say why.
OIDC_PROVIDER := tests/support/oidc/node_modules/.package-lock.json

.PHONY: run test test-fast screenshots bench migrate clean venv-stamp

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $@

# The file that says .venv holds this pyproject.toml's packages (.ci/run builds it first).
venv-stamp:
	@echo $(STAMP)

## Serve on http://127.0.0.1:8000 with the SQLite default and demo data (seeded on first run).
run: $(STAMP)
	$(BIN)/webapp migrate
	$(BIN)/webapp seed-demo
	$(BIN)/webapp serve

## The whole suite; set TEST_DATABASE_URL=postgresql://... to run it on PostgreSQL.
test: $(STAMP) $(OIDC_PROVIDER)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(OIDC_PROVIDER): tests/support/oidc/package-lock.json
	if command -v npm >/dev/null; then npm ci --prefix tests/support/oidc --no-audit --no-fund --loglevel=error; fi

## Everything but the slow crash, load and multi-process tests.
test-fast: $(STAMP) $(OIDC_PROVIDER)
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

## A screenshot of every page at phone (390×844) and desktop (1366×900) size, in var/screenshots/.
screenshots: $(STAMP)
	GATEHOUSE_SCREENSHOTS=$(CURDIR)/var/screenshots $(BIN)/python -m pytest -p no:cacheprovider -q --timeout 1200 \
		tests/e2e/test_layout.py

bench: $(STAMP)
	$(BIN)/python bench/http_baseline.py

migrate: $(STAMP)
	$(BIN)/webapp migrate

clean:
	rm -rf $(VENV) var .pytest_cache
