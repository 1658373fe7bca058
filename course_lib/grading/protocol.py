"""What travels between the grader and the worker that runs a student's code.

Values go by value when they are plain data: ``None``, bools, numbers, strings, bytes,
lists, tuples, dicts and sets of them, numpy arrays and scalars of numbers, and torch
tensors. Anything else stays in the worker and travels as a handle (a number the worker
maps back to the object), so a hidden test can call its methods remotely.

The bytes are a pickle of a tree of builtins only: arrays and tensors are written as
``(dtype, shape, raw bytes)``. ``loads`` refuses every global but ``complex``, so bytes
crafted by student code can build nothing but that tree, and never run code in the
grader (plain ``pickle.loads`` would). ``Channel`` carries them in frames, with a deadline
on every read and write, so a process that stops answering cannot block the grader.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import select
import struct
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

MAX_MESSAGE = 256 * 2**20  # bytes; a reply larger than this is refused, not read
MAX_DEPTH = 64

_SCALARS = (type(None), bool, int, float, complex, str, bytes)
_NUMPY_DTYPE = re.compile(r"^[<>|=]?[biufc]\d{1,2}$")  # bool, ints, floats, complex; no objects, no records
_TORCH_DTYPES = {
    str(dt): dt
    for dt in (
        torch.float64,
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.int64,
        torch.int32,
        torch.int16,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.complex64,
        torch.complex128,
    )
}


class ProtocolError(ValueError):
    """Bytes that are not a well-formed message."""


@dataclass(frozen=True)
class HandleRef:
    """A non-plain object living in the worker, as it travels: its id and a description."""

    id: int
    type: str = ""  # qualified name of its class, e.g. "CrossAttention"
    mro: tuple[str, ...] = ()  # "module.qualname" of each class in its MRO
    text: str = ""  # a short repr, for messages
    callable: bool = False


def describe_object(obj: Any, handle_id: int) -> HandleRef:
    """The ``HandleRef`` for ``obj`` (called in the worker, where ``obj`` lives)."""
    cls = type(obj)
    try:
        text = repr(obj)
    except Exception:  # a student's __repr__ may fail
        text = f"<{cls.__qualname__} object>"
    mro = tuple(f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__)
    return HandleRef(handle_id, cls.__qualname__, mro, text[:200], callable(obj))


def _tensor_to_wire(t: torch.Tensor) -> tuple:
    t = t.detach()
    if t.layout != torch.strided or str(t.dtype) not in _TORCH_DTYPES:
        raise TypeError(f"cannot send a {t.layout} tensor of dtype {t.dtype}")
    t = t.cpu().contiguous()
    raw = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).numpy().tobytes()
    return ("T", str(t.dtype), tuple(t.shape), raw)


def to_wire(value: Any, register=None, depth: int = 0) -> Any:
    """Turn ``value`` into a tree of builtins.

    ``register(obj) -> HandleRef`` is called for objects that are not plain data; without
    it they raise ``TypeError``. ``HandleRef`` objects (handles sent back to the worker)
    travel as themselves.
    """
    if depth > MAX_DEPTH:
        raise TypeError("value nested too deeply")
    kind = type(value)
    if kind in _SCALARS:
        return ("v", value)
    if kind in (list, tuple, set, frozenset):
        tag = {list: "l", tuple: "t", set: "s", frozenset: "f"}[kind]
        return (tag, [to_wire(v, register, depth + 1) for v in value])
    if kind is dict or (isinstance(value, dict) and kind.__module__ == "collections"):  # dict, OrderedDict
        return ("d", [(to_wire(k, register, depth + 1), to_wire(v, register, depth + 1)) for k, v in value.items()])
    if kind is np.ndarray and _NUMPY_DTYPE.match(value.dtype.str):
        return ("a", value.dtype.str, value.shape, np.ascontiguousarray(value).tobytes())
    if isinstance(value, np.generic) and _NUMPY_DTYPE.match(value.dtype.str):
        return ("g", value.dtype.str, value.tobytes())
    if isinstance(value, torch.Tensor):
        try:
            return _tensor_to_wire(value)
        except (TypeError, RuntimeError):
            pass
    if kind is HandleRef:
        return ("h", value.id)
    if register is None:
        raise TypeError(f"cannot send a {kind.__qualname__} by value")
    ref = register(value)
    return ("H", ref.id, ref.type, list(ref.mro), ref.text, ref.callable)


def dumps(value: Any, register=None) -> bytes:
    return pickle.dumps(to_wire(value, register), protocol=5)


class _BuiltinsOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("builtins", "complex"):
            return complex
        raise pickle.UnpicklingError(f"refused to load {module}.{name}: only plain data may cross")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused a persistent id")


def _array(dtype: str, shape: Any, raw: Any) -> np.ndarray:
    if not (isinstance(dtype, str) and _NUMPY_DTYPE.match(dtype)):
        raise ProtocolError(f"refused array dtype {dtype!r}")
    if not (isinstance(shape, tuple) and all(type(n) is int and n >= 0 for n in shape)) or type(raw) is not bytes:
        raise ProtocolError("malformed array")
    dt = np.dtype(dtype)
    if int(np.prod(shape, dtype=np.int64)) * dt.itemsize != len(raw):
        raise ProtocolError("array size does not match its shape")
    return np.frombuffer(raw, dtype=dt).reshape(shape).copy()


def from_wire(node: Any, make_handle=None, depth: int = 0) -> Any:
    """Rebuild a value from ``to_wire``'s tree; ``make_handle(HandleRef)`` builds handles."""
    if depth > MAX_DEPTH + 1 or type(node) is not tuple or not node or type(node[0]) is not str:
        raise ProtocolError("malformed value")
    tag, rest = node[0], node[1:]
    if tag == "v" and len(rest) == 1 and type(rest[0]) in _SCALARS:
        return rest[0]
    if tag in ("l", "t", "s", "f") and len(rest) == 1 and type(rest[0]) is list:
        items = [from_wire(v, make_handle, depth + 1) for v in rest[0]]
        return {"l": list, "t": tuple, "s": set, "f": frozenset}[tag](items)
    if tag == "d" and len(rest) == 1 and type(rest[0]) is list:
        out = {}
        for pair in rest[0]:
            if type(pair) is not tuple or len(pair) != 2:
                raise ProtocolError("malformed dict")
            out[from_wire(pair[0], make_handle, depth + 1)] = from_wire(pair[1], make_handle, depth + 1)
        return out
    if tag == "a" and len(rest) == 3:
        return _array(*rest)
    if tag == "g" and len(rest) == 2:
        return _array(rest[0], (), rest[1])[()]
    if tag == "T" and len(rest) == 3:
        dtype_name, shape, raw = rest
        if dtype_name not in _TORCH_DTYPES:
            raise ProtocolError(f"refused tensor dtype {dtype_name!r}")
        dtype = _TORCH_DTYPES[dtype_name]
        np_dtype = "<i2" if dtype == torch.bfloat16 else str(torch.empty(0, dtype=dtype).numpy().dtype.str)
        t = torch.from_numpy(_array(np_dtype, shape, raw))
        return t.view(torch.bfloat16) if dtype == torch.bfloat16 else t
    if tag in ("h", "H") and make_handle is not None and rest and type(rest[0]) is int:
        if tag == "h":
            return make_handle(HandleRef(rest[0]))
        if len(rest) == 5 and type(rest[3]) is str and type(rest[2]) is list:
            return make_handle(HandleRef(rest[0], str(rest[1]), tuple(map(str, rest[2])), rest[3], bool(rest[4])))
    raise ProtocolError(f"malformed value (tag {tag!r})")


def loads(data: bytes, make_handle=None) -> Any:
    """Decode bytes from ``dumps`` without ever running code they might smuggle in."""
    try:
        node = _BuiltinsOnly(io.BytesIO(data)).load()
    except ProtocolError:
        raise
    except Exception as err:  # UnpicklingError, EOFError, ValueError, ... on garbage
        raise ProtocolError(f"undecodable message: {err}") from None
    return from_wire(node, make_handle)


class Timeout(Exception):
    """The other side did not read or answer before the deadline."""


class Closed(Exception):
    """The other side is gone (its end of the pipe closed), or it sent something that is not a message."""


class Channel:
    """Framed messages to and from a process the grader does not trust (``multiprocessing.Connection``'s format).

    ``read_fd`` and ``write_fd`` (the same descriptor for a socket) are made non-blocking
    and owned by the channel. Every ``send`` and ``receive`` ends by the deadline ``end``
    (``time.monotonic()``) or raises ``Timeout``; a message larger than ``MAX_MESSAGE`` is
    refused unread. ``make_handle`` and ``ref_of`` are ``loads``' and ``dumps``' hooks for handles.
    """

    def __init__(self, read_fd: int, write_fd: int, make_handle=None, ref_of=None) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self.make_handle, self.ref_of = make_handle, ref_of
        for fd in {read_fd, write_fd}:
            os.set_blocking(fd, False)

    def _read_exactly(self, n: int, end: float) -> bytes:
        chunks, got = [], 0
        while got < n:
            wait = end - time.monotonic()
            if wait <= 0 or not select.select([self.read_fd], [], [], wait)[0]:
                raise Timeout()
            try:
                chunk = os.read(self.read_fd, min(n - got, 1 << 20))
            except BlockingIOError:
                continue
            except OSError as err:
                raise Closed(f"its pipe broke ({err})") from None
            if not chunk:
                raise Closed("")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def receive(self, end: float) -> tuple:
        """The next message: a non-empty tuple whose first item is a string."""
        (size,) = struct.unpack("!i", self._read_exactly(4, end))
        if size == -1:
            (size,) = struct.unpack("!Q", self._read_exactly(8, end))
        if not 0 <= size <= MAX_MESSAGE:
            raise Closed(f"it sent a message of {size} bytes, more than the grader accepts")
        data = self._read_exactly(size, end)
        try:
            message = loads(data, self.make_handle)
        except ProtocolError as err:
            raise Closed(f"it sent something that is not a valid reply ({err})") from None
        if type(message) is not tuple or not message or type(message[0]) is not str:
            raise Closed("it sent something that is not a valid reply")
        return message

    def send(self, message: tuple, end: float) -> None:
        data = dumps(message, self.ref_of)
        header = struct.pack("!i", len(data)) if len(data) < 2**31 - 1 else struct.pack("!iQ", -1, len(data))
        view = memoryview(header + data)
        while view:
            left = end - time.monotonic()
            if left <= 0 or not select.select([], [self.write_fd], [], left)[1]:
                raise Timeout()
            try:
                view = view[os.write(self.write_fd, view[: 1 << 16]) :]
            except BlockingIOError:
                continue
            except OSError:
                raise Closed("") from None

    def close(self) -> None:
        for fd in {self.read_fd, self.write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass
