"""Make SAPIEN (ManiSkill 3's renderer) find a Vulkan driver, on GPU and CPU-only machines.

SAPIEN needs Vulkan even for state observations. A machine with an NVIDIA GPU uses its own driver. A CPU-only
machine uses mesa 25's software rasteriser lavapipe, unpacked into ``<repo>/.vulkan`` by
``scripts/setup_vulkan.sh`` (``make setup``); Debian bookworm's own mesa 22 is too old.

``ensure_vulkan()`` must run before ``mani_skill`` or ``sapien`` is imported: SAPIEN picks its Vulkan loader at
import time. It is idempotent and cheap after the first call.
"""
from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[3]
VULKAN_DIR = REPO_ROOT / ".vulkan"
ASSET_DIR = REPO_ROOT / ".maniskill"
_NVIDIA_ICDS = ("/usr/share/vulkan/icd.d/nvidia_icd.json", "/etc/vulkan/icd.d/nvidia_icd.json")
_SYSTEM_LIB_DIRS = ("/usr/lib", "/usr/lib64", "/usr/lib/x86_64-linux-gnu")

_state: dict | None = None


class VulkanUnavailableError(RuntimeError):
    """Neither a GPU Vulkan driver nor the project-local lavapipe (``.vulkan/``) is available."""


def _has_gpu_driver() -> bool:
    if any(os.path.isfile(p) for p in _NVIDIA_ICDS):
        return True
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        return subprocess.run(["nvidia-smi"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _system_has_libvulkan() -> bool:
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d] + list(_SYSTEM_LIB_DIRS)
    return any(os.path.isfile(os.path.join(d, "libvulkan.so.1")) for d in dirs)


def _preload(paths: list[Path]) -> None:
    """Load shared libraries globally so the driver's and SAPIEN's later ``dlopen`` by soname finds them.

    glibc matches an already loaded library by its soname, so this replaces an ``LD_LIBRARY_PATH`` export
    (which the dynamic linker only reads at process start). Retries cover an unknown dependency order.
    """
    pending = [p for p in paths if p.is_file()]
    for _ in range(len(pending) + 1):
        failed = []
        for path in pending:
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                failed.append(path)
        if not failed or len(failed) == len(pending):
            pending = failed
            break
        pending = failed
    if pending:
        raise VulkanUnavailableError(
            f"could not load {[str(p) for p in pending]} from {VULKAN_DIR}; re-run `make setup` "
            f"(or `rm -rf {VULKAN_DIR} && bash scripts/setup_vulkan.sh`)"
        )


def ensure_vulkan() -> dict:
    """Point SAPIEN at a working Vulkan driver and ManiSkill at project-local assets.

    Sets ``MS_SKIP_ASSET_DOWNLOAD_PROMPT=1`` and ``MS_ASSET_DIR=<repo>/.maniskill`` (unless already set) and,
    without a GPU driver, ``VK_ICD_FILENAMES``/``VK_DRIVER_FILES`` to ``.vulkan/lvp_icd.json``.

    Returns:
        ``{"backend": "gpu" | "lavapipe", "icd": str | None, "asset_dir": str}``.
    Raises:
        VulkanUnavailableError: no GPU driver and no ``.vulkan/`` (run ``make setup``).
    """
    global _state
    if _state is not None:
        return dict(_state)
    os.environ["MS_SKIP_ASSET_DOWNLOAD_PROMPT"] = "1"
    os.environ.setdefault("MS_ASSET_DIR", str(ASSET_DIR))
    if "sapien" in sys.modules:
        logger.warning("ensure_vulkan() called after sapien was imported: Vulkan settings may not apply")

    if _has_gpu_driver():
        _state = {"backend": "gpu", "icd": None, "asset_dir": os.environ["MS_ASSET_DIR"]}
        return dict(_state)

    icd = VULKAN_DIR / "lvp_icd.json"
    if not icd.is_file():
        raise VulkanUnavailableError(
            f"no GPU Vulkan driver and no software driver at {icd}. ManiSkill/SAPIEN need Vulkan even on CPU: "
            "run `make setup` (or `bash scripts/setup_vulkan.sh`) once to unpack mesa's lavapipe into .vulkan/."
        )
    preload_file = VULKAN_DIR / "preload.txt"
    preload = [Path(line) for line in preload_file.read_text().split() if line] if preload_file.is_file() else []
    local_loader = next((p for p in preload if p.name == "libvulkan.so.1"), None)
    if local_loader is not None and _system_has_libvulkan():
        preload.remove(local_loader)
        local_loader = None
    _preload(preload)
    if local_loader is not None:
        # SAPIEN looks for libvulkan.so.1 in LD_LIBRARY_PATH and otherwise switches to its bundled loader;
        # listing the (already loaded) local loader's folder keeps the one mesa was packaged with.
        paths = [str(local_loader.parent)] + [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
        os.environ["LD_LIBRARY_PATH"] = ":".join(dict.fromkeys(paths))
    os.environ["VK_ICD_FILENAMES"] = str(icd)
    os.environ["VK_DRIVER_FILES"] = str(icd)
    _state = {"backend": "lavapipe", "icd": str(icd), "asset_dir": os.environ["MS_ASSET_DIR"]}
    logger.info("Vulkan: lavapipe software rendering via %s", icd)
    return dict(_state)
