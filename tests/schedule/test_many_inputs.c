/* test_many_inputs.c — a graph reading more buffers than one kernel can take is split into
 * several kernels instead of failing; values checked against a plain sum. */
#include "test.h"
#include <stdlib.h>

TEST_DEVICES(schedule_many_inputs_split) {
  (void)device;
  enum { N = 150 };
  kiln_tensor *xs[N];
  double want[3] = {0, 0, 0};
  for (int i = 0; i < N; i++) {
    float v[3] = {(float)i, (float)(2 * i), 0.5f};
    xs[i] = kiln_from_data(KILN_F32, 1, (int64_t[]){3}, v);
    for (int k = 0; k < 3; k++) want[k] += v[k];
  }
  kiln_tensor *acc = xs[0];
  for (int i = 1; i < N; i++) acc = kiln_add(acc, xs[i]);
  float got[3];
  REQUIRE(kiln_to_host(acc, got, sizeof got) == 0);
  for (int k = 0; k < 3; k++) CHECK_NEAR(got[k], want[k], 1e-3);
  kiln_tensor *c = kiln_cat(N, xs, 0); /* 150 pieces in one output */
  float *cv = malloc(sizeof(float) * 3 * N);
  REQUIRE(kiln_to_host(c, cv, sizeof(float) * 3 * N) == 0);
  for (int i = 0; i < N; i++) CHECK_NEAR(cv[3 * i + 1], 2.0 * i, 0);
  free(cv);
}
