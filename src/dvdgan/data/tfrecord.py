"""TFRecord files and ``tf.train.Example`` protobufs without TensorFlow.

TFRecord framing, per record: little-endian u64 payload length, masked crc32c of those 8
bytes (u32), the payload, masked crc32c of the payload (u32), where
``mask(c) = ((c >> 15) | (c << 17)) + 0xA282EAD8 (mod 2**32)``.

The payload is a ``tf.train.Example``::

    Example   { Features features = 1; }
    Features  { map<string, Feature> feature = 1; }     // entries: {key = 1; value = 2}
    Feature   { oneof { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed]; }    // packed or not: both accepted
    Int64List { repeated int64 value = 1 [packed]; }

parsed here by a small protobuf wire-format reader. crc32c (Castagnoli) is computed with a
256-entry table; payloads of a few hundred KB (a BAIR sequence is ~740 KB) use the same table
vectorised with numpy over 1 KiB chunks whose CRCs are then combined, ~10x faster than a
Python byte loop.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np

# ----------------------------------------------------------------------------------------------
# crc32c
# ----------------------------------------------------------------------------------------------

_POLY = 0x82F63B78  # Castagnoli, reflected


def _make_table() -> list[int]:
    table = []
    for b in range(256):
        c = b
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()
_TABLE_NP = np.array(_TABLE, dtype=np.uint32)
_CHUNK = 1024
_SHIFT: np.ndarray | None = None  # [4, 256]: effect of _CHUNK zero bytes on each state byte


def _crc32c_bytes(data: bytes | memoryview, crc: int = 0) -> int:
    """Plain table-driven crc32c, for short inputs."""
    c = crc ^ 0xFFFFFFFF
    t = _TABLE
    for b in bytes(data):
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _shift_tables() -> np.ndarray:
    global _SHIFT
    if _SHIFT is None:
        s = (np.arange(256, dtype=np.uint32)[None, :] << (8 * np.arange(4, dtype=np.uint32)[:, None])).ravel()
        for _ in range(_CHUNK):
            s = _TABLE_NP[s & 0xFF] ^ (s >> 8)
        _SHIFT = s.reshape(4, 256)
    return _SHIFT


def crc32c(data: bytes | memoryview | np.ndarray) -> int:
    """CRC-32C (Castagnoli) of ``data``, as TFRecord uses it."""
    buf = (
        np.frombuffer(data, dtype=np.uint8)
        if not isinstance(data, np.ndarray)
        else data.view(np.uint8).ravel()
    )
    n = buf.size
    if n < 64 * _CHUNK:  # below ~64 KiB the plain loop is faster
        return _crc32c_bytes(buf.tobytes())
    # Raw CRC (zero initial state, no final xor) is linear over GF(2). The standard initial
    # state 0xFFFFFFFF equals complementing the first 4 bytes; leading zero bytes leave a zero
    # state unchanged, so the message is front-padded to whole chunks, each chunk's raw CRC
    # computed in parallel, then the chunks combined: crc(A + B) = shift_len(B)(crc(A)) ^ crc(B).
    m = np.zeros((-n) % _CHUNK + n, dtype=np.uint8)
    m[m.size - n :] = buf
    m[m.size - n : m.size - n + 4] ^= 0xFF
    blocks = m.reshape(-1, _CHUNK)
    state = np.zeros(blocks.shape[0], dtype=np.uint32)
    for j in range(_CHUNK):
        state = _TABLE_NP[(state ^ blocks[:, j]) & 0xFF] ^ (state >> 8)
    sh = _shift_tables()
    s0, s1, s2, s3 = (sh[i].tolist() for i in range(4))
    c = 0
    for v in state.tolist():
        c = s0[c & 0xFF] ^ s1[(c >> 8) & 0xFF] ^ s2[(c >> 16) & 0xFF] ^ s3[c >> 24] ^ v
    return c ^ 0xFFFFFFFF


def masked_crc32c(data: bytes | memoryview | np.ndarray) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ----------------------------------------------------------------------------------------------
# TFRecord framing
# ----------------------------------------------------------------------------------------------


class RecordError(Exception):
    """A TFRecord frame or Example that does not parse."""


def scan_records(path: str | os.PathLike) -> list[tuple[int, int]]:
    """(payload offset, payload length) of every complete record of a TFRecord file.

    Reads only the 12-byte headers (length checked against its crc). Stops at the first bad or
    truncated header: the records before it stay usable.
    """
    out: list[tuple[int, int]] = []
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        pos = 0
        while pos + 12 <= size:
            f.seek(pos)
            head = f.read(12)
            if len(head) < 12:
                break
            (length,) = struct.unpack("<Q", head[:8])
            (crc,) = struct.unpack("<I", head[8:])
            if masked_crc32c(head[:8]) != crc:
                break
            if pos + 12 + length + 4 > size:
                break
            out.append((pos + 12, length))
            pos += 12 + length + 4
    return out


def read_record(path: str | os.PathLike, offset: int, length: int, verify: bool = True) -> bytes:
    """The payload at ``offset`` (from :func:`scan_records`), its crc checked if ``verify``."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read(length + 4)
    if len(data) < length + 4:
        raise RecordError("truncated record")
    payload = data[:length]
    if verify:
        (crc,) = struct.unpack("<I", data[length:])
        if masked_crc32c(payload) != crc:
            raise RecordError("payload crc32c mismatch")
    return payload


def iter_records(path: str | os.PathLike, verify: bool = True) -> Iterator[bytes]:
    for off, length in scan_records(path):
        yield read_record(path, off, length, verify)


def frame_record(payload: bytes) -> bytes:
    """One TFRecord frame around ``payload``."""
    head = struct.pack("<Q", len(payload))
    return head + struct.pack("<I", masked_crc32c(head)) + payload + struct.pack("<I", masked_crc32c(payload))


def write_tfrecord(path: str | os.PathLike, payloads: list[bytes]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        for p in payloads:
            f.write(frame_record(p))
    return path


# ----------------------------------------------------------------------------------------------
# Protobuf wire format and tf.train.Example
# ----------------------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise RecordError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise RecordError("varint too long")


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int | tuple[int, int]]]:
    """(field number, wire type, value) of a message in buf[start:end]; value of a
    length-delimited field is its (start, end)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        num, wt = key >> 3, key & 7
        if wt == 0:
            v, pos = _varint(buf, pos)
            yield num, wt, v
        elif wt == 2:
            n, pos = _varint(buf, pos)
            if pos + n > end:
                raise RecordError("length-delimited field runs past its message")
            yield num, wt, (pos, pos + n)
            pos += n
        elif wt == 5:
            if pos + 4 > end:
                raise RecordError("truncated fixed32")
            yield num, wt, int.from_bytes(buf[pos : pos + 4], "little")
            pos += 4
        elif wt == 1:
            if pos + 8 > end:
                raise RecordError("truncated fixed64")
            yield num, wt, int.from_bytes(buf[pos : pos + 8], "little")
            pos += 8
        else:
            raise RecordError(f"unsupported wire type {wt}")
    if pos != end:
        raise RecordError("message overruns its length")


Feature = list[bytes] | np.ndarray


def _parse_feature(buf: bytes, start: int, end: int) -> Feature:
    for num, wt, v in _fields(buf, start, end):
        if wt != 2:
            continue
        s, e = v  # type: ignore[misc]
        if num == 1:  # BytesList
            return [buf[a:b] for n2, w2, (a, b) in _fields(buf, s, e) if n2 == 1 and w2 == 2]  # type: ignore[misc]
        if num == 2:  # FloatList (packed, or one fixed32 per value)
            vals: list[float] = []
            for n2, w2, v2 in _fields(buf, s, e):
                if n2 != 1:
                    continue
                if w2 == 2:
                    a, b = v2  # type: ignore[misc]
                    vals.extend(np.frombuffer(buf[a:b], dtype="<f4").tolist())
                elif w2 == 5:
                    vals.append(struct.unpack("<f", int(v2).to_bytes(4, "little"))[0])  # type: ignore[arg-type]
            return np.asarray(vals, dtype=np.float32)
        if num == 3:  # Int64List (packed, or one varint per value)
            ints: list[int] = []
            for n2, w2, v2 in _fields(buf, s, e):
                if n2 != 1:
                    continue
                if w2 == 2:
                    a, b = v2  # type: ignore[misc]
                    p = a
                    while p < b:
                        x, p = _varint(buf, p)
                        ints.append(x - (1 << 64) if x >= 1 << 63 else x)
                elif w2 == 0:
                    x = int(v2)  # type: ignore[arg-type]
                    ints.append(x - (1 << 64) if x >= 1 << 63 else x)
            return np.asarray(ints, dtype=np.int64)
    return []


def parse_example(payload: bytes, keys: set[str] | None = None) -> dict[str, Feature]:
    """A ``tf.train.Example`` -> {key: list of bytes | float32 array | int64 array}.

    With ``keys``, only those features are decoded (the others are skipped unparsed).
    """
    buf = bytes(payload)
    out: dict[str, Feature] = {}
    for num, wt, v in _fields(buf, 0, len(buf)):
        if num != 1 or wt != 2:
            continue
        fs, fe = v  # type: ignore[misc]
        for n2, w2, v2 in _fields(buf, fs, fe):  # Features
            if n2 != 1 or w2 != 2:
                continue
            es, ee = v2  # type: ignore[misc]
            key: str | None = None
            val: tuple[int, int] | None = None
            for n3, w3, v3 in _fields(buf, es, ee):  # map entry
                if n3 == 1 and w3 == 2:
                    a, b = v3  # type: ignore[misc]
                    key = buf[a:b].decode("utf-8", "replace")
                elif n3 == 2 and w3 == 2:
                    val = v3  # type: ignore[assignment]
            if key is None or (keys is not None and key not in keys):
                continue
            out[key] = _parse_feature(buf, *val) if val is not None else []
    return out


def _enc_varint(x: int) -> bytes:
    x &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = x & 0x7F
        x >>= 7
        if x:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _enc_len(num: int, data: bytes) -> bytes:
    return _enc_varint((num << 3) | 2) + _enc_varint(len(data)) + data


def encode_example(features: dict[str, list[bytes] | bytes | list[float] | np.ndarray]) -> bytes:
    """Encode a ``tf.train.Example``: bytes / list of bytes -> BytesList, float arrays or lists
    of floats -> FloatList (packed), integer arrays -> Int64List (packed)."""
    entries = b""
    for key, value in features.items():
        if isinstance(value, (bytes, bytearray)):
            value = [bytes(value)]
        if isinstance(value, list) and all(isinstance(x, (bytes, bytearray)) for x in value):
            inner = _enc_len(1, b"".join(_enc_len(1, bytes(x)) for x in value))
        else:
            arr = np.asarray(value)
            if arr.dtype.kind == "f":
                inner = _enc_len(2, _enc_len(1, arr.astype("<f4").tobytes()))
            else:
                inner = _enc_len(3, _enc_len(1, b"".join(_enc_varint(int(x)) for x in arr.ravel())))
        entries += _enc_len(1, _enc_len(1, key.encode()) + _enc_len(2, inner))
    return _enc_len(1, entries)
