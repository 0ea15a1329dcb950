/* test_layers.c — every nn layer: forward values against plain double-precision loops (written
 * here, sharing nothing with src/nn) on CPU and INTERP; gradients of every input and parameter
 * against finite differences in f64 (gradcheck.h); bad arguments rejected with a message that
 * names the layer. */
#include "check.h"
#include "gradcheck.h"

static ref_rng g_rng;

/* ---- helpers ------------------------------------------------------------------------------ */

/* A random f32 input on the current device; *vals gets its values (already rounded to f32). */
static kiln_tensor *input(int nd, const int64_t *shape, double lo, double hi, const double **vals) {
  ref_t *r = ref_random(&g_rng, nd, shape, KILN_F32, lo, hi, 0);
  *vals = r->data;
  return kt_from_ref(r, KILN_F32);
}

/* Reads t and compares it with want (relative and absolute tolerance tol); an error or a NULL
 * tensor is a failure. */
#define EXPECT(what, t, want, tol) expect_at(__FILE__, __LINE__, (what), (t), (want), (tol))
static void expect_at(const char *file, int line, const char *what, kiln_tensor *t,
                      const ref_t *want, double tol) {
  if (!t) {
    test_fail(file, line, "%s: NULL (kiln_error: %s)", what, test_errmsg());
    kiln_clear_error();
    return;
  }
  ref_t *got = kt_read_at(file, line, t);
  if (got) kt_compare_at(file, line, what, got, want, NULL, tol, tol);
  if (test_has_error()) test_fail(file, line, "%s: unexpected error: %s", what, test_errmsg());
  kiln_clear_error();
}

static gc_spec spec_of(int nd, const int64_t *shape, double lo, double hi) {
  gc_spec s = {.ndim = nd, .lo = lo, .hi = hi};
  memcpy(s.shape, shape, sizeof(int64_t) * (size_t)nd);
  return s;
}

static int64_t numel_of(int nd, const int64_t *s) {
  int64_t n = 1;
  for (int i = 0; i < nd; i++)
    n *= s[i];
  return n;
}

/* Row-major offset of (a, b, c, d) in an array of shape s. */
#define AT4(s, a, b, c, d) ((((a) * (s)[1] + (b)) * (s)[2] + (c)) * (s)[3] + (d))

/* ---- linear ------------------------------------------------------------------------------- */

/* y[r, o] = sum_i x[r, i] w[o, i] + b[o] over the rows r of x (all leading dims). */
static ref_t *ref_linear(int nd, const int64_t *xs, const double *x, int64_t out, const double *w,
                         const double *b) {
  int64_t in = xs[nd - 1], rows = numel_of(nd - 1, xs), ys[KILN_MAX_DIMS];
  memcpy(ys, xs, sizeof(int64_t) * (size_t)nd);
  ys[nd - 1] = out;
  ref_t *y = ref_new(nd, ys);
  for (int64_t r = 0; r < rows; r++)
    for (int64_t o = 0; o < out; o++) {
      double acc = b ? b[o] : 0;
      for (int64_t i = 0; i < in; i++)
        acc += x[r * in + i] * w[o * in + i];
      y->data[r * out + o] = acc;
    }
  return y;
}

TEST_DEVICES(layers_linear) {
  (void)device;
  g_rng = ref_rng_seed(test_seed(201));
  const double *xv, *wv, *bv, *x3v;
  int64_t xs[] = {5, 7}, ws[] = {4, 7}, bs[] = {4}, x3s[] = {2, 3, 7};
  kiln_tensor *x = input(2, xs, -1, 1, &xv), *w = input(2, ws, -1, 1, &wv),
              *b = input(1, bs, -1, 1, &bv);
  kiln_tensor *x3 = input(3, x3s, -1, 1, &x3v);
  EXPECT("linear", kiln_linear(x, w, b), ref_linear(2, xs, xv, 4, wv, bv), 1e-5);
  EXPECT("linear no bias", kiln_linear(x, w, NULL), ref_linear(2, xs, xv, 4, wv, NULL), 1e-5);
  EXPECT("linear 3-d input", kiln_linear(x3, w, b), ref_linear(3, x3s, x3v, 4, wv, bv), 1e-5);
}

typedef struct {
  bool bias;
} linear_ctx;
static kiln_tensor *g_linear(kiln_tensor **x, const void *ctx) {
  const linear_ctx *c = ctx;
  return kiln_linear(x[0], x[1], c->bias ? x[2] : NULL);
}

TEST(layers_linear_grad) {
  gc_spec sp[3] = {{2, {3, 5}, -1, 1}, {2, {4, 5}, -1, 1}, {1, {4}, -1, 1}};
  gradcheck("linear", g_linear, &(linear_ctx){true}, 3, sp);
  gradcheck("linear no bias", g_linear, &(linear_ctx){false}, 2, sp);
  gc_spec sp3[3] = {{3, {2, 3, 5}, -1, 1}, {2, {4, 5}, -1, 1}, {1, {4}, -1, 1}};
  gradcheck("linear 3-d input", g_linear, &(linear_ctx){true}, 3, sp3);
}

/* ---- conv2d ------------------------------------------------------------------------------- */

typedef struct {
  const char *name;
  int64_t xs[4], ws[4]; /* x (N, C, H, W), w (O, C/groups, KH, KW) */
  int stride[2], pad[2], dil[2], groups;
  bool bias;
} conv_case;

/* s = stride, p = padding, d = dilation, as (h, w) */
static const conv_case conv_cases[] = {
    {"conv 3x3", {2, 4, 7, 6}, {6, 4, 3, 3}, {1, 1}, {0, 0}, {1, 1}, 1, true},
    /* stride 1, padded: the input gradient by conv2d's own rule (a convolution of the padded
     * output gradient), with padding below and equal to the kernel size minus one */
    {"conv (3,2) p(1,1)", {2, 3, 6, 5}, {4, 3, 3, 2}, {1, 1}, {1, 1}, {1, 1}, 1, true},
    {"conv (3,2) p(2,1) no bias", {1, 3, 5, 4}, {2, 3, 3, 2}, {1, 1}, {2, 1}, {1, 1}, 1, false},
    /* padding beyond the kernel: the primitive gradient */
    {"conv 2x2 p(2,2)", {1, 2, 4, 4}, {3, 2, 2, 2}, {1, 1}, {2, 2}, {1, 1}, 1, true},
    {"conv s(2,1) p(1,2) d(1,2)", {2, 4, 7, 6}, {6, 4, 3, 2}, {2, 1}, {1, 2}, {1, 2}, 1, true},
    {"conv groups 2 no bias", {2, 4, 7, 6}, {6, 2, 3, 3}, {1, 2}, {1, 1}, {2, 1}, 2, false},
    {"conv depthwise s3", {2, 4, 7, 6}, {4, 1, 2, 2}, {3, 3}, {0, 0}, {1, 1}, 4, true},
    /* 8+ images: computed batch-last, (C,H,W,N) */
    {"conv 3x2 batch 8", {8, 3, 5, 4}, {2, 3, 3, 2}, {1, 1}, {0, 0}, {1, 1}, 1, true},
    {"conv 3x3 p(1,2) batch 9", {9, 2, 4, 3}, {3, 2, 3, 3}, {1, 1}, {1, 2}, {1, 1}, 1, false},
    {"conv 2x2 p(2,2) batch 8", {8, 2, 3, 3}, {2, 2, 2, 2}, {1, 1}, {2, 2}, {1, 1}, 1, true},
};
#define NCONV (int)(sizeof conv_cases / sizeof conv_cases[0])

static int64_t out_len(int64_t len, int64_t k, int s, int p, int d) {
  return (len + 2 * p - d * (k - 1) - 1) / s + 1;
}

static ref_t *ref_conv(const conv_case *c, const double *x, const double *w, const double *b) {
  const int64_t *xs = c->xs, *ws = c->ws;
  int64_t og = ws[0] / c->groups, cg = ws[1];
  int64_t ys[4] = {xs[0], ws[0], out_len(xs[2], ws[2], c->stride[0], c->pad[0], c->dil[0]),
                   out_len(xs[3], ws[3], c->stride[1], c->pad[1], c->dil[1])};
  ref_t *y = ref_new(4, ys);
  for (int64_t n = 0; n < ys[0]; n++)
    for (int64_t o = 0; o < ys[1]; o++)
      for (int64_t i = 0; i < ys[2]; i++)
        for (int64_t j = 0; j < ys[3]; j++) {
          double acc = b ? b[o] : 0;
          int64_t g = o / og;
          for (int64_t ci = 0; ci < cg; ci++)
            for (int64_t kh = 0; kh < ws[2]; kh++)
              for (int64_t kw = 0; kw < ws[3]; kw++) {
                int64_t ih = i * c->stride[0] - c->pad[0] + kh * c->dil[0];
                int64_t iw = j * c->stride[1] - c->pad[1] + kw * c->dil[1];
                if (ih < 0 || ih >= xs[2] || iw < 0 || iw >= xs[3]) continue;
                acc += x[AT4(xs, n, g * cg + ci, ih, iw)] * w[AT4(ws, o, ci, kh, kw)];
              }
          y->data[AT4(ys, n, o, i, j)] = acc;
        }
  return y;
}

TEST_DEVICES(layers_conv2d) {
  (void)device;
  g_rng = ref_rng_seed(test_seed(202));
  for (int k = 0; k < NCONV; k++) {
    const conv_case *c = &conv_cases[k];
    const double *xv, *wv, *bv = NULL;
    kiln_tensor *x = input(4, c->xs, -1, 1, &xv), *w = input(4, c->ws, -1, 1, &wv), *b = NULL;
    if (c->bias) b = input(1, c->ws, -1, 1, &bv);
    EXPECT(c->name, kiln_conv2d(x, w, b, c->stride, c->pad, c->dil, c->groups),
           ref_conv(c, xv, wv, bv), 1e-5);
  }
  /* NULL stride/padding/dilation mean 1, 0, 1 */
  const conv_case *c = &conv_cases[0];
  const double *xv, *wv;
  kiln_tensor *x = input(4, c->xs, -1, 1, &xv), *w = input(4, c->ws, -1, 1, &wv);
  EXPECT(
      "conv defaults", kiln_conv2d(x, w, NULL, NULL, NULL, NULL, 1),
      ref_conv(
          &(conv_case){
              .xs = {2, 4, 7, 6}, .ws = {6, 4, 3, 3}, .stride = {1, 1}, .dil = {1, 1}, .groups = 1},
          xv, wv, NULL),
      1e-5);
}

static kiln_tensor *g_conv(kiln_tensor **x, const void *ctx) {
  const conv_case *c = ctx;
  return kiln_conv2d(x[0], x[1], c->bias ? x[2] : NULL, c->stride, c->pad, c->dil, c->groups);
}

TEST(layers_conv2d_grad) {
  for (int k = 0; k < NCONV; k++) {
    const conv_case *c = &conv_cases[k];
    gc_spec sp[3] = {spec_of(4, c->xs, -1, 1), spec_of(4, c->ws, -1, 1), spec_of(1, c->ws, -1, 1)};
    gradcheck(c->name, g_conv, c, c->bias ? 3 : 2, sp);
  }
}

/* ---- pooling ------------------------------------------------------------------------------ */

typedef struct {
  const char *name;
  int64_t xs[4];
  int k[2], s[2], p[2];
  bool default_stride; /* pass NULL: stride = kernel */
  bool max;
} pool_case;

static const pool_case pool_cases[] = {
    {"max 2x2", {2, 3, 6, 7}, {2, 2}, {0, 0}, {0, 0}, true, true},
    {"max 3x3 stride 2 pad 1", {2, 3, 7, 6}, {3, 3}, {2, 2}, {1, 1}, false, true},
    {"max (2,3) stride (1,2) pad (1,1)", {1, 2, 5, 6}, {2, 3}, {1, 2}, {1, 1}, false, true},
    {"avg 2x2", {2, 3, 6, 7}, {2, 2}, {0, 0}, {0, 0}, true, false},
    {"avg 3x3 stride 2 pad 1", {2, 3, 7, 6}, {3, 3}, {2, 2}, {1, 1}, false, false},
    {"avg (2,3) stride (1,2) pad (1,1)", {1, 2, 5, 6}, {2, 3}, {1, 2}, {1, 1}, false, false},
    /* 8+ images, windows that tile the input: over the (C,H,W,N) view */
    {"max 2x2 batch 8", {8, 3, 4, 6}, {2, 2}, {0, 0}, {0, 0}, true, true},
    {"max (2,3) stride (2,3) batch 16", {16, 2, 4, 6}, {2, 3}, {2, 3}, {0, 0}, false, true},
    {"avg 2x2 batch 8", {8, 2, 4, 4}, {2, 2}, {0, 0}, {0, 0}, true, false},
    {"max 2x2 batch 8, odd width", {8, 2, 4, 5}, {2, 2}, {0, 0}, {0, 0}, true, true},
};
#define NPOOL (int)(sizeof pool_cases / sizeof pool_cases[0])

/* Max ignores the padding; the average counts padded zeros (divides by KH*KW, as PyTorch's
 * default count_include_pad). */
static ref_t *ref_pool(const pool_case *c, const double *x) {
  const int64_t *xs = c->xs;
  int s0 = c->default_stride ? c->k[0] : c->s[0], s1 = c->default_stride ? c->k[1] : c->s[1];
  int64_t ys[4] = {xs[0], xs[1], out_len(xs[2], c->k[0], s0, c->p[0], 1),
                   out_len(xs[3], c->k[1], s1, c->p[1], 1)};
  ref_t *y = ref_new(4, ys);
  for (int64_t n = 0; n < ys[0]; n++)
    for (int64_t ch = 0; ch < ys[1]; ch++)
      for (int64_t i = 0; i < ys[2]; i++)
        for (int64_t j = 0; j < ys[3]; j++) {
          double acc = c->max ? -INFINITY : 0;
          for (int kh = 0; kh < c->k[0]; kh++)
            for (int kw = 0; kw < c->k[1]; kw++) {
              int64_t ih = i * s0 - c->p[0] + kh, iw = j * s1 - c->p[1] + kw;
              if (ih < 0 || ih >= xs[2] || iw < 0 || iw >= xs[3]) continue;
              double v = x[AT4(xs, n, ch, ih, iw)];
              acc = c->max ? fmax(acc, v) : acc + v;
            }
          y->data[AT4(ys, n, ch, i, j)] = c->max ? acc : acc / (c->k[0] * c->k[1]);
        }
  return y;
}

static kiln_tensor *pool(const pool_case *c, kiln_tensor *x) {
  const int *s = c->default_stride ? NULL : c->s;
  return c->max ? kiln_max_pool2d(x, c->k, s, c->p) : kiln_avg_pool2d(x, c->k, s, c->p);
}

TEST_DEVICES(layers_pool2d) {
  (void)device;
  g_rng = ref_rng_seed(test_seed(203));
  for (int k = 0; k < NPOOL; k++) {
    const pool_case *c = &pool_cases[k];
    const double *xv;
    kiln_tensor *x = input(4, c->xs, -2, 2, &xv);
    EXPECT(c->name, pool(c, x), ref_pool(c, xv), 1e-6);
  }
}

static kiln_tensor *g_pool(kiln_tensor **x, const void *ctx) { return pool(ctx, x[0]); }

TEST(layers_pool2d_grad) {
  for (int k = 0; k < NPOOL; k++) {
    const pool_case *c = &pool_cases[k];
    gc_spec sp = spec_of(4, c->xs, -2, 2);
    gradcheck(c->name, g_pool, c, 1, &sp);
  }
}

/* ---- batch_norm2d ------------------------------------------------------------------------- */

/* Training: normalizes with the batch mean and biased variance per channel and updates rm/rv
 * (when given) with the unbiased variance, as PyTorch. Eval: normalizes with rm/rv. */
static ref_t *ref_bn(const int64_t *xs, const double *x, const double *w, const double *b,
                     double *rm, double *rv, bool training, double momentum, double eps) {
  ref_t *y = ref_new(4, xs);
  int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], cnt = N * H * W;
  for (int64_t c = 0; c < C; c++) {
    double mean = 0, var = 0;
    if (training) {
      for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < H * W; i++)
          mean += x[(n * C + c) * H * W + i];
      mean /= (double)cnt;
      for (int64_t n = 0; n < N; n++)
        for (int64_t i = 0; i < H * W; i++) {
          double d = x[(n * C + c) * H * W + i] - mean;
          var += d * d;
        }
      if (rm) rm[c] = (1 - momentum) * rm[c] + momentum * mean;
      if (rv) rv[c] = (1 - momentum) * rv[c] + momentum * var / (double)(cnt - 1);
      var /= (double)cnt;
    } else {
      mean = rm[c], var = rv[c];
    }
    for (int64_t n = 0; n < N; n++)
      for (int64_t i = 0; i < H * W; i++) {
        int64_t at = (n * C + c) * H * W + i;
        y->data[at] = (x[at] - mean) / sqrt(var + eps) * (w ? w[c] : 1) + (b ? b[c] : 0);
      }
  }
  return y;
}

TEST_DEVICES(layers_batch_norm2d) {
  (void)device;
  g_rng = ref_rng_seed(test_seed(204));
  int64_t xs[] = {3, 4, 3, 2}, cs[] = {4};
  const double *x1v, *x2v, *x3v, *wv, *bv, *rm0, *rv0;
  kiln_tensor *x1 = input(4, xs, -1, 3, &x1v), *x2 = input(4, xs, -2, 1, &x2v),
              *x3 = input(4, xs, -1, 1, &x3v);
  kiln_tensor *w = input(1, cs, 0.5, 1.5, &wv), *b = input(1, cs, -0.5, 0.5, &bv);
  kiln_tensor *rmean = input(1, cs, -0.5, 0.5, &rm0), *rvar = input(1, cs, 0.5, 1.5, &rv0);
  REQUIRE(x1 && x2 && x3 && w && b && rmean && rvar);
  double rm[4], rv[4];
  memcpy(rm, rm0, sizeof rm);
  memcpy(rv, rv0, sizeof rv);
  const double mom = 0.1, eps = 1e-5;

  /* two training steps: the outputs and the running statistics, compounded */
  EXPECT("train step 1", kiln_batch_norm2d(x1, w, b, rmean, rvar, true, mom, eps),
         ref_bn(xs, x1v, wv, bv, rm, rv, true, mom, eps), 1e-5);
  EXPECT("running mean after 1 step", rmean, ref_from(1, cs, rm), 1e-6);
  EXPECT("running var after 1 step", rvar, ref_from(1, cs, rv), 1e-6);
  EXPECT("train step 2, momentum 0.3", kiln_batch_norm2d(x2, w, b, rmean, rvar, true, 0.3, eps),
         ref_bn(xs, x2v, wv, bv, rm, rv, true, 0.3, eps), 1e-5);
  EXPECT("running mean after 2 steps", rmean, ref_from(1, cs, rm), 1e-6);
  EXPECT("running var after 2 steps", rvar, ref_from(1, cs, rv), 1e-6);

  /* eval uses the running statistics and leaves them alone */
  EXPECT("eval", kiln_batch_norm2d(x3, w, b, rmean, rvar, false, mom, eps),
         ref_bn(xs, x3v, wv, bv, rm, rv, false, mom, eps), 1e-5);
  EXPECT("running mean after eval", rmean, ref_from(1, cs, rm), 1e-6);
  EXPECT("running var after eval", rvar, ref_from(1, cs, rv), 1e-6);
  EXPECT("eval, no affine", kiln_batch_norm2d(x3, NULL, NULL, rmean, rvar, false, mom, 1e-3),
         ref_bn(xs, x3v, NULL, NULL, rm, rv, false, mom, 1e-3), 1e-5);

  /* training without running statistics or affine parameters */
  EXPECT("train, no stats, no affine",
         kiln_batch_norm2d(x1, NULL, NULL, NULL, NULL, true, mom, eps),
         ref_bn(xs, x1v, NULL, NULL, NULL, NULL, true, mom, eps), 1e-5);

  /* 8+ images: computed over the (C,H,W,N) view */
  int64_t xs8[] = {8, 4, 2, 3};
  const double *x8v;
  kiln_tensor *x8 = input(4, xs8, -1, 2, &x8v);
  REQUIRE(x8);
  EXPECT("train, batch 8", kiln_batch_norm2d(x8, w, b, rmean, rvar, true, mom, eps),
         ref_bn(xs8, x8v, wv, bv, rm, rv, true, mom, eps), 1e-5);
  EXPECT("running mean after batch 8", rmean, ref_from(1, cs, rm), 1e-6);
  EXPECT("running var after batch 8", rvar, ref_from(1, cs, rv), 1e-6);
  EXPECT("eval, batch 8", kiln_batch_norm2d(x8, w, b, rmean, rvar, false, mom, eps),
         ref_bn(xs8, x8v, wv, bv, rm, rv, false, mom, eps), 1e-5);
}

typedef struct {
  bool training, affine;
  const double *rm, *rv; /* eval only */
} bn_ctx;
static kiln_tensor *g_bn(kiln_tensor **x, const void *ctx) {
  const bn_ctx *c = ctx;
  kiln_tensor *rm = NULL, *rv = NULL;
  if (!c->training) {
    int64_t C = kiln_dim(x[0], 1);
    rm = kiln_from_data(KILN_F64, 1, &C, c->rm);
    rv = kiln_from_data(KILN_F64, 1, &C, c->rv);
  }
  return kiln_batch_norm2d(x[0], c->affine ? x[1] : NULL, c->affine ? x[2] : NULL, rm, rv,
                           c->training, 0.1, 1e-5);
}

TEST(layers_batch_norm2d_grad) {
  gc_spec sp[3] = {{4, {3, 2, 3, 3}, -1, 2}, {1, {2}, 0.5, 1.5}, {1, {2}, -1, 1}};
  gradcheck("batch_norm2d train", g_bn, &(bn_ctx){.training = true, .affine = true}, 3, sp);
  gradcheck("batch_norm2d train, no affine", g_bn, &(bn_ctx){.training = true}, 1, sp);
  double rm[2] = {0.3, -0.2}, rv[2] = {0.8, 1.7};
  gradcheck("batch_norm2d eval", g_bn, &(bn_ctx){.affine = true, .rm = rm, .rv = rv}, 3, sp);
  gc_spec sp8[3] = {{4, {8, 2, 2, 3}, -1, 2}, {1, {2}, 0.5, 1.5}, {1, {2}, -1, 1}};
  gradcheck("batch_norm2d train, batch 8", g_bn, &(bn_ctx){.training = true, .affine = true}, 3, sp8);
}

/* ---- layer_norm, rms_norm ----------------------------------------------------------------- */

/* Normalizes each run of `inner` trailing elements (biased variance); w/b index within it. */
static ref_t *ref_layer_norm(int nd, const int64_t *xs, const double *x, int64_t inner,
                             const double *w, const double *b, double eps) {
  ref_t *y = ref_new(nd, xs);
  int64_t rows = numel_of(nd, xs) / inner;
  for (int64_t r = 0; r < rows; r++) {
    const double *xr = x + r * inner;
    double mean = 0, var = 0;
    for (int64_t i = 0; i < inner; i++)
      mean += xr[i];
    mean /= (double)inner;
    for (int64_t i = 0; i < inner; i++)
      var += (xr[i] - mean) * (xr[i] - mean);
    var /= (double)inner;
    for (int64_t i = 0; i < inner; i++)
      y->data[r * inner + i] = (xr[i] - mean) / sqrt(var + eps) * (w ? w[i] : 1) + (b ? b[i] : 0);
  }
  return y;
}

static ref_t *ref_rms_norm(int nd, const int64_t *xs, const double *x, const double *w,
                           double eps) {
  ref_t *y = ref_new(nd, xs);
  int64_t d = xs[nd - 1], rows = numel_of(nd, xs) / d;
  for (int64_t r = 0; r < rows; r++) {
    double ms = 0;
    for (int64_t i = 0; i < d; i++)
      ms += x[r * d + i] * x[r * d + i];
    ms /= (double)d;
    for (int64_t i = 0; i < d; i++)
      y->data[r * d + i] = x[r * d + i] / sqrt(ms + eps) * (w ? w[i] : 1);
  }
  return y;
}

TEST_DEVICES(layers_norms) {
  (void)device;
  g_rng = ref_rng_seed(test_seed(205));
  int64_t xs[] = {2, 3, 4, 5}, ws[] = {4, 5}, rs[] = {5};
  const double *xv, *wv, *bv, *rwv;
  kiln_tensor *x = input(4, xs, -2, 3, &xv), *w = input(2, ws, 0.5, 1.5, &wv),
              *b = input(2, ws, -1, 1, &bv);
  kiln_tensor *rw = input(1, rs, 0.5, 1.5, &rwv);
  EXPECT("layer_norm over 2 dims", kiln_layer_norm(x, 2, w, b, 1e-5),
         ref_layer_norm(4, xs, xv, 20, wv, bv, 1e-5), 1e-5);
  EXPECT("layer_norm over 1 dim, no affine", kiln_layer_norm(x, 1, NULL, NULL, 1e-3),
         ref_layer_norm(4, xs, xv, 5, NULL, NULL, 1e-3), 1e-5);
  EXPECT("layer_norm over all dims", kiln_layer_norm(x, 4, NULL, NULL, 1e-5),
         ref_layer_norm(4, xs, xv, 120, NULL, NULL, 1e-5), 1e-5);
  EXPECT("rms_norm", kiln_rms_norm(x, rw, 1e-6), ref_rms_norm(4, xs, xv, rwv, 1e-6), 1e-5);
  EXPECT("rms_norm, no weight", kiln_rms_norm(x, NULL, 1e-2), ref_rms_norm(4, xs, xv, NULL, 1e-2),
         1e-5);
}

typedef struct {
  int naxes;
  bool affine;
} ln_ctx;
static kiln_tensor *g_layer_norm(kiln_tensor **x, const void *ctx) {
  const ln_ctx *c = ctx;
  return kiln_layer_norm(x[0], c->naxes, c->affine ? x[1] : NULL, c->affine ? x[2] : NULL, 1e-5);
}
static kiln_tensor *g_rms_norm(kiln_tensor **x, const void *ctx) {
  return kiln_rms_norm(x[0], *(const bool *)ctx ? x[1] : NULL, 1e-6);
}

TEST(layers_norms_grad) {
  gc_spec ln[3] = {{3, {3, 4, 5}, -2, 2}, {2, {4, 5}, 0.5, 1.5}, {2, {4, 5}, -1, 1}};
  gradcheck("layer_norm over 2 dims", g_layer_norm, &(ln_ctx){2, true}, 3, ln);
  gc_spec ln1 = {2, {3, 5}, -2, 2};
  gradcheck("layer_norm over 1 dim, no affine", g_layer_norm, &(ln_ctx){1, false}, 1, &ln1);
  gc_spec rms[2] = {{2, {3, 6}, -2, 2}, {1, {6}, 0.5, 1.5}};
  gradcheck("rms_norm", g_rms_norm, &(bool){true}, 2, rms);
  gradcheck("rms_norm, no weight", g_rms_norm, &(bool){false}, 1, rms);
}

/* ---- embedding ---------------------------------------------------------------------------- */

static const int64_t emb_ids[] = {3, 0, 6, 3, 2, 6, 1, 3}; /* repeats: gradients accumulate */

TEST_DEVICES(layers_embedding) {
  (void)device;
  g_rng = ref_rng_seed(test_seed(206));
  int64_t ws[] = {7, 3}, is[] = {2, 4}, ys[] = {2, 4, 3};
  const double *wv;
  kiln_tensor *w = input(2, ws, -1, 1, &wv);
  ref_t *want = ref_new(3, ys);
  for (int i = 0; i < 8; i++)
    for (int d = 0; d < 3; d++)
      want->data[i * 3 + d] = wv[emb_ids[i] * 3 + d];
  EXPECT("embedding i64 ids (2,4)", kiln_embedding(w, kiln_from_data(KILN_I64, 2, is, emb_ids)),
         want, 0);
  int32_t ids32[8];
  for (int i = 0; i < 8; i++)
    ids32[i] = (int32_t)emb_ids[i];
  EXPECT("embedding i32 ids (8)",
         kiln_embedding(w, kiln_from_data(KILN_I32, 1, (int64_t[]){8}, ids32)),
         ref_reshape(want, 2, (int64_t[]){8, 3}), 0);
}

static kiln_tensor *g_embedding(kiln_tensor **x, const void *ctx) {
  (void)ctx;
  return kiln_embedding(x[0], kiln_from_data(KILN_I64, 2, (int64_t[]){2, 4}, emb_ids));
}

TEST(layers_embedding_grad) {
  gc_spec sp = {2, {7, 3}, -1, 1};
  gradcheck("embedding", g_embedding, NULL, 1, &sp);
}

/* ---- dropout ------------------------------------------------------------------------------ */

TEST_DEVICES(layers_dropout) {
  g_rng = ref_rng_seed(test_seed(207));
  enum { N = 10000 };
  static float cpu_out[N]; /* the CPU result, compared with INTERP's: the mask is per seed */
  static bool have_cpu;
  int64_t xs[] = {100, 100};
  const double *xv;
  kiln_tensor *x = input(2, xs, 0.5, 1.5, &xv);
  ref_t *xr = ref_from(2, xs, xv);
  EXPECT("dropout eval is the identity", kiln_dropout(x, 0.3, 7, false), xr, 0);
  EXPECT("dropout p=0 is the identity", kiln_dropout(x, 0, 7, true), xr, 0);

  const double p = 0.3;
  static float a[N], b[N], c[N];
  REQUIRE(kiln_to_host(kiln_dropout(x, p, 7, true), a, sizeof a) == 0);
  REQUIRE(kiln_to_host(kiln_dropout(x, p, 7, true), b, sizeof b) == 0);
  REQUIRE(kiln_to_host(kiln_dropout(x, p, 8, true), c, sizeof c) == 0);
  int kept = 0, badval = 0, same = 0, differ_seed = 0;
  for (int i = 0; i < N; i++) {
    if (a[i] != 0) {
      kept++;
      if (!(fabs(a[i] - xv[i] / (1 - p)) <= 1e-6 * fabs(xv[i] / (1 - p)))) badval++;
    }
    same += memcmp(&a[i], &b[i], sizeof a[i]) == 0;
    differ_seed += (a[i] != 0) != (c[i] != 0);
  }
  /* the kept fraction is binomial: sd = sqrt(p(1-p)/N) = 0.0046; allow over 4 sd */
  CHECKF(fabs(kept / (double)N - (1 - p)) < 0.02, "kept fraction %.4f, expected %.2f",
         kept / (double)N, 1 - p);
  CHECKF(badval == 0, "%d kept values are not x / (1 - p)", badval);
  CHECKF(same == N, "same seed, %d of %d elements differ", N - same, N);
  /* independent masks differ at 2p(1-p) = 42% of the elements */
  CHECKF(differ_seed > N / 4, "seeds 7 and 8 give masks differing at only %d of %d elements",
         differ_seed, N);
  if (!strcmp(device, "CPU")) {
    memcpy(cpu_out, a, sizeof a);
    have_cpu = true;
  } else if (have_cpu) {
    int mism = 0;
    for (int i = 0; i < N; i++)
      mism += (a[i] != 0) != (cpu_out[i] != 0);
    CHECKF(mism == 0, "the mask of seed 7 differs from CPU's at %d elements", mism);
  }
}

typedef struct {
  double p;
  bool training;
} dropout_ctx;
static kiln_tensor *g_dropout(kiln_tensor **x, const void *ctx) {
  const dropout_ctx *c = ctx;
  return kiln_dropout(x[0], c->p, 11, c->training);
}

TEST(layers_dropout_grad) {
  gc_spec sp = {2, {4, 6}, -1, 1};
  gradcheck("dropout train", g_dropout, &(dropout_ctx){0.4, true}, 1, &sp);
  gradcheck("dropout eval", g_dropout, &(dropout_ctx){0.4, false}, 1, &sp);
}

/* ---- activations -------------------------------------------------------------------------- */

static double r_leaky01(double x) { return x > 0 ? x : 0.1 * x; }
static double r_leaky_neg(double x) { return x > 0 ? x : -0.5 * x; }
static double r_gelu(double x) {
  return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}
static double r_silu(double x) { return x / (1 + exp(-x)); }

TEST_DEVICES(layers_activations) {
  (void)device;
  g_rng = ref_rng_seed(test_seed(208));
  int64_t xs[] = {6, 7};
  const double *xv;
  kiln_tensor *x = input(2, xs, -4, 4, &xv);
  ref_t *xr = ref_from(2, xs, xv);
  EXPECT("leaky_relu 0.1", kiln_leaky_relu(x, 0.1), ref_map(xr, r_leaky01), 1e-6);
  EXPECT("leaky_relu -0.5", kiln_leaky_relu(x, -0.5), ref_map(xr, r_leaky_neg), 1e-6);
  EXPECT("gelu", kiln_gelu(x), ref_map(xr, r_gelu), 3e-6);
  EXPECT("silu", kiln_silu(x), ref_map(xr, r_silu), 3e-6);
  /* far tails and zero */
  double tv[] = {-30, -10, -1e-3, 0, 1e-3, 10, 30};
  int64_t ts[] = {7};
  ref_t *tr = ref_from(1, ts, tv);
  kiln_tensor *t = kt_from_ref(tr, KILN_F32);
  EXPECT("gelu tails", kiln_gelu(t), ref_map(tr, r_gelu), 3e-6);
  EXPECT("silu tails", kiln_silu(t), ref_map(tr, r_silu), 3e-6);
  EXPECT("leaky_relu tails", kiln_leaky_relu(t, 0.1), ref_map(tr, r_leaky01), 1e-6);
}

static kiln_tensor *g_leaky(kiln_tensor **x, const void *ctx) {
  (void)ctx;
  return kiln_leaky_relu(x[0], 0.1);
}
static kiln_tensor *g_gelu(kiln_tensor **x, const void *ctx) {
  (void)ctx;
  return kiln_gelu(x[0]);
}
static kiln_tensor *g_silu(kiln_tensor **x, const void *ctx) {
  (void)ctx;
  return kiln_silu(x[0]);
}

TEST(layers_activations_grad) {
  gc_spec sp = {2, {3, 5}, -3, 3};
  gradcheck("leaky_relu", g_leaky, NULL, 1, &sp);
  gradcheck("gelu", g_gelu, NULL, 1, &sp);
  gradcheck("silu", g_silu, NULL, 1, &sp);
}

/* ---- losses ------------------------------------------------------------------------------- */

/* mean over rows of -sum_c q_c log softmax(z)_c, q = (1 - ls) one_hot(label) + ls / C */
static double ref_cross_entropy(const double *z, const int64_t *labels, int64_t N, int64_t C,
                                double ls) {
  double total = 0;
  for (int64_t n = 0; n < N; n++) {
    const double *zr = z + n * C;
    double m = -INFINITY, s = 0;
    for (int64_t c = 0; c < C; c++)
      m = fmax(m, zr[c]);
    for (int64_t c = 0; c < C; c++)
      s += exp(zr[c] - m);
    double lse = m + log(s);
    for (int64_t c = 0; c < C; c++)
      total -= ((c == labels[n] ? 1 - ls : 0) + ls / (double)C) * (zr[c] - lse);
  }
  return total / (double)N;
}

static const int64_t ce_labels[] = {2, 0, 4, 4, 1, 3};

TEST_DEVICES(layers_losses) {
  (void)device;
  g_rng = ref_rng_seed(test_seed(209));
  int64_t zs[] = {6, 5}, ls[] = {6};
  const double *zv, *bigv, *av, *bv;
  kiln_tensor *z = input(2, zs, -3, 3, &zv), *big = input(2, zs, 80, 120, &bigv);
  kiln_tensor *labels = kiln_from_data(KILN_I64, 1, ls, ce_labels);
  const double sm[] = {0, 0.1, 0.5};
  for (int k = 0; k < 3; k++) {
    char what[80];
    snprintf(what, sizeof what, "cross_entropy, label smoothing %g", sm[k]);
    EXPECT(what, kiln_cross_entropy(z, labels, sm[k]),
           ref_scalar(ref_cross_entropy(zv, ce_labels, 6, 5, sm[k])), 1e-5);
  }
  /* logits whose exp overflows f32: a stable log-softmax is needed */
  EXPECT("cross_entropy, logits 80..120", kiln_cross_entropy(big, labels, 0.1),
         ref_scalar(ref_cross_entropy(bigv, ce_labels, 6, 5, 0.1)), 1e-4);
  int32_t l32[6];
  for (int i = 0; i < 6; i++)
    l32[i] = (int32_t)ce_labels[i];
  EXPECT("cross_entropy, i32 labels",
         kiln_cross_entropy(z, kiln_from_data(KILN_I32, 1, ls, l32), 0),
         ref_scalar(ref_cross_entropy(zv, ce_labels, 6, 5, 0)), 1e-5);

  int64_t ms[] = {4, 5};
  kiln_tensor *a = input(2, ms, -2, 2, &av), *b = input(2, ms, -2, 2, &bv);
  double mse = 0;
  for (int i = 0; i < 20; i++)
    mse += (av[i] - bv[i]) * (av[i] - bv[i]) / 20;
  EXPECT("mse_loss", kiln_mse_loss(a, b), ref_scalar(mse), 1e-5);
}

static kiln_tensor *g_ce(kiln_tensor **x, const void *ctx) {
  kiln_tensor *labels = kiln_from_data(KILN_I64, 1, (int64_t[]){6}, ce_labels);
  return kiln_cross_entropy(x[0], labels, *(const double *)ctx);
}
static kiln_tensor *g_mse(kiln_tensor **x, const void *ctx) {
  (void)ctx;
  return kiln_mse_loss(x[0], x[1]);
}

TEST(layers_losses_grad) {
  gc_spec z = {2, {6, 5}, -3, 3};
  gradcheck("cross_entropy", g_ce, &(double){0}, 1, &z);
  gradcheck("cross_entropy, label smoothing 0.2", g_ce, &(double){0.2}, 1, &z);
  gc_spec ab[2] = {{2, {3, 4}, -2, 2}, {2, {3, 4}, -2, 2}};
  gradcheck("mse_loss", g_mse, NULL, 2, ab);
}

/* ---- bad arguments ------------------------------------------------------------------------- */

/* expr must return NULL with an error message containing name. */
#define EXPECT_ERROR(expr, name)                                                                   \
  do {                                                                                             \
    kiln_clear_error();                                                                            \
    kiln_tensor *e_ = (expr);                                                                      \
    CHECKF(e_ == NULL, "%s: expected NULL", #expr);                                                \
    CHECKF(test_contains(kiln_error(), name), "%s: message \"%s\" does not name %s", #expr,        \
           test_errmsg(), name);                                                                   \
    kiln_clear_error();                                                                            \
  } while (0)

static kiln_tensor *zeros(int nd, const int64_t *s) { return kiln_zeros(KILN_F32, nd, s); }
#define Z(...)                                                                                     \
  zeros((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})

TEST(layers_bad_arguments) {
  kiln_tensor *x = Z(2, 4, 7, 6), *x3 = Z(4, 7, 6);
  int one[2] = {1, 1}, zero[2] = {0, 0};

  EXPECT_ERROR(kiln_linear(Z(3, 5), Z(4, 6), NULL), "linear");
  EXPECT_ERROR(kiln_linear(Z(3, 5), Z(4, 5, 1), NULL), "linear");
  EXPECT_ERROR(kiln_linear(Z(3, 5), Z(4, 5), Z(3)), "linear");

  EXPECT_ERROR(kiln_conv2d(x, Z(6, 3, 3, 3), NULL, one, zero, one, 1), "conv2d"); /* channels */
  EXPECT_ERROR(kiln_conv2d(x, Z(6, 2, 3, 3), NULL, one, zero, one, 3), "conv2d"); /* groups */
  EXPECT_ERROR(kiln_conv2d(x, Z(6, 4, 3, 3), NULL, one, zero, one, 0), "conv2d"); /* groups */
  EXPECT_ERROR(kiln_conv2d(x, Z(5, 2, 3, 3), NULL, one, zero, one, 2), "conv2d"); /* O % groups */
  EXPECT_ERROR(kiln_conv2d(x, Z(6, 4, 9, 3), NULL, one, zero, one, 1), "conv2d"); /* kernel */
  EXPECT_ERROR(kiln_conv2d(x, Z(6, 4, 3, 3), NULL, (int[]){0, 1}, zero, one, 1), "conv2d");
  EXPECT_ERROR(kiln_conv2d(x, Z(6, 4, 3, 3), NULL, one, (int[]){-1, 0}, one, 1), "conv2d");
  EXPECT_ERROR(kiln_conv2d(x, Z(6, 4, 3, 3), NULL, one, zero, (int[]){1, 0}, 1), "conv2d");
  EXPECT_ERROR(kiln_conv2d(x, Z(6, 4, 3, 3), NULL, one, zero, (int[]){4, 1}, 1), "conv2d");
  EXPECT_ERROR(kiln_conv2d(x3, Z(6, 4, 3, 3), NULL, one, zero, one, 1), "conv2d");
  EXPECT_ERROR(kiln_conv2d(x, Z(6, 4, 3, 3), Z(5), one, zero, one, 1), "conv2d"); /* bias */

  EXPECT_ERROR(kiln_max_pool2d(x, (int[]){0, 2}, NULL, NULL), "max_pool2d");
  EXPECT_ERROR(kiln_max_pool2d(x, (int[]){8, 2}, NULL, NULL), "max_pool2d");
  EXPECT_ERROR(kiln_max_pool2d(x, (int[]){2, 2}, zero, NULL), "max_pool2d");
  EXPECT_ERROR(kiln_max_pool2d(x3, (int[]){2, 2}, NULL, NULL), "max_pool2d");
  EXPECT_ERROR(kiln_avg_pool2d(x, (int[]){2, -1}, NULL, NULL), "avg_pool2d");
  EXPECT_ERROR(kiln_avg_pool2d(x, (int[]){2, 2}, NULL, (int[]){-1, 0}), "avg_pool2d");
  EXPECT_ERROR(kiln_avg_pool2d(x3, (int[]){2, 2}, NULL, NULL), "avg_pool2d");

  EXPECT_ERROR(kiln_batch_norm2d(x, Z(3), NULL, NULL, NULL, true, 0.1, 1e-5), "batch_norm2d");
  EXPECT_ERROR(kiln_batch_norm2d(x, NULL, NULL, Z(4), Z(5), true, 0.1, 1e-5), "batch_norm2d");
  EXPECT_ERROR(kiln_batch_norm2d(x3, NULL, NULL, NULL, NULL, true, 0.1, 1e-5), "batch_norm2d");
  EXPECT_ERROR(kiln_batch_norm2d(x, NULL, NULL, NULL, NULL, false, 0.1, 1e-5), "batch_norm2d");

  EXPECT_ERROR(kiln_layer_norm(x, 0, NULL, NULL, 1e-5), "layer_norm");
  EXPECT_ERROR(kiln_layer_norm(x, 5, NULL, NULL, 1e-5), "layer_norm");
  EXPECT_ERROR(kiln_layer_norm(x, 2, Z(6, 7), NULL, 1e-5), "layer_norm");
  EXPECT_ERROR(kiln_layer_norm(x, 2, Z(7, 6), Z(6), 1e-5), "layer_norm");
  EXPECT_ERROR(kiln_rms_norm(x, Z(5), 1e-5), "rms_norm");

  EXPECT_ERROR(kiln_embedding(Z(7, 3), Z(2, 4)), "embedding"); /* float ids */
  EXPECT_ERROR(kiln_embedding(Z(7), kiln_zeros(KILN_I64, 1, (int64_t[]){2})), "embedding");

  EXPECT_ERROR(kiln_dropout(x, 1, 1, true), "dropout");
  EXPECT_ERROR(kiln_dropout(x, -0.1, 1, true), "dropout");
  EXPECT_ERROR(kiln_dropout(x, NAN, 1, true), "dropout");

  kiln_tensor *lab = kiln_zeros(KILN_I64, 1, (int64_t[]){3});
  EXPECT_ERROR(kiln_cross_entropy(Z(4, 5), lab, 0), "cross_entropy");
  EXPECT_ERROR(kiln_cross_entropy(Z(3, 5), Z(3), 0), "cross_entropy"); /* float labels */
  EXPECT_ERROR(kiln_cross_entropy(Z(3), lab, 0), "cross_entropy");
  EXPECT_ERROR(kiln_cross_entropy(Z(3, 5), lab, 1), "cross_entropy");
  EXPECT_ERROR(kiln_cross_entropy(Z(3, 5), lab, -0.1), "cross_entropy");

  EXPECT_ERROR(kiln_mse_loss(Z(3, 4), Z(4, 3)), "mse_loss");
}
