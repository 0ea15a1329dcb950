/* ref.h — the independent reference the op tests are held against: a small strided n-d array
 * of doubles with plain, obviously-correct implementations of kiln's ops, host-side dtype
 * conversions (f16/bf16 rounding included) and a seeded random generator (splitmix64).
 * Nothing here calls kiln; only the kiln_dtype enum is shared. */
#ifndef KILN_TEST_REF_H
#define KILN_TEST_REF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

#define REF_MAX_DIMS 8

/* A view: element i (row-major logical index) lives at data[offset + sum(idx[d]*strides[d])].
 * Arrays and their storage are owned by an arena freed by ref_free_all (the runner calls it
 * after every test). */
typedef struct {
  int ndim;
  int64_t shape[REF_MAX_DIMS];
  int64_t strides[REF_MAX_DIMS]; /* in elements; 0 for broadcast, negative for flips */
  int64_t offset;
  double *data;
} ref_t;

void *ref_alloc(size_t nbytes); /* zeroed, arena-owned */
void ref_free_all(void);

/* ---- construction and access ------------------------------------------------------------ */
ref_t *ref_new(int ndim, const int64_t *shape); /* zeros, contiguous */
ref_t *ref_from(int ndim, const int64_t *shape, const double *values);
ref_t *ref_scalar(double v); /* 0-d */
int64_t ref_numel(const ref_t *r);
double ref_get(const ref_t *r, int64_t i); /* row-major logical index */
void ref_set(ref_t *r, int64_t i, double v);
ref_t *ref_contig(const ref_t *r); /* a contiguous copy */
bool ref_same_shape(const ref_t *a, int ndim, const int64_t *shape);
/* "(3,4)" into buf; returns buf. */
char *ref_shape_str(int ndim, const int64_t *shape, char *buf, size_t n);

/* ---- elementwise (numpy broadcasting; NULL when shapes do not broadcast) ------------------ */
typedef double (*ref_fn1)(double);
typedef double (*ref_fn2)(double, double);
ref_t *ref_map(const ref_t *x, ref_fn1 f);
ref_t *ref_map2(const ref_t *a, const ref_t *b, ref_fn2 f);
ref_t *ref_where(const ref_t *c, const ref_t *a, const ref_t *b);
/* Broadcast result shape of a and b; returns its ndim or -1. */
int ref_broadcast_shape(int na, const int64_t *sa, int nb, const int64_t *sb, int64_t *out);

/* ---- reductions -------------------------------------------------------------------------
 * naxes == 0 reduces all axes; axes may be negative. Empty reductions give the identity
 * (0, 1, -inf, +inf; mean NaN). max/min propagate NaN. ARGMAX/ARGMIN take one axis and give
 * the index of the first extreme. */
typedef enum {
  REF_SUM,
  REF_MAX,
  REF_MIN,
  REF_MEAN,
  REF_PROD,
  REF_ARGMAX,
  REF_ARGMIN
} ref_reduce_op;
ref_t *ref_reduce(const ref_t *x, ref_reduce_op op, int naxes, const int *axes, bool keepdim);
ref_t *ref_softmax(const ref_t *x, int axis);
ref_t *ref_log_softmax(const ref_t *x, int axis);

/* ---- movement ------------------------------------------------------------------------------ */
ref_t *ref_reshape(const ref_t *x, int ndim, const int64_t *shape); /* one -1 allowed */
ref_t *ref_permute(const ref_t *x, const int *perm);
ref_t *ref_transpose(const ref_t *x, int a, int b);
ref_t *ref_expand(const ref_t *x, int ndim, const int64_t *shape);
ref_t *ref_pad(const ref_t *x, const int64_t *before, const int64_t *after, double value);
ref_t *ref_shrink(const ref_t *x, const int64_t *start, const int64_t *end);
ref_t *ref_flip(const ref_t *x, int naxes, const int *axes);
ref_t *ref_slice(const ref_t *x, int axis, int64_t start, int64_t stop, int64_t step);
ref_t *ref_cat(int n, ref_t *const *xs, int axis);
ref_t *ref_stack(int n, ref_t *const *xs, int axis);
ref_t *ref_squeeze(const ref_t *x, int axis);
ref_t *ref_unsqueeze(const ref_t *x, int axis);

/* ---- matmul: numpy semantics (1-d operands, broadcast batch dims) ------------------------ */
ref_t *ref_matmul(const ref_t *a, const ref_t *b);

/* ---- dtypes ------------------------------------------------------------------------------ */
size_t ref_dtype_size(kiln_dtype dt);
bool ref_dtype_is_float(kiln_dtype dt);
bool ref_dtype_is_signed(kiln_dtype dt); /* signed integers */
/* v as stored in dt: floats rounded to nearest even (overflow to inf), integers wrapped
 * modulo 2^bits as two's complement, bool as v != 0. */
double ref_round(double v, kiln_dtype dt);
uint16_t ref_f16_bits(double v);
double ref_f16_value(uint16_t bits);
uint16_t ref_bf16_bits(double v);
double ref_bf16_value(uint16_t bits);
ref_t *ref_round_all(const ref_t *x, kiln_dtype dt);
/* Packs x (row-major) into numel*size bytes of dt / unpacks such bytes. */
void ref_to_bytes(const ref_t *x, kiln_dtype dt, void *out);
ref_t *ref_from_bytes(kiln_dtype dt, int ndim, const int64_t *shape, const void *bytes);

/* ---- random ------------------------------------------------------------------------------ */
typedef struct {
  uint64_t state;
} ref_rng;
ref_rng ref_rng_seed(uint64_t seed);
uint64_t ref_rng_next(ref_rng *g);                       /* splitmix64 */
double ref_rng_uniform(ref_rng *g);                      /* [0,1) */
int64_t ref_rng_int(ref_rng *g, int64_t lo, int64_t hi); /* inclusive */
/* A random array of shape with values uniform in [lo,hi], rounded to dt (integers: whole
 * numbers in [lo,hi]; bool: 0/1). specials > 0: that fraction of elements are drawn from
 * {NaN, +inf, -inf, 0} for float dtypes. */
ref_t *ref_random(ref_rng *g, int ndim, const int64_t *shape, kiln_dtype dt, double lo, double hi,
                  double specials);

#endif
