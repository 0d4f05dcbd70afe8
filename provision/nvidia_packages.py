"""The Debian/Ubuntu package names of NVIDIA's driver and container toolkit (pure constants).

A leaf module so that the audit (which reads these packages' holds) does not import the whole
module registry (provision.modules: ~150 ms of every audit's start-up) to learn four names.
"""

from __future__ import annotations

DRIVER_PATTERNS = (
    "nvidia-*",
    "libnvidia-*",
    "cuda-drivers*",
    "libcuda1*",
    "libxnvctrl*",
    "xserver-xorg-video-nvidia*",
    "firmware-nvidia-*",
)
# The container toolkit matches the patterns above but has its own hold and upgrade path.
TOOLKIT_PREFIXES = ("nvidia-container-toolkit", "libnvidia-container", "nvidia-docker2")
DRIVER_PREFIXES = tuple(p.rstrip("*") for p in DRIVER_PATTERNS)
