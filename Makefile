# The two commands of the README. Both do all set-up themselves (virtual environment in .venv,
# the Apache Kafka broker fetched from Maven Central into ~/.cache/ccstream on first use).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint bootstrap clean

demo: bootstrap
	$(VENV)/bin/ccstream demo $(ARGS)

test: bootstrap lint
	$(PY) -m pytest -q $(ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check ccstream connectors pipeline simulator devtools tests bench
	$(VENV)/bin/mypy

bootstrap:
	@CCSTREAM_VENV=$(VENV) scripts/bootstrap

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
