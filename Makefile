# The two commands of the README. Both do all set-up themselves (virtual environment in .venv,
# the Apache Kafka broker fetched from Maven Central into ~/.cache/ccstream on first use).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast lint bootstrap clean lock

demo: bootstrap
	$(VENV)/bin/ccstream demo $(ARGS)

test: bootstrap lint
	$(PY) -m pytest -q $(ARGS)

# the inner loop: unit + component tiers (no broker, no whole processes), well under a minute
test-fast: bootstrap
	$(PY) -m pytest -q -n 4 tests/unit tests/component $(ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check ccstream connectors pipeline simulator devtools tests bench
	$(VENV)/bin/mypy

bootstrap:
	@CCSTREAM_VENV=$(VENV) scripts/bootstrap

# refresh constraints.txt from pyproject.toml's ranges (then run `make test` before committing)
lock:
	scripts/lock

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
