"""The report model of each command, what every format renders: ping/run outcomes and apply's
result. The audit's model is its list of ``provision.audit.report.HostReport``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from provision.engine import PlaybookResult
    from provision.executor import HostOutcome


@dataclass(frozen=True)
class AdhocReport:
    """``ping`` / ``run``: each host's outcome in inventory order."""

    command: str  # "ping" or "run"
    outcomes: Mapping[str, HostOutcome]
    elapsed: float
    exit_code: int


@dataclass(frozen=True)
class ApplyReport:
    """``apply``: the playbook's result, how long it took, whether nothing was changed."""

    result: PlaybookResult
    elapsed: float
    check: bool
