/* quant.c — ggml block formats as ordinary kiln ops. A quantized matrix stays a u8 tensor of
 * its blocks; dequantization is a lazy expression (shifts, masks, bitcasts, casts) that fuses
 * into whatever reads the weights, so no f32 copy of a model is ever made. */
#include "internal.h"

typedef kiln_tensor T;

enum { GT_F32 = 0, GT_F16 = 1, GT_Q4_0 = 2, GT_Q4_1 = 3, GT_Q8_0 = 8, GT_Q4_K = 12, GT_Q6_K = 14,
       GT_BF16 = 30 };

/* ---- byte fields of a block tensor b: (rows, nblocks, block_bytes) u8 ---- */
static T *bytes(T *b, int64_t from, int64_t to) { return kiln_slice(b, -1, from, to, 1); }
static T *u8s(T *x, kiln_binary_op op, double v) { return kiln_binary_s(op, x, v); }
/* f16 stored little-endian at byte off, as f32 (rows, nblocks, 1) */
static T *half_at(T *b, int64_t off) {
  T *lo = kiln_cast(bytes(b, off, off + 1), KILN_U16);
  T *hi = kiln_cast(bytes(b, off + 1, off + 2), KILN_U16);
  T *bits = kiln_binary(KILN_OR, lo, kiln_binary_s(KILN_SHL, hi, 8));
  return kiln_cast(kiln_bitcast(bits, KILN_F16), KILN_F32);
}
static T *f32(T *x) { return kiln_cast(x, KILN_F32); }
static T *stack2(T *a, T *b, int axis) { return kiln_stack(2, (T *[]){a, b}, axis); }
static T *unsqueeze_last(T *x) { return kiln_unsqueeze(x, -1); }

/* 32-element blocks with 4-bit quants: low nibbles are elements 0..15, high nibbles 16..31 */
static T *nibbles32(T *qs /* (R, NB, 16) */) {
  T *q = kiln_cat(2, (T *[]){u8s(qs, KILN_AND, 15), u8s(qs, KILN_SHR, 4)}, -1);
  return f32(q); /* (R, NB, 32) */
}

static T *deq_q4_0(T *b) { /* d f16 | qs[16] */
  return kiln_mul(half_at(b, 0), kiln_binary_s(KILN_SUB, nibbles32(bytes(b, 2, 18)), 8));
}
static T *deq_q4_1(T *b) { /* d f16 | m f16 | qs[16] */
  return kiln_add(kiln_mul(half_at(b, 0), nibbles32(bytes(b, 4, 20))), half_at(b, 2));
}
static T *deq_q8_0(T *b) { /* d f16 | qs int8[32] */
  return kiln_mul(half_at(b, 0), f32(kiln_bitcast(bytes(b, 2, 34), KILN_I8)));
}

/* Q4_K: d f16 | dmin f16 | scales[12] (eight 6-bit scales and mins) | qs[128]. Sub-block j of
 * 32 has scale d*sc[j] and offset -dmin*m[j]; qs byte c*32+l holds element l of sub-block 2c in
 * its low nibble and of sub-block 2c+1 in its high nibble. */
static T *deq_q4_k(T *b) {
  int64_t R = kiln_dim(b, 0), NB = kiln_dim(b, 1);
  T *s03 = bytes(b, 4, 8), *s47 = bytes(b, 8, 12), *s811 = bytes(b, 12, 16);
  T *sc_lo = u8s(s03, KILN_AND, 63), *m_lo = u8s(s47, KILN_AND, 63);
  T *sc_hi = kiln_binary(KILN_OR, u8s(s811, KILN_AND, 15), u8s(u8s(s03, KILN_SHR, 6), KILN_SHL, 4));
  T *m_hi = kiln_binary(KILN_OR, u8s(s811, KILN_SHR, 4), u8s(u8s(s47, KILN_SHR, 6), KILN_SHL, 4));
  T *sc = f32(kiln_cat(2, (T *[]){sc_lo, sc_hi}, -1)); /* (R, NB, 8) */
  T *m = f32(kiln_cat(2, (T *[]){m_lo, m_hi}, -1));
  T *qs = kiln_reshape(bytes(b, 16, 144), 4, (int64_t[]){R, NB, 4, 32});
  T *q = stack2(u8s(qs, KILN_AND, 15), u8s(qs, KILN_SHR, 4), 3); /* (R, NB, 4, 2, 32) */
  q = f32(kiln_reshape(q, 4, (int64_t[]){R, NB, 8, 32}));
  T *d = unsqueeze_last(half_at(b, 0)), *dmin = unsqueeze_last(half_at(b, 2)); /* (R,NB,1,1) */
  T *scale = kiln_mul(d, unsqueeze_last(sc)), *off = kiln_mul(dmin, unsqueeze_last(m));
  return kiln_sub(kiln_mul(scale, q), off); /* (R, NB, 8, 32) */
}

/* Q6_K: ql[128] | qh[64] | scales int8[16] | d f16. Each half of 128 elements uses 64 ql bytes,
 * 32 qh bytes and 8 scales; quarter k (32 elements) takes the low (k < 2) or high nibble of ql
 * bytes (k & 1)*32 + l and bits 2k..2k+1 of qh byte l, minus 32, scaled by scales[2k + l/16]. */
static T *deq_q6_k(T *b) {
  int64_t R = kiln_dim(b, 0), NB = kiln_dim(b, 1);
  T *ql = kiln_reshape(bytes(b, 0, 128), 5, (int64_t[]){R, NB, 2, 2, 32});
  T *qh = kiln_reshape(bytes(b, 128, 192), 4, (int64_t[]){R, NB, 2, 32});
  T *lo4 = kiln_cat(2, (T *[]){u8s(ql, KILN_AND, 15), u8s(ql, KILN_SHR, 4)}, 3); /* (R,NB,2,4,32) */
  T *hi[4];
  for (int k = 0; k < 4; k++) hi[k] = u8s(u8s(qh, KILN_SHR, 2 * k), KILN_AND, 3);
  T *hi2 = kiln_stack(4, hi, 3); /* (R, NB, 2, 4, 32) */
  T *q = kiln_binary(KILN_OR, lo4, u8s(hi2, KILN_SHL, 4));
  q = kiln_binary_s(KILN_SUB, f32(q), 32);
  q = kiln_reshape(q, 6, (int64_t[]){R, NB, 2, 4, 2, 16});
  T *sc = f32(kiln_bitcast(bytes(b, 192, 208), KILN_I8));
  sc = kiln_reshape(sc, 6, (int64_t[]){R, NB, 2, 4, 2, 1});
  T *d = kiln_reshape(half_at(b, 208), 6, (int64_t[]){R, NB, 1, 1, 1, 1});
  return kiln_mul(kiln_mul(d, sc), q);
}

typedef T *(*deq_fn)(T *);
static deq_fn block_decoder(int type) {
  switch (type) {
  case GT_Q4_0: return deq_q4_0;
  case GT_Q4_1: return deq_q4_1;
  case GT_Q8_0: return deq_q8_0;
  case GT_Q4_K: return deq_q4_k;
  case GT_Q6_K: return deq_q6_k;
  default: return NULL;
  }
}

bool kiln_dequantize_supported(int type) {
  return type == GT_F32 || type == GT_F16 || type == GT_BF16 || block_decoder(type);
}

T *kiln_dequantize(T *raw, int type, int64_t rows, int64_t cols) {
  if (!raw) {
    kn_err("dequantize: tensor is NULL (an earlier op failed)");
    return NULL;
  }
  const char *tn = kiln_ggml_type_name(type);
  if (!block_decoder(type)) {
    kn_err("dequantize: tensor type %s (%d) is not a supported block format (Q4_0, Q4_1, Q8_0, "
           "Q4_K, Q6_K are)", tn, type);
    return NULL;
  }
  int64_t bs = kiln_ggml_block_size(type), bb = kiln_ggml_type_size(type), nbytes;
  if (rows < 0 || cols < 0 || cols % bs || __builtin_mul_overflow(rows, cols / bs, &nbytes) ||
      __builtin_mul_overflow(nbytes, bb, &nbytes)) {
    kn_err("dequantize: %s rows of %lld elements must hold whole blocks of %lld", tn,
           (long long)cols, (long long)bs);
    return NULL;
  }
  kiln_dtype dt = kiln_dtype_of(raw);
  if (dt != KILN_U8 || kiln_numel(raw) != nbytes) {
    kn_err("dequantize: %lld x %lld %s needs %lld bytes as u8, got %s with %lld elements",
           (long long)rows, (long long)cols, tn, (long long)nbytes, kiln_dtype_name(dt),
           (long long)kiln_numel(raw));
    return NULL;
  }
  T *blocks = kiln_reshape(raw, 3, (int64_t[]){rows, cols / bs, bb});
  return kiln_reshape(block_decoder(type)(blocks), 2, (int64_t[]){rows, cols});
}

T *kiln_gguf_weight(const kiln_gguf *g, const char *name) {
  const kiln_gguf_tensor *t = g ? kiln_gguf_find_tensor(g, name) : NULL;
  if (!t) {
    kn_err("gguf: no tensor named '%s'", name ? name : "(null)");
    return NULL;
  }
  if (!kiln_dequantize_supported(t->type)) {
    kn_err("gguf: tensor '%s' has type %s, which kiln cannot compute with yet (F32, F16, BF16, "
           "Q4_0, Q4_1, Q8_0, Q4_K, Q6_K are supported)", name, kiln_ggml_type_name(t->type));
    return NULL;
  }
  int64_t shape[4]; /* GGUF lists the fastest dim first */
  for (int i = 0; i < t->ndim; i++) shape[i] = t->dims[t->ndim - 1 - i];
  if (t->type == GT_F32 || t->type == GT_F16 || t->type == GT_BF16) {
    kiln_dtype dt = t->type == GT_F32 ? KILN_F32 : t->type == GT_F16 ? KILN_F16 : KILN_BF16;
    T *x = kiln_from_blob(dt, t->ndim, shape, t->data);
    return dt == KILN_F32 ? x : kiln_cast(x, KILN_F32);
  }
  int64_t cols = t->dims[0], rows = t->numel / cols;
  T *raw = kiln_from_blob(KILN_U8, 1, (int64_t[]){(int64_t)t->nbytes}, t->data);
  return kiln_reshape(kiln_dequantize(raw, t->type, rows, cols), t->ndim, shape);
}
