/* test_linalg.c — kiln_eigh against closed forms (the second-difference matrix, whose
 * eigenvalues are 2 - 2 cos(k pi / (n + 1))), against its definition on random symmetric
 * matrices (A v = lambda v, orthonormal vectors, ascending values), and bad input rejected. */
#include "check.h"

#include <stdlib.h>

/* The (n, n) doubles of t (realized, cast to f64). */
static double *host_f64(kiln_tensor *t, int64_t numel) {
  double *d = malloc(sizeof(double) * (size_t)numel);
  if (kiln_to_host(kiln_cast(t, KILN_F64), d, sizeof(double) * (size_t)numel) < 0) {
    free(d);
    return NULL;
  }
  return d;
}

/* Checks a V = V diag(values), V^T V = I and ascending values, within tol (relative to the
 * largest |value|). */
static void check_decomposition(const double *a, int n, kiln_tensor *values, kiln_tensor *vectors, double tol) {
  double *w = host_f64(values, n), *v = host_f64(vectors, (int64_t)n * n);
  CHECK(w && v);
  if (w && v) {
    double scale = 1e-300;
    for (int i = 0; i < n; i++) scale = fmax(scale, fabs(w[i]));
    double worst_res = 0, worst_orth = 0;
    for (int i = 0; i < n; i++) {
      if (i) CHECKF(w[i] >= w[i - 1], "values not ascending at %d: %g after %g", i, w[i], w[i - 1]);
      for (int r = 0; r < n; r++) { /* (a v_i)[r] - w_i v_i[r] */
        double s = 0;
        for (int k = 0; k < n; k++) s += a[r * n + k] * v[k * n + i];
        worst_res = fmax(worst_res, fabs(s - w[i] * v[r * n + i]) / scale);
      }
      for (int j = 0; j < n; j++) {
        double d = 0;
        for (int k = 0; k < n; k++) d += v[k * n + i] * v[k * n + j];
        worst_orth = fmax(worst_orth, fabs(d - (i == j)));
      }
    }
    CHECKF(worst_res <= tol, "|A v - lambda v| / max|lambda| = %g > %g", worst_res, tol);
    CHECKF(worst_orth <= tol, "|V^T V - I| = %g > %g", worst_orth, tol);
  }
  free(w);
  free(v);
}

TEST(eigh_second_difference_closed_form) {
  enum { N = 10 };
  double a[N * N] = {0};
  for (int i = 0; i < N; i++) {
    a[i * N + i] = 2;
    if (i + 1 < N) a[i * N + i + 1] = a[(i + 1) * N + i] = -1;
  }
  kiln_scope_begin();
  kiln_tensor *values, *vectors;
  REQUIRE(kiln_eigh(kiln_from_data(KILN_F64, 2, (int64_t[]){N, N}, a), &values, &vectors) == 0);
  double *w = host_f64(values, N);
  REQUIRE(w);
  for (int k = 1; k <= N; k++) /* ascending: k = 1 is the smallest */
    CHECK_NEAR(w[k - 1], 2 - 2 * cos(k * M_PI / (N + 1)), 1e-12);
  free(w);
  check_decomposition(a, N, values, vectors, 1e-12);
  /* the eigenvector of k = 1 is sin(j pi / (N + 1)), normalized, up to its sign */
  double *v = host_f64(vectors, N * N), norm = 0;
  REQUIRE(v);
  for (int j = 0; j < N; j++) norm += pow(sin((j + 1) * M_PI / (N + 1)), 2);
  double sign = v[0] < 0 ? -1 : 1;
  for (int j = 0; j < N; j++) CHECK_NEAR(sign * v[j * N], sin((j + 1) * M_PI / (N + 1)) / sqrt(norm), 1e-12);
  free(v);
  kiln_scope_end();
}

TEST(eigh_random_symmetric) {
  enum { N = 25 };
  kiln_scope_begin();
  for (int dt = 0; dt < 2; dt++) {
    test_set_context("%s", dt ? "f32" : "f64");
    /* a = b + b^T with b stored first: computed inline, the last product of each randn value
     * contracts with the add into one fma, so a_ij and a_ji can round apart */
    kiln_tensor *b = kiln_contiguous(kiln_randn(2, (int64_t[]){N, N}, test_seed(17)));
    REQUIRE(kiln_realize(b) == 0);
    kiln_tensor *a = kiln_add(b, kiln_transpose(b, 0, 1));
    a = kiln_cast(a, dt ? KILN_F32 : KILN_F64);
    double *ah = host_f64(a, N * N);
    REQUIRE(ah);
    kiln_tensor *values, *vectors;
    REQUIRE(kiln_eigh(a, &values, &vectors) == 0);
    CHECK(kiln_dtype_of(values) == kiln_dtype_of(a) && kiln_dtype_of(vectors) == kiln_dtype_of(a));
    CHECK(kiln_ndim(values) == 1 && kiln_dim(values, 0) == N && kiln_ndim(vectors) == 2);
    check_decomposition(ah, N, values, vectors, dt ? 1e-5 : 1e-12);
    free(ah);
  }
  test_set_context("%s", "");
  /* repeated eigenvalues: 3 I has the value 3 three times and any orthonormal basis */
  double eye3[9] = {3, 0, 0, 0, 3, 0, 0, 0, 3};
  kiln_tensor *values, *vectors;
  REQUIRE(kiln_eigh(kiln_from_data(KILN_F64, 2, (int64_t[]){3, 3}, eye3), &values, &vectors) == 0);
  check_decomposition(eye3, 3, values, vectors, 1e-15);
  CHECK_NEAR(kiln_item(kiln_sum(values, 0, NULL, false)), 9, 1e-15);
  kiln_scope_end();
}

TEST(eigh_rejects_bad_input) {
  kiln_scope_begin();
  kiln_tensor *values = (kiln_tensor *)1, *vectors = (kiln_tensor *)1;
  double nonsym[4] = {1, 2, 3, 4}, nan_m[4] = {1, NAN, NAN, 1};
  struct {
    const char *name;
    kiln_tensor *a;
    const char *msg;
  } bad[] = {
      {"not square", kiln_zeros(KILN_F32, 2, (int64_t[]){2, 3}), "square"},
      {"3-d", kiln_zeros(KILN_F32, 3, (int64_t[]){2, 2, 2}), "square"},
      {"integer", kiln_zeros(KILN_I32, 2, (int64_t[]){2, 2}), "f32 or f64"},
      {"not symmetric", kiln_from_data(KILN_F64, 2, (int64_t[]){2, 2}, nonsym), "not symmetric"},
      {"nan", kiln_from_data(KILN_F64, 2, (int64_t[]){2, 2}, nan_m), "non-finite"},
      {"too large", kiln_zeros(KILN_F32, 2, (int64_t[]){513, 513}), "too large"},
      {"null", NULL, "NULL"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    test_set_context("%s", bad[i].name);
    kiln_clear_error();
    CHECK(kiln_eigh(bad[i].a, &values, &vectors) < 0);
    CHECK(values == NULL && vectors == NULL);
    CHECK_CONTAINS(kiln_error(), bad[i].msg);
  }
  test_set_context("%s", "");
  CHECK(kiln_eigh(kiln_zeros(KILN_F32, 2, (int64_t[]){2, 2}), NULL, &vectors) < 0);
  kiln_scope_end();
}
