/* test_autograd.c — every gradient rule against central finite differences in double
 * precision: loss = sum(f(x...) * w) with a fixed random w; d loss / d x from kiln_backward
 * must match (loss(x + h) - loss(x - h)) / 2h, each loss computed by a forward pass. */
#include "test.h"
#include <stdlib.h>

typedef kiln_tensor *(*fwd_fn)(kiln_tensor **xs);

static uint64_t rng_state = 12345;
static double urand(void) { /* splitmix64 -> [0,1) */
  uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

typedef struct {
  int ndim;
  int64_t shape[4];
  double lo, hi;
} spec;

/* loss = sum(f(xs) * w) on host data; returns NAN with a test failure on error */
static double loss_of(fwd_fn f, int n, const spec *sp, double **data, const double *w,
                      int64_t wn, kiln_tensor **leaves_out) {
  kiln_tensor *xs[4];
  for (int i = 0; i < n; i++) {
    xs[i] = kiln_from_data(KILN_F64, sp[i].ndim, sp[i].shape, data[i]);
    if (leaves_out) {
      kiln_set_requires_grad(xs[i], true);
      leaves_out[i] = xs[i];
    }
  }
  kiln_tensor *y = f(xs);
  if (!y) return NAN;
  if (kiln_numel(y) != wn) {
    test_fail(__FILE__, __LINE__, "output has %lld elements, expected %lld", (long long)kiln_numel(y), (long long)wn);
    return NAN;
  }
  kiln_tensor *wt = kiln_reshape(kiln_from_data(KILN_F64, 1, &wn, w), kiln_ndim(y), kiln_shape(y));
  kiln_tensor *loss = kiln_sum(kiln_mul(y, wt), 0, NULL, false);
  if (leaves_out && kiln_backward(loss) < 0) return NAN;
  return kiln_item(loss);
}

static void gradcheck(const char *name, fwd_fn f, int n, const spec *sp, int64_t outn) {
  test_set_context("%s", name);
  kiln_scope_begin();
  double *data[4], *w = malloc(sizeof(double) * (outn ? outn : 1));
  for (int64_t i = 0; i < outn; i++) w[i] = urand() * 2 - 1;
  for (int i = 0; i < n; i++) {
    int64_t cnt = 1;
    for (int d = 0; d < sp[i].ndim; d++) cnt *= sp[i].shape[d];
    data[i] = malloc(sizeof(double) * (cnt ? cnt : 1));
    for (int64_t j = 0; j < cnt; j++) data[i][j] = sp[i].lo + (sp[i].hi - sp[i].lo) * urand();
  }
  kiln_tensor *leaves[4];
  double l0 = loss_of(f, n, sp, data, w, outn, leaves);
  CHECKF(!isnan(l0), "forward/backward failed: %s", kiln_error());
  for (int i = 0; i < n && !isnan(l0); i++) {
    int64_t cnt = kiln_numel(leaves[i]);
    double *g = malloc(sizeof(double) * (cnt ? cnt : 1));
    kiln_tensor *gt = kiln_grad(leaves[i]);
    CHECKF(gt != NULL, "input %d got no gradient", i);
    if (!gt || kiln_to_host(gt, g, sizeof(double) * cnt) < 0) {
      free(g);
      continue;
    }
    int bad = 0;
    for (int64_t j = 0; j < cnt && bad < 3; j++) {
      double h = 1e-6 * (fabs(data[i][j]) > 1 ? fabs(data[i][j]) : 1), keep = data[i][j];
      kiln_scope_begin();
      data[i][j] = keep + h;
      double lp = loss_of(f, n, sp, data, w, outn, NULL);
      data[i][j] = keep - h;
      double lm = loss_of(f, n, sp, data, w, outn, NULL);
      data[i][j] = keep;
      kiln_scope_end();
      double fd = (lp - lm) / (2 * h);
      if (!(fabs(fd - g[j]) <= 1e-5 + 1e-4 * fabs(fd))) {
        test_fail(__FILE__, __LINE__, "[%s] d/dx%d[%lld]: backward %.9g, finite difference %.9g", name, i,
                  (long long)j, g[j], fd);
        bad++;
      }
    }
    free(g);
  }
  for (int i = 0; i < n; i++) free(data[i]);
  free(w);
  kiln_scope_end();
  test_set_context("%s", "");
}

#define S2(a, b, l, h) {2, {a, b}, l, h}
static kiln_tensor *sq(kiln_tensor *x) { return kiln_unary(KILN_SQUARE, x); }
static kiln_tensor *sn(kiln_tensor *x) { return kiln_unary(KILN_SIN, x); }
static kiln_tensor *f_exp(kiln_tensor **x) { return kiln_exp(x[0]); }
static kiln_tensor *f_log(kiln_tensor **x) { return kiln_log(x[0]); }
static kiln_tensor *f_sin(kiln_tensor **x) { return kiln_unary(KILN_SIN, x[0]); }
static kiln_tensor *f_cos(kiln_tensor **x) { return kiln_unary(KILN_COS, x[0]); }
static kiln_tensor *f_sqrt(kiln_tensor **x) { return kiln_sqrt(x[0]); }
static kiln_tensor *f_rsqrt(kiln_tensor **x) { return kiln_unary(KILN_RSQRT, x[0]); }
static kiln_tensor *f_recip(kiln_tensor **x) { return kiln_unary(KILN_RECIP, x[0]); }
static kiln_tensor *f_relu(kiln_tensor **x) { return kiln_relu(x[0]); }
static kiln_tensor *f_sigmoid(kiln_tensor **x) { return kiln_unary(KILN_SIGMOID, x[0]); }
static kiln_tensor *f_tanh(kiln_tensor **x) { return kiln_unary(KILN_TANH, x[0]); }
static kiln_tensor *f_abs(kiln_tensor **x) { return kiln_unary(KILN_ABS, x[0]); }
static kiln_tensor *f_square(kiln_tensor **x) { return kiln_unary(KILN_SQUARE, x[0]); }
static kiln_tensor *f_neg(kiln_tensor **x) { return kiln_neg(x[0]); }
static kiln_tensor *f_add(kiln_tensor **x) { return kiln_add(x[0], x[1]); }
static kiln_tensor *f_sub(kiln_tensor **x) { return kiln_sub(x[0], x[1]); }
static kiln_tensor *f_mul(kiln_tensor **x) { return kiln_mul(x[0], x[1]); }
static kiln_tensor *f_div(kiln_tensor **x) { return kiln_div(x[0], x[1]); }
static kiln_tensor *f_max(kiln_tensor **x) { return kiln_binary(KILN_MAXIMUM, x[0], x[1]); }
static kiln_tensor *f_min(kiln_tensor **x) { return kiln_binary(KILN_MINIMUM, x[0], x[1]); }
static kiln_tensor *f_pow(kiln_tensor **x) { return kiln_binary(KILN_POW, x[0], x[1]); }
static kiln_tensor *f_where(kiln_tensor **x) {
  return kiln_where(kiln_binary(KILN_GT, x[0], x[1]), kiln_mul(x[0], x[0]), x[1]);
}
static kiln_tensor *f_sum(kiln_tensor **x) { return kiln_sum(x[0], 1, (int[]){1}, false); }
static kiln_tensor *f_rmax(kiln_tensor **x) { return kiln_max(x[0], 1, (int[]){0}, true); }
static kiln_tensor *f_rmin(kiln_tensor **x) { return kiln_reduce(KILN_MIN, x[0], 1, (int[]){1}, false); }
static kiln_tensor *f_mean(kiln_tensor **x) { return kiln_mean(x[0], 0, NULL, false); }
static kiln_tensor *f_prod(kiln_tensor **x) { return kiln_reduce(KILN_PROD, x[0], 1, (int[]){1}, false); }
static kiln_tensor *f_reshape(kiln_tensor **x) { return kiln_reshape(kiln_exp(x[0]), 3, (int64_t[]){2, 2, 3}); }
static kiln_tensor *f_permute(kiln_tensor **x) { return sn(kiln_transpose(x[0], 0, 1)); }
static kiln_tensor *f_expand(kiln_tensor **x) {
  return kiln_expand(kiln_reshape(x[0], 3, (int64_t[]){3, 1, 4}), 3, (int64_t[]){3, 5, 4});
}
static kiln_tensor *f_pad(kiln_tensor **x) {
  return kiln_pad(sq(x[0]), (int64_t[]){1, 0}, (int64_t[]){2, 3}, 0.5);
}
static kiln_tensor *f_shrink(kiln_tensor **x) {
  return kiln_shrink(x[0], (int64_t[]){1, 1}, (int64_t[]){3, 3});
}
static kiln_tensor *f_flip(kiln_tensor **x) { return kiln_mul(kiln_flip(x[0], 1, (int[]){1}), x[0]); }
static kiln_tensor *f_slice(kiln_tensor **x) { return kiln_slice(x[0], 1, 5, 0, -2); }
static kiln_tensor *f_cat(kiln_tensor **x) { return kiln_cat(2, (kiln_tensor *[]){x[0], x[1]}, 0); }
static kiln_tensor *f_stack(kiln_tensor **x) { return kiln_stack(2, (kiln_tensor *[]){x[0], x[1]}, 1); }
static kiln_tensor *f_matmul(kiln_tensor **x) { return kiln_matmul(x[0], x[1]); }
static kiln_tensor *f_bcast(kiln_tensor **x) { return kiln_mul(x[0], kiln_exp(x[1])); }
static kiln_tensor *f_softmax(kiln_tensor **x) { return kiln_softmax(x[0], 1); }
static kiln_tensor *f_logsoftmax(kiln_tensor **x) { return kiln_log_softmax(x[0], 0); }
static kiln_tensor *f_reuse(kiln_tensor **x) { /* one leaf used by several paths */
  kiln_tensor *a = kiln_mul(x[0], x[0]);
  return kiln_add(kiln_sum(a, 1, (int[]){1}, true), kiln_exp(a));
}
static kiln_tensor *f_sq(kiln_tensor **x) { return kiln_unary(KILN_SQUARE, x[0]); }

TEST(autograd_unary) {
  spec any = S2(3, 4, -2, 2), pos = S2(3, 4, 0.2, 3), away = S2(3, 4, 0.3, 2);
  struct { const char *n; fwd_fn f; spec s; } cases[] = {
      {"exp", f_exp, any},         {"log", f_log, pos},         {"sin", f_sin, any},
      {"cos", f_cos, any},         {"sqrt", f_sqrt, pos},       {"rsqrt", f_rsqrt, pos},
      {"recip", f_recip, pos},     {"relu", f_relu, away},      {"sigmoid", f_sigmoid, any},
      {"tanh", f_tanh, any},       {"abs", f_abs, away},        {"square", f_square, any},
      {"neg", f_neg, any},         {"sq", f_sq, any}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) gradcheck(cases[i].n, cases[i].f, 1, &cases[i].s, 12);
  spec neg = S2(3, 4, -2, -0.3); /* relu and abs on the other side of zero */
  gradcheck("relu<0", f_relu, 1, &neg, 12);
  gradcheck("abs<0", f_abs, 1, &neg, 12);
}

TEST(autograd_binary) {
  spec a = S2(3, 4, -2, 2), p = S2(3, 4, 0.5, 2);
  spec two[2] = {a, a}, pp[2] = {p, p};
  gradcheck("add", f_add, 2, two, 12);
  gradcheck("sub", f_sub, 2, two, 12);
  gradcheck("mul", f_mul, 2, two, 12);
  gradcheck("div", f_div, 2, pp, 12);
  gradcheck("maximum", f_max, 2, two, 12);
  gradcheck("minimum", f_min, 2, two, 12);
  gradcheck("pow", f_pow, 2, pp, 12);
  gradcheck("where", f_where, 2, two, 12);
  spec bc[2] = {{3, {2, 3, 4}, -1, 1}, {2, {1, 4}, -1, 1}};
  gradcheck("broadcast", f_bcast, 2, bc, 24);
}

TEST(autograd_reduce) {
  spec a = S2(3, 4, -2, 2), p = S2(3, 4, 0.5, 1.5);
  gradcheck("sum", f_sum, 1, &a, 3);
  gradcheck("max", f_rmax, 1, &a, 4);
  gradcheck("min", f_rmin, 1, &a, 3);
  gradcheck("mean", f_mean, 1, &a, 1);
  gradcheck("prod", f_prod, 1, &p, 3);
  gradcheck("softmax", f_softmax, 1, &a, 12);
  gradcheck("log_softmax", f_logsoftmax, 1, &a, 12);
  gradcheck("reuse", f_reuse, 1, &a, 12);
}

TEST(autograd_movement) {
  spec a = S2(3, 4, -2, 2), b = S2(4, 4, -2, 2), c = S2(2, 6, -1, 1), e = S2(3, 4, -1, 1);
  gradcheck("reshape", f_reshape, 1, &c, 12);
  gradcheck("permute", f_permute, 1, &a, 12);
  spec x = S2(3, 4, -2, 2);
  gradcheck("expand", f_expand, 1, &x, 60);
  gradcheck("pad", f_pad, 1, &a, 6 * 7);
  gradcheck("shrink", f_shrink, 1, &b, 4);
  gradcheck("flip", f_flip, 1, &a, 12);
  gradcheck("slice", f_slice, 1, &c, 2 * 3);
  spec two[2] = {a, e};
  gradcheck("cat", f_cat, 2, two, 24);
  gradcheck("stack", f_stack, 2, two, 24);
  spec mm[2] = {S2(3, 5, -1, 1), S2(5, 2, -1, 1)};
  gradcheck("matmul", f_matmul, 2, mm, 6);
}

TEST(autograd_accumulates_and_errors) {
  double v[3] = {1, 2, 3};
  kiln_tensor *x = kiln_from_data(KILN_F64, 1, (int64_t[]){3}, v);
  REQUIRE(kiln_set_requires_grad(x, true) == 0);
  for (int k = 0; k < 2; k++) REQUIRE(kiln_backward(kiln_sum(kiln_mul(x, x), 0, NULL, false)) == 0);
  double g[3];
  REQUIRE(kiln_to_host(kiln_grad(x), g, sizeof g) == 0);
  for (int i = 0; i < 3; i++) CHECK_NEAR(g[i], 4 * v[i], 1e-12); /* two backwards of 2x */
  kiln_zero_grad(x);
  CHECK(kiln_grad(x) == NULL);
  CHECK(kiln_backward(kiln_mul(x, x)) < 0); /* not a scalar */
  CHECK_CONTAINS(kiln_error(), "backward");
  kiln_clear_error();
  kiln_tensor *i = kiln_from_data(KILN_I32, 1, (int64_t[]){1}, (int32_t[]){1});
  CHECK(kiln_set_requires_grad(i, true) < 0);
  kiln_clear_error();
  bool old = kiln_set_grad_enabled(false);
  kiln_tensor *ng = kiln_sum(kiln_mul(x, x), 0, NULL, false);
  kiln_set_grad_enabled(old);
  CHECK(!kiln_requires_grad(ng));
  CHECK(kiln_backward(ng) < 0);
  kiln_clear_error();
  /* the loss realized before backward still differentiates */
  kiln_tensor *l = kiln_sum(kiln_exp(x), 0, NULL, false);
  CHECK_NEAR(kiln_item(l), exp(1) + exp(2) + exp(3), 1e-9);
  REQUIRE(kiln_backward(l) == 0);
  REQUIRE(kiln_to_host(kiln_grad(x), g, sizeof g) == 0);
  for (int k = 0; k < 3; k++) CHECK_NEAR(g[k], exp(v[k]), 1e-9);
  /* through a cast to f32 and back: d/dx sum(3 * f64(f32(x))) = 3 */
  kiln_zero_grad(x);
  REQUIRE(kiln_backward(kiln_sum(kiln_binary_s(KILN_MUL, kiln_cast(kiln_cast(x, KILN_F32), KILN_F64), 3), 0, NULL, false)) == 0);
  REQUIRE(kiln_to_host(kiln_grad(x), g, sizeof g) == 0);
  for (int k = 0; k < 3; k++) CHECK_NEAR(g[k], 3, 0);
  /* detach stops the gradient */
  kiln_zero_grad(x);
  REQUIRE(kiln_backward(kiln_sum(kiln_mul(x, kiln_detach(x)), 0, NULL, false)) == 0);
  REQUIRE(kiln_to_host(kiln_grad(x), g, sizeof g) == 0);
  for (int k = 0; k < 3; k++) CHECK_NEAR(g[k], v[k], 1e-12);
}
