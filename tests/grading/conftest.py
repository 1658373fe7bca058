import os
import shutil
import tempfile
from pathlib import Path

import pytest

# The fixtures folder holds toy hidden tests and submissions: data for the grader, not tests to collect.
collect_ignore = ["fixtures"]
NOBODY = (65534, 65534)


@pytest.fixture
def nobodys_workdir():
    """A work folder owned by nobody, in a folder nobody can reach (pytest's own folders are root's alone)."""
    if os.geteuid() != 0:
        pytest.skip("only root can switch to another user")
    reachable = Path(tempfile.mkdtemp())
    reachable.chmod(0o711)
    work = reachable / "work"
    work.mkdir()
    os.chown(work, *NOBODY)
    yield work
    shutil.rmtree(reachable, ignore_errors=True)
