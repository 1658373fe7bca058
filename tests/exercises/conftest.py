"""Run directly (``pytest tests/exercises``), the hidden tests grade the solution notebooks.

The grader loads the same plugin itself; importing its fixtures and hook here lets the
course's own test suite prove that every solution passes its hidden tests.
"""

from course_lib.grading.plugin import _standalone_sessions, pytest_configure, student  # noqa: F401
