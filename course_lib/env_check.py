"""Check that this machine has what the course needs: ``python -m course_lib.env_check``.

Each line reads ``[OK]``, ``[FAIL]`` (the course cannot run without it) or ``[--]``
(optional, and not available here). The exit status is 1 when a required package
is missing.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata

REQUIRED = ("torch", "numpy", "matplotlib", "ipywidgets", "jupyterlab", "nbval")
OPTIONAL = ("triton",)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def check_lines() -> tuple[list[str], bool]:
    """The report's lines, and whether every required package is present."""
    lines = []
    ok = sys.version_info >= (3, 10)
    lines.append(f"[{'OK' if ok else 'FAIL'}] python {platform.python_version()} (3.10 or newer needed)")
    for package in REQUIRED:
        version = _version(package)
        ok &= version is not None
        lines.append(f"[OK] {package} {version}" if version else f"[FAIL] {package} is not installed")
    for package in OPTIONAL:
        version = _version(package)
        lines.append(f"[OK] {package} {version}" if version else f"[--] {package} is not installed (optional)")

    import torch

    from .device import default_device, triton_mode

    device = default_device()
    if device.type == "cuda":
        lines.append(f"[OK] device: CUDA, {torch.cuda.get_device_name(0)}")
    elif device.type == "mps":
        lines.append("[OK] device: Apple MPS")
    else:
        lines.append(f"[OK] device: CPU, {torch.get_num_threads()} threads (every lesson runs on a CPU)")
    mode = triton_mode()
    if mode == "native":
        lines.append("[OK] Triton kernels run natively on the GPU")
    elif mode == "interpreter":
        lines.append("[OK] Triton kernels run in the Triton interpreter (CPU, small sizes)")
    else:
        lines.append("[--] Triton kernels cannot run here (install triton on Linux)")
    return lines, ok


def main() -> int:
    lines, ok = check_lines()
    print("\n".join(lines))
    print("Everything the course needs is here." if ok else "Something required is missing: see [FAIL] above.")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
