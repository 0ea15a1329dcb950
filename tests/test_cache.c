/* test_cache.c — the CPU device's disk cache of compiled kernels: a new program compiles,
 * the same program after kiln_reset_caches() is served from disk (0 compiles), and a
 * cache whose files were all truncated or overwritten with garbage is rebuilt, not trusted.
 * The runner points KILN_CACHE at a fresh directory; file names are not assumed. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

/* ---- walking the cache directory ------------------------------------------------------------ */
#define MAX_FILES 4096
static char *g_files[MAX_FILES];
static int g_nfiles;

static int collect(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)ftw;
  if (flag == FTW_F && g_nfiles < MAX_FILES) {
    g_files[g_nfiles] = ref_alloc(strlen(path) + 1);
    strcpy(g_files[g_nfiles++], path);
  }
  return 0;
}

static int list_files(const char *dir) {
  g_nfiles = 0;
  nftw(dir, collect, 16, FTW_PHYS);
  return g_nfiles;
}

/* Replaces path with a new file (new inode, so nothing mapped is touched): empty when
 * `truncate`, else the original size (at least 64 bytes) of garbage. */
static bool corrupt(const char *path, bool truncate_it, uint64_t seed) {
  struct stat st;
  if (stat(path, &st) != 0) return false;
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.corrupt-tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return false;
  bool ok = true;
  if (!truncate_it) {
    ref_rng g = ref_rng_seed(seed);
    size_t n = st.st_size > 64 ? (size_t)st.st_size : 64;
    unsigned char buf[4096];
    while (n > 0 && ok) {
      size_t k = n < sizeof buf ? n : sizeof buf;
      for (size_t i = 0; i < k; i++)
        buf[i] = (unsigned char)ref_rng_next(&g);
      if (k > 4)
        memcpy(buf,
               "\x7f"
               "ELF",
               4); /* looks like a binary, is not one */
      ok = write(fd, buf, k) == (ssize_t)k;
      n -= k;
    }
  }
  close(fd);
  return ok && rename(tmp, path) == 0;
}

/* ---- the program under test ----------------------------------------------------------------- */
static double g_c;
static double r_prog(double x) { return sin(x * g_c + 7.5) - 0.125; }

/* Builds the program fresh, realizes it; returns compiles and checks its values. */
static int64_t run_program(const ref_t *x, const char *stage, int64_t *kernels) {
  kiln_stats before, after;
  kiln_scope_begin();
  kiln_tensor *t = kt_from_ref(x, KILN_F32);
  if (t) kiln_realize(t);
  kiln_get_stats(&before);
  kiln_tensor *y = kiln_binary_s(
      KILN_SUB, kiln_unary(KILN_SIN, kiln_binary_s(KILN_ADD, kiln_binary_s(KILN_MUL, t, g_c), 7.5)),
      0.125);
  int rc = y ? kiln_realize(y) : -1;
  kiln_get_stats(&after);
  CHECKF(rc >= 0, "%s: realize failed: %s", stage, test_errmsg());
  ref_t *got = rc >= 0 ? kt_read(y) : NULL;
  if (got) {
    char what[128];
    snprintf(what, sizeof what, "cached program, %s", stage);
    kt_compare(what, got, ref_map(x, r_prog), NULL, 1e-5, 1e-5);
  }
  kiln_scope_end();
  *kernels = after.kernels_run - before.kernels_run;
  return after.kernels_compiled - before.kernels_compiled;
}

TEST(cache_disk_hit_and_corruption) {
  REQUIRE(kiln_set_device("CPU") >= 0);
  const char *dir = test_cache_dir();
  REQUIRE(dir && dir[0]);
  /* a constant unique to this process, so even a kept cache has not seen the program */
  g_c = 1.0 + (double)(getpid() % 1021) / 1024.0;
  ref_rng g = ref_rng_seed(7);
  int64_t shape[] = {7, 13};
  ref_t *x = ref_random(&g, 2, shape, KILN_F32, -3, 3, 0);
  int64_t kr;

  kiln_reset_caches();
  int64_t c1 = run_program(x, "first run", &kr);
  CHECKF(c1 >= 1, "a new program compiled %lld kernels, want >= 1", (long long)c1);
  CHECKF(kr >= 1, "first run launched %lld kernels", (long long)kr);

  int nfiles = list_files(dir);
  CHECKF(nfiles > 0, "no files in the cache directory %s after compiling", dir);

  kiln_reset_caches();
  int64_t c2 = run_program(x, "after reset (disk hit)", &kr);
  CHECKF(c2 == 0, "same program after kiln_reset_caches compiled %lld kernels, want 0 (disk hit)",
         (long long)c2);
  CHECKF(kr >= 1, "disk-hit run launched %lld kernels", (long long)kr);

  /* overwrite every cache file with garbage (every third one truncated to nothing) */
  kiln_reset_caches();
  nfiles = list_files(dir);
  int corrupted = 0;
  for (int i = 0; i < nfiles; i++)
    corrupted += corrupt(g_files[i], i % 3 == 0, (uint64_t)i + 99);
  CHECKF(corrupted == nfiles && nfiles > 0, "corrupted %d of %d cache files", corrupted, nfiles);

  int64_t c3 = run_program(x, "after corrupting the cache", &kr);
  CHECKF(c3 >= 1, "a corrupted cache was trusted: %lld compiles, want >= 1", (long long)c3);

  kiln_reset_caches();
  int64_t c4 = run_program(x, "after the rebuild", &kr);
  CHECKF(c4 == 0, "the rebuilt cache entry was not reused: %lld compiles", (long long)c4);
  kiln_reset_caches();
}

TEST(cache_in_memory_reuse) {
  REQUIRE(kiln_set_device("CPU") >= 0);
  ref_rng g = ref_rng_seed(8);
  g_c = 0.75;
  int64_t shape[] = {3, 5};
  ref_t *x = ref_random(&g, 2, shape, KILN_F32, -3, 3, 0);
  int64_t kr;
  run_program(x, "warm-up", &kr);
  int64_t c = run_program(x, "rebuilt graph, same program", &kr);
  CHECKF(c == 0, "a program already loaded compiled again: %lld compiles", (long long)c);
  CHECKF(kr >= 1, "rebuilt graph launched %lld kernels", (long long)kr);
}
