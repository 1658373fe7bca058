"""What attention costs: FLOP and byte counts, measurements, scaling fits, roofline.

Conventions used everywhere in this module:

* **FLOPs** count 2 per multiply-add (one multiply, one add), the convention of
  ``torch.utils.flop_counter`` and of the FlashAttention papers. A ``(m, k) @ (k, n)``
  matmul costs ``2·m·k·n``. Softmax, scaling, masking and bias additions are
  ``O(len_q·len_k)`` or less; they are left out of the counts because they are a
  factor ``head_dim`` smaller than the matmuls.
* **Bytes** are bytes (``1 MiB = 2**20`` bytes); times are seconds; rates are per
  second (FLOP/s, bytes/s).
* Attention shapes follow the course: ``(batch, heads, len_q, head_dim)`` queries,
  ``(batch, heads, len_k, head_dim)`` keys and values.

The formulas are plain arithmetic on the shapes. ``count_flops`` checks the FLOP
counts against PyTorch's counter; ``measure`` and ``scaling_study`` check them on the
machine at hand. ``measure`` (median time and peak memory of a call),
``measure_in_turns`` (several calls compared fairly) and ``peak_memory`` (one call, its
result kept) share one timer and one memory counter, used by every lesson and bench
suite. ``fit_power_law`` turns a sweep into an exponent with a confidence interval; the
roofline helpers say whether a computation is limited by arithmetic or by memory traffic.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import torch

from .attention import scaled_dot_product_attention

__all__ = [
    "Measurement",
    "PowerLaw",
    "arithmetic_intensity",
    "attainable_flops",
    "attention_bytes_moved",
    "attention_flops",
    "attention_memory_bytes",
    "copy_bandwidth",
    "count_flops",
    "fit_power_law",
    "matmul_flops_per_second",
    "measure",
    "measure_in_turns",
    "peak_memory",
    "projection_flops",
    "scaling_study",
    "t_quantile",
]

IMPLEMENTATIONS = ("naive", "tiled")
# "wall": elapsed time. "cpu": CPU time of the calling thread, which leaves out the time
# other programs (and other threads of this process, e.g. a notebook kernel's) held the
# core: on a busy machine it measures the work, not the queue.
CLOCKS = {"wall": time.perf_counter, "cpu": time.thread_time}
K = TypeVar("K")  # the names of the calls that measure_in_turns compares


# --- input checks ---------------------------------------------------------------
def _check_sizes(allow_zero: Sequence[str] = (), **sizes: Any) -> None:
    """Raise ``ValueError`` unless every size is an int >= 1 (>= 0 for ``allow_zero``)."""
    for name, value in sizes.items():
        low = 0 if name in allow_zero else 1
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def _itemsize(dtype: torch.dtype) -> int:
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"dtype must be a torch.dtype such as torch.float32, got {dtype!r}")
    return torch.empty((), dtype=dtype).element_size()


def _check_implementation(implementation: str) -> None:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {IMPLEMENTATIONS}, got {implementation!r}")


# --- counting -----------------------------------------------------------------
def attention_flops(
    batch: int,
    heads: int,
    len_q: int,
    len_k: int,
    head_dim: int,
    *,
    dim_v: int | None = None,
    backward: bool = False,
) -> int:
    """FLOPs of the attention core ``softmax(Q Kᵀ / √d) V``.

    Two matmuls per head: ``Q Kᵀ`` is ``(len_q, head_dim) @ (head_dim, len_k)``, which
    costs ``2·len_q·len_k·head_dim``, and ``P V`` is ``(len_q, len_k) @ (len_k, dim_v)``,
    which costs ``2·len_q·len_k·dim_v``. So the forward pass costs
    ``2·B·H·Lq·Lk·(d + d_v)``, i.e. ``4·B·H·Lq·Lk·d`` when ``d_v = d``.

    Args:
        batch, heads, len_q, len_k, head_dim: the sizes of ``(batch, heads, len_q, head_dim)``
            queries and ``(batch, heads, len_k, head_dim)`` keys.
        dim_v: the values' last size, ``(batch, heads, len_k, dim_v)``; ``head_dim`` by default.
        backward: return the cost of the backward pass instead, by the FlashAttention
            convention: five matmuls (``Q Kᵀ`` is recomputed, then the gradients of ``P``
            and ``V``, of size ``d_v``, and of ``Q`` and ``K``, of size ``d``), i.e.
            ``2·B·H·Lq·Lk·(3·d + 2·d_v)``, ``2.5×`` the forward when ``d_v = d``. Plain
            autograd, which stores ``P`` instead of recomputing it, does four (``2×``).

    Returns:
        FLOPs (int), two per multiply-add; softmax and scaling are not counted.
    """
    dim_v = head_dim if dim_v is None else dim_v
    _check_sizes(batch=batch, heads=heads, len_q=len_q, len_k=len_k, head_dim=head_dim, dim_v=dim_v)
    per_score = 3 * head_dim + 2 * dim_v if backward else head_dim + dim_v
    return 2 * batch * heads * len_q * len_k * per_score


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """FLOPs that PyTorch's ``FlopCounterMode`` counts in one call of ``fn(*args, **kwargs)``.

    The counter sees the matrix products (two FLOPs per multiply-add, as the formulas of
    this module) and ignores elementwise work, so it checks the formulas exactly.
    """
    # Imported here: torch.utils.flop_counter imports triton, which takes seconds.
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn(*args, **kwargs)
    return counter.get_total_flops()


def projection_flops(
    batch: int, len_q: int, len_k: int, d_model: int, d_context: int | None = None, *, cached_kv: bool = False
) -> int:
    """FLOPs of the four projections of a cross-attention layer (``MultiHeadAttention``).

    * ``W_q``: ``(len_q, d_model) @ (d_model, d_model)``, ``2·Lq·d_model²``;
    * ``W_k`` and ``W_v``: ``(len_k, d_context) @ (d_context, d_model)``, ``2·Lk·d_context·d_model`` each;
    * ``W_o``: ``(len_q, d_model) @ (d_model, d_model)``, ``2·Lq·d_model²``.

    Total, per batch element: ``4·Lq·d_model² + 4·Lk·d_context·d_model``. Bias
    additions are not counted (one add per output, not a multiply-add).

    Args:
        batch, len_q, len_k: ``x`` is ``(batch, len_q, d_model)``, the context
            ``(batch, len_k, d_context)``.
        d_model: width of the queries' sequence (and of every head concatenated).
        d_context: width of the context; ``d_model`` by default.
        cached_kv: the keys and values come from a cache (decoding with
            ``MultiHeadAttention.step``): only ``W_q`` and ``W_o`` are applied.

    Returns:
        FLOPs (int), two per multiply-add.
    """
    d_context = d_model if d_context is None else d_context
    _check_sizes(batch=batch, len_q=len_q, len_k=len_k, d_model=d_model, d_context=d_context)
    q_and_o = 4 * batch * len_q * d_model * d_model
    k_and_v = 0 if cached_kv else 4 * batch * len_k * d_context * d_model
    return q_and_o + k_and_v


def attention_memory_bytes(
    batch: int,
    heads: int,
    len_q: int,
    len_k: int,
    head_dim: int,
    dtype: torch.dtype = torch.float32,
    *,
    implementation: str = "naive",
    block_q: int = 64,
    block_k: int = 64,
) -> int:
    """Peak working memory of the attention core, beyond its inputs (a model, in bytes).

    * ``"naive"`` materialises the scores ``S = Q Kᵀ`` and the weights
      ``P = softmax(S)``, both ``(batch, heads, len_q, len_k)``, and both alive while
      the softmax runs: ``2·B·H·Lq·Lk`` elements. This is the peak of
      ``torch.softmax(q @ k.mT, -1) @ v``. It grows as ``Lq·Lk``.
    * ``"tiled"`` (FlashAttention-style) never holds more than one
      ``(block_q, block_k)`` tile of scores and weights per (batch, head), plus the
      output accumulator ``(len_q, head_dim)`` and the running max and sum
      ``(len_q,)`` each: ``B·H·(2·block_q·block_k + Lq·(head_dim + 2))`` elements.
      It grows as ``Lq`` and does not depend on ``Lk`` at all. A version that processes
      all queries at once passes ``block_q=len_q``.

    Args:
        batch, heads, len_q, len_k, head_dim: the attention shapes.
        dtype: element type of the scores (half-precision scores are usually
            computed in float32; pass ``torch.float32`` then).
        implementation: ``"naive"`` or ``"tiled"``.
        block_q, block_k: tile sizes (``"tiled"`` only).

    Returns:
        Bytes (int).
    """
    _check_sizes(batch=batch, heads=heads, len_q=len_q, len_k=len_k, head_dim=head_dim)
    _check_sizes(block_q=block_q, block_k=block_k)
    _check_implementation(implementation)
    size = _itemsize(dtype)
    if implementation == "naive":
        return 2 * batch * heads * len_q * len_k * size
    tile = 2 * min(block_q, len_q) * min(block_k, len_k)
    return batch * heads * (tile + len_q * (head_dim + 2)) * size


def attention_bytes_moved(
    batch: int,
    heads: int,
    len_q: int,
    len_k: int,
    head_dim: int,
    dtype: torch.dtype = torch.float32,
    *,
    implementation: str = "tiled",
) -> int:
    """Bytes the attention core moves to and from main memory (a model, for the roofline).

    * ``"tiled"``: the lower bound of a fused kernel: read ``Q``, ``K``, ``V`` once and
      write ``O`` once, ``B·H·(2·Lq + 2·Lk)·d`` elements.
    * ``"naive"``: the same, plus the ``(len_q, len_k)`` matrices going through
      memory: ``S`` written by the first matmul and read by the softmax, ``P`` written
      by the softmax and read by the second matmul, ``4·B·H·Lq·Lk`` more elements.

    Returns:
        Bytes (int).
    """
    _check_sizes(batch=batch, heads=heads, len_q=len_q, len_k=len_k, head_dim=head_dim)
    _check_implementation(implementation)
    elements = batch * heads * (2 * len_q + 2 * len_k) * head_dim
    if implementation == "naive":
        elements += 4 * batch * heads * len_q * len_k
    return elements * _itemsize(dtype)


# --- measuring ----------------------------------------------------------------
@dataclass(frozen=True)
class Measurement:
    """What ``measure`` found.

    Attributes:
        seconds: median time of one call, in seconds, by ``clock``.
        peak_bytes: high-water mark of the memory allocated during one call, above
            what was allocated when it started (the output included), in bytes;
            ``None`` when memory was not measured.
        times: every timed call, in seconds.
        clock: ``"wall"`` (elapsed time) or ``"cpu"`` (CPU time of the calling thread).
    """

    seconds: float
    peak_bytes: int | None
    times: tuple[float, ...]
    clock: str = "wall"

    @property
    def ms(self) -> float:
        return self.seconds * 1e3

    @property
    def peak_mib(self) -> float | None:
        return None if self.peak_bytes is None else self.peak_bytes / 2**20


def _device_of(args: Sequence[Any], device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    for a in args:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _synchronize(device: torch.device) -> None:
    # GPU kernels run asynchronously: without a sync the clock stops when the
    # kernel is queued, not when it is done.
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _cpu_peak_bytes(fn: Callable[..., Any], args: Sequence[Any]) -> tuple[Any, int]:
    """``fn(*args)`` and the high-water mark of CPU tensor memory during it, from the profiler.

    The CPU has no ``max_memory_allocated``. PyTorch's allocator reports every
    allocation (+bytes) and every free (-bytes) to the profiler, with its address;
    summing those events in time order gives the memory in use after each event, and
    its maximum is the peak. A temporary that is freed before ``fn`` returns is seen,
    which the process's resident size would blur. Only frees of blocks allocated
    during the call are subtracted: a tensor that existed before the call and dies in
    it (its size is known when an earlier measurement allocated it) would otherwise
    pull the count below zero and hide part of the peak. Memory that libraries
    allocate behind PyTorch's back (e.g. BLAS scratch buffers) is not counted.
    """
    # Kineto prints a line on every profiler start and stop below level 6 (a notebook shows
    # them). It reads the variable when the process first starts a profiler; a value the user
    # set is kept.
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with torch.autograd.profiler.profile(profile_memory=True) as prof:
        result = fn(*args)
    events = []  # (time, address, bytes) of every CPU allocation (+) and free (-)
    stack = list(prof.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        fields = node.extra_fields
        if type(fields).__name__ == "_ExtraFields_Allocation" and fields.device.type == "cpu":
            events.append((node.start_time_ns, fields.ptr, fields.alloc_size))
    live: set[int] = set()  # addresses of blocks allocated during the call and not yet freed
    in_use = peak = 0
    for _, ptr, nbytes in sorted(events, key=lambda e: (e[0], e[2] > 0)):  # at a tie, an address is freed first
        if nbytes > 0:
            live.add(ptr)
        elif ptr in live:
            live.discard(ptr)
        else:
            continue  # allocated before the call: not part of its peak
        in_use += nbytes
        peak = max(peak, in_use)
    return result, peak


def peak_memory(fn: Callable[..., Any], *args: Any, device: str | torch.device | None = None) -> tuple[Any, int | None]:
    """Call ``fn(*args)`` once; return its result and the peak memory allocated during the call.

    The peak is the high-water mark of the bytes held by tensors allocated during the
    call, above what was allocated when it began: the inputs do not count; the output
    does, and so does every temporary, even one freed before ``fn`` returns (a
    ``(len_q, len_k)`` score matrix, say). On CUDA it comes from
    ``torch.cuda.max_memory_allocated``, on the CPU from the profiler's allocation
    events (``_cpu_peak_bytes``). Other devices have no honest counter: ``None``.

    On the CPU a tensor allocated before the call and freed during it is not
    subtracted, so the peak can only be overestimated there. A backward pass frees
    the tensors its forward saved: call ``backward(retain_graph=True)`` to measure it
    the same way on every device.

    Args:
        fn: the callable; ``*args`` are passed to it.
        device: where ``fn`` runs; by default the device of the first tensor in
            ``args``, else CUDA when available, else the CPU.

    Returns:
        ``(result, peak_bytes)``; the result lets you go on from the call, e.g. to
        measure the backward pass of the output just measured.
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {type(fn).__name__}")
    dev = _device_of(args, device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        start = torch.cuda.memory_allocated(dev)
        result = fn(*args)
        torch.cuda.synchronize(dev)
        return result, torch.cuda.max_memory_allocated(dev) - start
    if dev.type == "cpu":
        return _cpu_peak_bytes(fn, args)
    return fn(*args), None


def measure(
    fn: Callable[..., Any],
    *args: Any,
    repeat: int = 5,
    warmup: int = 1,
    memory: bool = True,
    device: str | torch.device | None = None,
    clock: str = "wall",
) -> Measurement:
    """Median time and peak memory of ``fn(*args)``.

    ``warmup`` untimed calls come first (they pay for one-time costs: lazy
    initialisation, allocator growth, kernel compilation). Then ``repeat`` timed
    calls; the median is robust to the odd slow call on a shared machine. On a GPU
    every timed call is bracketed by synchronisations. Python's garbage collector is
    paused during the timed calls, as ``timeit`` does. Memory is measured in one
    extra call by ``peak_memory``: ``torch.cuda.max_memory_allocated`` on CUDA, the
    profiler's allocation events on the CPU (see ``Measurement.peak_bytes``).

    Args:
        fn: the callable to time; its result is discarded.
        *args: passed to ``fn``.
        repeat: number of timed calls (>= 1).
        warmup: number of untimed calls first (>= 0).
        memory: also measure the peak memory.
        device: where ``fn`` runs; by default the device of the first tensor in
            ``args``, else CUDA when available, else the CPU.
        clock: ``"wall"`` (elapsed time, the default) or ``"cpu"`` (CPU time of the
            calling thread). CPU time leaves out the time other programs held the
            core, so it measures the work even on a busy machine. It sees only the
            calling thread, so it needs the CPU device and ``torch.set_num_threads(1)``.

    Returns:
        A ``Measurement`` (``seconds``, ``peak_bytes``, ``times``, ``clock``).
    """
    if not callable(fn):
        raise ValueError(f"fn must be callable, got {type(fn).__name__}")
    dev = _device_of(args, device)
    call = functools.partial(fn, *args)
    return measure_in_turns({"fn": call}, repeat=repeat, warmup=warmup, memory=memory, device=dev, clock=clock)["fn"]


def measure_in_turns(
    fns: Mapping[K, Callable[[], Any]],
    *,
    repeat: int = 5,
    warmup: int = 1,
    memory: bool = True,
    device: str | torch.device | None = None,
    clock: str = "wall",
    seed: int = 0,
) -> dict[K, Measurement]:
    """``measure`` for several calls at once, timed in turns: to compare them fairly.

    ``warmup`` rounds of one untimed call of each function, then ``repeat`` rounds of
    one timed call of each, in a new random order every round. A burst of load from
    other programs, or a cache left cold by the previous call, then slows one call of
    a function, which the median ignores, instead of every call of one function, which
    would bias the comparison. Timing and memory as in ``measure``.

    Args:
        fns: name -> a callable of no arguments (bind the inputs with a lambda or
            ``functools.partial``).
        repeat, warmup, memory, clock: as in ``measure``.
        device: where the calls run; by default CUDA when available, else the CPU
            (the calls take no tensors to read it from).
        seed: seed of the order within each round.

    Returns:
        name -> ``Measurement``, in the order of ``fns``.
    """
    if not fns:
        raise ValueError("fns is empty: nothing to measure")
    for name, fn in fns.items():
        if not callable(fn):
            raise ValueError(f"fns[{name!r}] must be callable, got {type(fn).__name__}")
    _check_sizes(repeat=repeat)
    _check_sizes(allow_zero=("warmup",), warmup=warmup)
    dev = _device_of((), device)
    now = _clock(clock, dev)
    names = list(fns)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[K, list[float]] = {name: [] for name in names}
    order = torch.Generator().manual_seed(seed)
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: a collection of unrelated objects is not fn's cost
    try:
        for _ in range(repeat):
            for i in torch.randperm(len(names), generator=order).tolist():
                _synchronize(dev)
                start = now()
                fns[names[i]]()
                _synchronize(dev)
                times[names[i]].append(now() - start)
    finally:
        if gc_was_enabled:
            gc.enable()
    peaks = {name: peak_memory(fn, device=dev)[1] if memory else None for name, fn in fns.items()}
    return {name: Measurement(statistics.median(times[name]), peaks[name], tuple(times[name]), clock) for name in names}


def _clock(clock: str, device: torch.device) -> Callable[[], float]:
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {tuple(CLOCKS)}, got {clock!r}")
    if clock == "cpu" and device.type != "cpu":
        raise ValueError(f"clock='cpu' measures work done by the CPU; on {device.type} use clock='wall'")
    if clock == "cpu" and torch.get_num_threads() != 1:
        # the other threads' work would go uncounted
        raise ValueError(
            f"clock='cpu' times the calling thread only, but torch uses {torch.get_num_threads()} threads: "
            "call torch.set_num_threads(1) first, or use clock='wall'"
        )
    return CLOCKS[clock]


def scaling_study(
    attention: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Any] = scaled_dot_product_attention,
    *,
    lengths: Sequence[int] = (128, 256, 512, 1024),
    fixed_len: int = 512,
    sweeps: Sequence[str] = ("len_q", "len_k", "both"),
    batch: int = 1,
    heads: int = 4,
    head_dim: int = 64,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    repeat: int = 5,
    warmup: int = 1,
    memory: bool = True,
    clock: str = "wall",
    seed: int = 0,
) -> list[dict]:
    """Measure ``attention(q, k, v)`` while one length grows and the other stays fixed.

    Sweeps:

    * ``"len_q"``: ``len_q`` in ``lengths``, ``len_k = fixed_len`` (more target tokens);
    * ``"len_k"``: ``len_k`` in ``lengths``, ``len_q = fixed_len`` (a longer source);
    * ``"both"``: ``len_q = len_k`` in ``lengths`` (self-attention-like growth).

    Args:
        attention: called as ``attention(q, k, v)`` with ``q`` of shape
            ``(batch, heads, len_q, head_dim)`` and ``k, v`` of shape
            ``(batch, heads, len_k, head_dim)``. Defaults to the course's naive
            ``scaled_dot_product_attention``.
        lengths: the sizes each sweep visits.
        fixed_len: the length that stays fixed in the one-sided sweeps.
        sweeps: which sweeps to run, in order.
        batch, heads, head_dim, dtype, device: the inputs (random normal, seeded).
        repeat, warmup, memory, clock: as in ``measure``, except that the timed calls
            go in turns over the shapes (``measure_in_turns``): ``repeat`` rounds of one
            call per shape.
        seed: seed of the inputs.

    Returns:
        A tidy table: one dict per measurement with keys ``sweep``, ``len_q``,
        ``len_k``, ``batch``, ``heads``, ``head_dim``, ``dtype``, ``seconds``
        (median, by ``clock``), ``peak_bytes`` (``None`` if not measured), ``flops``
        (``attention_flops``) and ``gflops_per_s``.
    """
    if not callable(attention):
        raise ValueError(f"attention must be callable, got {type(attention).__name__}")
    _check_sizes(fixed_len=fixed_len, batch=batch, heads=heads, head_dim=head_dim)
    if not lengths:
        raise ValueError("lengths is empty: nothing to sweep")
    for n in lengths:
        _check_sizes(length=n)
    unknown = [s for s in sweeps if s not in ("len_q", "len_k", "both")]
    if unknown or not sweeps:
        raise ValueError(f"sweeps must be a non-empty subset of ('len_q', 'len_k', 'both'), got {tuple(sweeps)}")
    _itemsize(dtype)
    dev = _device_of((), device)
    _clock(clock, dev)
    generator = torch.Generator().manual_seed(seed)

    def randn(length: int) -> torch.Tensor:
        x = torch.randn(batch, heads, length, head_dim, generator=generator)
        return x.to(device=dev, dtype=dtype)

    shapes = [
        (sweep, fixed_len if sweep == "len_k" else n, fixed_len if sweep == "len_q" else n)
        for sweep in sweeps
        for n in lengths
    ]
    inputs = [(randn(len_q), randn(len_k), randn(len_k)) for _, len_q, len_k in shapes]
    # In turns over the shapes: a burst of load from other programs then slows one call of a
    # shape, which the median ignores, instead of every call of one shape, which would bend the slope.
    calls = {i: functools.partial(attention, *args) for i, args in enumerate(inputs)}
    with torch.no_grad():
        found = measure_in_turns(calls, repeat=repeat, warmup=warmup, memory=memory, device=dev, clock=clock, seed=seed)
    rows = []
    for (sweep, len_q, len_k), m in zip(shapes, found.values()):
        flops = attention_flops(batch, heads, len_q, len_k, head_dim)
        rows.append(
            {
                "sweep": sweep,
                "len_q": len_q,
                "len_k": len_k,
                "batch": batch,
                "heads": heads,
                "head_dim": head_dim,
                "dtype": str(dtype).removeprefix("torch."),
                "seconds": m.seconds,
                "peak_bytes": m.peak_bytes,
                "flops": flops,
                "gflops_per_s": flops / m.seconds / 1e9,
            }
        )
    return rows


# --- fitting ------------------------------------------------------------------
def _t_two_sided_mass(t: float, dof: int) -> float:
    """``P(|T| < t)`` for Student's t with an integer ``dof``, in closed form.

    Abramowitz & Stegun 26.7.3-4: with ``θ = atan(t/√ν)``, a finite series in
    ``cos θ`` (of about ``ν/2`` terms) gives the exact probability.
    """
    theta = math.atan(t / math.sqrt(dof))
    c2 = math.cos(theta) ** 2
    if dof % 2:  # odd: 2/π (θ + sin θ cos θ (1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ + ...))
        term, total = 1.0, 1.0 if dof > 1 else 0.0
        for j in range(1, (dof - 1) // 2):
            term *= c2 * (2 * j) / (2 * j + 1)
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term = total = 1.0  # even: sin θ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + ...)
    for j in range(1, dof // 2):
        term *= c2 * (2 * j - 1) / (2 * j)
        total += term
    return math.sin(theta) * total


def t_quantile(p: float, dof: int) -> float:
    """The ``p``-quantile of Student's t distribution with ``dof`` degrees of freedom.

    No scipy: the distribution function has a closed form for integer ``dof``
    (``_t_two_sided_mass``), which is inverted by bisection to about 1e-12.
    E.g. ``t_quantile(0.975, 2) ≈ 4.303`` and ``t_quantile(0.975, 30) ≈ 2.042``.

    Args:
        p: probability in ``(0, 1)``.
        dof: degrees of freedom, an integer >= 1.
    """
    _check_sizes(dof=dof)
    if not 0 < p < 1:
        raise ValueError(f"p must lie strictly between 0 and 1, got {p!r}")
    if p < 0.5:
        return -t_quantile(1 - p, dof)
    target = 2 * p - 1  # P(|T| < t) for the upper quantile t
    low, high = 0.0, 1.0
    while _t_two_sided_mass(high, dof) < target:
        high *= 2
    for _ in range(200):
        mid = (low + high) / 2
        low, high = (mid, high) if _t_two_sided_mass(mid, dof) < target else (low, mid)
        if high - low < 1e-12 * max(1.0, high):
            break
    return (low + high) / 2


@dataclass(frozen=True)
class PowerLaw:
    """``y ≈ prefactor · x**exponent``, fitted by ``fit_power_law``.

    Attributes:
        exponent: the fitted slope on log-log axes.
        low, high: the confidence interval of the exponent.
        prefactor: ``y`` at ``x = 1``.
        confidence: the interval's level, e.g. 0.95.
    """

    exponent: float
    low: float
    high: float
    prefactor: float
    confidence: float

    def __call__(self, x: Any) -> Any:
        """The fitted curve at ``x`` (a number or a numpy array)."""
        return self.prefactor * np.asarray(x, dtype=float) ** self.exponent


def fit_power_law(xs: Sequence[float], ys: Sequence[float], *, confidence: float = 0.95) -> PowerLaw:
    """Fit ``y = a · x**b`` by least squares on ``log y = log a + b log x``.

    The confidence interval of ``b`` is the usual t-interval of a regression
    slope: ``b ± t · s / sqrt(Σ (log x - mean)²)`` where ``s²`` is the residual
    variance with ``n - 2`` degrees of freedom and ``t = t_quantile((1 + confidence) / 2, n - 2)``.
    It assumes independent errors of constant spread on the log scale (roughly
    true of timings: the noise is a percentage of the time).

    Args:
        xs, ys: positive numbers, at least three pairs, at least two distinct ``xs``.
        confidence: the interval's level, in ``(0, 1)``.

    Returns:
        A ``PowerLaw`` with the exponent, its interval and the prefactor. With exactly
        collinear points the interval has zero width.
    """
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"xs and ys must be 1-D of the same length, got shapes {x.shape} and {y.shape}")
    if len(x) < 3:
        raise ValueError(f"need at least 3 points to fit an exponent with an interval, got {len(x)}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(x > 0) and np.all(y > 0)):
        raise ValueError("xs and ys must be finite and positive (they are fitted on a log scale)")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence!r}")
    lx, ly = np.log(x), np.log(y)
    sxx = float(np.sum((lx - lx.mean()) ** 2))
    if sxx == 0:
        raise ValueError("all xs are equal: the exponent is undetermined")
    slope = float(np.sum((lx - lx.mean()) * (ly - ly.mean())) / sxx)
    intercept = float(ly.mean() - slope * lx.mean())
    residuals = ly - (intercept + slope * lx)
    dof = len(x) - 2
    stderr = math.sqrt(float(np.sum(residuals**2)) / dof / sxx)
    half = t_quantile((1 + confidence) / 2, dof) * stderr
    return PowerLaw(slope, slope - half, slope + half, math.exp(intercept), confidence)


# --- roofline -------------------------------------------------------------------
def arithmetic_intensity(flops: float, bytes_moved: float) -> float:
    """FLOPs per byte moved to or from memory (FLOP/byte).

    Below the machine's ridge point ``peak_flops / bandwidth`` a computation is
    memory-bound: the arithmetic units wait for data.
    """
    if not (flops >= 0 and bytes_moved > 0 and math.isfinite(flops) and math.isfinite(bytes_moved)):
        raise ValueError(f"need flops >= 0 and bytes_moved > 0, got flops={flops!r}, bytes_moved={bytes_moved!r}")
    return flops / bytes_moved


def attainable_flops(intensity: Any, peak_flops: float, bandwidth: float) -> Any:
    """The roofline: ``min(peak_flops, intensity · bandwidth)``, in FLOP/s.

    Args:
        intensity: FLOP/byte, a number or a numpy array.
        peak_flops: the machine's arithmetic ceiling, FLOP/s.
        bandwidth: the machine's memory bandwidth, bytes/s.
    """
    if not (peak_flops > 0 and bandwidth > 0):
        raise ValueError(f"peak_flops and bandwidth must be positive, got {peak_flops!r} and {bandwidth!r}")
    i = np.asarray(intensity, dtype=float)
    if np.any(i < 0):
        raise ValueError("intensity must be >= 0")
    out = np.minimum(peak_flops, i * bandwidth)
    return float(out) if out.ndim == 0 else out


def matmul_flops_per_second(
    n: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
    repeat: int = 5,
    clock: str = "wall",
) -> float:
    """Measured speed of an ``(n, n) @ (n, n)`` matmul, in FLOP/s: the arithmetic ceiling.

    A large square matmul is the most arithmetic-dense operation there is, so its
    speed is a practical peak for this machine, dtype and library (it stays below
    the data-sheet peak). ``n`` defaults to 1024 on the CPU (about 2 GFLOP, tens of
    milliseconds) and 4096 on a GPU. ``clock`` as in ``measure``.
    """
    dev = _device_of((), device)
    n = (4096 if dev.type == "cuda" else 1024) if n is None else n
    _check_sizes(n=n, repeat=repeat)
    _itemsize(dtype)
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    m = measure(torch.matmul, a, b, repeat=repeat, warmup=1, memory=False, device=dev, clock=clock)
    return 2 * n**3 / m.seconds


def copy_bandwidth(
    nbytes: int = 64 * 2**20, *, device: str | torch.device | None = None, repeat: int = 5, clock: str = "wall"
) -> float:
    """Measured memory bandwidth of a large copy, in bytes/s: the memory ceiling.

    ``dst.copy_(src)`` reads ``nbytes`` and writes ``nbytes``; both count. The default
    64 MiB is larger than the caches of most CPUs, so the copy goes to main memory.
    ``clock`` as in ``measure``.
    """
    _check_sizes(nbytes=nbytes, repeat=repeat)
    dev = _device_of((), device)
    src = torch.ones(nbytes // 4, device=dev)
    dst = torch.empty_like(src)
    m = measure(dst.copy_, src, repeat=repeat, warmup=1, memory=False, device=dev, clock=clock)
    return 2 * src.numel() * 4 / m.seconds
