/* test_ops.c — every op of kiln.h on every device against the double-precision reference:
 * random shapes (sizes 0 and 1, broadcasting, views of views), NaN and ±inf where the
 * result is defined, every dtype family; CPU and INTERP are also compared to each other. */
#include <stdlib.h>

#include "check.h"

#define SEED 0x6b696c6eULL /* fixed: runs are reproducible */

/* ---- helpers ------------------------------------------------------------------------------------
 */
static char g_what[256];

static const char *shp(const ref_t *r) {
  static char bufs[4][96];
  static int k;
  k = (k + 1) % 4;
  return ref_shape_str(r->ndim, r->shape, bufs[k], sizeof bufs[k]);
}

/* A random shape of ndim in [minnd, maxnd]: dims mostly 2..maxdim, some 1, rarely 0. */
static int rand_shape(ref_rng *g, int64_t *shape, int minnd, int maxnd, int64_t maxdim,
                      bool allow0) {
  int nd = (int)ref_rng_int(g, minnd, maxnd);
  for (int d = 0; d < nd; d++) {
    double r = ref_rng_uniform(g);
    shape[d] = allow0 && r < 0.06 ? 0 : r < 0.3 ? 1 : ref_rng_int(g, 2, maxdim);
  }
  return nd;
}

static ref_t *no_nan(ref_t *x, double with) {
  int64_t n = ref_numel(x);
  for (int64_t i = 0; i < n; i++)
    if (isnan(ref_get(x, i))) ref_set(x, i, with);
  return x;
}

static ref_t *nonzero(ref_t *x) {
  int64_t n = ref_numel(x);
  for (int64_t i = 0; i < n; i++)
    if (ref_get(x, i) == 0) ref_set(x, i, 1);
  return x;
}

static ref_t *absval(const ref_t *x) { return ref_map(x, fabs); }

/* The promotion rules of kiln.h, written from the documentation. */
static kiln_dtype signed_of_size(size_t n) {
  return n <= 1 ? KILN_I8 : n == 2 ? KILN_I16 : n == 4 ? KILN_I32 : KILN_I64;
}

static kiln_dtype doc_promote(kiln_dtype a, kiln_dtype b) {
  if (a == b) return a;
  if (a == KILN_BOOL) return b;
  if (b == KILN_BOOL) return a;
  bool fa = ref_dtype_is_float(a), fb = ref_dtype_is_float(b);
  if (fa && fb) {
    if ((a == KILN_F16 && b == KILN_BF16) || (a == KILN_BF16 && b == KILN_F16)) return KILN_F32;
    return ref_dtype_size(a) >= ref_dtype_size(b) ? a : b;
  }
  if (fa) return a;
  if (fb) return b;
  bool sa = ref_dtype_is_signed(a), sb = ref_dtype_is_signed(b);
  if (sa == sb) return ref_dtype_size(a) >= ref_dtype_size(b) ? a : b;
  size_t ss = ref_dtype_size(sa ? a : b), us = ref_dtype_size(sa ? b : a);
  size_t need = ss > 2 * us ? ss : 2 * us;
  return signed_of_size(need > 8 ? 8 : need);
}

static const kiln_dtype DT8[] = {KILN_F32, KILN_F16, KILN_BF16, KILN_I32,
                                 KILN_I64, KILN_U8,  KILN_I8,   KILN_BOOL};

/* ---- dtypes and promotion ---------------------------------------------------------------------
 */
TEST(dtype_info) {
  static const size_t sizes[KILN_NDTYPES] = {1, 1, 1, 2, 2, 4, 4, 8, 8, 2, 2, 4, 8};
  for (int a = 0; a < KILN_NDTYPES; a++) {
    CHECKF(kiln_dtype_size((kiln_dtype)a) == sizes[a], "size of dtype %d: %zu", a,
           kiln_dtype_size((kiln_dtype)a));
    CHECKF(kiln_dtype_is_float((kiln_dtype)a) == ref_dtype_is_float((kiln_dtype)a),
           "is_float of dtype %d", a);
    const char *na = kiln_dtype_name((kiln_dtype)a);
    CHECKF(na && na[0], "dtype %d has no name", a);
    for (int b = 0; b < a && na; b++) {
      const char *nb = kiln_dtype_name((kiln_dtype)b);
      CHECKF(!nb || strcmp(na, nb) != 0, "dtypes %d and %d share the name %s", a, b, na);
    }
  }
}

TEST(promote_table) {
  for (int a = 0; a < KILN_NDTYPES; a++)
    for (int b = 0; b < KILN_NDTYPES; b++) {
      kiln_dtype got = kiln_promote((kiln_dtype)a, (kiln_dtype)b);
      kiln_dtype want = doc_promote((kiln_dtype)a, (kiln_dtype)b);
      CHECKF(got == want, "promote(%s, %s) = %s, documented %s", kiln_dtype_name((kiln_dtype)a),
             kiln_dtype_name((kiln_dtype)b), kiln_dtype_name(got), kiln_dtype_name(want));
    }
  /* a few spelled out, as the header states them */
  CHECK(kiln_promote(KILN_U8, KILN_I8) == KILN_I16);
  CHECK(kiln_promote(KILN_U32, KILN_I32) == KILN_I64);
  CHECK(kiln_promote(KILN_U64, KILN_I8) == KILN_I64);
  CHECK(kiln_promote(KILN_F16, KILN_BF16) == KILN_F32);
  CHECK(kiln_promote(KILN_I64, KILN_F16) == KILN_F16);
  CHECK(kiln_promote(KILN_BOOL, KILN_U8) == KILN_U8);
}

/* ---- creation -----------------------------------------------------------------------------------
 */
static void check_fill(kiln_tensor *t, kiln_dtype dt, int nd, const int64_t *shape, double v,
                       const char *what) {
  ref_t *want = ref_new(nd, shape);
  for (int64_t i = 0; i < ref_numel(want); i++)
    want->data[i] = ref_round(v, dt);
  CHECKF(t && kiln_dtype_of(t) == dt, "%s: dtype", what);
  ref_t *got = kt_read(t);
  if (got) kt_compare(what, got, want, NULL, 0, 0);
}

TEST_DEVICES(creation_fill) {
  (void)device;
  int64_t s23[] = {2, 3}, s4[] = {4}, s0[] = {3, 0}, s22[] = {2, 2};
  check_fill(kiln_zeros(KILN_F32, 2, s23), KILN_F32, 2, s23, 0, "zeros f32");
  check_fill(kiln_zeros(KILN_I32, 1, s4), KILN_I32, 1, s4, 0, "zeros i32");
  check_fill(kiln_zeros(KILN_BOOL, 2, s0), KILN_BOOL, 2, s0, 0, "zeros bool (3,0)");
  check_fill(kiln_ones(KILN_F16, 1, s4), KILN_F16, 1, s4, 1, "ones f16");
  check_fill(kiln_ones(KILN_U8, 2, s23), KILN_U8, 2, s23, 1, "ones u8");
  check_fill(kiln_full(KILN_BF16, 2, s22, 2.5), KILN_BF16, 2, s22, 2.5, "full bf16 2.5");
  check_fill(kiln_full(KILN_I8, 2, s23, -3), KILN_I8, 2, s23, -3, "full i8 -3");
  check_fill(kiln_full(KILN_F32, 1, s4, 0.1), KILN_F32, 1, s4, 0.1, "full f32 0.1");
  check_fill(kiln_full(KILN_F32, 2, s22, INFINITY), KILN_F32, 2, s22, INFINITY, "full f32 inf");
  check_fill(kiln_full(KILN_I64, 1, s4, 1e12), KILN_I64, 1, s4, 1e12, "full i64 1e12");

  kiln_tensor *e = kiln_empty(KILN_F16, 2, s23);
  REQUIRE(e);
  CHECK_EQ_INT(kiln_ndim(e), 2);
  CHECK_EQ_INT(kiln_dim(e, 0), 2);
  CHECK_EQ_INT(kiln_dim(e, -1), 3);
  CHECK_EQ_INT(kiln_numel(e), 6);
  CHECK(kiln_dtype_of(e) == KILN_F16);

  kiln_tensor *s = kiln_scalar(KILN_F32, 3.25);
  REQUIRE(s);
  CHECK_EQ_INT(kiln_ndim(s), 0);
  CHECK_EQ_INT(kiln_numel(s), 1);
  CHECK_NEAR(kiln_item(s), 3.25, 0);
  CHECK_NEAR(kiln_item(kiln_scalar(KILN_I32, -7)), -7, 0);
  CHECK_NEAR(kiln_item(kiln_scalar(KILN_F16, 0.1)), ref_round(0.1, KILN_F16), 0);
}

static void check_arange(double start, double stop, double step, kiln_dtype dt) {
  ref_t *want;
  int64_t n = (int64_t)ceil((stop - start) / step);
  if (n < 0) n = 0;
  want = ref_new(1, &n);
  for (int64_t i = 0; i < n; i++)
    want->data[i] = ref_round(start + (double)i * step, dt);
  char what[96];
  snprintf(what, sizeof what, "arange(%g,%g,%g,%s)", start, stop, step, kiln_dtype_name(dt));
  kiln_tensor *t = kiln_arange(start, stop, step, dt);
  CHECKF(t && kiln_dtype_of(t) == dt, "%s: dtype", what);
  ref_t *got = kt_read(t);
  if (got) kt_compare(what, got, want, NULL, 1e-6, 1e-6);
}

TEST_DEVICES(creation_arange) {
  (void)device;
  check_arange(0, 10, 1, KILN_I32);
  check_arange(1, 2, 0.25, KILN_F32);
  check_arange(5, 0, -1.5, KILN_F32);
  check_arange(-3, 4, 2, KILN_I64);
  check_arange(3, 3, 1, KILN_F32); /* empty */
  check_arange(0, 1, 0.1, KILN_F32);
  check_arange(0, 70001, 1, KILN_I32); /* 17 index bits, not a power of two */
  check_arange(1e9, -1e9, -29999.5, KILN_F64);
  check_arange(2, 300, 7, KILN_U16);
  /* values past the dtype saturate, as a cast from a float does */
  uint8_t u[10];
  REQUIRE(kiln_to_host(kiln_arange(250, 260, 1, KILN_U8), u, sizeof u) == 0);
  for (int i = 0; i < 10; i++)
    CHECKF(u[i] == (i < 6 ? 250 + i : 255), "arange(250,260) as u8: [%d] = %d", i, u[i]);
  /* an arange is graph ops computed where it is read: nothing is uploaded */
  kiln_stats a, b;
  kiln_get_stats(&a);
  kiln_tensor *t = kiln_arange(0, 1 << 20, 1, KILN_F32);
  kiln_get_stats(&b);
  CHECKF(t && b.bytes_allocated == a.bytes_allocated, "arange allocated %lld bytes unrealized",
         (long long)(b.bytes_allocated - a.bytes_allocated));
}

TEST(creation_from_data_roundtrip) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 1));
  for (int dt = 0; dt < KILN_NDTYPES; dt++) {
    int64_t shape[] = {3, 5};
    double lo = dt == KILN_U8 || dt == KILN_U16 || dt == KILN_U32 || dt == KILN_U64 ? 0 : -100;
    ref_t *x = ref_random(&g, 2, shape, (kiln_dtype)dt, lo, 100, 0.1);
    for (int dv = 0; dv < test_ndevices; dv++) {
      kiln_set_device(test_devices[dv]);
      kiln_tensor *t = kt_from_ref(x, (kiln_dtype)dt);
      CHECKF(t, "from_data %s: %s", kiln_dtype_name((kiln_dtype)dt), test_errmsg());
      if (!t) continue;
      CHECK(kiln_dtype_of(t) == (kiln_dtype)dt);
      CHECK_EQ_INT(kiln_numel(t), 15);
      size_t nb = 15 * ref_dtype_size((kiln_dtype)dt);
      unsigned char in[128], out[128];
      ref_to_bytes(x, (kiln_dtype)dt, in);
      memset(out, 0xAB, sizeof out);
      CHECKF(kiln_to_host(t, out, nb) == 0, "to_host %s: %s", kiln_dtype_name((kiln_dtype)dt),
             test_errmsg());
      CHECKF(memcmp(in, out, nb) == 0, "from_data/to_host of %s on %s changed the bytes",
             kiln_dtype_name((kiln_dtype)dt), test_devices[dv]);
      CHECKF(out[nb] == 0xAB, "to_host wrote past nbytes");
    }
  }
}

/* rand / randn: statistics, reproducibility on and across devices. */
static bool read_f32(kiln_tensor *t, float *out, size_t n) {
  if (!t) return false;
  return kiln_to_host(t, out, n * sizeof(float)) == 0;
}

TEST(creation_rand_randn) {
  enum { N = 100000 };
  int64_t shape[] = {250, 400};
  float *buf[TEST_MAX_DEVICES][3];
  for (int dv = 0; dv < test_ndevices; dv++)
    for (int k = 0; k < 3; k++)
      buf[dv][k] = ref_alloc(N * sizeof(float));
  for (int normal = 0; normal < 2; normal++) {
    const char *name = normal ? "randn" : "rand";
    for (int dv = 0; dv < test_ndevices; dv++) {
      kiln_set_device(test_devices[dv]);
      kiln_scope_begin();
      kiln_tensor *a = normal ? kiln_randn(2, shape, 42) : kiln_rand(2, shape, 42);
      kiln_tensor *b = normal ? kiln_randn(2, shape, 42) : kiln_rand(2, shape, 42);
      kiln_tensor *c = normal ? kiln_randn(2, shape, 43) : kiln_rand(2, shape, 43);
      CHECKF(a && kiln_dtype_of(a) == KILN_F32, "%s on %s: %s", name, test_devices[dv],
             test_errmsg());
      bool ok =
          read_f32(a, buf[dv][0], N) && read_f32(b, buf[dv][1], N) && read_f32(c, buf[dv][2], N);
      kiln_scope_end();
      CHECKF(ok, "%s on %s: could not read: %s", name, test_devices[dv], test_errmsg());
      if (!ok) continue;
      double s = 0, s2 = 0, lo = 1e30, hi = -1e30;
      int64_t same_seed_diff = 0, other_seed_same = 0, nonfinite = 0;
      for (int i = 0; i < N; i++) {
        double v = buf[dv][0][i];
        if (!isfinite(v)) nonfinite++;
        s += v;
        s2 += v * v;
        lo = fmin(lo, v);
        hi = fmax(hi, v);
        same_seed_diff += memcmp(&buf[dv][0][i], &buf[dv][1][i], 4) != 0;
        other_seed_same += buf[dv][0][i] == buf[dv][2][i];
      }
      double mean = s / N, var = s2 / N - mean * mean;
      CHECKF(nonfinite == 0, "%s on %s: %lld non-finite samples", name, test_devices[dv],
             (long long)nonfinite);
      if (normal) {
        CHECKF(fabs(mean) < 0.02, "randn on %s: mean %g", test_devices[dv], mean);
        CHECKF(fabs(sqrt(var) - 1) < 0.02, "randn on %s: std %g", test_devices[dv], sqrt(var));
        CHECKF(hi > 3 && lo < -3, "randn on %s: range [%g,%g] too narrow", test_devices[dv], lo,
               hi);
      } else {
        CHECKF(lo >= 0 && hi < 1, "rand on %s: range [%g,%g]", test_devices[dv], lo, hi);
        CHECKF(fabs(mean - 0.5) < 0.01, "rand on %s: mean %g", test_devices[dv], mean);
        CHECKF(fabs(var - 1.0 / 12) < 0.005, "rand on %s: var %g", test_devices[dv], var);
      }
      CHECKF(same_seed_diff == 0, "%s on %s: same seed, %lld elements differ", name,
             test_devices[dv], (long long)same_seed_diff);
      CHECKF(other_seed_same < N / 100, "%s on %s: seeds 42 and 43 agree on %lld elements", name,
             test_devices[dv], (long long)other_seed_same);
    }
    for (int dv = 0; dv < test_ndevices && test_ndevices > 1; dv++) { /* each against INTERP */
      if (dv == 1) continue;
      int64_t diff = 0;
      double maxd = 0;
      for (int i = 0; i < N; i++) {
        double d = fabs((double)buf[dv][0][i] - buf[1][0][i]);
        if (!(d == 0)) diff++;
        if (d > maxd || isnan(d)) maxd = isnan(d) ? INFINITY : d;
      }
      if (normal)
        CHECKF(maxd <= 1e-5, "randn: %s and INTERP differ by up to %g (%lld elements)",
               test_devices[dv], maxd, (long long)diff);
      else
        CHECKF(diff == 0, "rand: %s and INTERP differ in %lld elements (max %g)", test_devices[dv],
               (long long)diff, maxd);
    }
  }
}

/* ---- unary -------------------------------------------------------------------------------------
 */
static double r_neg(double x) { return -x; }
static double r_relu(double x) { return x > 0 ? x : 0; }
static double r_sigmoid(double x) { return 1 / (1 + exp(-x)); }
static double r_not(double x) { return x == 0; }
static double r_sign(double x) { return (x > 0) - (x < 0); }
static double r_square(double x) { return x * x; }
static double r_rsqrt(double x) { return 1 / sqrt(x); }
static double r_recip(double x) { return 1 / x; }

typedef struct {
  kiln_unary_op op;
  const char *name;
  ref_fn1 f;
  double lo, hi;
  bool nan_ok; /* NaN inputs have a defined result */
  double rtol, atol;
  int cross;
} unary_spec;

static const unary_spec UNARY[] = {
    {KILN_NEG, "neg", r_neg, -10, 10, true, 0, 0, KT_CROSS_EXACT},
    {KILN_ABS, "abs", fabs, -10, 10, true, 0, 0, KT_CROSS_EXACT},
    {KILN_EXP, "exp", exp, -20, 20, true, 1e-5, 1e-30, KT_CROSS_CLOSE},
    {KILN_EXP2, "exp2", exp2, -30, 30, true, 1e-5, 1e-30, KT_CROSS_CLOSE},
    {KILN_LOG, "log", log, -2, 50, true, 1e-5, 1e-6, KT_CROSS_CLOSE},
    {KILN_LOG2, "log2", log2, -2, 50, true, 1e-5, 1e-6, KT_CROSS_CLOSE},
    {KILN_SIN, "sin", sin, -10, 10, true, 1e-5, 1e-5, KT_CROSS_CLOSE},
    {KILN_COS, "cos", cos, -10, 10, true, 1e-5, 1e-5, KT_CROSS_CLOSE},
    {KILN_SQRT, "sqrt", sqrt, -2, 50, true, 1e-6, 0, KT_CROSS_CLOSE},
    {KILN_RSQRT, "rsqrt", r_rsqrt, -2, 50, true, 1e-5, 0, KT_CROSS_CLOSE},
    {KILN_RECIP, "recip", r_recip, -10, 10, true, 1e-6, 0, KT_CROSS_CLOSE},
    {KILN_RELU, "relu", r_relu, -10, 10, false, 0, 0, KT_CROSS_EXACT},
    {KILN_SIGMOID, "sigmoid", r_sigmoid, -20, 20, true, 1e-5, 1e-7, KT_CROSS_CLOSE},
    {KILN_TANH, "tanh", tanh, -10, 10, true, 1e-5, 1e-6, KT_CROSS_CLOSE},
    {KILN_SIGN, "sign", r_sign, -10, 10, false, 0, 0, KT_CROSS_EXACT},
    {KILN_SQUARE, "square", r_square, -10, 10, true, 1e-6, 0, KT_CROSS_EXACT},
};
#define NUNARY_SPECS ((int)(sizeof UNARY / sizeof UNARY[0]))

static kiln_tensor *build_unary(kiln_tensor *const *in, const void *ctx) {
  return kiln_unary(*(const kiln_unary_op *)ctx, in[0]);
}

static void unary_case(ref_rng *g, const unary_spec *s, kiln_dtype dt, int nd, const int64_t *shape,
                       bool view, double specials) {
  kt_view v;
  ref_t *base, *x;
  double lo = s->lo, hi = s->hi;
  if (!ref_dtype_is_float(dt)) lo = fmax(lo, dt == KILN_U8 ? 0 : -100), hi = fmin(fmax(hi, 10), 11);
  if (view) {
    v = kt_random_view(g, nd, shape);
    base = ref_random(g, nd, v.base, dt, lo, hi, specials);
  } else {
    base = ref_random(g, nd, shape, dt, lo, hi, specials);
  }
  if (!s->nan_ok) no_nan(base, 0);
  x = view ? kt_view_ref(&v, base) : base;
  snprintf(g_what, sizeof g_what, "%s %s %s%s", s->name, kiln_dtype_name(dt), shp(x),
           view ? " (view)" : "");
  kt_case c = {.what = g_what,
               .nin = 1,
               .in = {base},
               .in_dt = {dt},
               .view = {view ? &v : NULL},
               .expected = ref_map(x, s->f),
               .out_dt = dt,
               .rtol = s->rtol,
               .atol = s->atol,
               .cross = s->cross};
  kt_run_case(&c, build_unary, &s->op);
}

TEST(unary_f32) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 10));
  for (int i = 0; i < NUNARY_SPECS; i++) {
    int64_t shape[4];
    int nd = rand_shape(&g, shape, 1, 3, 7, true);
    unary_case(&g, &UNARY[i], KILN_F32, nd, shape, i % 3 == 1, 0.1);
  }
  /* transcendentals on exact special values, every one in one tensor */
  static const double sp[] = {NAN, INFINITY, -INFINITY, 0.0, 1.0, -1.0, 0.5, 100.0, -100.0, 1e-30};
  int64_t n = 10;
  ref_t *x = ref_from(1, &n, sp);
  for (int i = 0; i < NUNARY_SPECS; i++) {
    if (!UNARY[i].nan_ok) continue;
    if (UNARY[i].op != KILN_EXP && UNARY[i].op != KILN_SIGMOID && UNARY[i].op != KILN_TANH &&
        UNARY[i].op != KILN_LOG && UNARY[i].op != KILN_SQRT && UNARY[i].op != KILN_RECIP)
      continue;
    snprintf(g_what, sizeof g_what, "%s f32 specials", UNARY[i].name);
    kt_case c = {.what = g_what,
                 .nin = 1,
                 .in = {x},
                 .in_dt = {KILN_F32},
                 .expected = ref_map(x, UNARY[i].f),
                 .out_dt = KILN_F32,
                 .rtol = UNARY[i].rtol,
                 .atol = UNARY[i].atol,
                 .cross = KT_CROSS_CLOSE};
    kt_run_case(&c, build_unary, &UNARY[i].op);
  }
}

/* exp2 in f32 (exp, sigmoid, tanh, softmax and gelu are built on it) over its whole range on
 * each device: within 3e-7 relative where the result is normal, within 2^-148 where it is
 * subnormal, inf past 2^128, 0 far below, NaN kept; and the devices agree bit for bit with
 * the interpreter, which computes it with the same prelude function. */
TEST(exp2_f32_range) {
  enum { N = 22000 };
  static float x[N + 6], got[N + 6], interp[N + 6];
  for (int i = 0; i < N; i++)
    x[i] = -160.0f + 300.0f * (float)i / N + (float)(i % 7) * 1e-3f;
  const float sp[6] = {NAN, INFINITY, -INFINITY, 0.0f, -0.0f, 127.999f};
  memcpy(x + N, sp, sizeof sp);
  int64_t n = N + 6;
  for (int pass = 0; pass < 2; pass++) {
    const char *dev = pass ? "CPU" : "INTERP";
    kiln_set_device(dev);
    float *out = pass ? got : interp;
    kiln_tensor *t = kiln_unary(KILN_EXP2, kiln_from_data(KILN_F32, 1, &n, x));
    REQUIRE(t && kiln_to_host(t, out, sizeof got) == 0);
    int bad = 0;
    for (int i = 0; i < n && bad < 5; i++) {
      double want = exp2((double)x[i]), g = out[i];
      bool ok;
      if (isnan(want))
        ok = isnan(g);
      else if (want >= 0x1p128)
        ok = isinf(g) && g > 0;
      else if (want >= 0x1p-126)
        ok = fabs(g - want) <= 3e-7 * want;
      else
        ok = fabs(g - want) <= 0x1p-148;
      if (!ok) bad++;
      CHECKF(ok, "[%s] exp2(%.9g) = %.9g, want %.9g", dev, (double)x[i], g, want);
    }
  }
  CHECKF(memcmp(got, interp, sizeof got) == 0, "CPU and INTERP exp2 differ in some bits");
  kiln_set_device("CPU");
}

TEST(unary_half) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 11));
  static const int f16ops[] = {0, 2, 4, 8, 12, 13}, bf16ops[] = {1, 2, 8, 11};
  for (size_t i = 0; i < sizeof f16ops / sizeof f16ops[0]; i++) {
    int64_t shape[4];
    int nd = rand_shape(&g, shape, 1, 3, 6, false);
    unary_case(&g, &UNARY[f16ops[i]], KILN_F16, nd, shape, i == 2, 0.1);
  }
  for (size_t i = 0; i < sizeof bf16ops / sizeof bf16ops[0]; i++) {
    int64_t shape[4];
    int nd = rand_shape(&g, shape, 1, 3, 6, false);
    unary_case(&g, &UNARY[bf16ops[i]], KILN_BF16, nd, shape, i == 1, 0.1);
  }
}

static const unary_spec *find_unary(kiln_unary_op op) {
  for (int i = 0; i < NUNARY_SPECS; i++)
    if (UNARY[i].op == op) return &UNARY[i];
  return NULL;
}

TEST(unary_int_bool) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 12));
  struct {
    kiln_unary_op op;
    kiln_dtype dt;
  } cases[] = {
      {KILN_NEG, KILN_I32},  {KILN_ABS, KILN_I32},   {KILN_SIGN, KILN_I32}, {KILN_SQUARE, KILN_I32},
      {KILN_RELU, KILN_I32}, {KILN_NEG, KILN_I64},   {KILN_ABS, KILN_I64},  {KILN_ABS, KILN_I8},
      {KILN_NEG, KILN_I8},   {KILN_SQUARE, KILN_U8}, {KILN_SIGN, KILN_I8},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int64_t shape[4];
    int nd = rand_shape(&g, shape, 1, 3, 6, true);
    unary_case(&g, find_unary(cases[i].op), cases[i].dt, nd, shape, i % 4 == 3, 0);
  }
  static const unary_spec not_spec = {KILN_NOT, "not", r_not, 0, 1, true, 0, 0, KT_CROSS_EXACT};
  int64_t shape[] = {3, 5};
  unary_case(&g, &not_spec, KILN_BOOL, 2, shape, false, 0);
  unary_case(&g, &not_spec, KILN_BOOL, 2, shape, true, 0);
}

/* ---- binary -------------------------------------------------------------------------------------
 */
static double r_add(double a, double b) { return a + b; }
static double r_sub(double a, double b) { return a - b; }
static double r_mul(double a, double b) { return a * b; }
static double r_div(double a, double b) { return a / b; }
static double r_idiv(double a, double b) { return trunc(a / b); }
static double r_mod(double a, double b) { return fmod(a, b); }
static double r_max(double a, double b) { return isnan(a) || isnan(b) ? NAN : a > b ? a : b; }
static double r_min(double a, double b) { return isnan(a) || isnan(b) ? NAN : a < b ? a : b; }
static double r_and(double a, double b) { return (double)((int64_t)a & (int64_t)b); }
static double r_or(double a, double b) { return (double)((int64_t)a | (int64_t)b); }
static double r_xor(double a, double b) { return (double)((int64_t)a ^ (int64_t)b); }
static double r_shl(double a, double b) { return a * exp2(b); }
static double r_shr(double a, double b) { return floor(a / exp2(b)); }
static double r_lt(double a, double b) { return a < b; }
static double r_le(double a, double b) { return a <= b; }
static double r_gt(double a, double b) { return a > b; }
static double r_ge(double a, double b) { return a >= b; }
static double r_eq(double a, double b) { return a == b; }
static double r_ne(double a, double b) { return a != b; }

typedef struct {
  kiln_binary_op op;
  const char *name;
  ref_fn2 f;
  bool cmp;
} binary_spec;

static const binary_spec BINARY[KILN_NBINARY] = {
    [KILN_ADD] = {KILN_ADD, "add", r_add, false},
    [KILN_SUB] = {KILN_SUB, "sub", r_sub, false},
    [KILN_MUL] = {KILN_MUL, "mul", r_mul, false},
    [KILN_DIV] = {KILN_DIV, "div", r_div, false},
    [KILN_MAXIMUM] = {KILN_MAXIMUM, "maximum", r_max, false},
    [KILN_MINIMUM] = {KILN_MINIMUM, "minimum", r_min, false},
    [KILN_MOD] = {KILN_MOD, "mod", r_mod, false},
    [KILN_AND] = {KILN_AND, "and", r_and, false},
    [KILN_OR] = {KILN_OR, "or", r_or, false},
    [KILN_XOR] = {KILN_XOR, "xor", r_xor, false},
    [KILN_SHL] = {KILN_SHL, "shl", r_shl, false},
    [KILN_SHR] = {KILN_SHR, "shr", r_shr, false},
    [KILN_POW] = {KILN_POW, "pow", pow, false},
    [KILN_LT] = {KILN_LT, "lt", r_lt, true},
    [KILN_LE] = {KILN_LE, "le", r_le, true},
    [KILN_GT] = {KILN_GT, "gt", r_gt, true},
    [KILN_GE] = {KILN_GE, "ge", r_ge, true},
    [KILN_EQ] = {KILN_EQ, "eq", r_eq, true},
    [KILN_NE] = {KILN_NE, "ne", r_ne, true},
};

static kiln_tensor *build_binary(kiln_tensor *const *in, const void *ctx) {
  return kiln_binary(*(const kiln_binary_op *)ctx, in[0], in[1]);
}

typedef struct {
  double alo, ahi, blo, bhi;
  double specials; /* fraction of NaN/±inf/0 in float inputs */
  bool nan_ok;     /* NaN inputs have a defined result */
  bool b_nonzero;  /* integer divisors */
  double rtol;
  int cross;
  int mode; /* 0: broadcast shapes, 1: a is a view, 2: a size-0 broadcast */
} binary_dom;

/* Two random broadcast-compatible shapes. */
static void broadcast_shapes(ref_rng *g, int *na, int64_t *sa, int *nb, int64_t *sb, bool zero) {
  int64_t out[4];
  int nd = rand_shape(g, out, 1, 4, 5, false);
  if (zero) out[ref_rng_int(g, 0, nd - 1)] = 0;
  *na = nd;
  *nb = (int)ref_rng_int(g, nd > 1 ? nd - 1 : 1, nd);
  for (int d = 0; d < nd; d++)
    sa[d] = ref_rng_uniform(g) < 0.25 ? 1 : out[d];
  for (int d = 0; d < *nb; d++)
    sb[d] = ref_rng_uniform(g) < 0.25 ? 1 : out[d + nd - *nb];
}

static void binary_case(ref_rng *g, kiln_binary_op op, kiln_dtype da, kiln_dtype db,
                        const binary_dom *dm) {
  const binary_spec *s = &BINARY[op];
  int na, nb;
  int64_t sa[4], sb[4];
  broadcast_shapes(g, &na, sa, &nb, sb, dm->mode == 2);
  kt_view v;
  bool view = dm->mode == 1;
  ref_t *abase, *a, *b;
  if (view) {
    v = kt_random_view(g, na, sa);
    abase = ref_random(g, na, v.base, da, dm->alo, dm->ahi, dm->specials);
  } else {
    abase = ref_random(g, na, sa, da, dm->alo, dm->ahi, dm->specials);
  }
  b = ref_random(g, nb, sb, db, dm->blo, dm->bhi, dm->specials);
  if (!dm->nan_ok) no_nan(abase, 1.5), no_nan(b, -2.5);
  if (dm->b_nonzero) nonzero(b);
  a = view ? kt_view_ref(&v, abase) : abase;
  kiln_dtype p = doc_promote(da, db), out = s->cmp ? KILN_BOOL : p;
  ref_fn2 f = s->f;
  if (op == KILN_DIV && !ref_dtype_is_float(p)) f = r_idiv;
  ref_t *expected = ref_map2(ref_round_all(a, p), ref_round_all(b, p), f);
  snprintf(g_what, sizeof g_what, "%s %s%s %s %s", s->name, kiln_dtype_name(da), shp(a),
           kiln_dtype_name(db), shp(b));
  kt_case c = {.what = g_what,
               .nin = 2,
               .in = {abase, b},
               .in_dt = {da, db},
               .view = {view ? &v : NULL, NULL},
               .expected = expected,
               .out_dt = out,
               .rtol = dm->rtol,
               .cross = dm->cross};
  kt_run_case(&c, build_binary, &s->op);
}

TEST(binary_f32) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 20));
  binary_dom arith = {-10, 10, -10, 10, 0.08, true, false, 1e-6, KT_CROSS_EXACT, 0};
  for (int mode = 0; mode < 3; mode++) {
    arith.mode = mode;
    binary_case(&g, KILN_ADD, KILN_F32, KILN_F32, &arith);
    binary_case(&g, KILN_MUL, KILN_F32, KILN_F32, &arith);
  }
  binary_case(&g, KILN_SUB, KILN_F32, KILN_F32, &arith);
  binary_dom div = arith;
  div.rtol = 1e-6, div.cross = KT_CROSS_CLOSE, div.mode = 1;
  binary_case(&g, KILN_DIV, KILN_F32, KILN_F32, &div);
  binary_dom mm = arith;
  mm.nan_ok = false, mm.mode = 0;
  binary_case(&g, KILN_MAXIMUM, KILN_F32, KILN_F32, &mm);
  mm.mode = 1;
  binary_case(&g, KILN_MINIMUM, KILN_F32, KILN_F32, &mm);
  binary_dom pw = {0.1, 5, -2, 2, 0, true, false, 1e-5, KT_CROSS_CLOSE, 0};
  binary_case(&g, KILN_POW, KILN_F32, KILN_F32, &pw);
  binary_dom cmp = {-3, 3, -3, 3, 0.1, true, false, 0, KT_CROSS_EXACT, 0};
  for (int op = KILN_LT; op <= KILN_NE; op++) {
    cmp.mode = op % 2;
    binary_case(&g, (kiln_binary_op)op, KILN_F32, KILN_F32, &cmp);
  }
}

/* Compares f32 CPU against INTERP where the result for NaN is not pinned down by the header. */
TEST(binary_f32_nan_maximum_consistent) {
  int64_t n = 6;
  double av[] = {NAN, 1, NAN, -INFINITY, 2, NAN}, bv[] = {1, NAN, NAN, NAN, INFINITY, -INFINITY};
  ref_t *a = ref_from(1, &n, av), *b = ref_from(1, &n, bv);
  for (int op = KILN_MAXIMUM; op <= KILN_MINIMUM; op++) {
    snprintf(g_what, sizeof g_what, "%s with NaN", BINARY[op].name);
    kt_case c = {.what = g_what,
                 .nin = 2,
                 .in = {a, b},
                 .in_dt = {KILN_F32, KILN_F32},
                 .out_dt = KILN_F32,
                 .cross = KT_CROSS_EXACT};
    kt_run_case(&c, build_binary, &BINARY[op].op);
  }
}

TEST(binary_half) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 21));
  binary_dom d = {-10, 10, -10, 10, 0.05, true, false, 0, KT_CROSS_EXACT, 0};
  binary_case(&g, KILN_ADD, KILN_F16, KILN_F16, &d);
  d.mode = 1;
  binary_case(&g, KILN_MUL, KILN_F16, KILN_F16, &d);
  d.mode = 0, d.cross = KT_CROSS_CLOSE;
  binary_case(&g, KILN_DIV, KILN_F16, KILN_F16, &d);
  d.cross = KT_CROSS_EXACT;
  binary_case(&g, KILN_LT, KILN_F16, KILN_F16, &d);
  binary_case(&g, KILN_ADD, KILN_BF16, KILN_BF16, &d);
  binary_case(&g, KILN_SUB, KILN_BF16, KILN_BF16, &d);
  d.mode = 1;
  binary_case(&g, KILN_MUL, KILN_BF16, KILN_BF16, &d);
  d.mode = 0;
  binary_case(&g, KILN_GE, KILN_BF16, KILN_BF16, &d);
  binary_case(&g, KILN_NE, KILN_F16, KILN_F16, &d);
}

TEST(binary_int) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 22));
  binary_dom s = {-100, 100, -100, 100, 0, true, false, 0, KT_CROSS_EXACT, 0};
  binary_dom dv = s;
  dv.b_nonzero = true;
  binary_dom sh = {0, 1000, 0, 8, 0, true, false, 0, KT_CROSS_EXACT, 0};
  kiln_binary_op i32ops[] = {KILN_ADD, KILN_SUB, KILN_MUL, KILN_MAXIMUM, KILN_MINIMUM, KILN_AND,
                             KILN_OR,  KILN_XOR, KILN_LT,  KILN_EQ,      KILN_GE};
  for (size_t i = 0; i < sizeof i32ops / sizeof i32ops[0]; i++) {
    s.mode = (int)(i % 3);
    binary_case(&g, i32ops[i], KILN_I32, KILN_I32, &s);
  }
  binary_case(&g, KILN_DIV, KILN_I32, KILN_I32, &dv);
  binary_case(&g, KILN_MOD, KILN_I32, KILN_I32, &dv);
  binary_case(&g, KILN_SHL, KILN_I32, KILN_I32, &sh);
  binary_case(&g, KILN_SHR, KILN_I32, KILN_I32, &sh);

  binary_dom big = {-1e6, 1e6, -1e6, 1e6, 0, true, false, 0, KT_CROSS_EXACT, 0};
  binary_case(&g, KILN_ADD, KILN_I64, KILN_I64, &big);
  binary_case(&g, KILN_MUL, KILN_I64, KILN_I64, &big);
  big.b_nonzero = true;
  binary_case(&g, KILN_DIV, KILN_I64, KILN_I64, &big);
  binary_case(&g, KILN_MOD, KILN_I64, KILN_I64, &big);
  binary_dom sh64 = {0, 1e6, 0, 30, 0, true, false, 0, KT_CROSS_EXACT, 0};
  binary_case(&g, KILN_SHL, KILN_I64, KILN_I64, &sh64);
  binary_dom c64 = {-5, 5, -5, 5, 0, true, false, 0, KT_CROSS_EXACT, 1};
  binary_case(&g, KILN_LT, KILN_I64, KILN_I64, &c64);
  binary_case(&g, KILN_EQ, KILN_I8, KILN_I8, &c64);
  binary_dom cu8 = {0, 255, 0, 255, 0, true, false, 0, KT_CROSS_EXACT, 0};
  binary_case(&g, KILN_LE, KILN_U8, KILN_U8, &cu8);

  binary_dom u8 = {0, 15, 0, 15, 0, true, false, 0, KT_CROSS_EXACT, 0};
  kiln_binary_op u8ops[] = {KILN_ADD, KILN_SUB, KILN_MUL, KILN_AND, KILN_OR, KILN_XOR, KILN_GT};
  for (size_t i = 0; i < sizeof u8ops / sizeof u8ops[0]; i++) {
    u8.mode = (int)(i % 2);
    binary_case(&g, u8ops[i], KILN_U8, KILN_U8, &u8);
  }
  binary_dom u8d = {0, 255, 1, 20, 0, true, true, 0, KT_CROSS_EXACT, 0};
  binary_case(&g, KILN_DIV, KILN_U8, KILN_U8, &u8d);
  binary_dom u8s = {0, 255, 0, 7, 0, true, false, 0, KT_CROSS_EXACT, 0};
  binary_case(&g, KILN_SHR, KILN_U8, KILN_U8, &u8s);

  binary_dom i8 = {-11, 11, -11, 11, 0, true, false, 0, KT_CROSS_EXACT, 0};
  binary_case(&g, KILN_ADD, KILN_I8, KILN_I8, &i8);
  binary_case(&g, KILN_MUL, KILN_I8, KILN_I8, &i8);
  i8.b_nonzero = true, i8.alo = -120, i8.ahi = 120;
  binary_case(&g, KILN_DIV, KILN_I8, KILN_I8, &i8);
  binary_case(&g, KILN_MOD, KILN_I8, KILN_I8, &i8);
}

TEST(binary_bool) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 23));
  binary_dom b = {0, 1, 0, 1, 0, true, false, 0, KT_CROSS_EXACT, 0};
  kiln_binary_op ops[] = {KILN_AND, KILN_OR, KILN_XOR, KILN_EQ, KILN_NE};
  for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
    b.mode = (int)(i % 2);
    binary_case(&g, ops[i], KILN_BOOL, KILN_BOOL, &b);
  }
}

TEST(binary_mixed_promotion) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 24));
  binary_dom d = {-20, 20, -20, 20, 0, true, false, 1e-6, KT_CROSS_EXACT, 0};
  binary_case(&g, KILN_ADD, KILN_I32, KILN_F32, &d);  /* -> f32 */
  binary_case(&g, KILN_MUL, KILN_I64, KILN_F16, &d);  /* -> f16 */
  binary_case(&g, KILN_ADD, KILN_F16, KILN_BF16, &d); /* -> f32 */
  binary_case(&g, KILN_LT, KILN_I8, KILN_F32, &d);    /* compare after promotion */
  binary_dom u = {0, 200, -100, 100, 0, true, false, 0, KT_CROSS_EXACT, 0};
  binary_case(&g, KILN_ADD, KILN_U8, KILN_I8, &u);  /* -> i16, no wrap */
  binary_case(&g, KILN_SUB, KILN_U8, KILN_I32, &u); /* -> i32 */
  binary_dom bl = {0, 1, -50, 50, 0, true, false, 0, KT_CROSS_EXACT, 0};
  binary_case(&g, KILN_ADD, KILN_BOOL, KILN_I32, &bl); /* -> i32 */
}

typedef struct {
  kiln_binary_op op;
  double s;
} scalar_ctx;

static kiln_tensor *build_binary_s(kiln_tensor *const *in, const void *ctx) {
  const scalar_ctx *c = ctx;
  return kiln_binary_s(c->op, in[0], c->s);
}

static double g_scalar;
static double r_with_scalar_add(double a) { return a + g_scalar; }
static double r_with_scalar_mul(double a) { return a * g_scalar; }
static double r_with_scalar_lt(double a) { return a < g_scalar; }
static double r_with_scalar_shr(double a) { return floor(a / exp2(g_scalar)); }

TEST(binary_scalar) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 25));
  struct {
    kiln_binary_op op;
    kiln_dtype dt;
    double s, lo, hi;
    ref_fn1 f;
    kiln_dtype out;
  } cases[] = {
      {KILN_MUL, KILN_F32, 2.5, -10, 10, r_with_scalar_mul, KILN_F32},
      {KILN_ADD, KILN_F16, 0.1, -10, 10, r_with_scalar_add, KILN_F16},
      {KILN_ADD, KILN_I32, 7, -100, 100, r_with_scalar_add, KILN_I32},
      {KILN_LT, KILN_F32, 0.5, -2, 2, r_with_scalar_lt, KILN_BOOL},
      {KILN_SHR, KILN_U8, 2, 0, 255, r_with_scalar_shr, KILN_U8},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int64_t shape[4];
    int nd = rand_shape(&g, shape, 1, 3, 6, false);
    ref_t *x = ref_random(&g, nd, shape, cases[i].dt, cases[i].lo, cases[i].hi, 0);
    g_scalar = ref_round(cases[i].s, cases[i].dt); /* the scalar takes x's dtype */
    scalar_ctx ctx = {cases[i].op, cases[i].s};
    snprintf(g_what, sizeof g_what, "binary_s %s %s%s %g", BINARY[cases[i].op].name,
             kiln_dtype_name(cases[i].dt), shp(x), cases[i].s);
    kt_case c = {.what = g_what,
                 .nin = 1,
                 .in = {x},
                 .in_dt = {cases[i].dt},
                 .expected = ref_map(x, cases[i].f),
                 .out_dt = cases[i].out,
                 .rtol = 1e-6,
                 .cross = KT_CROSS_EXACT};
    kt_run_case(&c, build_binary_s, &ctx);
  }
}

/* ---- where, cast, bitcast
 * ------------------------------------------------------------------------ */
static kiln_tensor *build_where(kiln_tensor *const *in, const void *ctx) {
  (void)ctx;
  return kiln_where(in[0], in[1], in[2]);
}

TEST(where_op) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 30));
  kiln_dtype dts[] = {KILN_F32,  KILN_I32, KILN_F16, KILN_U8,
                      KILN_BF16, KILN_I64, KILN_I8,  KILN_BOOL};
  for (int i = 0; i < 8; i++) {
    int64_t sc[] = {3, 1, 4}, sa[] = {5, 1}, sb[] = {1};
    if (i == 2) sc[1] = 0, sa[0] = 1;
    ref_t *c = ref_random(&g, 3, sc, KILN_BOOL, 0, 1, 0);
    double lo = dts[i] == KILN_U8 || dts[i] == KILN_BOOL ? 0 : -100,
           hi = dts[i] == KILN_BOOL ? 1 : 100;
    ref_t *a = ref_random(&g, 2, sa, dts[i], lo, hi, 0.2);
    ref_t *b = ref_random(&g, 1, sb, dts[i], lo, hi, 0.2);
    snprintf(g_what, sizeof g_what, "where %s cond%s a%s b%s", kiln_dtype_name(dts[i]), shp(c),
             shp(a), shp(b));
    kt_case k = {.what = g_what,
                 .nin = 3,
                 .in = {c, a, b},
                 .in_dt = {KILN_BOOL, dts[i], dts[i]},
                 .expected = ref_where(c, a, b),
                 .out_dt = dts[i],
                 .cross = KT_CROSS_EXACT};
    kt_run_case(&k, build_where, NULL);
  }
}

static kiln_tensor *build_cast(kiln_tensor *const *in, const void *ctx) {
  return kiln_cast(in[0], *(const kiln_dtype *)ctx);
}

static double dtype_lo(kiln_dtype dt) {
  switch (dt) {
  case KILN_BOOL:
  case KILN_U8:
    return 0;
  case KILN_I8:
    return -120;
  case KILN_F16:
    return -60000;
  default:
    return -1e5;
  }
}

static double dtype_hi(kiln_dtype dt) {
  switch (dt) {
  case KILN_BOOL:
    return 1;
  case KILN_U8:
    return 250;
  case KILN_I8:
    return 120;
  case KILN_F16:
    return 60000;
  default:
    return 1e5;
  }
}

TEST(cast_all_pairs) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 31));
  for (int i = 0; i < 8; i++)
    for (int j = 0; j < 8; j++) {
      if (i == j) continue;
      kiln_dtype src = DT8[i], dst = DT8[j];
      double lo = fmax(dtype_lo(src), dtype_lo(dst)), hi = fmin(dtype_hi(src), dtype_hi(dst));
      /* floats keep their full range when going to another float (overflow to inf is
       * defined); NaN only where the target can hold it */
      bool ff = ref_dtype_is_float(src) && ref_dtype_is_float(dst);
      if (ff) lo = dtype_lo(src), hi = dtype_hi(src);
      if (dst == KILN_BOOL && src != KILN_BOOL) lo = fmax(-3, dtype_lo(src)), hi = 3;
      int64_t shape[4];
      int nd = rand_shape(&g, shape, 1, 2, 6, false);
      ref_t *x = ref_random(&g, nd, shape, src, lo, hi,
                            ff                        ? 0.1
                            : ref_dtype_is_float(src) ? 0.1
                                                      : 0);
      if (!ff) no_nan(x, 0);
      /* small fractional values too: truncation toward zero */
      if (ref_dtype_is_float(src) && ref_numel(x) > 2 && dtype_lo(dst) < 0)
        ref_set(x, 0, ref_round(-2.75, src)), ref_set(x, 1, ref_round(0.5, src));
      if (ref_dtype_is_float(src) && !ref_dtype_is_float(dst)) /* infinities are not castable */
        for (int64_t k = 0; k < ref_numel(x); k++)
          if (isinf(ref_get(x, k))) ref_set(x, k, 1);
      ref_t *expected = x;
      if (!ref_dtype_is_float(dst) && dst != KILN_BOOL) expected = ref_map(x, trunc);
      snprintf(g_what, sizeof g_what, "cast %s->%s %s", kiln_dtype_name(src), kiln_dtype_name(dst),
               shp(x));
      kt_case c = {.what = g_what,
                   .nin = 1,
                   .in = {x},
                   .in_dt = {src},
                   .expected = expected,
                   .out_dt = dst,
                   .cross = KT_CROSS_EXACT};
      kt_run_case(&c, build_cast, &DT8[j]);
    }
}

static kiln_tensor *build_bitcast(kiln_tensor *const *in, const void *ctx) {
  return kiln_bitcast(in[0], *(const kiln_dtype *)ctx);
}

static kiln_tensor *build_bitcast_fused(kiln_tensor *const *in, const void *ctx) {
  return kiln_bitcast(kiln_binary_s(KILN_ADD, in[0], 1.0), *(const kiln_dtype *)ctx);
}

TEST(bitcast_op) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 32));
  struct {
    kiln_dtype src, dst;
    double lo, hi;
  } cases[] = {
      {KILN_F32, KILN_I32, -1e3, 1e3}, {KILN_I32, KILN_F32, 0, 1e9},
      {KILN_F16, KILN_I16, -100, 100}, {KILN_I16, KILN_F16, 0, 3e4},
      {KILN_BF16, KILN_U16, -5, 5},    {KILN_U8, KILN_I8, 0, 255},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    int64_t shape[] = {2, 7};
    ref_t *x = ref_random(&g, 2, shape, cases[i].src, cases[i].lo, cases[i].hi, 0);
    unsigned char bytes[64];
    ref_to_bytes(x, cases[i].src, bytes);
    ref_t *expected = ref_from_bytes(cases[i].dst, 2, shape, bytes);
    snprintf(g_what, sizeof g_what, "bitcast %s->%s", kiln_dtype_name(cases[i].src),
             kiln_dtype_name(cases[i].dst));
    kt_case c = {.what = g_what,
                 .nin = 1,
                 .in = {x},
                 .in_dt = {cases[i].src},
                 .expected = expected,
                 .out_dt = cases[i].dst,
                 .cross = KT_CROSS_EXACT};
    kt_run_case(&c, build_bitcast, &cases[i].dst);
  }
  /* bitcast of a computed value: (x + 1) as f32 bits */
  int64_t shape[] = {9};
  ref_t *x = ref_random(&g, 1, shape, KILN_F32, -4, 4, 0);
  unsigned char bytes[64];
  ref_t *xp1 = ref_new(1, shape);
  for (int k = 0; k < 9; k++)
    xp1->data[k] = ref_round(ref_get(x, k) + 1, KILN_F32);
  ref_to_bytes(xp1, KILN_F32, bytes);
  kiln_dtype i32 = KILN_I32;
  kt_case c = {.what = "bitcast(x+1) f32->i32",
               .nin = 1,
               .in = {x},
               .in_dt = {KILN_F32},
               .expected = ref_from_bytes(KILN_I32, 1, shape, bytes),
               .out_dt = KILN_I32,
               .cross = KT_CROSS_EXACT};
  kt_run_case(&c, build_bitcast_fused, &i32);
}

/* ---- DOT4: byte products of u32 words ---- */
static double r_dot4(double a, double b) {
  uint32_t x = (uint32_t)a, y = (uint32_t)b;
  double s = 0;
  for (int j = 0; j < 4; j++)
    s += (double)(x >> 8 * j & 255) * (double)(int8_t)(uint8_t)(y >> 8 * j);
  return s;
}
static kiln_tensor *build_dot4(kiln_tensor *const *in, const void *ctx) {
  kiln_tensor *d = kiln_binary(KILN_DOT4, in[0], in[1]);
  return *(const bool *)ctx ? kiln_sum(d, 1, (int[]){-1}, false) : d;
}

/* Elementwise with broadcasting, and summed over rows of 32 words (the vector path of a
 * reduce, one VNNI instruction per 4, 8 or 16 lanes on CPUs that have it). */
TEST(dot4_op) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 33));
  for (int sum = 0; sum < 2; sum++) {
    int64_t sa[] = {6, 32}, sb[] = {32}, so[] = {6};
    ref_t *a = ref_random(&g, 2, sa, KILN_U32, 0, 4294967295.0, 0);
    ref_t *b = ref_random(&g, 1, sb, KILN_U32, 0, 4294967295.0, 0);
    ref_t *e = ref_new(sum ? 1 : 2, sum ? so : sa);
    for (int i = 0; i < 6; i++)
      for (int k = 0; k < 32; k++) {
        double v = r_dot4(ref_get(a, i * 32 + k), ref_get(b, k));
        if (sum)
          e->data[i] += v;
        else
          e->data[i * 32 + k] = v;
      }
    bool s = sum;
    kt_case c = {.what = sum ? "sum(dot4(a, b), -1)" : "dot4(a, b)",
                 .nin = 2,
                 .in = {a, b},
                 .in_dt = {KILN_U32, KILN_U32},
                 .expected = e,
                 .out_dt = sum ? KILN_I64 : KILN_I32,
                 .cross = KT_CROSS_EXACT};
    kt_run_case(&c, build_dot4, &s);
  }
  kiln_tensor *f = kiln_ones(KILN_F32, 1, (int64_t[]){4});
  CHECK(kiln_binary(KILN_DOT4, f, f) == NULL);
  kiln_clear_error();
}

/* ---- reductions
 * ---------------------------------------------------------------------------------- */
typedef struct {
  kiln_reduce_op op;
  int naxes, axes[4];
  bool keepdim;
} reduce_ctx;

static kiln_tensor *build_reduce(kiln_tensor *const *in, const void *ctx) {
  const reduce_ctx *r = ctx;
  return kiln_reduce(r->op, in[0], r->naxes, r->axes, r->keepdim);
}

static const char *reduce_name(kiln_reduce_op op) {
  static const char *n[] = {"sum", "max", "min", "mean", "prod"};
  return n[op];
}

static kiln_dtype sum_dtype(kiln_dtype dt) {
  if (ref_dtype_is_float(dt)) return dt;
  if (dt == KILN_U8 || dt == KILN_U16 || dt == KILN_U32 || dt == KILN_U64) return KILN_U64;
  return KILN_I64;
}

static void reduce_case(ref_rng *g, kiln_reduce_op op, kiln_dtype dt, int nd, const int64_t *shape,
                        int naxes, const int *axes, bool keepdim, bool view, double lo, double hi,
                        double specials) {
  kt_view v;
  ref_t *base;
  if (view) {
    v = kt_random_view(g, nd, shape);
    base = ref_random(g, nd, v.base, dt, lo, hi, specials);
  } else {
    base = ref_random(g, nd, shape, dt, lo, hi, specials);
  }
  if (op != KILN_SUM && op != KILN_MEAN) no_nan(base, 0.25);
  ref_t *x = view ? kt_view_ref(&v, base) : base;
  static const ref_reduce_op rop[] = {REF_SUM, REF_MAX, REF_MIN, REF_MEAN, REF_PROD};
  ref_t *expected = ref_reduce(x, rop[op], naxes, axes, keepdim);
  ref_t *tolbase = NULL;
  double rtol = 0;
  if (ref_dtype_is_float(dt) || op == KILN_MEAN) {
    rtol = 2e-6;
    if (op == KILN_SUM || op == KILN_MEAN) {
      tolbase = ref_reduce(absval(x), rop[op], naxes, axes, keepdim);
      rtol = 3e-5;
    }
    if (op == KILN_PROD) rtol = 2e-5;
  }
  kiln_dtype out = op == KILN_SUM ? sum_dtype(dt) : dt;
  if (op == KILN_MEAN && !ref_dtype_is_float(dt)) out = KILN_F32;
  if (op == KILN_PROD && !ref_dtype_is_float(dt)) out = sum_dtype(dt);
  char ax[48] = "";
  size_t k = 0;
  for (int i = 0; i < naxes; i++)
    k += (size_t)snprintf(ax + k, sizeof ax - k, "%s%d", i ? "," : "", axes[i]);
  snprintf(g_what, sizeof g_what, "%s %s %s axes{%s}%s%s", reduce_name(op), kiln_dtype_name(dt),
           shp(x), ax, keepdim ? " keepdim" : "", view ? " (view)" : "");
  reduce_ctx ctx = {op, naxes, {0}, keepdim};
  if (naxes > 0) memcpy(ctx.axes, axes, sizeof(int) * (size_t)naxes);
  kt_case c = {.what = g_what,
               .nin = 1,
               .in = {base},
               .in_dt = {dt},
               .view = {view ? &v : NULL},
               .expected = expected,
               .out_dt = out,
               .tolbase = tolbase,
               .rtol = rtol,
               .atol = 1e-6,
               .cross = ref_dtype_is_float(dt) ? KT_CROSS_CLOSE : KT_CROSS_EXACT};
  kt_run_case(&c, build_reduce, &ctx);
}

TEST(reduce_f32) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 40));
  int64_t s3[] = {4, 5, 6}, s2[] = {7, 9}, s0[] = {3, 0, 2}, s1[] = {1, 5, 1};
  int a1[] = {1}, a02[] = {0, 2}, am1[] = {-1}, a0[] = {0};
  reduce_case(&g, KILN_SUM, KILN_F32, 3, s3, 0, NULL, false, false, -10, 10, 0);
  reduce_case(&g, KILN_SUM, KILN_F32, 3, s3, 1, a1, true, false, -10, 10, 0);
  reduce_case(&g, KILN_SUM, KILN_F32, 3, s3, 2, a02, false, true, -10, 10, 0);
  reduce_case(&g, KILN_SUM, KILN_F32, 2, s2, 1, am1, false, false, -10, 10, 0.05);
  reduce_case(&g, KILN_SUM, KILN_F32, 3, s0, 1, a1, false, false, -10, 10, 0); /* empty -> 0 */
  reduce_case(&g, KILN_SUM, KILN_F32, 3, s0, 1, a0, true, false, -10, 10, 0);  /* output empty */
  reduce_case(&g, KILN_SUM, KILN_F32, 3, s1, 2, a02, false, false, -10, 10, 0);
  reduce_case(&g, KILN_MAX, KILN_F32, 3, s3, 1, a1, false, false, -10, 10, 0);
  reduce_case(&g, KILN_MAX, KILN_F32, 2, s2, 0, NULL, true, true, -10, 10, 0.1);
  reduce_case(&g, KILN_MIN, KILN_F32, 3, s3, 2, a02, true, false, -10, 10, 0.1);
  reduce_case(&g, KILN_MIN, KILN_F32, 2, s2, 1, am1, false, true, -10, 10, 0);
  reduce_case(&g, KILN_MEAN, KILN_F32, 3, s3, 1, am1, false, false, -10, 10, 0);
  reduce_case(&g, KILN_MEAN, KILN_F32, 2, s2, 0, NULL, false, true, -10, 10, 0);
  int64_t sp[] = {3, 6};
  reduce_case(&g, KILN_PROD, KILN_F32, 2, sp, 1, am1, false, false, 0.5, 1.5, 0);
  reduce_case(&g, KILN_PROD, KILN_F32, 2, sp, 1, a0, true, true, -1.5, 1.5, 0);
}

TEST(reduce_other_dtypes) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 41));
  int64_t s2[] = {6, 11}, s3[] = {2, 3, 5};
  int a1[] = {1}, a0[] = {0}, a12[] = {1, 2};
  reduce_case(&g, KILN_SUM, KILN_I32, 2, s2, 1, a1, false, false, -1000, 1000, 0);
  reduce_case(&g, KILN_SUM, KILN_U8, 2, s2, 0, NULL, false, false, 0, 255, 0); /* > 255: u64 */
  reduce_case(&g, KILN_SUM, KILN_BOOL, 3, s3, 2, a12, true, false, 0, 1, 0);
  reduce_case(&g, KILN_SUM, KILN_I8, 2, s2, 1, a0, false, true, -100, 100, 0);
  reduce_case(&g, KILN_SUM, KILN_F16, 2, s2, 1, a1, false, false, -10, 10, 0);
  reduce_case(&g, KILN_MAX, KILN_I32, 3, s3, 1, a1, false, false, -1000, 1000, 0);
  reduce_case(&g, KILN_MIN, KILN_U8, 2, s2, 1, a0, true, false, 0, 255, 0);
  reduce_case(&g, KILN_MAX, KILN_BF16, 2, s2, 1, a1, false, false, -10, 10, 0.1);
  reduce_case(&g, KILN_MEAN, KILN_F16, 3, s3, 2, a12, false, false, -10, 10, 0);
  /* mean of integers is a float: run by hand, the float type is the library's choice */
  int64_t shape[] = {4, 5};
  ref_t *x = ref_random(&g, 2, shape, KILN_I32, -50, 50, 0);
  ref_t *want = ref_reduce(x, REF_MEAN, 1, a1, false);
  for (int dv = 0; dv < test_ndevices; dv++) {
    kiln_set_device(test_devices[dv]);
    kiln_tensor *m = kiln_mean(kt_from_ref(x, KILN_I32), 1, a1, false);
    CHECKF(m && kiln_dtype_is_float(kiln_dtype_of(m)), "[%s] mean of i32 is not a float: %s",
           test_devices[dv], test_errmsg());
    ref_t *got = m ? kt_read(m) : NULL;
    if (got) kt_compare("mean i32 (4,5) axis 1", got, want, NULL, 1e-3, 1e-6);
  }
  /* the ends of i32: min and argmin order by ~x, as -INT_MIN does not exist */
  int32_t ends[] = {5, INT32_MIN, 7, INT32_MAX, -3, INT32_MIN + 1, 0, 1, 2};
  for (int dv = 0; dv < test_ndevices; dv++) {
    kiln_set_device(test_devices[dv]);
    kiln_tensor *e = kiln_from_data(KILN_I32, 2, (int64_t[]){3, 3}, ends);
    int32_t mn[3] = {0}, mx[3] = {0};
    int64_t amn[3] = {0}, amx[3] = {0};
    CHECK(kiln_to_host(kiln_reduce(KILN_MIN, e, 1, a1, false), mn, sizeof mn) == 0);
    CHECK(kiln_to_host(kiln_reduce(KILN_MAX, e, 1, a1, false), mx, sizeof mx) == 0);
    CHECK(kiln_to_host(kiln_argmin(e, 1, false), amn, sizeof amn) == 0);
    CHECK(kiln_to_host(kiln_argmax(e, 1, false), amx, sizeof amx) == 0);
    CHECKF(mn[0] == INT32_MIN && mn[1] == INT32_MIN + 1 && mn[2] == 0 && mx[0] == 7 &&
               mx[1] == INT32_MAX && mx[2] == 2,
           "[%s] i32 ends: min %d %d %d, max %d %d %d", test_devices[dv], mn[0], mn[1], mn[2],
           mx[0], mx[1], mx[2]);
    CHECKF(amn[0] == 1 && amn[1] == 2 && amn[2] == 0 && amx[0] == 2 && amx[1] == 0 && amx[2] == 2,
           "[%s] i32 ends: argmin %lld %lld %lld, argmax %lld %lld %lld", test_devices[dv],
           (long long)amn[0], (long long)amn[1], (long long)amn[2], (long long)amx[0],
           (long long)amx[1], (long long)amx[2]);
  }
}

typedef struct {
  bool max;
  int axis;
  bool keepdim;
} arg_ctx;

static kiln_tensor *build_arg(kiln_tensor *const *in, const void *ctx) {
  const arg_ctx *a = ctx;
  return a->max ? kiln_argmax(in[0], a->axis, a->keepdim) : kiln_argmin(in[0], a->axis, a->keepdim);
}

TEST(reduce_argmax_argmin) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 42));
  struct {
    kiln_dtype dt;
    int64_t shape[3];
    int nd, axis;
    bool keep, view;
    double lo, hi;
  } cases[] = {
      {KILN_F32, {5, 7}, 2, 1, false, false, -10, 10},
      {KILN_F32, {4, 3, 6}, 3, 0, true, true, -10, 10},
      {KILN_I32, {6, 9}, 2, -1, false, false, 0, 3}, /* many ties: first index wins */
      {KILN_U8, {3, 4, 5}, 3, 1, false, true, 0, 2},
      {KILN_F16, {8}, 1, 0, false, false, -1, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    for (int mx = 0; mx < 2; mx++) {
      kt_view v;
      ref_t *base;
      if (cases[i].view) {
        v = kt_random_view(&g, cases[i].nd, cases[i].shape);
        base = ref_random(&g, cases[i].nd, v.base, cases[i].dt, cases[i].lo, cases[i].hi, 0);
      } else {
        base =
            ref_random(&g, cases[i].nd, cases[i].shape, cases[i].dt, cases[i].lo, cases[i].hi, 0);
      }
      ref_t *x = cases[i].view ? kt_view_ref(&v, base) : base;
      if (cases[i].dt == KILN_F32 && ref_numel(x) > 3) /* infinities are ordinary extremes */
        ref_set(base, 1, mx ? INFINITY : -INFINITY), ref_set(base, 2, mx ? -INFINITY : INFINITY);
      arg_ctx ctx = {mx != 0, cases[i].axis, cases[i].keep};
      snprintf(g_what, sizeof g_what, "%s %s %s axis %d%s", mx ? "argmax" : "argmin",
               kiln_dtype_name(cases[i].dt), shp(x), cases[i].axis,
               cases[i].keep ? " keepdim" : "");
      kt_case c = {
          .what = g_what,
          .nin = 1,
          .in = {base},
          .in_dt = {cases[i].dt},
          .view = {cases[i].view ? &v : NULL},
          .expected = ref_reduce(x, mx ? REF_ARGMAX : REF_ARGMIN, 1, &cases[i].axis, cases[i].keep),
          .out_dt = KILN_I64,
          .cross = KT_CROSS_EXACT};
      kt_run_case(&c, build_arg, &ctx);
    }
}

typedef struct {
  bool log_;
  int axis;
} softmax_ctx;

static kiln_tensor *build_softmax(kiln_tensor *const *in, const void *ctx) {
  const softmax_ctx *s = ctx;
  return s->log_ ? kiln_log_softmax(in[0], s->axis) : kiln_softmax(in[0], s->axis);
}

TEST(softmax_log_softmax) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 43));
  struct {
    int64_t shape[3];
    int nd, axis;
    double lo, hi;
    bool masked;
  } cases[] = {
      {{3, 7}, 2, 1, -5, 5, false},
      {{4, 5, 2}, 3, 0, -5, 5, false},
      {{2, 9}, 2, -1, -500, 500, false}, /* large logits: must not overflow */
      {{5, 6}, 2, 1, -3, 3, true},       /* -inf entries (masked) */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    ref_t *x = ref_random(&g, cases[i].nd, cases[i].shape, KILN_F32, cases[i].lo, cases[i].hi, 0);
    if (cases[i].masked)
      for (int64_t k = 0; k < ref_numel(x); k++)
        if (k % 6 > 0 && ref_rng_uniform(&g) < 0.4) ref_set(x, k, -INFINITY);
    for (int lg = 0; lg < 2; lg++) {
      softmax_ctx ctx = {lg != 0, cases[i].axis};
      snprintf(g_what, sizeof g_what, "%s f32 %s axis %d%s", lg ? "log_softmax" : "softmax", shp(x),
               cases[i].axis, cases[i].masked ? " masked" : "");
      kt_case c = {.what = g_what,
                   .nin = 1,
                   .in = {x},
                   .in_dt = {KILN_F32},
                   .expected =
                       lg ? ref_log_softmax(x, cases[i].axis) : ref_softmax(x, cases[i].axis),
                   .out_dt = KILN_F32,
                   .rtol = 1e-5,
                   .atol = lg ? 1e-5 : 1e-7,
                   .cross = KT_CROSS_CLOSE};
      kt_run_case(&c, build_softmax, &ctx);
    }
  }
}

/* ---- movement ----------------------------------------------------------------------------------
 */
/* A movement program: a list of steps applied alike to a reference and a kiln tensor. */
enum {
  MV_RESHAPE,
  MV_PERMUTE,
  MV_TRANSPOSE,
  MV_EXPAND,
  MV_PAD,
  MV_SHRINK,
  MV_FLIP,
  MV_SLICE,
  MV_SQUEEZE,
  MV_UNSQUEEZE,
  MV_CONTIGUOUS,
  MV_ADD_SELF
};
typedef struct {
  int kind, nd, axis, a2;
  int64_t v1[8], v2[8];
  int iv[8];
  double value;
} mv_step;
typedef struct {
  int n;
  mv_step s[6];
} mv_prog;

static ref_t *mv_ref(const mv_prog *p, ref_t *x) {
  for (int i = 0; i < p->n; i++) {
    const mv_step *s = &p->s[i];
    switch (s->kind) {
    case MV_RESHAPE:
      x = ref_reshape(x, s->nd, s->v1);
      break;
    case MV_PERMUTE:
      x = ref_permute(x, s->iv);
      break;
    case MV_TRANSPOSE:
      x = ref_transpose(x, s->axis, s->a2);
      break;
    case MV_EXPAND:
      x = ref_expand(x, s->nd, s->v1);
      break;
    case MV_PAD:
      x = ref_pad(x, s->v1, s->v2, s->value);
      break;
    case MV_SHRINK:
      x = ref_shrink(x, s->v1, s->v2);
      break;
    case MV_FLIP:
      x = ref_flip(x, s->nd, s->iv);
      break;
    case MV_SLICE:
      x = ref_slice(x, s->axis, s->v1[0], s->v1[1], s->v1[2]);
      break;
    case MV_SQUEEZE:
      x = ref_squeeze(x, s->axis);
      break;
    case MV_UNSQUEEZE:
      x = ref_unsqueeze(x, s->axis);
      break;
    case MV_CONTIGUOUS:
      x = ref_contig(x);
      break;
    case MV_ADD_SELF:
      x = ref_map2(x, x, r_add);
      break;
    }
  }
  return x;
}

static kiln_tensor *build_mv(kiln_tensor *const *in, const void *ctx) {
  const mv_prog *p = ctx;
  kiln_tensor *x = in[0];
  for (int i = 0; i < p->n; i++) {
    const mv_step *s = &p->s[i];
    switch (s->kind) {
    case MV_RESHAPE:
      x = kiln_reshape(x, s->nd, s->v1);
      break;
    case MV_PERMUTE:
      x = kiln_permute(x, s->iv);
      break;
    case MV_TRANSPOSE:
      x = kiln_transpose(x, s->axis, s->a2);
      break;
    case MV_EXPAND:
      x = kiln_expand(x, s->nd, s->v1);
      break;
    case MV_PAD:
      x = kiln_pad(x, s->v1, s->v2, s->value);
      break;
    case MV_SHRINK:
      x = kiln_shrink(x, s->v1, s->v2);
      break;
    case MV_FLIP:
      x = kiln_flip(x, s->nd, s->iv);
      break;
    case MV_SLICE:
      x = kiln_slice(x, s->axis, s->v1[0], s->v1[1], s->v1[2]);
      break;
    case MV_SQUEEZE:
      x = kiln_squeeze(x, s->axis);
      break;
    case MV_UNSQUEEZE:
      x = kiln_unsqueeze(x, s->axis);
      break;
    case MV_CONTIGUOUS:
      x = kiln_contiguous(x);
      break;
    case MV_ADD_SELF:
      x = kiln_add(x, x);
      break;
    }
  }
  return x;
}

static void mv_case(ref_rng *g, const char *name, kiln_dtype dt, int nd, const int64_t *shape,
                    const mv_prog *p) {
  ref_t *x = ref_random(g, nd, shape, dt, -50, 50, 0);
  ref_t *expected = mv_ref(p, x);
  snprintf(g_what, sizeof g_what, "%s %s %s -> %s", name, kiln_dtype_name(dt), shp(x),
           shp(expected));
  kt_case c = {.what = g_what,
               .nin = 1,
               .in = {x},
               .in_dt = {dt},
               .expected = expected,
               .out_dt = dt,
               .cross = KT_CROSS_EXACT};
  kt_run_case(&c, build_mv, p);
}

#define STEP(...) ((mv_step){__VA_ARGS__})

TEST(movement_single) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 50));
  int64_t s234[] = {2, 3, 4}, s34[] = {3, 4}, s31[] = {3, 1}, s03[] = {0, 3}, s11[] = {1, 1};
  int64_t s1[] = {1}, s7[] = {7}, s5x[] = {5, 6};
  mv_prog p;
  p = (mv_prog){1, {STEP(.kind = MV_RESHAPE, .nd = 2, .v1 = {4, 6})}};
  mv_case(&g, "reshape", KILN_F32, 3, s234, &p);
  p = (mv_prog){1, {STEP(.kind = MV_RESHAPE, .nd = 3, .v1 = {-1, 2, 2})}};
  mv_case(&g, "reshape -1", KILN_I32, 3, s234, &p);
  p = (mv_prog){1, {STEP(.kind = MV_RESHAPE, .nd = 0)}};
  mv_case(&g, "reshape to 0-d", KILN_F32, 2, s11, &p);
  p = (mv_prog){1, {STEP(.kind = MV_RESHAPE, .nd = 2, .v1 = {3, 0})}};
  mv_case(&g, "reshape empty", KILN_F32, 2, s03, &p);
  p = (mv_prog){1, {STEP(.kind = MV_PERMUTE, .iv = {2, 0, 1})}};
  mv_case(&g, "permute", KILN_F32, 3, s234, &p);
  p = (mv_prog){1, {STEP(.kind = MV_TRANSPOSE, .axis = 0, .a2 = -1)}};
  mv_case(&g, "transpose", KILN_F16, 3, s234, &p);
  p = (mv_prog){1, {STEP(.kind = MV_EXPAND, .nd = 3, .v1 = {2, 3, 4})}};
  mv_case(&g, "expand", KILN_F32, 2, s31, &p);
  p = (mv_prog){1, {STEP(.kind = MV_EXPAND, .nd = 1, .v1 = {5})}};
  mv_case(&g, "expand", KILN_U8, 1, s1, &p);
  p = (mv_prog){1, {STEP(.kind = MV_PAD, .v1 = {1, 0}, .v2 = {2, 3}, .value = -1.5)}};
  mv_case(&g, "pad", KILN_F32, 2, s34, &p);
  p = (mv_prog){1, {STEP(.kind = MV_PAD, .v1 = {1, 2}, .v2 = {0, 1}, .value = 7)}};
  mv_case(&g, "pad of empty", KILN_I32, 2, s03, &p);
  p = (mv_prog){1, {STEP(.kind = MV_SHRINK, .v1 = {1, 0, 1}, .v2 = {2, 3, 3})}};
  mv_case(&g, "shrink", KILN_F32, 3, s234, &p);
  p = (mv_prog){1, {STEP(.kind = MV_FLIP, .nd = 2, .iv = {0, -1})}};
  mv_case(&g, "flip", KILN_F32, 3, s234, &p);
  p = (mv_prog){1, {STEP(.kind = MV_FLIP, .nd = 1, .iv = {1})}};
  mv_case(&g, "flip", KILN_BOOL, 2, s34, &p);
  p = (mv_prog){1, {STEP(.kind = MV_SQUEEZE, .axis = -1)}};
  mv_case(&g, "squeeze", KILN_F32, 2, s31, &p);
  p = (mv_prog){1, {STEP(.kind = MV_UNSQUEEZE, .axis = 1)}};
  mv_case(&g, "unsqueeze", KILN_F32, 2, s34, &p);
  p = (mv_prog){1, {STEP(.kind = MV_UNSQUEEZE, .axis = -1)}};
  mv_case(&g, "unsqueeze -1", KILN_I64, 2, s34, &p);
  /* slices: steps, negative indices, empty, out of range */
  struct {
    int axis;
    int64_t a, b, c;
  } sl[] = {
      {0, 0, 7, 2}, {0, 1, 7, 3},  {0, 6, -8, -1}, {0, -1, -8, -2},    {0, -3, 100, 1},
      {0, 5, 2, 1}, {0, 0, 7, 10}, {1, 4, 0, -3},  {-1, -100, 100, 4},
  };
  for (size_t i = 0; i < sizeof sl / sizeof sl[0]; i++) {
    p = (mv_prog){1,
                  {STEP(.kind = MV_SLICE, .axis = sl[i].axis, .v1 = {sl[i].a, sl[i].b, sl[i].c})}};
    char name[64];
    snprintf(name, sizeof name, "slice(%d,%lld,%lld,%lld)", sl[i].axis, (long long)sl[i].a,
             (long long)sl[i].b, (long long)sl[i].c);
    if (sl[i].axis == 0)
      mv_case(&g, name, KILN_F32, 1, s7, &p);
    else
      mv_case(&g, name, KILN_F32, 2, s5x, &p);
  }
}

TEST(movement_chains) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 51));
  int64_t s345[] = {3, 4, 5}, s46[] = {4, 6}, s25[] = {2, 5};
  mv_prog p;
  /* permute of a shrink of a flip */
  p = (mv_prog){3,
                {STEP(.kind = MV_FLIP, .nd = 2, .iv = {0, 2}),
                 STEP(.kind = MV_SHRINK, .v1 = {1, 0, 2}, .v2 = {3, 3, 5}),
                 STEP(.kind = MV_PERMUTE, .iv = {2, 0, 1})}};
  mv_case(&g, "permute(shrink(flip))", KILN_F32, 3, s345, &p);
  /* reshape of a non-contiguous view */
  p = (mv_prog){
      2,
      {STEP(.kind = MV_PERMUTE, .iv = {1, 0}), STEP(.kind = MV_RESHAPE, .nd = 3, .v1 = {2, 3, 4})}};
  mv_case(&g, "reshape(permute)", KILN_F32, 2, s46, &p);
  /* pad of an expand, then a slice with a step */
  p = (mv_prog){3,
                {STEP(.kind = MV_UNSQUEEZE, .axis = 0),
                 STEP(.kind = MV_EXPAND, .nd = 3, .v1 = {3, 2, 5}),
                 STEP(.kind = MV_PAD, .v1 = {0, 1, 2}, .v2 = {1, 0, 1}, .value = 9)}};
  mv_case(&g, "pad(expand(unsqueeze))", KILN_I32, 2, s25, &p);
  p = (mv_prog){3,
                {STEP(.kind = MV_PAD, .v1 = {1, 1}, .v2 = {1, 1}, .value = -2),
                 STEP(.kind = MV_TRANSPOSE, .axis = 0, .a2 = 1),
                 STEP(.kind = MV_SLICE, .axis = 0, .v1 = {-1, -100, -2})}};
  mv_case(&g, "slice(transpose(pad))", KILN_F32, 2, s46, &p);
  /* padded flip, reshaped, then computed on */
  p = (mv_prog){4,
                {STEP(.kind = MV_FLIP, .nd = 1, .iv = {1}),
                 STEP(.kind = MV_PAD, .v1 = {0, 2}, .v2 = {0, 0}, .value = 0.5),
                 STEP(.kind = MV_RESHAPE, .nd = 2, .v1 = {8, 4}), STEP(.kind = MV_ADD_SELF)}};
  mv_case(&g, "add(reshape(pad(flip)))", KILN_F32, 2, s46, &p);
  /* a view made contiguous, then viewed again */
  p = (mv_prog){3,
                {STEP(.kind = MV_PERMUTE, .iv = {2, 1, 0}), STEP(.kind = MV_CONTIGUOUS),
                 STEP(.kind = MV_SHRINK, .v1 = {1, 1, 0}, .v2 = {4, 3, 2})}};
  mv_case(&g, "shrink(contiguous(permute))", KILN_F32, 3, s345, &p);
  /* shrink/pad round trip with a 16-bit and a bool dtype */
  p = (mv_prog){2,
                {STEP(.kind = MV_SHRINK, .v1 = {1, 2}, .v2 = {3, 5}),
                 STEP(.kind = MV_PAD, .v1 = {2, 0}, .v2 = {0, 3}, .value = 1)}};
  mv_case(&g, "pad(shrink)", KILN_BF16, 2, s46, &p);
  mv_case(&g, "pad(shrink)", KILN_BOOL, 2, s46, &p);
}

/* Elementwise between two differently viewed operands. */
static kiln_tensor *build_views_add(kiln_tensor *const *in, const void *ctx) {
  (void)ctx;
  int perm[] = {1, 0}, fl[] = {0};
  int64_t before[] = {1, 0}, after[] = {0, 0};
  kiln_tensor *a = kiln_permute(in[0], perm);                             /* (4,3) */
  kiln_tensor *b = kiln_pad(kiln_flip(in[1], 1, fl), before, after, 3.0); /* (3,3)->(4,3) */
  return kiln_mul(kiln_add(a, b), kiln_slice(in[2], 0, 0, 8, 2)); /* (8,3) step 2 -> (4,3) */
}

TEST(elementwise_on_views) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 52));
  int64_t s34[] = {3, 4}, s33[] = {3, 3}, s83[] = {8, 3};
  ref_t *x = ref_random(&g, 2, s34, KILN_F32, -5, 5, 0.05);
  ref_t *y = ref_random(&g, 2, s33, KILN_F32, -5, 5, 0.05);
  ref_t *z = ref_random(&g, 2, s83, KILN_F32, -5, 5, 0);
  int perm[] = {1, 0}, fl[] = {0};
  int64_t before[] = {1, 0}, after[] = {0, 0};
  ref_t *e = ref_map2(
      ref_map2(ref_permute(x, perm), ref_pad(ref_flip(y, 1, fl), before, after, 3.0), r_add),
      ref_slice(z, 0, 0, 8, 2), r_mul);
  kt_case c = {.what = "(permute(x) + pad(flip(y))) * z[::2]",
               .nin = 3,
               .in = {x, y, z},
               .in_dt = {KILN_F32, KILN_F32, KILN_F32},
               .expected = e,
               .out_dt = KILN_F32,
               .rtol = 1e-6,
               .cross = KT_CROSS_EXACT};
  kt_run_case(&c, build_views_add, NULL);
}

/* ---- cat / stack
 * ---------------------------------------------------------------------------------- */
typedef struct {
  bool stack;
  int axis, n;
  bool view_first;
} cat_ctx;

static kiln_tensor *build_cat(kiln_tensor *const *in, const void *ctx) {
  const cat_ctx *c = ctx;
  kiln_tensor *xs[4];
  for (int i = 0; i < c->n; i++)
    xs[i] = in[i];
  if (c->view_first) {
    int fl[] = {0};
    xs[0] = kiln_flip(xs[0], 1, fl);
  }
  return c->stack ? kiln_stack(c->n, xs, c->axis) : kiln_cat(c->n, xs, c->axis);
}

static void cat_case(ref_rng *g, kiln_dtype dt, bool stack, int axis, int n, int nd,
                     const int64_t shapes[][3], bool view_first) {
  ref_t *xs[4];
  for (int i = 0; i < n; i++)
    xs[i] = ref_random(g, nd, shapes[i], dt, -9, 9, 0);
  ref_t *vs[4];
  memcpy(vs, xs, sizeof vs);
  int fl[] = {0};
  if (view_first) vs[0] = ref_flip(xs[0], 1, fl);
  ref_t *e = stack ? ref_stack(n, vs, axis) : ref_cat(n, vs, axis);
  snprintf(g_what, sizeof g_what, "%s of %d %s axis %d -> %s%s", stack ? "stack" : "cat", n,
           kiln_dtype_name(dt), axis, shp(e), view_first ? " (first flipped)" : "");
  cat_ctx ctx = {stack, axis, n, view_first};
  kt_case c = {.what = g_what,
               .nin = n,
               .in_dt = {dt, dt, dt, dt},
               .expected = e,
               .out_dt = dt,
               .cross = KT_CROSS_EXACT};
  for (int i = 0; i < n; i++)
    c.in[i] = xs[i];
  kt_run_case(&c, build_cat, &ctx);
}

TEST(cat_stack) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 60));
  const int64_t a[][3] = {{2, 3}, {4, 3}, {1, 3}};
  cat_case(&g, KILN_F32, false, 0, 3, 2, a, false);
  const int64_t b[][3] = {{2, 3, 1}, {2, 3, 4}};
  cat_case(&g, KILN_F32, false, -1, 2, 3, b, true);
  const int64_t c[][3] = {{3, 2}, {3, 0}, {3, 5}};
  cat_case(&g, KILN_I32, false, 1, 3, 2, c, false);
  const int64_t d[][3] = {{5}};
  cat_case(&g, KILN_F16, false, 0, 1, 1, d, false);
  const int64_t e[][3] = {{2, 3}, {2, 3}, {2, 3}};
  cat_case(&g, KILN_F32, true, 0, 3, 2, e, false);
  cat_case(&g, KILN_U8, true, 1, 2, 2, e, true);
  cat_case(&g, KILN_F32, true, -1, 3, 2, e, false);
}

/* ---- matmul
 * ---------------------------------------------------------------------------------------- */
typedef struct {
  bool transpose_b; /* b is given as (m,k) and transposed: a non-contiguous operand */
} mm_ctx;

static kiln_tensor *build_matmul(kiln_tensor *const *in, const void *ctx) {
  const mm_ctx *m = ctx;
  kiln_tensor *b = m->transpose_b ? kiln_transpose(in[1], -1, -2) : in[1];
  return kiln_matmul(in[0], b);
}

static void matmul_case(ref_rng *g, kiln_dtype dt, int na, const int64_t *sa, int nb,
                        const int64_t *sb, bool transpose_b) {
  double lo = ref_dtype_is_float(dt) ? -2 : -5, hi = -lo;
  ref_t *a = ref_random(g, na, sa, dt, lo, hi, 0), *b = ref_random(g, nb, sb, dt, lo, hi, 0);
  ref_t *bv = transpose_b ? ref_transpose(b, -1, -2) : b;
  ref_t *e = ref_matmul(a, bv);
  ref_t *tb = ref_matmul(absval(a), absval(bv));
  snprintf(g_what, sizeof g_what, "matmul %s %s @ %s%s", kiln_dtype_name(dt), shp(a), shp(bv),
           transpose_b ? " (b transposed view)" : "");
  mm_ctx ctx = {transpose_b};
  kt_case c = {.what = g_what,
               .nin = 2,
               .in = {a, b},
               .in_dt = {dt, dt},
               .expected = e,
               .out_dt = dt,
               .tolbase = tb,
               .rtol = ref_dtype_is_float(dt) ? 1e-5 : 0,
               .atol = 1e-6,
               .cross = ref_dtype_is_float(dt) ? KT_CROSS_CLOSE : KT_CROSS_EXACT};
  kt_run_case(&c, build_matmul, &ctx);
}

TEST(matmul_shapes) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 70));
  struct {
    int na;
    int64_t sa[4];
    int nb;
    int64_t sb[4];
    bool tb;
  } cases[] = {
      {2, {1, 1}, 2, {1, 1}, false},
      {2, {17, 33}, 2, {33, 65}, false},
      {2, {3, 4}, 2, {5, 4}, true},
      {3, {2, 3, 4}, 3, {2, 4, 5}, false},
      {4, {3, 1, 4, 5}, 3, {2, 5, 6}, false}, /* broadcast batch -> (3,2,4,6) */
      {3, {1, 2, 3}, 3, {4, 3, 2}, false},
      {1, {4}, 2, {4, 3}, false},
      {2, {3, 4}, 1, {4}, false},
      {1, {5}, 1, {5}, false},
      {3, {2, 3, 4}, 1, {4}, false},
      {1, {4}, 3, {2, 4, 3}, false},
      {2, {2, 0}, 2, {0, 3}, false}, /* k = 0: zeros */
      {2, {0, 3}, 2, {3, 2}, false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    matmul_case(&g, KILN_F32, cases[i].na, cases[i].sa, cases[i].nb, cases[i].sb, cases[i].tb);
  int64_t a[] = {4, 8}, b[] = {8, 3}, c[] = {3, 5}, d[] = {5, 2};
  matmul_case(&g, KILN_F16, 2, a, 2, b, false);
  matmul_case(&g, KILN_I32, 2, c, 2, d, false);
}

/* ---- take: rows of a table picked by integer ids ---- */
typedef struct {
  bool exp_table; /* take from exp(table) (a computed table) rather than the table itself */
} take_ctx;
static kiln_tensor *build_take(kiln_tensor *const *in, const void *ctx) {
  const take_ctx *t = ctx;
  kiln_tensor *table = t->exp_table ? kiln_exp(in[0]) : in[0];
  return kiln_take(table, in[1]);
}
/* ids: random in [-2, rows + 2) (outside [0, rows): zero rows), of dtype idt */
static void take_case(ref_rng *g, kiln_dtype dt, int tnd, const int64_t *tshape, kiln_dtype idt,
                      int ind, const int64_t *ishape, bool view, bool exp_table) {
  kt_view v;
  ref_t *tbase, *table;
  if (view) {
    v = kt_random_view(g, tnd, tshape);
    tbase = ref_random(g, tnd, v.base, dt, -3, 3, 0);
    table = kt_view_ref(&v, tbase);
  } else
    tbase = table = ref_random(g, tnd, tshape, dt, -3, 3, 0);
  bool uns = idt == KILN_U8 || idt == KILN_U16 || idt == KILN_U32 || idt == KILN_U64;
  ref_t *ids = ref_random(g, ind, ishape, idt, uns ? 0 : -2, (double)tshape[0] + 2, 0);
  for (int64_t i = 0; i < ref_numel(ids); i++)
    ref_set(ids, i, floor(ref_get(ids, i)));
  if (ref_numel(ids) > 1) ref_set(ids, 0, (double)tshape[0]); /* one just past the end */
  if (ref_numel(ids) > 2 && !uns) ref_set(ids, 1, -1);
  int64_t oshape[KILN_MAX_DIMS], row = ref_numel(table) / (tshape[0] ? tshape[0] : 1);
  memcpy(oshape, ishape, sizeof(int64_t) * ind);
  memcpy(oshape + ind, tshape + 1, sizeof(int64_t) * (tnd - 1));
  ref_t *want = ref_new(ind + tnd - 1, oshape);
  ref_t *tr = ref_round_all(table, dt);
  for (int64_t i = 0; i < ref_numel(ids); i++) {
    double id = ref_get(ids, i);
    for (int64_t j = 0; j < row; j++) {
      double x = id >= 0 && id < tshape[0] ? ref_get(tr, (int64_t)id * row + j) : 0;
      ref_set(want, i * row + j, exp_table && id >= 0 && id < tshape[0] ? exp(x) : x);
    }
  }
  snprintf(g_what, sizeof g_what, "take %s%s%s ids %s%s%s", exp_table ? "exp " : "",
           kiln_dtype_name(dt), shp(table), kiln_dtype_name(idt), shp(ids), view ? " (view)" : "");
  kt_case c = {.what = g_what,
               .nin = 2,
               .in = {tbase, ids},
               .in_dt = {dt, idt},
               .view = {view ? &v : NULL, NULL},
               .expected = want,
               .out_dt = dt,
               .rtol = exp_table ? 1e-6 : 0,
               .cross = exp_table ? KT_CROSS_CLOSE : KT_CROSS_EXACT};
  kt_run_case(&c, build_take, &(take_ctx){exp_table});
}

TEST(take_rows) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 90));
  int64_t t73[] = {7, 3}, t524[] = {5, 2, 4}, t9[] = {9}, t40[] = {4, 0}, t06[] = {0, 6};
  int64_t i8[] = {8}, i23[] = {2, 3}, i1[] = {1}, i0[] = {0}, i311[] = {3, 1, 1};
  take_case(&g, KILN_F32, 2, t73, KILN_I64, 1, i8, false, false);
  take_case(&g, KILN_F32, 2, t73, KILN_I32, 2, i23, true, false);
  take_case(&g, KILN_F16, 3, t524, KILN_I16, 2, i23, false, false);
  take_case(&g, KILN_U8, 2, t73, KILN_U8, 1, i8, false, false);
  take_case(&g, KILN_I32, 1, t9, KILN_I64, 3, i311, true, false);
  take_case(&g, KILN_F32, 3, t524, KILN_U32, 1, i1, false, true);
  take_case(&g, KILN_F32, 2, t73, KILN_I64, 2, i23, true, true);
  take_case(&g, KILN_F32, 2, t73, KILN_I64, 1, i0, false, false);  /* no ids */
  take_case(&g, KILN_F32, 2, t40, KILN_I64, 1, i8, false, false);  /* empty rows */
  take_case(&g, KILN_F32, 2, t06, KILN_I64, 2, i23, false, false); /* no rows: all outside */
  /* bad input: a clear error, no crash */
  kiln_tensor *w = kiln_zeros(KILN_F32, 2, t73);
  CHECK(kiln_take(w, kiln_zeros(KILN_F32, 1, i8)) == NULL && test_contains(kiln_error(), "take"));
  kiln_clear_error();
  CHECK(kiln_take(w, kiln_zeros(KILN_BOOL, 1, i8)) == NULL &&
        test_contains(kiln_error(), "integers"));
  kiln_clear_error();
  CHECK(kiln_take(kiln_scalar(KILN_F32, 1), kiln_zeros(KILN_I32, 1, i8)) == NULL);
  kiln_clear_error();
  int64_t big[KILN_MAX_DIMS];
  for (int i = 0; i < KILN_MAX_DIMS; i++)
    big[i] = 1;
  CHECK(kiln_take(kiln_zeros(KILN_F32, 3, t524), kiln_zeros(KILN_I32, KILN_MAX_DIMS, big)) ==
            NULL &&
        test_contains(kiln_error(), "dims"));
  kiln_clear_error();
}
