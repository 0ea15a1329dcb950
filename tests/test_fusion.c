/* test_fusion.c — the scheduler's fusion, tested by kernel counts (kernels_run around one
 * realize, inputs realized beforehand) and by the values the fused kernels compute. */
#include "check.h"

static ref_rng g_rng;

/* An f32 input on the current device, realized, and its reference. */
static kiln_tensor *input(int nd, const int64_t *shape, double lo, double hi, ref_t **r) {
  *r = ref_random(&g_rng, nd, shape, KILN_F32, lo, hi, 0);
  kiln_tensor *t = kt_from_ref(*r, KILN_F32);
  if (t && kiln_realize(t) < 0) return NULL;
  return t;
}

/* Realizes t and returns the kernel launches it took (-1 on error). */
static int64_t kernels_for(kiln_tensor *t) {
  kiln_stats before, after;
  kiln_get_stats(&before);
  if (!t || kiln_realize(t) < 0) return -1;
  kiln_get_stats(&after);
  return after.kernels_run - before.kernels_run;
}

static double r_relu(double x) { return x > 0 ? x : 0; }
static double r_add(double a, double b) { return a + b; }
static double r_mul(double a, double b) { return a * b; }
static double r_plus1(double x) { return x + 1; }
static double r_times2(double x) { return 2 * x; }

TEST_DEVICES(fusion_matmul_bias_relu) {
  g_rng = ref_rng_seed(test_seed(101));
  int64_t sa[] = {8, 16}, sb[] = {16, 12};
  ref_t *ra, *rb;
  kiln_tensor *a = input(2, sa, -1, 1, &ra), *b = input(2, sb, -1, 1, &rb);
  REQUIRE(a && b);
  kiln_tensor *y = kiln_relu(kiln_binary_s(KILN_ADD, kiln_matmul(a, b), 1.0));
  int64_t k = kernels_for(y);
  CHECKF(k == 1, "[%s] relu(a@b + 1): %lld kernels, want 1", device, (long long)k);
  ref_t *want = ref_map(ref_map(ref_matmul(ra, rb), r_plus1), r_relu);
  ref_t *got = kt_read(y);
  if (got) kt_compare("relu(a@b+1)", got, want, NULL, 1e-5, 1e-5);
}

TEST_DEVICES(fusion_exp_mul_sum) {
  g_rng = ref_rng_seed(test_seed(102));
  int64_t sa[] = {6, 10};
  ref_t *ra;
  kiln_tensor *a = input(2, sa, -2, 2, &ra);
  REQUIRE(a);
  int ax = 1;
  kiln_tensor *y = kiln_sum(kiln_binary_s(KILN_MUL, kiln_exp(a), 2.0), 1, &ax, false);
  int64_t k = kernels_for(y);
  CHECKF(k == 1, "[%s] (exp(a)*2).sum(1): %lld kernels, want 1", device, (long long)k);
  ref_t *want = ref_reduce(ref_map(ref_map(ra, exp), r_times2), REF_SUM, 1, &ax, false);
  ref_t *got = kt_read(y);
  if (got) kt_compare("(exp(a)*2).sum(1)", got, want, NULL, 1e-5, 1e-5);
}

TEST_DEVICES(fusion_softmax) {
  g_rng = ref_rng_seed(test_seed(103));
  int64_t sa[] = {5, 33};
  ref_t *ra;
  kiln_tensor *a = input(2, sa, -4, 4, &ra);
  REQUIRE(a);
  kiln_tensor *y = kiln_softmax(a, -1);
  int64_t k = kernels_for(y);
  CHECKF(k >= 1 && k <= 3, "[%s] softmax: %lld kernels, want 1..3", device, (long long)k);
  ref_t *got = kt_read(y);
  if (got) kt_compare("softmax", got, ref_softmax(ra, -1), NULL, 1e-5, 1e-7);
}

/* A reduce with few outputs over many inputs runs as two kernels (partial results per output,
 * then their combine), so it is spread over threads or work-groups; a small one stays one. */
TEST_DEVICES(fusion_split_reduce) {
  g_rng = ref_rng_seed(test_seed(106));
  int64_t sa[] = {3, 64, 1024}, sb[] = {4, 25};
  ref_t *ra, *rb;
  kiln_tensor *a = input(3, sa, -1, 1, &ra), *b = input(2, sb, -1, 1, &rb);
  REQUIRE(a && b);
  int all[] = {0, 1, 2}, rows[] = {1, 2};
  struct {
    const char *what;
    kiln_tensor *y;
    ref_t *want;
    int64_t kernels;
    double tol;
  } c[] = {
      {"sum of all", kiln_sum(a, 3, all, false), ref_reduce(ra, REF_SUM, 3, all, false), 2, 1e-5},
      {"max of rows", kiln_max(a, 2, rows, true), ref_reduce(ra, REF_MAX, 2, rows, true), 2, 0},
      {"mean of exp", kiln_mean(kiln_exp(a), 3, all, false),
       ref_reduce(ref_map(ra, exp), REF_MEAN, 3, all, false), 2, 1e-5},
      {"small sum", kiln_sum(b, 2, all, false), ref_reduce(rb, REF_SUM, 2, all, false), 1, 1e-5},
  };
  for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
    int64_t k = kernels_for(c[i].y);
    CHECKF(k == c[i].kernels, "[%s] %s: %lld kernels, want %lld", device, c[i].what, (long long)k,
           (long long)c[i].kernels);
    ref_t *got = kt_read(c[i].y);
    if (got) kt_compare(c[i].what, got, c[i].want, NULL, c[i].tol, c[i].tol);
  }
  /* an f16 sum keeps its partials in f32: the result is the f32 sum rounded once */
  kiln_tensor *h = kiln_cast(a, KILN_F16), *hs = kiln_sum(h, 3, all, false);
  kiln_tensor *fs = kiln_sum(kiln_cast(h, KILN_F32), 3, all, false);
  float hv = 0, fv = 0;
  REQUIRE(kiln_to_host(kiln_cast(hs, KILN_F32), &hv, sizeof hv) == 0);
  REQUIRE(kiln_to_host(fs, &fv, sizeof fv) == 0);
  CHECKF(fabsf(hv - fv) <= fabsf(fv) * 1e-3f + 1e-3f, "[%s] f16 sum %g, f32 sum %g", device, hv,
         fv);
}

static double r_chain(double x) {
  double y = x * 1.5;
  y = y + 0.25;
  y = -y;
  y = fabs(y);
  y = y + 1;
  y = log(y);
  y = y * x;
  y = y - 0.5;
  y = y > 0 ? y : 0;
  return y * y;
}

TEST_DEVICES(fusion_elementwise_chain) {
  g_rng = ref_rng_seed(test_seed(104));
  int64_t sa[] = {7, 9};
  ref_t *ra;
  kiln_tensor *x = input(2, sa, -3, 3, &ra);
  REQUIRE(x);
  kiln_tensor *y = kiln_binary_s(KILN_MUL, x, 1.5); /* 1 */
  y = kiln_binary_s(KILN_ADD, y, 0.25);             /* 2 */
  y = kiln_neg(y);                                  /* 3 */
  y = kiln_unary(KILN_ABS, y);                      /* 4 */
  y = kiln_binary_s(KILN_ADD, y, 1.0);              /* 5 */
  y = kiln_log(y);                                  /* 6 */
  y = kiln_mul(y, x);                               /* 7 */
  y = kiln_binary_s(KILN_SUB, y, 0.5);              /* 8 */
  y = kiln_relu(y);                                 /* 9 */
  y = kiln_unary(KILN_SQUARE, y);                   /* 10 */
  int64_t k = kernels_for(y);
  CHECKF(k == 1, "[%s] chain of 10 elementwise ops: %lld kernels, want 1", device, (long long)k);
  ref_t *got = kt_read(y);
  if (got) kt_compare("chain of 10", got, ref_map(ra, r_chain), NULL, 1e-5, 1e-6);
}

TEST_DEVICES(fusion_through_movement) {
  g_rng = ref_rng_seed(test_seed(105));
  int64_t sa[] = {4, 6}, sb[] = {3};
  ref_t *ra, *rb;
  kiln_tensor *a = input(2, sa, -2, 2, &ra), *b = input(1, sb, -2, 2, &rb);
  REQUIRE(a && b);
  int perm[] = {1, 0};
  int64_t r3[] = {2, 3, 4}, start[] = {0, 0, 1}, end[] = {2, 3, 4}, e4[] = {5, 2, 3, 3};
  kiln_tensor *y = kiln_exp(a); /* (4,6) */
  y = kiln_permute(y, perm);    /* (6,4) */
  y = kiln_binary_s(KILN_ADD, y, 1.0);
  y = kiln_reshape(y, 3, r3); /* (2,3,4) */
  y = kiln_binary_s(KILN_MUL, y, 2.0);
  y = kiln_shrink(y, start, end);               /* (2,3,3) */
  y = kiln_expand(kiln_unsqueeze(y, 0), 4, e4); /* (5,2,3,3) */
  y = kiln_add(y, b);                           /* + (3) */
  int64_t k = kernels_for(y);
  CHECKF(k == 1, "[%s] elementwise through permute/reshape/shrink/expand: %lld kernels, want 1",
         device, (long long)k);
  ref_t *w = ref_map(ref_permute(ref_map(ra, exp), perm), r_plus1);
  w = ref_map(ref_reshape(w, 3, r3), r_times2);
  w = ref_expand(ref_unsqueeze(ref_shrink(w, start, end), 0), 4, e4);
  w = ref_map2(w, rb, r_add);
  ref_t *got = kt_read(y);
  if (got) kt_compare("through movement", got, w, NULL, 1e-5, 1e-6);
}

/* An elementwise chain broadcast along a trailing dim, under a sum over an earlier dim: the
 * loops run the summed dim innermost, so the chain would be recomputed per element of the sum
 * and per broadcast copy (a matmul's input gradient: the loss gradient (N,M) read K times). It is
 * stored once: two kernels. */
TEST_DEVICES(fusion_broadcast_under_earlier_reduce) {
  g_rng = ref_rng_seed(test_seed(107));
  int64_t sa[] = {6, 5}, sb[] = {1, 5, 7}, a3[] = {6, 5, 1}, e3[] = {6, 5, 7};
  ref_t *ra, *rb;
  kiln_tensor *a = input(2, sa, -1, 1, &ra), *b = input(3, sb, -1, 1, &rb);
  REQUIRE(a && b);
  kiln_tensor *g = kiln_binary_s(KILN_ADD, kiln_binary_s(KILN_MUL, kiln_exp(a), 2.0), 1.0);
  g = kiln_expand(kiln_reshape(g, 3, a3), 3, e3);
  kiln_tensor *y = kiln_sum(kiln_mul(g, b), 1, (int[]){1}, false); /* (6, 7) */
  int64_t k = kernels_for(y);
  CHECKF(k == 2, "[%s] sum_1(expand(exp(a)*2+1) * b): %lld kernels, want 2", device, (long long)k);
  ref_t *w =
      ref_expand(ref_reshape(ref_map(ref_map(ref_map(ra, exp), r_times2), r_plus1), 3, a3), 3, e3);
  w = ref_reduce(ref_map2(w, ref_expand(rb, 3, e3), r_mul), REF_SUM, 1, (int[]){1}, false);
  ref_t *got = kt_read(y);
  if (got) kt_compare("broadcast under an earlier reduce", got, w, NULL, 1e-5, 1e-5);
}

TEST_DEVICES(fusion_realized_is_free) {
  g_rng = ref_rng_seed(test_seed(106));
  int64_t sa[] = {3, 4};
  ref_t *ra;
  kiln_tensor *a = input(2, sa, -1, 1, &ra);
  REQUIRE(a);
  kiln_tensor *y = kiln_mul(a, a);
  int64_t k1 = kernels_for(y), k2 = kernels_for(y);
  CHECKF(k1 == 1, "[%s] a*a: %lld kernels, want 1", device, (long long)k1);
  CHECKF(k2 == 0, "[%s] realizing a realized tensor ran %lld kernels", device, (long long)k2);
  /* two outputs sharing an input in one schedule */
  kiln_tensor *outs[2] = {kiln_binary_s(KILN_ADD, a, 1.0), kiln_binary_s(KILN_MUL, a, 3.0)};
  kiln_stats before, after;
  kiln_get_stats(&before);
  CHECK(kiln_realize_many(2, outs) >= 0);
  kiln_get_stats(&after);
  int64_t k3 = after.kernels_run - before.kernels_run;
  CHECKF(k3 >= 1 && k3 <= 2, "[%s] realize_many of 2 elementwise outputs: %lld kernels", device,
         (long long)k3);
  ref_t *g0 = kt_read(outs[0]), *g1 = kt_read(outs[1]);
  if (g0) kt_compare("a+1", g0, ref_map(ra, r_plus1), NULL, 1e-6, 0);
  if (g1) kt_compare("a*3", g1, ref_map2(ra, ref_scalar(3), r_mul), NULL, 1e-6, 0);
}
