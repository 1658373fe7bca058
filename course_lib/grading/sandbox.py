"""An audit hook that fences student code in its working folder (standard library only).

``install(workdir, deny, import_roots)`` adds a ``sys.addaudithook`` hook, which no
Python code can remove, before the first line of student code runs. From then on:

* reading anything under a ``deny`` path (the hidden tests, the grader's output folder,
  the other submissions, the course's solutions...) or another process's ``/proc`` entry
  raises ``PermissionError``;
* writing, creating, renaming, deleting or changing permissions is allowed only inside
  ``workdir`` (and on ``/dev/null``);
* starting processes, sending signals, opening network connections, loading C code
  through ``ctypes``, changing resource limits, and importing compiled modules from
  outside ``import_roots`` are refused.

Paths are resolved (``..``, symlinks, ``/proc/self/root``, ``/proc/self/fd/N``) with C
functions captured when the hook is made, and every name the hook uses is bound as a
default argument, so student code cannot patch ``os``, ``os.path`` or ``builtins`` to
fool it, and cannot change the hook's code or defaults once it is installed.

This stops what a student can do from Python, and nothing more: native code gets around
it. It is the second line. The first is the operating system's: each notebook's processes
run under bubblewrap (``isolation.py``), as a user of their own, and every process that runs
student code under resource limits.
"""

from __future__ import annotations

import os
import stat
import sys

# Events refused outright: new processes, signals, network, native code, limits.
_REFUSED = frozenset(
    {
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "subprocess.Popen",
        "pty.spawn",
        "os.kill",
        "os.killpg",
        "signal.pthread_kill",
        "socket.connect",
        "socket.bind",
        "socket.sendto",
        "socket.sendmsg",
        "ctypes.dlsym",
        "ctypes.dlsym/handle",
        "ctypes.call_function",
        "ctypes.cdata",
        "ctypes.string_at",
        "ctypes.wstring_at",
        "resource.setrlimit",
        "resource.prlimit",
        "os.symlink",
        "os.link",
        "os.chroot",
        "os.mkfifo",
        "os.mknod",
        "sys.remote_exec",
        "webbrowser.open",
    }
)
# Events whose first argument is a path that gets modified.
_WRITES = frozenset(
    {
        "os.remove",
        "os.rmdir",
        "os.mkdir",
        "os.chmod",
        "os.chown",
        "os.chflags",
        "os.lchflags",
        "os.lchmod",
        "os.lchown",
        "os.truncate",
        "os.utime",
        "os.setxattr",
        "os.removexattr",
        "shutil.chown",
    }
)
# Events whose first argument is a path that gets read or listed.
_READS = frozenset({"os.listdir", "os.scandir", "os.chdir", "glob.glob", "glob.glob/2", "os.getxattr", "os.listxattr"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


# The hook and its helpers use no global name and no closure: everything they need is a
# default argument, set once by ``install`` before the hook goes live. Student code can
# reach these functions (gc), but cannot change their defaults or code afterwards.


def _resolve(
    path,
    _lstat=os.lstat,
    _readlink=os.readlink,
    _getcwd=os.getcwd,
    _getpid=os.getpid,
    _fsdecode=os.fsdecode,
    _islnk=stat.S_ISLNK,
    _str=str,
    _bytes=bytes,
    _type=type,
    _PermissionError=PermissionError,
    _OSError=OSError,
    _ValueError=ValueError,
):
    """An absolute path with '.', '..' and symlinks resolved (a missing tail is kept)."""
    if _type(path) is _bytes:
        path = _fsdecode(path)
    elif _type(path) is not _str:
        raise _PermissionError("the grader only allows plain string paths here")
    if not path.startswith("/"):
        path = _getcwd() + "/" + path
    parts = []
    todo = path.split("/")
    todo.reverse()
    hops = 0
    while todo:
        part = todo.pop()
        if part == "" or part == ".":
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        candidate = "/" + "/".join(parts + [part])
        if candidate == "/proc/self" or candidate == "/proc/thread-self":
            parts = ["proc", _str(_getpid())]
            continue
        try:
            is_link = _islnk(_lstat(candidate).st_mode)
        except (_OSError, _ValueError):
            is_link = False
        if not is_link:
            parts.append(part)
            continue
        hops += 1
        if hops > 40:
            raise _PermissionError("too many symbolic links")
        target = _readlink(candidate)
        if target.startswith("/"):
            parts = []
        more = target.split("/")
        more.reverse()
        todo += more
    return "/" + "/".join(parts)


def _under(path, root):
    return path == root or path.startswith(root + "/")


def _check_read(
    path,
    workdir="",
    deny=(),
    _resolve=_resolve,
    _under=_under,
    _getpid=os.getpid,
    _str=str,
    _int=int,
    _type=type,
    _PermissionError=PermissionError,
):
    if _type(path) is _int:  # an already open file descriptor
        return
    real = _resolve(path)
    for root in deny:
        if _under(real, root) and not _under(real, workdir):
            raise _PermissionError(f"the grader does not let student code read {path!r}")
    if real.startswith("/proc/"):
        pid = real.split("/")[2]
        if pid.isdigit() and pid != _str(_getpid()):
            raise _PermissionError(f"the grader does not let student code read {path!r}")


def _check_write(path, workdir="", _resolve=_resolve, _under=_under, _int=int, _type=type, _error=PermissionError):
    if _type(path) is _int:
        return
    real = _resolve(path)
    if real != "/dev/null" and not _under(real, workdir):
        raise _error(f"student code may only write inside its working folder, not {path!r}")


def _hook(
    event,
    args,
    workdir="",
    import_roots=(),
    _check_read=_check_read,
    _check_write=_check_write,
    _resolve=_resolve,
    _under=_under,
    _lstat=os.lstat,
    _isdir=stat.S_ISDIR,
    _len=len,
    _str=str,
    _int=int,
    _type=type,
    _PermissionError=PermissionError,
    _OSError=OSError,
    _ValueError=ValueError,
    _refused=_REFUSED,
    _writes=_WRITES,
    _reads=_READS,
    _write_flags=_WRITE_FLAGS,
    _protected=(),
):
    if event in _refused:
        raise _PermissionError(f"the grader does not let student code use {event}")
    if event == "open":
        path, mode, flags = args
        if path is None:
            return
        writing = _type(mode) is _str and ("w" in mode or "a" in mode or "x" in mode or "+" in mode)
        if _type(flags) is _int and flags & _write_flags:
            writing = True
        if writing:
            _check_write(path)
            return
        _check_read(path)
        if mode is None and _type(path) is not _int:
            # os.open() of a folder outside the working folder would let os.open(..., dir_fd=fd)
            # reach files by relative paths that this hook cannot resolve.
            real = _resolve(path)
            try:
                is_dir = _isdir(_lstat(real).st_mode)
            except (_OSError, _ValueError):
                is_dir = False
            if is_dir and not _under(real, workdir):
                raise _PermissionError(f"the grader does not let student code open the folder {path!r}")
    elif event in _writes:
        _check_write(args[0])
    elif event in _reads:
        if _len(args) and args[0] is not None:
            _check_read(args[0])
    elif event == "os.rename":
        _check_write(args[0])
        _check_write(args[1])
    elif event == "shutil.copyfile" or event == "shutil.copytree":
        _check_read(args[0])
        _check_write(args[1])
    elif event == "shutil.rmtree" or event == "shutil.move":
        _check_write(args[0])
    elif event == "ctypes.dlopen":
        # Loading a library (torch does at import) is harmless while calling into one is refused.
        if args[0] is not None:
            real = _resolve(args[0]) if "/" in args[0] else ""
            for root in import_roots:
                if real and _under(real, root) and not _under(real, workdir):
                    return
            if "/" in args[0]:
                raise _PermissionError(f"the grader does not let student code load the library {args[0]!r}")
    elif event == "import":
        # (module, filename, ...): a filename is given when a compiled module is loaded from it.
        filename = args[1] if _len(args) > 1 else None
        if filename is not None:
            real = _resolve(filename)
            for root in import_roots:
                if _under(real, root) and not _under(real, workdir):
                    return
            raise _PermissionError(f"the grader does not let student code load the compiled module {filename!r}")
    elif event == "object.__setattr__":
        if args[1] in ("__code__", "__defaults__", "__kwdefaults__") and args[0] in _protected:
            raise _PermissionError(f"the grader does not let student code change the sandbox ({args[1]})")


def _with_defaults(fn, **values):
    """Set some of ``fn``'s default arguments by name (before the hook is installed)."""
    code = fn.__code__
    names = code.co_varnames[: code.co_argcount]
    defaults = list(fn.__defaults__)
    first = len(names) - len(defaults)
    for name, value in values.items():
        defaults[names.index(name) - first] = value
    fn.__defaults__ = tuple(defaults)


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def install(workdir: str, deny: list[str] | tuple[str, ...], import_roots: list[str] | tuple[str, ...] = ()) -> None:
    """Install the hook (once per process; there is no way to remove it).

    ``import_roots`` default to the folders on ``sys.path`` and Python's own prefixes.
    """
    roots = list(import_roots) or [p for p in sys.path if p] + [sys.prefix, sys.base_prefix, sys.exec_prefix]
    workdir = _real(workdir)
    deny = tuple(p for p in (_real(p) for p in deny if p) if p != "/")
    _with_defaults(_check_read, workdir=workdir, deny=deny)
    _with_defaults(_check_write, workdir=workdir)
    _with_defaults(
        _hook,
        workdir=workdir,
        import_roots=tuple(_real(p) for p in roots),
        _check_read=_check_read,
        _check_write=_check_write,
        _protected=(_hook, _check_read, _check_write, _resolve, _under),
    )
    sys.addaudithook(_hook)
