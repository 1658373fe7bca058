"""The student's code as a hidden test sees it: the ``student`` fixture and remote objects.

    def test_rows_sum_to_one(student):
        weights = student.softmax(np.random.default_rng(0).normal(size=(3, 5)))
        assert np.allclose(weights.sum(axis=-1), 1), "rows must sum to 1: check the softmax axis"

``student.NAME`` looks ``NAME`` up in the notebook's namespace, in the worker process.
Plain data (numbers, strings, lists, dicts, numpy arrays, torch tensors...) comes back by
value; anything else (a function, a class, an ``nn.Module``...) as a ``Remote``, whose
calls, attributes and items are forwarded to the worker in turn::

    layer = student.CrossAttention(8, 2, d_context=6)   # a Remote: the instance lives in the worker
    layer.load_state_dict(reference.state_dict())       # the tensors travel by value
    out = layer(x, context)                             # a tensor, by value

Helpers for what plain attribute access cannot say: ``keep`` and ``keep_attr`` (get a
result or an attribute as a ``Remote`` even if it is plain data), ``call_with_args`` (see what a call did to its
arguments), ``substitute`` (run with the library's version of one of the student's
functions, so that a broken earlier task does not fail a later one), ``defined`` and
``type_of``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .errors import CallTimeout, NotDefined, StudentCodeError, WorkerCrashed
from .protocol import HandleRef

__all__ = ["Remote", "Student", "call_with_args", "defined", "keep", "keep_attr", "substitute", "type_of"]


def _dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__")


def _extend(label: str, suffix: str) -> str:
    """``"`layer`"`` and ``".forward"`` give ``"`layer.forward`"``: labels name calls in messages."""
    return f"{label[:-1]}{suffix}`"


class Remote:
    """An object that lives in the student's worker process."""

    __slots__ = ("_session", "_ref", "_generation", "_name", "_label")

    def __init__(self, session, ref: HandleRef, generation: int, name: str | None = None, label: str | None = None):
        object.__setattr__(self, "_session", session)
        object.__setattr__(self, "_ref", ref)
        object.__setattr__(self, "_generation", generation)
        object.__setattr__(self, "_name", name)  # set for notebook globals: re-found after a restart
        object.__setattr__(self, "_label", label or f"`{ref.type}`")

    def _live_ref(self) -> HandleRef:
        """This object's handle in the current worker (a global is looked up again after a restart)."""
        session = self._session
        session._ensure_started()
        if self._generation == session.generation:
            return self._ref
        if self._name is not None:
            fresh = _lookup(session, self._name)
            if isinstance(fresh, Remote):
                object.__setattr__(self, "_ref", fresh._ref)
                object.__setattr__(self, "_generation", fresh._generation)
                return self._ref
        raise WorkerCrashed(
            f"{self._label} was lost: the process running your code was restarted after an earlier failure"
        )

    def _ask(self, op: str, *args: Any, what: str | None = None) -> Any:
        what = what or self._label
        reply = self._session.request((op, self._live_ref(), *args), what)
        return self._session.value(reply, what)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._name in self._session.timed_out_names:
            raise StudentCodeError(f"{self._label} was not called: it ran past the time limit in an earlier test")
        try:
            result = self._ask("call", args, kwargs, False, False)
        except CallTimeout:
            if self._name:
                self._session.timed_out_names.add(self._name)
            raise
        if isinstance(result, Remote):
            object.__setattr__(result, "_label", _extend(self._label, "(...)"))
        return result

    def __getattr__(self, name: str) -> Any:
        if _dunder(name) or name in Remote.__slots__:
            raise AttributeError(name)
        label = _extend(self._label, f".{name}")
        result = self._ask("getattr", name, what=label)
        if isinstance(result, Remote):
            object.__setattr__(result, "_label", label)
        return result

    def __setattr__(self, name: str, value: Any) -> None:
        self._ask("setattr", name, value)

    def __getitem__(self, key: Any) -> Any:
        return self._ask("getitem", key)

    def __len__(self) -> int:
        return self._ask("len")

    def __iter__(self) -> Iterator:
        return iter(self._ask("list"))

    def __repr__(self) -> str:
        return f"<student's {self._ref.type}: {self._ref.text}>"


def _lookup(session, name: str) -> Any:
    reply = session.request(("global", name), f"`{name}`")
    value = session.value(reply, f"`{name}`")
    if isinstance(value, Remote):
        object.__setattr__(value, "_name", name)
        object.__setattr__(value, "_label", f"`{name}`")
    return value


class Student:
    """The student's notebook namespace (the ``student`` fixture of hidden tests)."""

    __slots__ = ("_session",)

    def __init__(self, session) -> None:
        object.__setattr__(self, "_session", session)

    def __getattr__(self, name: str) -> Any:
        if _dunder(name) or name == "_session":
            raise AttributeError(name)
        return _lookup(self._session, name)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("hidden tests cannot set names in the student's notebook; use substitute()")

    def __repr__(self) -> str:
        return "<the student's notebook>"


def keep(fn: Remote, *args: Any, **kwargs: Any) -> Remote:
    """Call ``fn`` and get its result as a ``Remote`` even when it is plain data.

    For example, to backpropagate in the worker: ``loss = keep(out.sum)``; ``loss.backward()``.
    """
    result = fn._ask("call", args, kwargs, True, False)
    object.__setattr__(result, "_label", _extend(fn._label, "(...)"))
    return result


def keep_attr(obj: Remote, name: str) -> Remote:
    """Attribute ``name`` of ``obj`` as a ``Remote`` even when it is plain data.

    ``obj.weight`` is a tensor copied to the grader; ``keep_attr(obj, "weight").grad``
    reads the gradient that the worker's tensor holds.
    """
    label = _extend(obj._label, f".{name}")
    result = obj._ask("getattr_keep", name, what=label)
    object.__setattr__(result, "_label", label)
    return result


def call_with_args(fn: Remote, *args: Any, **kwargs: Any) -> tuple[Any, tuple, dict]:
    """Call ``fn`` and return ``(result, args, kwargs)`` as they are after the call.

    Arguments travel by value, so this is how a test sees whether the student's function
    modified its inputs in place.
    """
    result, args_after, kwargs_after = fn._ask("call", args, kwargs, False, True)
    return result, args_after, kwargs_after


@contextmanager
def substitute(student: Student, name: str, target: str, **fixed: Any) -> Iterator[None]:
    """Within the block, the notebook's ``name`` is ``target`` (``"course_lib.softmax"``...).

    ``fixed`` keyword arguments are bound to ``target`` (``functools.partial``). Use it so
    that a test of task B, which calls the student's task A, grades B alone. ``target``
    must start with ``course_lib.``, ``numpy.``, ``torch.`` or ``math.``.
    """
    session = student._session
    session.value(session.request(("substitute", name, target, fixed), f"`{name}`"), f"`{name}`")
    generation = session.generation
    try:
        yield
    finally:
        if session.process is not None and session.generation == generation:
            session.value(session.request(("restore", name), f"`{name}`"), f"`{name}`")


def defined(student: Student, name: str) -> bool:
    """Whether the notebook defines ``name``."""
    try:
        _lookup(student._session, name)
    except NotDefined:
        return False
    return True


def type_of(value: Remote) -> HandleRef:
    """What a remote object is: ``.type`` (class name), ``.mro`` (qualified names), ``.text``."""
    return value._ref
