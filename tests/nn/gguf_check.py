#!/usr/bin/env python3
"""gguf_check.py - the Python gguf package as an independent GGUF writer and reader for kiln's
tests (tests/nn/test_gguf.c).

  gguf_check.py write FILE   writes a small llama-like file with known metadata and tensors
                             (alignment 64); the C test checks every value it reads back
  gguf_check.py read FILE    reads FILE with gguf.GGUFReader and prints, in file order,
                               K KEY TYPE ELEM_TYPE LENGTH        (ELEM_TYPE, LENGTH -1 unless
                                                                    an array)
                               T NAME TYPE DIM0 NUMEL DATA_OFFSET NBYTES
  gguf_check.py types FILE   prints the package's ggml type table: CODE NAME BLOCK BYTES

Exits 77 when the gguf package (or numpy) is missing: the test then prints a skip note."""
import sys

try:
    import numpy as np
    import gguf
except ImportError as e:
    print("missing: %s" % e)
    sys.exit(77)


def write(path):
    w = gguf.GGUFWriter(path, arch="llama")
    w.add_custom_alignment(64)
    w.add_name("caf\u00e9 model")
    w.add_uint32("llama.context_length", 4096)
    w.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    w.add_int8("test.i8", -7)
    w.add_uint64("test.u64", 1 << 40)
    w.add_int64("test.i64", -(1 << 50))
    w.add_float64("test.f64", 0.1)
    w.add_bool("test.bool", True)
    w.add_array("tokenizer.ggml.tokens", ["tok%d\u2581" % j for j in range(300)])
    w.add_array("tokenizer.ggml.scores", [-j - 0.5 for j in range(300)])
    w.add_array("tokenizer.ggml.token_type", [1, 2, 3, 6])
    w.add_tensor("w", np.arange(12, dtype=np.float32).reshape(3, 4) - 5.5)
    w.add_tensor("h", np.array([1, -2, 0.5], dtype=np.float16))
    # Q8_0 rows of 64 elements are 2 blocks of 34 bytes: raw bytes of shape (2, 68)
    q = ((np.arange(2 * 68) * 7 + 3) % 256).astype(np.uint8).reshape(2, 68)
    w.add_tensor("blk.0.q8", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("ids", np.array([-1, 2, -3, 4, 1 << 30], dtype=np.int32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def read(path):
    r = gguf.GGUFReader(path)
    for name, f in r.fields.items():
        if name.startswith("GGUF."):
            continue  # the reader's own entries for the header fields
        t = int(f.types[0])
        if f.types[0] == gguf.GGUFValueType.ARRAY:
            elem = int(f.types[1]) if len(f.types) > 1 else -1
            print("K %s %d %d %d" % (name, t, elem, len(f.data)))
        else:
            print("K %s %d -1 -1" % (name, t))
    for t in r.tensors:
        dims = [int(d) for d in t.shape]
        print("T %s %d %d %d %d %d" % (t.name, int(t.tensor_type), dims[0], int(t.n_elements),
                                       int(t.data_offset), int(t.n_bytes)))


def types():
    for t, (block, size) in gguf.GGML_QUANT_SIZES.items():
        print("%d %s %d %d" % (int(t), t.name, block, size))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("write", "read", "types"):
        print(__doc__)
        sys.exit(2)
    {"write": write, "read": read, "types": lambda _: types()}[sys.argv[1]](sys.argv[2])
