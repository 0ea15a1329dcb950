#!/usr/bin/env python3
"""safetensors_check.py - an independent safetensors reader and writer for kiln's tests
(tests/nn/test_safetensors.c), written with json, struct and numpy only.

  safetensors_check.py sums FILE    checks the layout (header length a multiple of 8, the
                                    tensors tiling the data section) and prints one line per
                                    tensor, in header order:  NAME_HEX DTYPE [SHAPE] SUM
  safetensors_check.py write FILE   writes a file of known tensors, formatted unlike kiln's
                                    writer (spaces, \\u escapes, metadata, data out of order)

Exits 77 when numpy is missing: the test then prints a skip note."""
import json
import struct
import sys

try:
    import numpy as np
except ImportError:
    print("numpy is not available")
    sys.exit(77)

# BF16 has no numpy dtype: it is read as its bits and widened to f32.
NUMPY_DTYPES = {
    "BOOL": "?", "U8": "u1", "I8": "i1", "U16": "<u2", "I16": "<i2", "U32": "<u4",
    "I32": "<i4", "U64": "<u8", "I64": "<i8", "F16": "<f2", "BF16": "<u2", "F32": "<f4",
    "F64": "<f8",
}


def fail(msg):
    print("error: " + msg)
    sys.exit(1)


def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        fail("duplicate key in the header")
    return dict(pairs)


def read(path):
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        fail("file shorter than 8 bytes")
    (n,) = struct.unpack("<Q", raw[:8])
    if n % 8 != 0:
        fail("header length %d is not a multiple of 8" % n)
    if 8 + n > len(raw):
        fail("header length %d is larger than the file" % n)
    header = json.loads(raw[8:8 + n].decode("utf-8"), object_pairs_hook=no_duplicates)
    header.pop("__metadata__", None)
    data = raw[8 + n:]
    spans = sorted(tuple(info["data_offsets"]) for info in header.values())
    pos = 0
    for begin, end in spans:
        if begin != pos or end < begin:
            fail("tensors do not tile the data section at byte %d" % pos)
        pos = end
    if pos != len(data):
        fail("data section has %d bytes, tensors cover %d" % (len(data), pos))
    return header, data


def sums(path):
    header, data = read(path)
    for name, info in header.items():
        dt, shape = info["dtype"], info["shape"]
        begin, end = info["data_offsets"]
        arr = np.frombuffer(data[begin:end], dtype=NUMPY_DTYPES[dt]).reshape(shape)
        if dt == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        if arr.dtype.kind == "f":
            total = repr(float(arr.astype(np.float64).sum()))
        else:
            total = str(sum(int(x) for x in arr.ravel()))
        print(name.encode("utf-8").hex(), dt, "[" + ",".join(str(d) for d in shape) + "]", total)


def write(path):
    tensors = [
        ("alpha", "F32", np.arange(4, dtype="<f4").reshape(2, 2) * np.float32(0.5)),
        ("beta", "I64", np.array([-1, 0, 1 << 40], dtype="<i8")),
        ("caf\u00e9 \U0001F600", "U8", np.array([7, 9], dtype="u1")),
        ("gamma", "F16", np.array([1.5, -2.0], dtype="<f2")),
        ("delta", "BOOL", np.array([True, False])),
        ("eps", "F64", np.array(3.25, dtype="<f8")),
        ("bf", "BF16", np.array([0x3FC0, 0xC020], dtype="<u2")),  # 1.5, -2.5
    ]
    spans, blobs, off = {}, [], 0
    for name, _, arr in reversed(tensors):  # data in the reverse of the header's order
        blob = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        spans[name] = [off, off + len(blob)]
        blobs.append(blob)
        off += len(blob)
    header = {"__metadata__": {"format": "pt", "note": "a \"quote\" and a \\ backslash"}}
    for name, dt, arr in tensors:
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": spans[name]}
    text = json.dumps(header).encode("utf-8")  # ASCII only: \u escapes, surrogate pairs
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("sums", "write"):
        print(__doc__)
        sys.exit(2)
    (sums if sys.argv[1] == "sums" else write)(sys.argv[2])
