"""The kernel spec's launcher for the "runs top to bottom" test (standard library only).

jupyter_client, in the ``pytest --nbval-lax`` process, runs ``python kernel_launcher.py -f
CONNECTION_FILE`` as if it were the kernel. The kernel itself is forked by the notebook's
box (``box.py``), warm and fenced like a worker: this script connects to the box's socket
(``COURSE_KERNEL_SOCKET``), hands over the connection file, relays jupyter_client's
signals (interrupt, terminate) to the kernel, and exits when the kernel exits.
"""

import json
import os
import select
import signal
import socket
import sys
import time

CONNECT_SECONDS = 60.0


def _connect(path: str) -> socket.socket:
    """A connection to the box listening on ``path`` (it may still be importing torch)."""
    end = time.monotonic() + CONNECT_SECONDS
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError:
            sock.close()
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def main() -> None:
    connection_file = os.path.abspath(sys.argv[sys.argv.index("-f") + 1])
    sock = _connect(os.environ["COURSE_KERNEL_SOCKET"])
    sock.sendall(json.dumps({"connection_file": connection_file}).encode() + b"\n")
    pid = json.loads(sock.makefile("r").readline())["pid"]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, lambda number, frame: os.kill(pid, number))
    fd = os.pidfd_open(pid)  # readable once the kernel has exited
    while True:
        try:
            if select.select([fd], [], [], 1.0)[0]:
                return
        except InterruptedError:
            continue


if __name__ == "__main__":
    main()
