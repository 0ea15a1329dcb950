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
static char **g_files; /* every file (paths in the test's arena), however many the earlier
                         tests left: thousands */
static int g_nfiles, g_cap;

static int collect(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)ftw;
  if (flag == FTW_F) {
    if (g_nfiles == g_cap) {
      char **more = realloc(g_files, sizeof(char *) * (size_t)(g_cap ? 2 * g_cap : 4096));
      if (!more) return 1; /* stops the walk */
      g_files = more, g_cap = g_cap ? 2 * g_cap : 4096;
    }
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

/* ---- the compiler race ---------------------------------------------------------------------- */
static bool on_path(const char *prog) {
  const char *path = getenv("PATH");
  char full[4200];
  for (const char *p = path ? path : ""; *p;) {
    size_t n = strcspn(p, ":");
    snprintf(full, sizeof full, "%.*s/%s", (int)n, p, prog);
    if (n > 0 && access(full, X_OK) == 0) return true;
    p += n + (p[n] == ':');
  }
  return false;
}

/* The files in the cache directory whose path contains `tag` (".pick": the compiler race's
 * verdicts; "/tune/": the autotuner's) and that are not among old[0..nold); names into out[].
 * (Other tests leave verdicts there, some of them corrupted on purpose.) */
static int list_new(const char *dir, const char *tag, char old[][4200], int nold, char out[][4200],
                    int max) {
  int n = 0, nf = list_files(dir);
  for (int i = 0; i < nf && n < max; i++) {
    bool seen = false;
    for (int j = 0; j < nold && !seen; j++)
      seen = !strcmp(old[j], g_files[i]);
    if (!seen && strstr(g_files[i], tag) && !strstr(g_files[i], ".sum"))
      snprintf(out[n++], 4200, "%s", g_files[i]);
  }
  return n;
}

/* a (m x k) and b (k x n) random, and the reference of (a * g_c) @ b */
static double mul2(double x, double y) { return x * y; }
static ref_t *matmul_case(uint64_t seed, int64_t m, int64_t k, int64_t n, ref_t **a, ref_t **b) {
  ref_rng g = ref_rng_seed(seed);
  *a = ref_random(&g, 2, (int64_t[]){m, k}, KILN_F32, -1, 1, 0);
  *b = ref_random(&g, 2, (int64_t[]){k, n}, KILN_F32, -1, 1, 0);
  return ref_matmul(ref_map2(*a, ref_scalar(g_c), mul2), *b);
}

/* a scaled by g_c, times b */
static ref_t *race_program(const ref_t *a, const ref_t *b, int64_t *compiled) {
  kiln_stats before, after;
  kiln_scope_begin();
  kiln_tensor *ta = kt_from_ref(a, KILN_F32), *tb = kt_from_ref(b, KILN_F32);
  if (ta) kiln_realize(ta);
  if (tb) kiln_realize(tb);
  kiln_get_stats(&before);
  kiln_tensor *y = kiln_matmul(kiln_binary_s(KILN_MUL, ta, g_c), tb);
  int rc = y ? kiln_realize(y) : -1;
  kiln_get_stats(&after);
  CHECKF(rc >= 0, "race program: realize failed: %s", test_errmsg());
  ref_t *got = rc >= 0 ? kt_read(y) : NULL;
  kiln_scope_end();
  *compiled = after.kernels_compiled - before.kernels_compiled;
  return got;
}
/* race_program from empty in-memory caches (the disk cache stays), checked against want */
static ref_t *fresh_run(const char *what, const ref_t *a, const ref_t *b, const ref_t *want,
                        int64_t *compiled) {
  kiln_reset_caches();
  ref_t *v = race_program(a, b, compiled);
  if (v) kt_compare(what, v, want, NULL, 1e-4, 1e-4);
  return v;
}

static bool same_bits(const ref_t *x, const ref_t *y) {
  if (!x || !y || x->ndim != y->ndim) return false;
  int64_t n = 1;
  for (int i = 0; i < x->ndim; i++)
    n *= x->shape[i];
  return memcmp(x->data + x->offset, y->data + y->offset, sizeof(double) * (size_t)n) == 0;
}

/* Each of the files names one of the two compilers. */
static void check_race_verdicts(char files[][4200], int n, const char *when) {
  for (int i = 0; i < n; i++) {
    FILE *f = fopen(files[i], "r");
    char name[64] = "";
    if (f) {
      if (!fgets(name, sizeof name, f)) name[0] = 0;
      fclose(f);
    }
    CHECKF(!strcmp(name, "clang\n") || !strcmp(name, "cc\n"), "%s: verdict %s reads '%s'", when,
           files[i], name);
  }
}

/* With two compilers installed (KILN_CC unset, clang and cc on PATH), a big kernel is built by
 * both, timed, and the verdict written to a .pick file naming the winner; after
 * kiln_reset_caches the program compiles nothing and gives the same bits; a garbage verdict is
 * raced again, not trusted. With one compiler there is no race and no verdict. */
TEST(cache_compiler_race) {
  REQUIRE(kiln_set_device("CPU") >= 0);
  const char *dir = test_cache_dir();
  REQUIRE(dir && dir[0]);
  const char *cc = getenv("KILN_CC");
  bool two = !(cc && *cc) && on_path("clang") && on_path("cc");
  g_c = 1.0 + (double)(getpid() % 997) / 1024.0; /* a program this cache has not seen */
  ref_t *a, *b, *want = matmul_case(11, 256, 256, 256, &a, &b);
  static char before[1024][4200], after[64][4200];
  int nb = list_new(dir, ".pick", NULL, 0, before, 1024);

  int64_t c1;
  ref_t *v1 = fresh_run("raced matmul", a, b, want, &c1);
  REQUIRE(v1);
  int na = list_new(dir, ".pick", before, nb, after, 64);
  if (!two) {
    CHECKF(na == 0, "one compiler installed, yet %d race verdicts appeared", na);
    return;
  }
  CHECKF(na > 0, "no race verdict written for a kernel of 17M multiply-adds");
  CHECKF(c1 >= 2, "a raced kernel was built %lld times, want both compilers' builds",
         (long long)c1);
  check_race_verdicts(after, na, "after the race");

  int64_t c2;
  ref_t *v2 = fresh_run("raced matmul, again", a, b, want, &c2);
  CHECKF(c2 == 0, "after the race, the same program compiled %lld kernels, want 0", (long long)c2);
  CHECKF(same_bits(v1, v2), "the raced kernel gave different values on the next run");

  for (int i = 0; i < na; i++) { /* garbage verdicts: raced again */
    FILE *f = fopen(after[i], "w");
    if (f) fputs("no-such-compiler\n", f), fclose(f);
  }
  int64_t c3;
  REQUIRE(fresh_run("matmul after a garbage verdict", a, b, want, &c3));
  CHECKF(c3 == 0, "garbage verdicts: %lld compiles, want 0 (both builds are on disk)",
         (long long)c3);
  check_race_verdicts(after, na, "after garbage verdicts");
  kiln_reset_caches();
}

/* ---- the autotuner ----------------------------------------------------------------------------
 */
/* The transforms of a verdict file ("UPCAST(0,4) SPLIT(0,8)"): how many, or -1 if the text
 * is not such a list or an UPCAST factor does not divide 256 (every dim of the test's kernel). */
static int verdict_opts(const char *path) {
  char t[512] = "";
  FILE *f = fopen(path, "r");
  size_t n = f ? fread(t, 1, sizeof t - 1, f) : 0;
  if (f) fclose(f);
  t[n] = 0;
  int count = 0, used;
  char name[16];
  int axis, amt;
  for (const char *p = t; *p;) {
    while (*p == ' ' || *p == '\n')
      p++;
    if (!*p) break;
    if (sscanf(p, "%15[A-Z](%d,%d)%n", name, &axis, &amt, &used) != 3) return -1;
    if (!strcmp(name, "UPCAST") && (amt < 1 || 256 % amt)) return -1;
    if (strcmp(name, "UPCAST") && strcmp(name, "SPLIT") && strcmp(name, "BLOCK") &&
        strcmp(name, "UNROLL") && strcmp(name, "PADTO"))
      return -1;
    count++, p += used;
  }
  return n ? count : -1;
}

/* A reduce kernel of 200 MFLOP is lowered several ways, timed, and the fastest kept; the verdict
 * (the list of transforms: UPCAST, SPLIT, BLOCK on the CPU) is written to <cache>/tune;
 * after kiln_reset_caches the same program compiles nothing and gives the same bits; a garbage
 * verdict is tuned again. */
TEST(cache_autotune_verdict) {
  REQUIRE(kiln_set_device("CPU") >= 0);
  const char *dir = test_cache_dir();
  REQUIRE(dir && dir[0]);
  g_c = 1.0 + (double)(getpid() % 991) / 2048.0;
  ref_t *a, *b, *want = matmul_case(12, 256, 1536, 256, &a, &b);
  static char before[1024][4200], made[16][4200];
  int nb = list_new(dir, "/tune/", NULL, 0, before, 1024);

  int64_t c1;
  ref_t *v1 = fresh_run("tuned matmul", a, b, want, &c1);
  REQUIRE(v1);
  int nm = list_new(dir, "/tune/", before, nb, made, 16);
  CHECKF(nm == 1, "%d tuning verdicts written for one big kernel, want 1", nm);
  CHECKF(c1 >= 3, "the tuned kernel was compiled %lld times, want several candidates",
         (long long)c1);
  REQUIRE(nm == 1);
  int got = verdict_opts(made[0]);
  CHECKF(got >= 0, "verdict %s: not a list of CPU transforms", made[0]);

  int64_t c2;
  ref_t *v2 = fresh_run("tuned matmul, again", a, b, want, &c2);
  CHECKF(c2 == 0, "after tuning, the same program compiled %lld kernels, want 0", (long long)c2);
  CHECKF(same_bits(v1, v2), "the tuned kernel gave different values on the next run");

  FILE *f = fopen(made[0], "w");
  if (f) fputs("UPCAST(0,7) banana\n", f), fclose(f);
  int64_t c3;
  REQUIRE(fresh_run("matmul after a garbage verdict", a, b, want, &c3));
  CHECKF(verdict_opts(made[0]) >= 0, "garbage verdict not replaced");
  kiln_reset_caches();
}

/* fresh_run, also counting the kernels the search searched */
static ref_t *searched_run(const char *what, const ref_t *a, const ref_t *b, const ref_t *want,
                           int64_t *compiled, int64_t *searched) {
  kiln_stats s0, s1;
  kiln_get_stats(&s0);
  ref_t *v = fresh_run(what, a, b, want, compiled);
  kiln_get_stats(&s1);
  *searched = s1.kernels_searched - s0.kernels_searched;
  return v;
}

/* With the run's search budget spent (KILN_TUNE_BUDGET=0), a new big kernel runs the
 * heuristic's lowering, correct, and no verdict is written: a later run searches it. */
TEST(cache_search_budget) {
  REQUIRE(kiln_set_device("CPU") >= 0);
  const char *dir = test_cache_dir();
  REQUIRE(dir && dir[0]);
  g_c = 1.25 + (double)(getpid() % 977) / 4096.0;
  ref_t *a, *b, *want = matmul_case(12, 256, 1536, 256, &a, &b);
  static char before[1024][4200], made[16][4200];
  int nb = list_new(dir, "/tune/", NULL, 0, before, 1024);
  const char *old = getenv("KILN_TUNE_BUDGET");
  char saved[64];
  snprintf(saved, sizeof saved, "%s", old ? old : "");
  setenv("KILN_TUNE_BUDGET", "0", 1);
  int64_t c1, n1;
  ref_t *v1 = searched_run("matmul, budget spent", a, b, want, &c1, &n1);
  CHECKF(n1 == 0, "%lld kernels searched with no budget", (long long)n1);
  if (old)
    setenv("KILN_TUNE_BUDGET", saved, 1);
  else
    unsetenv("KILN_TUNE_BUDGET");
  REQUIRE(v1);
  CHECKF(c1 == 1, "with no budget, the kernel was compiled %lld times, want 1", (long long)c1);
  int nm = list_new(dir, "/tune/", before, nb, made, 16);
  CHECKF(nm == 0, "%d verdicts written with no budget, want 0", nm);
  int64_t c2;
  REQUIRE(fresh_run("matmul, budget back", a, b, want, &c2));
  nm = list_new(dir, "/tune/", before, nb, made, 16);
  CHECKF(nm == 1 && c2 >= 3, "with the budget back: %d verdicts, %lld compiles (want 1, several)",
         nm, (long long)c2);
  kiln_reset_caches();
}

/* BEAM=1: a beam search over transform lists for a kernel the default search skips (4 MFLOP);
 * its verdict is a list of CPU transforms, the values stay right, and the next run reads the
 * verdict instead of searching (its kernel is already on disk: nothing compiled). */
TEST(cache_beam_search) {
  REQUIRE(kiln_set_device("CPU") >= 0);
  const char *dir = test_cache_dir();
  REQUIRE(dir && dir[0]);
  g_c = 1.5 + (double)(getpid() % 983) / 4096.0;
  ref_t *a, *b, *want = matmul_case(13, 128, 128, 128, &a, &b);
  static char before[1024][4200], made[16][4200];
  int nb = list_new(dir, "/tune/", NULL, 0, before, 1024);
  setenv("BEAM", "1", 1);
  int64_t c1, c2, n1, n2;
  ref_t *v1 = searched_run("matmul, BEAM=1", a, b, want, &c1, &n1);
  ref_t *v2 = searched_run("matmul, BEAM=1 again", a, b, want, &c2, &n2);
  unsetenv("BEAM");
  REQUIRE(v1 && v2);
  int nm = list_new(dir, "/tune/", before, nb, made, 16);
  CHECKF(nm == 1, "%d verdicts from a beam search of one kernel, want 1", nm);
  CHECKF(c1 >= 5, "the beam search compiled %lld kernels, want several lists", (long long)c1);
  CHECKF(nm != 1 || verdict_opts(made[0]) >= 0, "verdict %s: not a list of CPU transforms",
         made[0]);
  CHECKF(n1 == 1, "%lld kernels searched, want 1", (long long)n1);
  CHECKF(n2 == 0 && c2 == 0,
         "the next run searched %lld kernels and compiled %lld, want 0 and 0 (the verdict)",
         (long long)n2, (long long)c2);
  CHECKF(same_bits(v1, v2), "the searched kernel gave different values on the next run");
  /* a run without BEAM (whose own search skips a kernel this small) uses the verdict too */
  int64_t c3, n3;
  ref_t *v3 = searched_run("matmul, no BEAM", a, b, want, &c3, &n3);
  REQUIRE(v3);
  CHECKF(n3 == 0 && c3 == 0,
         "a run without BEAM searched %lld kernels and compiled %lld, want 0 and 0 (the verdict)",
         (long long)n3, (long long)c3);
  CHECKF(same_bits(v1, v3), "the verdict's kernel gave different values without BEAM");
  kiln_reset_caches();
}
