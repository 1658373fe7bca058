"""``python -m course_lib.grading`` is ``course-grade``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
