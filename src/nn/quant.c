/* quant.c — ggml block formats as ordinary kiln ops. A quantized matrix stays a u8 tensor of
 * its blocks; dequantization is a lazy expression (shifts, masks, bitcasts, casts) that fuses
 * into whatever reads the weights, so no f32 copy of a model is ever made. */
#include "internal.h"
#include "render/prelude.h"

typedef kiln_tensor T;

enum {
  GT_F32 = 0,
  GT_F16 = 1,
  GT_Q4_0 = 2,
  GT_Q4_1 = 3,
  GT_Q5_0 = 6,
  GT_Q5_1 = 7,
  GT_Q8_0 = 8,
  GT_Q2_K = 10,
  GT_Q3_K = 11,
  GT_Q4_K = 12,
  GT_Q5_K = 13,
  GT_Q6_K = 14,
  GT_IQ4_NL = 20,
  GT_IQ4_XS = 23,
  GT_BF16 = 30
};

/* ---- byte fields of a block tensor b: (rows, nblocks, block_bytes) u8 ----
 * Every decoder returns (rows, nblocks, runs per block, 16): runs of 16 consecutive elements
 * last, so a consumer reducing over a row walks contiguous bytes in its innermost loop, and
 * per-block scales are computed once per block. Nibbles and bit
 * pairs are picked by shifting a broadcast byte by an amount that depends only on an outer
 * index, never by selecting between two loads. */
static T *bytes(T *b, int64_t from, int64_t to) { return kiln_slice(b, -1, from, to, 1); }
static T *u8s(T *x, kiln_binary_op op, double v) { return kiln_binary_s(op, x, v); }
static T *f32(T *x) { return kiln_cast(x, KILN_F32); }
/* f16 stored little-endian at byte off, as f32 (rows, nblocks, 1) */
static T *half_at(T *b, int64_t off) {
  T *lo = kiln_cast(bytes(b, off, off + 1), KILN_U16);
  T *hi = kiln_cast(bytes(b, off + 1, off + 2), KILN_U16);
  T *bits = kiln_binary(KILN_OR, lo, kiln_binary_s(KILN_SHL, hi, 8));
  return f32(kiln_bitcast(bits, KILN_F16));
}
/* x with `extra` size-1 dims appended */
static T *trail(T *x, int extra) {
  while (extra--)
    x = kiln_unsqueeze(x, -1);
  return x;
}
/* shift amounts 0, step, 2*step, ... (count of them) along a new dim placed before the last,
 * built from padded constants so that codegen sees each amount as a function of the loop index
 * (a select between constants) rather than a value loaded from memory */
static T *shifts(int count, int step) {
  T *s = kiln_zeros(KILN_U8, 1, (int64_t[]){count});
  for (int k = 1; k < count; k++) {
    T *part = kiln_full(KILN_U8, 1, (int64_t[]){count - k}, step);
    s = kiln_add(s, kiln_pad(part, (int64_t[]){k}, (int64_t[]){0}, 0));
  }
  return kiln_reshape(s, 2, (int64_t[]){count, 1});
}
/* (..., n) bytes -> (..., count, n) i32: field k is (byte >> (k * bits)) & mask. The bytes are
 * widened first: a vector unit shifts 32-bit lanes but not bytes. */
static T *split_bits(T *x, int count, int bits) {
  T *w = kiln_cast(kiln_unsqueeze(x, -2), KILN_I32);
  T *sh = kiln_binary(KILN_SHR, w, kiln_cast(shifts(count, bits), KILN_I32));
  return u8s(sh, KILN_AND, (1 << bits) - 1);
}
/* the u32 stored little-endian at byte off, (rows, nblocks, 1) */
static T *u32_at(T *b, int64_t off) {
  T *w = kiln_cast(bytes(b, off, off + 1), KILN_U32);
  for (int k = 1; k < 4; k++) {
    T *byte = kiln_cast(bytes(b, off + k, off + k + 1), KILN_U32);
    w = kiln_binary(KILN_OR, w, u8s(byte, KILN_SHL, 8 * k));
  }
  return w;
}
/* (rows, nblocks, 1) u32 -> (rows, nblocks, 2, 16) i32: bit j of the word at (j / 16, j % 16).
 * Here the shift is the element's own index (an arange), as each element has its own bit. */
static T *bits32(T *w) {
  T *j = kiln_reshape(kiln_arange(0, 32, 1, KILN_U32), 2, (int64_t[]){2, 16});
  return kiln_cast(u8s(kiln_binary(KILN_SHR, trail(w, 1), j), KILN_AND, 1), KILN_I32);
}
static T *runs16(T *y) { /* (rows, nblocks, ..., 16) -> (rows, nblocks, runs per block, 16) */
  return kiln_reshape(y, 4, (int64_t[]){kiln_dim(y, 0), kiln_dim(y, 1), -1, 16});
}

/* Q4_0 / Q4_1: 32 elements; byte j holds element j (low nibble) and j + 16 (high nibble) */
static T *deq_q4_0(T *b) {                       /* d f16 | qs[16] */
  T *q = f32(split_bits(bytes(b, 2, 18), 2, 4)); /* (R, NB, 2, 16) */
  return runs16(kiln_mul(trail(half_at(b, 0), 1), kiln_binary_s(KILN_SUB, q, 8)));
}
static T *deq_q4_1(T *b) { /* d f16 | m f16 | qs[16] */
  T *q = f32(split_bits(bytes(b, 4, 20), 2, 4));
  return runs16(kiln_add(kiln_mul(trail(half_at(b, 0), 1), q), trail(half_at(b, 2), 1)));
}
/* Q5_0 / Q5_1: the low 4 bits as Q4_0; bit j of the u32 qh is the fifth bit of element j */
static T *q5_quants(T *b, int64_t qh, int64_t qs) { /* (R, NB, 2, 16) f32, 0..31 */
  T *lo = split_bits(bytes(b, qs, qs + 16), 2, 4);
  return f32(kiln_binary(KILN_OR, lo, u8s(bits32(u32_at(b, qh)), KILN_SHL, 4)));
}
static T *deq_q5_0(T *b) { /* d f16 | qh[4] | qs[16] */
  T *q = kiln_binary_s(KILN_SUB, q5_quants(b, 2, 6), 16);
  return runs16(kiln_mul(trail(half_at(b, 0), 1), q));
}
static T *deq_q5_1(T *b) { /* d f16 | m f16 | qh[4] | qs[16] */
  T *q = q5_quants(b, 4, 8);
  return runs16(kiln_add(kiln_mul(trail(half_at(b, 0), 1), q), trail(half_at(b, 2), 1)));
}
static T *deq_q8_0(T *b) { /* d f16 | qs int8[32] */
  int64_t R = kiln_dim(b, 0), NB = kiln_dim(b, 1);
  T *q = kiln_reshape(f32(kiln_bitcast(bytes(b, 2, 34), KILN_I8)), 4, (int64_t[]){R, NB, 2, 16});
  return runs16(kiln_mul(trail(half_at(b, 0), 1), q));
}

/* Q2_K: scales[16] | qs[64] | d f16 | dmin f16. Each half of 128 elements uses 32 qs bytes;
 * quarter k (32 elements) takes bits 2k..2k+1 of byte l. Run r of 16 elements has scale
 * d*(scales[r] & 15) and offset -dmin*(scales[r] >> 4). */
static T *deq_q2_k(T *b) {
  int64_t R = kiln_dim(b, 0), NB = kiln_dim(b, 1);
  T *qs = kiln_reshape(bytes(b, 16, 80), 5, (int64_t[]){R, NB, 2, 2, 16});   /* (half,l/16,l%16) */
  T *q = f32(kiln_permute(split_bits(qs, 4, 2), (int[]){0, 1, 2, 4, 3, 5})); /* (R,NB,2,4,2,16) */
  T *sc = kiln_reshape(bytes(b, 0, 16), 6, (int64_t[]){R, NB, 2, 4, 2, 1});
  T *dl = kiln_mul(trail(half_at(b, 80), 3), f32(u8s(sc, KILN_AND, 15)));
  T *ml = kiln_mul(trail(half_at(b, 82), 3), f32(u8s(sc, KILN_SHR, 4)));
  return runs16(kiln_sub(kiln_mul(dl, q), ml));
}

/* Q3_K: hmask[32] | qs[64] | scales[12] | d f16. The low 2 bits as Q2_K; element j is that
 * minus 4 unless bit j/32 of hmask byte j%32 is set. Run i of 16 has scale d*(s[i] - 32), s[i]
 * 6 bits: nibble i/8 of byte i%8, and bits 2*(i/4), 2*(i/4)+1 of byte 8 + i%4 as the top two. */
static T *deq_q3_k(T *b) {
  int64_t R = kiln_dim(b, 0), NB = kiln_dim(b, 1);
  T *qs = kiln_reshape(bytes(b, 32, 96), 5, (int64_t[]){R, NB, 2, 2, 16});
  T *lo = kiln_permute(split_bits(qs, 4, 2), (int[]){0, 1, 2, 4, 3, 5}); /* (R,NB,2,4,2,16) */
  T *hm = kiln_reshape(bytes(b, 0, 32), 4, (int64_t[]){R, NB, 2, 16});   /* (l/16, l%16) */
  T *hi = kiln_permute(split_bits(hm, 8, 1), (int[]){0, 1, 3, 2, 4});    /* (R,NB,8,2,16) */
  hi = kiln_reshape(hi, 6, (int64_t[]){R, NB, 2, 4, 2, 16});
  T *q = f32(kiln_sub(lo, u8s(u8s(hi, KILN_XOR, 1), KILN_SHL, 2)));
  T *sl = kiln_reshape(split_bits(bytes(b, 96, 104), 2, 4), 3, (int64_t[]){R, NB, 16});
  T *sh = kiln_reshape(split_bits(bytes(b, 104, 108), 4, 2), 3, (int64_t[]){R, NB, 16});
  T *sc = kiln_binary_s(KILN_SUB, kiln_binary(KILN_OR, sl, u8s(sh, KILN_SHL, 4)), 32);
  sc = kiln_reshape(f32(sc), 6, (int64_t[]){R, NB, 2, 4, 2, 1});
  return runs16(kiln_mul(kiln_mul(trail(half_at(b, 108), 3), sc), q));
}

/* Q4_K / Q5_K: d f16 | dmin f16 | scales[12] (eight 6-bit scales and mins) | ... Sub-block j of
 * 32 has scale d*sc[j] and offset -dmin*m[j]. q is (R, NB, 4, 2, 2, 16): (j/2, j%2, l/16, l%16) */
static T *k_sub32(T *b, T *q) {
  int64_t R = kiln_dim(b, 0), NB = kiln_dim(b, 1);
  T *s03 = bytes(b, 4, 8), *s47 = bytes(b, 8, 12), *s811 = bytes(b, 12, 16);
  T *sc_lo = u8s(s03, KILN_AND, 63), *m_lo = u8s(s47, KILN_AND, 63);
  T *sc_hi = kiln_binary(KILN_OR, u8s(s811, KILN_AND, 15), u8s(u8s(s03, KILN_SHR, 6), KILN_SHL, 4));
  T *m_hi = kiln_binary(KILN_OR, u8s(s811, KILN_SHR, 4), u8s(u8s(s47, KILN_SHR, 6), KILN_SHL, 4));
  int64_t sshape[] = {R, NB, 4, 2, 1, 1};
  T *sc = kiln_reshape(f32(kiln_cat(2, (T *[]){sc_lo, sc_hi}, -1)), 6, sshape);
  T *m = kiln_reshape(f32(kiln_cat(2, (T *[]){m_lo, m_hi}, -1)), 6, sshape);
  T *d = trail(half_at(b, 0), 3), *dmin = trail(half_at(b, 2), 3);
  return runs16(kiln_sub(kiln_mul(kiln_mul(d, sc), f32(q)), kiln_mul(dmin, m)));
}
/* the low 4 bits of Q4_K / Q5_K: qs byte c*32+l holds element l of sub-block 2c in its low
 * nibble and of sub-block 2c+1 in its high nibble; (R, NB, 4, 2, 2, 16) i32 */
static T *k_nibbles(T *b, int64_t qs) {
  int64_t R = kiln_dim(b, 0), NB = kiln_dim(b, 1);
  T *x = kiln_reshape(bytes(b, qs, qs + 128), 5, (int64_t[]){R, NB, 4, 2, 16}); /* (c,l/16,l%16) */
  return kiln_permute(split_bits(x, 2, 4), (int[]){0, 1, 2, 4, 3, 5});
}
static T *deq_q4_k(T *b) { return k_sub32(b, k_nibbles(b, 16)); } /* ... | qs[128] */
/* Q5_K: ... | qh[32] | qs[128]; bit j of qh byte l is the fifth bit of element l of sub-block j */
static T *deq_q5_k(T *b) {
  int64_t R = kiln_dim(b, 0), NB = kiln_dim(b, 1);
  T *qh = kiln_reshape(bytes(b, 16, 48), 4, (int64_t[]){R, NB, 2, 16});
  T *hi = kiln_permute(split_bits(qh, 8, 1), (int[]){0, 1, 3, 2, 4}); /* (R,NB,8,2,16) */
  hi = kiln_reshape(hi, 6, (int64_t[]){R, NB, 4, 2, 2, 16});
  return k_sub32(b, kiln_binary(KILN_OR, k_nibbles(b, 48), u8s(hi, KILN_SHL, 4)));
}

/* Q6_K: ql[128] | qh[64] | scales int8[16] | d f16. Each half of 128 elements uses 64 ql bytes,
 * 32 qh bytes and 8 scales; quarter k (32 elements) takes the low (k < 2) or high nibble of ql
 * bytes (k & 1)*32 + l and bits 2k..2k+1 of qh byte l, minus 32, scaled by scales[2k + l/16]. */
static T *deq_q6_k(T *b) {
  int64_t R = kiln_dim(b, 0), NB = kiln_dim(b, 1);
  T *ql =
      kiln_reshape(bytes(b, 0, 128), 6, (int64_t[]){R, NB, 2, 2, 2, 16}); /* (half,k&1,l/16,l%16) */
  T *lo = split_bits(ql, 2, 4);                                           /* (R,NB,2,2,2,2,16) */
  lo = kiln_permute(lo, (int[]){0, 1, 2, 5, 3, 4, 6}); /* (R,NB,half,k>>1,k&1,l/16,l%16) */
  lo = kiln_reshape(lo, 6, (int64_t[]){R, NB, 2, 4, 2, 16});
  T *qh = kiln_reshape(bytes(b, 128, 192), 5, (int64_t[]){R, NB, 2, 2, 16});
  T *hi = kiln_permute(split_bits(qh, 4, 2), (int[]){0, 1, 2, 4, 3, 5}); /* (R,NB,2,4,2,16) */
  T *q = kiln_binary_s(KILN_SUB, f32(kiln_binary(KILN_OR, lo, u8s(hi, KILN_SHL, 4))), 32);
  T *sc = kiln_reshape(f32(kiln_bitcast(bytes(b, 192, 208), KILN_I8)), 6,
                       (int64_t[]){R, NB, 2, 4, 2, 1});
  T *d = trail(half_at(b, 208), 3);
  return runs16(kiln_mul(kiln_mul(d, sc), q));
}

/* IQ4_NL / IQ4_XS: 4-bit indices into 16 fixed int8 levels. The table is arithmetic, not a
 * load: level + 128 is byte i%4 of the u32 constant i/4 (picked by compares), so the lookup
 * fuses and vectorizes like the shifts. */
static const int iq4_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};
static T *iq4_values(T *q) { /* i32 indices 0..15 -> f32 levels */
  T *u = kiln_cast(q, KILN_U32), *w[4];
  for (int k = 0; k < 4; k++) {
    uint32_t c = 0;
    for (int i = 0; i < 4; i++)
      c |= (uint32_t)(iq4_levels[4 * k + i] + 128) << 8 * i;
    w[k] = kiln_scalar(KILN_U32, c);
  }
  T *lo = kiln_where(u8s(u, KILN_LT, 4), w[0], w[1]);
  T *hi = kiln_where(u8s(u, KILN_LT, 12), w[2], w[3]);
  T *word = kiln_where(u8s(u, KILN_LT, 8), lo, hi);
  T *byte = u8s(kiln_binary(KILN_SHR, word, u8s(u8s(u, KILN_AND, 3), KILN_SHL, 3)), KILN_AND, 255);
  return kiln_binary_s(KILN_SUB, f32(byte), 128);
}
static T *deq_iq4_nl(T *b) { /* d f16 | qs[16], nibbles as Q4_0 */
  return runs16(kiln_mul(trail(half_at(b, 0), 1), iq4_values(split_bits(bytes(b, 2, 18), 2, 4))));
}
/* IQ4_XS: d f16 | scales_h u16 | scales_l[4] | qs[128]. Sub-block j of 32 reads qs bytes
 * 16j..16j+15 as IQ4_NL does, scaled by d*(s[j] - 32), s[j] 6 bits: nibble j%2 of scales_l[j/2],
 * and bits 2j..2j+1 of scales_h as the top two. */
static T *deq_iq4_xs(T *b) {
  int64_t R = kiln_dim(b, 0), NB = kiln_dim(b, 1);
  T *qs = kiln_reshape(bytes(b, 8, 136), 4, (int64_t[]){R, NB, 8, 16});
  T *v = iq4_values(split_bits(qs, 2, 4));                                     /* (R,NB,8,2,16) */
  T *sl = kiln_permute(split_bits(bytes(b, 4, 8), 2, 4), (int[]){0, 1, 3, 2}); /* (R,NB,4,2) */
  T *sh = kiln_permute(split_bits(bytes(b, 2, 4), 4, 2), (int[]){0, 1, 3, 2}); /* (R,NB,2,4) */
  int64_t s8[] = {R, NB, 8};
  T *s = kiln_binary(KILN_OR, kiln_reshape(sl, 3, s8), u8s(kiln_reshape(sh, 3, s8), KILN_SHL, 4));
  s = kiln_reshape(f32(kiln_binary_s(KILN_SUB, s, 32)), 5, (int64_t[]){R, NB, 8, 1, 1});
  return runs16(kiln_mul(kiln_mul(trail(half_at(b, 0), 2), s), v));
}

typedef T *(*deq_fn)(T *);
/* the block formats block_decoder knows, for error messages */
#define QUANT_TYPES "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS"
static deq_fn block_decoder(int type) {
  switch (type) {
  case GT_Q4_0:
    return deq_q4_0;
  case GT_Q4_1:
    return deq_q4_1;
  case GT_Q5_0:
    return deq_q5_0;
  case GT_Q5_1:
    return deq_q5_1;
  case GT_Q8_0:
    return deq_q8_0;
  case GT_Q2_K:
    return deq_q2_k;
  case GT_Q3_K:
    return deq_q3_k;
  case GT_Q4_K:
    return deq_q4_k;
  case GT_Q5_K:
    return deq_q5_k;
  case GT_Q6_K:
    return deq_q6_k;
  case GT_IQ4_NL:
    return deq_iq4_nl;
  case GT_IQ4_XS:
    return deq_iq4_xs;
  default:
    return NULL;
  }
}

bool kiln_dequantize_supported(int type) {
  return type == GT_F32 || type == GT_F16 || type == GT_BF16 || block_decoder(type);
}

T *kiln_dequantize_runs(T *raw, int type, int64_t rows, int64_t cols) {
  if (!raw) {
    kn_err("dequantize: tensor is NULL (an earlier op failed)");
    return NULL;
  }
  const char *tn = kiln_ggml_type_name(type);
  if (!block_decoder(type)) {
    kn_err("dequantize: tensor type %s (%d) is not a supported block format (" QUANT_TYPES " are)",
           tn, type);
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
  return block_decoder(type)(blocks);
}

T *kiln_dequantize(T *raw, int type, int64_t rows, int64_t cols) {
  T *y = kiln_dequantize_runs(raw, type, rows, cols);
  return y ? kiln_reshape(y, 2, (int64_t[]){rows, cols}) : NULL;
}

/* ---- 8-bit products: a Q4_1 or Q8_0 matrix times activations in integers ----
 * The activations are quantized per block of 32 to int8 with an f32 scale, x = s*q (as ggml
 * does for these products), so that a block's products are eight DOT4s of unsigned codes and
 * packed int8, exact in i32, scaled once:
 *   sum_j (d*c_j + m) * s*q_j = (sum_j c_j*q_j + (m/d) * sum_j q_j) * d*s,
 * two multiply-adds per block and row (a block with d = 0 is stored as d = m, codes 1, m/d = 0:
 * the same weights).
 * Q4_1 stores w = d*c + m with c in 0..15; Q8_0 stores w = d*c' with c' in -128..127, taken as
 * c = c' + 128 (unsigned, as DOT4 wants) and m = -128*d. The matrix is repacked at load, 8 rows
 * interleaved: words (rows/8, blocks, W, 8) u32, for each group of 8 rows and block: the 8 rows'
 * d, their m/d (f32 bits), then the codes of each row: Q4_1 (W = 6) 4 words (word k: elements
 * 4k..4k+3 of the block in its low nibbles, 16+4k.. in its high ones, as the file stores them),
 * Q8_0 (W = 10) 8 words of 4 bytes. Read along the 8 rows, every operand of a block is one
 * contiguous vector, so the product's 8 outputs are the lanes of one accumulator (codegen's
 * LANES). */
enum { Q4_1_WORDS = 6, Q8_0_WORDS = 10, WORD_ROWS = 8 };

/* x (..., K) as 8-bit products read it: packed int8 words (n, K/32, 8) u32 (word 4h+k holds
 * elements 16h+4k.. of its block, as the codes do), the scale s (n, K/32) and the sum of the
 * block's q (n, K/32), n the rows of x. In the caller's scope: several products of one input
 * share them. */
kn_act8 kn_quantize8(T *x) {
  kn_act8 a = {0};
  int64_t K = kiln_dim(x, -1), n = kiln_numel(x) / K, nb = K / 32;
  if (K % 32) {
    kn_err("linear: 8-bit products want rows of a multiple of 32 values, not %lld", (long long)K);
    return a;
  }
  x = kiln_reshape(kiln_cast(x, KILN_F32), 2, (int64_t[]){n, K});
  T *xb = kiln_reshape(x, 3, (int64_t[]){n, nb, 32});
  T *amax = kiln_max(kiln_unary(KILN_ABS, xb), 1, (int[]){-1}, true);
  T *sc = kiln_binary_s(KILN_MUL, amax, 1.0 / 127);
  T *inv = kiln_where(kiln_binary_s(KILN_GT, amax, 0), kiln_div(kiln_scalar(KILN_F32, 1), sc),
                      kiln_scalar(KILN_F32, 0));
  T *v = kiln_mul(xb, inv); /* rounded half away from zero */
  T *half = kiln_where(kiln_binary_s(KILN_LT, v, 0), kiln_scalar(KILN_F32, -0.5),
                       kiln_scalar(KILN_F32, 0.5));
  T *q = kiln_cast(kiln_add(v, half), KILN_I32);
  T *qsum = kiln_cast(kiln_sum(q, 1, (int[]){-1}, true), KILN_F32);
  a.qs = kiln_contiguous(kiln_reshape(qsum, 2, (int64_t[]){n, nb}));
  a.s = kiln_contiguous(kiln_reshape(sc, 2, (int64_t[]){n, nb}));
  T *bytes = kiln_cast(u8s(kiln_reshape(q, 4, (int64_t[]){n, nb, 8, 4}), KILN_AND, 255), KILN_U32);
  T *sh = kiln_cast(kiln_binary_s(KILN_MUL, kiln_arange(0, 4, 1, KILN_I32), 8), KILN_U32);
  a.words = kiln_cast(kiln_sum(kiln_binary(KILN_SHL, bytes, sh), 1, (int[]){-1}, false), KILN_U32);
  return a;
}

T *kn_linear_words(T *x, const kn_act8 *xa, T *w, T *b) {
  if (!x || !w) return NULL;
  int nd = kiln_ndim(x);
  int64_t K = kiln_dim(x, -1), G = kiln_dim(w, 0), nb = kiln_dim(w, 1), R = G * WORD_ROWS;
  int W = kiln_ndim(w) == 4 ? (int)kiln_dim(w, 2) : 0;
  if (kiln_dtype_of(w) != KILN_U32 || (W != Q4_1_WORDS && W != Q8_0_WORDS) ||
      kiln_dim(w, 3) != WORD_ROWS || K != nb * 32) {
    char a[200], c[200];
    kn_err("linear: input %s does not match the words %s (want (rows/8, K/32, 6 or 10, 8) u32)",
           kn_shape_str(a, nd, kiln_shape(x)), kn_shape_str(c, kiln_ndim(w), kiln_shape(w)));
    return NULL;
  }
  kiln_scope_begin();
  int64_t n = kiln_numel(x) / K;
  kn_act8 own = xa && xa->words ? *xa : kn_quantize8(x);
  T *xw = own.words, *s = own.s, *qs = own.qs;
  /* activations (n, 1, 1, nb) against weights (G, 8, nb): outputs (n, G, 8), reduce over nb */
  int64_t xs[] = {n, 1, 1, nb};
  T *wv = kiln_permute(w, (int[]){0, 3, 1, 2}); /* (G, 8, nb, W) */
  T *word[Q8_0_WORDS], *xk[8];
  for (int k = 0; k < W; k++)
    word[k] = kiln_reshape(kiln_slice(wv, 3, k, k + 1, 1), 3, (int64_t[]){G, WORD_ROWS, nb});
  for (int k = 0; k < 8; k++) /* elements 4k..4k+3 of each block */
    xk[k] = kiln_reshape(kiln_slice(xw, 2, k, k + 1, 1), 4, xs);
  /* the block's 32 products summed in i32, one DOT4 after another (each add of one is one
   * accumulating instruction on CPUs with VNNI) */
  T *dot = NULL;
  for (int k = 0; k < 8; k++) {
    T *t;
    if (W == Q4_1_WORDS) /* low nibbles: elements 4k.. (k < 4), high: 16 + 4(k - 4).. */
      t = u8s(k < 4 ? word[2 + k] : u8s(word[k - 2], KILN_SHR, 4), KILN_AND, 0x0f0f0f0f);
    else
      t = word[2 + k];
    t = kiln_binary(KILN_DOT4, t, xk[k]);
    dot = dot ? kiln_add(dot, t) : t;
  }
  T *d = kiln_bitcast(word[0], KILN_F32), *md = kiln_bitcast(word[1], KILN_F32);
  T *y = kiln_mul(kiln_add(f32(dot), kiln_mul(md, kiln_reshape(qs, 4, xs))),
                  kiln_mul(d, kiln_reshape(s, 4, xs)));
  y = kiln_sum(y, 1, (int[]){3}, false); /* (n, G, 8) */
  int64_t shape[KILN_MAX_DIMS];
  memcpy(shape, kiln_shape(x), sizeof(int64_t) * (size_t)nd);
  shape[nd - 1] = R;
  y = kiln_reshape(y, nd, shape);
  if (y && b) y = kiln_add(y, b);
  kiln_keep(y);
  kiln_scope_end();
  return y;
}

/* A GGUF tensor checked for use; NULL with an error otherwise. */
static const kiln_gguf_tensor *usable(const kiln_gguf *g, const char *name) {
  const kiln_gguf_tensor *t = g && name ? kiln_gguf_find_tensor(g, name) : NULL;
  if (!t)
    kn_err("gguf: no tensor named '%s'", name ? name : "(null)");
  else if (!kiln_dequantize_supported(t->type)) {
    kn_err("gguf: tensor '%s' has type %s, which kiln cannot compute with yet (F32, F16, "
           "BF16, " QUANT_TYPES " are supported)",
           name, kiln_ggml_type_name(t->type));
    t = NULL;
  }
  return t;
}

kiln_dtype kn_ggml_storage(int type) {
  return type == GT_F32    ? KILN_F32
         : type == GT_F16  ? KILN_F16
         : type == GT_BF16 ? KILN_BF16
                           : KILN_U8;
}

T *kn_ggml_values(T *raw, int type, int64_t rows, int64_t cols, bool runs) {
  kiln_dtype dt = kn_ggml_storage(type);
  if (dt == KILN_U8)
    return runs ? kiln_dequantize_runs(raw, type, rows, cols)
                : kiln_dequantize(raw, type, rows, cols);
  T *x = runs ? kiln_reshape(raw, 4, (int64_t[]){rows, cols / 16, 1, 16})
              : kiln_reshape(raw, 2, (int64_t[]){rows, cols});
  return dt == KILN_F32 ? x : kiln_cast(x, KILN_F32);
}

/* The tensor's data as stored (float elements (rows, cols), or raw blocks (rows, blocks, block
 * bytes)): on a device without host memory, one upload. */
static T *gguf_stored(const kiln_gguf_tensor *t) {
  int64_t cols = t->dims[0], rows = t->numel / cols;
  kiln_dtype dt = kn_ggml_storage(t->type);
  int64_t shape[3] = {rows, cols, 0};
  if (dt == KILN_U8)
    shape[1] = cols / kiln_ggml_block_size(t->type), shape[2] = kiln_ggml_type_size(t->type);
  return kiln_from_blob(dt, dt == KILN_U8 ? 3 : 2, shape, t->data);
}
T *kn_gguf_words(const kiln_gguf *g, const char *name) {
  const kiln_gguf_tensor *t = kiln_gguf_find_tensor(g, name);
  if (!t || (t->type != GT_Q4_1 && t->type != GT_Q8_0) || t->ndim != 2 || t->dims[1] % WORD_ROWS)
    return NULL;
  bool q8 = t->type == GT_Q8_0;
  int W = q8 ? Q8_0_WORDS : Q4_1_WORDS;
  size_t bs = kiln_ggml_type_size(t->type); /* block bytes */
  int64_t nb = t->dims[0] / 32, G = t->dims[1] / WORD_ROWS;
  uint32_t *p = malloc(sizeof(uint32_t) * (size_t)(G * nb * W * WORD_ROWS));
  if (!p) return NULL;
  const uint8_t *src = t->data;
  for (int64_t r = 0; r < G * WORD_ROWS; r++)
    for (int64_t j = 0; j < nb; j++) {
      const uint8_t *blk = src + (size_t)(r * nb + j) * bs; /* d f16 | Q4_1: m f16 | codes */
      uint32_t *o = p + ((r / WORD_ROWS * nb + j) * W) * WORD_ROWS + r % WORD_ROWS;
      kn_fu d = {.f = kn_h2f((uint16_t)(blk[0] | blk[1] << 8))}, md;
      float m = q8 ? -128 * d.f : kn_h2f((uint16_t)(blk[2] | blk[3] << 8));
      const uint8_t *c = blk + (q8 ? 2 : 4);
      bool flat = d.f == 0; /* every weight m: codes 1 times d = m, plus 0 */
      md.f = flat ? 0 : m / d.f;
      if (flat) d.f = m;
      o[0] = d.u, o[WORD_ROWS] = md.u;
      for (int k = 0; k < W - 2; k++) { /* Q8_0: int8 codes + 128 */
        uint32_t v = 0;
        for (int b = 0; b < 4; b++)
          v |= (uint32_t)(uint8_t)(flat ? (q8 ? 1 : 0x11) : c[4 * k + b] + (q8 ? 128 : 0)) << 8 * b;
        o[(2 + k) * WORD_ROWS] = v;
      }
    }
  T *w = kiln_from_data(KILN_U32, 4, (int64_t[]){G, nb, W, WORD_ROWS}, p);
  free(p);
  return w;
}
T *kn_gguf_stored(const kiln_gguf *g, const char *name) {
  const kiln_gguf_tensor *t = usable(g, name);
  return t ? gguf_stored(t) : NULL;
}

/* The tensor's data as f32 rows (rows, cols) or runs (rows, blocks, runs per block, 16). */
static T *gguf_rows(const kiln_gguf_tensor *t, bool runs) {
  int64_t cols = t->dims[0], rows = t->numel / cols;
  return kn_ggml_values(gguf_stored(t), t->type, rows, cols, runs);
}

T *kiln_gguf_weight(const kiln_gguf *g, const char *name) {
  const kiln_gguf_tensor *t = usable(g, name);
  if (!t) return NULL;
  int64_t shape[4]; /* GGUF lists the fastest dim first */
  for (int i = 0; i < t->ndim; i++)
    shape[i] = t->dims[t->ndim - 1 - i];
  return kiln_reshape(gguf_rows(t, false), t->ndim, shape);
}

T *kiln_gguf_weight_runs(const kiln_gguf *g, const char *name) {
  const kiln_gguf_tensor *t = usable(g, name);
  if (!t) return NULL;
  if (t->dims[0] % 16) {
    kn_err("gguf: tensor '%s' rows of %lld elements do not split into runs of 16", name,
           (long long)t->dims[0]);
    return NULL;
  }
  return gguf_rows(t, true);
}
