"""Did-you-mean hints for names a user mistyped: modules, arguments, keywords (pure)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, else ``""``: the one rule every
    "unknown NAME" message uses, so a typo gets the same kind of hint everywhere."""
    close = difflib.get_close_matches(name, sorted(set(choices)), n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""
