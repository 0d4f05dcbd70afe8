"""STAND-INS for host tools whose real state cannot exist in a lab container.

``mokutil`` (Secure Boot state: the lab boots no firmware) and ``snap`` plus ``/snap/bin/docker``
(a snap Docker: no snapd in containers). Installed by tests/lab/standin_debs.py's
``install_standin_mokutil`` and ``install_standin_snap_docker``.
"""

from __future__ import annotations

import os

HERE = os.path.dirname(os.path.abspath(__file__))
MOKUTIL = os.path.join(HERE, "mokutil")
SNAP = os.path.join(HERE, "snap")
SNAP_DOCKER = os.path.join(HERE, "snap-docker")
