"""STAND-INS for NVIDIA Container Toolkit binaries (`nvidia-ctk`, `nvidia-container-runtime`).

The real toolkit cannot be downloaded here. `nvidia-ctk` (a python3 script: booted lab hosts have
python3) answers `--version` and implements `runtime configure --runtime=docker` like the real
1.17 CLI; `nvidia-container-runtime` exists so that a real dockerd can register the `nvidia`
runtime. They are copied into booted lab hosts, or installed from the stand-in packages of
tests/lab/standin_debs.py. They never pretend to run a container.
"""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))
NVIDIA_CTK = os.path.join(HERE, "nvidia-ctk")
NVIDIA_CONTAINER_RUNTIME = os.path.join(HERE, "nvidia-container-runtime")
NVIDIA_CONTAINER_RUNTIME_HOOK = os.path.join(HERE, "nvidia-container-runtime-hook")
CTK_VERSION = "1.17.8"  # what the nvidia-ctk stand-in reports
