"""The Triton kernels compile for a Hopper GPU (sm_90) on any machine, GPU or not.

The interpreter runs the kernels' Python; it does not run Triton's compiler. This test does:
it lowers each kernel, with the variants a GPU uses (tensor descriptors, packed varlen,
atomic dQ), all the way to a cubin for compute capability 9.0, with the ptxas that ships
with Triton. It runs in a subprocess, since ``TRITON_INTERPRET`` is fixed when Triton is
first imported. It checks that the code compiles and that the TMA variant emits bulk tensor
copies, not that it is fast (benchmarks/gpu_check.sh measures that).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = [pytest.mark.triton, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import os
    os.environ["TRITON_INTERPRET"] = "0"
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from course_lib.efficient import triton_flash as tf

    POINTERS = {"Q": "*fp16", "K": "*fp16", "V": "*fp16", "Out": "*fp16", "DO": "*fp16", "DK": "*fp16",
                "DV": "*fp16", "DQ": "*fp16", "O_PART": "*fp32", "LSE_PART": "*fp32", "LSE": "*fp32",
                "DELTA": "*fp32", "DQ_ACC": "*fp32", "KV_LENS": "*i32", "CU_Q": "*i32", "CU_K": "*i32"}

    def compile_(fn, **constexprs):
        sig = {n: "constexpr" if n in constexprs else POINTERS.get(n, "fp32" if n == "sm_scale" else "i32")
               for n in fn.arg_names}
        src = ASTSource(fn=fn, signature=sig, constexprs=constexprs)
        return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 3})

    common = dict(HEAD_DIM=64, CAUSAL=True, DOT="tf32")
    fwd = compile_(tf._attn_fwd, **common, VARLEN=False, TMA=True, BLOCK_M=128, BLOCK_N=64)
    assert "cp.async.bulk.tensor" in fwd.asm["ptx"], "the TMA variant does not use bulk tensor copies"
    compile_(tf._attn_fwd, **common, VARLEN=True, TMA=False, BLOCK_M=64, BLOCK_N=64)
    compile_(tf._attn_bwd_dkdv, **common, VARLEN=False, TMA=False, ATOMIC_DQ=True, BLOCK_M=64, BLOCK_N=64)
    compile_(tf._attn_bwd_dq, **common, VARLEN=True, TMA=False, BLOCK_M=64, BLOCK_N=64)
    compile_(tf._attn_combine, HEAD_DIM=64, BLOCK_M=16)
    print("compiled")
    """
)


def test_kernels_compile_for_hopper():
    nvidia = Path(__import__("triton").__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    if not nvidia.exists():
        pytest.skip("this Triton has no bundled ptxas")
    env = {**os.environ, "TRITON_INTERPRET": "0", "TRITON_DEFAULT_FP_FUSION": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("compiled")
