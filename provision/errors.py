"""Errors a user can act on.

Everything below the CLI raises these instead of printing or exiting; the CLI turns one into a
single line on stderr (no traceback) and a non-zero exit code.
"""

from __future__ import annotations


class ProvisionError(Exception):
    """Base: ``str(err)`` is the one line shown to the user."""

    exit_code = 1


class InventoryError(ProvisionError):
    """A malformed inventory; the message starts with ``file:line:``."""


class PatternError(ProvisionError):
    """A ``--limit`` or ``hosts:`` pattern that cannot be resolved."""


class ConfigError(ProvisionError):
    """Bad options or variables (an unknown host, a wrong variable)."""


class UsageError(ConfigError):
    """A bad command-line option value (``--forks 0``, ``--deadline inf``): exit 5, Ansible's
    code for bad or incomplete options, which no host result uses."""

    exit_code = 5
