/* check.c — kiln <-> reference bridge: upload, read back, compare, run a case per device. */
#include "check.h"

#include <stdlib.h>

kiln_tensor *kt_from_ref(const ref_t *x, kiln_dtype dt) {
  int64_t n = ref_numel(x);
  void *buf = calloc((size_t)(n > 0 ? n : 1), ref_dtype_size(dt) ? ref_dtype_size(dt) : 8);
  if (!buf) return NULL;
  ref_to_bytes(x, dt, buf);
  kiln_tensor *t = kiln_from_data(dt, x->ndim, x->shape, buf);
  free(buf);
  return t;
}

ref_t *kt_read_at(const char *file, int line, kiln_tensor *t) {
  if (!t) {
    test_fail(file, line, "tensor is NULL (kiln_error: %s)", test_errmsg());
    return NULL;
  }
  kiln_dtype dt = kiln_dtype_of(t);
  int nd = kiln_ndim(t);
  const int64_t *shape = kiln_shape(t);
  if (nd < 0 || nd > REF_MAX_DIMS || (nd > 0 && !shape) || ref_dtype_size(dt) == 0) {
    test_fail(file, line, "bad tensor metadata: ndim %d dtype %d", nd, (int)dt);
    return NULL;
  }
  int64_t n = 1;
  for (int d = 0; d < nd; d++)
    n *= shape[d];
  size_t nbytes = (size_t)n * ref_dtype_size(dt);
  void *buf = calloc(nbytes ? nbytes : 1, 1);
  int rc = kiln_to_host(t, buf, nbytes);
  if (rc < 0) {
    test_fail(file, line, "kiln_to_host failed (%d): %s", rc, test_errmsg());
    free(buf);
    return NULL;
  }
  ref_t *r = ref_from_bytes(dt, nd, shape, buf);
  free(buf);
  return r;
}

static void fmt_value(char *buf, size_t n, double v) { snprintf(buf, n, "%.9g", v); }

bool kt_compare_at(const char *file, int line, const char *what, const ref_t *got, const ref_t *exp,
                   const ref_t *tolbase, double rtol, double atol) {
  char s1[128], s2[128];
  if (!got || !exp) {
    test_fail(file, line, "%s: nothing to compare (%s)", what, got ? "no expected" : "no result");
    return false;
  }
  if (!ref_same_shape(got, exp->ndim, exp->shape)) {
    test_fail(file, line, "%s: shape %s, expected %s", what,
              ref_shape_str(got->ndim, got->shape, s1, sizeof s1),
              ref_shape_str(exp->ndim, exp->shape, s2, sizeof s2));
    return false;
  }
  int64_t n = ref_numel(exp), bad = 0;
  char detail[320] = "";
  size_t dl = 0;
  for (int64_t i = 0; i < n; i++) {
    double g = ref_get(got, i), e = ref_get(exp, i);
    bool ok;
    if (isnan(e))
      ok = isnan(g);
    else if (isinf(e))
      ok = g == e;
    else if (isnan(g) || isinf(g))
      ok = false;
    else {
      double scale = tolbase ? fabs(ref_get(tolbase, i)) : fabs(e);
      ok = fabs(g - e) <= atol + rtol * scale;
    }
    if (!ok) {
      if (bad < 3 && dl < sizeof detail) {
        char gv[40], ev[40];
        fmt_value(gv, sizeof gv, g);
        fmt_value(ev, sizeof ev, e);
        dl += (size_t)snprintf(detail + dl, sizeof detail - dl, " [%lld] got %s want %s;",
                               (long long)i, gv, ev);
      }
      bad++;
    }
  }
  if (bad) {
    test_fail(file, line, "%s: %lld of %lld elements differ (rtol %.1g atol %.1g):%s", what,
              (long long)bad, (long long)n, rtol, atol, detail);
    return false;
  }
  return true;
}

/* ---- views ----------------------------------------------------------------------------------- */
kt_view kt_random_view(ref_rng *g, int ndim, const int64_t *shape) {
  kt_view v;
  memset(&v, 0, sizeof v);
  v.ndim = ndim;
  for (int d = 0; d < ndim; d++)
    v.perm[d] = d;
  for (int d = ndim - 1; d > 0; d--) { /* Fisher-Yates */
    int j = (int)ref_rng_int(g, 0, d), t = v.perm[d];
    v.perm[d] = v.perm[j];
    v.perm[j] = t;
  }
  int64_t s[REF_MAX_DIMS];
  for (int d = 0; d < ndim; d++)
    s[v.perm[d]] = shape[d];
  for (int i = 0; i < ndim; i++) {
    int64_t extra = ref_rng_int(g, 0, 2);
    v.base[i] = s[i] + extra;
    v.start[i] = ref_rng_int(g, 0, extra);
    v.end[i] = v.start[i] + s[i];
    if (ref_rng_next(g) & 1) v.flip[v.nflip++] = i;
  }
  return v;
}

ref_t *kt_view_ref(const kt_view *v, const ref_t *base) {
  ref_t *r = ref_flip(base, v->nflip, v->flip);
  r = ref_shrink(r, v->start, v->end);
  return ref_permute(r, v->perm);
}

kiln_tensor *kt_view_apply(const kt_view *v, kiln_tensor *base) {
  kiln_tensor *t = v->nflip ? kiln_flip(base, v->nflip, v->flip) : base;
  t = kiln_shrink(t, v->start, v->end);
  return kiln_permute(t, v->perm);
}

/* ---- cases -------------------------------------------------------------------------------------
 */
static bool same_value(double a, double b) {
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
  return a == b && signbit(a) == signbit(b);
}

bool kt_run_case_at(const char *file, int line, const kt_case *c, kt_build_fn build,
                    const void *ctx) {
  int fails0 = test_failures();
  double rtol = c->rtol, atol = c->atol;
  if (c->out_dt == KILN_F16) {
    rtol = fmax(rtol, 1e-3);
    atol = fmax(atol, 1e-7);
  } else if (c->out_dt == KILN_BF16) {
    rtol = fmax(rtol, 8e-3);
    atol = fmax(atol, 1e-30);
  } else if (c->out_dt == KILN_F32) {
    atol = fmax(atol, 1e-37);
  }
  const ref_t *exp = c->expected ? ref_round_all(c->expected, c->out_dt) : NULL;
  ref_t *got[TEST_MAX_DEVICES] = {0};
  char what[256];
  const char *saved_dev = kiln_get_device();
  char saved_dev_buf[32];
  snprintf(saved_dev_buf, sizeof saved_dev_buf, "%s", saved_dev ? saved_dev : "CPU");

  for (int dv = 0; dv < test_ndevices; dv++) {
    const char *dev = test_devices[dv];
    snprintf(what, sizeof what, "[%s] %s", dev, c->what);
    kiln_clear_error();
    if (kiln_set_device(dev) < 0) {
      test_fail(file, line, "%s: kiln_set_device failed: %s", what, test_errmsg());
      continue;
    }
    kiln_scope_begin();
    kiln_tensor *in[4] = {0};
    for (int i = 0; i < c->nin; i++) {
      in[i] = kt_from_ref(c->in[i], c->in_dt[i]);
      if (c->view[i]) in[i] = kt_view_apply(c->view[i], in[i]);
    }
    kiln_tensor *out = build(in, ctx);
    if (!out) {
      test_fail(file, line, "%s: op returned NULL: %s", what, test_errmsg());
    } else {
      if (kiln_dtype_of(out) != c->out_dt)
        test_fail(file, line, "%s: dtype %s, expected %s", what,
                  kiln_dtype_name(kiln_dtype_of(out)), kiln_dtype_name(c->out_dt));
      got[dv] = kt_read_at(file, line, out);
      if (got[dv] && exp) kt_compare_at(file, line, what, got[dv], exp, c->tolbase, rtol, atol);
      if (test_has_error()) test_fail(file, line, "%s: unexpected error: %s", what, test_errmsg());
    }
    kiln_scope_end();
  }
  kiln_clear_error();
  kiln_set_device(saved_dev_buf);

  /* every device against INTERP: bit for bit where the case asks it of CPU (the same C helpers
   * and libm), within the tolerance elsewhere (another vendor's math library) */
  for (int dv = 0; dv < test_ndevices && c->cross != KT_CROSS_NONE; dv++) {
    if (dv == 1 || !got[dv] || !got[1] || !ref_same_shape(got[dv], got[1]->ndim, got[1]->shape))
      continue;
    snprintf(what, sizeof what, "%s vs INTERP %s", test_devices[dv], c->what);
    if (c->cross == KT_CROSS_CLOSE || strcmp(test_devices[dv], "CPU")) {
      kt_compare_at(file, line, what, got[dv], got[1], c->tolbase, rtol, atol);
    } else {
      int64_t n = ref_numel(got[dv]);
      for (int64_t i = 0; i < n; i++) {
        double a = ref_get(got[dv], i), b = ref_get(got[1], i);
        if (!same_value(a, b)) {
          test_fail(file, line, "%s: not bit-identical at [%lld]: %s %.9g INTERP %.9g", what,
                    (long long)i, test_devices[dv], a, b);
          break;
        }
      }
    }
  }
  return test_failures() == fails0;
}
