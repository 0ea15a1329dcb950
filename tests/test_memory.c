/* test_memory.c — scopes keep memory flat: 10,000 build-and-realize iterations leave the
 * live node, tensor and device-byte counts where they were, and RSS does not creep. */
#include <stdlib.h>

#include "check.h"

/* AddressSanitizer's quarantine holds freed memory, so RSS says nothing under it. */
#if defined(__SANITIZE_ADDRESS__)
#define RSS_MEANINGFUL 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RSS_MEANINGFUL 0
#endif
#endif
#ifndef RSS_MEANINGFUL
#define RSS_MEANINGFUL 1
#endif

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long kb = -1;
  while (fgets(line, sizeof line, f))
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
  fclose(f);
  return kb;
}

/* One step: sum(relu(x*2 - 3)) over a 4x4 input built from i. Returns the error of the value
 * against the double result (0 when exact), or NAN on failure. */
static double step(int i) {
  float data[16];
  double want = 0;
  for (int k = 0; k < 16; k++) {
    data[k] = (float)((i * 7 + k * 3) % 11) * 0.5f;
    double v = 2.0 * data[k] - 3.0;
    want += v > 0 ? v : 0;
  }
  int64_t shape[] = {4, 4};
  kiln_scope_begin();
  kiln_tensor *x = kiln_from_data(KILN_F32, 2, shape, data);
  kiln_tensor *y = kiln_sum(
      kiln_relu(kiln_binary_s(KILN_SUB, kiln_binary_s(KILN_MUL, x, 2.0), 3.0)), 0, NULL, false);
  double got = y ? kiln_item(y) : NAN;
  kiln_scope_end();
  return fabs(got - want);
}

static void flat_loop(const char *device, int iters, int rss_from) {
  REQUIRE(kiln_set_device(device) >= 0);
  double err = step(0); /* warm-up: compiles and fills any caches and pools */
  CHECKF(err < 1e-4, "[%s] warm-up step wrong by %g: %s", device, err, test_errmsg());
  kiln_stats before, after;
  kiln_get_stats(&before);
  long rss_a = -1;
  int bad = 0;
  for (int i = 1; i <= iters; i++) {
    if (i == rss_from) rss_a = rss_kb();
    double e = step(i);
    if (!(e < 1e-4) && bad++ < 3)
      test_fail(__FILE__, __LINE__, "[%s] step %d wrong by %g: %s", device, i, e, test_errmsg());
  }
  long rss_b = rss_kb();
  kiln_get_stats(&after);
  CHECKF(after.nodes_live == before.nodes_live, "[%s] nodes_live %lld -> %lld after %d iterations",
         device, (long long)before.nodes_live, (long long)after.nodes_live, iters);
  CHECKF(after.tensors_live == before.tensors_live,
         "[%s] tensors_live %lld -> %lld after %d iterations", device,
         (long long)before.tensors_live, (long long)after.tensors_live, iters);
  CHECKF(after.bytes_allocated == before.bytes_allocated,
         "[%s] bytes_allocated %lld -> %lld after %d iterations", device,
         (long long)before.bytes_allocated, (long long)after.bytes_allocated, iters);
  CHECKF(after.kernels_run - before.kernels_run >= iters,
         "[%s] %d iterations ran only %lld kernels", device, iters,
         (long long)(after.kernels_run - before.kernels_run));
  if (RSS_MEANINGFUL && rss_from > 0 && rss_a > 0 && rss_b > 0)
    CHECKF(rss_b - rss_a < 4096, "[%s] RSS grew %ld kB between iteration %d and %d", device,
           rss_b - rss_a, rss_from, iters);
}

TEST(memory_flat_cpu_10000) { flat_loop("CPU", 10000, 1000); }

TEST(memory_flat_interp_1000) { flat_loop("INTERP", 1000, 0); }

TEST(memory_scope_keep_free) {
  REQUIRE(kiln_set_device("CPU") >= 0);
  int64_t shape[] = {8};
  kiln_stats s0, s1, s2;
  kiln_get_stats(&s0);
  kiln_scope_begin();
  kiln_scope_begin();
  kiln_tensor *a = kiln_full(KILN_F32, 1, shape, 2.0);
  kiln_tensor *b = kiln_exp(a);
  kiln_tensor *kept = kiln_keep(kiln_binary_s(KILN_MUL, b, 0.5));
  kiln_tensor *dropped = kiln_neg(a);
  kiln_free(dropped);
  kiln_scope_end();
  /* kept survives its inner scope and is still usable */
  kiln_get_stats(&s1);
  CHECKF(s1.tensors_live > s0.tensors_live, "kept tensor not live: %lld vs %lld",
         (long long)s1.tensors_live, (long long)s0.tensors_live);
  float out[8];
  CHECK(kept && kiln_to_host(kept, out, sizeof out) == 0);
  for (int i = 0; i < 8; i++)
    CHECK_NEAR(out[i], 0.5 * exp(2.0), 1e-5);
  kiln_scope_end();
  kiln_get_stats(&s2);
  CHECKF(s2.tensors_live == s0.tensors_live, "tensors_live %lld -> %lld after the scopes closed",
         (long long)s0.tensors_live, (long long)s2.tensors_live);
  CHECKF(s2.nodes_live <= s1.nodes_live, "nodes_live grew when scopes closed: %lld -> %lld",
         (long long)s1.nodes_live, (long long)s2.nodes_live);
  CHECKF(s2.bytes_allocated <= s1.bytes_allocated, "bytes grew when scopes closed: %lld -> %lld",
         (long long)s1.bytes_allocated, (long long)s2.bytes_allocated);
}

/* A freed 64 MiB kernel output stays mapped for reuse; kiln_release_memory unmaps it. */
TEST(memory_release_returns_kept_blocks) {
  kiln_set_device("CPU");
  int64_t n = 16 << 20; /* floats */
  kiln_tensor *t = kiln_binary_s(KILN_ADD, kiln_full(KILN_F32, 1, &n, 1), 1.0);
  REQUIRE(kiln_realize(t) == 0);
  kiln_free(t);
  long kept = rss_kb();
  kiln_release_memory();
  long after = rss_kb();
  if (RSS_MEANINGFUL && kept > 0 && after > 0)
    CHECKF(kept - after >= 48 * 1024, "RSS %ld kB before kiln_release_memory, %ld kB after", kept, after);
}
