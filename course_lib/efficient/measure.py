"""Measuring time and peak memory of one call, on the CPU or a CUDA GPU.

Memory: the peak of the bytes *allocated by tensors during the call*, above what was
allocated when it began (the inputs do not count, the output does). On a GPU this is
``torch.cuda.max_memory_allocated``. On the CPU PyTorch keeps no such counter, so we
record every allocation and free with the profiler (``profile_memory=True``) and
replay them in time order: a tensor that lives only for a moment inside the call
(a ``(len_q, len_k)`` score matrix, say) is seen, which an RSS reading after the call
would miss.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for a moment (C++ logging bypasses ``sys.stderr``)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_memory_bytes(fn: Callable[[], Any], device: torch.device | str = "cpu") -> tuple[Any, int]:
    """Run ``fn()`` once; return ``(result, peak extra bytes allocated during the call)``.

    On the CPU, memory freed during the call that was allocated before it is not
    subtracted (the profiler never saw its size), so the peak can only be
    overestimated. To measure a backward pass, call ``backward(retain_graph=True)``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, torch.cuda.max_memory_allocated(device) - start
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_stderr():  # the profiler writes a start and a stop line to the process's stderr
        prof.start()
    try:
        result = fn()
    finally:
        with _quiet_stderr():
            prof.stop()
    events = prof.profiler.kineto_results.events()
    events = [e for e in events if e.name() == "[memory]" and e.device_type().name == "CPU"]
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()  # positive for an allocation, negative for a free
        peak = max(peak, current)
    return result, peak


def time_ms(fn: Callable[[], Any], *, repeats: int = 5, warmup: int = 1, device: torch.device | str = "cpu") -> float:
    """Median wall time of ``fn()`` in milliseconds (CUDA work is waited for)."""
    device = torch.device(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)
