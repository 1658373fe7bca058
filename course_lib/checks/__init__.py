"""Self-checks for the exercise notebooks: one call per task, e.g. ``check_softmax(softmax)``.

Each exercise NN has its module ``exNN.py`` here; this package finds them all and
re-exports the names in their ``__all__``, so adding ``exNN.py`` is all an exercise
author does. A check prints one line when the task is right and raises
``CheckFailed`` (an ``AssertionError``) that says what is wrong otherwise.
"""

import importlib
import pkgutil
import re

from ._common import Check, CheckFailed, NotImplementedYet, describe, difference

__all__ = ["Check", "CheckFailed", "NotImplementedYet", "describe", "difference"]

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    if re.fullmatch(r"ex\d\d", _info.name):
        _module = importlib.import_module(f"{__name__}.{_info.name}")
        for _name in _module.__all__:
            if _name in globals():
                raise ImportError(f"course_lib.checks.{_info.name} exports {_name!r}, which another exercise does too")
            globals()[_name] = getattr(_module, _name)
            __all__.append(_name)
