"""Resource limits for processes that run student code (standard library only).

    python limits.py --address-space BYTES --cpu SECONDS --file-size BYTES -- COMMAND...

applies the limits and then replaces itself with COMMAND (``os.execv``), so limits are
set in the child before any of its code runs, with no ``preexec_fn`` in a threaded
grader. The worker calls ``apply`` directly. Soft and hard limits are set equal, so an
unprivileged process cannot raise them again.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys

try:
    import resource
except ImportError:  # Windows: no limits (the grader refuses to run there)
    resource = None


def current_address_space() -> int:
    """Bytes of address space this process maps now (0 where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            return int(re.search(r"^VmSize:\s+(\d+) kB", status.read(), re.M).group(1)) * 1024
    except (OSError, AttributeError):
        return 0


def _set(which: int, value: int) -> None:
    soft, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    try:
        resource.setrlimit(which, (value, value))
    except (ValueError, OSError):  # e.g. RLIMIT_AS on macOS: best effort
        pass


def apply(*, address_space: int | None, cpu: int | None, file_size: int | None, open_files: int = 256) -> None:
    """Cap memory (address space, bytes), CPU time (s), file size (bytes); no core dumps."""
    if resource is None:
        return
    if address_space:
        _set(resource.RLIMIT_AS, address_space)
    if cpu:
        _set(resource.RLIMIT_CPU, cpu)
    if file_size:
        _set(resource.RLIMIT_FSIZE, file_size)
        # Past the limit a write fails with EFBIG instead of killing the process.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _set(resource.RLIMIT_CORE, 0)
    _set(resource.RLIMIT_NOFILE, open_files)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address-space", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--file-size", type=int, default=0)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    apply(address_space=args.address_space, cpu=args.cpu, file_size=args.file_size)
    os.execv(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
