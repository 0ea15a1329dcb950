/* test_quant.c — ggml block dequantization as kiln ops against a scalar reference written from
 * the block layouts (one loop per format, element by element), on every device; plus the
 * errors of kiln_dequantize. */
#include "../ref.h"
#include "../test.h"

#include <stdlib.h>

enum { Q4_0 = 2, Q4_1 = 3, Q8_0 = 8, Q4_K = 12, Q6_K = 14 };

static float h2f(const uint8_t *p) { /* IEEE half, little-endian */
  unsigned h = (unsigned)p[0] | (unsigned)p[1] << 8, e = (h >> 10) & 31, f = h & 1023;
  double v = e == 0 ? ldexp(f, -24) : e == 31 ? (f ? NAN : INFINITY) : ldexp(f + 1024, (int)e - 25);
  return (float)((h >> 15) ? -v : v);
}
static void put_half(uint8_t *p, double scale, ref_rng *g) { /* a finite half near scale */
  unsigned e = 15 + (unsigned)ref_rng_int(g, -6, -2), f = (unsigned)ref_rng_int(g, 0, 1023);
  unsigned h = (e << 10) | f | (ref_rng_int(g, 0, 1) ? 0x8000u : 0);
  (void)scale;
  p[0] = (uint8_t)h, p[1] = (uint8_t)(h >> 8);
}

/* y[256 or 32 per block] of one block */
static void ref_block(int type, const uint8_t *b, float *y) {
  switch (type) {
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
      if (sub < 4) sc = s[sub] & 63, m = s[sub + 4] & 63;
      else sc = (s[sub + 4] & 15) | ((s[sub - 4] >> 6) << 4), m = (s[sub + 4] >> 4) | ((s[sub] >> 6) << 4);
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

/* random bytes, with the format's f16 fields set to finite scales */
static void fill_block(int type, uint8_t *b, int64_t bb, ref_rng *g) {
  for (int64_t i = 0; i < bb; i++) b[i] = (uint8_t)ref_rng_int(g, 0, 255);
  if (type == Q6_K) put_half(b + 208, 0.01, g);
  else put_half(b, 0.01, g);
  if (type == Q4_1 || type == Q4_K) put_half(b + 2, 0.01, g);
}

static void check_type(int type, int64_t rows, int64_t cols, ref_rng *g) {
  int64_t bs = kiln_ggml_block_size(type), bb = kiln_ggml_type_size(type), nb = rows * cols / bs;
  uint8_t *raw = malloc((size_t)(nb * bb));
  float *want = malloc(sizeof(float) * (size_t)(rows * cols)), *got = malloc(sizeof(float) * (size_t)(rows * cols));
  for (int64_t i = 0; i < nb; i++) {
    fill_block(type, raw + i * bb, bb, g);
    ref_block(type, raw + i * bb, want + i * bs);
  }
  int64_t n = nb * bb;
  kiln_tensor *r = kiln_from_blob(KILN_U8, 1, &n, raw);
  kiln_tensor *y = kiln_dequantize(r, type, rows, cols);
  REQUIRE(y && kiln_ndim(y) == 2 && kiln_dim(y, 0) == rows && kiln_dim(y, 1) == cols);
  REQUIRE(kiln_to_host(y, got, sizeof(float) * (size_t)(rows * cols)) == 0);
  int bad = 0;
  for (int64_t i = 0; i < rows * cols && bad < 3; i++)
    if (!(fabsf(got[i] - want[i]) <= 1e-6f * fabsf(want[i]) + 1e-12f)) {
      CHECKF(false, "%s element %lld: got %g, want %g", kiln_ggml_type_name(type), (long long)i, got[i], want[i]);
      bad++;
    }
  /* fused into a consumer: row sums (a reduce reading the dequantized values) */
  kiln_tensor *s = kiln_sum(y, 1, (int[]){1}, false);
  float *sums = malloc(sizeof(float) * (size_t)rows);
  REQUIRE(kiln_to_host(s, sums, sizeof(float) * (size_t)rows) == 0);
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
  CHECK(kiln_dequantize(r, 13 /* Q5_K */, 1, 256) == NULL);
  CHECK_CONTAINS(kiln_error(), "not a supported block format");
  kiln_clear_error();
  CHECK(kiln_dequantize(NULL, Q4_0, 1, 32) == NULL);
  kiln_clear_error();
}
