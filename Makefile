# The two README commands. Both create and reuse .venv on their own.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-quick demo lint fmt bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	$(BIN)/shotline matte install
	$(BIN)/shotline gate install-nsfw
	touch $(STAMP)

venv: $(STAMP)

# Starts Postgres and Redis and installs headless Chromium when missing (silent when all is up).
# Every test runs, the `slow` reliability ones included; `make test-quick` leaves those out.
test: $(STAMP)
	tests/services.sh
	$(BIN)/python -m pytest -q

test-quick: $(STAMP)
	tests/services.sh
	$(BIN)/python -m pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/python -m tasks.demo

# ruff, mypy (strict flags on pipeline/, pyproject.toml) and the layer contract (import-linter).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint docker/Dockerfile.app docker/Dockerfile.worker-gpu

fmt: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Regenerates docs/cli.md and docs/configuration.md from the code (tests/test_docs.py fails
# when they are stale). Phony on its own line: the docs/ folder would make it "up to date".
.PHONY: docs
docs: $(STAMP)
	$(BIN)/python -m tasks.cli.reference

clean:
	rm -rf var/demo
