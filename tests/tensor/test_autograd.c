/* test_autograd.c — every gradient rule against central finite differences in double
 * precision (gradcheck.h: d sum(f(x...) * w) / dx from kiln_backward against
 * (loss(x + h) - loss(x - h)) / 2h), then accumulation, no-grad, detach and error cases. */
#include "gradcheck.h"

/* The cases need no context: every forward below ignores its second argument. */
#define FWD(fn) static kiln_tensor *fn(kiln_tensor **x, const void *unused __attribute__((unused)))

#define S2(a, b, l, h)                                                                             \
  { 2, {a, b}, l, h }
static kiln_tensor *sq(kiln_tensor *x) { return kiln_unary(KILN_SQUARE, x); }
static kiln_tensor *sn(kiln_tensor *x) { return kiln_unary(KILN_SIN, x); }
FWD(f_exp) { return kiln_exp(x[0]); }
FWD(f_log) { return kiln_log(x[0]); }
FWD(f_sin) { return kiln_unary(KILN_SIN, x[0]); }
FWD(f_cos) { return kiln_unary(KILN_COS, x[0]); }
FWD(f_sqrt) { return kiln_sqrt(x[0]); }
FWD(f_rsqrt) { return kiln_unary(KILN_RSQRT, x[0]); }
FWD(f_recip) { return kiln_unary(KILN_RECIP, x[0]); }
FWD(f_relu) { return kiln_relu(x[0]); }
FWD(f_sigmoid) { return kiln_unary(KILN_SIGMOID, x[0]); }
FWD(f_tanh) { return kiln_unary(KILN_TANH, x[0]); }
FWD(f_abs) { return kiln_unary(KILN_ABS, x[0]); }
FWD(f_square) { return kiln_unary(KILN_SQUARE, x[0]); }
FWD(f_neg) { return kiln_neg(x[0]); }
FWD(f_add) { return kiln_add(x[0], x[1]); }
FWD(f_sub) { return kiln_sub(x[0], x[1]); }
FWD(f_mul) { return kiln_mul(x[0], x[1]); }
FWD(f_div) { return kiln_div(x[0], x[1]); }
FWD(f_max) { return kiln_binary(KILN_MAXIMUM, x[0], x[1]); }
FWD(f_min) { return kiln_binary(KILN_MINIMUM, x[0], x[1]); }
FWD(f_pow) { return kiln_binary(KILN_POW, x[0], x[1]); }
FWD(f_where) { return kiln_where(kiln_binary(KILN_GT, x[0], x[1]), kiln_mul(x[0], x[0]), x[1]); }
FWD(f_sum) { return kiln_sum(x[0], 1, (int[]){1}, false); }
FWD(f_rmax) { return kiln_max(x[0], 1, (int[]){0}, true); }
FWD(f_rmin) { return kiln_reduce(KILN_MIN, x[0], 1, (int[]){1}, false); }
FWD(f_mean) { return kiln_mean(x[0], 0, NULL, false); }
FWD(f_prod) { return kiln_reduce(KILN_PROD, x[0], 1, (int[]){1}, false); }
FWD(f_reshape) { return kiln_reshape(kiln_exp(x[0]), 3, (int64_t[]){2, 2, 3}); }
FWD(f_permute) { return sn(kiln_transpose(x[0], 0, 1)); }
FWD(f_expand) {
  return kiln_expand(kiln_reshape(x[0], 3, (int64_t[]){3, 1, 4}), 3, (int64_t[]){3, 5, 4});
}
FWD(f_pad) { return kiln_pad(sq(x[0]), (int64_t[]){1, 0}, (int64_t[]){2, 3}, 0.5); }
FWD(f_shrink) { return kiln_shrink(x[0], (int64_t[]){1, 1}, (int64_t[]){3, 3}); }
FWD(f_flip) { return kiln_mul(kiln_flip(x[0], 1, (int[]){1}), x[0]); }
FWD(f_slice) { return kiln_slice(x[0], 1, 5, 0, -2); }
FWD(f_cat) { return kiln_cat(2, (kiln_tensor *[]){x[0], x[1]}, 0); }
FWD(f_stack) { return kiln_stack(2, (kiln_tensor *[]){x[0], x[1]}, 1); }
FWD(f_matmul) { return kiln_matmul(x[0], x[1]); }
FWD(f_bcast) { return kiln_mul(x[0], kiln_exp(x[1])); }
FWD(f_softmax) { return kiln_softmax(x[0], 1); }
FWD(f_logsoftmax) { return kiln_log_softmax(x[0], 0); }
FWD(f_reuse) { /* one leaf used by several paths */
  kiln_tensor *a = kiln_mul(x[0], x[0]);
  return kiln_add(kiln_sum(a, 1, (int[]){1}, true), kiln_exp(a));
}
FWD(f_sq) { return kiln_unary(KILN_SQUARE, x[0]); }

TEST(autograd_unary) {
  gc_spec any = S2(3, 4, -2, 2), pos = S2(3, 4, 0.2, 3), away = S2(3, 4, 0.3, 2);
  struct {
    const char *n;
    gc_fn f;
    gc_spec s;
  } cases[] = {{"exp", f_exp, any},     {"log", f_log, pos},    {"sin", f_sin, any},
               {"cos", f_cos, any},     {"sqrt", f_sqrt, pos},  {"rsqrt", f_rsqrt, pos},
               {"recip", f_recip, pos}, {"relu", f_relu, away}, {"sigmoid", f_sigmoid, any},
               {"tanh", f_tanh, any},   {"abs", f_abs, away},   {"square", f_square, any},
               {"neg", f_neg, any},     {"sq", f_sq, any}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
    gradcheck(cases[i].n, cases[i].f, NULL, 1, &cases[i].s);
  gc_spec neg = S2(3, 4, -2, -0.3); /* relu and abs on the other side of zero */
  gradcheck("relu<0", f_relu, NULL, 1, &neg);
  gradcheck("abs<0", f_abs, NULL, 1, &neg);
}

/* Saturating activations far out, where exp(-x) overflows: finite gradients equal to the
 * exact derivative (0 where they saturate at a constant, 1 where gelu and silu become x). */
static double d_sigmoid(double x) { return x < -700 ? 0 : exp(-x) / ((1 + exp(-x)) * (1 + exp(-x))); }
static double d_tanh(double x) { double t = tanh(x); return 1 - t * t; }
static double d_silu(double x) { double s = 1 / (1 + exp(-x)); return s + x * s * (1 - s); }
static kiln_tensor *sigmoid1(kiln_tensor *x) { return kiln_unary(KILN_SIGMOID, x); }
static kiln_tensor *tanh1(kiln_tensor *x) { return kiln_unary(KILN_TANH, x); }
static double d_gelu(double x) {
  double k = sqrt(2 / M_PI), u = k * (x + 0.044715 * x * x * x), t = tanh(u);
  return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x);
}
TEST(autograd_saturating_tails) {
  const float xs[] = {-1000, -100, -60, -20, -9, 9, 20, 60, 100, 1000, 0.5f};
  enum { N = sizeof xs / sizeof xs[0] };
  int64_t n = N;
  struct {
    const char *name;
    kiln_tensor *(*f)(kiln_tensor *);
    double (*d)(double);
  } fs[] = {{"sigmoid", sigmoid1, d_sigmoid}, {"tanh", tanh1, d_tanh}, {"silu", kiln_silu, d_silu},
            {"gelu", kiln_gelu, d_gelu}};
  for (size_t k = 0; k < sizeof fs / sizeof fs[0]; k++) {
    kiln_tensor *x = kiln_from_data(KILN_F32, 1, &n, xs);
    REQUIRE(x && kiln_set_requires_grad(x, true) == 0);
    REQUIRE(kiln_backward(kiln_sum(fs[k].f(x), 0, NULL, false)) == 0);
    float g[N];
    REQUIRE(kiln_to_host(kiln_grad(x), g, sizeof g) == 0);
    for (int i = 0; i < N; i++) {
      double want = fs[k].d(xs[i]);
      CHECKF(isfinite(g[i]) && fabs(g[i] - want) <= 1e-5 + 1e-5 * fabs(want), "d %s(x)/dx at %g: %g, want %g",
             fs[k].name, (double)xs[i], (double)g[i], want);
    }
  }
}

TEST(autograd_binary) {
  gc_spec a = S2(3, 4, -2, 2), p = S2(3, 4, 0.5, 2);
  gc_spec two[2] = {a, a}, pp[2] = {p, p};
  gradcheck("add", f_add, NULL, 2, two);
  gradcheck("sub", f_sub, NULL, 2, two);
  gradcheck("mul", f_mul, NULL, 2, two);
  gradcheck("div", f_div, NULL, 2, pp);
  gradcheck("maximum", f_max, NULL, 2, two);
  gradcheck("minimum", f_min, NULL, 2, two);
  gradcheck("pow", f_pow, NULL, 2, pp);
  gradcheck("where", f_where, NULL, 2, two);
  gc_spec bc[2] = {{3, {2, 3, 4}, -1, 1}, {2, {1, 4}, -1, 1}};
  gradcheck("broadcast", f_bcast, NULL, 2, bc);
}

TEST(autograd_reduce) {
  gc_spec a = S2(3, 4, -2, 2), p = S2(3, 4, 0.5, 1.5);
  gradcheck("sum", f_sum, NULL, 1, &a);
  gradcheck("max", f_rmax, NULL, 1, &a);
  gradcheck("min", f_rmin, NULL, 1, &a);
  gradcheck("mean", f_mean, NULL, 1, &a);
  gradcheck("prod", f_prod, NULL, 1, &p);
  gradcheck("softmax", f_softmax, NULL, 1, &a);
  gradcheck("log_softmax", f_logsoftmax, NULL, 1, &a);
  gradcheck("reuse", f_reuse, NULL, 1, &a);
}

TEST(autograd_movement) {
  gc_spec a = S2(3, 4, -2, 2), b = S2(4, 4, -2, 2), c = S2(2, 6, -1, 1), e = S2(3, 4, -1, 1);
  gradcheck("reshape", f_reshape, NULL, 1, &c);
  gradcheck("permute", f_permute, NULL, 1, &a);
  gc_spec x = S2(3, 4, -2, 2);
  gradcheck("expand", f_expand, NULL, 1, &x);
  gradcheck("pad", f_pad, NULL, 1, &a);
  gradcheck("shrink", f_shrink, NULL, 1, &b);
  gradcheck("flip", f_flip, NULL, 1, &a);
  gradcheck("slice", f_slice, NULL, 1, &c);
  gc_spec two[2] = {a, e};
  gradcheck("cat", f_cat, NULL, 2, two);
  gradcheck("stack", f_stack, NULL, 2, two);
  gc_spec mm[2] = {S2(3, 5, -1, 1), S2(5, 2, -1, 1)};
  gradcheck("matmul", f_matmul, NULL, 2, mm);
}

TEST(autograd_accumulates_and_errors) {
  double v[3] = {1, 2, 3};
  kiln_tensor *x = kiln_from_data(KILN_F64, 1, (int64_t[]){3}, v);
  REQUIRE(kiln_set_requires_grad(x, true) == 0);
  for (int k = 0; k < 2; k++)
    REQUIRE(kiln_backward(kiln_sum(kiln_mul(x, x), 0, NULL, false)) == 0);
  double g[3];
  REQUIRE(kiln_to_host(kiln_grad(x), g, sizeof g) == 0);
  for (int i = 0; i < 3; i++)
    CHECK_NEAR(g[i], 4 * v[i], 1e-12); /* two backwards of 2x */
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
  for (int k = 0; k < 3; k++)
    CHECK_NEAR(g[k], exp(v[k]), 1e-9);
  /* through a cast to f32 and back: d/dx sum(3 * f64(f32(x))) = 3 */
  kiln_zero_grad(x);
  REQUIRE(kiln_backward(
              kiln_sum(kiln_binary_s(KILN_MUL, kiln_cast(kiln_cast(x, KILN_F32), KILN_F64), 3), 0,
                       NULL, false)) == 0);
  REQUIRE(kiln_to_host(kiln_grad(x), g, sizeof g) == 0);
  for (int k = 0; k < 3; k++)
    CHECK_NEAR(g[k], 3, 0);
  /* detach stops the gradient */
  kiln_zero_grad(x);
  REQUIRE(kiln_backward(kiln_sum(kiln_mul(x, kiln_detach(x)), 0, NULL, false)) == 0);
  REQUIRE(kiln_to_host(kiln_grad(x), g, sizeof g) == 0);
  for (int k = 0; k < 3; k++)
    CHECK_NEAR(g[k], v[k], 1e-12);
}

/* Leaves made alike (two zeros of one shape, as two biases often are) are distinct
 * parameters: marking one does not mark the other, and each gets its own gradient. */
TEST(autograd_equal_leaves_are_distinct) {
  int64_t s[] = {4};
  kiln_tensor *a = kiln_zeros(KILN_F64, 1, s), *b = kiln_zeros(KILN_F64, 1, s);
  REQUIRE(kiln_set_requires_grad(a, true) == 0);
  CHECK(!kiln_requires_grad(b));
  REQUIRE(kiln_set_requires_grad(b, true) == 0);
  kiln_tensor *l = kiln_add(kiln_binary_s(KILN_MUL, a, 2), kiln_binary_s(KILN_MUL, b, 3));
  REQUIRE(kiln_backward(kiln_sum(l, 0, NULL, false)) == 0);
  double ga[4], gb[4];
  REQUIRE(kiln_to_host(kiln_grad(a), ga, sizeof ga) == 0);
  REQUIRE(kiln_to_host(kiln_grad(b), gb, sizeof gb) == 0);
  for (int i = 0; i < 4; i++) {
    CHECK_NEAR(ga[i], 2, 0);
    CHECK_NEAR(gb[i], 3, 0);
  }
  kiln_zero_grad(a);
  kiln_zero_grad(b);
}
