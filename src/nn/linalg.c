/* linalg.c — eigen-decomposition of a small symmetric matrix, on the host in double precision
 * (cyclic Jacobi rotations). For initializations such as patch whitening, where the matrix is
 * tens of rows; its cost grows as n^3 per sweep (n = 256: 1.2 s, 512: 19 s on one core), so
 * larger matrices are refused rather than left running for hours. */
#include "internal.h"

#include <math.h>

#define EIGH_MAX_N 512

/* Rotates rows and columns p, q of the n x n matrix a (and the columns of v) by the angle that
 * zeroes a[p][q]: a <- J^T a J, v <- v J, where J is the identity but for J[p][p] = J[q][q] = c,
 * J[p][q] = s, J[q][p] = -s. */
static void jacobi_rotate(double *a, double *v, int n, int p, int q) {
  double apq = a[p * n + q];
  if (apq == 0) return;
  double theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
  double t = (theta >= 0 ? 1 : -1) / (fabs(theta) + sqrt(theta * theta + 1));
  double c = 1 / sqrt(t * t + 1), s = t * c;
  for (int k = 0; k < n; k++) { /* columns p, q */
    double akp = a[k * n + p], akq = a[k * n + q];
    a[k * n + p] = c * akp - s * akq;
    a[k * n + q] = s * akp + c * akq;
  }
  for (int k = 0; k < n; k++) { /* rows p, q */
    double apk = a[p * n + k], aqk = a[q * n + k];
    a[p * n + k] = c * apk - s * aqk;
    a[q * n + k] = s * apk + c * aqk;
  }
  a[p * n + q] = a[q * n + p] = 0; /* exactly, where rounding leaves a trace */
  for (int k = 0; k < n; k++) {
    double vkp = v[k * n + p], vkq = v[k * n + q];
    v[k * n + p] = c * vkp - s * vkq;
    v[k * n + q] = s * vkp + c * vkq;
  }
}

/* Diagonalizes the symmetric a in place (its diagonal ends as the eigenvalues) and fills v
 * (n x n) with the eigenvectors as columns. 0, or -1 if the sweeps did not converge. */
static int jacobi_eigen(double *a, double *v, int n) {
  for (int i = 0; i < n * n; i++) v[i] = i % (n + 1) == 0;
  double total = 0;
  for (int i = 0; i < n * n; i++) total += a[i] * a[i];
  for (int sweep = 0; sweep < 100; sweep++) {
    double off = 0;
    for (int p = 0; p < n; p++)
      for (int q = p + 1; q < n; q++) off += a[p * n + q] * a[p * n + q];
    if (off <= 1e-30 * total || off == 0) return 0;
    for (int p = 0; p < n; p++)
      for (int q = p + 1; q < n; q++) jacobi_rotate(a, v, n, p, q);
  }
  return -1;
}

int kiln_eigh(kiln_tensor *a, kiln_tensor **values, kiln_tensor **vectors) {
  if (values) *values = NULL;
  if (vectors) *vectors = NULL;
  if (!a || !values || !vectors) {
    kn_err("eigh: %s is NULL", !a ? "the matrix (an earlier op failed?)" : "an output pointer");
    return -1;
  }
  kiln_dtype dt = kiln_dtype_of(a);
  if (kiln_ndim(a) != 2 || kiln_dim(a, 0) != kiln_dim(a, 1) || kiln_dim(a, 0) < 1 ||
      (dt != KILN_F32 && dt != KILN_F64)) {
    kn_err("eigh: wants a square f32 or f64 matrix, got %s with %d dims", kiln_dtype_name(dt), kiln_ndim(a));
    return -1;
  }
  int64_t n64 = kiln_dim(a, 0);
  if (n64 > EIGH_MAX_N) {
    kn_err("eigh: a %lld x %lld matrix is too large for this solver (at most %d)", (long long)n64,
           (long long)n64, EIGH_MAX_N);
    return -1;
  }
  int n = (int)n64;
  double *m = kn_xmalloc(sizeof(double) * (size_t)(n * n)), *v = kn_xmalloc(sizeof(double) * (size_t)(n * n));
  int rc = kiln_to_host(kiln_cast(a, KILN_F64), m, sizeof(double) * (size_t)(n * n));
  for (int i = 0; rc == 0 && i < n * n; i++)
    if (!isfinite(m[i])) {
      kn_err("eigh: the matrix has a non-finite element at (%d, %d)", i / n, i % n);
      rc = -1;
    }
  for (int i = 0; rc == 0 && i < n; i++)
    for (int j = i + 1; j < n; j++) {
      double x = m[i * n + j], y = m[j * n + i];
      if (fabs(x - y) > 1e-5 * (fabs(x) + fabs(y)) + 1e-12) {
        kn_err("eigh: the matrix is not symmetric (%g at (%d, %d), %g at (%d, %d))", x, i, j, y, j, i);
        rc = -1;
        break;
      }
      m[i * n + j] = m[j * n + i] = (x + y) / 2;
    }
  if (rc == 0 && jacobi_eigen(m, v, n) < 0) {
    kn_err("eigh: did not converge");
    rc = -1;
  }
  if (rc == 0) { /* ascending order: a selection sort over the columns (n is small) */
    double *vals = kn_xmalloc(sizeof(double) * (size_t)n), *vecs = kn_xmalloc(sizeof(double) * (size_t)(n * n));
    int *order = kn_xmalloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) order[i] = i;
    for (int i = 0; i < n; i++)
      for (int j = i + 1; j < n; j++)
        if (m[order[j] * n + order[j]] < m[order[i] * n + order[i]]) {
          int t = order[i];
          order[i] = order[j], order[j] = t;
        }
    for (int i = 0; i < n; i++) {
      vals[i] = m[order[i] * n + order[i]];
      for (int k = 0; k < n; k++) vecs[k * n + i] = v[k * n + order[i]];
    }
    int64_t nn[2] = {n, n};
    *values = kiln_cast(kiln_from_data(KILN_F64, 1, nn, vals), dt);
    *vectors = kiln_cast(kiln_from_data(KILN_F64, 2, nn, vecs), dt);
    free(vals);
    free(vecs);
    free(order);
    if (!*values || !*vectors) rc = -1;
  }
  free(m);
  free(v);
  return rc;
}
