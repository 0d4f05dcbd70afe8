"""Grade one host's facts into checks (pure): OK, WARN, FAIL, UNKNOWN or SKIP, each with a reason.

One module per concern, each check registered once with ``@check`` (see ``base.py``); importing
the modules here, in this order, is the catalogue order of ``docs/audit.md``. Fields a card does
not support (N/A) never fail a check: they make it SKIP. A host's status is its worst check by
the explicit :data:`SEVERITY` order; a host that could not be audited is UNREACHABLE (transport)
or UNKNOWN (the probe's answer was unusable).
"""

from __future__ import annotations

import importlib

from provision.audit.checks.base import (
    GIB,
    REGISTRY,
    SEVERITY,
    Check,
    CheckResult,
    Context,
    Status,
    check,
    is_gpu_host,
    run_checks,
    version_tuple,
    worst,
)

# The concerns in catalogue order: importing a module registers its checks, in this order.
CATALOGUE = ("audit_state", "driver", "host", "gpu_health", "boot", "docker", "disk")
for _concern in CATALOGUE:
    importlib.import_module(f"{__name__}.{_concern}")

from provision.audit.checks.docker import DOCKER_ACCESS_FIX  # noqa: E402
from provision.audit.checks.drift import drift_checks  # noqa: E402
from provision.audit.checks.driver import (  # noqa: E402
    CUDA_MAJOR_MIN_DRIVER,
    CUDA_MIN_DRIVER,
    cuda_from_driver,
    min_driver_for_cuda,
)
from provision.audit.checks.gpu_health import HW_SLOWDOWN_BITS, XID_FAIL, XID_IGNORED, XID_WARN  # noqa: E402

__all__ = [
    "CATALOGUE",
    "CUDA_MAJOR_MIN_DRIVER",
    "CUDA_MIN_DRIVER",
    "DOCKER_ACCESS_FIX",
    "GIB",
    "HW_SLOWDOWN_BITS",
    "REGISTRY",
    "SEVERITY",
    "XID_FAIL",
    "XID_IGNORED",
    "XID_WARN",
    "Check",
    "CheckResult",
    "Context",
    "Status",
    "check",
    "cuda_from_driver",
    "drift_checks",
    "is_gpu_host",
    "min_driver_for_cuda",
    "run_checks",
    "version_tuple",
    "worst",
]
