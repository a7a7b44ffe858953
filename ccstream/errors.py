"""The one root of ccstream's own errors.

Every error ccstream raises on purpose derives from ``CcstreamError`` and says whether trying
again can help (``retriable``): the classifiers and the runner read that attribute, never the
class name, so a new error only has to set it. Errors carry their structured facts as attributes
(a key path, an HTTP status, a close code, a stream) and never a secret.
"""

from __future__ import annotations


class CcstreamError(Exception):
    """Base of every error ccstream raises on purpose."""

    retriable: bool = False
    # the command's exit status when this error stops it: 2 = the set-up is wrong (configuration,
    # an unsupported dependency), 1 = a fatal condition at run time (docs/kafka.md)
    exit_status: int = 1
