#!/usr/bin/env python3
"""make_hostile.py: copies of a GGUF model whose metadata contradicts its tensors, for kiln's
tests (each must be refused with a clear error, never crash).

  make_hostile.py MODEL.gguf OUTDIR

Writes OUTDIR/<stem>-<case>.gguf for each case below and prints one line per file:
PATH<TAB>TEXT, TEXT being what the error message must contain (one of the |-separated
parts). The cases (ARCH is the file's
general.architecture):

  heads       ARCH.attention.head_count doubled: the attention matrices no longer fit
  kv_heads    ARCH.attention.head_count_kv 3, which does not divide the head count
  layers      ARCH.block_count one more than the file has layers
  missing     blk.0.ffn_down.weight left out
  embd        ARCH.embedding_length 16 larger than the tensors
  ff          ARCH.feed_forward_length 8 larger than the tensors
  ctx         ARCH.context_length 2^31
  key_len     ARCH.attention.key_length 0
  rope        ARCH.rope.scaling.type "longrope"
  window      ARCH.attention.sliding_window 2^32-1 (only where the model has a window)

Exits 77 when gguf or numpy is missing.
"""
import os
import sys

try:
    import numpy as np  # noqa: F401  (gguf needs it)
    import gguf
    from gguf import GGUFValueType as V
except ImportError as e:
    print(f"make_hostile.py: {e.name} is not available (python3 -m pip install numpy gguf)")
    sys.exit(77)


def fields_of(r):
    """(key, value, type, array element type) of every metadata field but the reader's own."""
    out = []
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vtype = V(f.types[0])
        sub = V(f.types[1]) if vtype == V.ARRAY and len(f.types) > 1 else None
        out.append((key, f.contents(), vtype, sub))
    return out


def write(path, arch, fields, tensors):
    w = gguf.GGUFWriter(path, arch)
    for key, val, vtype, sub in fields:
        w.add_key_value(key, val, vtype, sub_type=sub)
    for t in tensors:
        w.add_tensor(t.name, t.data, raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def main():
    if len(sys.argv) != 3:
        print(__doc__.split("\n\n")[1].strip())
        sys.exit(2)
    src, out = sys.argv[1], sys.argv[2]
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    base = fields_of(r)
    get = {k: v for k, v, _, _ in base}

    def setting(key, value, vtype=V.UINT32):
        """the fields with key set to value (replaced or added)"""
        fs = [f for f in base if f[0] != key]
        return fs + [(key, value, vtype, None)]

    n_head = get[f"{arch}.attention.head_count"]
    cases = {
        "heads": (setting(f"{arch}.attention.head_count", 2 * n_head), None,
                  "dims|rope dimension count"),
        "kv_heads": (setting(f"{arch}.attention.head_count_kv", 3), None,
                     "inconsistent hyperparameters"),
        "layers": (setting(f"{arch}.block_count", get[f"{arch}.block_count"] + 1), None,
                   "no tensor 'blk."),
        "missing": (base, "blk.0.ffn_down.weight", "no tensor 'blk.0.ffn_down.weight'"),
        "embd": (setting(f"{arch}.embedding_length", get[f"{arch}.embedding_length"] + 16), None,
                 "dims"),
        "ff": (setting(f"{arch}.feed_forward_length", get[f"{arch}.feed_forward_length"] + 8),
               None, "dims"),
        "ctx": (setting(f"{arch}.context_length", 1 << 31), None, "context length"),
        "key_len": (setting(f"{arch}.attention.key_length", 0), None, "key length"),
        "rope": (setting(f"{arch}.rope.scaling.type", "longrope", V.STRING), None,
                 "rope scaling 'longrope'"),
    }
    if f"{arch}.attention.sliding_window" in get:
        cases["window"] = (setting(f"{arch}.attention.sliding_window", (1 << 32) - 1), None,
                           "sliding window")
    os.makedirs(out, exist_ok=True)
    stem = os.path.splitext(os.path.basename(src))[0]
    for name, (fields, drop, text) in cases.items():
        path = os.path.join(out, f"{stem}-{name}.gguf")
        write(path, arch, fields, [t for t in r.tensors if t.name != drop])
        print(f"{path}\t{text}")


if __name__ == "__main__":
    main()
