"""A Jupyter kernel for student code: ipykernel with the grader's audit hook installed.

Run as a script (``python kernel_launcher.py -f CONNECTION_FILE``) from the kernel spec
the grader writes for its ``pytest --nbval-lax`` run. It imports nothing of
``course_lib`` (which would import torch before the student's first cell), loads
``sandbox.py`` by path, dies with its parent (pytest), and installs the hook after the
kernel has started and before it runs any cell. The resource limits are inherited from
the pytest process, started through ``limits.py``.
"""

import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


def main() -> None:
    # Like `python -m ipykernel_launcher`: the working folder first on sys.path, not this folder.
    sys.path[:] = [""] + [p for p in sys.path if os.path.abspath(p or ".") != HERE]
    spec = importlib.util.spec_from_file_location("_course_grading_sandbox", os.path.join(HERE, "sandbox.py"))
    sandbox = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sandbox)
    _die_with_parent()
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize(sys.argv[1:])
    sandbox.install_from_env()
    app.start()


if __name__ == "__main__":
    main()
