"""What crosses between worker and grader: plain data round-trips, nothing else decodes."""

import pickle

import numpy as np
import pytest
import torch

from course_lib.grading import protocol


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        3,
        2.5,
        1 + 2j,
        "text",
        b"bytes",
        [1, (2, 3), {"a": [4.0]}],
        {1, 2},
        np.arange(6, dtype=np.float32).reshape(2, 3),
        np.array([True, False]),
        np.float64(1.5),
        np.arange(12).reshape(3, 4)[:, ::2],  # not contiguous
    ],
)
def test_plain_data_round_trips(value):
    back = protocol.loads(protocol.dumps(value))
    if isinstance(value, np.ndarray):
        assert back.dtype == value.dtype and np.array_equal(back, value)
    else:
        assert back == value and type(back) is type(value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool])
def test_tensors_round_trip_by_value(dtype):
    t = (torch.arange(6) - 2).reshape(2, 3).to(dtype)
    back = protocol.loads(protocol.dumps(t.T))
    assert back.dtype == dtype and torch.equal(back, t.T)


def test_other_objects_become_handles():
    seen = []

    def register(obj):
        seen.append(obj)
        return protocol.describe_object(obj, len(seen))

    layer = torch.nn.Linear(2, 3)
    data = protocol.dumps({"layer": layer, "n": 1}, register)
    back = protocol.loads(data, make_handle=lambda ref: ref)
    assert back["n"] == 1 and seen == [layer]
    assert back["layer"].type == "Linear" and "torch.nn.modules.module.Module" in back["layer"].mro


class Evil:
    def __reduce__(self):
        return (print, ("this ran in the grader",))


def test_a_pickle_with_code_is_refused():
    with pytest.raises(protocol.ProtocolError, match="refused to load builtins.print"):
        protocol.loads(pickle.dumps(Evil()))
    with pytest.raises(protocol.ProtocolError):
        protocol.loads(pickle.dumps(np.arange(3)))  # numpy's own pickle is refused too: only our tree decodes


@pytest.mark.parametrize(
    "node",
    [
        ("a", "|O8", (1,), b"12345678"),  # object arrays would unpickle arbitrary things
        ("a", "<f8", (2,), b"1234"),  # size does not match the shape
        ("T", "torch.complex32", (1,), b"1234"),
        ("x", 1),
        ["v", 1],
    ],
)
def test_malformed_trees_are_refused(node):
    with pytest.raises(protocol.ProtocolError):
        protocol.loads(pickle.dumps(node, protocol=5))


def test_garbage_is_a_protocol_error():
    with pytest.raises(protocol.ProtocolError):
        protocol.loads(b"\x00\x01garbage")
