"""A warm Jupyter kernel for the "runs top to bottom" test, forked like the workers.

Starting a kernel for each notebook costs seconds (ipykernel, numpy, torch, matplotlib,
``course_lib``). So the grader forks this process from the same warm server as the
workers, fenced the same way, before it starts ``pytest --nbval-lax``. The kernel spec's
launcher (``kernel_launcher.py``) then connects to the unix socket this process listens
on, hands over the connection file that jupyter_client wrote, and stays in between: it
forwards jupyter_client's signals (interrupt, terminate) to this process and exits when
it exits. If the launcher dies, this process exits too.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import traceback

from . import sandbox, worker

ACCEPT_SECONDS = 300.0


def _watch(conn: socket.socket) -> None:
    """Exit when the launcher (jupyter_client's view of this kernel) is gone."""
    try:
        while conn.recv(1024):
            pass
    except OSError:
        pass
    os._exit(0)


def main(settings: dict) -> None:
    """Entry point in the forked child: fence, wait for the launcher, run ipykernel."""
    code = 0
    try:
        worker._fence(settings, set())
        os.environ.pop("MPLBACKEND", None)  # ipykernel then makes the inline backend the default
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(settings["socket"])
        os.chmod(settings["socket"], 0o777)  # the launcher may run as the unprivileged user
        server.listen(1)
        server.settimeout(ACCEPT_SECONDS)
        conn, _ = server.accept()
        server.close()
        request = json.loads(conn.makefile("r").readline())
        conn.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
        threading.Thread(target=_watch, args=(conn,), daemon=True).start()
        os.chdir(request["cwd"])
        worker._drop_privileges(settings)
        from ipykernel.kernelapp import IPKernelApp

        sys.argv = ["ipykernel", "-f", request["connection_file"]]
        app = IPKernelApp.instance()
        app.initialize(["-f", request["connection_file"]])
        sandbox.install(settings["workdir"], settings["deny"])
        app.start()
    except BaseException:
        traceback.print_exc()
        code = 70
    finally:
        os._exit(code)
