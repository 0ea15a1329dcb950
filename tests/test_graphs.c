/* test_graphs.c — composed graphs the scheduler must cut and fuse correctly: a reduction
 * broadcast back (layernorm-like), reductions of reductions, matmul of computed and viewed
 * operands, realized intermediates reused, one buffer seen through two views, rounding ties. */
#include "check.h"

#define SEED 0x67726170ULL

static double r_add(double a, double b) { return a + b; }
static double r_sub(double a, double b) { return a - b; }
static double r_mul(double a, double b) { return a * b; }
static double r_div(double a, double b) { return a / b; }
static double r_sq(double a) { return a * a; }
static double r_plus_eps(double a) { return a + 1e-5; }

static char g_what[128];

/* (x - mean(x)) / sqrt(var(x) + eps) over the last axis, then * w + b */
static kiln_tensor *build_layernorm(kiln_tensor *const *in, const void *ctx) {
  (void)ctx;
  int ax[] = {-1};
  kiln_tensor *x = in[0];
  kiln_tensor *c = kiln_sub(x, kiln_mean(x, 1, ax, true));
  kiln_tensor *var = kiln_mean(kiln_mul(c, c), 1, ax, true);
  kiln_tensor *y = kiln_div(c, kiln_sqrt(kiln_binary_s(KILN_ADD, var, 1e-5)));
  return kiln_add(kiln_mul(y, in[1]), in[2]);
}

TEST(graph_layernorm) {
  ref_rng g = ref_rng_seed(test_seed(SEED));
  int64_t sx[] = {3, 5, 16}, sw[] = {16};
  ref_t *x = ref_random(&g, 3, sx, KILN_F32, -3, 3, 0);
  ref_t *w = ref_random(&g, 1, sw, KILN_F32, 0.5, 1.5, 0),
        *b = ref_random(&g, 1, sw, KILN_F32, -1, 1, 0);
  int ax[] = {-1};
  ref_t *c = ref_map2(x, ref_reduce(x, REF_MEAN, 1, ax, true), r_sub);
  ref_t *var = ref_reduce(ref_map(c, r_sq), REF_MEAN, 1, ax, true);
  ref_t *y = ref_map2(c, ref_map(ref_map(var, r_plus_eps), sqrt), r_div);
  ref_t *e = ref_map2(ref_map2(y, w, r_mul), b, r_add);
  kt_case k = {.what = "layernorm (3,5,16)",
               .nin = 3,
               .in = {x, w, b},
               .in_dt = {KILN_F32, KILN_F32, KILN_F32},
               .expected = e,
               .out_dt = KILN_F32,
               .rtol = 1e-5,
               .atol = 1e-5,
               .cross = KT_CROSS_CLOSE};
  kt_run_case(&k, build_layernorm, NULL);
}

/* sum over axis 0 of max over axis 2 of a flipped view, plus a sum over an expanded axis */
static kiln_tensor *build_reduce_reduce(kiln_tensor *const *in, const void *ctx) {
  (void)ctx;
  int a2[] = {2}, a0[] = {0}, f[] = {1};
  kiln_tensor *m = kiln_max(kiln_flip(in[0], 1, f), 1, a2, false); /* (4,5) */
  kiln_tensor *s = kiln_sum(m, 1, a0, false);                      /* (5) */
  int64_t e[] = {6, 5};
  kiln_tensor *t = kiln_sum(kiln_expand(in[1], 2, e), 1, a0, false); /* 6 * in[1] */
  return kiln_add(s, t);
}

TEST(graph_reduce_of_reduce) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 1));
  int64_t sx[] = {4, 5, 3}, sy[] = {5};
  ref_t *x = ref_random(&g, 3, sx, KILN_F32, -5, 5, 0),
        *y = ref_random(&g, 1, sy, KILN_F32, -5, 5, 0);
  int a2[] = {2}, a0[] = {0}, f[] = {1};
  int64_t e6[] = {6, 5};
  ref_t *s =
      ref_reduce(ref_reduce(ref_flip(x, 1, f), REF_MAX, 1, a2, false), REF_SUM, 1, a0, false);
  ref_t *t = ref_reduce(ref_expand(y, 2, e6), REF_SUM, 1, a0, false);
  kt_case k = {.what = "sum(max(flip(x),2),0) + sum(expand(y),0)",
               .nin = 2,
               .in = {x, y},
               .in_dt = {KILN_F32, KILN_F32},
               .expected = ref_map2(s, t, r_add),
               .out_dt = KILN_F32,
               .rtol = 1e-5,
               .atol = 1e-5,
               .cross = KT_CROSS_CLOSE};
  kt_run_case(&k, build_reduce_reduce, NULL);
}

/* matmul of a computed operand and a transposed, sliced view */
static kiln_tensor *build_mm_views(kiln_tensor *const *in, const void *ctx) {
  (void)ctx;
  kiln_tensor *a = kiln_exp(kiln_binary_s(KILN_MUL, in[0], 0.5));       /* (6,9) */
  kiln_tensor *b = kiln_slice(kiln_transpose(in[1], 0, 1), 1, 0, 7, 2); /* (9,7)->(9,4) */
  return kiln_matmul(a, b);
}

static double r_half_exp(double x) { return exp(0.5 * x); }

TEST(graph_matmul_of_views) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 2));
  int64_t sa[] = {6, 9}, sb[] = {7, 9};
  ref_t *a = ref_random(&g, 2, sa, KILN_F32, -1, 1, 0),
        *b = ref_random(&g, 2, sb, KILN_F32, -1, 1, 0);
  ref_t *ea = ref_map(a, r_half_exp), *vb = ref_slice(ref_transpose(b, 0, 1), 1, 0, 7, 2);
  ref_t *tb = ref_matmul(ea, ref_map(vb, fabs));
  kt_case k = {.what = "exp(a/2) @ b.T[:, ::2]",
               .nin = 2,
               .in = {a, b},
               .in_dt = {KILN_F32, KILN_F32},
               .expected = ref_matmul(ea, vb),
               .out_dt = KILN_F32,
               .tolbase = tb,
               .rtol = 1e-5,
               .atol = 1e-6,
               .cross = KT_CROSS_CLOSE};
  kt_run_case(&k, build_mm_views, NULL);
}

/* one buffer through two views: x + flip(x) + x.T (square) */
static kiln_tensor *build_self_views(kiln_tensor *const *in, const void *ctx) {
  (void)ctx;
  int f[] = {0, 1};
  return kiln_add(kiln_add(in[0], kiln_flip(in[0], 2, f)), kiln_transpose(in[0], 0, 1));
}

TEST(graph_one_buffer_two_views) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 3));
  int64_t s[] = {5, 5};
  ref_t *x = ref_random(&g, 2, s, KILN_I32, -100, 100, 0);
  int f[] = {0, 1};
  ref_t *e = ref_map2(ref_map2(x, ref_flip(x, 2, f), r_add), ref_transpose(x, 0, 1), r_add);
  kt_case k = {.what = "x + flip(x) + x.T",
               .nin = 1,
               .in = {x},
               .in_dt = {KILN_I32},
               .expected = e,
               .out_dt = KILN_I32,
               .cross = KT_CROSS_EXACT};
  kt_run_case(&k, build_self_views, NULL);
}

/* Realized intermediates reused in later graphs, and realize_many with a shared input. */
static void reuse_body(const char *device) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 4));
  int64_t s[] = {4, 7};
  ref_t *rx = ref_random(&g, 2, s, KILN_F32, -2, 2, 0);
  kiln_tensor *x = kt_from_ref(rx, KILN_F32);
  kiln_tensor *a = kiln_binary_s(KILN_MUL, x, 2.0);
  REQUIRE(kiln_realize(a) >= 0);
  kiln_tensor *b = kiln_add(a, x);           /* 3x */
  kiln_tensor *c = kiln_mul(a, kiln_exp(b)); /* 2x * e^{3x} */
  int ax[] = {1};
  kiln_tensor *outs[] = {c, kiln_sum(b, 1, ax, false), b};
  CHECKF(kiln_realize_many(3, outs) >= 0, "[%s] realize_many: %s", device, test_errmsg());
  ref_t *e3 = ref_map2(rx, ref_scalar(3), r_mul);
  ref_t *ec = ref_map2(ref_map2(rx, ref_scalar(2), r_mul), ref_map(e3, exp), r_mul);
  ref_t *g0 = kt_read(outs[0]), *g1 = kt_read(outs[1]), *g2 = kt_read(outs[2]);
  if (g0) kt_compare("2x*exp(3x)", g0, ec, NULL, 1e-5, 1e-6);
  if (g1)
    kt_compare("sum(3x,1)", g1, ref_reduce(e3, REF_SUM, 1, ax, false),
               ref_reduce(ref_map(e3, fabs), REF_SUM, 1, ax, false), 1e-5, 1e-6);
  if (g2) kt_compare("3x", g2, e3, NULL, 1e-6, 0);
  /* the realized intermediate still reads back unchanged */
  ref_t *ga = kt_read(a);
  if (ga) kt_compare("2x after reuse", ga, ref_map2(rx, ref_scalar(2), r_mul), NULL, 0, 0);
}

TEST(graph_reuse_realized) { test_on_devices(reuse_body); }

/* A long sum: 20,000 elements, checked against the double sum. */
static kiln_tensor *build_sum_all(kiln_tensor *const *in, const void *ctx) {
  (void)ctx;
  return kiln_sum(in[0], 0, NULL, false);
}

TEST(graph_long_sum) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 5));
  int64_t s[] = {20000};
  ref_t *x = ref_random(&g, 1, s, KILN_F32, 0, 1, 0);
  kt_case k = {.what = "sum of 20000 in [0,1)",
               .nin = 1,
               .in = {x},
               .in_dt = {KILN_F32},
               .expected = ref_reduce(x, REF_SUM, 0, NULL, false),
               .out_dt = KILN_F32,
               .rtol = 1e-4,
               .cross = KT_CROSS_CLOSE};
  kt_run_case(&k, build_sum_all, NULL);
}

/* Rounding: f32 -> f16 / bf16 at exact ties and into subnormals; f16 overflow. */
static kiln_tensor *build_cast(kiln_tensor *const *in, const void *ctx) {
  return kiln_cast(in[0], *(const kiln_dtype *)ctx);
}

static kiln_tensor *build_exp(kiln_tensor *const *in, const void *ctx) {
  (void)ctx;
  return kiln_exp(in[0]);
}

TEST(graph_half_rounding_ties) {
  static const double v[] = {
      1 + 0x1p-11, 1 + 0x3p-11, -(1 + 0x1p-11), 2049,   2051,  0x1p-25,
      0x1.8p-24,   0x1.4p-23,   1e-6,           65519,  65520, -70000,
      1 + 0x1p-8,  1 + 0x3p-8,  0x1p-130,       3.0e38,
  };
  int64_t n = (int64_t)(sizeof v / sizeof v[0]);
  ref_t *x = ref_from(1, &n, v);
  static const kiln_dtype halves[] = {KILN_F16, KILN_BF16};
  for (int i = 0; i < 2; i++) {
    snprintf(g_what, sizeof g_what, "cast f32->%s at rounding ties", kiln_dtype_name(halves[i]));
    kt_case k = {.what = g_what,
                 .nin = 1,
                 .in = {x},
                 .in_dt = {KILN_F32},
                 .expected = ref_round_all(x, KILN_F32),
                 .out_dt = halves[i],
                 .cross = KT_CROSS_EXACT};
    kt_run_case(&k, build_cast, &halves[i]);
  }
  /* the same values must round exactly, not within a tolerance: compare bits by hand */
  for (int i = 0; i < 2; i++) {
    for (int dv = 0; dv < test_ndevices; dv++) {
      kiln_set_device(test_devices[dv]);
      kiln_tensor *t = kiln_cast(kt_from_ref(x, KILN_F32), halves[i]);
      uint16_t got[16];
      if (!t || kiln_to_host(t, got, sizeof got) != 0) {
        test_fail(__FILE__, __LINE__, "[%s] cast to %s failed: %s", test_devices[dv],
                  kiln_dtype_name(halves[i]), test_errmsg());
        continue;
      }
      for (int k = 0; k < n; k++) {
        double f = (double)(float)v[k];
        uint16_t want = halves[i] == KILN_F16 ? ref_f16_bits(f) : ref_bf16_bits(f);
        CHECKF(got[k] == want, "[%s] f32 %a -> %s: bits %#06x, want %#06x (round to nearest even)",
               test_devices[dv], f, kiln_dtype_name(halves[i]), got[k], want);
      }
    }
  }
  /* exp in f16 overflows to inf and underflows to 0 */
  int64_t m = 5;
  ref_t *y = ref_from(1, &m, (double[]){10, 11.5, 12, -20, -5});
  kt_case k = {.what = "exp f16 overflow",
               .nin = 1,
               .in = {y},
               .in_dt = {KILN_F16},
               .expected = ref_map(ref_round_all(y, KILN_F16), exp),
               .out_dt = KILN_F16,
               .rtol = 1e-3,
               .atol = 1e-7,
               .cross = KT_CROSS_CLOSE};
  kt_run_case(&k, build_exp, NULL);
}

/* mean over an empty axis is NaN (0/0); max over a size-1 axis is the identity. */
static kiln_tensor *build_mean_axis1(kiln_tensor *const *in, const void *ctx) {
  (void)ctx;
  int ax[] = {1};
  return kiln_mean(in[0], 1, ax, false);
}

TEST(graph_mean_empty_axis) {
  int64_t s[] = {3, 0};
  ref_t *x = ref_new(2, s);
  int ax[] = {1};
  kt_case k = {.what = "mean over empty axis",
               .nin = 1,
               .in = {x},
               .in_dt = {KILN_F32},
               .expected = ref_reduce(x, REF_MEAN, 1, ax, false),
               .out_dt = KILN_F32,
               .cross = KT_CROSS_EXACT};
  kt_run_case(&k, build_mean_axis1, NULL);
}

/* contiguous() of an expanded, padded view. */
static kiln_tensor *build_contig_expand(kiln_tensor *const *in, const void *ctx) {
  (void)ctx;
  int64_t e[] = {3, 4, 2}, before[] = {0, 1, 0}, after[] = {1, 0, 2};
  kiln_tensor *t = kiln_contiguous(kiln_pad(kiln_expand(in[0], 3, e), before, after, -1));
  return kiln_relu(t);
}

static double r_relu(double x) { return x > 0 ? x : 0; }

TEST(graph_contiguous_of_expand) {
  ref_rng g = ref_rng_seed(test_seed(SEED + 6));
  int64_t s[] = {4, 1};
  ref_t *x = ref_random(&g, 2, s, KILN_F32, -2, 2, 0);
  int64_t e[] = {3, 4, 2}, before[] = {0, 1, 0}, after[] = {1, 0, 2};
  kt_case k = {.what = "relu(contiguous(pad(expand)))",
               .nin = 1,
               .in = {x},
               .in_dt = {KILN_F32},
               .expected = ref_map(ref_pad(ref_expand(x, 3, e), before, after, -1), r_relu),
               .out_dt = KILN_F32,
               .cross = KT_CROSS_EXACT};
  kt_run_case(&k, build_contig_expand, NULL);
}
