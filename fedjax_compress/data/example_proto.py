"""A small decoder for serialized `tf.train.Example` protos, without TensorFlow.

Importing TensorFlow takes seconds, and the protobuf runtime would turn a
784-float list into 784 Python floats. This decoder reads the wire format
directly and returns a float list as its raw little-endian float32 bytes, so a
caller can join many examples and call `np.frombuffer` once.

Messages handled (field numbers from tensorflow/core/example/*.proto):
  Example  { Features features = 1; }
  Features { map<string, Feature> feature = 1; }   # entry: key = 1, value = 2
  Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2;
                          Int64List int64_list = 3; } }
  BytesList { repeated bytes value = 1; }
  FloatList { repeated float value = 1 [packed = true]; }
  Int64List { repeated int64 value = 1 [packed = true]; }
Packed and unpacked repeated fields are both accepted, as the spec requires.
Unknown fields are skipped.

Chosen over the protobuf (upb) runtime, which with the conversion to numpy parsed
EMNIST examples more slowly (`python -m benchmarks.tff_emnist_read`;
benchmarks/RESULTS.md, "TFF EMNIST reader").
"""

from __future__ import annotations

import struct
from typing import Callable, cast

# Wire types.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class ProtoError(ValueError):
  """The bytes are not a well-formed tf.train.Example."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
  """Reads a base-128 varint at `pos`; returns (value, next position)."""
  b = buf[pos]
  if b < 0x80:  # Fast path: tags and short lengths are one byte.
    return b, pos + 1
  result, shift = b & 0x7F, 7
  while True:
    pos += 1
    b = buf[pos]
    result |= (b & 0x7F) << shift
    if b < 0x80:
      return result, pos + 1
    shift += 7
    if shift > 63:
      raise ProtoError(f"varint longer than 10 bytes at offset {pos}")


def _skip(buf: bytes, pos: int, wire_type: int) -> int:
  """Returns the position after a field value of `wire_type` starting at `pos`."""
  if wire_type == _VARINT:
    return _varint(buf, pos)[1]
  if wire_type == _I64:
    return pos + 8
  if wire_type == _I32:
    return pos + 4
  if wire_type == _LEN:
    n, pos = _varint(buf, pos)
    return pos + n
  raise ProtoError(f"unsupported wire type {wire_type} at offset {pos}")


def _fields(buf: bytes, pos: int, end: int) -> list[tuple[int, int, int, int]]:
  """Lists (field number, wire type, value start, value end) in buf[pos:end].

  Returns a list rather than yielding: generator frames cost ~40% of the time.
  """
  out = []
  while pos < end:
    tag = buf[pos]
    if tag < 0x80:  # Inlined one-byte varint: nearly every tag and length.
      pos += 1
    else:
      tag, pos = _varint(buf, pos)
    wire_type = tag & 7
    if wire_type == _LEN:
      n = buf[pos]
      if n < 0x80:
        start = pos + 1
      else:
        n, start = _varint(buf, pos)
      pos = start + n
    else:
      start = pos
      pos = _skip(buf, pos, wire_type)
    out.append((tag >> 3, wire_type, start, pos))
  if pos > end:
    raise ProtoError("a field runs past the end of its message (truncated?)")
  return out


def _signed64(v: int) -> int:
  """int64 values are sent as two's complement in a 64-bit varint."""
  return v - (1 << 64) if v >= 1 << 63 else v


def _float_list(buf: bytes, start: int, end: int) -> bytes:
  if start < end and buf[start] == 0x0A:  # Fast path: one packed run (what TF writes).
    n, s = _varint(buf, start + 1)
    if s + n == end and n % 4 == 0:
      return buf[s:end]
  parts = []
  for field, wt, s, e in _fields(buf, start, end):
    if field != 1:
      continue
    if wt == _LEN:
      if (e - s) % 4:
        raise ProtoError("packed float list length is not a multiple of 4")
      parts.append(buf[s:e])
    elif wt == _I32:
      parts.append(buf[s:e])
    else:
      raise ProtoError(f"float list value has wire type {wt}")
  return parts[0] if len(parts) == 1 else b"".join(parts)


def _int64_list(buf: bytes, start: int, end: int) -> tuple:
  values = []
  for field, wt, s, e in _fields(buf, start, end):
    if field != 1:
      continue
    if wt == _LEN:
      while s < e:
        v, s = _varint(buf, s)
        values.append(_signed64(v))
      if s != e:
        raise ProtoError("packed int64 list overruns its length")
    elif wt == _VARINT:
      values.append(_signed64(_varint(buf, s)[0]))
    else:
      raise ProtoError(f"int64 list value has wire type {wt}")
  return tuple(values)


def _bytes_list(buf: bytes, start: int, end: int) -> tuple:
  return tuple(
    buf[s:e] for field, wt, s, e in _fields(buf, start, end) if field == 1 and wt == _LEN
  )


_KINDS: dict[int, tuple[str, Callable[[bytes, int, int], bytes | tuple]]] = {
  1: ("bytes", _bytes_list),
  2: ("float", _float_list),
  3: ("int64", _int64_list),
}


def _feature(buf: bytes, start: int, end: int) -> tuple[str, bytes | tuple] | None:
  """Decodes a Feature; the last oneof member present wins, as in protobuf."""
  result = None
  for field, wt, s, e in _fields(buf, start, end):
    if field in _KINDS and wt == _LEN:
      kind, decode = _KINDS[field]
      result = (kind, decode(buf, s, e))
  return result


def _map_entry(buf: bytes, start: int, end: int) -> tuple[str, tuple | None]:
  key, value = b"", None
  for field, wt, s, e in _fields(buf, start, end):
    if field == 1 and wt == _LEN:
      key = buf[s:e]
    elif field == 2 and wt == _LEN:
      value = _feature(buf, s, e)
  try:
    return key.decode("utf-8"), value
  except UnicodeDecodeError as e:
    raise ProtoError(f"feature name is not UTF-8: {key[:40]!r}") from e


def parse_example(buf: bytes) -> dict[str, tuple[str, bytes | tuple]]:
  """Decodes a serialized tf.train.Example into {name: (kind, value)}.

  kind is 'float' (value: raw little-endian float32 bytes), 'int64' (tuple of
  int) or 'bytes' (tuple of bytes); a feature with no kind set is omitted.
  Raises ProtoError on malformed input.
  """
  buf = bytes(buf)  # sqlite may hand us a memoryview; indexing bytes is fastest.
  features = {}
  try:
    for field, wt, s, e in _fields(buf, 0, len(buf)):
      if field != 1 or wt != _LEN:
        continue
      for f2, wt2, s2, e2 in _fields(buf, s, e):
        if f2 == 1 and wt2 == _LEN:
          key, value = _map_entry(buf, s2, e2)
          if value is not None:
            features[key] = value
  except IndexError as e:
    raise ProtoError("message is truncated") from e
  return features


def float_values(raw: bytes) -> tuple[float, ...]:
  """Unpacks a 'float' feature value into Python floats (for small lists)."""
  return struct.unpack(f"<{len(raw) // 4}f", raw)


def one_bytes_value(blob: bytes, feature: str, where: str) -> bytes:
  """The single bytes value of `feature` in a serialized tf.train.Example.

  Raises `ProtoError` naming `where` when the blob does not parse or the feature is
  absent, not bytes, or not exactly one value (TFF's text datasets store one string).
  """
  try:
    features = parse_example(blob)
  except ProtoError as e:
    raise ProtoError(f"{where}: not a valid tf.train.Example ({e}).") from e
  kind, value = features.get(feature, (None, ()))
  if kind != "bytes" or len(value) != 1:
    raise ProtoError(
      f"{where}: feature {feature!r} should be one bytes value, got "
      f"{kind or 'none'} with {len(value)} values."
    )
  return cast(tuple[bytes, ...], value)[0]  # a 'bytes' feature's value: a tuple of bytes
