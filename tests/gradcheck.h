/* gradcheck.h — gradients against central finite differences in double precision, shared by
 * the autograd and nn tests. The loss is sum(f(xs) * w) with a fixed random w over f's output;
 * d loss / d x from kiln_backward must match (loss(x + h) - loss(x - h)) / 2h, each loss from a
 * fresh forward pass on f64 leaves. */
#ifndef KILN_TEST_GRADCHECK_H
#define KILN_TEST_GRADCHECK_H

#include "test.h"

#define GC_MAX_INPUTS 6

/* The function under test: builds its output from the f64 leaves xs (one per spec). Anything
 * else it needs (strides, labels, flags) comes through ctx. */
typedef kiln_tensor *(*gc_fn)(kiln_tensor **xs, const void *ctx);

/* One differentiated input: its shape and the range its values are drawn from (uniform). */
typedef struct {
  int ndim;
  int64_t shape[KILN_MAX_DIMS];
  double lo, hi;
} gc_spec;

/* Checks d loss / d xs[i] for every input. Inputs of at most GC_FULL_ELEMS elements are
 * checked element by element; larger ones at GC_FULL_ELEMS spread-out elements plus one
 * random direction over all their elements (so no element goes unchecked). Values, w and the
 * sampled elements come from a seed made from name (and $KILN_TEST_SEED). Failures are
 * recorded at file:line naming the case, the input and the element; returns true if none. */
#define GC_FULL_ELEMS 48
bool gradcheck_at(const char *file, int line, const char *name, gc_fn f, const void *ctx, int n,
                  const gc_spec *sp);
/* gradcheck(name, f, ctx, n, sp); variadic so that ctx may be a compound literal */
#define gradcheck(...) gradcheck_at(__FILE__, __LINE__, __VA_ARGS__)

#endif
