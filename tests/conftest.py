import os

import pytest
import torch

import course_lib  # noqa: F401  (first: it switches Triton's interpreter on where CUDA is missing)

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tests use small tensors: one thread avoids thread start-up and contention on small machines."""
    torch.set_num_threads(1)
