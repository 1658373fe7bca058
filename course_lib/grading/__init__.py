"""Exercises from one source, and an autograder that runs student code in isolation.

* ``build``: ``course-build-exercises`` writes ``exercises/`` from ``solutions/``;
* ``cli``: ``course-grade`` grades a class (``grade``, ``report``);
* ``grade``: one notebook's hidden tests and its "runs top to bottom" test (``nbrun``);
* ``box``, ``isolation``: each notebook's processes run in a bubblewrap sandbox, forked warm
  by the notebook's box; ``worker`` runs the student's cells and answers the tests' calls,
  fenced (``sandbox``: an audit hook as a second line); ``session`` and ``protocol``: the
  grader's side, which gets only plain data back;
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
