"""Exercises from one source, and an autograder that runs student code in isolation.

* ``build``: ``course-build-exercises`` writes ``exercises/`` from ``solutions/``;
* ``cli``: ``course-grade`` grades a class (``grade``, ``report``);
* ``session``, ``worker``, ``protocol``, ``sandbox``, ``limits``: student code runs in a
  separate, fenced process, and only plain data comes back;
* ``plugin`` and ``remote``: what hidden tests use (the ``student`` fixture, markers).

Hidden tests import their helpers from here::

    from course_lib.grading import StudentRaised, call_with_args, keep, substitute
"""

import sys

# nbformat imports jsonschema, whose optional IRI format checker (rfc3987_syntax) takes seconds
# to import, in the grader and in each of its subprocesses; nbformat never uses it.
sys.modules.setdefault("rfc3987_syntax", None)

from .errors import (  # noqa: E402
    BudgetExceeded,
    CallTimeout,
    NotDefined,
    NotebookUnreadable,
    NotImplementedYet,
    NotPlainData,
    StudentCodeError,
    StudentRaised,
    WorkerCrashed,
)
from .remote import (  # noqa: E402
    Remote,
    Student,
    call_with_args,
    defined,
    keep,
    keep_attr,
    substitute,
    type_of,
)

__all__ = [
    "BudgetExceeded",
    "CallTimeout",
    "NotDefined",
    "NotImplementedYet",
    "NotPlainData",
    "NotebookUnreadable",
    "Remote",
    "Student",
    "StudentCodeError",
    "StudentRaised",
    "WorkerCrashed",
    "call_with_args",
    "defined",
    "keep",
    "keep_attr",
    "substitute",
    "type_of",
]
