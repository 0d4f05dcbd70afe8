"""STAND-INS for NVIDIA Container Toolkit binaries (`nvidia-ctk`, `nvidia-container-runtime`).

The real toolkit cannot be downloaded here; these shell scripts are copied into a booted lab host
so that a real dockerd can register the `nvidia` runtime and the audit can read `nvidia-ctk`'s
version. They never pretend to run a container.
"""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))
NVIDIA_CTK = os.path.join(HERE, "nvidia-ctk")
NVIDIA_CONTAINER_RUNTIME = os.path.join(HERE, "nvidia-container-runtime")
CTK_VERSION = "1.14.6"  # what the nvidia-ctk stand-in reports
