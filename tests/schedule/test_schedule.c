/* test_schedule.c — scheduler cases where one reduce is reached both directly and through an
 * expand (it must get its own buffer and be read by every kernel that uses it). Expected
 * values come from a plain double-precision loop here. */
#include "test.h"

static void run_case(const char *dev) {
  kiln_set_device(dev);
  enum { N = 3, K = 5, M = 4 };
  float a[N * K], b[K * M];
  for (int i = 0; i < N * K; i++) a[i] = (float)((i * 7 % 11) - 5) / 4;
  for (int i = 0; i < K * M; i++) b[i] = (float)((i * 5 % 13) - 6) / 5;
  kiln_tensor *ta = kiln_from_data(KILN_F32, 2, (int64_t[]){N, K}, a);
  kiln_tensor *tb = kiln_from_data(KILN_F32, 2, (int64_t[]){K, M}, b);
  kiln_tensor *y = kiln_softmax(kiln_relu(kiln_matmul(ta, tb)), -1);
  float out[N * M];
  REQUIRE(kiln_to_host(y, out, sizeof out) == 0);
  for (int i = 0; i < N; i++) {
    double h[M], mx = -INFINITY, s = 0;
    for (int j = 0; j < M; j++) {
      h[j] = 0;
      for (int k = 0; k < K; k++) h[j] += (double)a[i * K + k] * b[k * M + j];
      h[j] = h[j] > 0 ? h[j] : 0;
      mx = h[j] > mx ? h[j] : mx;
    }
    for (int j = 0; j < M; j++) s += exp(h[j] - mx);
    for (int j = 0; j < M; j++) CHECK_NEAR(out[i * M + j], exp(h[j] - mx) / s, 1e-5);
  }
  /* r + flip(r): the same reduce read through two index paths in one kernel */
  kiln_tensor *r = kiln_sum(ta, 1, (int[]){1}, false);
  kiln_tensor *z = kiln_add(r, kiln_flip(r, 1, (int[]){0}));
  float zo[N];
  REQUIRE(kiln_to_host(z, zo, sizeof zo) == 0);
  double rs[N] = {0};
  for (int i = 0; i < N; i++)
    for (int k = 0; k < K; k++) rs[i] += a[i * K + k];
  for (int i = 0; i < N; i++) CHECK_NEAR(zo[i], rs[i] + rs[N - 1 - i], 1e-5);
}

TEST(schedule_reduce_read_direct_and_expanded) {
  run_case("CPU");
  run_case("INTERP");
  kiln_set_device("CPU");
}
