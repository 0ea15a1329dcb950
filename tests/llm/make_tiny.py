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
  gemma-f32       gemma    64   160    4    1  F32       tied           NEOX, base 10000 (default)
  gemma2-f32      gemma2   64   160    4    2  F32       tied           NEOX, base 10000 (default)
  gemma3-f32      gemma3   64   160    4    2  F32       tied           NEOX, base 1e6, linear x8
  qwen3-f32       qwen3    64   160    4    2  F32       output.weight  NEOX, base 1e6
  phi3-f32        phi3     64   160    4    4  F32       output.weight  NEOX, base 10000 (default)
  llama-swa-f32   llama    64   160    4    2  F32       tied           normal, base 10000 (default)
  llama-kv-f32    llama    64   160    4    2  F32       tied           normal, 16 of 24 dims
  llama-yarn-f32  llama    64   160    4    2  F32       tied           normal, base 10000, YaRN x4
  phi3-long-f32   phi3     64   160    4    4  F32       output.weight  NEOX, base 10000, LongRoPE

Vocab 320, context 128 for all; 2 layers except gemma2-f32 (4), gemma3-f32 (6) and
gemma2-27b-f32 (46). The variants
of one row group share their float weights (llama-f32 .. llama-q8_0 quantize the same matrices,
as do the two qwen2 and the two K-quant files), so a quantized file's logits stay near its float
twin's; every other file has its own seed. The K-quant blocks are not quantized from floats (gguf
cannot quantize K types): they are built directly from random quants, scales and f16 super-block
scales of a realistic magnitude, then checked by dequantizing.

Metadata beyond the common keys ({a} = the architecture; hd = n_embd / n_head where not given):
  gemma-f32       {a}.attention.key_length = value_length = 32 (so Q is 4*32 rows for n_embd 64),
                  rope.dimension_count 32.
  gemma2-f32      key_length = value_length = 16, {a}.attention.sliding_window 4 (layers 0 and 2
                  slide), {a}.attn_logit_softcapping 50.0, {a}.final_logit_softcapping 30.0; post
                  norms; Q/K gain 3.5, so about 8% of the scaled scores pass 20 (the cap bends
                  them).
  gemma3-f32      key_length = value_length = 16, sliding_window 4 (layers 0-4 slide, 5 is
                  global), rope.freq_base 1e6, rope.scaling.type "linear", rope.scaling.factor 8.0
                  (global layers only; sliding ones use base 10000 unscaled); q/k and post norms.
  gemma2-27b-f32  gemma2 with 46 layers (Gemma 2 27B's count: scores scaled by 1/sqrt(n_embd /
                  n_head) = 1/4, not 1/sqrt(key_length 32)) and none of the window and softcap
                  keys (the model's defaults: window 4096, caps 50 and 30).
  qwen3-f32       key_length = value_length = 32, rope.freq_base 1e6; q/k norms, no biases.
  phi3-f32        sliding_window 5 (every layer slides); fused attn_qkv and gate+up ffn_up.
  llama-swa-f32   sliding_window 4 (every layer slides).
  llama-kv-f32    key_length 24, value_length 20, rope.dimension_count 16 (partial rope).
  llama-yarn-f32  rope.freq_base 10000.0, rope.scaling.type "yarn", rope.scaling.factor 4.0,
                  rope.scaling.original_context_length 32.
  phi3-long-f32   Phi-3-mini-128k / Phi-3.5-mini style LongRoPE, as llama.cpp's converter writes
                  it: no sliding_window, no rope.scaling.type or factor, rope.freq_base 10000.0,
                  rope.scaling.original_context_length 32 (context_length stays 128),
                  rope.scaling.attn_factor sqrt(1 + ln(128/32) / ln 32) = 1.1832 (the
                  converter's formula for these lengths; Phi-3-mini-128k's 131072/4096 give
                  1.1902), and the tensors rope_factors_short.weight and rope_factors_long.weight
                  below. Engines choose the long set when their context exceeds 32, else the
                  short one (ref_llama.py --ctx); fused matrices as phi3-f32.
Sliding windows, softcapping and head sizes are chosen small enough to matter within a prompt of
about ten tokens. Gemma's stored embeddings are sqrt(n_embd) times smaller and its final norm
sqrt(n_embd) times larger than the others', since Gemma scales the looked-up rows by sqrt(n_embd).

Weight layouts (GGUF dims are [ne0, ne1] with ne0 contiguous; numpy shape is (ne1, ne0)):
  token_embd.weight          F32  [n_embd, n_vocab]       row t = embedding of token t
  blk.N.attn_norm.weight     F32  [n_embd]
  blk.N.attn_q.weight        T    [n_embd, n_head*hd]     y = W x with W of numpy shape (out, in)
  blk.N.attn_k.weight        T    [n_embd, n_kv*hd]       hd = key_length, else n_embd / n_head
  blk.N.attn_v.weight        T    [n_embd, n_kv*hdv]      hdv = value_length, else hd
  blk.N.attn_qkv.weight      T    [n_embd, (n_head+2*n_kv)*hd]  phi3 only, instead of q/k/v:
                                                          rows Q, then K, then V
  blk.N.attn_q/k/v.bias      F32  [out]                   qwen2 only
  blk.N.attn_q_norm.weight   F32  [hd]                    qwen3, gemma3 only
  blk.N.attn_k_norm.weight   F32  [hd]                    qwen3, gemma3 only
  blk.N.attn_output.weight   T    [n_head*hdv, n_embd]
  blk.N.post_attention_norm.weight F32 [n_embd]           gemma2, gemma3 only
  blk.N.ffn_norm.weight      F32  [n_embd]
  blk.N.ffn_gate.weight      T    [n_embd, n_ff]          absent in phi3
  blk.N.ffn_up.weight        T    [n_embd, n_ff]          phi3: [n_embd, 2*n_ff], rows gate, up
  blk.N.ffn_down.weight      T    [n_ff, n_embd]
  blk.N.post_ffw_norm.weight F32  [n_embd]                gemma2, gemma3 only
  output_norm.weight         F32  [n_embd]
  output.weight              T    [n_embd, n_vocab]       llama3, qwen3, phi3; else tied
  rope_freqs.weight          F32  [hd/2]                  llama3 only: theta_i is divided by it
  rope_factors_short.weight  F32  [n_rot/2]               phi3-long only: 1 + 0.5 t^2 (1 .. 1.5)
  rope_factors_long.weight   F32  [n_rot/2]               phi3-long only: 1.1 + 38.9 t^2 (1.1 .. 40)
                                                          with t = i / (n_rot/2 - 1); theta_i is
                                                          divided by the chosen set
Quantized rows are blocks along ne0 (the input dimension), as llama.cpp stores them.

Tokenizer (tokenizer.ggml.model gpt2, pre "default"): ids 0..255 are the 256 bytes in GPT-2's
byte-to-character spelling (byte b is token b), 256 is <s> (bos), 257 is </s> (eos), 258..319
are 62 merges learned by byte-pair encoding of the short English text below.
"""
import math
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
# The later architectures add optional settings (absent: the value the first ones imply):
#   n_layer       block count (N_LAYER)
#   hd_k, hd_v    head dims, written as attention.key_length / value_length (n_embd / N_HEAD, hd_k)
#   n_rot         rope.dimension_count (hd_k)
#   swa           attention.sliding_window
#   attn_cap      attn_logit_softcapping;  final_cap: final_logit_softcapping
#   scaling       (rope.scaling.type, factor[, original_context_length])
#   qk_norm       blk.N.attn_q_norm / attn_k_norm;  post_norm: post_attention_norm / post_ffw_norm
#   fused         phi3's attn_qkv and fused gate+up ffn_up
#   qk_gain       gain of the Q and K projections (1.5)
#   longrope      (original_context_length, attn_factor): phi3's LongRoPE keys and the
#                 rope_factors_short / rope_factors_long tensors (formulas, no random draws)
GEMMA = dict(arch="gemma", n_kv=1, base=None, eps=1e-6, untied=False, rope_freqs=False,
             hd_k=32)
# Q/K gain 3.5: raw scores of standard deviation about 12, so some pass 20 and the cap of 50
# bends them visibly.
GEMMA2 = dict(arch="gemma2", n_kv=2, base=None, eps=1e-6, untied=False, rope_freqs=False,
              n_layer=4, hd_k=16, swa=4, attn_cap=50.0, final_cap=30.0, post_norm=True,
              qk_gain=3.5)
GEMMA3 = dict(arch="gemma3", n_kv=2, base=1e6, eps=1e-6, untied=False, rope_freqs=False,
              n_layer=6, hd_k=16, swa=4, scaling=("linear", 8.0), qk_norm=True, post_norm=True)
GEMMA2_27B = dict(GEMMA2, n_layer=46, hd_k=32, swa=None, attn_cap=None, final_cap=None)
QWEN3 = dict(arch="qwen3", n_kv=2, base=1e6, eps=1e-6, untied=True, rope_freqs=False,
             hd_k=32, qk_norm=True)
PHI3 = dict(arch="phi3", n_kv=4, base=None, eps=1e-5, untied=True, rope_freqs=False,
            swa=5, fused=True)
LLAMA_SWA = dict(LLAMA, swa=4)
LLAMA_KV = dict(LLAMA, hd_k=24, hd_v=20, n_rot=16)
LLAMA_YARN = dict(LLAMA, base=10000.0, scaling=("yarn", 4.0, 32))
# llama.cpp's converter (Phi3MiniModel): attn_factor = sqrt(1 + ln(ctx / orig) / ln(orig)).
PHI3_LONG = dict(PHI3, base=10000.0, swa=None,
                 longrope=(32, math.sqrt(1.0 + math.log(N_CTX / 32) / math.log(32))))

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
    "gemma-f32": (SMALL, GEMMA, Q.F32, 5),
    "gemma2-f32": (SMALL, GEMMA2, Q.F32, 6),
    "gemma3-f32": (SMALL, GEMMA3, Q.F32, 7),
    "qwen3-f32": (SMALL, QWEN3, Q.F32, 8),
    "phi3-f32": (SMALL, PHI3, Q.F32, 9),
    "llama-swa-f32": (SMALL, LLAMA_SWA, Q.F32, 10),
    "llama-kv-f32": (SMALL, LLAMA_KV, Q.F32, 11),
    "llama-yarn-f32": (SMALL, LLAMA_YARN, Q.F32, 12),
    "phi3-long-f32": (SMALL, PHI3_LONG, Q.F32, 13),
    "gemma2-27b-f32": (SMALL, GEMMA2_27B, Q.F32, 14),
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
    """The float32 weights of one (shape family, architecture, seed): numpy shapes, (out, in).
    The random draws of the first architectures keep their order; the optional tensors of the
    later ones are drawn where they sit in the layer."""
    rng = np.random.default_rng(seed)
    d, ff = shape["n_embd"], shape["n_ff"]
    hd = arch.get("hd_k") or d // N_HEAD
    hdv = arch.get("hd_v") or hd
    kv, kvv = arch["n_kv"] * hd, arch["n_kv"] * hdv
    qk_gain = arch.get("qk_gain", 1.5)
    gemma = arch["arch"].startswith("gemma")

    def mat(rows, cols, gain=1.0):
        return (rng.standard_normal((rows, cols)) * gain / np.sqrt(cols)).astype(np.float32)

    def norm(n, gain=1.0):
        return (gain * (1.0 + 0.1 * rng.standard_normal(n))).astype(np.float32)

    # Embeddings small beside what the layers add, so the next token depends on the context
    # and not mostly on the current token (tied output favours repeating the input). Gemma
    # multiplies the looked-up rows by sqrt(n_embd): its stored rows are that much smaller, and
    # its final norm that much larger, so that the tied logits keep their size.
    emb = EMB_NORM / np.sqrt(d) * rng.standard_normal((N_VOCAB, d))
    if gemma:
        emb = emb / np.sqrt(d)
    w = {"token_embd.weight": emb.astype(np.float32)}
    for i in range(arch.get("n_layer", N_LAYER)):
        p = f"blk.{i}."
        w[p + "attn_norm.weight"] = norm(d)
        q, k, v = mat(N_HEAD * hd, d, qk_gain), mat(kv, d, qk_gain), mat(kvv, d)
        if arch.get("fused"):
            w[p + "attn_qkv.weight"] = np.concatenate([q, k, v])
        else:
            w[p + "attn_q.weight"], w[p + "attn_k.weight"], w[p + "attn_v.weight"] = q, k, v
        if arch["arch"] == "qwen2":
            w[p + "attn_q.bias"] = (0.1 * rng.standard_normal(d)).astype(np.float32)
            w[p + "attn_k.bias"] = (0.1 * rng.standard_normal(kv)).astype(np.float32)
            w[p + "attn_v.bias"] = (0.1 * rng.standard_normal(kv)).astype(np.float32)
        if arch.get("qk_norm"):
            # Gain 1.5 each: normalized heads give scores of standard deviation about 2.
            w[p + "attn_q_norm.weight"] = norm(hd, 1.5)
            w[p + "attn_k_norm.weight"] = norm(hd, 1.5)
        w[p + "attn_output.weight"] = mat(d, N_HEAD * hdv, LAYER_GAIN)
        if arch.get("post_norm"):
            w[p + "post_attention_norm.weight"] = norm(d, LAYER_GAIN)
        w[p + "ffn_norm.weight"] = norm(d)
        gate, up = mat(ff, d), mat(ff, d)
        if arch.get("fused"):
            w[p + "ffn_up.weight"] = np.concatenate([gate, up])
        else:
            w[p + "ffn_gate.weight"], w[p + "ffn_up.weight"] = gate, up
        w[p + "ffn_down.weight"] = mat(d, ff, LAYER_GAIN)
        if arch.get("post_norm"):
            w[p + "post_ffw_norm.weight"] = norm(d, LAYER_GAIN)
    out_gain = 1.0 if arch["untied"] else OUT_GAIN * (np.sqrt(d) if gemma else 1.0)
    w["output_norm.weight"] = norm(d, out_gain)
    if arch["untied"]:
        w["output.weight"] = mat(N_VOCAB, d, 6.0)
    if arch["rope_freqs"]:
        # Llama-3.1's shape: factor 1 for the fastest-turning pairs, rising to 8 for the slowest.
        t = np.linspace(0.0, 1.0, hd // 2)
        w["rope_freqs.weight"] = (1.0 + 7.0 * np.clip(2.0 * t - 0.5, 0.0, 1.0)).astype(np.float32)
    if arch.get("longrope"):
        # Phi-3.5-mini's shapes: short factors near 1 (up to 1.5), long ones rising from about
        # 1 for the fastest-turning pairs to 40 for the slowest.
        t = np.linspace(0.0, 1.0, (arch.get("n_rot") or hd) // 2)
        w["rope_factors_long.weight"] = (1.1 + 38.9 * t * t).astype(np.float32)
        w["rope_factors_short.weight"] = (1.0 + 0.5 * t * t).astype(np.float32)
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
    wr.add_block_count(arch.get("n_layer", N_LAYER))
    wr.add_feed_forward_length(ff)
    wr.add_head_count(N_HEAD)
    wr.add_head_count_kv(arch["n_kv"])
    hd = arch.get("hd_k") or d // N_HEAD
    if arch.get("hd_k"):
        wr.add_key_length(hd)
        wr.add_value_length(arch.get("hd_v") or hd)
    wr.add_layer_norm_rms_eps(arch["eps"])
    if arch.get("swa"):
        wr.add_sliding_window(arch["swa"])
    if arch.get("attn_cap"):
        wr.add_attn_logit_softcapping(arch["attn_cap"])
    if arch.get("final_cap"):
        wr.add_final_logit_softcapping(arch["final_cap"])
    if arch["base"] is not None:
        wr.add_rope_freq_base(arch["base"])
    wr.add_rope_dimension_count(arch.get("n_rot") or hd)
    if arch.get("scaling"):
        kind, factor, *orig = arch["scaling"]
        wr.add_rope_scaling_type(gguf.RopeScalingType(kind))
        wr.add_rope_scaling_factor(factor)
        if orig:
            wr.add_rope_scaling_orig_ctx_len(orig[0])
    if arch.get("longrope"):
        orig_ctx, attn_factor = arch["longrope"]
        wr.add_rope_scaling_orig_ctx_len(orig_ctx)
        wr.add_rope_scaling_attn_factors(attn_factor)
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
