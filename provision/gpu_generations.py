"""NVIDIA PCI device id -> GPU generation, and what that means for the kernel module flavour.

Pure data and lookups: the driver playbooks choose the open or the proprietary kernel modules
from the GPUs on the PCI bus before any driver is installed, so the choice cannot come from NVML.

Why the flavour matters: NVIDIA's open kernel modules run only on GPUs with a GSP (Turing and
newer); Maxwell, Pascal and Volta need the proprietary modules, and R580 is their last branch;
Kepler and older are not supported by current drivers at all (open-gpu-kernel-modules#1003,
field notes section 2).

Sources for the ranges (each chip owns a block of device ids; the low bits are board straps; a
few ids sit outside their chip's block and are listed one by one). tests/test_gpu_generations.py
checks every GPU of vendor 10de in Debian's pci.ids (package pci.ids, /usr/share/misc/pci.ids)
whose name starts with its chip (GM204M, GP100GL, TU102, ...) against this table:
- Fermi/Kepler/Maxwell (GM107): envytools ``docs/hw/pciid.rst`` (nVidia PCI id database).
- Maxwell to Volta: pci.ids (pci-ids.ucw.cz, vendor 10de) and the "supported products" appendix
  of the R580 driver README; e.g. GTX 980 0x13C0, Tesla P100 0x15F8, Tesla V100 0x1DB4.
- Turing and newer: the "Compatible GPUs" table of NVIDIA/open-gpu-kernel-modules README.md
  (R550 and later releases), which lists every GPU the open modules support by PCI id; e.g.
  Tesla T4 0x1EB8, A100 0x20B0, H100 0x2330, H200 0x2335, RTX 4090 0x2684, B200 0x2901,
  RTX 5090 0x2B85, B300 0x3182. Every id in that table is 0x1E00 or above, and every GPU id
  NVIDIA assigned from 0x1E00 on belongs to a Turing or newer chip: an id not in this table but
  at or above 0x1E00 is treated as a newer, open-capable GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

# Generation names, oldest first. Turing and newer have a GSP: open modules supported.
PRE_FERMI = "pre-Fermi"
FERMI = "Fermi"
KEPLER = "Kepler"
MAXWELL = "Maxwell"
PASCAL = "Pascal"
VOLTA = "Volta"
TURING = "Turing"
AMPERE = "Ampere"
HOPPER = "Hopper"
ADA = "Ada"
BLACKWELL = "Blackwell"
UNKNOWN = "unknown"

OPEN_CAPABLE = frozenset({TURING, AMPERE, HOPPER, ADA, BLACKWELL})
# Only the open modules drive these (NVIDIA, "NVIDIA Transitions Fully Towards Open-Source GPU
# Kernel Modules", July 2024, R560): Blackwell here; Grace Hopper (a Hopper GPU on an aarch64
# Grace host) is decided by the playbook, which knows the architecture.
OPEN_REQUIRED = frozenset({BLACKWELL})
LEGACY = frozenset({PRE_FERMI, FERMI, KEPLER})  # no current driver branch supports them

FIRST_OPEN_ID = 0x1E00  # TU102, the first Turing chip
_FIRST_KEPLER_ID = 0x0FC0  # GK107; every unlisted id below it is an older chip

# (first id, last id, chip, generation), inclusive ranges. Not sorted by generation on purpose:
# NVIDIA allocated blocks out of order (TU116 0x2180 sits between GA100 and GA102).
RANGES: tuple[tuple[int, int, str, str], ...] = (
    (0x06C0, 0x06DF, "GF100", FERMI),
    (0x0DC0, 0x0DDF, "GF106", FERMI),
    (0x0DE0, 0x0DFF, "GF108", FERMI),
    (0x0E20, 0x0E3F, "GF104", FERMI),
    (0x0F00, 0x0F1F, "GF108", FERMI),
    (0x0FC0, 0x0FFF, "GK107", KEPLER),
    (0x1000, 0x103F, "GK110/GK210", KEPLER),
    (0x1040, 0x107F, "GF119", FERMI),
    (0x1080, 0x109F, "GF110", FERMI),
    (0x10C0, 0x10DF, "GT218", PRE_FERMI),
    (0x1140, 0x117F, "GF117", FERMI),
    (0x1180, 0x11BF, "GK104", KEPLER),
    (0x11C0, 0x11FF, "GK106", KEPLER),
    (0x1200, 0x121F, "GF114", FERMI),
    (0x1240, 0x125F, "GF116", FERMI),
    (0x1280, 0x12BF, "GK208", KEPLER),
    (0x1340, 0x137F, "GM108", MAXWELL),
    (0x1380, 0x13BF, "GM107", MAXWELL),
    (0x13C0, 0x13FF, "GM204", MAXWELL),
    (0x1400, 0x143F, "GM206", MAXWELL),
    (0x15F0, 0x15FF, "GP100", PASCAL),
    # Single ids outside their chip's block (pci.ids: GM204M mobile, GP100, GM108M, GM107).
    (0x1617, 0x161A, "GM204", MAXWELL),
    (0x1667, 0x1667, "GM204", MAXWELL),
    (0x1725, 0x172F, "GP100", PASCAL),
    (0x174D, 0x174E, "GM108", MAXWELL),
    (0x1789, 0x1789, "GM107", MAXWELL),
    (0x179C, 0x179C, "GM107", MAXWELL),
    (0x17C0, 0x17FF, "GM200", MAXWELL),
    (0x1B00, 0x1B7F, "GP102", PASCAL),
    (0x1B80, 0x1BFF, "GP104", PASCAL),
    (0x1C00, 0x1C7F, "GP106", PASCAL),
    (0x1C80, 0x1CFF, "GP107", PASCAL),
    (0x1D00, 0x1D7F, "GP108", PASCAL),
    (0x1D80, 0x1DFF, "GV100", VOLTA),
    (0x1E00, 0x1E7F, "TU102", TURING),
    (0x1E80, 0x1EFF, "TU104", TURING),
    (0x1F00, 0x1F7F, "TU106", TURING),
    (0x1F80, 0x1FFF, "TU117", TURING),
    (0x2080, 0x20FF, "GA100", AMPERE),
    (0x2180, 0x21FF, "TU116", TURING),
    (0x2200, 0x227F, "GA102", AMPERE),
    (0x2300, 0x237F, "GH100", HOPPER),
    (0x2400, 0x247F, "GA103", AMPERE),
    (0x2480, 0x24FF, "GA104", AMPERE),
    (0x2500, 0x257F, "GA106", AMPERE),
    (0x2580, 0x25FF, "GA107", AMPERE),
    (0x2680, 0x26FF, "AD102", ADA),
    (0x2700, 0x277F, "AD103", ADA),
    (0x2780, 0x27FF, "AD104", ADA),
    (0x2800, 0x287F, "AD106", ADA),
    (0x2880, 0x28FF, "AD107", ADA),
    (0x2900, 0x29FF, "GB100", BLACKWELL),
    (0x2B80, 0x2BFF, "GB202", BLACKWELL),
    (0x2C00, 0x2C7F, "GB203", BLACKWELL),
    (0x2D00, 0x2D7F, "GB206", BLACKWELL),
    (0x2D80, 0x2DFF, "GB207", BLACKWELL),
    (0x2E00, 0x2E7F, "GB10", BLACKWELL),
    (0x2F00, 0x2F7F, "GB205", BLACKWELL),
    (0x3180, 0x31FF, "B300", BLACKWELL),
)


@dataclass(frozen=True)
class Generation:
    """What a device id says: the generation, its chip (when known) and the module choice."""

    name: str
    chip: str
    open_supported: bool
    legacy: bool
    open_required: bool = False


def parse_device_id(value: int | str) -> int:
    """``0x2330``, ``2330`` (hex, as lspci and NVIDIA's tables write it) or an int -> int."""
    if isinstance(value, bool):
        raise ValueError(f"not a PCI device id: {value!r}")
    if isinstance(value, int):
        number = value
    else:
        text = value.strip().lower().removeprefix("0x")
        if not text or len(text) > 4 or any(c not in "0123456789abcdef" for c in text):
            raise ValueError(f"not a PCI device id: {value!r}")
        number = int(text, 16)
    if not 0 <= number <= 0xFFFF:
        raise ValueError(f"not a PCI device id: {value!r}")
    return number


def classify(device_id: int | str) -> Generation:
    """The generation of an NVIDIA GPU from its PCI device id (vendor 0x10de assumed)."""
    number = parse_device_id(device_id)
    for first, last, chip, name in RANGES:
        if first <= number <= last:
            return Generation(
                name, chip, name in OPEN_CAPABLE, name in LEGACY, name in OPEN_REQUIRED
            )
    if number >= FIRST_OPEN_ID:
        return Generation(UNKNOWN, "", True, False)
    if number < _FIRST_KEPLER_ID:
        return Generation(PRE_FERMI, "", False, True)
    return Generation(UNKNOWN, "", False, False)


__all__ = [
    "FIRST_OPEN_ID",
    "LEGACY",
    "OPEN_CAPABLE",
    "OPEN_REQUIRED",
    "RANGES",
    "Generation",
    "classify",
    "parse_device_id",
]
