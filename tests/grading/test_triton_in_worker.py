"""Triton kernels written in a student's notebook run in the worker, in Triton's interpreter.

Exercise 06 has students write a ``@triton.jit`` kernel in a cell. The interpreter rewrites the
kernel from its source, which it finds through ``inspect`` (the worker registers each cell's
lines with ``linecache``). The worker must run it whatever the grader's environment says:
compiling for a GPU needs subprocesses and compiled modules that the sandbox refuses, so the
worker always sets ``TRITON_INTERPRET=1``. The test runs the grader in a fresh process whose
environment says ``TRITON_INTERPRET=0``, so that nothing of this process can hide a worker that
does not set it.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    '''
    import sys, tempfile
    import torch
    from course_lib.grading import StudentRaised
    from course_lib.grading.remote import Student
    from course_lib.grading.session import Limits, WorkerSession

    CELLS = [
        # As exercise 06 does: an error inside a kernel comes out as itself, not wrapped by Triton.
        "import os\\nos.environ['TRITON_FRONT_END_DEBUGGING'] = '1'\\nimport torch\\nimport triton\\n"
        "import triton.language as tl",
        """@triton.jit
    def add_kernel(X, Y, Out, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        ok = offs < n
        tl.store(Out + offs, tl.load(X + offs, mask=ok) + tl.load(Y + offs, mask=ok), mask=ok)
        if n < 0:
            raise ValueError("negative length")
    """,
        "def add(x, y, n=None):\\n    out = torch.empty_like(x)\\n"
        "    add_kernel[(triton.cdiv(x.numel(), 16),)](x, y, out, x.numel() if n is None else n, BLOCK=16)\\n"
        "    return out",
        "def interpret():\\n    return os.environ.get('TRITON_INTERPRET')",
    ]
    session = WorkerSession(CELLS, tempfile.mkdtemp(), Limits(timeout=60, budget=300, memory_mb=2048), deny=[])
    student = Student(session)
    try:
        x, y = torch.randn(37), torch.randn(37)
        print("env", student.interpret())
        print("sum", bool(torch.equal(student.add(x, y), x + y)))
        try:
            student.add(x, y, -1)
        except StudentRaised as err:
            print("raised", str(err).replace("\\n", " "))
    finally:
        session.close()
    '''
)


def test_a_kernel_from_a_notebook_cell_runs_in_the_interpreter(tmp_path):
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    lines = done.stdout.splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    assert "env 1" in lines, done.stdout
    assert "sum True" in lines, done.stdout
    raised = next(line for line in lines if line.startswith("raised"))
    # The interpreter runs the kernel from its source (inspect finds the cell's lines): the error names them.
    assert "raised ValueError: negative length" in raised and "code cell 2, line 7" in raised, raised
