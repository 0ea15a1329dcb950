/* check.h — the bridge between kiln tensors and the reference: upload a reference array as a
 * kiln tensor, read a kiln tensor back, compare with tolerances (NaN and inf positions must
 * match), and run one op case on every device, comparing each to the reference and the
 * devices to each other. */
#ifndef KILN_TEST_CHECK_H
#define KILN_TEST_CHECK_H

#include "ref.h"
#include "test.h"

/* A kiln tensor holding x rounded to dt (created on the current device). */
kiln_tensor *kt_from_ref(const ref_t *x, kiln_dtype dt);

/* Realizes t and reads it back as doubles; NULL (and a recorded failure) on error. */
ref_t *kt_read_at(const char *file, int line, kiln_tensor *t);
#define kt_read(t) kt_read_at(__FILE__, __LINE__, (t))

/* Compares got with expected: same shape; NaN where expected is NaN; equal infinities;
 * elsewhere |got-exp| <= atol + rtol*scale where scale is |tolbase[i]| (when tolbase is
 * given, for sums and dot products) or |exp|. Records one failure naming `what`, the
 * mismatch count and the first few mismatches. Returns true when equal. */
bool kt_compare_at(const char *file, int line, const char *what, const ref_t *got,
                   const ref_t *expected, const ref_t *tolbase, double rtol, double atol);
#define kt_compare(what, got, exp, tolbase, rtol, atol)                                            \
  kt_compare_at(__FILE__, __LINE__, (what), (got), (exp), (tolbase), (rtol), (atol))

/* ---- views: flip -> shrink -> permute, applied alike to a reference and a kiln tensor ---- */
typedef struct {
  int ndim;
  int nflip, flip[REF_MAX_DIMS];
  int64_t start[REF_MAX_DIMS], end[REF_MAX_DIMS];
  int perm[REF_MAX_DIMS];
  int64_t base[REF_MAX_DIMS]; /* shape of the array the view is taken of */
} kt_view;
/* A random view whose result has the given shape (base dims a little larger). */
kt_view kt_random_view(ref_rng *g, int ndim, const int64_t *shape);
ref_t *kt_view_ref(const kt_view *v, const ref_t *base);
kiln_tensor *kt_view_apply(const kt_view *v, kiln_tensor *base);

/* ---- one op case, run on every device ----------------------------------------------------- */
typedef kiln_tensor *(*kt_build_fn)(kiln_tensor *const *in, const void *ctx);

enum { KT_CROSS_NONE, KT_CROSS_EXACT, KT_CROSS_CLOSE };

typedef struct {
  const char *what; /* printed on failure, e.g. "add f32 (3,1)+(4)" */
  int nin;
  const ref_t *in[4]; /* inputs as uploaded (already rounded to in_dt) */
  kiln_dtype in_dt[4];
  const kt_view *view[4]; /* optional: in[i] is the base, the op sees view[i] of it */
  const ref_t *expected;  /* in double; rounded to out_dt before comparing */
  kiln_dtype out_dt;
  const ref_t *tolbase;
  double rtol, atol; /* raised to at least the output dtype's precision */
  int cross;         /* how CPU and INTERP results must agree */
} kt_case;

/* Runs c on CPU and INTERP via build; returns true if all checks passed. */
bool kt_run_case_at(const char *file, int line, const kt_case *c, kt_build_fn build,
                    const void *ctx);
#define kt_run_case(c, build, ctx) kt_run_case_at(__FILE__, __LINE__, (c), (build), (ctx))

#endif
