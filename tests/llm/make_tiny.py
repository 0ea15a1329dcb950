#!/usr/bin/env python3
"""make_tiny.py: writes tiny random-weight LLaMA-family GGUF models for kiln's tests.

  make_tiny.py OUTDIR [NAME...]    (no NAME: all variants; --list names them)

Every file is deterministic (fixed seeds; the same bytes on every run). The variants:

  name            arch   n_embd n_ff heads kv  matrices  output         rope
  llama-f32       llama    64   160    4    2  F32       tied           normal, base 10000 (default)
  llama-f16       llama    64   160    4    2  F16       tied           "
  llama-bf16      llama    64   160    4    2  BF16      tied           "
  llama-q4_0      llama    64   160    4    2  Q4_0      tied           "
  llama-q4_1      llama    64   160    4    2  Q4_1      tied           "
  llama-q8_0      llama    64   160    4    2  Q8_0      tied           "
  llama-q4_k      llama   256   512    4    2  Q4_K      tied           "
  llama-q6_k      llama   256   512    4    2  Q6_K      tied           "
  qwen2-f32       qwen2    64   160    4    4  F32       tied           NEOX, base 1e6; q/k/v biases
  qwen2-q8_0      qwen2    64   160    4    4  Q8_0      tied           "
  llama3-f32      llama    64   160    4    1  F32       output.weight  normal, base 5e5, rope_freqs

All have 2 layers, vocab 320, context 128. The variants of one row group share their float
weights (llama-f32 .. llama-q8_0 quantize the same matrices, as do the two qwen2 and the two
K-quant files), so a quantized file's logits stay near its float twin's. The K-quant blocks are
not quantized from floats (gguf cannot quantize K types): they are built directly from random
quants, scales and f16 super-block scales of a realistic magnitude, then checked by dequantizing.

Weight layouts (GGUF dims are [ne0, ne1] with ne0 contiguous; numpy shape is (ne1, ne0)):
  token_embd.weight          F32  [n_embd, n_vocab]       row t = embedding of token t
  blk.N.attn_norm.weight     F32  [n_embd]
  blk.N.attn_q.weight        T    [n_embd, n_head*hd]     y = W x with W of numpy shape (out, in)
  blk.N.attn_k.weight        T    [n_embd, n_kv*hd]       hd = n_embd / n_head
  blk.N.attn_v.weight        T    [n_embd, n_kv*hd]
  blk.N.attn_q/k/v.bias      F32  [out]                   qwen2 only
  blk.N.attn_output.weight   T    [n_head*hd, n_embd]
  blk.N.ffn_norm.weight      F32  [n_embd]
  blk.N.ffn_gate.weight      T    [n_embd, n_ff]
  blk.N.ffn_up.weight        T    [n_embd, n_ff]
  blk.N.ffn_down.weight      T    [n_ff, n_embd]
  output_norm.weight         F32  [n_embd]
  output.weight              T    [n_embd, n_vocab]       llama3 only; else tied to token_embd
  rope_freqs.weight          F32  [hd/2]                  llama3 only: theta_i is divided by it
Quantized rows are blocks along ne0 (the input dimension), as llama.cpp stores them.

Tokenizer (tokenizer.ggml.model gpt2, pre "default"): ids 0..255 are the 256 bytes in GPT-2's
byte-to-character spelling (byte b is token b), 256 is <s> (bos), 257 is </s> (eos), 258..319
are 62 merges learned by byte-pair encoding of the short English text below.
"""
import os
import sys

try:
    import numpy as np
    import gguf
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import dequantize, quantize
except ImportError as e:
    print(f"make_tiny.py: {e.name} is not available (python3 -m pip install numpy gguf)")
    sys.exit(77)

N_LAYER, N_HEAD, N_VOCAB, N_CTX = 2, 4, 320, 128
BOS, EOS = 256, 257
# Scales: embedding rows of norm about EMB_NORM; attn_output and ffn_down at LAYER_GAIN times a
# unit-variance init; the final norm (or the untied output matrix) scaled so logits have a
# standard deviation of about 6, which keeps greedy top-2 gaps well above float32 rounding.
EMB_NORM, LAYER_GAIN, OUT_GAIN = 1.6, 2.0, 4.0

SMALL = dict(n_embd=64, n_ff=160)
KQ = dict(n_embd=256, n_ff=512)
LLAMA = dict(arch="llama", n_kv=2, base=None, eps=1e-5, untied=False, rope_freqs=False)
QWEN2 = dict(arch="qwen2", n_kv=4, base=1e6, eps=1e-6, untied=False, rope_freqs=False)
LLAMA3 = dict(arch="llama", n_kv=1, base=5e5, eps=1e-5, untied=True, rope_freqs=True)

# name -> (shape family, architecture settings, matrix type, weight seed)
VARIANTS = {
    "llama-f32": (SMALL, LLAMA, Q.F32, 1),
    "llama-f16": (SMALL, LLAMA, Q.F16, 1),
    "llama-bf16": (SMALL, LLAMA, Q.BF16, 1),
    "llama-q4_0": (SMALL, LLAMA, Q.Q4_0, 1),
    "llama-q4_1": (SMALL, LLAMA, Q.Q4_1, 1),
    "llama-q8_0": (SMALL, LLAMA, Q.Q8_0, 1),
    "llama-q4_k": (KQ, LLAMA, Q.Q4_K, 2),
    "llama-q6_k": (KQ, LLAMA, Q.Q6_K, 2),
    "qwen2-f32": (SMALL, QWEN2, Q.F32, 3),
    "qwen2-q8_0": (SMALL, QWEN2, Q.Q8_0, 3),
    "llama3-f32": (SMALL, LLAMA3, Q.F32, 4),
}

FILE_TYPE = {
    Q.F32: gguf.LlamaFileType.ALL_F32, Q.F16: gguf.LlamaFileType.MOSTLY_F16,
    Q.BF16: gguf.LlamaFileType.MOSTLY_BF16, Q.Q4_0: gguf.LlamaFileType.MOSTLY_Q4_0,
    Q.Q4_1: gguf.LlamaFileType.MOSTLY_Q4_1, Q.Q8_0: gguf.LlamaFileType.MOSTLY_Q8_0,
    Q.Q4_K: gguf.LlamaFileType.MOSTLY_Q4_K_M, Q.Q6_K: gguf.LlamaFileType.MOSTLY_Q6_K,
}

BPE_TEXT = (
    "the cat sat on the mat and the dog sat on the log. then the cat ran to the dog and the "
    "dog ran to the cat. there is a tree in the garden and the bird sings in the tree at the "
    "start of the day. one, two, three, four: the numbers go on and on."
)


# ---- tokenizer --------------------------------------------------------------------------------


def byte_chars():
    """GPT-2's printable spelling of each byte: printable Latin-1 bytes stand for themselves,
    the others map to U+0100 onwards in byte order."""
    keep = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return [out[b] for b in range(256)]


def learn_merges(text, n):
    """n byte-pair merges of `text`, split into words that carry their leading space; the most
    frequent adjacent pair wins, ties to the smallest pair."""
    chars = byte_chars()
    words = []
    for i, w in enumerate(text.split(" ")):
        raw = (" " if i else "") + w
        words.append([chars[b] for b in raw.encode()])
    merges = []
    while len(merges) < n:
        counts = {}
        for w in words:
            for a, b in zip(w, w[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + 1
        if not counts:
            break
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        for w in words:
            i = 0
            while i < len(w) - 1:
                if (w[i], w[i + 1]) == best:
                    w[i : i + 2] = [w[i] + w[i + 1]]
                i += 1
    return merges


def vocabulary():
    merges = learn_merges(BPE_TEXT, N_VOCAB - 258)
    tokens = byte_chars() + ["<s>", "</s>"] + [a + b for a, b in merges]
    if len(tokens) != N_VOCAB or len(set(tokens)) != N_VOCAB:
        raise SystemExit(f"make_tiny.py: vocabulary has {len(tokens)} tokens, wanted {N_VOCAB}")
    types = [gguf.TokenType.NORMAL] * N_VOCAB
    types[BOS] = types[EOS] = gguf.TokenType.CONTROL
    return tokens, [int(t) for t in types], [f"{a} {b}" for a, b in merges]


# ---- weights ----------------------------------------------------------------------------------


def float_weights(shape, arch, seed):
    """The float32 weights of one (shape family, architecture, seed): numpy shapes, (out, in)."""
    rng = np.random.default_rng(seed)
    d, ff = shape["n_embd"], shape["n_ff"]
    hd = d // N_HEAD
    kv = arch["n_kv"] * hd

    def mat(rows, cols, gain=1.0):
        return (rng.standard_normal((rows, cols)) * gain / np.sqrt(cols)).astype(np.float32)

    def norm(n, gain=1.0):
        return (gain * (1.0 + 0.1 * rng.standard_normal(n))).astype(np.float32)

    # Embeddings small beside what the layers add, so the next token depends on the context
    # and not mostly on the current token (tied output favours repeating the input).
    emb = EMB_NORM / np.sqrt(d) * rng.standard_normal((N_VOCAB, d))
    w = {"token_embd.weight": emb.astype(np.float32)}
    for i in range(N_LAYER):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm(d)
        w[p + "attn_q.weight"] = mat(d, d, 1.5)
        w[p + "attn_k.weight"] = mat(kv, d, 1.5)
        w[p + "attn_v.weight"] = mat(kv, d)
        if arch["arch"] == "qwen2":
            w[p + "attn_q.bias"] = (0.1 * rng.standard_normal(d)).astype(np.float32)
            w[p + "attn_k.bias"] = (0.1 * rng.standard_normal(kv)).astype(np.float32)
            w[p + "attn_v.bias"] = (0.1 * rng.standard_normal(kv)).astype(np.float32)
        w[p + "attn_output.weight"] = mat(d, d, LAYER_GAIN)
        w[p + "ffn_norm.weight"] = norm(d)
        w[p + "ffn_gate.weight"] = mat(ff, d)
        w[p + "ffn_up.weight"] = mat(ff, d)
        w[p + "ffn_down.weight"] = mat(d, ff, LAYER_GAIN)
    w["output_norm.weight"] = norm(d, 1.0 if arch["untied"] else OUT_GAIN)
    if arch["untied"]:
        w["output.weight"] = mat(N_VOCAB, d, 6.0)
    if arch["rope_freqs"]:
        # Llama-3.1's shape: factor 1 for the fastest-turning pairs, rising to 8 for the slowest.
        t = np.linspace(0.0, 1.0, hd // 2)
        w["rope_freqs.weight"] = (1.0 + 7.0 * np.clip(2.0 * t - 0.5, 0.0, 1.0)).astype(np.float32)
    return w


def q4_k_blocks(rng, rows, cols, sigma):
    """Random Q4_K rows: per 256 values, f16 d and dmin, 8 six-bit (scale, min) pairs packed in
    12 bytes, 128 bytes of 4-bit quants; value = d*scale*q - dmin*min. The mins are chosen so
    each 32-value group is centred near zero."""
    nb = rows * cols // 256
    sc = rng.integers(32, 64, size=(nb, 8))
    d = sigma / (np.mean(sc) * 4.6) * rng.uniform(0.8, 1.2, size=nb)
    dmin = 8.0 * d
    mn = np.clip(np.rint(sc * 7.5 / 8.0), 0, 63).astype(np.int64)
    s = np.zeros((nb, 12), dtype=np.uint8)
    s[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    s[:, 4:8] = (mn[:, 0:4] & 63) | ((mn[:, 4:8] >> 4) << 6)
    s[:, 8:12] = (sc[:, 4:8] & 15) | ((mn[:, 4:8] & 15) << 4)
    blocks = np.concatenate([
        d.astype("<f2").view(np.uint8).reshape(nb, 2),
        dmin.astype("<f2").view(np.uint8).reshape(nb, 2),
        s,
        rng.integers(0, 256, size=(nb, 128), dtype=np.uint8),
    ], axis=1)
    return blocks.reshape(rows, -1)


def q6_k_blocks(rng, rows, cols, sigma):
    """Random Q6_K rows: per 256 values, 128 bytes of low 4 bits, 64 bytes of high 2 bits, 16
    signed 8-bit scales, f16 d; value = d*scale*(q - 32)."""
    nb = rows * cols // 256
    sc = rng.integers(32, 128, size=(nb, 16)) * rng.choice([-1, 1], size=(nb, 16))
    d = sigma / (np.mean(np.abs(sc)) * 18.5) * rng.uniform(0.8, 1.2, size=nb)
    blocks = np.concatenate([
        rng.integers(0, 256, size=(nb, 192), dtype=np.uint8),
        sc.astype(np.int8).view(np.uint8),
        d.astype("<f2").view(np.uint8).reshape(nb, 2),
    ], axis=1)
    return blocks.reshape(rows, -1)


def encode(name, w, qtype, rng):
    """(array, raw type) for GGUFWriter.add_tensor: vectors, embeddings and rope factors stay
    F32; matrices take the variant's type."""
    if w.ndim == 1 or name == "token_embd.weight" or qtype == Q.F32:
        return w, None
    if qtype == Q.F16:
        return w.astype(np.float16), None
    if qtype in (Q.Q4_K, Q.Q6_K):
        rows, cols = w.shape
        sigma = float(np.std(w))
        make = q4_k_blocks if qtype == Q.Q4_K else q6_k_blocks
        data = make(rng, rows, cols, sigma)
        back = dequantize(data, qtype)
        if back.shape != w.shape or not 0.5 * sigma < np.std(back) < 2 * sigma:
            raise SystemExit(f"make_tiny.py: {name}: {qtype.name} blocks dequantize to std "
                             f"{np.std(back):.3g}, wanted about {sigma:.3g}")
        if abs(float(np.mean(back))) > 0.2 * sigma:
            raise SystemExit(f"make_tiny.py: {name}: {qtype.name} mean {np.mean(back):.3g}")
        return data, qtype
    return quantize(w, qtype), qtype


# ---- files ------------------------------------------------------------------------------------


def write_variant(path, name):
    shape, arch, qtype, seed = VARIANTS[name]
    a = arch["arch"]
    d, ff = shape["n_embd"], shape["n_ff"]
    w = float_weights(shape, arch, seed)
    rng = np.random.default_rng(1000 + seed)
    tokens, types, merges = vocabulary()

    wr = gguf.GGUFWriter(path, a)
    wr.add_name(f"kiln tiny {name}")
    wr.add_file_type(int(FILE_TYPE[qtype]))
    wr.add_context_length(N_CTX)
    wr.add_embedding_length(d)
    wr.add_block_count(N_LAYER)
    wr.add_feed_forward_length(ff)
    wr.add_head_count(N_HEAD)
    wr.add_head_count_kv(arch["n_kv"])
    wr.add_layer_norm_rms_eps(arch["eps"])
    if arch["base"] is not None:
        wr.add_rope_freq_base(arch["base"])
    wr.add_rope_dimension_count(d // N_HEAD)
    wr.add_vocab_size(N_VOCAB)
    wr.add_tokenizer_model("gpt2")
    wr.add_tokenizer_pre("default")
    wr.add_token_list(tokens)
    wr.add_token_types(types)
    wr.add_token_merges(merges)
    wr.add_bos_token_id(BOS)
    wr.add_eos_token_id(EOS)
    wr.add_add_bos_token(True)
    for tname, t in w.items():
        data, raw = encode(tname, t, qtype, rng)
        wr.add_tensor(tname, data, raw_dtype=raw)
    wr.write_header_to_file()
    wr.write_kv_data_to_file()
    wr.write_tensors_to_file()
    wr.close()


def main():
    args = sys.argv[1:]
    if args == ["--list"]:
        print("\n".join(VARIANTS))
        return
    if not args or args[0].startswith("-"):
        print(__doc__.split("\n\n")[1].strip())
        sys.exit(2)
    out, names = args[0], args[1:] or list(VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"make_tiny.py: unknown variant(s) {unknown}; known: {list(VARIANTS)}")
        sys.exit(2)
    os.makedirs(out, exist_ok=True)
    for n in names:
        path = os.path.join(out, n + ".gguf")
        write_variant(path, n)
        print(path)


if __name__ == "__main__":
    main()
