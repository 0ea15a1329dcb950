/* llama.c — decoder-only transformers (the LLaMA family and its relatives: llama, qwen2,
 * qwen3, gemma, gemma2, gemma3, phi3), each described by a row of a table that one forward
 * function reads, over the Tensor API: weights
 * are lazy dequantizing views of the mapped GGUF file, one forward builds the graph of a chunk
 * of tokens of one or several sequences, and the KV cache is a pair of buffers per layer (a
 * block of rows per sequence) that new rows are copied into. Shapes depend only on the number
 * of sequences, the chunk length and a bucketed cache length, and every per-call value (token
 * ids, positions, which sequences) arrives as data, so conversations reuse a small set of
 * kernels. */
#include "internal.h"

#include <dirent.h>
#include <math.h>
#include <unistd.h>

typedef kiln_tensor T;

enum { ROPE_NORM, ROPE_NEOX };
enum { ACT_SILU, ACT_GELU };

/* What distinguishes an architecture. Everything else (sizes, head dims, rope base and
 * scaling, the window, softcaps) comes from the file's metadata. */
typedef struct {
  const char *name;
  int rope;        /* ROPE_NORM: pairs (x[2i], x[2i+1]); ROPE_NEOX: (x[i], x[i + n_rot/2]) */
  int act;         /* of the FFN's gate: silu or gelu (tanh approximation) */
  bool qkv_bias;   /* attn_q/k/v.bias */
  bool qk_norm;    /* attn_q_norm, attn_k_norm: RMSNorm of each head of q and k before rope */
  bool post_norms; /* post_attention_norm, post_ffw_norm: of each block's output, before the add */
  bool embd_scale; /* the embedding rows times sqrt(n_embd) */
  bool fused;      /* attn_qkv holds Q, K, V; ffn_up holds the gate and the up rows */
  bool window;     /* reads attention.sliding_window: the layers below slide when it is set */
  int swa_every;   /* 0: every layer slides; k: layer il slides when il % k < k - 1 */
  double swa_base; /* the rope base of sliding layers (no rope scaling there); 0: the file's */
  /* what files without the keys get: the window and the attention and final softcaps */
  int64_t swa0;
  double attn_cap0, final_cap0;
  int wide_layers; /* the layer count of the size whose scores are scaled by 1/sqrt(n_embd /
                      n_head), not 1/sqrt(key length) (Gemma 2 and 3 27B); 0: none */
} arch_desc;

static const arch_desc archs[] = {
    {.name = "llama", .rope = ROPE_NORM, .act = ACT_SILU, .window = true},
    {.name = "qwen2", .rope = ROPE_NEOX, .act = ACT_SILU, .qkv_bias = true},
    {.name = "qwen3", .rope = ROPE_NEOX, .act = ACT_SILU, .qk_norm = true},
    {.name = "gemma", .rope = ROPE_NEOX, .act = ACT_GELU, .embd_scale = true},
    {.name = "gemma2",
     .rope = ROPE_NEOX,
     .act = ACT_GELU,
     .post_norms = true,
     .embd_scale = true,
     .window = true,
     .swa_every = 2,
     .swa0 = 4096,
     .attn_cap0 = 50.0,
     .final_cap0 = 30.0,
     .wide_layers = 46},
    {.name = "gemma3",
     .rope = ROPE_NEOX,
     .act = ACT_GELU,
     .qk_norm = true,
     .post_norms = true,
     .embd_scale = true,
     .window = true,
     .swa_every = 6,
     .swa_base = 10000.0,
     .wide_layers = 62},
    {.name = "phi3", .rope = ROPE_NEOX, .act = ACT_SILU, .fused = true, .window = true},
};
#define NARCHS ((int)(sizeof archs / sizeof archs[0]))
static const arch_desc *find_arch(const char *name) {
  for (int i = 0; name && i < NARCHS; i++)
    if (!strcmp(archs[i].name, name)) return &archs[i];
  return NULL;
}
/* The cached keys a chunk attends to are padded up to a bucket: a multiple of 128, or of a
 * quarter of the length's power of two once that is larger, so at most a quarter of the keys
 * read are padding and a 8192-token context has 20 buckets, each compiled once. */
static int64_t cache_bucket(int64_t p0, int64_t n_ctx) {
  int64_t g = 128;
  while (g * 8 <= p0)
    g *= 2;
  int64_t b = (p0 + g - 1) / g * g;
  return b < n_ctx ? b : n_ctx; /* any length from p0 to n_ctx is valid: the mask hides the rest */
}

typedef struct {
  T *attn_norm, *wq, *wk, *wv, *bq, *bk, *bv, *wo; /* w*: (out, in) f32 views */
  T *q_norm, *k_norm, *post_attn, *post_ffn;       /* NULL where the architecture has none */
  T *ffn_norm, *wg, *wu, *wd;
  T *wqkv, *wgu; /* fused matrices (wq, wk, wv and wg, wu are row ranges of them) */
  T *kc, *vc;    /* KV cache: (n_seq * n_ctx, n_head_kv * hd_k or hd_v) f32 buffers, n_ctx rows
                    per sequence */
  bool swa;      /* a sliding-window layer */
} layer;

struct kiln_llm {
  kiln_gguf *g;
  const arch_desc *arch;
  int64_t n_vocab, n_embd, n_layer, n_head, n_head_kv, hd_k, hd_v, n_ff, n_rot, n_ctx, n_ctx_train;
  int64_t n_swa; /* the sliding window (0: none) */
  double eps, rope_base, rope_base_swa, rope_attn, attn_softcap, final_softcap; /* 0: no cap */
  int rope_scaling;                   /* RS_NONE, RS_LINEAR, RS_YARN */
  double rope_factor, rope_mscale[2]; /* mscale: of cos and sin, global [0] and sliding [1] */
  int64_t rope_orig_ctx;
  double attn_scale; /* of the scores */
  const kiln_gguf_tensor *tok_embd;
  T *embd; /* (n_vocab, n_embd) f32 view of token_embd: its rows are taken by token id */
  T *out_norm, *output;
  T *inv_freq[2]; /* (n_rot / 2) angles per position: global layers [0], sliding ones [1] */
  layer *layers;
  int n_seq;          /* sequences, each with n_ctx rows of cache */
  int chunk_seq;      /* the one sequence of the prompt chunk being built, else -1 */
  int64_t *pos;       /* [n_seq] tokens in each sequence's cache */
  float *pad_logits;  /* (n_seq, n_vocab): a batched decode's, when some rows are padding */
  struct step *steps; /* compiled and captured chunk shapes */
  /* a random model (no file: g is NULL): its weights' ggml type, the next seed, their bytes */
  int rtype;
  uint64_t seed;
  double weight_bytes;
};

/* ---- loading ---------------------------------------------------------------------------- */
static bool hp_int(const kiln_gguf *g, const char *arch, const char *key, int64_t *out,
                   bool required) {
  char full[128];
  snprintf(full, sizeof full, "%s.%s", arch, key);
  if (kiln_gguf_get_int(g, full, out)) return true;
  if (required) kn_err("llm: model metadata lacks '%s'", full);
  return false;
}
static double hp_float(const kiln_gguf *g, const char *arch, const char *key, double dflt) {
  char full[128];
  double v;
  snprintf(full, sizeof full, "%s.%s", arch, key);
  return kiln_gguf_get_float(g, full, &v) ? v : dflt;
}

/* A random weight of a random model, built on the device as a file would store it: (d0, d1)
 * in type m->rtype (F16, or Q4_0 blocks with a fixed scale and random nibbles), values about
 * N(0, 0.02^2); a vector (d1 = 0) is ones. The f32 view as weight() gives it (runs layout for
 * matrices when runs). */
static T *random_weight(kiln_llm *m, int64_t d0, int64_t d1, bool runs) {
  if (!d1) return kiln_ones(KILN_F32, 1, &d0);
  kiln_scope_begin(); /* what made the weight (the generator's inputs) goes when it is built */
  T *raw;
  if (m->rtype == 1) { /* F16 */
    raw = kiln_cast(kiln_binary_s(KILN_MUL, kiln_randn(2, (int64_t[]){d0, d1}, m->seed++), 0.02),
                    KILN_F16);
  } else { /* Q4_0: 18-byte blocks of 32: an f16 scale, then 16 bytes of two 4-bit values each */
    int64_t nb = d1 / 32, bs[3] = {d0, nb, 1};
    /* the scale's f16 bits as two bytes, little end first; q - 8 for q uniform in 0..15 has a
     * std of 4.6 */
    T *d = kiln_bitcast(kiln_cast(kiln_full(KILN_F32, 3, bs, 0.02 / 4.6), KILN_F16), KILN_U16);
    T *lo = kiln_cast(kiln_binary_s(KILN_AND, d, 255), KILN_U8),
      *hi = kiln_cast(kiln_binary_s(KILN_SHR, d, 8), KILN_U8);
    T *q = kiln_cast(
        kiln_binary_s(KILN_MUL, kiln_rand(3, (int64_t[]){d0, nb, 16}, m->seed++), 255.99), KILN_U8);
    raw = kiln_cat(3, (T *[]){lo, hi, q}, 2);
  }
  raw = kiln_contiguous(raw);
  if (kiln_realize(raw) < 0) {
    kiln_scope_end();
    return NULL;
  }
  kn_mark_weights(raw); /* read in place by every step, like a file's weights */
  m->weight_bytes += (double)kiln_numel(raw) * (double)kiln_dtype_size(kiln_dtype_of(raw));
  kiln_keep(raw);
  kiln_scope_end();
  return kn_ggml_values(raw, m->rtype, d0, d1, runs);
}

/* Whether a matrix of d1 columns is read as runs of 16, (rows, blocks, runs, 16): on a CPU,
 * whose threads each walk whole rows with a run as vector lanes. Devices with work-groups get
 * plain rows, (rows, d1): the work-items of a group share a row (element j * group + lid), so
 * neighbours read neighbouring bytes. */
static bool as_runs(int64_t d1) {
  return d1 && d1 % 16 == 0 && kn_device_get(kn_device_default())->caps.pool;
}

/* A weight that must exist with the given kiln-order shape (ndim 1 or 2), persisted. */
static T *weight(kiln_llm *m, const char *name, int64_t d0, int64_t d1, bool optional) {
  if (!m->g) { /* a random model: its matrices and norms, no biases */
    T *w = optional && strstr(name, "bias") ? NULL : random_weight(m, d0, d1, as_runs(d1));
    return w ? kiln_persist(w) : NULL;
  }
  const kiln_gguf_tensor *t = kiln_gguf_find_tensor(m->g, name);
  if (!t) {
    if (!optional) kn_err("llm: model has no tensor '%s'", name);
    return NULL;
  }
  bool ok =
      d1 ? t->ndim == 2 && t->dims[0] == d1 && t->dims[1] == d0 : t->ndim == 1 && t->dims[0] == d0;
  if (!ok) {
    char want[64];
    if (d1)
      snprintf(want, sizeof want, "[%lld, %lld]", (long long)d1, (long long)d0);
    else
      snprintf(want, sizeof want, "[%lld]", (long long)d0);
    kn_err("llm: tensor '%s' has GGUF dims [%lld%s%lld], expected %s", name, (long long)t->dims[0],
           t->ndim > 1 ? ", " : "", t->ndim > 1 ? (long long)t->dims[1] : 0LL, want);
    return NULL;
  }
  T *w = d1 ? kn_gguf_words(m->g, name) : NULL; /* Q4_1, Q8_0: 8-bit products */
  if (!w) w = as_runs(d1) ? kiln_gguf_weight_runs(m->g, name) : kiln_gguf_weight(m->g, name);
  return w ? kiln_persist(w) : NULL;
}

/* rows [r0, r1) of a (rows, ...) weight */
static T *row_range(T *w, int64_t r0, int64_t r1) {
  if (w && kiln_dtype_of(w) == KILN_U32) { /* 8-bit product words: groups of 8 rows */
    if (r0 % 8 || r1 % 8) {
      kn_err("llm: rows %lld..%lld of a fused 8-bit weight do not start on a group of 8",
             (long long)r0, (long long)r1);
      return NULL;
    }
    r0 /= 8, r1 /= 8;
  }
  return w ? kiln_persist(kiln_slice(w, 0, r0, r1, 1)) : NULL;
}

static int load_layers(kiln_llm *m) {
  const arch_desc *a = m->arch;
  int64_t D = m->n_embd, qd = m->n_head * m->hd_k, kd = m->n_head_kv * m->hd_k,
          vd = m->n_head_kv * m->hd_v, od = m->n_head * m->hd_v, F = m->n_ff;
  for (int64_t i = 0; i < m->n_layer; i++) {
    layer *L = &m->layers[i];
    char nm[96];
#define W(field, suffix, d0, d1, opt)                                                              \
  snprintf(nm, sizeof nm, "blk.%lld.%s", (long long)i, suffix);                                    \
  L->field = weight(m, nm, d0, d1, opt);                                                           \
  if (!L->field && !(opt)) return -1;
    W(attn_norm, "attn_norm.weight", D, 0, false);
    if (a->fused) {
      W(wqkv, "attn_qkv.weight", qd + 2 * kd, D, false);
      if (m->hd_v != m->hd_k) {
        kn_err("llm: attn_qkv.weight needs the key and value lengths equal");
        return -1;
      }
      L->wq = row_range(L->wqkv, 0, qd), L->wk = row_range(L->wqkv, qd, qd + kd);
      L->wv = row_range(L->wqkv, qd + kd, qd + 2 * kd);
    } else {
      W(wq, "attn_q.weight", qd, D, false);
      W(wk, "attn_k.weight", kd, D, false);
      W(wv, "attn_v.weight", vd, D, false);
    }
    /* biases: required where the architecture has them, used where a file has them */
    W(bq, "attn_q.bias", qd, 0, !a->qkv_bias);
    W(bk, "attn_k.bias", kd, 0, !a->qkv_bias);
    W(bv, "attn_v.bias", vd, 0, !a->qkv_bias);
    if (a->qk_norm) {
      W(q_norm, "attn_q_norm.weight", m->hd_k, 0, false);
      W(k_norm, "attn_k_norm.weight", m->hd_k, 0, false);
    }
    W(wo, "attn_output.weight", D, od, false);
    if (a->post_norms) {
      W(post_attn, "post_attention_norm.weight", D, 0, false);
    }
    W(ffn_norm, "ffn_norm.weight", D, 0, false);
    if (a->fused) {
      W(wgu, "ffn_up.weight", 2 * F, D, false);
      L->wg = row_range(L->wgu, 0, F), L->wu = row_range(L->wgu, F, 2 * F);
    } else {
      W(wg, "ffn_gate.weight", F, D, false);
      W(wu, "ffn_up.weight", F, D, false);
    }
    W(wd, "ffn_down.weight", D, F, false);
    if (a->post_norms) {
      W(post_ffn, "post_ffw_norm.weight", D, 0, false);
    }
#undef W
    if (!L->wq || !L->wk || !L->wv || !L->wg || !L->wu) return -1;
    L->swa = m->n_swa > 0 && (a->swa_every == 0 || i % a->swa_every < a->swa_every - 1);
    int64_t rows = m->n_seq * m->n_ctx;
    L->kc = kiln_persist(kiln_empty(KILN_F32, 2, (int64_t[]){rows, kd}));
    L->vc = kiln_persist(kiln_empty(KILN_F32, 2, (int64_t[]){rows, vd}));
    if (!L->kc || !L->vc) return -1;
  }
  return 0;
}

bool kiln_llm_arch_supported(const char *arch) { return find_arch(arch) != NULL; }

enum { RS_NONE, RS_LINEAR, RS_YARN };
static int check_hparams(kiln_llm *m);
static int load_rope_dims(kiln_llm *m);
static int load_hparams(kiln_llm *m) {
  const char *arch = kiln_gguf_get_str(m->g, "general.architecture");
  if (!arch) {
    kn_err("llm: model metadata lacks 'general.architecture'");
    return -1;
  }
  m->arch = find_arch(arch);
  if (!m->arch) {
    kn_sbuf names = {0};
    for (int i = 0; i < NARCHS; i++)
      kn_sbuf_printf(&names, "%s%s", i ? ", " : "", archs[i].name);
    kn_err("llm: architecture '%.64s' is not supported (these are: %s)", arch, names.s);
    free(names.s);
    return -1;
  }
  if (!hp_int(m->g, arch, "embedding_length", &m->n_embd, true) ||
      !hp_int(m->g, arch, "block_count", &m->n_layer, true) ||
      !hp_int(m->g, arch, "feed_forward_length", &m->n_ff, true) ||
      !hp_int(m->g, arch, "attention.head_count", &m->n_head, true))
    return -1;
  if (!hp_int(m->g, arch, "attention.head_count_kv", &m->n_head_kv, false))
    m->n_head_kv = m->n_head;
  if (!hp_int(m->g, arch, "attention.key_length", &m->hd_k, false)) m->hd_k = -1; /* absent */
  if (!hp_int(m->g, arch, "attention.value_length", &m->hd_v, false)) m->hd_v = -1;
  if (!hp_int(m->g, arch, "context_length", &m->n_ctx_train, false)) m->n_ctx_train = 2048;
  if (!hp_int(m->g, arch, "attention.sliding_window", &m->n_swa, false)) m->n_swa = m->arch->swa0;
  if (!m->arch->window) m->n_swa = 0;
  m->eps = hp_float(m->g, arch, "attention.layer_norm_rms_epsilon", 1e-5);
  m->rope_base = hp_float(m->g, arch, "rope.freq_base", 10000.0);
  m->attn_softcap = hp_float(m->g, arch, "attn_logit_softcapping", m->arch->attn_cap0);
  m->final_softcap = hp_float(m->g, arch, "final_logit_softcapping", m->arch->final_cap0);
  /* rope scaling: none, linear (positions / factor) or YaRN; a factor without a type (or the
   * older rope.scale_linear) is linear */
  char key[128];
  snprintf(key, sizeof key, "%s.rope.scaling.type", arch);
  const char *rs = kiln_gguf_get_str(m->g, key);
  m->rope_factor =
      hp_float(m->g, arch, "rope.scaling.factor", hp_float(m->g, arch, "rope.scale_linear", 1.0));
  if (m->rope_factor == 0.0) m->rope_factor = 1.0; /* 0 stands for 1, as in llama.cpp */
  if (!rs && m->rope_factor != 1.0) rs = "linear";
  if (!hp_int(m->g, arch, "rope.scaling.original_context_length", &m->rope_orig_ctx, false))
    m->rope_orig_ctx = m->n_ctx_train;
  m->rope_scaling = !rs || !strcmp(rs, "none") ? RS_NONE
                    : !strcmp(rs, "linear")    ? RS_LINEAR
                    : !strcmp(rs, "yarn")      ? RS_YARN
                                               : -1;
  if (m->rope_scaling < 0) {
    kn_err("llm: rope scaling '%.32s' is not supported (none, linear and yarn are)", rs);
    return -1;
  }
  if (m->rope_scaling == RS_NONE || m->rope_factor == 1.0) m->rope_scaling = RS_NONE;
  /* YaRN's other knobs change the result; kiln implements their defaults only */
  if (m->rope_scaling == RS_YARN &&
      (hp_float(m->g, arch, "rope.scaling.yarn_log_multiplier", 0.0) != 0.0 ||
       m->rope_factor < 1.0)) {
    kn_err("llm: YaRN rope scaling with a factor below 1 or a log multiplier is not supported");
    return -1;
  }
  /* cos and sin are multiplied by it (LongRoPE files carry it) */
  m->rope_attn = hp_float(m->g, arch, "rope.scaling.attn_factor", 1.0);
  /* the rope base of sliding layers where the architecture gives them their own */
  m->rope_base_swa = hp_float(m->g, arch, "rope.freq_base_swa", m->arch->swa_base);
  return check_hparams(m) < 0 ? -1 : load_rope_dims(m);
}

/* The sizes every model must have consistent; sets the head dims where the file leaves them
 * (< 0: absent). */
static int check_hparams(kiln_llm *m) {
  bool bad = m->n_embd < 1 || m->n_embd > (1 << 20) || m->n_layer < 1 || m->n_layer > 4096 ||
             m->n_ff < 1 || m->n_ff > (1 << 22) || m->n_head < 1 || m->n_head > 4096 ||
             m->n_head_kv < 1 || m->n_head % m->n_head_kv || (m->hd_k < 0 && m->n_embd % m->n_head);
  if (bad) {
    kn_err("llm: inconsistent hyperparameters: n_embd %lld, n_layer %lld, n_ff %lld, n_head %lld, "
           "n_head_kv %lld",
           (long long)m->n_embd, (long long)m->n_layer, (long long)m->n_ff, (long long)m->n_head,
           (long long)m->n_head_kv);
    return -1;
  }
  if (m->hd_k < 0) m->hd_k = m->n_embd / m->n_head;
  if (m->hd_v < 0) m->hd_v = m->hd_k;
  bool wide = m->arch->wide_layers && m->n_layer == m->arch->wide_layers;
  m->attn_scale = 1.0 / sqrt(wide ? (double)m->n_embd / (double)m->n_head : (double)m->hd_k);
  if (m->hd_k < 1 || m->hd_k > 4096 || m->hd_v < 1 || m->hd_v > 4096) {
    kn_err("llm: attention key length %lld, value length %lld (1 to 4096)", (long long)m->hd_k,
           (long long)m->hd_v);
    return -1;
  }
  if (m->n_ctx_train < 1 || m->n_ctx_train > (1 << 24)) {
    kn_err("llm: context length %lld (1 to %d)", (long long)m->n_ctx_train, 1 << 24);
    return -1;
  }
  if (m->n_swa < 0 || m->n_swa > (1 << 24)) {
    kn_err("llm: sliding window %lld (1 to %d)", (long long)m->n_swa, 1 << 24);
    return -1;
  }
  const struct {
    const char *what;
    double v, lo; /* allowed: lo <= v < 1e30 */
  } reals[] = {{"attention softcap", m->attn_softcap, 0},
               {"final logit softcap", m->final_softcap, 0},
               {"norm epsilon", m->eps, 1e-30},
               {"rope base", m->rope_base, 1e-30},
               {"rope scaling factor", m->rope_factor, 1e-30},
               {"sliding layers' rope base", m->arch->swa_base ? m->rope_base_swa : 1, 1e-30},
               {"rope attention factor", m->rope_attn, 1e-30}};
  for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++)
    if (!(reals[i].v >= reals[i].lo && reals[i].v < 1e30)) {
      kn_err("llm: %s %g is out of range", reals[i].what, reals[i].v);
      return -1;
    }
  if (m->rope_scaling == RS_YARN && (m->rope_orig_ctx < 1 || m->rope_orig_ctx > (1 << 24))) {
    kn_err("llm: YaRN original context length %lld (1 to %d)", (long long)m->rope_orig_ctx,
           1 << 24);
    return -1;
  }
  return 0;
}

/* The cache rows of each sequence: as asked (at most the trained length), or else the trained
 * length cut to what a quarter of the machine's memory holds (a 1M-token model run without
 * --ctx gets a cache that fits, not a failed allocation). */
static int64_t pick_ctx(const kiln_llm *m, int64_t asked, int n_seq) {
  double row = 4.0 * (double)(m->n_layer * m->n_head_kv * (m->hd_k + m->hd_v)) * n_seq; /* K, V */
  long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  double mem = pages > 0 && page > 0 ? (double)pages * (double)page : 8e9;
  int64_t c = asked > 0 && asked < m->n_ctx_train ? asked : m->n_ctx_train;
  if (c * row <= mem / 4) return c;
  if (asked > 0 && c * row <= mem / 2) return c; /* asked for: allowed up to half */
  if (asked > 0) {
    kn_err("llm: a cache of %lld tokens x %d sequences needs %.1f GB, and this machine has "
           "%.1f GB (a smaller --ctx)",
           (long long)c, n_seq, c * row / 1e9, mem / 1e9);
    return -1;
  }
  int64_t fit = (int64_t)(mem / 4 / row) / 256 * 256;
  fit = fit < 256 ? 256 : fit;
  fprintf(stderr, "kiln: llm: context cut from %lld to %lld tokens to fit memory (--ctx sets it)\n",
          (long long)m->n_ctx_train, (long long)fit);
  return fit;
}

/* The rope dims and the embedding table of a file's model. */
static int load_rope_dims(kiln_llm *m) {
  const char *arch = m->arch->name;
  if (!hp_int(m->g, arch, "rope.dimension_count", &m->n_rot, false)) m->n_rot = m->hd_k;
  if (m->n_rot < 2 || m->n_rot > m->hd_k || m->n_rot % 2) {
    kn_err("llm: rope dimension count %lld does not fit key length %lld", (long long)m->n_rot,
           (long long)m->hd_k);
    return -1;
  }
  m->tok_embd = kiln_gguf_find_tensor(m->g, "token_embd.weight");
  if (!m->tok_embd || m->tok_embd->ndim != 2 || m->tok_embd->dims[0] != m->n_embd) {
    kn_err("llm: model needs 'token_embd.weight' with GGUF dims [%lld, n_vocab]",
           (long long)m->n_embd);
    return -1;
  }
  if (!kiln_dequantize_supported(m->tok_embd->type)) {
    kn_err("llm: token_embd.weight has unsupported type %s",
           kiln_ggml_type_name(m->tok_embd->type));
    return -1;
  }
  m->n_vocab = m->tok_embd->dims[1];
  /* the tokenizer may have fewer tokens than the table has rows (padding), never more */
  int64_t k = kiln_gguf_find_key(m->g, "tokenizer.ggml.tokens");
  int64_t nt = k >= 0 ? kiln_gguf_arr_len(m->g, k) : 0;
  if (nt > m->n_vocab) {
    kn_err("llm: the tokenizer has %lld tokens but token_embd.weight has %lld rows", (long long)nt,
           (long long)m->n_vocab);
    return -1;
  }
  return 0;
}

/* The angle per position of each rotated pair i: base^(-2i/n_rot), divided by Llama-3's
 * frequency factors fac when the model has them, then scaled: linear: by 1/factor; YaRN: pairs
 * that turn fast keep their angle, slow ones are scaled by 1/factor, a linear ramp between
 * (between the pairs that turn beta_fast = 32 and beta_slow = 1 times over the original
 * context), and cos and sin are multiplied by 1 + 0.1 ln(factor) (*mscale). */
static T *rope_angles(const kiln_llm *m, double base, bool scaled, const float *fac,
                      double *mscale) {
  int64_t h = m->n_rot / 2;
  int rs = scaled ? m->rope_scaling : RS_NONE;
  double fs = rs == RS_NONE ? 1.0 : 1.0 / m->rope_factor, lo = 0, hi = 0, r = (double)m->n_rot;
  if (rs == RS_YARN) {
    double orig = (double)m->rope_orig_ctx;
    lo = floor(r * log(orig / (32 * 2 * M_PI)) / (2 * log(base)));
    hi = ceil(r * log(orig / (1 * 2 * M_PI)) / (2 * log(base)));
    lo = lo > 0 ? lo : 0, hi = hi < r - 1 ? hi : r - 1;
  }
  *mscale = rs == RS_YARN ? 1.0 + 0.1 * log(1.0 / fs) : 1.0;
  float *f = kn_xmalloc(sizeof(float) * h);
  for (int64_t i = 0; i < h; i++) {
    double theta = pow(base, -2.0 * (double)i / r) / (fac ? fac[i] : 1.0), k = fs;
    if (rs == RS_YARN) {
      double y = ((double)i - lo) / (hi - lo > 0.001 ? hi - lo : 0.001);
      double ramp = 1.0 - (y < 0 ? 0 : y > 1 ? 1 : y);
      k = fs * (1 - ramp) + ramp;
    }
    f[i] = (float)(theta * k);
  }
  T *t = kiln_persist(kiln_from_data(KILN_F32, 1, &h, f));
  free(f);
  return t;
}

/* A rope factor tensor (F32, one per rotated pair) of a file, or NULL; *bad on a wrong one. */
static const float *rope_factors(const kiln_llm *m, const char *name, bool *bad) {
  const kiln_gguf_tensor *t = m->g ? kiln_gguf_find_tensor(m->g, name) : NULL;
  if (t && (t->type != 0 || t->ndim != 1 || t->dims[0] != m->n_rot / 2)) {
    kn_err("llm: %s must be F32 [%lld]", name, (long long)(m->n_rot / 2));
    *bad = true;
  }
  return t && !*bad ? t->data : NULL;
}

/* The angles of the global layers and, when sliding layers have their own base, of those.
 * Frequency factors: Llama 3's rope_freqs, else LongRoPE's (Phi-3 128k) long set when the
 * context is longer than the original one, its short set otherwise. */
static int load_rope(kiln_llm *m) {
  bool bad = false;
  const float *fac = rope_factors(m, "rope_freqs.weight", &bad);
  if (!fac && !bad)
    fac = rope_factors(
        m, m->n_ctx > m->rope_orig_ctx ? "rope_factors_long.weight" : "rope_factors_short.weight",
        &bad);
  if (bad) return -1;
  m->inv_freq[0] = rope_angles(m, m->rope_base, true, fac, &m->rope_mscale[0]);
  m->rope_mscale[1] = m->rope_mscale[0];
  bool own = m->n_swa > 0 && m->arch->swa_base > 0; /* sliding layers have their own angles */
  if (own) m->inv_freq[1] = rope_angles(m, m->rope_base_swa, false, fac, &m->rope_mscale[1]);
  for (int r = 0; r < 2; r++)
    m->rope_mscale[r] *= m->rope_attn;
  return m->inv_freq[0] && (m->inv_freq[1] || !own) ? 0 : -1;
}

/* Everything after the hyperparameters: the cache size, rope, layers, the output and the
 * embedding table. */
static kiln_llm *load_rest(kiln_llm *m, int rc, int64_t n_ctx, int n_seq) {
  m->chunk_seq = -1;
  bool old = kiln_set_grad_enabled(false);
  kiln_scope_begin();
  if (rc == 0 && (n_seq < 1 || n_seq > 256)) {
    kn_err("llm: %d sequences (1 to 256)", n_seq);
    rc = -1;
  }
  if (rc == 0) {
    m->n_ctx = pick_ctx(m, n_ctx, n_seq);
    if (m->n_ctx < 0) rc = -1;
    m->n_seq = n_seq;
    m->pos = kn_xcalloc((size_t)n_seq, sizeof(int64_t));
    m->layers = kn_xcalloc((size_t)m->n_layer, sizeof(layer));
    if (rc == 0) rc = load_rope(m);
  }
  if (rc == 0) rc = load_layers(m);
  if (rc == 0) {
    m->out_norm = weight(m, "output_norm.weight", m->n_embd, 0, false);
    m->output = weight(m, "output.weight", m->n_vocab, m->n_embd, true);
    if (!m->output && m->g && kiln_gguf_find_tensor(m->g, "output.weight"))
      rc = -1; /* present but wrong */
    /* a file's table as stored: the embedding rows and, when tied, the output matrix are both
     * views of it, so a device without host memory holds it once */
    T *table = rc == 0 && m->g ? kn_gguf_stored(m->g, "token_embd.weight") : NULL;
    T *words = rc == 0 && !m->output && m->g ? kn_gguf_words(m->g, "token_embd.weight") : NULL;
    if (words) /* the output matrix repacked for 8-bit products, the embedding rows as stored */
      m->output = kiln_persist(words);
    else if (rc == 0 && !m->output)
      m->output = m->g ? kiln_persist(kn_ggml_values(table, m->tok_embd->type, m->n_vocab,
                                                     m->n_embd, as_runs(m->n_embd)))
                       : weight(m, "token_embd.weight", m->n_vocab, m->n_embd, false);
    double read = m->weight_bytes; /* a step reads one row of the table, not all of it */
    if (rc == 0)
      m->embd =
          kiln_persist(m->g ? kn_ggml_values(table, m->tok_embd->type, m->n_vocab, m->n_embd, false)
                            : random_weight(m, m->n_vocab, m->n_embd, false));
    m->weight_bytes = read;
    if (!m->out_norm || !m->output || !m->embd) rc = -1;
  }
  kiln_scope_end();
  kiln_set_grad_enabled(old);
  if (rc < 0) {
    kiln_llm_free(m);
    return NULL;
  }
  return m;
}

kiln_llm *kiln_llm_load_seqs(const char *path, int64_t n_ctx, int n_seq) {
  kiln_gguf *g = kiln_gguf_open(path);
  if (!g) return NULL;
  kiln_llm *m = kn_xcalloc(1, sizeof *m);
  m->g = g;
  return load_rest(m, load_hparams(m), n_ctx, n_seq);
}
kiln_llm *kiln_llm_load(const char *path, int64_t n_ctx) {
  return kiln_llm_load_seqs(path, n_ctx, 1);
}

/* ---- random models of a given shape (benchmarks) ---- */
static const struct {
  const char *name;
  kiln_llm_shape s;
} presets[] = {
    {"llama-7b", {32000, 4096, 32, 32, 32, 11008, 4096}},
    {"llama-13b", {32000, 5120, 40, 40, 40, 13824, 4096}},
    {"llama-70b", {32000, 8192, 80, 64, 8, 28672, 4096}},
    {"tiny", {512, 128, 2, 4, 2, 256, 512}},
};
int kiln_llm_preset(const char *name, kiln_llm_shape *s) {
  for (size_t i = 0; i < sizeof presets / sizeof *presets; i++)
    if (name && !strcmp(name, presets[i].name)) return *s = presets[i].s, 0;
  kn_err("llm: no preset '%s' (have llama-7b, llama-13b, llama-70b, tiny)", name ? name : "(null)");
  return -1;
}
kiln_llm *kiln_llm_random(const kiln_llm_shape *s, int type, uint64_t seed, int64_t n_ctx) {
  if (!s || (type != 1 && type != 2)) {
    kn_err("llm: random models have F16 (1) or Q4_0 (2) weights, not type %d", type);
    return NULL;
  }
  kiln_llm *m = kn_xcalloc(1, sizeof *m);
  m->arch = find_arch("llama");
  m->rtype = type, m->seed = seed;
  m->n_vocab = s->n_vocab, m->n_embd = s->n_embd, m->n_layer = s->n_layer, m->n_head = s->n_head;
  m->n_head_kv = s->n_head_kv, m->n_ff = s->n_ff, m->n_ctx_train = s->n_ctx_train;
  m->eps = 1e-5, m->rope_base = 10000.0, m->rope_factor = 1.0, m->rope_attn = 1.0;
  m->hd_k = m->hd_v = -1;
  int rc = check_hparams(m);
  if (rc == 0 && (m->n_vocab < 1 || m->n_vocab > (1 << 24))) {
    kn_err("llm: vocabulary of %lld tokens", (long long)m->n_vocab);
    rc = -1;
  }
  if (rc == 0 && type == 2 && (m->n_embd % 32 || m->n_ff % 32 || (m->n_head * m->hd_k) % 32)) {
    kn_err("llm: Q4_0 rows are blocks of 32: n_embd %lld and n_ff %lld must be multiples of 32",
           (long long)m->n_embd, (long long)m->n_ff);
    rc = -1;
  }
  m->n_rot = m->hd_k;
  return load_rest(m, rc, n_ctx, 1);
}
double kiln_llm_weight_bytes(const kiln_llm *m) { return m->weight_bytes; }

static void free_steps(kiln_llm *m);
void kiln_llm_free(kiln_llm *m) {
  if (!m) return;
  free_steps(m);
  T **all[] = {&m->out_norm, &m->output, &m->inv_freq[0], &m->inv_freq[1], &m->embd};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++)
    kiln_free(*all[i]);
  for (int64_t i = 0; m->layers && i < m->n_layer; i++) {
    layer *L = &m->layers[i];
    T *ts[] = {L->attn_norm, L->wq,     L->wk,     L->wv,        L->bq,       L->bk,       L->bv,
               L->wo,        L->q_norm, L->k_norm, L->post_attn, L->post_ffn, L->ffn_norm, L->wg,
               L->wu,        L->wd,     L->wqkv,   L->wgu,       L->kc,       L->vc};
    for (size_t j = 0; j < sizeof ts / sizeof *ts; j++)
      kiln_free(ts[j]);
  }
  free(m->layers);
  free(m->pos);
  free(m->pad_logits);
  kiln_gguf_close(m->g);
  free(m);
}

int64_t kiln_llm_n_vocab(const kiln_llm *m) { return m->n_vocab; }
int64_t kiln_llm_n_ctx(const kiln_llm *m) { return m->n_ctx; }
int kiln_llm_n_seq(const kiln_llm *m) { return m->n_seq; }
static bool seq_ok(const kiln_llm *m, int seq) {
  if (seq >= 0 && seq < m->n_seq) return true;
  kn_err("llm: no sequence %d (the model has %d)", seq, m->n_seq);
  return false;
}
int64_t kiln_llm_seq_pos(const kiln_llm *m, int seq) { return seq_ok(m, seq) ? m->pos[seq] : -1; }
int64_t kiln_llm_pos(const kiln_llm *m) { return m->pos[0]; }
const kiln_gguf *kiln_llm_gguf(const kiln_llm *m) { return m->g; }
int kiln_llm_seq_rewind(kiln_llm *m, int seq, int64_t pos) {
  if (!seq_ok(m, seq)) return -1;
  if (pos < 0 || pos > m->pos[seq]) {
    kn_err("llm: cannot rewind to position %lld (the cache holds %lld tokens)", (long long)pos,
           (long long)m->pos[seq]);
    return -1;
  }
  m->pos[seq] = pos;
  return 0;
}
int kiln_llm_rewind(kiln_llm *m, int64_t pos) { return kiln_llm_seq_rewind(m, 0, pos); }

/* ---- forward ----------------------------------------------------------------------------
 * A step is the forward of one chunk shape (S sequences of n tokens each, B cached keys read,
 * all logits or each sequence's last): its inputs are stored tensors written in place before
 * each run (the token ids, their positions, which sequences and the row of each one's last token;
 * the embedding rows, the cached keys and the causal mask are taken from them on the device), and
 * its launches are captured the first time and replayed after. */
typedef struct step {
  int64_t S, n, B;
  bool all;
  T *ids, *pos, *seqs; /* inputs: (S*n) i32 token ids, (S*n, 1) f32 positions, (S) i32 */
  T *last;             /* input: (S) i32, the row of each sequence's last real token */
  T **outs;            /* new K and V rows of each layer (S*n, kvd), then the logits */
  kiln_capture *cap;
  struct step *next;
} step;

/* The causal mask (S, 1, 1, n, B + n) of 0 / -inf: query i of sequence s sees cache slot
 * j < B when j < p0 (its positions before the chunk; pos[s, i] = p0 + i) and new key j' when
 * j' <= i; with a sliding window W > 0, only keys fewer than W positions back: p - j < W. */
static T *causal_mask(T *pos, int64_t S, int64_t n, int64_t B, int64_t W) {
  T *rows = kiln_reshape(kiln_arange(0, (double)n, 1, KILN_F32), 2, (int64_t[]){n, 1});
  T *cols = kiln_reshape(kiln_arange(0, (double)n, 1, KILN_F32), 2, (int64_t[]){1, n});
  T *see = kiln_binary(KILN_LE, cols, rows); /* (n, n) */
  if (W > 0)
    see = kiln_binary(KILN_AND, see,
                      kiln_binary(KILN_GT, kiln_binary_s(KILN_ADD, cols, (double)W), rows));
  see = kiln_expand(kiln_unsqueeze(see, 0), 3, (int64_t[]){S, n, n}); /* (S, n, n) */
  if (B > 0) {
    T *slots = kiln_reshape(kiln_arange(0, (double)B, 1, KILN_F32), 2, (int64_t[]){1, B});
    T *p = kiln_reshape(pos, 3, (int64_t[]){S, n, 1});
    T *old = kiln_binary(KILN_LT, kiln_add(slots, rows), p); /* (S, n, B) */
    if (W > 0)
      old = kiln_binary(KILN_AND, old,
                        kiln_binary(KILN_GT, kiln_binary_s(KILN_ADD, slots, (double)W), p));
    see = kiln_cat(2, (T *[]){old, see}, 2);
  }
  T *mask = kiln_where(see, kiln_scalar(KILN_F32, 0), kiln_scalar(KILN_F32, -INFINITY));
  /* stored once per step: every layer's softmax reads it, and computed in place it would
   * redo the index arithmetic of the aranges for each score of each layer */
  return kiln_reshape(kiln_contiguous(mask), 5, (int64_t[]){S, 1, 1, n, B + n});
}

/* x quantized for the 8-bit products of w (words), else nothing (NULLs) */
static kn_act8 act8(T *x, T *w) {
  return kiln_dtype_of(w) == KILN_U32 ? kn_quantize8(x) : (kn_act8){0};
}

/* x @ w^T + b for a weight in any of its layouts (rows, runs, 8-bit product words); xa: x
 * quantized for 8-bit products already (act8), or NULL */
static T *linear(T *x, const kn_act8 *xa, T *w, T *b) {
  if (kiln_dtype_of(w) == KILN_U32) return kn_linear_words(x, xa, w, b);
  return kiln_ndim(w) > 2 ? kiln_linear_runs(x, w, b) : kiln_linear(x, w, b);
}

/* x: (n, heads, hd_k); cos/sin: (n, 1, n_rot/2) */
static T *rope(const kiln_llm *m, T *x, T *cs, T *sn) {
  int64_t n = kiln_dim(x, 0), h = kiln_dim(x, 1), hd = m->hd_k, r = m->n_rot;
  T *rot = r == hd ? x : kiln_slice(x, 2, 0, r, 1);
  T *a, *b;
  if (m->arch->rope == ROPE_NORM) { /* adjacent pairs (x[2i], x[2i+1]) */
    T *p = kiln_reshape(rot, 4, (int64_t[]){n, h, r / 2, 2});
    a = kiln_squeeze(kiln_slice(p, 3, 0, 1, 1), 3), b = kiln_squeeze(kiln_slice(p, 3, 1, 2, 1), 3);
  } else { /* halves (x[i], x[i + r/2]) */
    a = kiln_slice(rot, 2, 0, r / 2, 1), b = kiln_slice(rot, 2, r / 2, r, 1);
  }
  T *ra = kiln_sub(kiln_mul(a, cs), kiln_mul(b, sn));
  T *rb = kiln_add(kiln_mul(a, sn), kiln_mul(b, cs));
  T *out = m->arch->rope == ROPE_NORM
               ? kiln_reshape(kiln_stack(2, (T *[]){ra, rb}, 3), 3, (int64_t[]){n, h, r})
               : kiln_cat(2, (T *[]){ra, rb}, 2);
  return r == hd ? out : kiln_cat(2, (T *[]){out, kiln_slice(x, 2, r, hd, 1)}, 2);
}

/* Causal attention of n new queries per sequence over the B cached keys of that sequence
 * before them and its n new keys. q: (S*n, H, hd); k, v: (S*n, Hkv, hd); seqs: (S) which
 * block of the cache each sequence reads; mask: (S, 1, 1, n, B + n) of 0 / -inf. Returns
 * (S*n, H * hd). The cached and the new keys are scored separately and only the scores are
 * joined, so the big reads (the cache) are plain loads. */
/* The first B rows of each sequence's block of a cache buffer: (S, B, Hkv, hd). */
static T *cached(const kiln_llm *m, T *cache, int64_t hd, T *seqs, int64_t S, int64_t B) {
  int64_t blk[4] = {S, B, m->n_head_kv, hd};
  if (m->chunk_seq >= 0) { /* one sequence's prompt chunk: its rows read in place, no gather */
    int64_t r0 = m->chunk_seq * m->n_ctx;
    T *rows = kn_rows_view(cache, r0, r0 + B);
    if (rows) return kiln_reshape(rows, 4, blk);
    kiln_clear_error(); /* a device that refuses the view: the gather below */
  }
  int64_t cb[3] = {m->n_seq, m->n_ctx, m->n_head_kv * hd};
  T *blocks = kiln_take(kiln_reshape(cache, 3, cb), seqs); /* (S, n_ctx, kvd) */
  return kiln_reshape(kiln_slice(blocks, 1, 0, B, 1), 4, blk);
}

static T *softcap(T *x, double cap) { /* cap * tanh(x / cap) */
  return kiln_binary_s(KILN_MUL, kiln_unary(KILN_TANH, kiln_binary_s(KILN_MUL, x, 1.0 / cap)), cap);
}

/* Scores of queries qg (S,Hk,G,n,hd) against keys (S,Hk,1,hd,T), scaled, capped and masked. */
static T *scores(const kiln_llm *m, T *qg, T *keys, T *mask) {
  T *s = kiln_binary_s(KILN_MUL, kiln_matmul(qg, keys), m->attn_scale);
  if (m->attn_softcap > 0) s = softcap(s, m->attn_softcap);
  return kiln_add(s, mask);
}

static T *attention(const kiln_llm *m, const layer *L, T *q, T *k, T *v, int64_t S, int64_t B,
                    T *seqs, T *mask) {
  int64_t n = kiln_dim(q, 0) / S, H = m->n_head, Hk = m->n_head_kv, G = H / Hk, hd = m->hd_k,
          hv = m->hd_v;
  int keys_ax = -1; /* the last axis of the scores: the keys */
  T *qg = kiln_permute(kiln_reshape(q, 5, (int64_t[]){S, n, Hk, G, hd}),
                       (int[]){0, 2, 3, 1, 4}); /* (S,Hk,G,n,hd) */
  /* (S,Hk,1,hd,T) keys and (S,Hk,1,T,hd) values of a (S, T, Hk, hd) block */
#define KEYS(x) kiln_unsqueeze(kiln_permute((x), (int[]){0, 2, 3, 1}), 2)
#define VALS(x) kiln_unsqueeze(kiln_permute((x), (int[]){0, 2, 1, 3}), 2)
  k = kiln_reshape(k, 4, (int64_t[]){S, n, Hk, hd}),
  v = kiln_reshape(v, 4, (int64_t[]){S, n, Hk, hv});
  /* the cached keys and the chunk's own are scored apart and never joined: one softmax over
   * both, as the sum of two products over its two parts, normalized at the end (on the
   * (n, hd) output rather than the (n, B + n) probabilities) */
  T *sn = scores(m, qg, KEYS(k), kiln_slice(mask, 4, B, B + n, 1)); /* (S, Hk, G, n, n) */
  T *mx = kiln_max(sn, 1, &keys_ax, true), *sc = NULL;
  if (B > 0) {
    T *kc = cached(m, L->kc, hd, seqs, S, B);
    sc = scores(m, qg, KEYS(kc), kiln_slice(mask, 4, 0, B, 1)); /* (S, Hk, G, n, B) */
    mx = kiln_binary(KILN_MAXIMUM, mx, kiln_max(sc, 1, &keys_ax, true));
  }
  T *e = kiln_exp(kiln_sub(sn, mx));
  T *o = kiln_matmul(e, VALS(v)), *den = kiln_sum(e, 1, &keys_ax, true); /* (S, Hk, G, n, hd) */
  if (B > 0) {
    e = kiln_exp(kiln_sub(sc, mx));
    o = kiln_add(o, kiln_matmul(e, VALS(cached(m, L->vc, hv, seqs, S, B))));
    den = kiln_add(den, kiln_sum(e, 1, &keys_ax, true));
  }
  o = kiln_div(o, den);
#undef KEYS
#undef VALS
  T *r = kiln_reshape(kiln_permute(o, (int[]){0, 3, 1, 2, 4}), 2, (int64_t[]){S * n, H * hv});
  /* a prompt chunk's output is stored in the projection's row order: the projection reading
   * the sum of the two products through the permute ran 8x slower (SmolLM2, CPU); a decode
   * step's is small enough to read in place */
  return n > 1 ? kiln_contiguous(r) : r;
}

/* Builds the step's graph and realizes it, capturing its launches when asked (decode steps:
 * a capture keeps every intermediate buffer of the step alive, small for one token). */
static int build_step(kiln_llm *m, step *st, bool capture) {
  int64_t S = st->S, n = st->n, B = st->B, H = m->n_head, Hk = m->n_head_kv, hd = m->hd_k,
          hv = m->hd_v, N = S * n;
  const arch_desc *a = m->arch;
  /* intermediates live in an inner scope: once only the outputs hold handles, the scheduler
   * can free each activation as soon as its last reader has run */
  kiln_scope_begin();
  T *cs[2] = {NULL, NULL}, *sn[2] = {NULL, NULL}; /* global layers', sliding layers' */
  for (int r = 0; r < 2; r++) {
    if (!m->inv_freq[r]) continue;
    T *ang =
        kiln_unsqueeze(kiln_mul(st->pos, kiln_unsqueeze(m->inv_freq[r], 0)), 1); /* (N,1,r/2) */
    cs[r] = kiln_unary(KILN_COS, ang), sn[r] = kiln_unary(KILN_SIN, ang);
    if (m->rope_mscale[r] != 1.0)
      cs[r] = kiln_binary_s(KILN_MUL, cs[r], m->rope_mscale[r]),
      sn[r] = kiln_binary_s(KILN_MUL, sn[r], m->rope_mscale[r]);
    /* stored once per step: computed in place, every head of every layer's rope would call
     * sin and cos again for each element */
    cs[r] = kiln_contiguous(cs[r]), sn[r] = kiln_contiguous(sn[r]);
  }
  T *x = kiln_take(m->embd, st->ids);
  if (a->embd_scale) x = kiln_binary_s(KILN_MUL, x, sqrt((double)m->n_embd));
  T *mask[2] = {causal_mask(st->pos, S, n, B, 0),
                m->n_swa > 0 ? causal_mask(st->pos, S, n, B, m->n_swa) : NULL};
  for (int64_t l = 0; l < m->n_layer; l++) {
    layer *L = &m->layers[l];
    /* the normed input feeds several matrix products: store it once rather than recompute
     * it for every output row of each */
    T *h = kiln_contiguous(kiln_rms_norm(x, L->attn_norm, m->eps));
    kn_act8 hq = act8(h, L->wq); /* h quantized once for its three products */
    T *q = kiln_reshape(linear(h, &hq, L->wq, L->bq), 3, (int64_t[]){N, H, hd});
    T *k = kiln_reshape(linear(h, &hq, L->wk, L->bk), 3, (int64_t[]){N, Hk, hd});
    T *v = kiln_reshape(linear(h, &hq, L->wv, L->bv), 3, (int64_t[]){N, Hk, hv});
    if (L->q_norm) q = kiln_rms_norm(q, L->q_norm, m->eps), k = kiln_rms_norm(k, L->k_norm, m->eps);
    int r = L->swa && cs[1] ? 1 : 0;
    if (kiln_dtype_of(L->wq) == KILN_U32) /* 8-bit products take 8 adjacent outputs at once:
                                              stored before the rope pairs them otherwise */
      q = kiln_contiguous(q), k = kiln_contiguous(k);
    q = rope(m, q, cs[r], sn[r]), k = rope(m, k, cs[r], sn[r]);
    /* the new rows are outputs of the step (copied into the cache after it) and inputs of
     * this layer's attention */
    st->outs[2 * l] = kiln_reshape(k, 2, (int64_t[]){N, Hk * hd});
    st->outs[2 * l + 1] = kiln_reshape(v, 2, (int64_t[]){N, Hk * hv});
    T *o = linear(attention(m, L, q, k, v, S, B, st->seqs, mask[L->swa]), NULL, L->wo, NULL);
    if (L->post_attn) o = kiln_rms_norm(o, L->post_attn, m->eps);
    x = kiln_add(x, o);
    h = kiln_contiguous(kiln_rms_norm(x, L->ffn_norm, m->eps));
    hq = act8(h, L->wg);
    T *g = linear(h, &hq, L->wg, NULL);
    g = a->act == ACT_GELU ? kiln_gelu(g) : kiln_silu(g);
    T *f = linear(kiln_mul(g, linear(h, &hq, L->wu, NULL)), NULL, L->wd, NULL);
    if (L->post_ffn) f = kiln_rms_norm(f, L->post_ffn, m->eps);
    x = kiln_add(x, f);
  }
  if (!st->all) /* each sequence's last real token (a padded chunk's is not its last row) */
    x = kiln_take(x, st->last);
  T *logits = linear(kiln_rms_norm(x, m->out_norm, m->eps), NULL, m->output, NULL);
  st->outs[2 * m->n_layer] = m->final_softcap > 0 ? softcap(logits, m->final_softcap) : logits;
  int nout = (int)(2 * m->n_layer + 1);
  bool ok = true;
  for (int i = 0; i < nout; i++)
    ok = ok && kiln_keep(st->outs[i]) != NULL;
  kiln_scope_end();
  if (!ok) { /* those kept belong to the caller's scope now */
    for (int i = 0; i < nout; i++)
      st->outs[i] = NULL;
    return -1;
  }
  if (!capture) return kiln_realize_many(nout, st->outs);
  if (kiln_capture_begin() < 0) return -1;
  int rc = kiln_realize_many(nout, st->outs);
  st->cap = kiln_capture_end();
  for (int i = 0; i < nout; i++)
    kiln_persist(st->outs[i]);
  if (rc < 0) { /* never replay a partial capture */
    kiln_capture_free(st->cap);
    st->cap = NULL;
  }
  return rc;
}

static step *get_step(kiln_llm *m, int64_t S, int64_t n, int64_t B, bool all) {
  for (step *s = m->steps; s; s = s->next)
    if (s->S == S && s->n == n && s->B == B && s->all == all) return s;
  step *s = kn_xcalloc(1, sizeof *s);
  s->S = S, s->n = n, s->B = B, s->all = all;
  s->outs = kn_xcalloc((size_t)(2 * m->n_layer + 1), sizeof(T *));
  kiln_scope_begin();
  s->ids = kiln_persist(kiln_empty(KILN_I32, 1, (int64_t[]){S * n}));
  s->pos = kiln_persist(kiln_empty(KILN_F32, 2, (int64_t[]){S * n, 1}));
  s->seqs = kiln_persist(kiln_empty(KILN_I32, 1, (int64_t[]){S}));
  s->last = kiln_persist(kiln_empty(KILN_I32, 1, (int64_t[]){S}));
  s->next = m->steps, m->steps = s;
  kiln_scope_end();
  return s;
}

static void free_steps(kiln_llm *m) {
  for (step *s = m->steps, *nx; s; s = nx) {
    nx = s->next;
    kiln_capture_free(s->cap);
    for (int64_t i = 0; i < 2 * m->n_layer + 1; i++)
      kiln_free(s->outs[i]);
    kiln_free(s->ids), kiln_free(s->pos), kiln_free(s->seqs), kiln_free(s->last);
    free(s->outs);
    free(s);
  }
  m->steps = NULL;
}

/* writes host data into a stored tensor (all of it) */
static int put(T *dst, const void *data) {
  kiln_scope_begin();
  T *src = kiln_from_data(kiln_dtype_of(dst), kiln_ndim(dst), kiln_shape(dst), data);
  int rc = kiln_write_rows(dst, 0, src);
  kiln_scope_end();
  return rc;
}

/* Runs a chunk of n rows per sequence (tok: S*n) after the cached tokens of each of S
 * sequences (seqs[s] < 0: a sequence of padding, computed and dropped). The first `used` rows
 * of each are its tokens, the rest padding after them (which no real row sees, as it comes
 * later): writes the logits of every real token (all) or of each sequence's last into out;
 * appends the real tokens' keys and values to each sequence's cache. */
static int forward_chunk(kiln_llm *m, int64_t S, const int *seqs, const int32_t *tok, int64_t n,
                         int64_t used, float *out, bool all) {
  int64_t B = 0;
  for (int64_t s = 0; s < S; s++)
    if (seqs[s] >= 0) {
      int64_t b = cache_bucket(m->pos[seqs[s]], m->n_ctx);
      B = b > B ? b : B;
    }
  step *st = get_step(m, S, n, B, all);
  /* inputs: token ids, positions, and the cache block of each sequence (padding reads block
   * 0 from position 0, which shows it no cached key) */
  float *posv = kn_xmalloc(sizeof(float) * (size_t)(S * n));
  int32_t *sq = kn_xmalloc(sizeof(int32_t) * (size_t)S),
          *last = kn_xmalloc(sizeof(int32_t) * (size_t)S);
  for (int64_t s = 0; s < S; s++) {
    sq[s] = seqs[s] >= 0 ? seqs[s] : 0;
    last[s] = (int32_t)(s * n + used - 1);
    for (int64_t i = 0; i < n; i++)
      posv[s * n + i] = (float)((seqs[s] >= 0 ? m->pos[seqs[s]] : 0) + i);
  }
  int rc = put(st->ids, tok);
  if (rc == 0) rc = put(st->pos, posv);
  if (rc == 0) rc = put(st->seqs, sq);
  if (rc == 0) rc = put(st->last, last);
  free(posv), free(sq), free(last);
  /* decode steps are captured and replayed; a prompt chunk builds its graph each time, so
   * its (n times larger) intermediates are freed as soon as it is done */
  bool capture = n == 1;
  m->chunk_seq = S == 1 && !capture ? seqs[0] : -1;
  if (rc == 0) rc = st->cap ? kiln_capture_replay(st->cap) : build_step(m, st, capture);
  m->chunk_seq = -1;
  T *logits = st->outs[2 * m->n_layer];
  if (rc == 0 && all && used < n) { /* S == 1 here: the real rows' */
    float *rows = kn_xmalloc(sizeof(float) * (size_t)kiln_numel(logits));
    rc = kiln_to_host(logits, rows, sizeof(float) * (size_t)kiln_numel(logits));
    if (rc == 0) memcpy(out, rows, sizeof(float) * (size_t)(used * m->n_vocab));
    free(rows);
  } else if (rc == 0)
    rc = kiln_to_host(logits, out, sizeof(float) * (size_t)kiln_numel(logits));
  for (int64_t l = 0; rc == 0 && l < m->n_layer; l++)
    for (int64_t s = 0; rc == 0 && s < S; s++) {
      if (seqs[s] < 0) continue;
      int64_t row = seqs[s] * m->n_ctx + m->pos[seqs[s]];
      rc = kiln_copy_rows(m->layers[l].kc, row, st->outs[2 * l], s * n, used);
      if (rc == 0) rc = kiln_copy_rows(m->layers[l].vc, row, st->outs[2 * l + 1], s * n, used);
    }
  for (int64_t i = 0; !capture && i < 2 * m->n_layer + 1; i++) {
    kiln_free(st->outs[i]);
    st->outs[i] = NULL;
  }
  for (int64_t s = 0; rc == 0 && s < S; s++)
    if (seqs[s] >= 0) m->pos[seqs[s]] += used;
  return rc;
}

/* Chunk lengths: a prompt is cut into pieces of these sizes so that any length runs on the
 * kernels of a few shapes, compiled once; the last piece may be padded. A chunk's relative
 * time (SmolLM2 on a CPU: 64, 16, 4 and 1 tokens took 191, 79, 31 and 19 ms: reading the
 * weights costs as much as the arithmetic of a few tokens) decides the cut: 52 tokens run as
 * one padded chunk of 64 (191 ms) rather than 16 + 16 + 16 + 4 (284 ms). */
enum { CHUNK_MAX = 64 };
static const int64_t chunk_sizes[] = {CHUNK_MAX, 16, 4, 1};
static const double chunk_cost[] = {10, 4.1, 1.6, 1};
#define NCHUNK (sizeof chunk_sizes / sizeof *chunk_sizes)

/* The size of the first chunk of the cheapest cut of r tokens (r >= 1): plain chunks, then
 * the last perhaps padded. best[j] is the cost of the cheapest cut of j tokens; beyond
 * CHUNK_MAX tokens, whole chunks of CHUNK_MAX come first. */
static int64_t first_chunk(int64_t r) {
  if (r > CHUNK_MAX) return CHUNK_MAX;
  double best[CHUNK_MAX + 1];
  int64_t pick[CHUNK_MAX + 1];
  best[0] = 0, pick[0] = 0;
  for (int64_t j = 1; j <= r; j++) {
    best[j] = INFINITY, pick[j] = 1;
    for (size_t c = 0; c < NCHUNK; c++) {
      int64_t rest = j > chunk_sizes[c] ? j - chunk_sizes[c] : 0;
      if (chunk_cost[c] + best[rest] < best[j])
        best[j] = chunk_cost[c] + best[rest], pick[j] = chunk_sizes[c];
    }
  }
  return pick[r];
}

static bool tokens_ok(const kiln_llm *m, const int32_t *tok, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (tok[i] < 0 || tok[i] >= m->n_vocab) {
      kn_err("llm: token id %d out of range (vocabulary has %lld)", tok[i], (long long)m->n_vocab);
      return false;
    }
  return true;
}

int kiln_llm_seq_eval(kiln_llm *m, int seq, const int32_t *tok, int64_t n, float *logits,
                      bool all) {
  if (!m || (!tok && n) || n < 0 || !logits) {
    kn_err("llm: eval: bad arguments");
    return -1;
  }
  if (!seq_ok(m, seq)) return -1;
  if (n > m->n_ctx - m->pos[seq]) {
    kn_err("llm: context is full: %lld tokens cached + %lld new > context length %lld",
           (long long)m->pos[seq], (long long)n, (long long)m->n_ctx);
    return -1;
  }
  if (!tokens_ok(m, tok, n)) return -1;
  bool old = kiln_set_grad_enabled(false);
  int rc = 0;
  float *scratch = all ? NULL : kn_xmalloc(sizeof(float) * (size_t)m->n_vocab); /* unread logits */
  int32_t padded[CHUNK_MAX];
  for (int64_t i = 0; i < n && rc == 0;) {
    int64_t c = first_chunk(n - i), used = c < n - i ? c : n - i;
    const int32_t *t = tok + i;
    if (used < c) { /* the last chunk, padded after its tokens */
      memset(padded, 0, sizeof padded);
      memcpy(padded, t, sizeof(int32_t) * (size_t)used);
      t = padded;
    }
    float *dst = all ? logits + i * m->n_vocab : i + used == n ? logits : scratch;
    kiln_scope_begin();
    rc = forward_chunk(m, 1, &seq, t, c, used, dst, all);
    kiln_scope_end();
    i += used;
  }
  free(scratch);
  kiln_set_grad_enabled(old);
  return rc;
}
int kiln_llm_eval(kiln_llm *m, const int32_t *tok, int64_t n, float *logits, bool all) {
  return kiln_llm_seq_eval(m, 0, tok, n, logits, all);
}

int kiln_llm_decode(kiln_llm *m, int n, const int *seqs, const int32_t *tok, float *logits) {
  if (!m || n < 1 || n > m->n_seq || !seqs || !tok || !logits) {
    kn_err("llm: decode: bad arguments (%d sequences of %d)", n, m ? m->n_seq : 0);
    return -1;
  }
  for (int i = 0; i < n; i++) {
    if (!seq_ok(m, seqs[i])) return -1;
    for (int j = 0; j < i; j++)
      if (seqs[j] == seqs[i]) {
        kn_err("llm: decode: sequence %d given twice", seqs[i]);
        return -1;
      }
    if (m->pos[seqs[i]] >= m->n_ctx) {
      kn_err("llm: context of sequence %d is full (%lld tokens)", seqs[i], (long long)m->n_ctx);
      return -1;
    }
  }
  if (!tokens_ok(m, tok, n)) return -1;
  /* always n_seq rows (the rest padding): the same kernels whatever n is, so a sequence's
   * tokens do not depend on how many others decode beside it */
  int64_t S = m->n_seq;
  int sq[256];
  int32_t tk[256];
  for (int64_t s = 0; s < S; s++)
    sq[s] = s < n ? seqs[s] : -1, tk[s] = s < n ? tok[s] : 0;
  /* the padding rows' logits go to a buffer kept for every step (not one per token) */
  if (n < S && !m->pad_logits) m->pad_logits = kn_xmalloc(sizeof(float) * (size_t)(S * m->n_vocab));
  float *out = n < S ? m->pad_logits : logits;
  bool old = kiln_set_grad_enabled(false);
  kiln_scope_begin();
  int rc = forward_chunk(m, S, sq, tk, 1, 1, out, false);
  kiln_scope_end();
  kiln_set_grad_enabled(old);
  if (rc == 0 && out != logits) memcpy(logits, out, sizeof(float) * (size_t)(n * m->n_vocab));
  return rc;
}

/* ---- finding fetched models ---------------------------------------------------------------- */
const char *kiln_model_find(const char *name_part, char *buf, size_t n) {
  const char *cache = getenv("KILN_CACHE"), *home = getenv("HOME");
  for (int k = 0; k < 2 && name_part && buf; k++) { /* $KILN_CACHE/models, ~/.cache/kiln/models */
    char dir[1024];
    if (k == 0 && !(cache && *cache)) continue;
    if (k == 0)
      snprintf(dir, sizeof dir, "%s/models", cache);
    else
      snprintf(dir, sizeof dir, "%s/.cache/kiln/models", home ? home : ".");
    DIR *d = opendir(dir);
    if (!d) continue;
    struct dirent *e;
    const char *found = NULL;
    while (!found && (e = readdir(d))) {
      size_t len = strlen(e->d_name);
      if (len > 5 && !strcmp(e->d_name + len - 5, ".gguf") && strstr(e->d_name, name_part) &&
          (size_t)snprintf(buf, n, "%s/%s", dir, e->d_name) < n)
        found = buf;
    }
    closedir(d);
    if (found) return found;
  }
  return NULL;
}
