/* main.c — the test runner: runs every registered test (or those whose name contains an
 * argument), each in its own kiln scope, prints one line per failing test and a summary.
 * Usage: kiln_tests [-v] [-l] [substring...]. The disk cache goes to a fresh temp dir unless
 * KILN_TEST_CACHE names one to keep; KILN_TEST_SEED varies the random cases. */
#define _GNU_SOURCE
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "ref.h"
#include "test.h"

/* ---- registry ---------------------------------------------------------------------------- */
typedef struct {
  const char *name, *file;
  test_fn fn;
  int order;
} test_entry;

static test_entry *g_tests;
static int g_ntests, g_cap;

void test_register(const char *name, const char *file, test_fn fn) {
  if (g_ntests == g_cap) {
    g_cap = g_cap ? 2 * g_cap : 64;
    g_tests = realloc(g_tests, (size_t)g_cap * sizeof *g_tests);
    if (!g_tests) abort();
  }
  g_tests[g_ntests] = (test_entry){name, file, fn, g_ntests};
  g_ntests++;
}

static int cmp_entry(const void *pa, const void *pb) {
  const test_entry *a = pa, *b = pb;
  int c = strcmp(a->file, b->file);
  return c ? c : a->order - b->order;
}

/* ---- failures of the running test ---------------------------------------------------------- */
#define MAX_MSGS 8
#define MSG_LEN 512
static char g_msgs[MAX_MSGS][MSG_LEN];
static int g_nfail;
static char g_context[128];
static const char *g_current = "(none)";

void test_fail(const char *file, int line, const char *fmt, ...) {
  if (g_nfail < MAX_MSGS) {
    const char *base = strrchr(file, '/');
    char *m = g_msgs[g_nfail];
    int n = snprintf(m, MSG_LEN, "%s:%d: %s%s", base ? base + 1 : file, line, g_context,
                     g_context[0] ? ": " : "");
    if (n < 0 || n >= MSG_LEN) n = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m + n, (size_t)(MSG_LEN - n), fmt, ap);
    va_end(ap);
  }
  g_nfail++;
}

int test_failures(void) { return g_nfail; }

void test_set_context(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(g_context, sizeof g_context, fmt, ap);
  va_end(ap);
}

const char *test_context(void) { return g_context; }

bool test_contains(const char *s, const char *sub) {
  return s && sub && strcasestr(s, sub) != NULL;
}

const char *test_errmsg(void) {
  const char *e = kiln_error();
  return e ? e : "";
}

bool test_has_error(void) { return test_errmsg()[0] != 0; }

/* ---- devices ----------------------------------------------------------------------------- */
int test_ndevices;
const char *test_devices[TEST_MAX_DEVICES];
static void setup_devices(void) {
  static char names[256];
  const char *e = getenv("KILN_TEST_DEVICES");
  if (e && *e) {
    snprintf(names, sizeof names, "%s", e);
    for (char *p = strtok(names, ","); p && test_ndevices < TEST_MAX_DEVICES; p = strtok(NULL, ","))
      test_devices[test_ndevices++] = p;
    return;
  }
  test_devices[test_ndevices++] = "CPU";
  test_devices[test_ndevices++] = "INTERP";
  for (int i = 0; i < kiln_device_count() && test_ndevices < TEST_MAX_DEVICES; i++) {
    const char *name = kiln_device_name(i);
    if (strcmp(name, "CPU") && strcmp(name, "INTERP") && !kiln_device_status(i))
      test_devices[test_ndevices++] = name;
  }
}

void test_on_devices(void (*body)(const char *device)) {
  char saved_dev[64], saved_ctx[sizeof g_context];
  snprintf(saved_dev, sizeof saved_dev, "%s", kiln_get_device() ? kiln_get_device() : "CPU");
  memcpy(saved_ctx, g_context, sizeof g_context);
  for (int i = 0; i < test_ndevices; i++) {
    const char *dev = test_devices[i];
    test_set_context("%s", dev);
    if (kiln_set_device(dev) < 0) {
      test_fail(__FILE__, __LINE__, "kiln_set_device(\"%s\") failed: %s", dev, test_errmsg());
      kiln_clear_error();
      continue;
    }
    kiln_scope_begin();
    body(dev);
    kiln_scope_end();
  }
  kiln_set_device(saved_dev);
  memcpy(g_context, saved_ctx, sizeof g_context);
}

uint64_t test_seed(uint64_t base) {
  const char *e = getenv("KILN_TEST_SEED");
  if (!e || !e[0]) return base;
  return base ^ (strtoull(e, NULL, 0) * UINT64_C(0x9e3779b97f4a7c15));
}

/* ---- the disk cache directory --------------------------------------------------------------- */
static char g_cache_dir[512];
static bool g_cache_is_temp;

const char *test_cache_dir(void) { return g_cache_dir; }

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  remove(path);
  return 0;
}

static void setup_cache_dir(void) {
  const char *keep = getenv("KILN_TEST_CACHE");
  if (keep && keep[0]) {
    snprintf(g_cache_dir, sizeof g_cache_dir, "%s", keep);
  } else {
    const char *tmp = getenv("TMPDIR");
    snprintf(g_cache_dir, sizeof g_cache_dir, "%s/kiln-test-cache-XXXXXX",
             tmp && tmp[0] ? tmp : "/tmp");
    if (!mkdtemp(g_cache_dir)) {
      perror("mkdtemp");
      exit(2);
    }
    g_cache_is_temp = true;
  }
  setenv("KILN_CACHE", g_cache_dir, 1);
  /* the search's per-run budget would leave later tests' kernels unsearched: the tests that
   * check the search must not depend on what ran before them */
  setenv("KILN_TUNE_BUDGET", "1000000", 0);
}

/* ---- crashes ----------------------------------------------------------------------------- */
static void on_crash(int sig) {
  char buf[256];
  int n =
      snprintf(buf, sizeof buf, "\nCRASH: signal %d in test %s [%s]\n", sig, g_current, g_context);
  if (n > 0) (void)!write(2, buf, (size_t)n);
  _exit(3);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- main ---------------------------------------------------------------------------------- */
int main(int argc, char **argv) {
  bool verbose = false, list = false;
  int nfilters = 0;
  const char **filters = calloc((size_t)argc + 1, sizeof *filters);
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-v"))
      verbose = true;
    else if (!strcmp(argv[i], "-l"))
      list = true;
    else
      filters[nfilters++] = argv[i];
  }
  qsort(g_tests, (size_t)g_ntests, sizeof *g_tests, cmp_entry);
  if (list) {
    for (int i = 0; i < g_ntests; i++)
      printf("%s\n", g_tests[i].name);
    return 0;
  }

  setup_cache_dir();
  setup_devices();
  printf("devices:");
  for (int i = 0; i < test_ndevices; i++)
    printf(" %s", test_devices[i]);
  printf("\n");
  fflush(stdout);
  int sigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
    signal(sigs[i], on_crash);

  char default_dev[64];
  snprintf(default_dev, sizeof default_dev, "%s", kiln_get_device() ? kiln_get_device() : "CPU");

  int passed = 0, failed = 0;
  double t_all = now_s();
  for (int i = 0; i < g_ntests; i++) {
    test_entry *t = &g_tests[i];
    bool selected = nfilters == 0;
    for (int f = 0; f < nfilters && !selected; f++)
      selected = strstr(t->name, filters[f]) != NULL;
    if (!selected) continue;

    g_current = t->name;
    g_nfail = 0;
    g_context[0] = 0;
    kiln_clear_error();
    kiln_set_device(default_dev);
    double t0 = now_s();
    kiln_scope_begin();
    t->fn();
    kiln_scope_end();
    double dt = now_s() - t0;
    ref_free_all();
    kiln_clear_error();

    if (g_nfail == 0) {
      passed++;
      if (verbose) printf("ok   %-36s %7.3f s\n", t->name, dt);
    } else {
      failed++;
      printf("FAIL %s:", t->name);
      for (int m = 0; m < g_nfail && m < MAX_MSGS; m++)
        printf(" %s%s", m ? "| " : "", g_msgs[m]);
      if (g_nfail > MAX_MSGS) printf(" | (+%d more)", g_nfail - MAX_MSGS);
      if (verbose) printf(" (%.3f s)", dt);
      printf("\n");
    }
    fflush(stdout);
  }
  g_current = "(none)";
  if (verbose) printf("total %.3f s\n", now_s() - t_all);
  printf("%d passed, %d failed\n", passed, failed);
  if (g_cache_is_temp) nftw(g_cache_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(filters);
  return failed ? 1 : 0;
}
