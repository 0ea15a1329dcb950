#!/usr/bin/env python3
"""ref_llama.py: the independent reference forward pass for LLaMA-family GGUF models
(general.architecture `llama` or `qwen2`), written with numpy and the `gguf` package only.

  ref_llama.py MODEL.gguf --tokens 1,2,3 --logits OUT.f32 [--greedy N --ids OUT.txt] [--show]

Writes the float32 logits of every prompt position to OUT.f32 (n_tokens x n_vocab, row-major,
raw little-endian). With --greedy N it then continues greedily for N tokens (argmax over the
float64 logits, ties to the lowest id, no stop at end-of-sequence) and writes the N generated ids,
space-separated, to OUT.txt; the smallest gap between the two best logits over those steps is
printed to stderr, so a test can tell whether its float32 greedy run may legitimately differ.
--show prints the prompt and continuation decoded through the GGUF vocabulary (byte-level BPE).

The GGUF file is read with gguf.GGUFReader and every weight is dequantized with
gguf.quants.dequantize, then widened to float64: all arithmetic is float64. The prompt runs as
one batch; generated tokens run one at a time against a key/value cache.

Semantics (those of llama.cpp for these architectures):
  x = token_embd[tokens]; per layer: x += Wo @ attn(rope(Wq h + bq), rope(Wk h + bk), Wv h + bv)
  with h = rmsnorm(x) * attn_norm, then x += Wdown (silu(Wgate h) * Wup h) with h = rmsnorm(x) *
  ffn_norm; logits = Wout (rmsnorm(x) * output_norm), Wout = output.weight or token_embd.
  rmsnorm(x) = x / sqrt(mean(x^2) + eps). Attention is causal softmax with scale 1/sqrt(head_dim);
  query head j reads key/value head j // (n_head / n_head_kv). RoPE rotates the first n_rot dims
  of each head by angle pos * base^(-2i/n_rot) / factor_i (factor_i from rope_freqs.weight, 1 when
  absent; times 1/scale for linear rope scaling); `llama` pairs (x[2i], x[2i+1]), `qwen2` (NEOX)
  pairs (x[i], x[i + n_rot/2]). The biases bq, bk, bv exist for qwen2 only.

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

ROPE_STYLE = {"llama": "normal", "qwen2": "neox"}


def fail(msg):
    print("ref_llama.py: error: " + msg, file=sys.stderr)
    sys.exit(1)


# ---- reading the model ----------------------------------------------------------------------


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        if default is None:
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


class Model:
    def __init__(self, path):
        try:
            r = gguf.GGUFReader(path)
        except (OSError, ValueError) as e:
            fail(f"cannot read {path} as GGUF: {e}")
        self.arch = arch = field(r, "general.architecture")
        if arch not in ROPE_STYLE:
            fail(f"architecture '{arch}' is not one of {sorted(ROPE_STYLE)}")
        self.rope_style = ROPE_STYLE[arch]
        self.n_embd = int(field(r, f"{arch}.embedding_length"))
        self.n_layer = int(field(r, f"{arch}.block_count"))
        self.n_head = int(field(r, f"{arch}.attention.head_count"))
        self.n_head_kv = int(field(r, f"{arch}.attention.head_count_kv", self.n_head))
        self.head_dim = int(field(r, f"{arch}.attention.key_length", self.n_embd // self.n_head))
        self.head_dim_v = int(field(r, f"{arch}.attention.value_length", self.head_dim))
        self.eps = float(field(r, f"{arch}.attention.layer_norm_rms_epsilon"))
        self.n_ctx = int(field(r, f"{arch}.context_length"))
        self.rope_base = float(field(r, f"{arch}.rope.freq_base", 10000.0))
        self.n_rot = int(field(r, f"{arch}.rope.dimension_count", self.head_dim))
        scaling = field(r, f"{arch}.rope.scaling.type", "none")
        factor = float(field(r, f"{arch}.rope.scaling.factor", 0.0))
        if scaling not in ("none", "linear") and factor not in (0.0, 1.0):
            fail(f"rope scaling '{scaling}' is not supported by this reference")
        self.freq_scale = 1.0 / factor if scaling == "linear" and factor > 0 else 1.0
        if self.n_head % self.n_head_kv:
            fail(f"head_count {self.n_head} is not a multiple of head_count_kv {self.n_head_kv}")
        if self.n_rot % 2 or self.n_rot > self.head_dim:
            fail(f"rope dimension_count {self.n_rot} is odd or above head_dim {self.head_dim}")

        tensors = {t.name: t for t in r.tensors}

        def get(name, shape, optional=False):
            t = tensors.get(name)
            if t is None:
                if optional:
                    return None
                fail(f"missing tensor {name}")
            w = load_tensor(t)
            if w.shape != shape:
                fail(f"{name}: shape {w.shape} (numpy order), expected {shape}")
            return w

        d, hd, hdv = self.n_embd, self.head_dim, self.head_dim_v
        t = tensors.get("token_embd.weight")
        if t is None:
            fail("missing tensor token_embd.weight")
        self.tok_embd = load_tensor(t)
        if self.tok_embd.ndim != 2 or self.tok_embd.shape[1] != d:
            fail(f"token_embd.weight: shape {self.tok_embd.shape}, expected (n_vocab, {d})")
        self.n_vocab = self.tok_embd.shape[0]
        v = self.n_vocab
        qkv_bias = arch == "qwen2"
        self.layers = []
        for i in range(self.n_layer):
            p = f"blk.{i}."
            n_ff_t = tensors.get(p + "ffn_gate.weight")
            if n_ff_t is None:
                fail(f"missing tensor {p}ffn_gate.weight")
            n_ff = int(n_ff_t.shape[1])
            L = {
                "attn_norm": get(p + "attn_norm.weight", (d,)),
                "wq": get(p + "attn_q.weight", (self.n_head * hd, d)),
                "wk": get(p + "attn_k.weight", (self.n_head_kv * hd, d)),
                "wv": get(p + "attn_v.weight", (self.n_head_kv * hdv, d)),
                "wo": get(p + "attn_output.weight", (d, self.n_head * hdv)),
                "ffn_norm": get(p + "ffn_norm.weight", (d,)),
                "wg": get(p + "ffn_gate.weight", (n_ff, d)),
                "wu": get(p + "ffn_up.weight", (n_ff, d)),
                "wd": get(p + "ffn_down.weight", (d, n_ff)),
            }
            for b, n in (("bq", "attn_q"), ("bk", "attn_k"), ("bv", "attn_v")):
                L[b] = get(p + n + ".bias", (L["w" + b[1]].shape[0],), optional=not qkv_bias)
            self.layers.append(L)
        self.out_norm = get("output_norm.weight", (d,))
        self.out = get("output.weight", (v, d), optional=True)
        if self.out is None:
            self.out = self.tok_embd
        ff = get("rope_freqs.weight", (self.n_rot // 2,), optional=True)
        # inv_freq[i] = base^(-2i/n_rot) / factor_i * freq_scale: the angle per position.
        i = np.arange(self.n_rot // 2, dtype=np.float64)
        self.inv_freq = self.rope_base ** (-2.0 * i / self.n_rot) * self.freq_scale
        if ff is not None:
            self.inv_freq = self.inv_freq / ff
        self.vocab = field(r, "tokenizer.ggml.tokens", [])

    # ---- the forward pass -------------------------------------------------------------------

    def rmsnorm(self, x, w):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * w

    def rope(self, x, pos):
        """x: (n, heads, head_dim); pos: (n,). Rotates the first n_rot dims of every head."""
        ang = pos[:, None].astype(np.float64) * self.inv_freq[None, :]  # (n, n_rot/2)
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
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
        scale = 1.0 / math.sqrt(hd)
        # mask[i, t]: query at position pos0+i may not look at key position t > pos0+i.
        mask = np.arange(T)[None, :] > pos[:, None]
        x = self.tok_embd[np.asarray(tokens)]  # (n, n_embd)
        for li, L in enumerate(self.layers):
            h = self.rmsnorm(x, L["attn_norm"])
            q, k, v = h @ L["wq"].T, h @ L["wk"].T, h @ L["wv"].T
            if L["bq"] is not None:
                q, k, v = q + L["bq"], k + L["bk"], v + L["bv"]
            q = self.rope(q.reshape(n, self.n_head, hd), pos)
            kc[li, pos0:T] = self.rope(k.reshape(n, self.n_head_kv, hd), pos)
            vc[li, pos0:T] = v.reshape(n, self.n_head_kv, hdv)
            K, V = kc[li, :T], vc[li, :T]  # (T, n_head_kv, hd)
            qg = q.reshape(n, self.n_head_kv, g, hd)  # query head j = kv * g + gi
            s = np.einsum("nkgd,tkd->kgnt", qg, K) * scale
            s = np.where(mask, -np.inf, s)
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            o = np.einsum("kgnt,tkd->nkgd", s, V).reshape(n, self.n_head * hdv)
            x = x + o @ L["wo"].T
            h = self.rmsnorm(x, L["ffn_norm"])
            a = h @ L["wg"].T
            x = x + ((a / (1.0 + np.exp(-a))) * (h @ L["wu"].T)) @ L["wd"].T
        return self.rmsnorm(x, self.out_norm) @ self.out.T

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
    ap.add_argument("--ids", help="output: the generated ids, space-separated")
    ap.add_argument("--show", action="store_true", help="print the decoded text to stderr")
    args = ap.parse_args()
    tokens = parse_tokens(args.tokens)
    if args.greedy < 0:
        fail(f"--greedy {args.greedy} is negative")
    if args.greedy and not args.ids:
        fail("--greedy needs --ids OUT.txt")

    t0 = time.time()
    m = Model(args.model)
    t1 = time.time()
    bad = [t for t in tokens if not 0 <= t < m.n_vocab]
    if bad:
        fail(f"token ids {bad} are outside the vocabulary [0, {m.n_vocab})")
    total = len(tokens) + args.greedy
    if total > m.n_ctx:
        fail(f"{len(tokens)} prompt + {args.greedy} generated tokens exceed context {m.n_ctx}")

    cache = m.new_cache(total)
    logits = m.forward(tokens, 0, cache)
    logits.astype("<f4").tofile(args.logits)

    gen, margin = [], (math.inf, -1)
    last = logits[-1]
    for step in range(args.greedy):
        nxt = int(np.argmax(last))  # the first maximum: ties go to the lowest id
        top2 = np.partition(last, -2)[-2:] if m.n_vocab > 1 else [last[0], -math.inf]
        margin = min(margin, (float(top2[1] - top2[0]), step))
        gen.append(nxt)
        if step + 1 < args.greedy:
            last = m.forward([nxt], len(tokens) + step, cache)[-1]
    if args.ids:
        with open(args.ids, "w") as f:
            f.write(" ".join(str(i) for i in gen) + "\n")
    t2 = time.time()
    if args.greedy:
        print(f"ref_llama.py: smallest top-2 logit gap {margin[0]:.6g} at step {margin[1]}",
              file=sys.stderr)
    if args.show:
        print(f"ref_llama.py: load {t1 - t0:.2f} s, run {t2 - t1:.2f} s", file=sys.stderr)
        print("prompt: " + repr(m.decode(tokens)), file=sys.stderr)
        print("greedy: " + repr(m.decode(gen)), file=sys.stderr)


if __name__ == "__main__":
    main()
