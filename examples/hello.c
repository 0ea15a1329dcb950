/* hello.c — a first kiln program: y = softmax(relu(x @ w)) over the last axis.
 * Every call below only records graph; nothing runs until kiln_to_host asks for y's data.
 * Then kiln fuses the graph into a few kernels, generates C for them, compiles them (once:
 * they are cached in $KILN_CACHE) and runs them. The stats at the end say how many kernels
 * ran and how many had to be compiled; run it twice and the second run compiles nothing.
 * Build: make; run: build/example_hello (KILN_DEVICE=INTERP runs it on the interpreter). */
#include "kiln.h"

#include <stdio.h>

int main(void) {
  /* x: (2,3) holding 0..5; w: (3,4) from host data */
  int64_t xshape[2] = {2, 3}, wshape[2] = {3, 4};
  const float wdata[12] = {0.5f,   -1.0f, 0.25f, 2.0f,   /* row 0 */
                           1.0f,   0.5f,  -0.5f, 0.0f,   /* row 1 */
                           -0.25f, 1.5f,  1.0f,  0.75f}; /* row 2 */
  kiln_tensor *x = kiln_reshape(kiln_arange(0, 6, 1, KILN_F32), 2, xshape);
  kiln_tensor *w = kiln_from_data(KILN_F32, 2, wshape, wdata);

  kiln_tensor *h = kiln_relu(kiln_matmul(x, w)); /* (2,4) */
  kiln_tensor *y = kiln_softmax(h, -1);          /* (2,4), each row sums to 1 */

  float out[8];
  /* One check at the end of the chain: a NULL anywhere propagates, keeping the first error. */
  if (kiln_to_host(y, out, sizeof out) < 0) {
    fprintf(stderr, "hello: %s\n", kiln_error());
    return 1;
  }

  printf("softmax(relu(x @ w)) on %s:\n", kiln_get_device());
  for (int i = 0; i < 2; i++) {
    float sum = 0;
    printf("  row %d:", i);
    for (int j = 0; j < 4; j++) {
      printf(" %8.5f", out[i * 4 + j]);
      sum += out[i * 4 + j];
    }
    printf("   (sum %.5f)\n", sum);
  }

  kiln_stats st;
  kiln_get_stats(&st);
  printf("kernels run %lld, compiled %lld, schedules %lld, tensors live %lld\n",
         (long long)st.kernels_run, (long long)st.kernels_compiled, (long long)st.schedules,
         (long long)st.tensors_live);
  return 0;
}
