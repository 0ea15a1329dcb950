/* test_quant.c — ggml block dequantization as kiln ops against a scalar reference written from
 * the block layouts (one loop per format, element by element), on every device; against the
 * Python gguf package's dequantizers (tests/nn/quant_check.py), with extreme scales; plus the
 * errors of kiln_dequantize. */
#include "../ref.h"
#include "../test.h"
#include "../util.h"

#include <stdlib.h>

enum { Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q2_K = 10, Q3_K = 11, Q4_K = 12,
       Q5_K = 13, Q6_K = 14, IQ4_NL = 20, IQ4_XS = 23 };
static const int block_types[] = {Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K,
                                  Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS};
#define N_BLOCK_TYPES ((int)(sizeof block_types / sizeof block_types[0]))
static const int iq4_levels[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                   1,    13,   25,  38,  53,  69,  89,  113};

static float h2f(const uint8_t *p) { /* IEEE half, little-endian */
  unsigned h = (unsigned)p[0] | (unsigned)p[1] << 8, e = (h >> 10) & 31, f = h & 1023;
  double v = e == 0 ? ldexp(f, -24) : e == 31 ? (f ? NAN : INFINITY) : ldexp(f + 1024, (int)e - 25);
  return (float)((h >> 15) ? -v : v);
}
static uint32_t u32_le(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
/* Kinds of f16 scale: of a realistic size (2^-9 .. 2^-2), any finite half, the largest (65504),
 * subnormal, zero; each with a random sign. */
enum { SCALE_USUAL, SCALE_ANY, SCALE_MAX, SCALE_SUBNORMAL, SCALE_ZERO, SCALE_KINDS };
static void put_half(uint8_t *p, int kind, ref_rng *g) {
  unsigned f = (unsigned)ref_rng_int(g, 0, 1023), h = 0;
  switch (kind) {
  case SCALE_USUAL: h = (15 + (unsigned)ref_rng_int(g, -6, -2)) << 10 | f; break;
  case SCALE_ANY: h = (unsigned)ref_rng_int(g, 0, 30) << 10 | f; break;
  case SCALE_MAX: h = 0x7bff; break;
  case SCALE_SUBNORMAL: h = (unsigned)ref_rng_int(g, 1, 1023); break;
  case SCALE_ZERO: break;
  }
  h |= ref_rng_int(g, 0, 1) ? 0x8000u : 0;
  p[0] = (uint8_t)h, p[1] = (uint8_t)(h >> 8);
}
/* byte offsets of a format's f16 fields: the scale d, then dmin or m (-1 when none) */
static void half_fields(int type, int off[2]) {
  off[0] = type == Q6_K ? 208 : type == Q3_K ? 108 : type == Q2_K ? 80 : 0;
  bool m = type == Q4_1 || type == Q5_1 || type == Q4_K || type == Q5_K;
  off[1] = type == Q2_K ? 82 : m ? 2 : -1;
}
/* the 6-bit scale i and min i of Q4_K / Q5_K from their 12 bytes */
static void k_scale_min(const uint8_t *s, int i, int *sc, int *m) {
  if (i < 4) *sc = s[i] & 63, *m = s[i + 4] & 63;
  else *sc = (s[i + 4] & 15) | ((s[i - 4] >> 6) << 4), *m = (s[i + 4] >> 4) | ((s[i] >> 6) << 4);
}

/* y[256 or 32 per block] of one block */
static void ref_block(int type, const uint8_t *b, float *y) {
  switch (type) {
  case Q5_0:
  case Q5_1: { /* d | (m) | qh u32 | qs[16] */
    const uint8_t *qs = b + (type == Q5_0 ? 6 : 8);
    uint32_t qh = u32_le(b + (type == Q5_0 ? 2 : 4));
    for (int j = 0; j < 32; j++) {
      int q = (j < 16 ? (qs[j] & 15) : (qs[j - 16] >> 4)) | (int)((qh >> j) & 1) << 4;
      y[j] = type == Q5_0 ? h2f(b) * (float)(q - 16) : h2f(b) * (float)q + h2f(b + 2);
    }
    break;
  }
  case Q2_K: /* scales[16] | qs[64] | d | dmin */
    for (int j = 0; j < 256; j++) {
      int half = j / 128, quarter = j % 128 / 32, l = j % 32, s = b[j / 16];
      int q = (b[16 + half * 32 + l] >> (2 * quarter)) & 3;
      y[j] = h2f(b + 80) * (float)(s & 15) * (float)q - h2f(b + 82) * (float)(s >> 4);
    }
    break;
  case Q3_K: { /* hmask[32] | qs[64] | scales[12] | d */
    const uint8_t *hm = b, *qs = b + 32, *s = b + 96;
    for (int j = 0; j < 256; j++) {
      int half = j / 128, quarter = j % 128 / 32, l = j % 32, i = j / 16;
      int sc = (i < 8 ? s[i] & 15 : s[i - 8] >> 4) | ((s[8 + i % 4] >> (2 * (i / 4))) & 3) << 4;
      int q = ((qs[half * 32 + l] >> (2 * quarter)) & 3) - ((hm[l] >> (j / 32)) & 1 ? 0 : 4);
      y[j] = h2f(b + 108) * (float)(sc - 32) * (float)q;
    }
    break;
  }
  case Q5_K: { /* d | dmin | scales[12] | qh[32] | qs[128] */
    const uint8_t *qh = b + 16, *qs = b + 48;
    for (int j = 0; j < 256; j++) {
      int sub = j / 32, l = j % 32, sc, m;
      k_scale_min(b + 4, sub, &sc, &m);
      uint8_t byte = qs[(sub / 2) * 32 + l];
      int q = (sub % 2 ? byte >> 4 : byte & 15) | ((qh[l] >> sub) & 1) << 4;
      y[j] = h2f(b) * (float)sc * (float)q - h2f(b + 2) * (float)m;
    }
    break;
  }
  case IQ4_NL: /* d | qs[16] */
    for (int j = 0; j < 32; j++) {
      int q = j < 16 ? (b[2 + j] & 15) : (b[2 + j - 16] >> 4);
      y[j] = h2f(b) * (float)iq4_levels[q];
    }
    break;
  case IQ4_XS: { /* d | scales_h u16 | scales_l[4] | qs[128] */
    unsigned sh = (unsigned)b[2] | (unsigned)b[3] << 8;
    for (int j = 0; j < 256; j++) {
      int sub = j / 32, l = j % 32;
      int ls = ((b[4 + sub / 2] >> (4 * (sub % 2))) & 15) | (int)((sh >> (2 * sub)) & 3) << 4;
      uint8_t byte = b[8 + sub * 16 + l % 16];
      int q = l < 16 ? byte & 15 : byte >> 4;
      y[j] = h2f(b) * (float)(ls - 32) * (float)iq4_levels[q];
    }
    break;
  }
  case Q4_0:
    for (int j = 0; j < 32; j++) {
      int q = j < 16 ? (b[2 + j] & 15) : (b[2 + j - 16] >> 4);
      y[j] = h2f(b) * (float)(q - 8);
    }
    break;
  case Q4_1:
    for (int j = 0; j < 32; j++) {
      int q = j < 16 ? (b[4 + j] & 15) : (b[4 + j - 16] >> 4);
      y[j] = h2f(b) * (float)q + h2f(b + 2);
    }
    break;
  case Q8_0:
    for (int j = 0; j < 32; j++) y[j] = h2f(b) * (float)(int8_t)b[2 + j];
    break;
  case Q4_K: {
    const uint8_t *s = b + 4, *qs = b + 16;
    for (int j = 0; j < 256; j++) {
      int sub = j / 32, l = j % 32, sc, m;
      k_scale_min(s, sub, &sc, &m);
      uint8_t byte = qs[(sub / 2) * 32 + l];
      int q = sub % 2 ? byte >> 4 : byte & 15;
      y[j] = h2f(b) * (float)sc * (float)q - h2f(b + 2) * (float)m;
    }
    break;
  }
  case Q6_K: {
    const uint8_t *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    for (int j = 0; j < 256; j++) {
      int half = j / 128, r = j % 128, quarter = r / 32, l = r % 32;
      uint8_t lb = ql[half * 64 + (quarter % 2) * 32 + l];
      int lo = quarter < 2 ? lb & 15 : lb >> 4;
      int hi = (qh[half * 32 + l] >> (2 * quarter)) & 3;
      y[j] = h2f(b + 208) * (float)sc[half * 8 + quarter * 2 + l / 16] * (float)((lo | hi << 4) - 32);
    }
    break;
  }
  }
}

/* random bytes, with the format's f16 fields set to finite scales of the given kinds */
static void fill_block(int type, uint8_t *b, int64_t bb, ref_rng *g, int kind_d, int kind_m) {
  int off[2];
  for (int64_t i = 0; i < bb; i++) b[i] = (uint8_t)ref_rng_int(g, 0, 255);
  half_fields(type, off);
  put_half(b + off[0], kind_d, g);
  if (off[1] >= 0) put_half(b + off[1], kind_m, g);
}

static void check_type(int type, int64_t rows, int64_t cols, ref_rng *g) {
  int64_t bs = kiln_ggml_block_size(type), bb = kiln_ggml_type_size(type), nb = rows * cols / bs;
  uint8_t *raw = malloc((size_t)(nb * bb));
  float *want = malloc(sizeof(float) * (size_t)(rows * cols)), *got = malloc(sizeof(float) * (size_t)(rows * cols));
  for (int64_t i = 0; i < nb; i++) {
    fill_block(type, raw + i * bb, bb, g, SCALE_USUAL, SCALE_USUAL);
    ref_block(type, raw + i * bb, want + i * bs);
  }
  int64_t n = nb * bb;
  kiln_tensor *r = kiln_from_blob(KILN_U8, 1, &n, raw);
  kiln_tensor *y = kiln_dequantize(r, type, rows, cols);
  REQUIRE(y && kiln_ndim(y) == 2 && kiln_dim(y, 0) == rows && kiln_dim(y, 1) == cols);
  /* fused into a consumer: row sums (a reduce reading the dequantized values), realized before
   * y so that the reduce's kernel dequantizes the blocks itself rather than reading y */
  kiln_tensor *s = kiln_sum(y, 1, (int[]){1}, false);
  float *sums = malloc(sizeof(float) * (size_t)rows);
  REQUIRE(kiln_to_host(s, sums, sizeof(float) * (size_t)rows) == 0);
  REQUIRE(kiln_to_host(y, got, sizeof(float) * (size_t)(rows * cols)) == 0);
  int bad = 0;
  for (int64_t i = 0; i < rows * cols && bad < 3; i++)
    if (!(fabsf(got[i] - want[i]) <= 1e-6f * fabsf(want[i]) + 1e-12f)) {
      CHECKF(false, "%s element %lld: got %g, want %g", kiln_ggml_type_name(type), (long long)i, got[i], want[i]);
      bad++;
    }
  for (int64_t i = 0; i < rows; i++) {
    double w = 0, a = 0;
    for (int64_t j = 0; j < cols; j++) w += want[i * cols + j], a += fabs(want[i * cols + j]);
    CHECK_NEAR(sums[i], w, 1e-5 * a + 1e-9);
  }
  free(raw), free(want), free(got), free(sums);
}

TEST_DEVICES(quant_dequantize_blocks) {
  (void)device;
  ref_rng g = ref_rng_seed(test_seed(701));
  check_type(Q4_0, 3, 64, &g);
  check_type(Q4_1, 2, 96, &g);
  check_type(Q8_0, 4, 32, &g);
  check_type(Q4_K, 2, 512, &g);
  check_type(Q6_K, 3, 256, &g);
  check_type(Q5_0, 3, 96, &g);
  check_type(Q5_1, 2, 128, &g);
  check_type(Q2_K, 3, 512, &g);
  check_type(Q3_K, 2, 768, &g);
  check_type(Q5_K, 3, 512, &g);
  check_type(IQ4_NL, 3, 96, &g);
  check_type(IQ4_XS, 2, 512, &g);
}

/* ---- against the Python gguf package ----------------------------------------------------------
 * Every format, with blocks whose f16 scales are of every kind (usual, any finite, 65504,
 * subnormal, zero, both signs; with two scales, every pair of kinds), must give the very bits
 * that gguf.quants.dequantize gives (tests/nn/quant_check.py). Bit-identical, not within a
 * tolerance: a scale's significand has 11 bits and the integers it is multiplied by (sub-scale,
 * quant, level) at most 12 more, so every product is exact in f32 (also with a subnormal f16,
 * which is a normal f32, and with 65504, far below f32's overflow); the only rounding is the
 * one add or subtract of the formats with an offset (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K), done once
 * on the same exact operands on both sides, so neither the order of the products nor a fused
 * multiply-add can change a bit. */
enum { PY_ROWS = 5, PY_BLOCKS = 5 }; /* per row: 25 blocks, one per pair of scale kinds */
static struct {
  int64_t cols;
  uint8_t *raw;
  float *want; /* the package's values; NULL when it could not dequantize the type */
} py[N_BLOCK_TYPES];

static void py_compare(const char *device) {
  (void)device;
  for (int t = 0; t < N_BLOCK_TYPES; t++) {
    if (!py[t].want) continue;
    int type = block_types[t];
    int64_t n = PY_ROWS * py[t].cols, nb = n / kiln_ggml_block_size(type) * kiln_ggml_type_size(type);
    float *got = malloc(sizeof(float) * (size_t)n);
    kiln_tensor *raw = kiln_from_blob(KILN_U8, 1, &nb, py[t].raw);
    kiln_tensor *y = kiln_dequantize(raw, type, PY_ROWS, py[t].cols);
    CHECKF(y && kiln_to_host(y, got, sizeof(float) * (size_t)n) == 0, "%s: %s",
           kiln_ggml_type_name(type), test_errmsg());
    for (int64_t i = 0, bad = 0; y && i < n && bad < 3; i++) {
      uint32_t a, b;
      memcpy(&a, got + i, 4), memcpy(&b, py[t].want + i, 4);
      if (a == b) continue;
      CHECKF(false, "%s element %lld (block %lld): kiln %.9g (0x%08x), gguf %.9g (0x%08x)",
             kiln_ggml_type_name(type), (long long)i, (long long)(i / kiln_ggml_block_size(type)),
             (double)got[i], a, (double)py[t].want[i], b);
      bad++;
    }
    free(got);
  }
}

static float *read_f32(const char *path, int64_t n) {
  FILE *f = fopen(path, "rb");
  float *v = f ? malloc(sizeof(float) * (size_t)n) : NULL;
  if (v && fread(v, sizeof(float), (size_t)n, f) != (size_t)n) free(v), v = NULL;
  if (f) fclose(f);
  return v;
}

TEST(quant_python_crosscheck) {
  char sbuf[1024], dir[512], path[1100], q[1200];
  const char *script = test_path(sbuf, sizeof sbuf, "nn/quant_check.py");
  if (!script) {
    printf("note: quant_python_crosscheck skipped: tests/nn/quant_check.py not found\n");
    return;
  }
  REQUIRE(test_tmp_dir(dir, sizeof dir));
  static char cmd[32768], out[8192];
  REQUIRE(test_shell_quote(q, sizeof q, script));
  int len = snprintf(cmd, sizeof cmd, "python3 %s dequantize", q);
  ref_rng g = ref_rng_seed(test_seed(702));
  for (int t = 0; t < N_BLOCK_TYPES; t++) {
    int type = block_types[t];
    int64_t bs = kiln_ggml_block_size(type), bb = kiln_ggml_type_size(type);
    py[t].cols = PY_BLOCKS * bs, py[t].want = NULL;
    py[t].raw = malloc((size_t)(PY_ROWS * PY_BLOCKS * bb));
    for (int i = 0; i < PY_ROWS * PY_BLOCKS; i++)
      fill_block(type, py[t].raw + i * bb, bb, &g, i % SCALE_KINDS, i / SCALE_KINDS % SCALE_KINDS);
    snprintf(path, sizeof path, "%s/%d.blocks", dir, type);
    FILE *f = fopen(path, "wb");
    REQUIRE(f);
    CHECK(fwrite(py[t].raw, (size_t)bb, PY_ROWS * PY_BLOCKS, f) == PY_ROWS * PY_BLOCKS);
    fclose(f);
    len += snprintf(cmd + len, sizeof cmd - (size_t)len, " %d %d %lld", type, PY_ROWS,
                    (long long)py[t].cols);
    REQUIRE(test_shell_quote(q, sizeof q, path));
    len += snprintf(cmd + len, sizeof cmd - (size_t)len, " %s", q);
    snprintf(path, sizeof path, "%s/%d.f32", dir, type);
    REQUIRE(test_shell_quote(q, sizeof q, path));
    len += snprintf(cmd + len, sizeof cmd - (size_t)len, " %s", q);
    REQUIRE(len > 0 && (size_t)len < sizeof cmd);
  }
  int rc = test_run(cmd, out, sizeof out);
  if (rc == 77 || rc == 127) {
    printf("note: quant_python_crosscheck skipped: %s (pip install gguf numpy)\n",
           rc == 77 ? "the Python gguf package is not available" : "python3 is not available");
  } else {
    CHECKF(rc == 0, "quant_check.py failed (%d): %s", rc, out);
    int checked = 0;
    for (int t = 0; rc == 0 && t < N_BLOCK_TYPES; t++) {
      snprintf(path, sizeof path, "%s/%d.f32", dir, block_types[t]);
      py[t].want = read_f32(path, PY_ROWS * py[t].cols);
      if (py[t].want) {
        checked++;
        continue;
      }
      /* an older package without this type: quant_check.py printed why */
      char key[64];
      snprintf(key, sizeof key, "skip %s:", kiln_ggml_type_name(block_types[t]));
      const char *why = strstr(out, key);
      printf("note: quant_python_crosscheck: %s not checked (%.*s)\n",
             kiln_ggml_type_name(block_types[t]), why ? (int)strcspn(why, "\n") : 20,
             why ? why : "no values written");
    }
    if (checked) test_on_devices(py_compare);
  }
  for (int t = 0; t < N_BLOCK_TYPES; t++) free(py[t].raw), free(py[t].want), py[t].want = NULL;
  test_tmp_dir_remove(dir);
}

TEST(quant_dequantize_errors) {
  uint8_t raw[64] = {0};
  int64_t n = 36;
  kiln_tensor *r = kiln_from_blob(KILN_U8, 1, &n, raw);
  kiln_clear_error();
  CHECK(kiln_dequantize(r, Q4_0, 1, 48) == NULL); /* not whole blocks */
  CHECK_CONTAINS(kiln_error(), "whole blocks");
  kiln_clear_error();
  CHECK(kiln_dequantize(r, Q4_0, 1, 64) != NULL); /* 2 blocks of 18 bytes: the right size */
  kiln_clear_error();
  CHECK(kiln_dequantize(kiln_cast(r, KILN_I8), Q4_0, 1, 64) == NULL);
  CHECK_CONTAINS(kiln_error(), "as u8");
  kiln_clear_error();
  CHECK(kiln_dequantize(r, Q4_0, 2, 64) == NULL);
  CHECK_CONTAINS(kiln_error(), "needs 72 bytes");
  kiln_clear_error();
  CHECK(kiln_dequantize(r, 16 /* IQ2_XXS */, 1, 256) == NULL);
  CHECK_CONTAINS(kiln_error(), "not a supported block format");
  kiln_clear_error();
  CHECK(kiln_dequantize(NULL, Q4_0, 1, 32) == NULL);
  kiln_clear_error();
}
