# Two commands: `make serve` and `make test`. Both install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser oidc-provider kafka elasticsearch serve test lint typecheck unit fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The OHIF end-to-end test's browser, driver and viewer (tests/e2e/ohif/install.sh): Chromium,
# Node.js and npm from Debian (as root, or through sudo), `npm ci` and the built viewer, each
# only when missing or stale. Outside CI what cannot be installed is a warning (the test skips).
browser:
	bash tests/e2e/ohif/install.sh

# The OpenID Provider of the sign-in tests (tests/support/oidc/install.sh): Node.js and
# `npm ci` of oidc-provider when missing or stale; outside CI a failure is a warning (they skip).
oidc-provider:
	bash tests/support/oidc/install.sh

# The Kafka broker of the broker publisher's tests (tests/support/kafka-broker/install.sh):
# Java and Maven from Debian when missing, Kafka's jars from Maven Central into
# ~/.cache/pacs/kafka-4.4.0 once; outside CI a failure is a warning (those tests skip).
kafka:
	bash tests/support/kafka-broker/install.sh

# The Elasticsearch node of the search indexer's tests (tests/support/elasticsearch-node/):
# Java and Maven from Debian when missing, Elasticsearch 8.19's integration-test zip from Maven
# Central unpacked into ~/.cache/pacs/elasticsearch-8.19.21 once; outside CI a failure is a
# warning (those tests skip).
elasticsearch:
	bash tests/support/elasticsearch-node/install.sh

serve: install
	$(BIN)/pacs serve $(ARGS)

lint: install
	$(BIN)/ruff check app tests load-tests examples
	$(BIN)/ruff format --check app tests load-tests examples

typecheck: install
	$(BIN)/mypy

unit: install browser oidc-provider kafka elasticsearch
	$(BIN)/pytest $(PYTEST_ARGS)

# The fuzzing suite alone (tests/fuzz, also part of `make test`): each target runs for
# PACS_FUZZ_SECONDS (default 3 s), e.g. `make fuzz PACS_FUZZ_SECONDS=600` for a long run.
fuzz: install
	$(BIN)/pytest -m fuzz tests/fuzz $(PYTEST_ARGS)

test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
