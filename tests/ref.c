/* ref.c — plain double-precision reference implementations of kiln's ops (see ref.h).
 * Written for obviousness, not speed: every op walks the row-major logical index. */
#include "ref.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ----------------------------------------------------------------------------------- */
typedef struct arena_block {
  struct arena_block *next;
  max_align_t align[];
} arena_block;
static arena_block *g_arena;

void *ref_alloc(size_t nbytes) {
  arena_block *b = calloc(1, sizeof(arena_block) + nbytes + 1);
  if (!b) {
    fprintf(stderr, "ref_alloc: out of memory (%zu bytes)\n", nbytes);
    abort();
  }
  b->next = g_arena;
  g_arena = b;
  return b->align;
}

void ref_free_all(void) {
  while (g_arena) {
    arena_block *n = g_arena->next;
    free(g_arena);
    g_arena = n;
  }
}

/* ---- construction and access ------------------------------------------------------------------
 */
static int64_t numel_of(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int d = 0; d < ndim; d++)
    n *= shape[d];
  return n;
}

static ref_t *view_like(const ref_t *x) {
  ref_t *r = ref_alloc(sizeof *r);
  *r = *x;
  return r;
}

ref_t *ref_new(int ndim, const int64_t *shape) {
  ref_t *r = ref_alloc(sizeof *r);
  r->ndim = ndim;
  int64_t st = 1;
  for (int d = ndim - 1; d >= 0; d--) {
    r->shape[d] = shape[d];
    r->strides[d] = st;
    st *= shape[d];
  }
  int64_t n = numel_of(ndim, shape);
  r->data = ref_alloc((size_t)(n > 0 ? n : 1) * sizeof(double));
  return r;
}

ref_t *ref_from(int ndim, const int64_t *shape, const double *values) {
  ref_t *r = ref_new(ndim, shape);
  memcpy(r->data, values, (size_t)numel_of(ndim, shape) * sizeof(double));
  return r;
}

ref_t *ref_scalar(double v) {
  ref_t *r = ref_new(0, NULL);
  r->data[0] = v;
  return r;
}

int64_t ref_numel(const ref_t *r) { return numel_of(r->ndim, r->shape); }

static int64_t pos_of(const ref_t *r, int64_t i) {
  int64_t p = r->offset;
  for (int d = r->ndim - 1; d >= 0; d--) {
    int64_t n = r->shape[d];
    p += (i % n) * r->strides[d];
    i /= n;
  }
  return p;
}

double ref_get(const ref_t *r, int64_t i) { return r->data[pos_of(r, i)]; }
void ref_set(ref_t *r, int64_t i, double v) { r->data[pos_of(r, i)] = v; }

ref_t *ref_contig(const ref_t *x) {
  ref_t *r = ref_new(x->ndim, x->shape);
  int64_t n = ref_numel(x);
  for (int64_t i = 0; i < n; i++)
    r->data[i] = ref_get(x, i);
  return r;
}

bool ref_same_shape(const ref_t *a, int ndim, const int64_t *shape) {
  if (a->ndim != ndim) return false;
  for (int d = 0; d < ndim; d++)
    if (a->shape[d] != shape[d]) return false;
  return true;
}

char *ref_shape_str(int ndim, const int64_t *shape, char *buf, size_t n) {
  size_t k = 0;
  k += (size_t)snprintf(buf + k, n - k, "(");
  for (int d = 0; d < ndim && k < n; d++)
    k += (size_t)snprintf(buf + k, n - k, "%s%lld", d ? "," : "", (long long)shape[d]);
  if (k < n) snprintf(buf + k, n - k, ")");
  return buf;
}

/* Splits a row-major index into per-dimension indices. */
static void unravel(int64_t i, int ndim, const int64_t *shape, int64_t *idx) {
  for (int d = ndim - 1; d >= 0; d--) {
    idx[d] = shape[d] ? i % shape[d] : 0;
    i = shape[d] ? i / shape[d] : 0;
  }
}

/* Element at per-dimension index idx of the output, read from x broadcast to that output
 * (x aligned to the right of an out_ndim-d index). */
static double get_bcast(const ref_t *x, int out_ndim, const int64_t *idx) {
  int64_t p = x->offset;
  int lead = out_ndim - x->ndim;
  for (int d = 0; d < x->ndim; d++) {
    int64_t k = x->shape[d] == 1 ? 0 : idx[lead + d];
    p += k * x->strides[d];
  }
  return x->data[p];
}

/* ---- elementwise ------------------------------------------------------------------------------
 */
int ref_broadcast_shape(int na, const int64_t *sa, int nb, const int64_t *sb, int64_t *out) {
  int n = na > nb ? na : nb;
  for (int d = 0; d < n; d++) {
    int da = d - (n - na), db = d - (n - nb);
    int64_t x = da >= 0 ? sa[da] : 1, y = db >= 0 ? sb[db] : 1;
    if (x != y && x != 1 && y != 1) return -1;
    out[d] = x == 1 ? y : x;
  }
  return n;
}

ref_t *ref_map(const ref_t *x, ref_fn1 f) {
  ref_t *r = ref_new(x->ndim, x->shape);
  int64_t n = ref_numel(x);
  for (int64_t i = 0; i < n; i++)
    r->data[i] = f(ref_get(x, i));
  return r;
}

ref_t *ref_map2(const ref_t *a, const ref_t *b, ref_fn2 f) {
  int64_t shape[REF_MAX_DIMS], idx[REF_MAX_DIMS];
  int nd = ref_broadcast_shape(a->ndim, a->shape, b->ndim, b->shape, shape);
  if (nd < 0) return NULL;
  ref_t *r = ref_new(nd, shape);
  int64_t n = ref_numel(r);
  for (int64_t i = 0; i < n; i++) {
    unravel(i, nd, shape, idx);
    r->data[i] = f(get_bcast(a, nd, idx), get_bcast(b, nd, idx));
  }
  return r;
}

ref_t *ref_where(const ref_t *c, const ref_t *a, const ref_t *b) {
  int64_t s1[REF_MAX_DIMS], shape[REF_MAX_DIMS], idx[REF_MAX_DIMS];
  int n1 = ref_broadcast_shape(c->ndim, c->shape, a->ndim, a->shape, s1);
  if (n1 < 0) return NULL;
  int nd = ref_broadcast_shape(n1, s1, b->ndim, b->shape, shape);
  if (nd < 0) return NULL;
  ref_t *r = ref_new(nd, shape);
  int64_t n = ref_numel(r);
  for (int64_t i = 0; i < n; i++) {
    unravel(i, nd, shape, idx);
    r->data[i] = get_bcast(c, nd, idx) != 0 ? get_bcast(a, nd, idx) : get_bcast(b, nd, idx);
  }
  return r;
}

/* ---- reductions --------------------------------------------------------------------------------
 */
ref_t *ref_reduce(const ref_t *x, ref_reduce_op op, int naxes, const int *axes, bool keepdim) {
  bool red[REF_MAX_DIMS] = {0};
  if (naxes == 0)
    for (int d = 0; d < x->ndim; d++)
      red[d] = true;
  for (int k = 0; k < naxes; k++)
    red[axes[k] < 0 ? axes[k] + x->ndim : axes[k]] = true;

  int64_t oshape[REF_MAX_DIMS], kshape[REF_MAX_DIMS];
  int ond = 0;
  for (int d = 0; d < x->ndim; d++) {
    kshape[d] = red[d] ? 1 : x->shape[d];
    if (!red[d]) oshape[ond++] = x->shape[d];
  }
  ref_t *r = ref_new(x->ndim, kshape); /* keepdim shape while accumulating */
  int64_t on = ref_numel(r), n = ref_numel(x), idx[REF_MAX_DIMS];
  double *cnt = ref_alloc((size_t)(on > 0 ? on : 1) * sizeof(double));
  double *best = ref_alloc((size_t)(on > 0 ? on : 1) * sizeof(double));
  double init = op == REF_PROD ? 1 : op == REF_MAX ? -INFINITY : op == REF_MIN ? INFINITY : 0;
  for (int64_t o = 0; o < on; o++)
    r->data[o] = init;

  for (int64_t i = 0; i < n; i++) {
    unravel(i, x->ndim, x->shape, idx);
    int64_t o = 0, ridx = 0;
    for (int d = 0; d < x->ndim; d++) {
      o = o * kshape[d] + (red[d] ? 0 : idx[d]);
      if (red[d]) ridx = idx[d]; /* arg ops reduce exactly one axis */
    }
    double v = ref_get(x, i), *acc = &r->data[o];
    switch (op) {
    case REF_SUM:
    case REF_MEAN:
      *acc += v;
      break;
    case REF_PROD:
      *acc *= v;
      break;
    case REF_MAX:
      *acc = (isnan(v) || isnan(*acc)) ? NAN : (v > *acc ? v : *acc);
      break;
    case REF_MIN:
      *acc = (isnan(v) || isnan(*acc)) ? NAN : (v < *acc ? v : *acc);
      break;
    case REF_ARGMAX:
    case REF_ARGMIN:
      if (cnt[o] == 0 || (op == REF_ARGMAX ? v > best[o] : v < best[o])) {
        best[o] = v;
        *acc = (double)ridx;
      }
      break;
    }
    cnt[o] += 1;
  }
  if (op == REF_MEAN)
    for (int64_t o = 0; o < on; o++)
      r->data[o] = r->data[o] / cnt[o];
  if (!keepdim) r = ref_reshape(r, ond, oshape);
  return r;
}

static ref_t *softmax_impl(const ref_t *x, int axis, bool log_) {
  if (axis < 0) axis += x->ndim;
  ref_t *m = ref_reduce(x, REF_MAX, 1, &axis, true);
  ref_t *r = ref_new(x->ndim, x->shape);
  int64_t n = ref_numel(x), idx[REF_MAX_DIMS];
  ref_t *s = ref_new(m->ndim, m->shape);
  for (int pass = 0; pass < 2; pass++) {
    for (int64_t i = 0; i < n; i++) {
      unravel(i, x->ndim, x->shape, idx);
      double mv = get_bcast(m, x->ndim, idx), e = exp(ref_get(x, i) - mv);
      int64_t o = 0;
      for (int d = 0; d < x->ndim; d++)
        o = o * m->shape[d] + (d == axis ? 0 : idx[d]);
      if (pass == 0)
        s->data[o] += e;
      else
        r->data[i] = log_ ? ref_get(x, i) - mv - log(s->data[o]) : e / s->data[o];
    }
  }
  return r;
}

ref_t *ref_softmax(const ref_t *x, int axis) { return softmax_impl(x, axis, false); }
ref_t *ref_log_softmax(const ref_t *x, int axis) { return softmax_impl(x, axis, true); }

/* ---- movement ----------------------------------------------------------------------------------
 */
ref_t *ref_reshape(const ref_t *x, int ndim, const int64_t *shape) {
  int64_t s[REF_MAX_DIMS], known = 1;
  int infer = -1;
  for (int d = 0; d < ndim; d++) {
    s[d] = shape[d];
    if (s[d] == -1)
      infer = d;
    else
      known *= s[d];
  }
  if (infer >= 0) s[infer] = known ? ref_numel(x) / known : 0;
  ref_t *c = ref_contig(x);
  ref_t *r = ref_new(ndim, s);
  memcpy(r->data, c->data, (size_t)ref_numel(x) * sizeof(double));
  return r;
}

ref_t *ref_permute(const ref_t *x, const int *perm) {
  ref_t *r = view_like(x);
  for (int d = 0; d < x->ndim; d++) {
    r->shape[d] = x->shape[perm[d]];
    r->strides[d] = x->strides[perm[d]];
  }
  return r;
}

ref_t *ref_transpose(const ref_t *x, int a, int b) {
  int perm[REF_MAX_DIMS];
  if (a < 0) a += x->ndim;
  if (b < 0) b += x->ndim;
  for (int d = 0; d < x->ndim; d++)
    perm[d] = d;
  perm[a] = b;
  perm[b] = a;
  return ref_permute(x, perm);
}

ref_t *ref_expand(const ref_t *x, int ndim, const int64_t *shape) {
  ref_t *r = view_like(x);
  r->ndim = ndim;
  int lead = ndim - x->ndim;
  for (int d = 0; d < ndim; d++) {
    int sd = d - lead;
    r->shape[d] = shape[d];
    r->strides[d] = (sd < 0 || x->shape[sd] == 1) ? 0 : x->strides[sd];
  }
  return r;
}

ref_t *ref_pad(const ref_t *x, const int64_t *before, const int64_t *after, double value) {
  int64_t s[REF_MAX_DIMS], idx[REF_MAX_DIMS];
  for (int d = 0; d < x->ndim; d++)
    s[d] = x->shape[d] + before[d] + after[d];
  ref_t *r = ref_new(x->ndim, s);
  int64_t n = ref_numel(r);
  for (int64_t i = 0; i < n; i++) {
    unravel(i, x->ndim, s, idx);
    bool inside = true;
    int64_t p = x->offset;
    for (int d = 0; d < x->ndim; d++) {
      int64_t k = idx[d] - before[d];
      if (k < 0 || k >= x->shape[d]) inside = false;
      p += k * x->strides[d];
    }
    r->data[i] = inside ? x->data[p] : value;
  }
  return r;
}

ref_t *ref_shrink(const ref_t *x, const int64_t *start, const int64_t *end) {
  ref_t *r = view_like(x);
  for (int d = 0; d < x->ndim; d++) {
    r->shape[d] = end[d] - start[d];
    if (r->shape[d] > 0) r->offset += start[d] * x->strides[d];
  }
  return r;
}

ref_t *ref_flip(const ref_t *x, int naxes, const int *axes) {
  ref_t *r = view_like(x);
  for (int k = 0; k < naxes; k++) {
    int d = axes[k] < 0 ? axes[k] + x->ndim : axes[k];
    if (r->shape[d] > 0) r->offset += (r->shape[d] - 1) * r->strides[d];
    r->strides[d] = -r->strides[d];
  }
  return r;
}

/* Python's slice(start, stop, step).indices(n). */
static int64_t slice_bound(int64_t v, int64_t n, int64_t step) {
  if (v < 0) {
    v += n;
    if (v < 0) v = step < 0 ? -1 : 0;
  } else if (v >= n) {
    v = step < 0 ? n - 1 : n;
  }
  return v;
}

ref_t *ref_slice(const ref_t *x, int axis, int64_t start, int64_t stop, int64_t step) {
  if (axis < 0) axis += x->ndim;
  int64_t n = x->shape[axis];
  int64_t b = slice_bound(start, n, step), e = slice_bound(stop, n, step), cnt;
  if (step > 0)
    cnt = e > b ? (e - b + step - 1) / step : 0;
  else
    cnt = b > e ? (b - e - step - 1) / (-step) : 0;
  ref_t *r = view_like(x);
  r->shape[axis] = cnt;
  if (cnt > 0) r->offset += b * x->strides[axis];
  r->strides[axis] = x->strides[axis] * step;
  return r;
}

ref_t *ref_cat(int n, ref_t *const *xs, int axis) {
  int nd = xs[0]->ndim;
  if (axis < 0) axis += nd;
  int64_t s[REF_MAX_DIMS], idx[REF_MAX_DIMS];
  memcpy(s, xs[0]->shape, sizeof s);
  s[axis] = 0;
  for (int k = 0; k < n; k++)
    s[axis] += xs[k]->shape[axis];
  ref_t *r = ref_new(nd, s);
  int64_t total = ref_numel(r);
  for (int64_t i = 0; i < total; i++) {
    unravel(i, nd, s, idx);
    int k = 0;
    while (idx[axis] >= xs[k]->shape[axis])
      idx[axis] -= xs[k++]->shape[axis];
    int64_t flat = 0;
    for (int d = 0; d < nd; d++)
      flat = flat * xs[k]->shape[d] + idx[d];
    r->data[i] = ref_get(xs[k], flat);
  }
  return r;
}

ref_t *ref_stack(int n, ref_t *const *xs, int axis) {
  if (axis < 0) axis += xs[0]->ndim + 1;
  ref_t **us = ref_alloc((size_t)n * sizeof *us);
  for (int k = 0; k < n; k++)
    us[k] = ref_unsqueeze(xs[k], axis);
  return ref_cat(n, us, axis);
}

ref_t *ref_squeeze(const ref_t *x, int axis) {
  if (axis < 0) axis += x->ndim;
  ref_t *r = view_like(x);
  r->ndim = x->ndim - 1;
  for (int d = axis; d < r->ndim; d++) {
    r->shape[d] = x->shape[d + 1];
    r->strides[d] = x->strides[d + 1];
  }
  return r;
}

ref_t *ref_unsqueeze(const ref_t *x, int axis) {
  if (axis < 0) axis += x->ndim + 1;
  ref_t *r = view_like(x);
  r->ndim = x->ndim + 1;
  for (int d = 0; d < r->ndim; d++) {
    int sd = d < axis ? d : d - 1;
    r->shape[d] = d == axis ? 1 : x->shape[sd];
    r->strides[d] = d == axis ? 0 : x->strides[sd];
  }
  return r;
}

/* ---- matmul ------------------------------------------------------------------------------------
 */
ref_t *ref_matmul(const ref_t *a, const ref_t *b) {
  bool a1 = a->ndim == 1, b1 = b->ndim == 1;
  if (a1) a = ref_unsqueeze(a, 0);
  if (b1) b = ref_unsqueeze(b, 1);
  int64_t n = a->shape[a->ndim - 2], k = a->shape[a->ndim - 1], m = b->shape[b->ndim - 1];
  if (b->shape[b->ndim - 2] != k) return NULL;
  int64_t bshape[REF_MAX_DIMS], oshape[REF_MAX_DIMS], idx[REF_MAX_DIMS];
  int bnd = ref_broadcast_shape(a->ndim - 2, a->shape, b->ndim - 2, b->shape, bshape);
  if (bnd < 0) return NULL;
  memcpy(oshape, bshape, sizeof(int64_t) * (size_t)bnd);
  oshape[bnd] = n;
  oshape[bnd + 1] = m;
  int ond = bnd + 2;
  ref_t *r = ref_new(ond, oshape);
  int64_t total = ref_numel(r);
  for (int64_t o = 0; o < total; o++) {
    unravel(o, ond, oshape, idx);
    int64_t i = idx[ond - 2], j = idx[ond - 1];
    double acc = 0;
    for (int64_t t = 0; t < k; t++) {
      idx[ond - 2] = i;
      idx[ond - 1] = t;
      double av = get_bcast(a, ond, idx);
      idx[ond - 2] = t;
      idx[ond - 1] = j;
      acc += av * get_bcast(b, ond, idx);
    }
    r->data[o] = acc;
  }
  if (b1) r = ref_squeeze(r, r->ndim - 1);
  if (a1) r = ref_squeeze(r, r->ndim - (b1 ? 1 : 2));
  return r;
}

/* ---- dtypes ------------------------------------------------------------------------------------
 */
size_t ref_dtype_size(kiln_dtype dt) {
  switch (dt) {
  case KILN_BOOL:
  case KILN_U8:
  case KILN_I8:
    return 1;
  case KILN_U16:
  case KILN_I16:
  case KILN_F16:
  case KILN_BF16:
    return 2;
  case KILN_U32:
  case KILN_I32:
  case KILN_F32:
    return 4;
  case KILN_U64:
  case KILN_I64:
  case KILN_F64:
    return 8;
  default:
    return 0;
  }
}

bool ref_dtype_is_float(kiln_dtype dt) {
  return dt == KILN_F16 || dt == KILN_BF16 || dt == KILN_F32 || dt == KILN_F64;
}

bool ref_dtype_is_signed(kiln_dtype dt) {
  return dt == KILN_I8 || dt == KILN_I16 || dt == KILN_I32 || dt == KILN_I64;
}

/* Rounds to a binary format with mbits stored mantissa bits and exponent range
 * [emin, emax], to nearest even, with gradual underflow and overflow to inf. */
static double round_format(double v, int mbits, int emin, int emax) {
  if (isnan(v) || isinf(v) || v == 0) return v;
  double a = fabs(v);
  int ex;
  frexp(a, &ex);
  int e = ex - 1;
  if (e < emin) e = emin;
  double q = rint(ldexp(a, mbits - e));
  double r = ldexp(q, e - mbits);
  double maxfin = ldexp(2.0 - ldexp(1.0, -mbits), emax);
  if (r > maxfin) r = INFINITY;
  return copysign(r, v);
}

uint16_t ref_f16_bits(double v) {
  if (isnan(v)) return 0x7e00;
  uint16_t sign = signbit(v) ? 0x8000 : 0;
  double r = fabs(round_format(v, 10, -14, 15));
  if (isinf(r)) return sign | 0x7c00;
  if (r == 0) return sign;
  int ex;
  frexp(r, &ex);
  int e = ex - 1;
  if (e < -14) return sign | (uint16_t)ldexp(r, 24); /* subnormal: r / 2^-24 */
  uint16_t mant = (uint16_t)(ldexp(r, 10 - e) - 1024);
  return sign | (uint16_t)((e + 15) << 10) | mant;
}

double ref_f16_value(uint16_t h) {
  int e = (h >> 10) & 31, m = h & 1023;
  double s = (h & 0x8000) ? -1 : 1;
  if (e == 31) return m ? NAN : s * INFINITY;
  if (e == 0) return s * ldexp(m, -24);
  return s * ldexp(1024 + m, e - 25);
}

uint16_t ref_bf16_bits(double v) {
  if (isnan(v)) return 0x7fc0;
  float f = (float)round_format(v, 7, -126, 127); /* exact in f32 */
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)(u >> 16);
}

double ref_bf16_value(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static int dtype_bits(kiln_dtype dt) { return (int)ref_dtype_size(dt) * 8; }

double ref_round(double v, kiln_dtype dt) {
  switch (dt) {
  case KILN_BOOL:
    return v != 0;
  case KILN_F16:
    return ref_f16_value(ref_f16_bits(v));
  case KILN_BF16:
    return ref_bf16_value(ref_bf16_bits(v));
  case KILN_F32:
    return (double)(float)v;
  case KILN_F64:
    return v;
  case KILN_U64:
    return (double)(uint64_t)v;
  default:
    break;
  }
  /* integers: two's complement wrap modulo 2^bits */
  int bits = dtype_bits(dt);
  uint64_t u = (uint64_t)(int64_t)v;
  if (bits < 64) u &= (UINT64_C(1) << bits) - 1;
  if (ref_dtype_is_signed(dt) && bits < 64 && (u >> (bits - 1)) & 1)
    return (double)((int64_t)u - (INT64_C(1) << bits));
  return ref_dtype_is_signed(dt) ? (double)(int64_t)u : (double)u;
}

ref_t *ref_round_all(const ref_t *x, kiln_dtype dt) {
  ref_t *r = ref_contig(x);
  int64_t n = ref_numel(r);
  for (int64_t i = 0; i < n; i++)
    r->data[i] = ref_round(r->data[i], dt);
  return r;
}

void ref_to_bytes(const ref_t *x, kiln_dtype dt, void *out) {
  int64_t n = ref_numel(x);
  for (int64_t i = 0; i < n; i++) {
    double v = ref_round(ref_get(x, i), dt);
    switch (dt) {
    case KILN_BOOL:
      ((uint8_t *)out)[i] = v != 0;
      break;
    case KILN_U8:
      ((uint8_t *)out)[i] = (uint8_t)v;
      break;
    case KILN_I8:
      ((int8_t *)out)[i] = (int8_t)v;
      break;
    case KILN_U16:
      ((uint16_t *)out)[i] = (uint16_t)v;
      break;
    case KILN_I16:
      ((int16_t *)out)[i] = (int16_t)v;
      break;
    case KILN_U32:
      ((uint32_t *)out)[i] = (uint32_t)v;
      break;
    case KILN_I32:
      ((int32_t *)out)[i] = (int32_t)v;
      break;
    case KILN_U64:
      ((uint64_t *)out)[i] = (uint64_t)v;
      break;
    case KILN_I64:
      ((int64_t *)out)[i] = (int64_t)v;
      break;
    case KILN_F16:
      ((uint16_t *)out)[i] = ref_f16_bits(v);
      break;
    case KILN_BF16:
      ((uint16_t *)out)[i] = ref_bf16_bits(v);
      break;
    case KILN_F32:
      ((float *)out)[i] = (float)v;
      break;
    case KILN_F64:
      ((double *)out)[i] = v;
      break;
    default:
      break;
    }
  }
}

ref_t *ref_from_bytes(kiln_dtype dt, int ndim, const int64_t *shape, const void *p) {
  ref_t *r = ref_new(ndim, shape);
  int64_t n = ref_numel(r);
  for (int64_t i = 0; i < n; i++) {
    double v = 0;
    switch (dt) {
    case KILN_BOOL:
      v = ((const uint8_t *)p)[i] != 0;
      break;
    case KILN_U8:
      v = ((const uint8_t *)p)[i];
      break;
    case KILN_I8:
      v = ((const int8_t *)p)[i];
      break;
    case KILN_U16:
      v = ((const uint16_t *)p)[i];
      break;
    case KILN_I16:
      v = ((const int16_t *)p)[i];
      break;
    case KILN_U32:
      v = ((const uint32_t *)p)[i];
      break;
    case KILN_I32:
      v = ((const int32_t *)p)[i];
      break;
    case KILN_U64:
      v = (double)((const uint64_t *)p)[i];
      break;
    case KILN_I64:
      v = (double)((const int64_t *)p)[i];
      break;
    case KILN_F16:
      v = ref_f16_value(((const uint16_t *)p)[i]);
      break;
    case KILN_BF16:
      v = ref_bf16_value(((const uint16_t *)p)[i]);
      break;
    case KILN_F32:
      v = ((const float *)p)[i];
      break;
    case KILN_F64:
      v = ((const double *)p)[i];
      break;
    default:
      break;
    }
    r->data[i] = v;
  }
  return r;
}

/* ---- random ------------------------------------------------------------------------------------
 */
ref_rng ref_rng_seed(uint64_t seed) { return (ref_rng){seed}; }

uint64_t ref_rng_next(ref_rng *g) {
  uint64_t z = (g->state += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

double ref_rng_uniform(ref_rng *g) { return (double)(ref_rng_next(g) >> 11) * 0x1.0p-53; }

int64_t ref_rng_int(ref_rng *g, int64_t lo, int64_t hi) {
  uint64_t span = (uint64_t)(hi - lo) + 1;
  return lo + (int64_t)(ref_rng_next(g) % span);
}

ref_t *ref_random(ref_rng *g, int ndim, const int64_t *shape, kiln_dtype dt, double lo, double hi,
                  double specials) {
  ref_t *r = ref_new(ndim, shape);
  int64_t n = ref_numel(r);
  static const double sp[] = {NAN, INFINITY, -INFINITY, 0.0};
  for (int64_t i = 0; i < n; i++) {
    double v;
    if (dt == KILN_BOOL)
      v = (double)(ref_rng_next(g) & 1);
    else if (!ref_dtype_is_float(dt))
      v = (double)ref_rng_int(g, (int64_t)lo, (int64_t)hi);
    else if (specials > 0 && ref_rng_uniform(g) < specials)
      v = sp[ref_rng_next(g) % 4];
    else
      v = lo + (hi - lo) * ref_rng_uniform(g);
    r->data[i] = ref_round(v, dt);
  }
  return r;
}
