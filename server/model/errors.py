"""The one exception type of model provisioning."""

from __future__ import annotations


class ModelError(Exception):
    """A model bundle could not be found, fetched, built or verified.

    Every failure in ``server.model`` ends here, with a message meant for the operator (what
    failed, where, and what to do), so callers need one ``except`` and the CLI prints it as is.
    """
