"""Errors that reach the user as one line and an exit code (see DESIGN.md, Contracts)."""
from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_USAGE = 2


class CollapseAuditError(Exception):
    """A user-facing error: bad input, bad usage, missing weights.

    The CLI prints ``str(err)`` as a single line and exits with ``exit_code``
    (2 by default); library callers catch it like any exception.
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(CollapseAuditError):
    """The command line or a rule/policy is wrong."""


class InputError(CollapseAuditError):
    """An input path, file or folder cannot be used (missing, empty, incompatible)."""


class WeightsError(CollapseAuditError):
    """Model weights are missing, corrupt or cannot be downloaded."""


class EnvironmentFault(CollapseAuditError):
    """The user's environment stops the run (output folder not writable, disk full, ...): exit 2, one line."""


class CollapseAuditWarning(UserWarning):
    """Something was worked around (a broken cache, a skipped file class): the CLI prints it as one line."""
