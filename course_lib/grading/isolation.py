"""Operating-system isolation for every process that runs student code: bubblewrap.

``wrap(command, ...)`` prefixes a command with ``bwrap`` so that it runs in namespaces of
its own: its own pids (nothing it starts outlives it: ``--die-with-parent``, and a pid
namespace dies with its first process), its own network (a loopback of its own, nothing
else: the grader's 127.0.0.1 is unreachable), no view of the host's files but the system,
Python and the course package read-only, and a size-capped ``/tmp``, ``/dev/shm`` and work
folder in memory. The hidden tests, the output folder and the other submissions are never
mounted, so no system call can reach them. The student's code runs as a user of its own,
without capabilities, with a cap on its processes:

* as root: bubblewrap keeps the host's users, and ``setpriv`` switches to a uid of this
  sandbox's own (so one sandbox's process count never touches another's);
* as an ordinary user: a user namespace maps uid 65534 to the grader's user.

``problem()`` says why bubblewrap cannot be used here (``None`` when it can): not
installed, or user namespaces refused (inside an unprivileged container). Then
``course-grade`` refuses to grade unless told ``--insecure-no-sandbox``.
"""

from __future__ import annotations

import functools
import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

INSTALL = (
    "install bubblewrap (Debian/Ubuntu: `sudo apt-get install bubblewrap`; Fedora: `sudo dnf install bubblewrap`), "
    "or, only where each submission already runs in a container of its own (Gradescope, PrairieLearn), "
    "pass --insecure-no-sandbox"
)
SYSTEM = ["/usr", "/etc/ld.so.cache", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/localtime",
          "/etc/hosts", "/etc/fonts"]  # fmt: skip
SYMLINKS = ["/bin", "/lib", "/lib64", "/sbin"]  # merged /usr: links into it
NOBODY = 65534
_uids = itertools.count()


def _sandbox_uid() -> int:
    """A uid no other sandbox on this machine uses now (as root): above every ordinary range."""
    return 2**30 + ((os.getpid() & 0x3FFFFF) << 8) + next(_uids) % 256


def package_paths() -> list[str]:
    """What student code needs to import, read-only: Python, the environment, the course package."""
    import course_lib

    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix),
             os.path.dirname(os.path.realpath(course_lib.__file__))}  # fmt: skip
    return sorted(paths)


def _ancestors(path: str) -> list[str]:
    parts = Path(path).parts
    return [str(Path(*parts[:i])) for i in range(2, len(parts))]


def wrap(
    command: list[str],
    *,
    readonly: list[str] = (),
    scratch: list[str] = (),
    files: list[tuple[str, str]] = (),
    disk_mb: int = 256,
    processes: int = 96,
) -> list[str]:
    """``command`` run under bubblewrap.

    ``readonly``: host paths mounted read-only at the same place (besides the system and
    ``package_paths()``); ``scratch``: folders that are an empty, writable, ``disk_mb``-capped
    tmpfs inside; ``files``: ``(host file, path inside)`` pairs mounted read-only, e.g. into a
    scratch folder. ``processes`` caps the processes (threads included) of the sandbox's user.
    """
    size = str(disk_mb * 2**20)
    args = ["bwrap", "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "sandbox"]  # fmt: skip
    root = os.geteuid() == 0
    if root:
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]  # dropped again by setpriv below
    else:
        args += ["--unshare-user", "--disable-userns", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    args += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", size, "--tmpfs", "/tmp",
             "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm"]  # fmt: skip
    made = {"/tmp", "/dev"}

    def mount(kind: str, source: str, target: str) -> None:
        for parent in _ancestors(target):
            if parent not in made and not any(parent.startswith(m + "/") for m in ("/usr", "/proc")):
                inside_scratch = any(parent.startswith(s.rstrip("/") + "/") for s in scratch)
                args.extend(["--perms", "1777" if inside_scratch else "0755", "--dir", parent])
                made.add(parent)
        args.extend([kind, source, target])

    for link in SYMLINKS:
        if os.path.islink(link):
            args += ["--symlink", os.readlink(link), link]
    for path in SYSTEM:
        if os.path.exists(path):
            mount("--ro-bind", path, path)
    for path in [*package_paths(), *readonly]:
        mount("--ro-bind", path, path)
    for path in scratch:
        for parent in _ancestors(path):
            if parent not in made:
                args.extend(["--perms", "0755", "--dir", parent])
                made.add(parent)
        args += ["--perms", "1777", "--size", size, "--tmpfs", path]
        made.add(path)
    for source, target in files:
        mount("--ro-bind", source, target)
    args.append("--")
    if root:
        uid = str(_sandbox_uid())
        args += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--inh-caps=-all",
                 "--bounding-set=-all", "--no-new-privs"]  # fmt: skip
    # After the switch of user: the cap counts the processes of the sandbox's own user.
    return args + ["prlimit", f"--nproc={processes}:{processes}", "--", *command]


def font_cache(folder: str) -> list[tuple[str, str]]:
    """matplotlib's font list, to mount into ``folder`` (its ``MPLCONFIGDIR``): rebuilding it takes seconds."""
    try:
        import matplotlib

        return [(str(p), os.path.join(folder, p.name)) for p in Path(matplotlib.get_cachedir()).glob("fontlist-*.json")]
    except Exception:  # no cache: matplotlib builds one
        return []


def environment() -> dict[str, str]:
    """What a sandboxed process is started with: nothing of the grader's own environment but these."""
    kept = ("PATH", "LANG", "LC_ALL", "LC_CTYPE")
    return {k: os.environ[k] for k in kept if k in os.environ}


@functools.lru_cache(maxsize=1)
def problem() -> str | None:
    """Why student code cannot be isolated here (``None``: bubblewrap works)."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux, and this is {sys.platform}; {INSTALL}"
    if shutil.which("bwrap") is None:
        return f"bubblewrap (bwrap) is not installed; {INSTALL}"
    for tool in ("setpriv", "prlimit") if os.geteuid() == 0 else ("prlimit",):
        if shutil.which(tool) is None:
            return f"{tool} (util-linux) is missing; install util-linux, or {INSTALL}"
    try:
        done = subprocess.run(wrap([sys.executable, "-c", "import os; print(os.getuid())"]), capture_output=True,
                              text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"bubblewrap could not start ({err}); {INSTALL}"
    if done.returncode != 0 or not done.stdout.strip().isdigit() or int(done.stdout) == 0:
        why = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return (f"bubblewrap is installed but cannot make a sandbox here ({why}): user namespaces are probably "
                f"disabled, as in most unprivileged containers; {INSTALL}")  # fmt: skip
    return None
