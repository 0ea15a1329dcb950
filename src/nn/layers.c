/* layers.c — nn layers written with the Tensor API like any user code: linear, conv2d and
 * pooling (sliding windows are pure views), normalizations, embedding, dropout, activations
 * and losses. Nothing here is special-cased in the compiler. */
#include "internal.h"
#include <math.h>

typedef kiln_tensor T;
/* Each layer runs in a scope of its own, named for its errors. */
#define BEGIN() begin(__func__ + 5) /* "kiln_linear" -> "linear" */
static void begin(const char *name) {
  kiln_scope_begin();
  kn_err_push(name);
}
static T *ret(T *r) {
  kn_err_pop();
  kiln_keep(r);
  kiln_scope_end();
  return r;
}
static T *muls(T *x, double v) { return kiln_binary_s(KILN_MUL, x, v); }
static T *adds(T *x, double v) { return kiln_binary_s(KILN_ADD, x, v); }
static const int64_t *SHP(T *x) { return kiln_shape(x); }

T *kiln_linear(T *x, T *w, T *b) {
  if (!x || !w) return NULL;
  if (kiln_ndim(w) != 2) {
    kn_err("linear: weight must be (out, in), got %d dims", kiln_ndim(w));
    return NULL;
  }
  BEGIN();
  T *y = kiln_matmul(x, kiln_transpose(w, 0, 1));
  if (y && b) y = kiln_add(y, b);
  return ret(y);
}

T *kiln_linear_runs(T *x, T *w, T *b) {
  if (!x || !w) return NULL;
  int nd = kiln_ndim(x), wd = kiln_ndim(w);
  int64_t in = 1;
  for (int i = 1; i < wd; i++)
    in *= SHP(w)[i];
  if (wd < 2 || nd < 1 || nd - 1 + wd > KILN_MAX_DIMS || SHP(x)[nd - 1] != in) {
    char a[200], c[200];
    kn_err("linear_runs: input %s does not match weight %s (want (out, d1, ..., dk) with "
           "d1 * ... * dk = the input's last dim)",
           kn_shape_str(a, nd, SHP(x)), kn_shape_str(c, wd, SHP(w)));
    return NULL;
  }
  BEGIN();
  int64_t s[KILN_MAX_DIMS];
  int axes[KILN_MAX_DIMS];
  memcpy(s, SHP(x), sizeof(int64_t) * (nd - 1));
  s[nd - 1] = 1; /* x (..., 1, d1, ..., dk) against w (out, d1, ..., dk) */
  for (int i = 1; i < wd; i++)
    s[nd - 1 + i] = SHP(w)[i], axes[i - 1] = nd - 1 + i;
  T *y =
      kiln_sum(kiln_mul(kiln_reshape(x, nd - 1 + wd, s), w), wd - 1, axes, false); /* (..., out) */
  if (y && b) y = kiln_add(y, b);
  return ret(y);
}

/* Sliding windows of one spatial axis as a view: x (..., L) -> (..., O, K) with
 * out[o, i] = x[o * stride + i * dil]. The axis is tiled, re-read in rows of length L + dil
 * (each row starts dil later), then subsampled by the stride. */
static T *windows1d(T *x, int64_t k, int64_t stride, int64_t dil) {
  int nd = kiln_ndim(x);
  int64_t L = SHP(x)[nd - 1], span = dil * (k - 1) + 1;
  int64_t o1 = L - span + 1;         /* window starts with stride 1 */
  int64_t o = (o1 - 1) / stride + 1; /* with the stride */
  int64_t rows = k, rowlen = L + dil, reps = (rows * rowlen + L - 1) / L;
  int64_t s[KILN_MAX_DIMS + 2];
  memcpy(s, SHP(x), sizeof(int64_t) * nd);
  /* (..., L) -> (..., reps, L) -> (..., reps*L) -> (..., k*(L+dil)) -> (..., k, L+dil) */
  s[nd - 1] = 1, s[nd] = L;
  T *t = kiln_reshape(x, nd + 1, s);
  s[nd - 1] = reps;
  t = kiln_expand(t, nd + 1, s);
  s[nd - 1] = reps * L;
  t = kiln_reshape(t, nd, s);
  int64_t st[KILN_MAX_DIMS] = {0}, en[KILN_MAX_DIMS];
  memcpy(en, s, sizeof(int64_t) * nd);
  en[nd - 1] = rows * rowlen;
  t = kiln_shrink(t, st, en);
  s[nd - 1] = rows, s[nd] = rowlen;
  t = kiln_reshape(t, nd + 1, s);
  /* keep window starts [0, o*stride) (padding the row if the stride overshoots), then every
   * stride-th one */
  memset(st, 0, sizeof st);
  memcpy(en, s, sizeof(int64_t) * (nd + 1));
  int64_t need = o * stride;
  if (need <= rowlen) en[nd] = need;
  t = kiln_shrink(t, st, en);
  if (need > rowlen) {
    int64_t bf[KILN_MAX_DIMS] = {0}, af[KILN_MAX_DIMS] = {0};
    af[nd] = need - rowlen;
    t = kiln_pad(t, bf, af, 0);
  }
  if (stride > 1) {
    if (nd + 2 > KILN_MAX_DIMS) {
      kn_err("conv/pool: too many dims for a strided window");
      return NULL;
    }
    s[nd] = o, s[nd + 1] = stride;
    t = kiln_reshape(t, nd + 2, s);
    int64_t st2[KILN_MAX_DIMS] = {0}, en2[KILN_MAX_DIMS];
    memcpy(en2, s, sizeof(int64_t) * (nd + 2));
    en2[nd + 1] = 1;
    t = kiln_shrink(t, st2, en2);
    t = kiln_reshape(t, nd + 1, s);
  }
  /* (..., k, o) -> (..., o, k) */
  int perm[KILN_MAX_DIMS];
  for (int i = 0; i < nd + 1; i++)
    perm[i] = i;
  perm[nd - 1] = nd, perm[nd] = nd - 1;
  return kiln_permute(t, perm);
}

/* x (N, C, H, W) -> (N, C, OH, OW, KH, KW) windows; padding added with pad_value. */
static T *windows2d(const char *op, T *x, const int *kernel, const int *stride, const int *padding,
                    const int *dilation, double pad_value) {
  if (kiln_ndim(x) != 4) {
    kn_err("%s: input must be (N, C, H, W), got %d dims", op, kiln_ndim(x));
    return NULL;
  }
  int k[2], s[2], p[2], d[2];
  for (int i = 0; i < 2; i++) {
    k[i] = kernel[i], s[i] = stride ? stride[i] : 1, p[i] = padding ? padding[i] : 0;
    d[i] = dilation ? dilation[i] : 1;
    if (k[i] < 1 || s[i] < 1 || p[i] < 0 || d[i] < 1) {
      kn_err("%s: bad kernel %d, stride %d, padding %d or dilation %d", op, k[i], s[i], p[i], d[i]);
      return NULL;
    }
    int64_t L = SHP(x)[2 + i] + 2 * p[i];
    if (L < (int64_t)d[i] * (k[i] - 1) + 1) {
      kn_err("%s: kernel %d (dilation %d) larger than the padded input %lld", op, k[i], d[i],
             (long long)L);
      return NULL;
    }
  }
  T *t = x;
  if (p[0] || p[1])
    t = kiln_pad(x, (int64_t[]){0, 0, p[0], p[1]}, (int64_t[]){0, 0, p[0], p[1]}, pad_value);
  /* W axis: (N,C,H,W) -> (N,C,H,OW,KW); then H: move H last -> (N,C,OW,KW,H) -> (N,C,OW,KW,OH,KH)
   */
  t = windows1d(t, k[1], s[1], d[1]);
  t = kiln_permute(t, (int[]){0, 1, 3, 4, 2});
  t = windows1d(t, k[0], s[0], d[0]);
  return kiln_permute(t, (int[]){0, 1, 4, 2, 5, 3}); /* (N, C, OH, OW, KH, KW) */
}

/* Convolutions over a batch, stride 1. They read x[n,c,oh+i,ow+j]: in the (N,C,H,W) layout the
 * only runs of consecutive values are along OW (6 to 24 long); with the images innermost, in a
 * (C,H,W,N) or blocked copy, the loops over images become full-width vector loads and stores.
 * A copy costs one transposing pass over x. */

/* x (N,C,H,W) with zeros added on both sides of H (pad[0]) and W (pad[1]) */
static T *pad_hw(T *x, const int64_t *pad) {
  if (!pad[0] && !pad[1]) return x;
  return kiln_pad(x, (int64_t[]){0, 0, pad[0], pad[1]}, (int64_t[]){0, 0, pad[0], pad[1]}, 0);
}

/* x (N,C,H,W), padded by pad, stored as (C,H+2ph,W+2pw,N) */
static T *batch_last(T *x, const int64_t *pad) {
  return kiln_contiguous(kiln_permute(pad_hw(x, pad), (int[]){1, 2, 3, 0}));
}

/* xt (C,H,W,N) -> windows (C,KH,KW,OH,OW,N), element [c,i,j,oh,ow,n] = xt[c,oh+i,ow+j,n] */
static T *windows_batch_last(T *xt, int64_t KH, int64_t KW) {
  int64_t C = SHP(xt)[0], H = SHP(xt)[1], W = SHP(xt)[2], N = SHP(xt)[3];
  int64_t OH = H - KH + 1, OW = W - KW + 1;
  /* along W: (C, H, W*N) -> (C, H, OW*N, KW), element [o, j] = [o + j*N] */
  T *v = windows1d(kiln_reshape(xt, 3, (int64_t[]){C, H, W * N}), KW, 1, N);
  /* along H: (C, OW*N, KW, H) -> (C, OW*N, KW, OH, KH) */
  v = windows1d(kiln_permute(v, (int[]){0, 2, 3, 1}), KH, 1, 1);
  v = kiln_reshape(v, 6, (int64_t[]){C, OW, N, KW, OH, KH});
  return kiln_permute(v, (int[]){0, 5, 3, 4, 1, 2});
}

/* y[n,o,oh,ow] = b[o] + sum over (c,i,j) of x[n,c,oh+i,ow+j] * w[o,c,i,j] (x padded), as a view
 * of a (O,OH,OW,N/B,B) result. x is copied blocked, as (H,W,N/B,C,B) with B = 16 or 8 images:
 * for one output position and block of images, the sum reads one contiguous run of C*B values
 * per kernel tap (KH*KW runs), where (C,H,W,N) would give C*KH*KW separate ones of B values.
 * The result is stored as such, or the kernel that sums would take the layout of the ops that
 * read y after it and write (N,O,OH,OW) with strided stores. */
static T *conv2d_blocked(T *x, T *w, T *b, const int64_t *pad) {
  int64_t N = SHP(x)[0], C = SHP(x)[1], O = SHP(w)[0], KH = SHP(w)[2], KW = SHP(w)[3];
  int64_t B = N % 16 == 0 ? 16 : 8, NB = N / B, R = N * C;
  x = pad_hw(x, pad);
  int64_t H = SHP(x)[2], W = SHP(x)[3], OH = H - KH + 1, OW = W - KW + 1;
  T *xb = kiln_reshape(x, 5, (int64_t[]){NB, B, C, H, W});
  xb = kiln_contiguous(kiln_permute(xb, (int[]){3, 4, 0, 2, 1})); /* (H, W, NB, C, B) */
  /* along W: (H, W*R) -> (H, OW*R, KW), element [o, j] = [o + j*R] */
  T *v = windows1d(kiln_reshape(xb, 2, (int64_t[]){H, W * R}), KW, 1, R);
  /* along H: (OW*R, KW, H) -> (OW*R, KW, OH, KH) */
  v = windows1d(kiln_permute(v, (int[]){1, 2, 0}), KH, 1, 1);
  v = kiln_reshape(v, 7, (int64_t[]){OW, NB, C, B, KW, OH, KH});
  v = kiln_permute(v, (int[]){5, 0, 1, 3, 6, 4, 2}); /* (OH, OW, NB, B, KH, KW, C) */
  v = kiln_reshape(v, 8, (int64_t[]){1, OH, OW, NB, B, KH, KW, C});
  T *wv =
      kiln_reshape(kiln_permute(w, (int[]){0, 2, 3, 1}), 8, (int64_t[]){O, 1, 1, 1, 1, KH, KW, C});
  T *yt = kiln_sum(kiln_mul(v, wv), 3, (int[]){5, 6, 7}, false); /* (O, OH, OW, NB, B) */
  if (b) yt = kiln_add(yt, kiln_reshape(b, 5, (int64_t[]){O, 1, 1, 1, 1}));
  T *y = kiln_permute(kiln_contiguous(yt), (int[]){3, 4, 0, 1, 2}); /* (NB, B, O, OH, OW) */
  return kiln_reshape(y, 4, (int64_t[]){N, O, OH, OW});
}

/* d loss / d x of a stride-1, undilated, ungrouped convolution, from gt, the output gradient
 * stored (O,OH,OW,N): that padded by K-1-p, convolved with the weights flipped and with in/out
 * channels swapped. One fused reduce over (O,KH,KW), where the primitive gradient of the windows
 * would store the (N,C,OH,OW,KH,KW) products and then sum the overlapping windows back. */
static T *conv2d_input_grad(T *gt, T *w, const int64_t *pad) {
  int KH = (int)SHP(w)[2], KW = (int)SHP(w)[3];
  T *wt = kiln_permute(kiln_flip(w, 2, (int[]){2, 3}), (int[]){1, 0, 2, 3});
  T *g = kiln_permute(gt, (int[]){3, 0, 1, 2});
  return kiln_conv2d(g, wt, NULL, NULL, (int[]){KH - 1 - (int)pad[0], KW - 1 - (int)pad[1]}, NULL,
                     1);
}

/* d loss / d w of the same convolutions: dw[o,c,i,j] = sum over (n,oh,ow) of
 * g[n,o,oh,ow] * x[n,c,oh+i,ow+j]. The batch is the long, innermost axis of that sum, so it
 * reads gt and a (C,H,W,N) copy of the padded x: runs of N consecutive values, vector loads. */
static T *conv2d_weight_grad(T *gt, T *x, T *w, const int64_t *pad) {
  int64_t O = SHP(w)[0], C = SHP(w)[1], KH = SHP(w)[2], KW = SHP(w)[3];
  int64_t OH = SHP(gt)[1], OW = SHP(gt)[2], N = SHP(gt)[3];
  T *xt = batch_last(x, pad);
  T *v = kiln_reshape(windows_batch_last(xt, KH, KW), 7, (int64_t[]){1, C, KH, KW, OH, OW, N});
  T *gv = kiln_reshape(gt, 7, (int64_t[]){O, 1, 1, 1, OH, OW, N});
  return kiln_sum(kiln_mul(gv, v), 3, (int[]){4, 5, 6}, false);
}

/* iarg: padding (2), then which inputs (x, w, b) this rule differentiates. All three gradients
 * read the output gradient stored once as (O,OH,OW,N): its only reader is then that copy, which
 * the ops before it (an activation's or a norm's backward) fuse into, and each reduce reads it
 * contiguously along the images. */
static void conv2d_grad(T *g, T *const *in, T **grads, const int64_t *iarg) {
  T *gt = batch_last(g, (int64_t[]){0, 0});
  if (iarg[2]) grads[0] = conv2d_input_grad(gt, in[1], iarg);
  if (iarg[3]) grads[1] = conv2d_weight_grad(gt, in[0], in[1], iarg);
  if (iarg[4]) grads[2] = kiln_sum(gt, 3, (int[]){1, 2, 3}, false);
}

T *kiln_conv2d(T *x, T *w, T *b, const int *stride, const int *padding, const int *dilation,
               int groups) {
  if (!x || !w) return NULL;
  if (kiln_ndim(w) != 4 || kiln_ndim(x) != 4) {
    kn_err("conv2d: input (N,C,H,W) and weight (O,C/groups,KH,KW) expected, got %d and %d dims",
           kiln_ndim(x), kiln_ndim(w));
    return NULL;
  }
  int64_t N = SHP(x)[0], C = SHP(x)[1], O = SHP(w)[0], CG = SHP(w)[1], KH = SHP(w)[2],
          KW = SHP(w)[3];
  if (groups < 1 || C % groups || O % groups || CG != C / groups) {
    char a[200], c[200];
    kn_err("conv2d: input %s and weight %s do not match with groups=%d", kn_shape_str(a, 4, SHP(x)),
           kn_shape_str(c, 4, SHP(w)), groups);
    return NULL;
  }
  if (b && (kiln_ndim(b) != 1 || SHP(b)[0] != O)) {
    kn_err("conv2d: bias of shape (%lld) expected for %lld output channels", (long long)O,
           (long long)O);
    return NULL;
  }
  BEGIN();
  /* the gradients by their own rules where they apply (see conv2d_grad) */
  int64_t pad[8] = {padding ? padding[0] : 0, padding ? padding[1] : 0};
  bool simple = groups == 1;
  for (int i = 0; i < 2; i++)
    simple = simple && (!stride || stride[i] == 1) && (!dilation || dilation[i] == 1);
  pad[2] = simple && kiln_requires_grad(x) && pad[0] <= KH - 1 && pad[1] <= KW - 1;
  pad[3] = simple && kiln_requires_grad(w);
  pad[4] = simple && b && kiln_requires_grad(b);
  T *in[3] = {x, w, b}, *y;
  if (pad[2]) x = kiln_detach(x);
  if (pad[3]) w = kiln_detach(w);
  if (pad[4]) b = kiln_detach(b);
  if (simple && N % 8 == 0 && pad[0] >= 0 && pad[1] >= 0 && SHP(x)[2] + 2 * pad[0] >= KH &&
      SHP(x)[3] + 2 * pad[1] >= KW) {
    y = conv2d_blocked(x, w, b, pad);
    b = NULL;
  } else {
    /* a computed input (an activation) is stored once: the windows read each element KH*KW
     * times, and recomputing it there costs more than the copy */
    if (KH * KW > 1) x = kiln_contiguous(x);
    T *win = windows2d("conv2d", x, (int[]){(int)KH, (int)KW}, stride, padding, dilation, 0);
    if (!win) return ret(NULL);
    int64_t OH = SHP(win)[2], OW = SHP(win)[3], G = groups;
    /* x: (N, G, 1, C/G, OH, OW, KH, KW); w: (1, G, O/G, C/G, 1, 1, KH, KW) */
    T *xv = kiln_reshape(win, 8, (int64_t[]){N, G, 1, CG, OH, OW, KH, KW});
    T *wv = kiln_reshape(w, 8, (int64_t[]){1, G, O / G, CG, 1, 1, KH, KW});
    y = kiln_sum(kiln_mul(xv, wv), 3, (int[]){3, 6, 7}, false); /* (N, G, O/G, OH, OW) */
    y = kiln_reshape(y, 4, (int64_t[]){N, O, OH, OW});
  }
  if (y && b) y = kiln_add(y, kiln_reshape(b, 4, (int64_t[]){1, O, 1, 1}));
  if (pad[2] || pad[3] || pad[4]) y = kn_custom_grad(y, in[2] ? 3 : 2, in, conv2d_grad, pad);
  return ret(y);
}

/* Images innermost, as the batched convolutions store their outputs: (N,C,H,W) ops on a batch
 * of 8+ (batchnorm, pooling) run over a (C,H,W,N) view, so their kernels walk the convolution
 * outputs in memory order rather than transposing them (and store in that order too). */
static bool batched(T *x) { return kiln_ndim(x) == 4 && SHP(x)[0] % 8 == 0; }
static T *to_batch_last(T *x) { return kiln_permute(x, (int[]){1, 2, 3, 0}); }
static T *from_batch_last(T *x) { return kiln_permute(x, (int[]){3, 0, 1, 2}); }

/* Pooling windows that tile the input (stride = kernel, no padding, dims divisible): a reshape
 * of the batch-last view, (C, OH, KH, OW, KW, N); NULL where they do not. */
static T *pool_tiles(T *x, const int *kernel, const int *stride, const int *padding) {
  if (!batched(x)) return NULL;
  for (int i = 0; i < 2; i++)
    if (kernel[i] < 1 || (stride && stride[i] != kernel[i]) || (padding && padding[i]) ||
        SHP(x)[2 + i] % kernel[i])
      return NULL;
  int64_t C = SHP(x)[1], H = SHP(x)[2], W = SHP(x)[3], N = SHP(x)[0];
  return kiln_reshape(to_batch_last(x), 6,
                      (int64_t[]){C, H / kernel[0], kernel[0], W / kernel[1], kernel[1], N});
}

T *kiln_max_pool2d(T *x, const int *kernel, const int *stride, const int *padding) {
  if (!x || !kernel) return NULL;
  BEGIN();
  T *t = pool_tiles(x, kernel, stride, padding);
  if (t) return ret(from_batch_last(kiln_max(t, 2, (int[]){2, 4}, false)));
  T *w = windows2d("max_pool2d", x, kernel, stride ? stride : kernel, padding, NULL, -INFINITY);
  return ret(kiln_max(w, 2, (int[]){4, 5}, false));
}
T *kiln_avg_pool2d(T *x, const int *kernel, const int *stride, const int *padding) {
  if (!x || !kernel) return NULL;
  BEGIN(); /* padded zeros count in the average, as PyTorch's default */
  T *t = pool_tiles(x, kernel, stride, padding);
  if (t) return ret(from_batch_last(kiln_mean(t, 2, (int[]){2, 4}, false)));
  T *w = windows2d("avg_pool2d", x, kernel, stride ? stride : kernel, padding, NULL, 0);
  return ret(kiln_mean(w, 2, (int[]){4, 5}, false));
}

T *kiln_batch_norm2d(T *x, T *weight, T *bias, T *rmean, T *rvar, bool training, double momentum,
                     double eps) {
  if (!x) return NULL;
  if (kiln_ndim(x) != 4) {
    kn_err("batch_norm2d: input must be (N, C, H, W), got %d dims", kiln_ndim(x));
    return NULL;
  }
  int64_t C = SHP(x)[1], cs[4] = {1, C, 1, 1};
  T *params[4] = {weight, bias, rmean, rvar};
  for (int i = 0; i < 4; i++)
    if (params[i] && kiln_numel(params[i]) != C) {
      kn_err("batch_norm2d: parameter %d has %lld elements, the input has %lld channels", i,
             (long long)kiln_numel(params[i]), (long long)C);
      return NULL;
    }
  if (!training && (!rmean || !rvar)) {
    kn_err("batch_norm2d: eval mode needs running_mean and running_var");
    return NULL;
  }
  BEGIN();
  int axes[3] = {0, 2, 3};
  bool bl = batched(x); /* computed on the (C,H,W,N) view */
  if (bl) {
    x = to_batch_last(x);
    axes[0] = 1, axes[1] = 2, axes[2] = 3, cs[0] = C, cs[1] = 1;
  }
  T *mean, *var;
  if (training) {
    mean = kiln_mean(x, 3, axes, true);
    T *xc = kiln_sub(x, mean);
    var = kiln_mean(kiln_mul(xc, xc), 3, axes, true);
    if (rmean && rvar) { /* running statistics, updated without gradient */
      bool old = kiln_set_grad_enabled(false);
      double n = (double)(kiln_numel(x) / C);
      T *m = kiln_detach(kiln_reshape(mean, 1, &C)), *v = kiln_detach(kiln_reshape(var, 1, &C));
      T *nm = kiln_add(muls(rmean, 1 - momentum), muls(m, momentum));
      T *nv = kiln_add(muls(rvar, 1 - momentum), muls(v, momentum * n / (n > 1 ? n - 1 : 1)));
      kiln_assign(rmean, kiln_cast(nm, kiln_dtype_of(rmean)));
      kiln_assign(rvar, kiln_cast(nv, kiln_dtype_of(rvar)));
      kiln_set_grad_enabled(old);
    }
  } else {
    mean = kiln_reshape(rmean, 4, cs);
    var = kiln_reshape(rvar, 4, cs);
  }
  T *y = kiln_mul(kiln_sub(x, mean), kiln_unary(KILN_RSQRT, adds(var, eps)));
  if (weight) y = kiln_mul(y, kiln_reshape(weight, 4, cs));
  if (bias) y = kiln_add(y, kiln_reshape(bias, 4, cs));
  return ret(bl ? from_batch_last(y) : y);
}

T *kiln_layer_norm(T *x, int naxes, T *weight, T *bias, double eps) {
  if (!x) return NULL;
  int nd = kiln_ndim(x);
  if (naxes < 1 || naxes > nd) {
    kn_err("layer_norm: cannot normalize over the last %d dims of a %d-dim input", naxes, nd);
    return NULL;
  }
  int axes[KILN_MAX_DIMS];
  for (int i = 0; i < naxes; i++)
    axes[i] = nd - naxes + i;
  T *wb[2] = {weight, bias};
  for (int k = 0; k < 2; k++)
    if (wb[k] &&
        (kiln_ndim(wb[k]) != naxes || memcmp(SHP(wb[k]), SHP(x) + nd - naxes, 8 * naxes))) {
      char a[200], b[200];
      kn_err("layer_norm: %s %s must have the normalized shape %s", k ? "bias" : "weight",
             kn_shape_str(a, kiln_ndim(wb[k]), SHP(wb[k])),
             kn_shape_str(b, naxes, SHP(x) + nd - naxes));
      return NULL;
    }
  BEGIN();
  T *xc = kiln_sub(x, kiln_mean(x, naxes, axes, true));
  T *var = kiln_mean(kiln_mul(xc, xc), naxes, axes, true);
  T *y = kiln_mul(xc, kiln_unary(KILN_RSQRT, adds(var, eps)));
  if (weight) y = kiln_mul(y, weight);
  if (bias) y = kiln_add(y, bias);
  return ret(y);
}

T *kiln_rms_norm(T *x, T *weight, double eps) {
  if (!x) return NULL;
  if (kiln_ndim(x) < 1 ||
      (weight && (kiln_ndim(weight) != 1 || SHP(weight)[0] != SHP(x)[kiln_ndim(x) - 1]))) {
    kn_err("rms_norm: weight must be (%lld), the input's last dim",
           kiln_ndim(x) ? (long long)SHP(x)[kiln_ndim(x) - 1] : 0LL);
    return NULL;
  }
  int last = -1;
  BEGIN();
  T *ms = kiln_mean(kiln_mul(x, x), 1, &last, true);
  T *y = kiln_mul(x, kiln_unary(KILN_RSQRT, adds(ms, eps)));
  if (weight) y = kiln_mul(y, weight);
  return ret(y);
}

T *kiln_embedding(T *weight, T *ids) {
  if (!weight || !ids) return NULL;
  if (kiln_ndim(weight) != 2 || kiln_dtype_is_float(kiln_dtype_of(ids))) {
    kn_err("embedding: weight must be (V, D) and ids integer");
    return NULL;
  }
  if (kiln_ndim(ids) + 1 > KILN_MAX_DIMS) {
    kn_err("embedding: ids have too many dims (%d)", kiln_ndim(ids));
    return NULL;
  }
  return kiln_take(weight, ids);
}

T *kiln_dropout(T *x, double p, uint64_t seed, bool training) {
  if (!x) return NULL;
  if (!(p >= 0 && p < 1)) {
    kn_err("dropout: p must be in [0, 1), got %g", p);
    return NULL;
  }
  if (!training || p == 0) {
    BEGIN();
    return ret(kiln_mul(x, kiln_scalar(kiln_dtype_of(x), 1)));
  }
  BEGIN();
  T *keep = kiln_binary(KILN_GE, kiln_rand(kiln_ndim(x), SHP(x), seed), kiln_scalar(KILN_F32, p));
  return ret(kiln_where(keep, muls(x, 1 / (1 - p)), kiln_scalar(kiln_dtype_of(x), 0)));
}

T *kiln_leaky_relu(T *x, double slope) {
  if (!x) return NULL;
  BEGIN();
  return ret(
      kiln_where(kiln_binary(KILN_GT, x, kiln_scalar(kiln_dtype_of(x), 0)), x, muls(x, slope)));
}
T *kiln_gelu(T *x) {
  if (!x) return NULL;
  BEGIN();
  /* over a batch of 8+ images, on the (C,H,W,N) view, as batchnorm: a stored result (its
   * backward needs it) keeps the batched convolution's layout instead of transposing it */
  bool bl = batched(x);
  if (bl) x = to_batch_last(x);
  T *inner = muls(kiln_add(x, muls(kiln_mul(x, kiln_mul(x, x)), 0.044715)), sqrt(2 / M_PI));
  T *y = kiln_mul(muls(x, 0.5), adds(kiln_unary(KILN_TANH, inner), 1));
  return ret(bl ? from_batch_last(y) : y);
}
T *kiln_silu(T *x) {
  if (!x) return NULL;
  BEGIN();
  return ret(kiln_mul(x, kiln_unary(KILN_SIGMOID, x)));
}

T *kiln_cross_entropy(T *logits, T *labels, double ls) {
  if (!logits || !labels) return NULL;
  if (kiln_ndim(logits) != 2 || kiln_ndim(labels) != 1 || SHP(labels)[0] != SHP(logits)[0] ||
      kiln_dtype_is_float(kiln_dtype_of(labels))) {
    char a[200], b[200];
    kn_err("cross_entropy: logits (N, C) and integer labels (N) expected, got %s and %s",
           kn_shape_str(a, kiln_ndim(logits), SHP(logits)),
           kn_shape_str(b, kiln_ndim(labels), SHP(labels)));
    return NULL;
  }
  if (!(ls >= 0 && ls < 1)) {
    kn_err("cross_entropy: label_smoothing must be in [0, 1), got %g", ls);
    return NULL;
  }
  int64_t N = SHP(logits)[0], C = SHP(logits)[1];
  BEGIN();
  T *logp = kiln_log_softmax(logits, 1);
  T *hot = kiln_binary(KILN_EQ, kiln_reshape(labels, 2, (int64_t[]){N, 1}),
                       kiln_reshape(kiln_arange(0, (double)C, 1, KILN_I64), 2, (int64_t[]){1, C}));
  T *target = adds(muls(kiln_cast(hot, kiln_dtype_of(logp)), 1 - ls), ls / (double)C);
  T *nll = kiln_neg(kiln_sum(kiln_mul(target, logp), 1, (int[]){1}, false));
  return ret(kiln_mean(nll, 0, NULL, false));
}

T *kiln_mse_loss(T *a, T *b) {
  if (!a || !b) return NULL;
  BEGIN();
  T *d = kiln_sub(a, b);
  return ret(kiln_mean(kiln_mul(d, d), 0, NULL, false));
}
