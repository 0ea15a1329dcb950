/* tensor.c — the public Tensor API: handles, scopes, creation, and every op composed from
 * the primitive graph ops. Nothing here computes; realize hands the graph to the scheduler. */
#include "internal.h"
#include "render/prelude.h"

/* ---- scopes ---------------------------------------------------------------------------- */
typedef struct {
  kiln_tensor **ts;
  int64_t n, cap;
} scope_t;
static scope_t scopes[256];
static int nscopes = 1;
static int64_t tensors_live;

static void scope_add(int s, kiln_tensor *t) {
  scope_t *sc = &scopes[s];
  if (sc->n == sc->cap) {
    sc->cap = sc->cap ? sc->cap * 2 : 64;
    sc->ts = kn_xrealloc(sc->ts, sizeof(kiln_tensor *) * sc->cap);
  }
  t->scope = s;
  t->slot = sc->n;
  sc->ts[sc->n++] = t;
}
static void scope_del(kiln_tensor *t) {
  scope_t *sc = &scopes[t->scope];
  kiln_tensor *last = sc->ts[--sc->n];
  sc->ts[t->slot] = last;
  last->slot = t->slot;
}

void kiln_scope_begin(void) {
  KN_ASSERT(nscopes < 256, "scopes nested deeper than 256");
  scopes[nscopes++].n = 0;
}
static void tensor_destroy(kiln_tensor *t) {
  kn_node_unref(t->node);
  tensors_live--;
  free(t);
}
void kiln_scope_end(void) {
  if (nscopes <= 1) {
    kn_err("scope_end: no open scope");
    return;
  }
  scope_t *sc = &scopes[--nscopes];
  for (int64_t i = 0; i < sc->n; i++)
    tensor_destroy(sc->ts[i]);
  sc->n = 0;
}
kiln_tensor *kiln_keep(kiln_tensor *t) {
  if (!t) return NULL;
  if (t->scope > 0) {
    scope_del(t);
    scope_add(t->scope - 1, t);
  }
  return t;
}
kiln_tensor *kiln_persist(kiln_tensor *t) {
  if (!t) return NULL;
  if (t->scope > 0) {
    scope_del(t);
    scope_add(0, t);
  }
  return t;
}
void kiln_free(kiln_tensor *t) {
  if (!t) return;
  scope_del(t);
  tensor_destroy(t);
}

/* Takes ownership of one reference to n. */
static kiln_tensor *wrap(kn_node *n) {
  if (!n) return NULL;
  kiln_tensor *t = kn_xmalloc(sizeof *t);
  t->node = n;
  scope_add(nscopes - 1, t);
  tensors_live++;
  return t;
}
kiln_tensor *kn_wrap(kn_node *n) { return wrap(n); }
void kn_mark_weights(kiln_tensor *t) {
  KN_ASSERT(t && t->node->op == N_BUFFER, "only a stored tensor can be marked as weights");
  t->node->weights = true;
}

void kiln_get_stats(kiln_stats *s) {
  *s = kn_stats;
  s->nodes_live = kn_nodes_live();
  s->tensors_live = tensors_live;
}

/* ---- inspection ------------------------------------------------------------------------- */
int kiln_ndim(const kiln_tensor *t) { return t ? t->node->ndim : -1; }
const int64_t *kiln_shape(const kiln_tensor *t) { return t ? t->node->shape : NULL; }
int64_t kiln_numel(const kiln_tensor *t) {
  return t ? kn_numel(t->node->ndim, t->node->shape) : -1;
}
kiln_dtype kiln_dtype_of(const kiln_tensor *t) { return t ? t->node->dtype : KILN_F32; }
static int norm_axis_of(int axis, int ndim, const int64_t *shape, const char *op) {
  int a = axis < 0 ? axis + ndim : axis;
  if (a < 0 || a >= ndim) {
    if (shape)
      kn_err("%s: axis %d out of range for shape %s", op, axis,
             kn_shape_str((char[200]){0}, ndim, shape));
    else
      kn_err("%s: axis %d out of range for %d dims", op, axis, ndim);
    return -1;
  }
  return a;
}
static int norm_axis(int axis, int ndim, const char *op) {
  return norm_axis_of(axis, ndim, NULL, op);
}
int64_t kiln_dim(const kiln_tensor *t, int axis) {
  if (!t) return -1;
  int a = norm_axis(axis, t->node->ndim, "dim");
  return a < 0 ? -1 : t->node->shape[a];
}

/* ---- node-level builders (new references; sources are borrowed) -------------------------- */
static kn_node *ref(kn_node *a) {
  kn_node_ref(a);
  return a;
}
#define SH(n) kn_shape_str((char[200]){0}, (n)->ndim, (n)->shape)

static kn_node *nd_const(int dt, int dev, int ndim, const int64_t *shape, double v) {
  if (kn_dtype_is_int(dt) || dt == KILN_BOOL) { /* store the value the dtype can hold */
    if (dt == KILN_BOOL)
      v = v != 0;
    else if (kn_dtype_is_unsigned(dt))
      v = (double)(kn_d2u(v, 1.8446744073709552e19) &
                   (kn_dtype_bits(dt) == 64 ? ~0ull : ((1ull << kn_dtype_bits(dt)) - 1)));
    else
      v = (double)kn_d2i(v, -9.2233720368547758e18, 9.2233720368547758e18);
  } else if (dt == KILN_F32 || dt == KILN_F16 || dt == KILN_BF16) {
    float f = (float)v;
    v = dt == KILN_F16 ? kn_rh(f) : dt == KILN_BF16 ? kn_rbf(f) : f;
  }
  return kn_node_make(N_CONST, dt, dev, ndim, shape, 0, NULL, NULL, 0, v);
}

static kn_node *nd_alu(int op, int dt, int nsrc, kn_node *const *src) {
  return kn_node_make(op, dt, src[0]->device, src[0]->ndim, src[0]->shape, nsrc, src, NULL, 0, 0);
}
static kn_node *nd_un(int op, kn_node *a) { return nd_alu(op, a->dtype, 1, &a); }
static kn_node *nd_bin(int op, kn_node *a, kn_node *b) {
  kn_node *s[2] = {a, b};
  return nd_alu(op, kn_is_cmp(op) ? KILN_BOOL : a->dtype, 2, s);
}
static kn_node *nd_cast(kn_node *a, int dt) {
  if (a->dtype == dt) {
    kn_node_ref(a);
    return a;
  }
  if (a->op == N_CONST) return nd_const(dt, a->device, a->ndim, a->shape, a->cval);
  return nd_alu(N_CAST, dt, 1, &a);
}
static kn_node *nd_like(kn_node *a, double v) {
  return nd_const(a->dtype, a->device, a->ndim, a->shape, v);
}

/* Movement node; folds identities, consts and nested reshapes/permutes. */
static kn_node *nd_move(int op, kn_node *a, int ndim, const int64_t *shape, const int64_t *arg,
                        int narg) {
  bool same = ndim == a->ndim && !memcmp(shape, a->shape, sizeof(int64_t) * ndim);
  if (op == N_PERMUTE)
    for (int i = 0; i < narg; i++)
      same = same && arg[i] == i;
  if (op == N_PAD || op == N_FLIP)
    for (int i = 0; i < narg; i++)
      same = same && arg[i] == 0;
  if (op == N_SHRINK)
    for (int i = 0; i < ndim; i++)
      same = same && arg[2 * i] == 0;
  if (same) {
    kn_node_ref(a);
    return a;
  }
  if (a->op == N_CONST && op != N_PAD) return nd_const(a->dtype, a->device, ndim, shape, a->cval);
  /* a reshape of a reshape skips the inner one, unless that one changes how gradient flows
   * (kiln_detach, kn_custom_grad) */
  if (op == N_RESHAPE && a->op == N_RESHAPE && a->rg == a->src[0]->rg && !a->vjp) a = a->src[0];
  if (op == N_PERMUTE && a->op == N_PERMUTE) {
    int64_t p[KILN_MAX_DIMS];
    for (int i = 0; i < ndim; i++)
      p[i] = a->arg[arg[i]];
    return nd_move(N_PERMUTE, a->src[0], ndim, shape, p, ndim);
  }
  if (op == N_RESHAPE && ndim == a->ndim && !memcmp(shape, a->shape, sizeof(int64_t) * ndim)) {
    kn_node_ref(a);
    return a;
  }
  return kn_node_make(op, a->dtype, a->device, ndim, shape, 1, &a, arg, narg, 0);
}
static kn_node *nd_reshape(kn_node *a, int ndim, const int64_t *shape) {
  return nd_move(N_RESHAPE, a, ndim, shape, shape, ndim);
}
static kn_node *nd_expand(kn_node *a, int ndim, const int64_t *shape) {
  return nd_move(N_EXPAND, a, ndim, shape, shape, ndim);
}
static kn_node *nd_permute(kn_node *a, const int64_t *perm) {
  int64_t shape[KILN_MAX_DIMS];
  for (int i = 0; i < a->ndim; i++)
    shape[i] = a->shape[perm[i]];
  return nd_move(N_PERMUTE, a, a->ndim, shape, perm, a->ndim);
}
static kn_node *nd_pad(kn_node *a, const int64_t *before, const int64_t *after) {
  int64_t shape[KILN_MAX_DIMS], arg[2 * KILN_MAX_DIMS];
  for (int i = 0; i < a->ndim; i++) {
    shape[i] = a->shape[i] + before[i] + after[i];
    arg[2 * i] = before[i], arg[2 * i + 1] = after[i];
  }
  return nd_move(N_PAD, a, a->ndim, shape, arg, 2 * a->ndim);
}
static kn_node *nd_shrink(kn_node *a, const int64_t *start, const int64_t *end) {
  int64_t shape[KILN_MAX_DIMS], arg[2 * KILN_MAX_DIMS];
  for (int i = 0; i < a->ndim; i++) {
    shape[i] = end[i] - start[i];
    arg[2 * i] = start[i], arg[2 * i + 1] = end[i];
  }
  return nd_move(N_SHRINK, a, a->ndim, shape, arg, 2 * a->ndim);
}
/* A reduce with few outputs and many inputs per output (a loss, a full sum) is done in two
 * steps, so it runs on more than a few threads or work-groups of any device: one reduced axis
 * of length n becomes (d, n/d), the first reduce keeps the d partial results of each output
 * (the scheduler stores them, as a reduce read by a reduce), the second combines them. Only
 * for fewer outputs than a CPU has threads: with more, the pool is busy already, and a GPU
 * spreads each output over a work-group (GROUP); splitting those made the training step's
 * weight-gradient and batchnorm reduces (32-800 outputs) 2-20x slower on the CPU. */
enum { SPLIT_MIN_RATIO = 1 << 15, SPLIT_MAX_OUT = 16, SPLIT_MAX_PARTS = 256 };
static kn_node *nd_reduce(int rop, kn_node *a, uint32_t mask);
static kn_node *split_reduce(int rop, kn_node *a, uint32_t mask, const int64_t *shape) {
  int64_t out = kn_numel(a->ndim, shape), in = kn_numel(a->ndim, a->shape);
  if (a->ndim >= KILN_MAX_DIMS || out > SPLIT_MAX_OUT || in / (out ? out : 1) < SPLIT_MIN_RATIO)
    return NULL;
  int ax = -1;
  int64_t d = 0;
  for (int i = 0; i < a->ndim; i++) /* the largest split of any reduced axis */
    for (int64_t p = SPLIT_MAX_PARTS; p > d && p >= 8; p--)
      if ((mask >> i & 1) && a->shape[i] % p == 0) { /* each part still sums >= 128 */
        ax = i, d = p;
        break;
      }
  if (ax < 0) return NULL;
  int64_t s[KILN_MAX_DIMS];
  uint32_t m = 0;
  for (int i = 0, j = 0; i < a->ndim; i++) {
    if (i == ax) {
      s[j] = d, s[j + 1] = a->shape[i] / d, m |= 2u << j, j += 2;
      continue;
    }
    if (mask >> i & 1) m |= 1u << j;
    s[j++] = a->shape[i];
  }
  /* half sums keep their partials in f32: one rounding at the end, as in one kernel */
  bool wide = rop != N_MAX && (a->dtype == KILN_F16 || a->dtype == KILN_BF16);
  kn_node *r = nd_reshape(a, a->ndim + 1, s), *rw = wide ? nd_cast(r, KILN_F32) : r;
  kn_node *p1 = nd_reduce(rop, rw, m), *p2 = nd_reduce(rop, p1, 1u << ax);
  kn_node *p3 = nd_reshape(p2, a->ndim, shape), *res = wide ? nd_cast(p3, a->dtype) : p3;
  if (wide) kn_node_unref(rw), kn_node_unref(p3);
  kn_node_unref(r), kn_node_unref(p1), kn_node_unref(p2);
  return res;
}
static kn_node *nd_reduce(int rop, kn_node *a, uint32_t mask) {
  int64_t shape[KILN_MAX_DIMS], arg[2] = {rop, mask};
  for (int i = 0; i < a->ndim; i++)
    shape[i] = (mask >> i & 1) ? 1 : a->shape[i];
  if (!mask) {
    kn_node_ref(a);
    return a;
  }
  kn_node *split = split_reduce(rop, a, mask, shape);
  if (split) return split;
  return kn_node_make(N_REDUCE, a->dtype, a->device, a->ndim, shape, 1, &a, arg, 2, 0);
}

/* ---- creation --------------------------------------------------------------------------- */
static bool check_shape(const char *op, int ndim, const int64_t *shape) {
  if (ndim < 0 || ndim > KILN_MAX_DIMS || (ndim && !shape)) {
    kn_err("%s: ndim %d out of range 0..%d", op, ndim, KILN_MAX_DIMS);
    return false;
  }
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) {
    if (shape[i] < 0) {
      kn_err("%s: negative dim %lld in %s", op, (long long)shape[i],
             kn_shape_str((char[200]){0}, ndim, shape));
      return false;
    }
    if (shape[i] && n > INT64_MAX / 16 / shape[i]) {
      kn_err("%s: shape %s is too large", op, kn_shape_str((char[200]){0}, ndim, shape));
      return false;
    }
    n *= shape[i];
  }
  return true;
}
static bool check_dtype(const char *op, int dt) {
  if ((unsigned)dt >= KILN_NDTYPES) {
    kn_err("%s: unknown dtype %d", op, dt);
    return false;
  }
  return true;
}

/* A stored tensor on the default device: data copied in, or zeros. */
static kn_node *buffer_from(int dt, int ndim, const int64_t *shape, const void *data) {
  size_t nbytes = (size_t)kn_numel(ndim, shape) * kiln_dtype_size(dt);
  int dev = kn_device_default();
  kn_buffer *b = data ? kn_buffer_alloc_scratch(dev, nbytes) : kn_buffer_alloc(dev, nbytes);
  if (!b) return NULL;
  if (data) kn_buffer_write(b, 0, data, nbytes);
  return kn_node_buffer(dt, dev, ndim, shape, b);
}

/* Weights: read in place where the device reads host memory, else uploaded once as stored
 * (a quantized matrix stays quantized); either way marked so that the scheduler recomputes
 * their views where read instead of storing them. */
kiln_tensor *kiln_from_blob(kiln_dtype dt, int ndim, const int64_t *shape, const void *data) {
  if (!check_dtype("from_blob", dt) || !check_shape("from_blob", ndim, shape)) return NULL;
  if (!data && kn_numel(ndim, shape)) {
    kn_err("from_blob: data is NULL");
    return NULL;
  }
  int dev = kn_device_default();
  size_t nbytes = (size_t)kn_numel(ndim, shape) * kiln_dtype_size(dt);
  kn_node *n;
  if (kn_device_get(dev)->caps.host_memory) /* kernels only read a blob: dropping const is safe */
    n = kn_node_buffer(dt, dev, ndim, shape, kn_buffer_wrap(dev, (void *)data, nbytes));
  else if (!(n = buffer_from(dt, ndim, shape, data)))
    return NULL;
  n->weights = true;
  return wrap(n);
}

kiln_tensor *kn_rows_view(kiln_tensor *x, int64_t r0, int64_t r1) {
  kn_node *n = x ? x->node : NULL;
  if (!n || n->op != N_BUFFER || n->ndim < 1 || r0 < 0 || r1 < r0 || r1 > n->shape[0]) {
    kn_err("rows view: rows [%lld, %lld) of a tensor that is not stored with that many",
           (long long)r0, (long long)r1);
    return NULL;
  }
  size_t row = (size_t)kn_numel(n->ndim - 1, n->shape + 1) * kiln_dtype_size(n->dtype);
  kn_buffer *b = kn_buffer_view(n->buf, (size_t)r0 * row, (size_t)(r1 - r0) * row);
  if (!b) return NULL;
  int64_t shape[KILN_MAX_DIMS];
  memcpy(shape, n->shape, sizeof(int64_t) * (size_t)n->ndim);
  shape[0] = r1 - r0;
  return wrap(kn_node_buffer(n->dtype, n->device, n->ndim, shape, b));
}

int kiln_write_rows(kiln_tensor *dst, int64_t row, kiln_tensor *src) {
  return kiln_copy_rows(dst, row, src, 0, src && src->node->ndim ? src->node->shape[0] : 0);
}

int kiln_copy_rows(kiln_tensor *dst, int64_t row, kiln_tensor *src, int64_t src_row, int64_t n) {
  if (!dst || !src) {
    kn_err("write_rows: tensor is NULL (an earlier op failed)");
    return -1;
  }
  kn_node *d = dst->node, *s = src->node;
  char a[200], b[200];
  if (d->op != N_BUFFER || d->ndim < 1) {
    kn_err("write_rows: destination must be a stored tensor with at least one dim");
    return -1;
  }
  bool same = s->dtype == d->dtype && s->ndim == d->ndim &&
              !memcmp(s->shape + 1, d->shape + 1, 8 * (d->ndim - 1));
  if (!same || row < 0 || n < 0 || n > d->shape[0] - row || src_row < 0 ||
      n > s->shape[0] - src_row) {
    kn_err("write_rows: rows [%lld, %lld) of %s %s do not fit at row %lld of %s %s",
           (long long)src_row, (long long)(src_row + n), kiln_dtype_name(s->dtype),
           kn_shape_str(a, s->ndim, s->shape), (long long)row, kiln_dtype_name(d->dtype),
           kn_shape_str(b, d->ndim, d->shape));
    return -1;
  }
  if (kiln_realize(src) < 0) return -1;
  s = src->node;
  size_t rowb = (size_t)kn_numel(d->ndim - 1, d->shape + 1) * kiln_dtype_size(d->dtype);
  if (n)
    kn_buffer_copy(d->buf, (size_t)row * rowb, s->buf, (size_t)src_row * rowb, (size_t)n * rowb);
  return 0;
}

kiln_tensor *kiln_empty(kiln_dtype dt, int ndim, const int64_t *shape) {
  if (!check_dtype("empty", dt) || !check_shape("empty", ndim, shape)) return NULL;
  return wrap(buffer_from(dt, ndim, shape, NULL));
}
static kiln_tensor *full_named(const char *name, int dt, int ndim, const int64_t *shape, double v) {
  if (!check_dtype(name, dt) || !check_shape(name, ndim, shape)) return NULL;
  return wrap(nd_const(dt, kn_device_default(), ndim, shape, v));
}
kiln_tensor *kiln_full(kiln_dtype dt, int ndim, const int64_t *shape, double v) {
  return full_named("full", dt, ndim, shape, v);
}
kiln_tensor *kiln_zeros(kiln_dtype dt, int ndim, const int64_t *shape) {
  return full_named("zeros", dt, ndim, shape, 0);
}
kiln_tensor *kiln_ones(kiln_dtype dt, int ndim, const int64_t *shape) {
  return full_named("ones", dt, ndim, shape, 1);
}
kiln_tensor *kiln_scalar(kiln_dtype dt, double v) { return kiln_full(dt, 0, NULL, v); }
kiln_tensor *kiln_from_data(kiln_dtype dt, int ndim, const int64_t *shape, const void *data) {
  if (!check_dtype("from_data", dt) || !check_shape("from_data", ndim, shape)) return NULL;
  if (!data && kn_numel(ndim, shape)) {
    kn_err("from_data: data is NULL");
    return NULL;
  }
  return wrap(buffer_from(dt, ndim, shape, data));
}

static double load_elem(const void *p, int dt, int64_t i) {
  switch (dt) {
  case KILN_BOOL:
  case KILN_U8:
    return ((const uint8_t *)p)[i];
  case KILN_I8:
    return ((const int8_t *)p)[i];
  case KILN_U16:
    return ((const uint16_t *)p)[i];
  case KILN_I16:
    return ((const int16_t *)p)[i];
  case KILN_U32:
    return ((const uint32_t *)p)[i];
  case KILN_I32:
    return ((const int32_t *)p)[i];
  case KILN_U64:
    return (double)((const uint64_t *)p)[i];
  case KILN_I64:
    return (double)((const int64_t *)p)[i];
  case KILN_F16:
    return kn_h2f(((const uint16_t *)p)[i]);
  case KILN_BF16:
    return kn_bf2f(((const uint16_t *)p)[i]);
  case KILN_F32:
    return ((const float *)p)[i];
  default:
    return ((const double *)p)[i];
  }
}

/* 0, 1, ..., n-1 (i64), computed where it is read: bit b of an index is a (0, 1) pair (a one
 * padded on the left) broadcast over blocks of 2^b, and the index is the sum of its bits times
 * 2^b. Graph ops only: nothing is built on the host or uploaded. */
static kn_node *nd_iota(int dev, int64_t n) {
  int k = 0;
  while ((1ll << k) < n)
    k++;
  int64_t N = 1ll << k;
  kn_node *one = nd_const(KILN_I64, dev, 1, (int64_t[]){1}, 1);
  kn_node *pair = nd_pad(one, (int64_t[]){1}, (int64_t[]){0}),
          *acc = nd_const(KILN_I64, dev, 1, &N, 0);
  kn_node *pair3 = nd_reshape(pair, 3, (int64_t[]){1, 2, 1});
  for (int b = 0; b < k; b++) {
    kn_node *e = nd_expand(pair3, 3, (int64_t[]){N >> (b + 1), 2, 1ll << b});
    kn_node *bit = nd_reshape(e, 1, &N), *w = nd_const(KILN_I64, dev, 1, &N, (double)(1ll << b));
    kn_node *t = nd_bin(N_MUL, bit, w), *sum = nd_bin(N_ADD, acc, t);
    kn_node_unref(e), kn_node_unref(bit), kn_node_unref(w), kn_node_unref(t), kn_node_unref(acc);
    acc = sum;
  }
  kn_node *r = nd_shrink(acc, (int64_t[]){0}, &n);
  kn_node_unref(one), kn_node_unref(pair), kn_node_unref(pair3), kn_node_unref(acc);
  return r;
}
/* The values dt holds, as doubles (integers; +-inf for floats). */
static void dtype_limits(int dt, double *lo, double *hi) {
  if (kiln_dtype_is_float(dt)) {
    *lo = -INFINITY, *hi = INFINITY;
  } else if (dt == KILN_BOOL) {
    *lo = 0, *hi = 1;
  } else {
    int bits = kn_dtype_bits(dt);
    *lo = kn_dtype_is_unsigned(dt) ? 0 : -ldexp(1, bits - 1);
    *hi = kn_dtype_is_unsigned(dt) ? ldexp(1, bits) - 1 : ldexp(1, bits - 1) - 1;
  }
}

kiln_tensor *kiln_arange(double start, double stop, double step, kiln_dtype dt) {
  if (!check_dtype("arange", dt)) return NULL;
  if (step == 0 || step != step || start != start || stop != stop) {
    kn_err("arange: bad range start=%g stop=%g step=%g", start, stop, step);
    return NULL;
  }
  double cnt = ceil((stop - start) / step);
  if (cnt > 1e12) {
    kn_err("arange: %g elements is too many", cnt);
    return NULL;
  }
  int64_t n = cnt > 0 ? (int64_t)cnt : 0;
  int dev = kn_device_default();
  kn_node *i = nd_iota(dev, n), *v;
  /* start + i * step: exact in i64 where both are integers and every value fits dt (else in
   * f64, with the saturating cast to dt) */
  double last = n ? start + (double)(n - 1) * step : start, lo = fmin(start, last),
         hi = fmax(start, last), dlo, dhi;
  dtype_limits(dt, &dlo, &dhi);
  if (start == floor(start) && step == floor(step) && fabs(lo) < 0x1p53 && fabs(hi) < 0x1p53 &&
      lo >= dlo && hi <= dhi) {
    kn_node *st = nd_const(KILN_I64, dev, 1, &n, step), *s0 = nd_const(KILN_I64, dev, 1, &n, start);
    kn_node *m = nd_bin(N_MUL, i, st);
    v = nd_bin(N_ADD, m, s0);
    kn_node_unref(st), kn_node_unref(s0), kn_node_unref(m);
  } else {
    kn_node *f = nd_cast(i, KILN_F64), *st = nd_const(KILN_F64, dev, 1, &n, step),
            *s0 = nd_const(KILN_F64, dev, 1, &n, start), *m = nd_bin(N_MUL, f, st);
    v = nd_bin(N_ADD, m, s0);
    kn_node_unref(f), kn_node_unref(st), kn_node_unref(s0), kn_node_unref(m);
  }
  kn_node *r = nd_cast(v, dt);
  kn_node_unref(i), kn_node_unref(v);
  return wrap(r);
}

/* ---- broadcasting ----------------------------------------------------------------------- */
static bool bshape(const char *op, kn_node *a, kn_node *b, int *ndim, int64_t *shape) {
  int n = a->ndim > b->ndim ? a->ndim : b->ndim;
  for (int i = 0; i < n; i++) {
    int ia = i - (n - a->ndim), ib = i - (n - b->ndim);
    int64_t da = ia >= 0 ? a->shape[ia] : 1, db = ib >= 0 ? b->shape[ib] : 1;
    if (da != db && da != 1 && db != 1) {
      kn_err("%s: shapes %s and %s do not broadcast", op, SH(a), SH(b));
      return false;
    }
    shape[i] = da == 1 ? db : da;
  }
  *ndim = n;
  return true;
}
static kn_node *bcast_to(kn_node *a, int ndim, const int64_t *shape) {
  int64_t s[KILN_MAX_DIMS];
  for (int i = 0; i < ndim; i++)
    s[i] = i < ndim - a->ndim ? 1 : a->shape[i - (ndim - a->ndim)];
  kn_node *r = nd_reshape(a, ndim, s), *e = nd_expand(r, ndim, shape);
  kn_node_unref(r);
  return e;
}
static bool same_device(const char *op, kn_node *a, kn_node *b) {
  if (a->device == b->device) return true;
  kn_err("%s: operands are on different devices (%s, %s)", op, kn_device_get(a->device)->name,
         kn_device_get(b->device)->name);
  return false;
}
/* Promotes and broadcasts a, b into new references; false (error set) on mismatch. */
static bool prep2(const char *op, kiln_tensor *ta, kiln_tensor *tb, kn_node **pa, kn_node **pb) {
  if (!ta || !tb) return false;
  kn_node *a = ta->node, *b = tb->node;
  int ndim;
  int64_t shape[KILN_MAX_DIMS];
  if (!same_device(op, a, b) || !bshape(op, a, b, &ndim, shape)) return false;
  int dt = kiln_promote(a->dtype, b->dtype);
  kn_node *ca = nd_cast(a, dt), *cb = nd_cast(b, dt);
  *pa = bcast_to(ca, ndim, shape);
  *pb = bcast_to(cb, ndim, shape);
  kn_node_unref(ca);
  kn_node_unref(cb);
  return true;
}

static const char *const unary_names[KILN_NUNARY] = {
    "neg",   "abs",        "exp",  "exp2",    "log",  "log2", "sin",  "cos",   "sqrt",
    "rsqrt", "reciprocal", "relu", "sigmoid", "tanh", "not",  "sign", "square"};

/* ---- tensor-level primitives: composites below are written with these like user code ---- */
typedef kiln_tensor T;
static T *ret(T *r) { /* ends the composite's scope, keeping r */
  kiln_keep(r);
  kiln_scope_end();
  return r;
}
static T *un(int op, T *a) { return a ? wrap(nd_un(op, a->node)) : NULL; }
static T *like(T *a, double v) { return a ? wrap(nd_like(a->node, v)) : NULL; }
static T *ew(int op, const char *name, T *a, T *b) {
  kn_node *x, *y;
  if (!prep2(name, a, b, &x, &y)) return NULL;
  kn_node *r = nd_bin(op, x, y);
  kn_node_unref(x);
  kn_node_unref(y);
  return wrap(r);
}
static T *ews(int op, T *a, double v) { return ew(op, "op", a, like(a, v)); }
static T *to_f(T *x) {
  if (!x) return NULL;
  return kiln_dtype_is_float(x->node->dtype) ? x : kiln_cast(x, KILN_F32);
}
static T *where3(T *c, T *a, T *b) { /* same shapes, a/b same dtype */
  kn_node *s[3] = {c->node, a->node, b->node};
  return wrap(nd_alu(N_WHERE, a->node->dtype, 3, s));
}

/* Counter-based generator: element i of stream `seed` is a hash of (i, seed) built from u32
 * ops, so every device produces the same numbers. */
static T *rand_bits(int ndim, const int64_t *shape, uint64_t seed, uint32_t stream) {
  int64_t n = kn_numel(ndim, shape);
  kn_node *i = nd_iota(kn_device_default(), n), *u = nd_cast(i, KILN_U32);
  kn_node_unref(i);
  T *x = kiln_reshape(wrap(u), ndim, shape);
  uint32_t k0 = (uint32_t)(seed * 0x9E3779B97F4A7C15ull >> 32) ^ stream,
           k1 = (uint32_t)seed ^ (stream * 0x85EBCA6Bu);
  x = ews(N_ADD, x, k1);
  for (int round = 0; round < 2; round++) {
    x = ews(N_XOR, ews(N_MUL, x, 0x9E3779B1u), k0);
    x = ew(N_XOR, "rand", x, ews(N_SHR, x, 16));
    x = ews(N_MUL, x, 0x85EBCA6Bu);
    x = ew(N_XOR, "rand", x, ews(N_SHR, x, 13));
    x = ews(N_MUL, x, 0xC2B2AE35u);
    x = ew(N_XOR, "rand", x, ews(N_SHR, x, 16));
  }
  return x;
}
static T *rand_uniform(int ndim, const int64_t *shape, uint64_t seed, uint32_t stream) {
  T *x = kiln_cast(ews(N_SHR, rand_bits(ndim, shape, seed, stream), 8), KILN_F32);
  return ews(N_MUL, x, 1.0 / 16777216.0);
}
kiln_tensor *kiln_rand(int ndim, const int64_t *shape, uint64_t seed) {
  if (!check_shape("rand", ndim, shape)) return NULL;
  kiln_scope_begin();
  return ret(rand_uniform(ndim, shape, seed, 0));
}
kiln_tensor *kiln_randn(int ndim, const int64_t *shape, uint64_t seed) {
  if (!check_shape("randn", ndim, shape)) return NULL;
  kiln_scope_begin(); /* Box-Muller: sqrt(-2 ln(1-u1)) * cos(2 pi u2) */
  T *u1 = rand_uniform(ndim, shape, seed, 1), *u2 = rand_uniform(ndim, shape, seed, 2);
  T *r = un(N_SQRT, ews(N_MUL, un(N_LOG2, ews(N_ADD, un(N_NEG, u1), 1)), -2 * M_LN2));
  T *c = un(N_SIN, ews(N_ADD, ews(N_MUL, u2, 2 * M_PI), M_PI / 2));
  return ret(ew(N_MUL, "randn", r, c));
}

kiln_tensor *kiln_cast(kiln_tensor *x, kiln_dtype dt) {
  if (!x || !check_dtype("cast", dt)) return NULL;
  return wrap(nd_cast(x->node, dt));
}
kiln_tensor *kiln_bitcast(kiln_tensor *x, kiln_dtype dt) {
  if (!x || !check_dtype("bitcast", dt)) return NULL;
  if (kiln_dtype_size(dt) != kiln_dtype_size(x->node->dtype) || dt == KILN_BOOL ||
      x->node->dtype == KILN_BOOL) {
    kn_err("bitcast: %s and %s differ in size (or are bool)", kiln_dtype_name(x->node->dtype),
           kiln_dtype_name(dt));
    return NULL;
  }
  if (dt == x->node->dtype) return wrap(ref(x->node));
  return wrap(nd_alu(N_BITCAST, dt, 1, &x->node));
}

/* ---- unary ------------------------------------------------------------------------------ */
static T *exp_(T *x) { return un(N_EXP2, ews(N_MUL, to_f(x), M_LOG2E)); }
static T *sigmoid_(T *x) { return un(N_RECIP, ews(N_ADD, exp_(un(N_NEG, to_f(x))), 1)); }
/* d sigmoid(x) / dx = s (1 - s), stated as such: through 1 / (1 + exp(-x)) the chain rule
 * multiplies 0 by an overflowed exp(-x) = inf where x < -88 (NaN); tanh and gelu inherit it. */
static void sigmoid_grad(T *g, T *const *in, T **grads, const int64_t *iarg) {
  (void)iarg;
  T *s = sigmoid_(kiln_detach(in[0]));
  grads[0] = kiln_mul(g, kiln_mul(s, ews(N_ADD, un(N_NEG, s), 1)));
}
static T *sigmoid_rule(T *x) {
  return kn_custom_grad(sigmoid_(kiln_detach(x)), 1, &x, sigmoid_grad, NULL);
}
static T *not_(T *x) { return ews(N_XOR, ews(N_CMPNE, x, 0), 1); } /* x == 0 */
static T *lt(T *a, T *b) { return ew(N_CMPLT, "lt", a, b); }

kiln_tensor *kiln_unary(kiln_unary_op op, kiln_tensor *x) {
  if (!x) return NULL;
  if ((unsigned)op >= KILN_NUNARY) {
    kn_err("unary: unknown op %d", op);
    return NULL;
  }
  int dt = x->node->dtype;
  bool fl = kiln_dtype_is_float(dt), uns = kn_dtype_is_unsigned(dt) || dt == KILN_BOOL;
  if (op == KILN_NEG && dt == KILN_BOOL) {
    kn_err("neg: not defined for bool (use not)");
    return NULL;
  }
  if ((op == KILN_RELU || op == KILN_SIGN || op == KILN_SQUARE) && dt == KILN_BOOL) {
    kn_err("%s: not defined for bool", unary_names[op]);
    return NULL;
  }
  kiln_scope_begin();
  T *r = NULL;
  bool half = dt == KILN_F16 || dt == KILN_BF16;
  if (half && op != KILN_NEG && op != KILN_NOT && op != KILN_ABS && op != KILN_RELU &&
      op != KILN_SIGN && op != KILN_SQUARE)
    return ret(kiln_cast(kiln_unary(op, kiln_cast(x, KILN_F32)), dt)); /* one rounding at the end */
  switch (op) {
  case KILN_NEG:
    r = un(N_NEG, x);
    break;
  case KILN_ABS:
    r = uns  ? x
        : fl ? ew(N_MAX, "abs", x, un(N_NEG, x))
             : where3(lt(x, like(x, 0)), un(N_NEG, x), x);
    break;
  case KILN_EXP:
    r = exp_(x);
    break;
  case KILN_EXP2:
    r = un(N_EXP2, to_f(x));
    break;
  case KILN_LOG:
    r = ews(N_MUL, un(N_LOG2, to_f(x)), M_LN2);
    break;
  case KILN_LOG2:
    r = un(N_LOG2, to_f(x));
    break;
  case KILN_SIN:
    r = un(N_SIN, to_f(x));
    break;
  case KILN_COS:
    r = un(N_SIN, ews(N_ADD, to_f(x), M_PI / 2));
    break;
  case KILN_SQRT:
    r = un(N_SQRT, to_f(x));
    break;
  case KILN_RSQRT:
    r = un(N_RECIP, un(N_SQRT, to_f(x)));
    break;
  case KILN_RECIP:
    r = un(N_RECIP, to_f(x));
    break;
  case KILN_RELU:
    r = ews(N_MAX, x, 0);
    break;
  case KILN_SIGMOID:
    r = sigmoid_rule(x);
    break;
  case KILN_TANH:
    r = ews(N_ADD, ews(N_MUL, sigmoid_rule(ews(N_MUL, to_f(x), 2)), 2), -1);
    break;
  case KILN_NOT:
    r = not_(x);
    break;
  case KILN_SIGN: {
    T *pos = kiln_cast(lt(like(x, 0), x), dt), *neg = kiln_cast(lt(x, like(x, 0)), dt);
    r = ew(N_ADD, "sign", pos, un(N_NEG, neg));
    if (fl) r = where3(ews(N_CMPNE, x, 0), r, x); /* keeps NaN and the sign of zero */
    break;
  }
  case KILN_SQUARE:
    r = ew(N_MUL, "square", x, x);
    break;
  default:
    break;
  }
  return ret(r);
}
kiln_tensor *kiln_neg(kiln_tensor *x) { return kiln_unary(KILN_NEG, x); }
kiln_tensor *kiln_exp(kiln_tensor *x) { return kiln_unary(KILN_EXP, x); }
kiln_tensor *kiln_log(kiln_tensor *x) { return kiln_unary(KILN_LOG, x); }
kiln_tensor *kiln_sqrt(kiln_tensor *x) { return kiln_unary(KILN_SQRT, x); }
kiln_tensor *kiln_relu(kiln_tensor *x) { return kiln_unary(KILN_RELU, x); }

/* ---- binary ----------------------------------------------------------------------------- */
static const char *const binary_names[KILN_NBINARY] = {
    "add", "sub", "mul", "div", "maximum", "minimum", "mod", "and", "or", "xor",
    "shl", "shr", "pow", "lt",  "le",      "gt",      "ge",  "eq",  "ne", "dot4"};

kiln_tensor *kiln_binary(kiln_binary_op op, kiln_tensor *a, kiln_tensor *b) {
  if (!a || !b) return NULL;
  if ((unsigned)op >= KILN_NBINARY) {
    kn_err("binary: unknown op %d", op);
    return NULL;
  }
  const char *name = binary_names[op];
  int dt = kiln_promote(a->node->dtype, b->node->dtype);
  bool fl = kiln_dtype_is_float(dt);
  if ((op == KILN_AND || op == KILN_OR || op == KILN_XOR) && fl) {
    kn_err("%s: needs integer or bool operands, got %s and %s", name,
           kiln_dtype_name(a->node->dtype), kiln_dtype_name(b->node->dtype));
    return NULL;
  }
  if ((op == KILN_SHL || op == KILN_SHR || op == KILN_MOD || op == KILN_DOT4) &&
      !kn_dtype_is_int(dt)) {
    kn_err("%s: needs integer operands, got %s and %s", name, kiln_dtype_name(a->node->dtype),
           kiln_dtype_name(b->node->dtype));
    return NULL;
  }
  if (dt == KILN_BOOL &&
      (op == KILN_ADD || op == KILN_SUB || op == KILN_MUL || op == KILN_DIV || op == KILN_POW)) {
    kn_err("%s: not defined for bool operands", name);
    return NULL;
  }
  int nd;
  int64_t shape[KILN_MAX_DIMS];
  if (!bshape(name, a->node, b->node, &nd, shape) || !same_device(name, a->node, b->node))
    return NULL;
  kiln_scope_begin();
  T *r = NULL;
  switch (op) {
  case KILN_ADD:
    r = ew(N_ADD, name, a, b);
    break;
  case KILN_SUB:
    r = ew(N_ADD, name, a, un(N_NEG, kiln_cast(b, dt)));
    break;
  case KILN_MUL:
    r = ew(N_MUL, name, a, b);
    break;
  case KILN_DIV:
    r = fl ? ew(N_MUL, name, a, un(N_RECIP, kiln_cast(b, dt))) : ew(N_IDIV, name, a, b);
    break;
  case KILN_MAXIMUM:
    r = ew(N_MAX, name, a, b);
    break;
  case KILN_MINIMUM:
    if (fl)
      r = un(N_NEG, ew(N_MAX, name, un(N_NEG, kiln_cast(a, dt)), un(N_NEG, kiln_cast(b, dt))));
    else {
      T *x = kiln_expand(kiln_cast(a, dt), nd, shape),
        *y = kiln_expand(kiln_cast(b, dt), nd, shape);
      r = where3(lt(x, y), x, y);
    }
    break;
  case KILN_MOD:
    r = ew(N_MOD, name, a, b);
    break;
  case KILN_AND:
    r = ew(N_AND, name, a, b);
    break;
  case KILN_OR:
    r = ew(N_OR, name, a, b);
    break;
  case KILN_XOR:
    r = ew(N_XOR, name, a, b);
    break;
  case KILN_SHL:
    r = ew(N_SHL, name, a, b);
    break;
  case KILN_SHR:
    r = ew(N_SHR, name, a, b);
    break;
  case KILN_POW: {
    T *x = fl ? a : kiln_cast(a, KILN_F32), *y = fl ? b : kiln_cast(b, KILN_F32);
    r = un(N_EXP2, ew(N_MUL, name, y,
                      un(N_LOG2, kiln_cast(x, kiln_promote(x->node->dtype, y->node->dtype)))));
    break;
  }
  case KILN_LT:
    r = lt(a, b);
    break;
  case KILN_GT:
    r = lt(b, a);
    break;
  case KILN_NE:
    r = ew(N_CMPNE, name, a, b);
    break;
  case KILN_EQ:
    r = ews(N_XOR, ew(N_CMPNE, name, a, b), 1);
    break;
  case KILN_LE:
    r = ew(N_OR, name, lt(a, b), ews(N_XOR, ew(N_CMPNE, name, a, b), 1));
    break;
  case KILN_GE:
    r = ew(N_OR, name, lt(b, a), ews(N_XOR, ew(N_CMPNE, name, a, b), 1));
    break;
  case KILN_DOT4: {
    kn_node *s[2];
    if (prep2(name, kiln_cast(a, KILN_U32), kiln_cast(b, KILN_U32), &s[0], &s[1])) {
      r = wrap(nd_alu(N_DOT4, KILN_I32, 2, s));
      kn_node_unref(s[0]), kn_node_unref(s[1]);
    }
    break;
  }
  default:
    break;
  }
  return ret(r);
}
kiln_tensor *kiln_add(kiln_tensor *a, kiln_tensor *b) { return kiln_binary(KILN_ADD, a, b); }
kiln_tensor *kiln_sub(kiln_tensor *a, kiln_tensor *b) { return kiln_binary(KILN_SUB, a, b); }
kiln_tensor *kiln_mul(kiln_tensor *a, kiln_tensor *b) { return kiln_binary(KILN_MUL, a, b); }
kiln_tensor *kiln_div(kiln_tensor *a, kiln_tensor *b) { return kiln_binary(KILN_DIV, a, b); }
kiln_tensor *kiln_binary_s(kiln_binary_op op, kiln_tensor *a, double v) {
  if (!a) return NULL;
  kiln_scope_begin();
  return ret(kiln_binary(op, a, kiln_scalar(a->node->dtype, v)));
}

kiln_tensor *kiln_where(kiln_tensor *c, kiln_tensor *a, kiln_tensor *b) {
  if (!c || !a || !b) return NULL;
  int nd, nd2;
  int64_t s1[KILN_MAX_DIMS], s2[KILN_MAX_DIMS];
  if (!bshape("where", a->node, b->node, &nd, s1) || !same_device("where", a->node, c->node) ||
      !same_device("where", a->node, b->node))
    return NULL;
  kn_node tmp = {.ndim = nd};
  memcpy(tmp.shape, s1, sizeof s1);
  if (!bshape("where", c->node, &tmp, &nd2, s2)) return NULL;
  int dt = kiln_promote(a->node->dtype, b->node->dtype);
  kiln_scope_begin();
  T *cc = c->node->dtype == KILN_BOOL ? c : ews(N_CMPNE, c, 0);
  T *x = kiln_expand(kiln_cast(a, dt), nd2, s2), *y = kiln_expand(kiln_cast(b, dt), nd2, s2);
  return ret(where3(kiln_expand(cc, nd2, s2), x, y));
}

/* ---- movement --------------------------------------------------------------------------- */
kiln_tensor *kiln_reshape(kiln_tensor *x, int ndim, const int64_t *shape) {
  if (!x) return NULL;
  if (ndim < 0 || ndim > KILN_MAX_DIMS || (ndim && !shape)) {
    kn_err("reshape: ndim %d out of range", ndim);
    return NULL;
  }
  int64_t s[KILN_MAX_DIMS], known = 1, n = kn_numel(x->node->ndim, x->node->shape);
  int infer = -1;
  for (int i = 0; i < ndim; i++) {
    s[i] = shape[i];
    if (shape[i] == -1 && infer < 0)
      infer = i;
    else if (shape[i] < 0) {
      kn_err("reshape: bad dim %lld in %s", (long long)shape[i],
             kn_shape_str((char[200]){0}, ndim, shape));
      return NULL;
    } else if (shape[i] && known > INT64_MAX / shape[i]) {
      kn_err("reshape: shape too large");
      return NULL;
    } else
      known *= shape[i];
  }
  if (infer >= 0) s[infer] = known ? n / known : 0;
  if (kn_numel(ndim, s) != n || (infer >= 0 && known == 0)) {
    kn_err("reshape: cannot reshape %s (%lld elements) to %s", SH(x->node), (long long)n,
           kn_shape_str((char[200]){0}, ndim, shape));
    return NULL;
  }
  return wrap(nd_reshape(x->node, ndim, s));
}
kiln_tensor *kiln_permute(kiln_tensor *x, const int *perm) {
  if (!x) return NULL;
  int nd = x->node->ndim, seen = 0;
  int64_t p[KILN_MAX_DIMS];
  for (int i = 0; i < nd; i++) {
    int a = perm ? (perm[i] < 0 ? perm[i] + nd : perm[i]) : -1;
    if (a < 0 || a >= nd || (seen >> a & 1)) {
      kn_err("permute: bad permutation for shape %s", SH(x->node));
      return NULL;
    }
    seen |= 1 << a;
    p[i] = a;
  }
  return wrap(nd_permute(x->node, p));
}
kiln_tensor *kiln_transpose(kiln_tensor *x, int a, int b) {
  if (!x) return NULL;
  int nd = x->node->ndim, perm[KILN_MAX_DIMS];
  int ia = norm_axis(a, nd, "transpose"), ib = ia < 0 ? -1 : norm_axis(b, nd, "transpose");
  if (ib < 0) return NULL;
  for (int i = 0; i < nd; i++)
    perm[i] = i;
  perm[ia] = ib, perm[ib] = ia;
  return kiln_permute(x, perm);
}
kiln_tensor *kiln_expand(kiln_tensor *x, int ndim, const int64_t *shape) {
  if (!x) return NULL;
  kn_node *a = x->node;
  if (ndim < a->ndim || ndim > KILN_MAX_DIMS || !check_shape("expand", ndim, shape)) {
    if (ndim < a->ndim || ndim > KILN_MAX_DIMS)
      kn_err("expand: cannot expand %s to %d dims", SH(a), ndim);
    return NULL;
  }
  for (int i = 0; i < a->ndim; i++) {
    int64_t d = a->shape[i], t = shape[i + ndim - a->ndim];
    if (d != t && d != 1) {
      kn_err("expand: cannot expand %s to %s", SH(a), kn_shape_str((char[200]){0}, ndim, shape));
      return NULL;
    }
  }
  return wrap(bcast_to(a, ndim, shape));
}
kiln_tensor *kiln_pad(kiln_tensor *x, const int64_t *before, const int64_t *after, double value) {
  if (!x) return NULL;
  int nd = x->node->ndim;
  int64_t bf[KILN_MAX_DIMS] = {0}, af[KILN_MAX_DIMS] = {0};
  for (int i = 0; i < nd; i++) {
    bf[i] = before ? before[i] : 0, af[i] = after ? after[i] : 0;
    if (bf[i] < 0 || af[i] < 0 || bf[i] > (INT64_MAX >> 8) || af[i] > (INT64_MAX >> 8)) {
      kn_err("pad: bad padding (%lld,%lld) on axis %d of %s", (long long)bf[i], (long long)af[i], i,
             SH(x->node));
      return NULL;
    }
  }
  kn_node *p = nd_pad(x->node, bf, af);
  if (value == 0) return wrap(p);
  kiln_scope_begin();
  T *pt = wrap(p);
  T *ones = wrap(nd_const(KILN_BOOL, x->node->device, nd, x->node->shape, 1));
  T *mask = wrap(nd_pad(ones->node, bf, af));
  return ret(where3(mask, pt, like(pt, value)));
}
kiln_tensor *kiln_shrink(kiln_tensor *x, const int64_t *start, const int64_t *end) {
  if (!x) return NULL;
  for (int i = 0; i < x->node->ndim; i++)
    if (start[i] < 0 || end[i] < start[i] || end[i] > x->node->shape[i]) {
      kn_err("shrink: range [%lld,%lld) out of bounds for axis %d of %s", (long long)start[i],
             (long long)end[i], i, SH(x->node));
      return NULL;
    }
  return wrap(nd_shrink(x->node, start, end));
}
kiln_tensor *kiln_flip(kiln_tensor *x, int naxes, const int *axes) {
  if (!x) return NULL;
  int64_t arg[KILN_MAX_DIMS] = {0};
  for (int i = 0; i < naxes; i++) {
    int a = norm_axis(axes[i], x->node->ndim, "flip");
    if (a < 0) return NULL;
    arg[a] ^= 1;
  }
  return wrap(nd_move(N_FLIP, x->node, x->node->ndim, x->node->shape, arg, x->node->ndim));
}
kiln_tensor *kiln_slice(kiln_tensor *x, int axis, int64_t start, int64_t stop, int64_t step) {
  if (!x) return NULL;
  int a = norm_axis(axis, x->node->ndim, "slice");
  if (a < 0) return NULL;
  if (step == 0) {
    kn_err("slice: step must not be 0");
    return NULL;
  }
  int64_t n = x->node->shape[a];
  /* Python's normalization of start/stop */
  if (start < 0) start += n;
  if (stop < 0) stop += n;
  if (step > 0) {
    start = start < 0 ? 0 : start > n ? n : start;
    stop = stop < start ? start : stop > n ? n : stop;
  } else {
    start = start < -1 ? -1 : start > n - 1 ? n - 1 : start;
    stop = stop < -1 ? -1 : stop > start ? start : stop;
  }
  kiln_scope_begin();
  int nd = x->node->ndim;
  int64_t s[KILN_MAX_DIMS] = {0}, e[KILN_MAX_DIMS];
  memcpy(e, x->node->shape, sizeof e);
  T *r;
  if (step > 0)
    s[a] = start, e[a] = stop;
  else
    s[a] = stop + 1, e[a] = start + 1;
  r = kiln_shrink(x, s, e);
  if (step < 0) r = kiln_flip(r, 1, &a);
  int64_t st = step < 0 ? -step : step, len = e[a] - s[a], cnt = (len + st - 1) / st;
  if (st > 1) { /* pad to a multiple of the step, split the axis, keep index 0 of each group */
    int64_t bf[KILN_MAX_DIMS] = {0}, af[KILN_MAX_DIMS] = {0}, sh[KILN_MAX_DIMS + 1];
    af[a] = cnt * st - len;
    r = kiln_pad(r, bf, af, 0);
    for (int i = 0, j = 0; i < nd; i++) {
      if (i == a)
        sh[j++] = cnt, sh[j++] = st;
      else
        sh[j++] = r->node->shape[i];
    }
    if (nd + 1 > KILN_MAX_DIMS) {
      kn_err("slice: a stepped slice needs one spare dim (%d dims given)", nd);
      kiln_scope_end();
      return NULL;
    }
    r = kiln_reshape(r, nd + 1, sh);
    int64_t s2[KILN_MAX_DIMS] = {0}, e2[KILN_MAX_DIMS];
    memcpy(e2, sh, sizeof(int64_t) * (nd + 1));
    e2[a + 1] = 1;
    r = kiln_shrink(r, s2, e2);
    sh[a + 1] = 1;
    memmove(sh + a + 1, sh + a + 2, sizeof(int64_t) * (nd - a - 1));
    r = kiln_reshape(r, nd, sh);
  }
  return ret(r);
}
kiln_tensor *kiln_squeeze(kiln_tensor *x, int axis) {
  if (!x) return NULL;
  int a = norm_axis(axis, x->node->ndim, "squeeze");
  if (a < 0) return NULL;
  if (x->node->shape[a] != 1) {
    kn_err("squeeze: axis %d of %s has size %lld, not 1", axis, SH(x->node),
           (long long)x->node->shape[a]);
    return NULL;
  }
  int64_t s[KILN_MAX_DIMS];
  for (int i = 0, j = 0; i < x->node->ndim; i++)
    if (i != a) s[j++] = x->node->shape[i];
  return wrap(nd_reshape(x->node, x->node->ndim - 1, s));
}
kiln_tensor *kiln_unsqueeze(kiln_tensor *x, int axis) {
  if (!x) return NULL;
  int nd = x->node->ndim;
  int a = norm_axis(axis, nd + 1, "unsqueeze");
  if (a < 0) return NULL;
  if (nd + 1 > KILN_MAX_DIMS) {
    kn_err("unsqueeze: %s already has %d dims", SH(x->node), KILN_MAX_DIMS);
    return NULL;
  }
  int64_t s[KILN_MAX_DIMS];
  for (int i = 0, j = 0; i <= nd; i++)
    s[i] = i == a ? 1 : x->node->shape[j++];
  return wrap(nd_reshape(x->node, nd + 1, s));
}
kiln_tensor *kiln_cat(int n, kiln_tensor *const *xs, int axis) {
  if (n <= 0 || !xs) {
    kn_err("cat: needs at least one tensor");
    return NULL;
  }
  for (int i = 0; i < n; i++)
    if (!xs[i]) return NULL;
  kn_node *f = xs[0]->node;
  int a = norm_axis(axis, f->ndim, "cat");
  if (a < 0) return NULL;
  int dt = f->dtype;
  int64_t total = 0;
  for (int i = 0; i < n; i++) {
    kn_node *x = xs[i]->node;
    bool ok = x->ndim == f->ndim && same_device("cat", f, x);
    for (int d = 0; ok && d < f->ndim; d++)
      ok = d == a || x->shape[d] == f->shape[d];
    if (!ok) {
      kn_err("cat: shapes %s and %s differ outside axis %d", SH(f), SH(x), axis);
      return NULL;
    }
    dt = kiln_promote(dt, x->dtype);
    total += x->shape[a];
  }
  kiln_scope_begin();
  T *r = NULL;
  int64_t off = 0;
  for (int i = 0; i < n; i++) { /* each piece padded to the full length; the pads are 0 */
    int64_t bf[KILN_MAX_DIMS] = {0}, af[KILN_MAX_DIMS] = {0};
    bf[a] = off, af[a] = total - off - xs[i]->node->shape[a];
    off += xs[i]->node->shape[a];
    T *p = kiln_pad(kiln_cast(xs[i], dt), bf, af, 0);
    r = !r ? p : ew(dt == KILN_BOOL ? N_OR : N_ADD, "cat", r, p);
  }
  return ret(r);
}
kiln_tensor *kiln_stack(int n, kiln_tensor *const *xs, int axis) {
  if (n <= 0 || !xs) {
    kn_err("stack: needs at least one tensor");
    return NULL;
  }
  if (!xs[0] || norm_axis_of(axis, xs[0]->node->ndim + 1, NULL, "stack") < 0) return NULL;
  kiln_scope_begin();
  T *tmp[256];
  if (n > 256) {
    kiln_scope_end();
    kn_err("stack: at most 256 tensors");
    return NULL;
  }
  for (int i = 0; i < n; i++) {
    if (xs[i] && (xs[i]->node->ndim != xs[0]->node->ndim ||
                  memcmp(xs[i]->node->shape, xs[0]->node->shape, 8 * xs[0]->node->ndim))) {
      kn_err("stack: shapes %s and %s differ", SH(xs[0]->node), SH(xs[i]->node));
      kiln_scope_end();
      return NULL;
    }
    tmp[i] = kiln_unsqueeze(xs[i], axis);
  }
  return ret(kiln_cat(n, tmp, axis));
}
kiln_tensor *kiln_contiguous(kiln_tensor *x) {
  if (!x) return NULL;
  if (kn_is_realized(x->node)) return wrap(ref(x->node));
  return wrap(kn_node_make(N_CONTIGUOUS, x->node->dtype, x->node->device, x->node->ndim,
                           x->node->shape, 1, &x->node, NULL, 0, 0));
}
kiln_tensor *kiln_take(kiln_tensor *table, kiln_tensor *ids) {
  if (!table || !ids) return NULL;
  kn_node *t = table->node, *i = ids->node;
  if (t->ndim < 1 || kiln_dtype_is_float(i->dtype) || i->dtype == KILN_BOOL) {
    kn_err("take: table must have a dim and ids must be integers (got %s %s and %s ids)",
           kiln_dtype_name(t->dtype), SH(t), kiln_dtype_name(i->dtype));
    return NULL;
  }
  int nd = i->ndim + t->ndim - 1;
  if (nd > KILN_MAX_DIMS) {
    kn_err("take: %s ids of a %s table make more than %d dims", SH(i), SH(t), KILN_MAX_DIMS);
    return NULL;
  }
  if (!same_device("take", t, i)) return NULL;
  int64_t shape[KILN_MAX_DIMS];
  memcpy(shape, i->shape, sizeof(int64_t) * i->ndim);
  memcpy(shape + i->ndim, t->shape + 1, sizeof(int64_t) * (t->ndim - 1));
  return wrap(
      kn_node_make(N_GATHER, t->dtype, t->device, nd, shape, 2, (kn_node *[]){t, i}, NULL, 0, 0));
}
/* ---- reductions ------------------------------------------------------------------------- */
static bool axes_mask(const char *op, int ndim, const int64_t *shape, int naxes, const int *axes,
                      uint32_t *mask) {
  *mask = 0;
  if (naxes == 0) {
    *mask = (1u << ndim) - 1;
    return true;
  }
  if (naxes < 0 || !axes) {
    kn_err("%s: bad axes", op);
    return false;
  }
  for (int i = 0; i < naxes; i++) {
    int a = norm_axis_of(axes[i], ndim, shape, op);
    if (a < 0) return false;
    *mask |= 1u << a;
  }
  return true;
}
static T *drop_axes(T *r, uint32_t mask, bool keepdim) {
  if (keepdim || !r) return r;
  int64_t s[KILN_MAX_DIMS];
  int n = 0;
  for (int i = 0; i < r->node->ndim; i++)
    if (!(mask >> i & 1)) s[n++] = r->node->shape[i];
  return wrap(nd_reshape(r->node, n, s));
}
static T *prim_reduce(int rop, T *x, uint32_t mask) { return wrap(nd_reduce(rop, x->node, mask)); }
static double all_ones(int dt) { return ldexp(1, kn_dtype_bits(dt)) - 1; }
static const char *const reduce_names[KILN_NREDUCE] = {"sum", "max", "min", "mean", "prod"};

kiln_tensor *kiln_reduce(kiln_reduce_op op, kiln_tensor *x, int naxes, const int *axes,
                         bool keepdim) {
  if (!x) return NULL;
  if ((unsigned)op >= KILN_NREDUCE) {
    kn_err("reduce: unknown op %d", op);
    return NULL;
  }
  uint32_t mask;
  if (!axes_mask(reduce_names[op], x->node->ndim, x->node->shape, naxes, axes, &mask)) return NULL;
  int dt = x->node->dtype;
  bool is_int = !kiln_dtype_is_float(dt), uns = kn_dtype_is_unsigned(dt);
  kiln_scope_begin();
  T *r = NULL;
  switch (op) {
  case KILN_SUM:
  case KILN_PROD: {
    T *v = is_int ? kiln_cast(x, uns ? KILN_U64 : KILN_I64) : x;
    r = prim_reduce(op == KILN_SUM ? N_ADD : N_MUL, v, mask);
    break;
  }
  case KILN_MAX:
    r = prim_reduce(N_MAX, x, mask);
    break;
  case KILN_MIN:
    if (dt == KILN_BOOL)
      r = not_(prim_reduce(N_MAX, not_(x), mask));
    else if (is_int) /* ~x reverses the order of every integer type: -x would not (-INT_MIN) */
      r = ews(N_XOR, prim_reduce(N_MAX, ews(N_XOR, x, all_ones(dt)), mask), all_ones(dt));
    else
      r = un(N_NEG, prim_reduce(N_MAX, un(N_NEG, x), mask));
    break;
  case KILN_MEAN: {
    int64_t cnt = 1;
    for (int i = 0; i < x->node->ndim; i++)
      if (mask >> i & 1) cnt *= x->node->shape[i];
    T *v = is_int ? kiln_cast(x, KILN_F32) : x;
    r = ews(N_MUL, prim_reduce(N_ADD, v, mask), cnt ? 1.0 / cnt : NAN);
    break;
  }
  default:
    break;
  }
  if (op == KILN_MIN && dt != KILN_BOOL && is_int) r = kiln_cast(r, dt);
  return ret(drop_axes(r, mask, keepdim));
}
kiln_tensor *kiln_sum(kiln_tensor *x, int naxes, const int *axes, bool keepdim) {
  return kiln_reduce(KILN_SUM, x, naxes, axes, keepdim);
}
kiln_tensor *kiln_max(kiln_tensor *x, int naxes, const int *axes, bool keepdim) {
  return kiln_reduce(KILN_MAX, x, naxes, axes, keepdim);
}
kiln_tensor *kiln_mean(kiln_tensor *x, int naxes, const int *axes, bool keepdim) {
  return kiln_reduce(KILN_MEAN, x, naxes, axes, keepdim);
}

/* First index of the max: among positions equal to the max (or NaN), the largest (n - i). */
static T *argext(T *x, int axis, bool keepdim, bool is_min) {
  if (!x) return NULL;
  int a = norm_axis(axis, x->node->ndim, is_min ? "argmin" : "argmax");
  if (a < 0) return NULL;
  int nd = x->node->ndim;
  int64_t n = x->node->shape[a];
  if (n == 0) {
    kn_err("%s: axis %d of %s is empty", is_min ? "argmin" : "argmax", axis, SH(x->node));
    return NULL;
  }
  kiln_scope_begin();
  T *v = x;
  if (is_min) /* an order-reversing map: ~x for integers (-INT_MIN would overflow) */
    v = x->node->dtype == KILN_BOOL           ? not_(x)
        : kiln_dtype_is_float(x->node->dtype) ? un(N_NEG, x)
                                              : ews(N_XOR, x, all_ones(x->node->dtype));
  T *m = kiln_max(v, 1, &a, true);
  T *hit = ew(N_CMPNE, "argmax", v, m);
  hit = ews(N_XOR, hit, 1);
  if (kiln_dtype_is_float(x->node->dtype))
    hit = ew(N_OR, "argmax", hit, ew(N_CMPNE, "argmax", v, v));
  int64_t s[KILN_MAX_DIMS];
  for (int i = 0; i < nd; i++)
    s[i] = i == a ? n : 1;
  T *rev = kiln_reshape(kiln_arange((double)n, 0, -1, KILN_I64), nd, s); /* n, n-1, ..., 1 */
  rev = kiln_expand(rev, nd, x->node->shape);
  T *sc = where3(hit, rev, like(rev, 0));
  T *r = ew(N_ADD, "argmax", un(N_NEG, prim_reduce(N_MAX, sc, 1u << a)), like(m, 0));
  r = ews(N_ADD, kiln_cast(r, KILN_I64), (double)n);
  return ret(drop_axes(r, 1u << a, keepdim));
}
kiln_tensor *kiln_argmax(kiln_tensor *x, int axis, bool keepdim) {
  return argext(x, axis, keepdim, false);
}
kiln_tensor *kiln_argmin(kiln_tensor *x, int axis, bool keepdim) {
  return argext(x, axis, keepdim, true);
}

kiln_tensor *kiln_softmax(kiln_tensor *x, int axis) {
  if (!x || norm_axis_of(axis, x->node->ndim, x->node->shape, "softmax") < 0) return NULL;
  kiln_scope_begin();
  T *f = to_f(x);
  T *e = kiln_exp(kiln_sub(f, kiln_max(f, 1, &axis, true)));
  return ret(kiln_div(e, kiln_sum(e, 1, &axis, true)));
}
kiln_tensor *kiln_log_softmax(kiln_tensor *x, int axis) {
  if (!x || norm_axis_of(axis, x->node->ndim, x->node->shape, "log_softmax") < 0) return NULL;
  kiln_scope_begin();
  T *f = to_f(x);
  T *s = kiln_sub(f, kiln_max(f, 1, &axis, true));
  return ret(kiln_sub(s, kiln_log(kiln_sum(kiln_exp(s), 1, &axis, true))));
}

/* ---- matmul ----------------------------------------------------------------------------- */
kiln_tensor *kiln_matmul(kiln_tensor *a, kiln_tensor *b) {
  if (!a || !b) return NULL;
  int na = a->node->ndim, nb = b->node->ndim;
  if (na == 0 || nb == 0) {
    kn_err("matmul: operands must have at least 1 dim, got %s @ %s", SH(a->node), SH(b->node));
    return NULL;
  }
  int64_t ka = a->node->shape[na - 1], kb = b->node->shape[nb >= 2 ? nb - 2 : 0];
  if (ka != kb) {
    kn_err("matmul: inner dims differ: %s @ %s", SH(a->node), SH(b->node));
    return NULL;
  }
  kiln_scope_begin();
  T *x = na == 1 ? kiln_unsqueeze(a, 0) : a, *y = nb == 1 ? kiln_unsqueeze(b, 1) : b;
  /* x: (..., n, k) -> (..., n, 1, k); y: (..., k, m) -> (..., 1, m, k) */
  T *xe = kiln_unsqueeze(x, -2), *ye = kiln_unsqueeze(kiln_transpose(y, -1, -2), -3);
  T *p = kiln_mul(xe, ye);
  if (!p) {
    kn_err("matmul: batch dims do not broadcast: %s @ %s", SH(a->node), SH(b->node));
    kiln_scope_end();
    return NULL;
  }
  int last = -1;
  T *r = kiln_sum(p, 1, &last, false);
  if (!kiln_dtype_is_float(r->node->dtype))
    r = kiln_cast(r, kiln_promote(a->node->dtype, b->node->dtype));
  if (na == 1) r = kiln_squeeze(r, -2);
  if (nb == 1) r = kiln_squeeze(r, -1);
  return ret(r);
}

/* ---- running ---------------------------------------------------------------------------- */
int kiln_realize_many(int n, kiln_tensor *const *ts) {
  if (n < 0 || (n && !ts)) {
    kn_err("realize: bad tensor count %d", n);
    return -1;
  }
  kn_node **roots = kn_xmalloc(sizeof(kn_node *) * (n + 1));
  for (int i = 0; i < n; i++) {
    if (!ts[i]) {
      kn_err("realize: tensor %d is NULL (an earlier op failed)", i);
      free(roots);
      return -1;
    }
    roots[i] = ts[i]->node;
  }
  kn_schedule s;
  int rc = kn_schedule_build(n, roots, &s);
  free(roots);
  if (rc < 0) return -1;
  rc = kn_schedule_run(&s);
  kn_schedule_free(&s);
  return rc;
}
int kiln_realize(kiln_tensor *t) { return kiln_realize_many(1, &t); }

int kiln_to_host(kiln_tensor *t, void *dst, size_t nbytes) {
  if (!t) {
    kn_err("to_host: tensor is NULL (an earlier op failed)");
    return -1;
  }
  if (!dst && nbytes) {
    kn_err("to_host: destination is NULL");
    return -1;
  }
  size_t want = (size_t)kn_numel(t->node->ndim, t->node->shape) * kiln_dtype_size(t->node->dtype);
  if (nbytes != want) {
    kn_err("to_host: %s %s needs %zu bytes, got %zu", kiln_dtype_name(t->node->dtype), SH(t->node),
           want, nbytes);
    return -1;
  }
  if (kiln_realize(t) < 0) return -1;
  kn_buffer_read(t->node->buf, dst, 0, want);
  return 0;
}
double kiln_item(kiln_tensor *t) {
  if (!t) {
    kn_err("item: tensor is NULL (an earlier op failed)");
    return NAN;
  }
  if (kn_numel(t->node->ndim, t->node->shape) < 1) {
    kn_err("item: tensor %s is empty", SH(t->node));
    return NAN;
  }
  if (kiln_realize(t) < 0) return NAN;
  unsigned char tmp[8];
  kn_buffer_read(t->node->buf, tmp, 0, kiln_dtype_size(t->node->dtype));
  return load_elem(tmp, t->node->dtype, 0);
}
