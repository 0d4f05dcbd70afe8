"""The GPU generation table against Debian's real pci.ids (package pci.ids, a dependency of
pciutils): every NVIDIA GPU whose pci.ids name starts with its chip must get that chip's
generation, so no Maxwell or Pascal board shows as "unknown" and gets the wrong module flavour."""

from __future__ import annotations

import re
from pathlib import Path

from provision.gpu_generations import classify
from tests.conftest import need

PCI_IDS = Path("/usr/share/misc/pci.ids")
# Chip name prefixes -> generation (NVIDIA's chip naming: GF = Fermi ... GB = Blackwell).
PREFIXES = {
    "GF": "Fermi",
    "GK": "Kepler",
    "GM": "Maxwell",
    "GP": "Pascal",
    "GV": "Volta",
    "TU": "Turing",
    "GA": "Ampere",
    "GH": "Hopper",
    "AD": "Ada",
    "GB": "Blackwell",
}
_CHIP = re.compile(r"^(GF|GK|GM|GP|GV|TU|GA|GH|AD|GB)\d+")
# Functions of a GPU board that are not the GPU (no display class, never classified).
_NOT_A_GPU = re.compile(r"Audio|USB|UCSI|NVSwitch|HDMI", re.IGNORECASE)


def nvidia_gpus(text: str) -> list[tuple[int, str]]:
    """Vendor 10de's device lines of pci.ids -> (device id, name)."""
    out: list[tuple[int, str]] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("10de "):
            inside = True
        elif inside and line and not line.startswith(("\t", "#")):
            break
        elif inside and line.startswith("\t") and not line.startswith("\t\t"):
            device, _, name = line.strip().partition(" ")
            out.append((int(device, 16), name.strip()))
    return out


def test_every_nvidia_gpu_in_debians_pci_ids_gets_its_chips_generation() -> None:
    need(PCI_IDS.is_file(), f"needs {PCI_IDS} (Debian package pci.ids)")
    gpus = nvidia_gpus(PCI_IDS.read_text(encoding="utf-8", errors="replace"))
    checked = 0
    wrong = []
    for device, name in gpus:
        m = _CHIP.match(name)
        if not m or _NOT_A_GPU.search(name):
            continue
        checked += 1
        got = classify(device).name
        if got != PREFIXES[m.group(1)]:
            wrong.append(f"0x{device:04x} {name}: {got}")
    assert checked > 700, checked  # the list was really read (pci.ids 2023.04: 754 GPUs)
    assert wrong == []


def test_the_ids_that_fell_in_no_range_are_maxwell_and_pascal() -> None:
    maxwell = [0x1617, 0x1618, 0x1619, 0x161A, 0x1667, 0x174D, 0x174E, 0x1789, 0x179C]
    pascal = [0x1725, 0x172E, 0x172F]
    assert {classify(d).name for d in maxwell} == {"Maxwell"}
    assert {classify(d).name for d in pascal} == {"Pascal"}
    assert not any(classify(d).open_supported for d in maxwell + pascal)


def test_blackwell_requires_the_open_modules_and_older_ones_do_not() -> None:
    assert classify(0x2B85).open_required  # RTX 5090 (GB202)
    assert classify(0x2901).open_required  # B200 (GB100)
    assert not classify(0x2330).open_required  # H100: open recommended, not required
    assert not classify(0x15F8).open_required
