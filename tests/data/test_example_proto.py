"""The hand-written tf.train.Example decoder against the protobuf runtime's encoder."""

import numpy as np
import pytest

from fedjax_compress.data.example_proto import ProtoError, float_values, parse_example
from tests.data import fixtures


def _pixels(seed=0):
  return np.random.default_rng(seed).random(784, dtype=np.float32)


def test_packed_example_from_protobuf_runtime():
  px = _pixels()
  features = parse_example(fixtures.example_bytes(px, 61))
  assert features["label"] == ("int64", (61,))
  kind, raw = features["pixels"]
  assert kind == "float"
  np.testing.assert_array_equal(np.frombuffer(raw, "<f4"), px)


def test_unpacked_fields_reordered_entries_and_unknown_field():
  px = _pixels(1)
  blob = fixtures.example_bytes_unpacked(px, 7, extra=b"\x10\x05")  # field 2 varint: unknown.
  features = parse_example(blob)
  assert features["label"] == ("int64", (7,))
  np.testing.assert_array_equal(np.frombuffer(features["pixels"][1], "<f4"), px)
  # The protobuf runtime agrees on what these bytes mean.
  ex = fixtures.example_class()()
  ex.ParseFromString(blob)
  np.testing.assert_array_equal(ex.features.feature["pixels"].float_list.value, px)


def test_other_kinds_and_negative_int64():
  ex = fixtures.example_class()()
  ex.features.feature["name"].bytes_list.value.extend([b"ab", b""])
  ex.features.feature["ints"].int64_list.value.extend([-1, 0, 2**40, -(2**63)])
  ex.features.feature["few"].float_list.value.extend([0.5, -2.0])
  ex.features.feature["empty"].float_list.SetInParent()
  ex.features.feature["unset"]  # No kind set: omitted.
  features = parse_example(ex.SerializeToString())
  assert features["name"] == ("bytes", (b"ab", b""))
  assert features["ints"] == ("int64", (-1, 0, 2**40, -(2**63)))
  assert float_values(features["few"][1]) == (0.5, -2.0)
  assert features["empty"] == ("float", b"")
  assert "unset" not in features
  assert parse_example(b"") == {}


@pytest.mark.parametrize("cut", [1, 2, 10, 100, 3000])
def test_truncated_message_raises_proto_error(cut):
  blob = fixtures.example_bytes(_pixels(), 3)
  with pytest.raises(ProtoError):
    parse_example(blob[:-cut])


def test_unsupported_wire_type_raises_proto_error():
  with pytest.raises(ProtoError, match="wire type"):
    parse_example(b"\x0b")  # Field 1, wire type 3 (group start).
