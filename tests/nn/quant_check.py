#!/usr/bin/env python3
"""quant_check.py - the Python gguf package's dequantizers as an independent reference for kiln's
(tests/nn/test_quant.c).

  quant_check.py dequantize TYPE ROWS COLS BLOCKS OUT [TYPE ROWS COLS BLOCKS OUT ...]
      BLOCKS holds ROWS x COLS elements of ggml type TYPE (its code, e.g. 12 for Q4_K) as raw
      blocks; writes their values, as gguf.quants.dequantize gives them, to OUT as
      little-endian f32 (row-major) and prints "ok NAME". A type the installed package cannot
      dequantize prints "skip NAME: why" and writes no OUT.
  quant_check.py compare TYPE ROWS COLS BLOCKS VALUES
      compares the f32 file VALUES (e.g. kiln's) with the package's values bit for bit; prints
      the first mismatches and exits 1 if there are any.

Exits 77 when the gguf package (or numpy) is missing: the test then prints a skip note."""
import sys

try:
    import numpy as np
    import gguf
    from gguf.quants import dequantize
except ImportError as e:
    print("missing: %s" % e)
    sys.exit(77)


def values(code, rows, cols, path):
    """The package's values of the blocks in path as (rows, cols) f32, or a reason string."""
    try:
        qtype = gguf.GGMLQuantizationType(code)
    except ValueError:
        return "type %d is unknown to the package" % code
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    if cols % block:
        raise SystemExit("quant_check.py: %s rows of %d elements are not whole blocks"
                         % (qtype.name, cols))
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size != rows * cols // block * size:
        raise SystemExit("quant_check.py: %s: %d bytes, expected %d"
                         % (path, raw.size, rows * cols // block * size))
    try:
        y = dequantize(raw.reshape(rows, -1), qtype)
    except NotImplementedError as e:
        return str(e)
    return np.asarray(y, dtype=np.float32).reshape(rows, cols)


def main(argv):
    if len(argv) >= 6 and argv[0] == "dequantize" and (len(argv) - 1) % 5 == 0:
        for i in range(1, len(argv), 5):
            code, rows, cols = (int(a) for a in argv[i:i + 3])
            name = gguf.GGMLQuantizationType(code).name if code in gguf.GGML_QUANT_SIZES else code
            y = values(code, rows, cols, argv[i + 3])
            if isinstance(y, str):
                print("skip %s: %s" % (name, y))
                continue
            y.astype("<f4").tofile(argv[i + 4])
            print("ok %s" % name)
        return 0
    if len(argv) == 6 and argv[0] == "compare":
        code, rows, cols = (int(a) for a in argv[1:4])
        y = values(code, rows, cols, argv[4])
        if isinstance(y, str):
            print("skip: %s" % y)
            return 0
        got = np.fromfile(argv[5], dtype="<f4").reshape(rows, cols)
        bad = np.flatnonzero(got.view(np.uint32) != y.view(np.uint32))
        for k in bad[:10]:
            print("element %d: got %r, gguf %r" % (k, float(got.flat[k]), float(y.flat[k])))
        print("%d of %d elements differ" % (bad.size, y.size))
        return 1 if bad.size else 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
