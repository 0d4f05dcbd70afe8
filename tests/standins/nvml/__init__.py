"""STAND-IN for NVIDIA's NVML library (``libnvidia-ml.so.1``), built by the tests with gcc.

The real ``pynvml`` inside the real probe loads it through ``LD_LIBRARY_PATH`` (or, on lab hosts
with the stand-in driver package of tests/lab/standin_debs.py, from the system library folder);
the GPU state comes from a scenario file named by ``NVML_STANDIN_SCENARIO``, default
``/etc/nvml-standin/scenario`` (format in ``nvml_standin.c``). ``nvidia_smi.c`` is a stand-in
``nvidia-smi`` that answers through NVML. Nothing in Python is patched: only the hardware
boundary is replaced.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "nvml_standin.c")
SMI_SOURCE = os.path.join(HERE, "nvidia_smi.c")
BUILD_ROOT = os.path.join(os.path.dirname(HERE), "build")  # gitignored (build/)
LIB_FLAGS = ("-shared", "-fPIC", "-O1", "-w", "-Wl,-soname,libnvidia-ml.so.1")
SMI_FLAGS = ("-O1", "-w")

GIB = 1024**3


def _compile(source: str, flags: tuple[str, ...], kind: str, name: str) -> str:
    """Compile once per (source, flags) version into BUILD_ROOT/<kind>-<digest>/<name>.

    The digest covers the flags too, so a flag change never reuses an old binary."""
    with open(source, "rb") as fh:
        digest = hashlib.sha256(fh.read() + " ".join(flags).encode()).hexdigest()[:16]
    out_dir = os.path.join(BUILD_ROOT, f"{kind}-{digest}")
    target = os.path.join(out_dir, name)
    if os.path.exists(target):
        return out_dir
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is needed to build the NVML stand-in (Debian package gcc)")
    os.makedirs(out_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out_dir, suffix=".tmp")
    os.close(fd)
    try:
        subprocess.run([gcc, *flags, "-o", tmp, source], check=True, capture_output=True)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)  # atomic: concurrent test runs never see half a binary
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_dir


LIB_VERSION = "550.54.15"  # the file name a real driver gives it; the scenario's BASE driver


def build() -> str:
    """Compile the stand-in once per source version; return the folder holding the library.

    Like a real driver, ``libnvidia-ml.so.1`` is a link to ``libnvidia-ml.so.<version>``: the
    probe reads the version of the library it loaded from that name (/proc/self/maps)."""
    folder = _compile(SOURCE, LIB_FLAGS, "nvml", f"libnvidia-ml.so.{LIB_VERSION}")
    link = os.path.join(folder, "libnvidia-ml.so.1")
    if not os.path.islink(link):
        tmp = f"{link}.{os.getpid()}.tmp"
        os.symlink(f"libnvidia-ml.so.{LIB_VERSION}", tmp)
        os.replace(tmp, link)
    return folder


def build_nvidia_smi() -> str:
    """Compile the stand-in ``nvidia-smi`` (NVML through dlopen); return its path."""
    return os.path.join(_compile(SMI_SOURCE, SMI_FLAGS, "nvidia-smi", "nvidia-smi"), "nvidia-smi")


def write_scenario(path: str, values: Mapping[str, object]) -> str:
    with open(path, "w") as fh:
        for key, value in values.items():
            fh.write(f"{key}={value}\n")
    return path


def env_for(lib_dir: str | None, scenario_path: str | None) -> dict[str, str]:
    """Environment for a probe subprocess using the stand-in (lib_dir None: no NVML at all)."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH",)}
    if lib_dir is not None:
        env["LD_LIBRARY_PATH"] = lib_dir
    if scenario_path is not None:
        env["NVML_STANDIN_SCENARIO"] = scenario_path
    return env


def healthy_gpu(i: int, name: str = "NVIDIA RTX A6000") -> dict[str, object]:
    return {
        f"gpu{i}.name": name,
        f"gpu{i}.uuid": f"GPU-{i:08x}-1111-2222-3333-444455556666",
        f"gpu{i}.mem_total": 48 * GIB,
        f"gpu{i}.mem_used": 512 * 1024 * 1024,
        f"gpu{i}.util_gpu": 0,
        f"gpu{i}.util_mem": 0,
        f"gpu{i}.temp": 34,
        f"gpu{i}.power": 21500,
        f"gpu{i}.persistence": 1,
        f"gpu{i}.ecc_unc": 0,
        f"gpu{i}.remap": "0,0,0,0",
        f"gpu{i}.retired_pending": 0,
        f"gpu{i}.pcie_cur": 16,
        f"gpu{i}.pcie_max": 16,
        f"gpu{i}.clocks": "0x1",
        f"gpu{i}.procs": "",
        f"gpu{i}.inforom": 0,
    }


BASE = {"init": 0, "driver": "550.54.15", "nvml": "12.550.54.15", "cuda": 12040}


def scenario(kind: str, pids: tuple[int, ...] = ()) -> dict[str, object]:
    """The named scenarios of issue 3 (``pids``: real processes for "busy")."""
    two = {**BASE, "count": 2, **healthy_gpu(0), **healthy_gpu(1)}
    if kind == "no_driver":
        return {"init": "!9"}
    if kind == "no_gpu":
        return {**BASE, "count": 0}
    if kind == "healthy":
        return two
    if kind == "mismatch":
        return {"init": "!18"}
    if kind == "inforom":
        return {**two, "gpu0.inforom": "!14"}
    if kind == "mig":
        return {**two, "gpu0.mig": 1, "gpu1.mig": 0}
    if kind == "hung_driver":
        return {**two, "init_sleep": 60}
    if kind == "lost_gpu":
        return {**two, "gpu1.handle": "!15"}
    if kind == "ecc":
        return {**two, "gpu0.ecc_unc": 3, "gpu1.remap": "0,0,1,0"}
    if kind == "unsupported":
        out = {**BASE, "count": 1, **healthy_gpu(0, "NVIDIA GeForce RTX 3090")}
        for field in ("ecc_unc", "remap", "retired_pending", "power", "persistence", "clocks"):
            out[f"gpu0.{field}"] = "!3"
        return out
    if kind == "busy":
        procs = ",".join(f"{pid}:{(4 + n) * GIB}" for n, pid in enumerate(pids))
        return {
            **two,
            "gpu0.procs": procs,
            "gpu0.util_gpu": 97,
            "gpu0.mem_used": 20 * GIB,
        }
    raise KeyError(kind)
