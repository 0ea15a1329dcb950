/* gradcheck.c — the finite-difference gradient checker (see gradcheck.h): f64 leaves with
 * seeded random values, one backward pass, then central differences per element and along
 * one random direction. */
#include "gradcheck.h"
#include <stdlib.h>

static double gc_uniform(uint64_t *s) { /* splitmix64 -> [0,1) */
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
}

static uint64_t gc_hash(const char *s) { /* FNV-1a */
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

typedef struct {
  const char *file, *name;
  int line;
  gc_fn f;
  const void *ctx;
  int n;
  const gc_spec *sp;
  double *data[GC_MAX_INPUTS]; /* host values of the leaves, perturbed in place */
  double *w;                   /* the output weights, made on the first forward pass */
  int64_t wn;
  uint64_t rng;
} gc_state;

static int64_t spec_numel(const gc_spec *s) {
  int64_t c = 1;
  for (int d = 0; d < s->ndim; d++)
    c *= s->shape[d];
  return c;
}

/* loss = sum(f(xs) * w) on the current host data; with leaves, the leaves require grad and
 * backward runs. Returns NAN (and records why) on error. */
static double loss_of(gc_state *g, kiln_tensor **leaves) {
  kiln_tensor *xs[GC_MAX_INPUTS];
  for (int i = 0; i < g->n; i++) {
    xs[i] = kiln_from_data(KILN_F64, g->sp[i].ndim, g->sp[i].shape, g->data[i]);
    if (leaves) {
      kiln_set_requires_grad(xs[i], true);
      leaves[i] = xs[i];
    }
  }
  kiln_tensor *y = g->f(xs, g->ctx);
  if (!y) {
    test_fail(g->file, g->line, "[%s] forward failed: %s", g->name, test_errmsg());
    return NAN;
  }
  int64_t yn = kiln_numel(y);
  if (!g->w) {
    g->wn = yn;
    g->w = malloc(sizeof(double) * (size_t)(yn ? yn : 1));
    for (int64_t i = 0; i < yn; i++)
      g->w[i] = 2 * gc_uniform(&g->rng) - 1;
  } else if (yn != g->wn) {
    test_fail(g->file, g->line, "[%s] output has %lld elements, then %lld", g->name,
              (long long)g->wn, (long long)yn);
    return NAN;
  }
  kiln_tensor *wt =
      kiln_reshape(kiln_from_data(KILN_F64, 1, &yn, g->w), kiln_ndim(y), kiln_shape(y));
  kiln_tensor *loss = kiln_sum(kiln_mul(y, wt), 0, NULL, false);
  if (leaves && kiln_backward(loss) < 0) {
    test_fail(g->file, g->line, "[%s] backward failed: %s", g->name, test_errmsg());
    return NAN;
  }
  double l = kiln_item(loss);
  if (test_has_error()) {
    test_fail(g->file, g->line, "[%s] realize failed: %s", g->name, test_errmsg());
    return NAN;
  }
  return l;
}

/* Central difference of the loss along dir (NULL: the unit vector of element j) of input i. */
static double fd_along(gc_state *g, int i, int64_t j, const double *dir, int64_t cnt, double h) {
  double *x = g->data[i];
  double *keep = malloc(sizeof(double) * (size_t)(cnt ? cnt : 1));
  memcpy(keep, x, sizeof(double) * (size_t)cnt);
  kiln_scope_begin();
  for (int64_t k = 0; k < cnt; k++)
    x[k] = keep[k] + h * (dir ? dir[k] : k == j);
  double lp = loss_of(g, NULL);
  for (int64_t k = 0; k < cnt; k++)
    x[k] = keep[k] - h * (dir ? dir[k] : k == j);
  double lm = loss_of(g, NULL);
  kiln_scope_end();
  memcpy(x, keep, sizeof(double) * (size_t)cnt);
  free(keep);
  return (lp - lm) / (2 * h);
}

/* Compares one input's gradient with finite differences; returns the number of mismatches. */
static int check_input(gc_state *g, int i, const double *grad, int64_t cnt) {
  int bad = 0;
  int64_t nel = cnt <= GC_FULL_ELEMS ? cnt : GC_FULL_ELEMS;
  int64_t stride = cnt <= GC_FULL_ELEMS ? 1 : cnt / GC_FULL_ELEMS;
  for (int64_t e = 0; e < nel && bad < 3; e++) {
    int64_t j = e * stride + (stride > 1 ? (int64_t)(gc_uniform(&g->rng) * (double)stride) : 0);
    double h = 1e-6 * (fabs(g->data[i][j]) > 1 ? fabs(g->data[i][j]) : 1);
    double fd = fd_along(g, i, j, NULL, cnt, h);
    if (!(fabs(fd - grad[j]) <= 1e-6 + 1e-5 * fabs(fd))) {
      test_fail(g->file, g->line, "[%s] d/dx%d[%lld]: backward %.10g, finite difference %.10g",
                g->name, i, (long long)j, grad[j], fd);
      bad++;
    }
  }
  if (cnt > GC_FULL_ELEMS && bad == 0) { /* every element at once, along a random direction */
    double *dir = malloc(sizeof(double) * (size_t)cnt), dot = 0, mag = 0, big = 1;
    for (int64_t k = 0; k < cnt; k++) {
      dir[k] = 2 * gc_uniform(&g->rng) - 1;
      dot += grad[k] * dir[k], mag += fabs(grad[k] * dir[k]);
      if (fabs(g->data[i][k]) > big) big = fabs(g->data[i][k]);
    }
    double fd = fd_along(g, i, -1, dir, cnt, 1e-6 * big);
    if (!(fabs(fd - dot) <= 1e-6 + 1e-5 * mag)) {
      test_fail(g->file, g->line,
                "[%s] d/dx%d along a random direction: backward %.10g, finite difference %.10g",
                g->name, i, dot, fd);
      bad++;
    }
    free(dir);
  }
  return bad;
}

bool gradcheck_at(const char *file, int line, const char *name, gc_fn f, const void *ctx, int n,
                  const gc_spec *sp) {
  if (n < 1 || n > GC_MAX_INPUTS) {
    test_fail(file, line, "[%s] gradcheck takes 1..%d inputs, got %d", name, GC_MAX_INPUTS, n);
    return false;
  }
  int failures_before = test_failures();
  gc_state g = {.file = file, .name = name, .line = line, .f = f, .ctx = ctx, .n = n, .sp = sp};
  g.rng = test_seed(gc_hash(name));
  kiln_clear_error();
  kiln_scope_begin();
  for (int i = 0; i < n; i++) {
    int64_t cnt = spec_numel(&sp[i]);
    g.data[i] = malloc(sizeof(double) * (size_t)(cnt ? cnt : 1));
    for (int64_t j = 0; j < cnt; j++)
      g.data[i][j] = sp[i].lo + (sp[i].hi - sp[i].lo) * gc_uniform(&g.rng);
  }
  kiln_tensor *leaves[GC_MAX_INPUTS] = {0};
  double l0 = loss_of(&g, leaves);
  for (int i = 0; i < n && !isnan(l0); i++) {
    int64_t cnt = spec_numel(&sp[i]);
    double *grad = malloc(sizeof(double) * (size_t)(cnt ? cnt : 1));
    kiln_tensor *gt = kiln_grad(leaves[i]);
    if (!gt) {
      test_fail(file, line, "[%s] input %d got no gradient", name, i);
    } else if (kiln_to_host(gt, grad, sizeof(double) * (size_t)cnt) < 0) {
      test_fail(file, line, "[%s] reading the gradient of input %d failed: %s", name, i,
                test_errmsg());
    } else {
      check_input(&g, i, grad, cnt);
    }
    free(grad);
  }
  for (int i = 0; i < n; i++) {
    if (leaves[i]) kiln_zero_grad(leaves[i]);
    free(g.data[i]);
  }
  free(g.w);
  kiln_scope_end();
  kiln_clear_error();
  return test_failures() == failures_before;
}
