"""The one exception hierarchy of relaygate.

Problems in the user's data are never raised: they become ``Finding`` values
(see ``relaygate.findings``) so one run reports all of them. Exceptions are for
the tool itself: a usage error (exit 2) or an internal failure (exit 3), which
always fails closed.
"""

from __future__ import annotations


class RelaygateError(Exception):
    """Base class of every exception relaygate raises on purpose."""

    exit_code = 3


class UsageError(RelaygateError):
    """The command was called wrongly (missing folder, bad option value)."""

    exit_code = 2


class InternalError(RelaygateError):
    """relaygate itself is broken; the run must not be taken as a success."""

    exit_code = 3


class RenderRefused(InternalError):
    """A renderer was handed a value that must never reach generated configuration.

    Validation should have stopped it; reaching a renderer means a guard failed,
    so this is an internal error and the compile fails closed.
    """


class VerificationFailed(InternalError):
    """The compiled artifacts disagree with the model or with each other."""
