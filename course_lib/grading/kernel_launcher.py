"""A Jupyter kernel for student code: ipykernel with the grader's audit hook installed.

Run as a script (``python kernel_launcher.py -f CONNECTION_FILE``) from the kernel spec
the grader writes for its ``pytest --nbval-lax`` run.

Usually the grader has forked a warm kernel (``kernel.py``) and put its socket in
``COURSE_WARM_KERNEL``: this script then only hands it the connection file, relays
jupyter_client's signals to it and exits when it exits. Otherwise it starts ipykernel
itself: it imports nothing of ``course_lib`` (which would import torch before the
student's first cell), loads ``sandbox.py`` by path, dies with its parent (pytest), and
installs the hook after the kernel has started and before it runs any cell; the resource
limits are inherited from the pytest process, started through ``limits.py``.
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


def _connect(path: str, seconds: float = 60.0):
    """A connection to the warm kernel listening on ``path``, or None if there is none."""
    import socket
    import time

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            time.sleep(0.05)
    return None


def _proxy(sock, connection_file: str) -> None:
    """Hand the connection file to the warm kernel, relay signals to it, exit when it exits."""
    import json
    import select
    import signal

    request = {"connection_file": os.path.abspath(connection_file), "cwd": os.getcwd()}
    sock.sendall(json.dumps(request).encode() + b"\n")
    pid = json.loads(sock.makefile("r").readline())["pid"]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda number, frame: os.kill(pid, number))
    try:
        fd = os.pidfd_open(pid)  # readable once the kernel has exited
    except (AttributeError, OSError):
        fd = None
    while True:
        try:
            if fd is not None:
                if select.select([fd], [], [], 1.0)[0]:
                    return
            else:
                os.kill(pid, 0)
                select.select([], [], [], 0.2)
        except ProcessLookupError:
            return
        except InterruptedError:
            continue


def main() -> None:
    warm = os.environ.pop("COURSE_WARM_KERNEL", None)
    if warm:
        sock = _connect(warm)
        if sock is not None:
            _proxy(sock, sys.argv[sys.argv.index("-f") + 1])
            return
    # No warm kernel: start one here. Like `python -m ipykernel_launcher`: the working folder
    # first on sys.path, not this folder.
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
