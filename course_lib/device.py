"""Which device to compute on, and how Triton kernels will run there."""

from __future__ import annotations

import importlib.util
import os

import torch

# Without CUDA, Triton kernels run in Triton's interpreter. Triton reads TRITON_INTERPRET when
# it is first imported (its own library functions are compiled or interpreted from then on), and
# other packages import it early: torch.utils.flop_counter does. So the choice is made here, when
# course_lib is imported, before any of the course's code can import Triton.
if not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ:
    os.environ["TRITON_INTERPRET"] = "1"


def default_device() -> torch.device:
    """CUDA when available, then Apple's MPS, otherwise the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def triton_mode() -> str:
    """``"native"`` (a CUDA GPU), ``"interpreter"`` (CPU, ``TRITON_INTERPRET=1``) or ``"missing"``.

    Without CUDA the course runs Triton kernels in Triton's interpreter, which must
    be switched on before Triton is first imported; importing ``course_lib`` does that.
    """
    if importlib.util.find_spec("triton") is None:
        return "missing"
    if torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET", "0") != "1":
        return "native"
    return "interpreter"
