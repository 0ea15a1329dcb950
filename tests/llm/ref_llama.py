#!/usr/bin/env python3
"""ref_llama.py: the independent reference forward pass for LLaMA-family GGUF models
(general.architecture `llama`, `qwen2`, `qwen3`, `phi3`, `gemma`, `gemma2` or `gemma3`), written
with numpy and the `gguf` package only.

  ref_llama.py MODEL.gguf --tokens 1,2,3 --logits OUT.f32 [--greedy N --ids OUT.txt]
               [--ctx N] [--show]

Writes the float32 logits of every prompt position to OUT.f32 (n_tokens x n_vocab, row-major,
raw little-endian). With --greedy N it then continues greedily for N tokens (argmax over the
float64 logits, ties to the lowest id, no stop at end-of-sequence) and writes the N generated ids,
space-separated, to OUT.txt; the smallest gap between the two best logits over those steps is
printed to stderr, so a test can tell whether its float32 greedy run may legitimately differ.
--show prints the prompt and continuation decoded through the GGUF vocabulary (byte-level BPE).
--ctx N is the context size the engine under test was loaded with (default: the file's
{a}.context_length); the prompt plus the generated tokens must fit in it. It changes the result
only for phi3 LongRoPE files, which choose their rope factors by it (below).

The GGUF file is read with gguf.GGUFReader and every weight is dequantized with
gguf.quants.dequantize, then widened to float64: all arithmetic is float64. The prompt runs as
one batch; generated tokens run one at a time against a key/value cache. A Q4_1 or Q8_0 matrix
(rows a multiple of 8) is multiplied as llama.cpp multiplies it: each row of activations is first
quantized per block of 32 to int8 with one f32 scale (Int8Products below); so is the output
matrix when token_embd (so stored) stands in for it.

Semantics (those of llama.cpp for these architectures; {a} is general.architecture):
  x = token_embd[tokens] (gemma family: times sqrt(n_embd)); per layer, with h = rmsnorm(x) *
  attn_norm: x += o, o = Wo @ attn(rope(norm_q(Wq h + bq)), rope(norm_k(Wk h + bk)), Wv h + bv)
  (gemma2/gemma3: o = rmsnorm(o) * post_attention_norm); then with h = rmsnorm(x) * ffn_norm:
  x += f, f = Wdown (act(Wgate h) * Wup h), act = silu, gemma family gelu_tanh(a) = 0.5 a (1 +
  tanh(sqrt(2/pi) (a + 0.044715 a^3))) (gemma2/gemma3: f = rmsnorm(f) * post_ffw_norm).
  logits = Wout (rmsnorm(x) * output_norm), Wout = output.weight or token_embd (never scaled).
  rmsnorm(x) = x / sqrt(mean(x^2) + eps), eps = {a}.attention.layer_norm_rms_epsilon, for every
  norm. Norm weights are used as stored (Gemma's +1 is already in the GGUF weights).
  Heads: hd_k = {a}.attention.key_length (default n_embd / n_head), hd_v = value_length (default
  hd_k); Q has n_head*hd_k rows, K n_head_kv*hd_k, V n_head_kv*hd_v, Wo n_head*hd_v columns.
  norm_q, norm_k (qwen3, gemma3 only): each head vector (length hd_k) becomes rmsnorm(.) *
  blk.N.attn_q_norm / attn_k_norm, before rope; elsewhere the identity. bq, bk, bv: qwen2 only.
  phi3 fuses: blk.N.attn_qkv.weight rows are [Q; K; V], blk.N.ffn_up.weight rows [gate; up].
  Attention: softmax over scores s = q.k / sqrt(hd_k) (gemma2 with 46 layers and gemma3 with 62,
  the 27B models: q.k / sqrt(n_embd / n_head)); query head j reads kv head j // (n_head /
  n_head_kv); with {a}.attn_logit_softcapping = c present, s becomes c tanh(s / c) before the
  mask. The query at position p sees keys t <= p and, in a sliding layer, only p - t < W, W =
  {a}.attention.sliding_window (absent or 0: no layer slides; gemma2 without the key: 4096, and
  softcaps 50 and 30 without theirs). Sliding layers: llama and phi3
  all, gemma2 il % 2 == 0, gemma3 il % 6 < 5, other architectures none. With
  {a}.final_logit_softcapping = c2 present, logits become c2 tanh(logits / c2).
  RoPE rotates the first n_rot = {a}.rope.dimension_count (default hd_k) dims of each q and k
  head, the rest pass unchanged: `llama` pairs (x[2i], x[2i+1]), all others (NEOX) (x[i], x[i +
  n_rot/2]), by angle pos * inv_freq[i], with cos and sin both multiplied by mscale * af, af =
  {a}.rope.scaling.attn_factor (default 1; so the rotated part of q.k grows by af^2).
  inv_freq[i] = base^(-2i/n_rot) / ff[i], base = {a}.rope.freq_base (default 10000), ff =
  rope_freqs.weight, or in a phi3 LongRoPE file rope_factors_long.weight when ctx > n_orig and
  rope_factors_short.weight when ctx <= n_orig (ctx: --ctx; n_orig =
  {a}.rope.scaling.original_context_length, default context_length; a set the file lacks: 1),
  else 1; then by {a}.rope.scaling.type (default linear) and factor (rope.scaling.factor, else
  rope.scale_linear; absent or 0: 1; type none: 1):
    linear: inv_freq /= factor; mscale = 1.
    yarn:   with fs = 1/factor, corr(b) = n_rot ln(n_orig / (2 pi b)) / (2 ln base), low =
            max(0, floor(corr(32))), high = min(n_rot - 1, ceil(corr(1))), ramp_i = 1 - clamp((i -
            low) / max(0.001, high - low), 0, 1): inv_freq *= fs (1 - ramp_i) + ramp_i; mscale =
            1 + 0.1 ln(factor).
  gemma3's sliding layers use base 10000 and no scaling (but af); every other layer the file's
  values.
  LongRoPE (Phi-3-mini-128k, Phi-3.5-mini as llama.cpp's converter writes them: no scaling type,
  rope.scaling.original_context_length = the short context, rope.scaling.attn_factor = sqrt(1 +
  ln(context_length / n_orig) / ln(n_orig))): llama.cpp picks the set once per context by its
  context size (n_ctx_seq), not by the current sequence length as transformers does, and
  applies af to both sets. llama.cpp rounds its context up to a multiple of 256.
  Refused (error) rather than approximated: other architectures, other scaling types with a
  factor != 1, yarn with factor < 1, LongRoPE factor tensors outside phi3 or beside
  rope_freqs.weight, and the metadata listed in UNSUPPORTED_KEYS below (YaRN's tuning keys,
  per-layer SWA head sizes or bases, SWA patterns).

Exits 77 when numpy or gguf is missing (the C tests then skip), 1 on a bad model or argument.
"""
import argparse
import math
import sys
import time

try:
    import numpy as np
    import gguf
    from gguf.quants import dequantize
except ImportError as e:
    print(f"ref_llama.py: {e.name} is not available (python3 -m pip install numpy gguf)")
    sys.exit(77)

# Per architecture: rope pairing, and which optional parts of the layer it has.
ARCHS = {
    "llama": dict(rope="normal"),
    "qwen2": dict(rope="neox", qkv_bias=True),
    "qwen3": dict(rope="neox", qk_norm=True),
    "phi3": dict(rope="neox", fused=True),
    "gemma": dict(rope="neox", gemma=True),
    "gemma2": dict(rope="neox", gemma=True, post_norm=True),
    "gemma3": dict(rope="neox", gemma=True, post_norm=True, qk_norm=True),
}
# Metadata this reference does not implement: a file carrying one (with another value than the
# one given here, None: any value) is refused rather than run with different semantics.
UNSUPPORTED_KEYS = {
    "rope.scaling.yarn_log_multiplier": 0.0,
    "rope.scaling.yarn_ext_factor": None,
    "rope.scaling.yarn_attn_factor": 1.0,
    "rope.scaling.yarn_beta_fast": 32.0,
    "rope.scaling.yarn_beta_slow": 1.0,
    "rope.freq_base_swa": None,
    "attention.sliding_window_pattern": None,
    "attention.key_length_swa": None,
    "attention.value_length_swa": None,
    "rope.dimension_count_swa": None,
    "attention.scale": None,
    "logit_scale": None,
}
# YaRN constants llama.cpp uses when the file does not set them.
YARN_BETA_FAST, YARN_BETA_SLOW = 32.0, 1.0


def fail(msg):
    print("ref_llama.py: error: " + msg, file=sys.stderr)
    sys.exit(1)


# ---- reading the model ----------------------------------------------------------------------

REQUIRED = object()


def field(reader, key, default=REQUIRED):
    f = reader.fields.get(key)
    if f is None:
        if default is REQUIRED:
            fail(f"missing metadata key {key}")
        return default
    return f.contents()


def load_tensor(t):
    """A GGUF tensor as float64 in numpy order: GGUF dims [ne0, ne1] become shape (ne1, ne0)."""
    try:
        w = dequantize(t.data, t.tensor_type)
    except NotImplementedError:
        fail(f"{t.name}: gguf cannot dequantize type {t.tensor_type.name}")
    shape = tuple(int(d) for d in reversed(t.shape))
    return np.asarray(w, dtype=np.float64).reshape(shape)


def int8_blocks(x):
    """x rounded as 8-bit products see it: per block of 32, s = max|x| / 127 (in f32, as
    max|x| * f32(1/127)) and q = x / s (as x * f32(1 / s)) rounded half away from zero; s * q."""
    f32 = np.float32
    xb = np.asarray(x, dtype=f32).reshape(*x.shape[:-1], x.shape[-1] // 32, 32)
    s = np.abs(xb).max(axis=-1, keepdims=True) * f32(1 / 127)
    inv = np.divide(f32(1), s, out=np.zeros_like(s), where=s > 0)
    v = xb * inv
    q = np.trunc(v + np.where(v < 0, f32(-0.5), f32(0.5)))
    return (q.astype(np.float64) * s.astype(np.float64)).reshape(x.shape)


class Int8Products:
    """A matrix whose products take int8 activations (int8_blocks): x @ w.T, rows w[a:b]."""
    __array_ufunc__ = None  # x @ self.T comes to __rmatmul__

    def __init__(self, w, transposed=False):
        self.w, self.transposed = w, transposed
        self.shape = w.T.shape if transposed else w.shape

    def __getitem__(self, rows):
        return Int8Products(self.w[rows])

    @property
    def T(self):
        return Int8Products(self.w, not self.transposed)

    def __rmatmul__(self, x):
        return int8_blocks(x) @ (self.w.T if self.transposed else self.w)


def int8_products(t, w):
    """w, or Int8Products(w) where kiln takes 8-bit products with the matrix of tensor t."""
    q = t.tensor_type in (gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q8_0)
    return Int8Products(w) if q and w.ndim == 2 and w.shape[0] % 8 == 0 else w


def sliding_layers(arch, n_layer, window):
    """Which layers attend through the sliding window (none without a positive window)."""
    if not window or window <= 0:
        return [False] * n_layer
    if arch in ("llama", "phi3"):
        return [True] * n_layer
    if arch == "gemma2":
        return [il % 2 == 0 for il in range(n_layer)]
    if arch == "gemma3":
        return [il % 6 < 5 for il in range(n_layer)]
    return [False] * n_layer


class Model:
    def __init__(self, path, ctx=None):
        """ctx: the context size the engine is loaded with (None: the file's context_length);
        it picks a LongRoPE file's factor set."""
        try:
            r = gguf.GGUFReader(path)
        except (OSError, ValueError) as e:
            fail(f"cannot read {path} as GGUF: {e}")
        self.arch = arch = field(r, "general.architecture")
        if arch not in ARCHS:
            fail(f"architecture '{arch}' is not one of {sorted(ARCHS)}")
        spec = ARCHS[arch]
        self.rope_style = spec["rope"]
        self.gemma = spec.get("gemma", False)
        for key, ok in UNSUPPORTED_KEYS.items():
            val = field(r, f"{arch}.{key}", None)
            if val is not None and (ok is None or float(val) != ok):
                fail(f"metadata {arch}.{key} = {val} is not supported by this reference")
        self.n_embd = int(field(r, f"{arch}.embedding_length"))
        self.n_layer = int(field(r, f"{arch}.block_count"))
        self.n_head = int(field(r, f"{arch}.attention.head_count"))
        self.n_head_kv = int(field(r, f"{arch}.attention.head_count_kv", self.n_head))
        self.head_dim = int(field(r, f"{arch}.attention.key_length", self.n_embd // self.n_head))
        self.head_dim_v = int(field(r, f"{arch}.attention.value_length", self.head_dim))
        self.eps = float(field(r, f"{arch}.attention.layer_norm_rms_epsilon"))
        self.n_ctx = int(field(r, f"{arch}.context_length"))
        self.ctx = self.n_ctx if ctx is None else int(ctx)
        if self.ctx <= 0:
            fail(f"context size {self.ctx} is not positive")
        self.rope_base = float(field(r, f"{arch}.rope.freq_base", 10000.0))
        self.n_rot = int(field(r, f"{arch}.rope.dimension_count", self.head_dim))
        # gemma2 files without the keys get the model's own window and caps, as in llama.cpp
        g2 = arch == "gemma2"
        window = field(r, f"{arch}.attention.sliding_window", 4096 if g2 else None)
        self.window = int(window) if window is not None else None
        self.sliding = sliding_layers(arch, self.n_layer, self.window)
        cap = field(r, f"{arch}.attn_logit_softcapping", 50.0 if g2 else None)
        self.attn_cap = float(cap) if cap else None
        cap = field(r, f"{arch}.final_logit_softcapping", 30.0 if g2 else None)
        self.final_cap = float(cap) if cap else None
        # Gemma 2 27B (46 layers) and Gemma 3 27B (62) scale the scores by 1/sqrt(n_embd /
        # n_head) instead of 1/sqrt(hd_k), as llama.cpp does
        wide = (arch, self.n_layer) in (("gemma2", 46), ("gemma3", 62))
        self.score_scale = 1.0 / math.sqrt(self.n_embd / self.n_head if wide else self.head_dim)
        # Rope scaling as llama.cpp reads it: the type defaults to linear, the factor to 1 (0
        # stands for 1, as does the old key rope.scale_linear when the new one is absent).
        factor = field(r, f"{arch}.rope.scaling.factor", None)
        if factor is None:
            factor = field(r, f"{arch}.rope.scale_linear", 0.0)
        factor = float(factor) or 1.0
        scaling = field(r, f"{arch}.rope.scaling.type", "linear")
        if scaling == "none":
            factor = 1.0
        elif scaling not in ("linear", "yarn") and factor != 1.0:
            fail(f"rope scaling '{scaling}' is not supported by this reference")
        if scaling == "yarn" and factor < 1.0:
            fail(f"yarn rope scaling with factor {factor} < 1 is not supported")
        self.rope_scaling = scaling if factor != 1.0 else "none"
        self.rope_factor = factor
        self.n_ctx_orig = int(field(r, f"{arch}.rope.scaling.original_context_length",
                                    self.n_ctx))
        self.attn_factor = float(field(r, f"{arch}.rope.scaling.attn_factor", 1.0))
        if self.n_head % self.n_head_kv:
            fail(f"head_count {self.n_head} is not a multiple of head_count_kv {self.n_head_kv}")
        if self.n_rot % 2 or self.n_rot > self.head_dim:
            fail(f"rope dimension_count {self.n_rot} is odd or above head_dim {self.head_dim}")

        tensors = {t.name: t for t in r.tensors}
        longrope = [n for n in ("rope_factors_long.weight", "rope_factors_short.weight")
                    if n in tensors]
        if longrope and arch != "phi3":
            fail(f"{longrope[0]} (LongRoPE) is only supported in phi3 files")
        if longrope and "rope_freqs.weight" in tensors:
            fail(f"{longrope[0]} (LongRoPE) beside rope_freqs.weight is not supported")

        def get(name, shape, optional=False):
            t = tensors.get(name)
            if t is None:
                if optional:
                    return None
                fail(f"missing tensor {name}")
            w = load_tensor(t)
            if w.shape != shape:
                fail(f"{name}: shape {w.shape} (numpy order), expected {shape}")
            return int8_products(t, w)

        d, hd, hdv = self.n_embd, self.head_dim, self.head_dim_v
        nq, nk, nv = self.n_head * hd, self.n_head_kv * hd, self.n_head_kv * hdv
        t = tensors.get("token_embd.weight")
        if t is None:
            fail("missing tensor token_embd.weight")
        self.tok_embd = load_tensor(t)
        if self.tok_embd.ndim != 2 or self.tok_embd.shape[1] != d:
            fail(f"token_embd.weight: shape {self.tok_embd.shape}, expected (n_vocab, {d})")
        self.n_vocab = self.tok_embd.shape[0]
        v = self.n_vocab
        self.layers = []
        for i in range(self.n_layer):
            p = f"blk.{i}."
            n_ff_t = tensors.get(p + "ffn_down.weight")
            if n_ff_t is None:
                fail(f"missing tensor {p}ffn_down.weight")
            n_ff = int(n_ff_t.shape[0])
            L = {
                "attn_norm": get(p + "attn_norm.weight", (d,)),
                "wo": get(p + "attn_output.weight", (d, self.n_head * hdv)),
                "ffn_norm": get(p + "ffn_norm.weight", (d,)),
                "wd": get(p + "ffn_down.weight", (d, n_ff)),
            }
            if spec.get("fused"):
                wqkv = get(p + "attn_qkv.weight", (nq + nk + nv, d))
                L["wq"], L["wk"], L["wv"] = wqkv[:nq], wqkv[nq : nq + nk], wqkv[nq + nk :]
                wgu = get(p + "ffn_up.weight", (2 * n_ff, d))
                L["wg"], L["wu"] = wgu[:n_ff], wgu[n_ff:]
            else:
                L["wq"] = get(p + "attn_q.weight", (nq, d))
                L["wk"] = get(p + "attn_k.weight", (nk, d))
                L["wv"] = get(p + "attn_v.weight", (nv, d))
                L["wg"] = get(p + "ffn_gate.weight", (n_ff, d))
                L["wu"] = get(p + "ffn_up.weight", (n_ff, d))
            qkv_bias = spec.get("qkv_bias", False)
            for b, n, size in (("bq", "attn_q", nq), ("bk", "attn_k", nk), ("bv", "attn_v", nv)):
                L[b] = get(p + n + ".bias", (size,), optional=not qkv_bias)
            qk_norm = spec.get("qk_norm", False)
            L["q_norm"] = get(p + "attn_q_norm.weight", (hd,), optional=not qk_norm)
            L["k_norm"] = get(p + "attn_k_norm.weight", (hd,), optional=not qk_norm)
            post = spec.get("post_norm", False)
            L["post_attn"] = get(p + "post_attention_norm.weight", (d,), optional=not post)
            L["post_ffw"] = get(p + "post_ffw_norm.weight", (d,), optional=not post)
            self.layers.append(L)
        self.out_norm = get("output_norm.weight", (d,))
        self.out = get("output.weight", (v, d), optional=True)
        if self.out is None:
            self.out = int8_products(tensors["token_embd.weight"], self.tok_embd)
        self.rope_freqs = get("rope_freqs.weight", (self.n_rot // 2,), optional=True)
        self.rope_set = None
        if longrope:
            # llama.cpp (llama_model::get_rope_factors): long when the context per sequence
            # exceeds the original context, else short; a set the file lacks means no factors.
            self.rope_set = "long" if self.ctx > self.n_ctx_orig else "short"
            self.rope_freqs = get(f"rope_factors_{self.rope_set}.weight", (self.n_rot // 2,),
                                  optional=True)
        # Per layer: (inv_freq, mscale); the angle of pair i at position pos is pos * inv_freq[i]
        # and the rotated pairs are multiplied by mscale. gemma3's sliding layers use base
        # 10000 without scaling (attn_factor still applies); every other layer the file's base
        # and scaling.
        full = self.rope_table(self.rope_base, self.rope_scaling)
        local = self.rope_table(10000.0, "none") if arch == "gemma3" else full
        self.rope_tables = [local if s else full for s in self.sliding]
        self.vocab = field(r, "tokenizer.ggml.tokens", [])

    def rope_table(self, base, scaling):
        """(inv_freq, mscale) of one layer: inv_freq[i] = base^(-2i/n_rot) / ff[i] (ff:
        rope_freqs or the chosen LongRoPE set), times 1/factor (linear) or YaRN's blend of
        1/factor and 1 (yarn); mscale = rope.scaling.attn_factor (times YaRN's own)."""
        i = np.arange(self.n_rot // 2, dtype=np.float64)
        inv = base ** (-2.0 * i / self.n_rot)
        if self.rope_freqs is not None:
            inv = inv / self.rope_freqs
        af = self.attn_factor
        if scaling == "linear":
            return inv / self.rope_factor, af
        if scaling == "yarn":
            fs = 1.0 / self.rope_factor

            def corr_dim(beta):
                return self.n_rot * math.log(self.n_ctx_orig / (beta * 2 * math.pi)) / (
                    2 * math.log(base))

            low = max(0.0, math.floor(corr_dim(YARN_BETA_FAST)))
            high = min(self.n_rot - 1.0, math.ceil(corr_dim(YARN_BETA_SLOW)))
            ramp = 1.0 - np.clip((i - low) / max(0.001, high - low), 0.0, 1.0)
            return inv * (fs * (1.0 - ramp) + ramp), af * (1.0 + 0.1 * math.log(1.0 / fs))
        return inv, af

    # ---- the forward pass -------------------------------------------------------------------

    def rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos, table):
        """x: (n, heads, head_dim); pos: (n,). Rotates the first n_rot dims of every head."""
        inv_freq, mscale = table
        ang = pos[:, None].astype(np.float64) * inv_freq[None, :]  # (n, n_rot/2)
        cos = (np.cos(ang) * mscale)[:, None, :]
        sin = (np.sin(ang) * mscale)[:, None, :]
        out = x.copy()
        r = self.n_rot
        if self.rope_style == "normal":
            a, b = x[..., 0:r:2], x[..., 1:r:2]
            out[..., 0:r:2] = a * cos - b * sin
            out[..., 1:r:2] = a * sin + b * cos
        else:
            a, b = x[..., : r // 2], x[..., r // 2 : r]
            out[..., : r // 2] = a * cos - b * sin
            out[..., r // 2 : r] = a * sin + b * cos
        return out

    def new_cache(self, n_max):
        shape_k = (self.n_layer, n_max, self.n_head_kv, self.head_dim)
        shape_v = (self.n_layer, n_max, self.n_head_kv, self.head_dim_v)
        return np.zeros(shape_k), np.zeros(shape_v)

    def forward(self, tokens, pos0, cache):
        """Logits (n, n_vocab) of `tokens` placed at positions pos0.. after the cached ones."""
        n = len(tokens)
        kc, vc = cache
        pos = np.arange(pos0, pos0 + n)
        T = pos0 + n
        g = self.n_head // self.n_head_kv
        hd, hdv = self.head_dim, self.head_dim_v
        scale = self.score_scale
        # mask[i, t]: query at position pos0+i may not look at key position t > pos0+i; in a
        # sliding layer not at t <= pos0+i - window either.
        keys = np.arange(T)[None, :]
        causal = keys > pos[:, None]
        window = causal | (pos[:, None] - keys >= (self.window or 0))
        x = self.tok_embd[np.asarray(tokens)]  # (n, n_embd)
        if self.gemma:
            x = x * math.sqrt(self.n_embd)
        for li, L in enumerate(self.layers):
            h = self.rmsnorm(x, L["attn_norm"])
            q, k, v = h @ L["wq"].T, h @ L["wk"].T, h @ L["wv"].T
            if L["bq"] is not None:
                q, k, v = q + L["bq"], k + L["bk"], v + L["bv"]
            q = q.reshape(n, self.n_head, hd)
            k = k.reshape(n, self.n_head_kv, hd)
            if L["q_norm"] is not None:
                q, k = self.rmsnorm(q, L["q_norm"]), self.rmsnorm(k, L["k_norm"])
            table = self.rope_tables[li]
            q = self.rope(q, pos, table)
            kc[li, pos0:T] = self.rope(k, pos, table)
            vc[li, pos0:T] = v.reshape(n, self.n_head_kv, hdv)
            K, V = kc[li, :T], vc[li, :T]  # (T, n_head_kv, hd)
            qg = q.reshape(n, self.n_head_kv, g, hd)  # query head j = kv * g + gi
            s = np.einsum("nkgd,tkd->kgnt", qg, K) * scale
            if self.attn_cap:
                s = self.attn_cap * np.tanh(s / self.attn_cap)
            s = np.where(window if self.sliding[li] else causal, -np.inf, s)
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            o = np.einsum("kgnt,tkd->nkgd", s, V).reshape(n, self.n_head * hdv) @ L["wo"].T
            if L["post_attn"] is not None:
                o = self.rmsnorm(o, L["post_attn"])
            x = x + o
            h = self.rmsnorm(x, L["ffn_norm"])
            a = h @ L["wg"].T
            if self.gemma:
                a = 0.5 * a * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (a + 0.044715 * a**3)))
            else:
                a = a / (1.0 + np.exp(-a))
            f = (a * (h @ L["wu"].T)) @ L["wd"].T
            if L["post_ffw"] is not None:
                f = self.rmsnorm(f, L["post_ffw"])
            x = x + f
        logits = self.rmsnorm(x, self.out_norm) @ self.out.T
        if self.final_cap:
            logits = self.final_cap * np.tanh(logits / self.final_cap)
        return logits

    # ---- text, for --show ---------------------------------------------------------------------

    def decode(self, ids):
        """Byte-level BPE tokens back to text (GPT-2's byte-to-character table, inverted)."""
        bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
        cs, extra = bs[:], 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + extra)
                extra += 1
        inv = {chr(c): b for b, c in zip(bs, cs)}
        out = bytearray()
        for i in ids:
            tok = self.vocab[i] if i < len(self.vocab) else f"<{i}>"
            if all(ch in inv for ch in tok):
                out.extend(inv[ch] for ch in tok)
            else:
                out.extend(tok.encode())
        return out.decode("utf-8", errors="replace")


def parse_tokens(s):
    try:
        ids = [int(t) for t in s.split(",") if t.strip() != ""]
    except ValueError:
        fail(f"--tokens '{s}' is not a comma-separated list of integers")
    if not ids:
        fail("--tokens is empty")
    return ids


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--tokens", required=True, help="prompt token ids, comma-separated")
    ap.add_argument("--logits", required=True, help="output: float32 logits, n_tokens x n_vocab")
    ap.add_argument("--greedy", type=int, default=0, help="tokens to generate greedily")
    ap.add_argument("--ids", help="output: the generated ids, space-separated, then a line of "
                    "each step's top-2 logit gap")
    ap.add_argument("--ctx", type=int, help="the engine's context size (default: the file's "
                    "context_length); picks a LongRoPE file's factor set")
    ap.add_argument("--show", action="store_true", help="print the decoded text to stderr")
    args = ap.parse_args()
    tokens = parse_tokens(args.tokens)
    if args.greedy < 0:
        fail(f"--greedy {args.greedy} is negative")
    if args.greedy and not args.ids:
        fail("--greedy needs --ids OUT.txt")

    t0 = time.time()
    if args.ctx is not None and args.ctx <= 0:
        fail(f"--ctx {args.ctx} is not positive")
    m = Model(args.model, args.ctx)
    t1 = time.time()
    bad = [t for t in tokens if not 0 <= t < m.n_vocab]
    if bad:
        fail(f"token ids {bad} are outside the vocabulary [0, {m.n_vocab})")
    total = len(tokens) + args.greedy
    if total > m.ctx:
        fail(f"{len(tokens)} prompt + {args.greedy} generated tokens exceed context {m.ctx}")

    cache = m.new_cache(total)
    logits = m.forward(tokens, 0, cache)
    logits.astype("<f4").tofile(args.logits)

    gen, gaps, margin = [], [], (math.inf, -1)
    last = logits[-1]
    for step in range(args.greedy):
        nxt = int(np.argmax(last))  # the first maximum: ties go to the lowest id
        top2 = np.partition(last, -2)[-2:] if m.n_vocab > 1 else [last[0], -math.inf]
        gaps.append(float(top2[1] - top2[0]))
        margin = min(margin, (gaps[-1], step))
        gen.append(nxt)
        if step + 1 < args.greedy:
            last = m.forward([nxt], len(tokens) + step, cache)[-1]
    if args.ids:
        with open(args.ids, "w") as f:
            f.write(" ".join(str(i) for i in gen) + "\n")
            f.write(" ".join(f"{g:.9g}" for g in gaps) + "\n")  # top-2 logit gap of each step
    t2 = time.time()
    if args.greedy:
        print(f"ref_llama.py: smallest top-2 logit gap {margin[0]:.6g} at step {margin[1]}",
              file=sys.stderr)
    if args.show:
        print(f"ref_llama.py: load {t1 - t0:.2f} s, run {t2 - t1:.2f} s", file=sys.stderr)
        if m.rope_set:
            print(f"ref_llama.py: context {m.ctx}, original context {m.n_ctx_orig}: "
                  f"{m.rope_set} rope factors", file=sys.stderr)
        print("prompt: " + repr(m.decode(tokens)), file=sys.stderr)
        print("greedy: " + repr(m.decode(gen)), file=sys.stderr)


if __name__ == "__main__":
    main()
