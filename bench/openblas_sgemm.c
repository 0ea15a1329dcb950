/* openblas_sgemm.c — the peer for `kiln bench matmul`: times OpenBLAS cblas_sgemm on n x n
 * f32 matrices with the same protocol (one checked warm-up, then the median of N runs) and
 * prints lines in the same format. Threads come from OPENBLAS_NUM_THREADS.
 * usage: openblas_sgemm [--sizes 512,1024,2048] [--runs N] */
#include <cblas.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SIZES 32
#define MAX_N 16384
#define MAX_RUNS 1000

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static long parse_long(const char *s, long lo, long hi) { /* -1 when not in [lo, hi] */
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  return (errno || end == s || *end != '\0' || v < lo || v > hi) ? -1 : v;
}

static int parse_sizes(char *s, long *sizes) {
  int n = 0;
  for (char *save = NULL, *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    if (n == MAX_SIZES || (sizes[n] = parse_long(t, 1, MAX_N)) < 0) return -1;
    n++;
  }
  return n;
}

/* Fills v with uniform [0,1) floats from a small LCG; the values only need to be ordinary. */
static void fill(float *v, size_t count, uint64_t seed) {
  for (size_t i = 0; i < count; i++) {
    seed = seed * 6364136223846793005u + 1442695040888963407u;
    v[i] = (float)(seed >> 40) / (float)(1u << 24);
  }
}

/* Checks a few entries of c = a @ b against a double-precision sum (a wrong BLAS kernel for
 * this CPU would otherwise be timed as if it were right). */
static int result_ok(const float *a, const float *b, const float *c, long n) {
  for (int s = 0; s < 16; s++) {
    long i = (s * 7919L) % n, j = (s * 104729L + 3) % n;
    double ref = 0, mag = 0;
    for (long k = 0; k < n; k++) {
      double term = (double)a[i * n + k] * (double)b[k * n + j];
      ref += term;
      mag += term < 0 ? -term : term;
    }
    double tol = (1e-5 + 1e-7 * (double)n) * (mag > 1 ? mag : 1);
    double err = (double)c[i * n + j] - ref;
    if (err > tol || err < -tol) {
      fprintf(stderr, "openblas_sgemm: wrong result at (%ld,%ld): got %g, expected %g\n", i, j,
              (double)c[i * n + j], ref);
      return 0;
    }
  }
  return 1;
}

static void sgemm(const float *a, const float *b, float *c, long n) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0f, a, (int)n, b,
              (int)n, 0.0f, c, (int)n);
}

static int bench_one(long n, int runs) {
  size_t count = (size_t)n * (size_t)n;
  float *a = malloc(count * sizeof *a), *b = malloc(count * sizeof *b);
  float *c = malloc(count * sizeof *c);
  double times[MAX_RUNS];
  int rc = 1;
  if (!a || !b || !c) {
    fprintf(stderr, "openblas_sgemm: out of memory for n=%ld\n", n);
    goto done;
  }
  fill(a, count, 1);
  fill(b, count, 2);
  sgemm(a, b, c, n); /* warm-up: thread pool start, page faults */
  if (!result_ok(a, b, c, n)) goto done;
  for (int r = 0; r < runs; r++) {
    double t0 = now_seconds();
    sgemm(a, b, c, n);
    times[r] = now_seconds() - t0;
  }
  qsort(times, (size_t)runs, sizeof times[0], cmp_double);
  double t = runs % 2 ? times[runs / 2] : 0.5 * (times[runs / 2 - 1] + times[runs / 2]);
  printf("openblas %ldx%ldx%ld f32  CPU  median %.2f ms  %.1f GFLOP/s\n", n, n, n, t * 1e3,
         2.0 * (double)n * (double)n * (double)n / t * 1e-9);
  fflush(stdout);
  rc = 0;
done:
  free(a);
  free(b);
  free(c);
  return rc;
}

int main(int argc, char **argv) {
  long sizes[MAX_SIZES] = {512, 1024, 2048};
  int nsizes = 3;
  long runs = 5;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--sizes") == 0 && i + 1 < argc) {
      if ((nsizes = parse_sizes(argv[++i], sizes)) <= 0) {
        fprintf(stderr, "openblas_sgemm: bad --sizes: want sizes in 1..%d, comma-separated\n",
                MAX_N);
        return 2;
      }
    } else if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      if ((runs = parse_long(argv[++i], 1, MAX_RUNS)) < 0) {
        fprintf(stderr, "openblas_sgemm: bad --runs '%s': want 1..%d\n", argv[i], MAX_RUNS);
        return 2;
      }
    } else {
      fprintf(stderr, "usage: openblas_sgemm [--sizes 512,1024,2048] [--runs N]\n");
      return 2;
    }
  }
#ifdef OPENBLAS_VERSION
  /* Which kernel OpenBLAS picked matters as much as the number it prints. */
  printf("#%s| core %s | threads %d\n", OPENBLAS_VERSION, openblas_get_corename(),
         openblas_get_num_threads());
#endif
  for (int s = 0; s < nsizes; s++)
    if (bench_one(sizes[s], (int)runs) != 0) return 1;
  return 0;
}
