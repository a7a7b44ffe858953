"""``python -m pipeline`` is ``ccstream``."""

from ccstream.cli import entry

entry()
