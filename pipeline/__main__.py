"""``python -m pipeline`` is ``ccstream``."""

from pipeline.cli import entry

entry()
