"""Errors that a hidden test meets when it calls a student's code.

Each one's message is written for the student: the grader's feedback shows it as is.
They all derive from ``StudentCodeError``, so a hidden test that expects the student's
code to fail on bad input can catch ``StudentRaised`` and look at ``exc.type_name``.
"""

from __future__ import annotations


class StudentCodeError(Exception):
    """Something about the student's code (not the grader) made the call fail."""


class NotebookUnreadable(StudentCodeError):
    """The submission could not be read as a notebook, or there was none."""


class NotDefined(StudentCodeError):
    """A name the test needs is not defined in the student's notebook."""


class NotImplementedYet(StudentCodeError):
    """The student's function still raises ``NotImplementedError``."""


class StudentRaised(StudentCodeError):
    """The student's code raised an exception; ``type_name`` and ``mro`` name its class."""

    def __init__(self, message: str, type_name: str = "", mro: tuple[str, ...] = (), text: str = "") -> None:
        super().__init__(message)
        self.type_name = type_name
        self.mro = mro  # qualified names, e.g. ("ValueError", "Exception", "BaseException", "object")
        self.text = text  # the exception's own message

    def is_a(self, exc_type: type[BaseException]) -> bool:
        """Whether the student's exception is an instance of ``exc_type`` (a builtin exception)."""
        return exc_type.__qualname__ in self.mro


class CallTimeout(StudentCodeError):
    """The call ran past the per-call time limit and the worker was stopped."""


class WorkerCrashed(StudentCodeError):
    """The process running the student's code died (os._exit, abort, segfault, killed...)."""


class BudgetExceeded(StudentCodeError):
    """The submission used up its time budget; no more calls are made."""


class NotPlainData(StudentCodeError):
    """A value could not travel between the worker and the grader."""
