"""What every self-check shares: calling the student's code, describing arrays, reporting.

A self-check runs a few public cases on the student's function. On success it prints
one line. On the first problem it raises ``CheckFailed``, an ``AssertionError`` whose
message says what was expected, what came back and the usual mistake behind it.

Why raise rather than print: "Run All" then stops at the first task that is wrong,
so the student fixes tasks in order; ``pytest --nbval-lax`` (the grader's "runs top to
bottom" test) sees the failure; and Jupyter shows only the message, because IPython
renders an exception through its ``_render_traceback_`` method when it has one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import numpy as np

__all__ = ["Check", "CheckFailed", "NotImplementedYet", "describe", "difference"]


class CheckFailed(AssertionError):
    """A self-check found a mistake. Jupyter shows its message without a traceback."""

    def _render_traceback_(self) -> list[str]:
        return str(self).splitlines()


class NotImplementedYet(NotImplementedError):
    """The student's function still raises ``NotImplementedError`` (the exercise stub)."""

    def _render_traceback_(self) -> list[str]:
        return [f"NotImplementedError: {self}"]


def _fmt(a: np.ndarray, digits: int = 3) -> str:
    """A short, rounded rendering of a small array, on one line."""
    text = np.array2string(np.round(a, digits), separator=", ", threshold=12, edgeitems=3, max_line_width=100000)
    return " ".join(text.split())


def describe(value: Any, *, sums: bool = True) -> str:
    """One line about a value: its type and, for arrays, shape, dtype, NaN/inf and row sums."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        kind, dtype = "tensor", str(value.dtype).removeprefix("torch.")
        value = value.detach().float().cpu().numpy()
    elif isinstance(value, np.ndarray):
        kind, dtype = "array", str(value.dtype)
    elif value is None:
        return "None (did you forget `return`?)"
    else:
        text = repr(value)
        return f"{type(value).__name__} {text if len(text) < 80 else text[:77] + '...'}"
    parts = [f"{kind} of shape {tuple(value.shape)}, dtype {dtype}"]
    if np.issubdtype(value.dtype, np.number) and value.size:
        nan, inf = int(np.isnan(value).sum()), int(np.isinf(value).sum())
        if nan or inf:
            parts.append(f"{nan} NaN and {inf} inf out of {value.size} entries")
        if sums and value.ndim >= 1 and value.shape[-1] > 0 and not nan:
            parts.append(f"row sums {_fmt(value.sum(axis=-1))}")
    return ", ".join(parts)


def difference(got: Any, expected: Any, *, atol: float = 1e-6, rtol: float = 1e-5) -> str:
    """Where ``got`` differs from ``expected`` (same shape), in one line, without printing the arrays.

    ``"shape (2, 5), largest |difference| 0.31 at index (1, 4) (got 0.12, expected 0.43);
    first difference at index (0, 2)"``. Small arrays (up to 12 entries) are shown whole too.
    """
    got, expected = _numbers(got), _numbers(expected)
    if got.shape != expected.shape:
        return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if got.size == 0:
        return f"shape {tuple(got.shape)}, no entries"
    bad = ~np.isclose(got, expected, atol=atol, rtol=rtol, equal_nan=True)
    if not bad.any():
        return f"shape {tuple(got.shape)}, every entry within tolerance"
    gap = np.where(np.isnan(got) != np.isnan(expected), np.inf, np.abs(np.nan_to_num(got - expected, nan=0.0)))
    worst = np.unravel_index(int(np.argmax(np.where(bad, gap, -1.0))), got.shape)
    first = np.unravel_index(int(np.argmax(bad)), got.shape)
    at = tuple(int(i) for i in worst)
    text = (
        f"shape {tuple(got.shape)}, {int(bad.sum())} of {got.size} entries differ; largest |difference| "
        f"{gap[worst]:.3g} at index {at} (got {got[worst]:.4g}, expected {expected[worst]:.4g})"
    )
    if first != worst:
        text += f"; first difference at index {tuple(int(i) for i in first)}"
    if got.size <= 12:
        text += f"; got {_fmt(got)}, expected {_fmt(expected)}"
    return text


def _numbers(value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach().double().cpu().numpy()
    return np.asarray(value, dtype=float)


class Check:
    """The checks of one task: ``c = Check("softmax")``, a few ``c.…`` calls, then ``c.done()``."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.count = 0

    def fail(self, problem: str, *, expected: Any = None, got: Any = None, hint: str | None = None) -> NoReturn:
        lines = [f"❌ {self.task}: {problem}"]
        if expected is not None:
            lines.append(f"   expected: {expected}")
        if got is not None:
            lines.append(f"   got:      {got}")
        if hint:
            lines.append(f"   hint: {hint}")
        raise CheckFailed("\n".join(lines))

    def call(
        self,
        fn: Callable,
        *args: Any,
        hint: str | Callable[[Exception], str | None] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Call the student's function; a stub gives a friendly ``NotImplementedError``.

        Another exception propagates with the student's own traceback (its type and message
        shown as raised), plus a note that names the inputs. ``hint`` adds the usual cause:
        a string for every exception, or a function of the exception that returns a hint
        only when the error matches that mistake (``None`` otherwise).
        """
        if not callable(fn):
            self.fail(f"expected a function, got {describe(fn)}", hint="pass the function itself, without calling it")
        try:
            return fn(*args, **kwargs)
        except NotImplementedError:
            raise NotImplementedYet(
                f"{self.task} is not implemented yet: write your code where it says `# YOUR CODE HERE` "
                "and delete the line `raise NotImplementedError`."
            ) from None
        except Exception as err:
            shown = "; ".join(describe(a, sums=False) for a in args)
            _add_note(err, f"(raised by {self.task} while the self-check called it on: {shown})")
            shown_hint = hint(err) if callable(hint) else hint
            if shown_hint:
                _add_note(err, f"hint: {shown_hint}")
            raise

    def array(self, value: Any, what: str) -> np.ndarray:
        """``value`` as a numpy array of numbers, or a failure that says what came back."""
        if hasattr(value, "detach") and hasattr(value, "numpy"):
            value = value.detach().cpu().numpy()
        if isinstance(value, (list, tuple)) and value and all(np.isscalar(v) or isinstance(v, list) for v in value):
            value = np.asarray(value)
        if not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.number):
            self.fail(f"{what} should be a numpy array of numbers", got=describe(value))
        return value

    def shape(self, value: np.ndarray, expected: tuple[int, ...], what: str, hint: str | None = None) -> None:
        self.count += 1
        if tuple(value.shape) != tuple(expected):
            self.fail(f"{what}: wrong shape", expected=f"shape {tuple(expected)}", got=describe(value), hint=hint)

    def finite(self, value: np.ndarray, what: str, hint: str | None = None) -> None:
        self.count += 1
        if not np.all(np.isfinite(value)):
            self.fail(f"{what}: contains NaN or inf", got=describe(value), hint=hint)

    def close(
        self,
        got: np.ndarray,
        expected: np.ndarray,
        what: str,
        hint: str | None = None,
        *,
        atol: float = 1e-6,
        rtol: float = 1e-5,
    ) -> None:
        self.count += 1
        got, expected = np.asarray(got, dtype=float), np.asarray(expected, dtype=float)
        if got.shape != expected.shape:
            self.fail(f"{what}: wrong shape", expected=f"shape {expected.shape}", got=describe(got), hint=hint)
        if not np.allclose(got, expected, atol=atol, rtol=rtol, equal_nan=False):
            self.fail(f"{what}: wrong values ({difference(got, expected, atol=atol, rtol=rtol)})", hint=hint)

    def true(self, condition: bool, problem: str, *, got: Any = None, hint: str | None = None) -> None:
        self.count += 1
        if not condition:
            self.fail(problem, got=got, hint=hint)

    def done(self) -> None:
        print(f"✅ {self.task}: all {self.count} checks passed.")


def _add_note(err: BaseException, note: str) -> None:
    """``err.add_note(note)``; Python 3.10 has no ``add_note``, and shows no notes."""
    if hasattr(err, "add_note"):
        err.add_note(note)
    else:
        err.__notes__ = [*getattr(err, "__notes__", []), note]
