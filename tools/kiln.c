/* kiln.c — the `kiln` command. Subcommands live in one table (name, function, help); each is
 * a plain function over the public API in kiln.h. Exit codes: 0 ok, 1 a kiln error at run
 * time, 2 a usage error (unknown command, bad flag or value). */
#include "kiln.h"
#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef KILN_VERSION_STRING
#define KILN_VERSION_STRING "0.0.0-dev"
#endif

int usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "kiln: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, " (try 'kiln help')\n");
  va_end(ap);
  return EXIT_USAGE;
}

int runtime_error(const char *what) {
  const char *msg = kiln_error();
  fprintf(stderr, "kiln: %s: %s\n", what, msg && *msg ? msg : "unknown error");
  return EXIT_RUNTIME;
}

static const command *find_command(const command *table, size_t n, const char *name) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(table[i].name, name) == 0) return &table[i];
  return NULL;
}

static void print_table(FILE *f, const char *prefix, const command *table, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char head[128];
    int len = snprintf(head, sizeof head, "%s%s %s", prefix, table[i].name, table[i].usage);
    if (len > 28) /* a long synopsis gets its own line */
      fprintf(f, "  %s\n  %-28s %s\n", head, "", table[i].help);
    else
      fprintf(f, "  %-28s %s\n", head, table[i].help);
  }
}

/* ---- flag parsing -------------------------------------------------------------------------
 * Flags are `--name value` or `--name=value`. Returns the value and advances *i, or NULL when
 * argv[*i] is not this flag. A flag with no value is a usage error reported via *missing. */
const char *flag_value(int argc, char **argv, int *i, const char *name, int *missing) {
  const char *a = argv[*i];
  size_t n = strlen(name);
  if (strncmp(a, name, n) != 0) return NULL;
  if (a[n] == '=') return a + n + 1;
  if (a[n] != '\0') return NULL;
  if (*i + 1 >= argc) {
    *missing = 1;
    return NULL;
  }
  return argv[++*i];
}

/* Parses a whole decimal integer in [lo, hi]; returns 0 on success. */
int parse_int(const char *s, long lo, long hi, long *out) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || end == s || *end != '\0' || v < lo || v > hi) return -1;
  *out = v;
  return 0;
}

double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double median(double *v, int n) { /* sorts v */
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ---- kiln devices ------------------------------------------------------------------------ */
static int cmd_devices(int argc, char **argv) {
  if (argc > 1) return usage_error("devices: unexpected argument '%s'", argv[1]);
  const char *current = kiln_get_device();
  int n = kiln_device_count();
  for (int i = 0; i < n; i++) {
    const char *name = kiln_device_name(i), *why = kiln_device_status(i);
    if (!name) continue;
    int is_default = current && strcmp(name, current) == 0;
    printf("%-7s %s%s%s\n", name, why ? "not available: " : "works", why ? why : "",
           is_default ? " (default)" : "");
  }
  return EXIT_OK;
}

/* ---- kiln bench matmul --------------------------------------------------------------------- */
#define BENCH_MAX_SIZES 32
#define BENCH_MAX_N 16384 /* three f32 n*n operands: 3 GiB at the limit */
#define BENCH_MAX_RUNS 1000
#define BENCH_SAMPLES 16 /* entries of each result checked against a double reference */

/* Checks a few entries of c = a @ b (all n*n, row-major) against a double-precision sum. */
static int matmul_result_ok(const float *a, const float *b, const float *c, int64_t n) {
  uint64_t state = 0x9e3779b97f4a7c15u;
  for (int s = 0; s < BENCH_SAMPLES; s++) {
    state = state * 6364136223846793005u + 1442695040888963407u;
    int64_t i = (int64_t)((state >> 33) % (uint64_t)n);
    int64_t j = (int64_t)((state >> 13) % (uint64_t)n);
    double ref = 0, mag = 0; /* mag: sum of |terms|, the scale rounding error grows with */
    for (int64_t k = 0; k < n; k++) {
      double term = (double)a[i * n + k] * (double)b[k * n + j];
      ref += term;
      mag += term < 0 ? -term : term;
    }
    double tol = (1e-5 + 1e-7 * (double)n) * (mag > 1 ? mag : 1);
    double err = (double)c[i * n + j] - ref;
    if (err > tol || err < -tol) {
      fprintf(stderr, "kiln: bench matmul: wrong result at (%lld,%lld): got %g, expected %g\n",
              (long long)i, (long long)j, (double)c[i * n + j], ref);
      return 0;
    }
  }
  return 1;
}

/* Realizes a @ b once, untimed (it compiles the kernel), and checks the result. */
static int matmul_warmup(kiln_tensor *a, kiln_tensor *b, int64_t n) {
  size_t bytes = (size_t)(n * n) * sizeof(float);
  float *ha = malloc(bytes), *hb = malloc(bytes), *hc = malloc(bytes);
  int rc = EXIT_RUNTIME;
  kiln_scope_begin();
  kiln_tensor *c = kiln_matmul(a, b);
  if (!ha || !hb || !hc)
    fprintf(stderr, "kiln: bench matmul: out of host memory for n=%lld\n", (long long)n);
  else if (!c || kiln_to_host(c, hc, bytes) < 0 || kiln_to_host(a, ha, bytes) < 0 ||
           kiln_to_host(b, hb, bytes) < 0)
    runtime_error("bench matmul");
  else if (matmul_result_ok(ha, hb, hc, n))
    rc = EXIT_OK;
  kiln_scope_end();
  free(ha);
  free(hb);
  free(hc);
  return rc;
}

/* Times `runs` realizes of a fresh a @ b; writes the median seconds to *out. */
static int matmul_time(kiln_tensor *a, kiln_tensor *b, int runs, double *out) {
  double times[BENCH_MAX_RUNS];
  for (int r = 0; r < runs; r++) {
    kiln_stats before, after;
    kiln_scope_begin();
    kiln_tensor *c = kiln_matmul(a, b);
    kiln_get_stats(&before);
    double t0 = now_seconds();
    int rc = c ? kiln_realize(c) : -1;
    kiln_synchronize(); /* the launches may still be running (CL, CUDA) */
    times[r] = now_seconds() - t0;
    kiln_get_stats(&after);
    kiln_scope_end();
    if (rc < 0) return runtime_error("bench matmul");
    if (after.kernels_run == before.kernels_run) {
      /* A realize that ran nothing would time a cache lookup, not a matmul. */
      fprintf(stderr, "kiln: bench matmul: realize ran no kernel; the result was reused\n");
      return EXIT_RUNTIME;
    }
  }
  *out = median(times, runs);
  return EXIT_OK;
}

static int bench_one_matmul(int64_t n, int runs) {
  int rc;
  int64_t shape[2] = {n, n};
  kiln_scope_begin();
  kiln_tensor *a = kiln_rand(2, shape, 1), *b = kiln_rand(2, shape, 2);
  if (!a || !b || kiln_realize(a) < 0 || kiln_realize(b) < 0) {
    rc = runtime_error("bench matmul: creating inputs");
  } else if ((rc = matmul_warmup(a, b, n)) == EXIT_OK) {
    double t;
    if ((rc = matmul_time(a, b, runs, &t)) == EXIT_OK) {
      double gflops = 2.0 * (double)n * (double)n * (double)n / t * 1e-9;
      printf("matmul %lldx%lldx%lld f32  %s  median %.2f ms  %.*f GFLOP/s\n", (long long)n,
             (long long)n, (long long)n, kiln_get_device(), t * 1e3, gflops < 1 ? 3 : 1, gflops);
      fflush(stdout);
    }
  }
  kiln_scope_end();
  return rc;
}

/* Parses "512,1024,2048" into sizes; returns the count, or -1 after printing an error. */
static int parse_sizes(const char *s, int64_t *sizes) {
  int n = 0;
  const char *p = s;
  for (;;) {
    char tok[32];
    size_t len = strcspn(p, ",");
    long v;
    if (n == BENCH_MAX_SIZES || len == 0 || len >= sizeof tok) break;
    memcpy(tok, p, len);
    tok[len] = '\0';
    if (parse_int(tok, 1, BENCH_MAX_N, &v) < 0) break;
    sizes[n++] = v;
    if (p[len] == '\0') return n;
    p += len + 1;
  }
  usage_error("bench matmul: bad --sizes '%s': want 1 to %d comma-separated sizes in 1..%d", s,
              BENCH_MAX_SIZES, BENCH_MAX_N);
  return -1;
}

static const char matmul_usage[] = "[--sizes 512,1024,2048] [--runs N] [--device D]";

static int bench_matmul(int argc, char **argv) {
  int64_t sizes[BENCH_MAX_SIZES] = {512, 1024, 2048};
  int nsizes = 3;
  long runs = 5;
  const char *device = NULL;
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    const char *v;
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      printf("usage: kiln bench matmul %s\n"
             "  times the realize of an n x n x n f32 matmul: median of N runs (default 5)\n"
             "  after one untimed warm-up whose result is checked\n",
             matmul_usage);
      return EXIT_OK;
    } else if ((v = flag_value(argc, argv, &i, "--sizes", &missing))) {
      if ((nsizes = parse_sizes(v, sizes)) < 0) return EXIT_USAGE;
    } else if ((v = flag_value(argc, argv, &i, "--runs", &missing))) {
      if (parse_int(v, 1, BENCH_MAX_RUNS, &runs) < 0)
        return usage_error("bench matmul: --runs wants an integer in 1..1000, got '%s'", v);
    } else if ((v = flag_value(argc, argv, &i, "--device", &missing))) {
      device = v;
    } else if (missing) {
      return usage_error("bench matmul: %s needs a value", argv[i]);
    } else {
      return usage_error("bench matmul: unknown argument '%s'", argv[i]);
    }
  }
  if (device && kiln_set_device(device) < 0) {
    fprintf(stderr, "kiln: bench matmul: --device %s: %s\n", device, kiln_error());
    return EXIT_USAGE;
  }
  for (int s = 0; s < nsizes; s++) {
    int rc = bench_one_matmul(sizes[s], (int)runs);
    if (rc != EXIT_OK) return rc;
  }
  return EXIT_OK;
}

static const command bench_table[] = {
    {"matmul", bench_matmul, matmul_usage, "matmul GFLOP/s, median of runs"},
    {"train", bench_train, bench_train_usage, "training step time of the Fashion-MNIST CNN"},
    {"llm", bench_llm, bench_llm_usage, "prompt and generation tokens/s of a GGUF model"},
};
#define NBENCH (sizeof bench_table / sizeof bench_table[0])

static int cmd_bench(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    FILE *f = argc < 2 ? stderr : stdout; /* a missing benchmark name is a usage error */
    fprintf(f, "usage: kiln bench <benchmark> [flags]\n");
    print_table(f, "", bench_table, NBENCH);
    return argc < 2 ? EXIT_USAGE : EXIT_OK;
  }
  const command *b = find_command(bench_table, NBENCH, argv[1]);
  if (!b) return usage_error("bench: unknown benchmark '%s'", argv[1]);
  return b->fn(argc - 1, argv + 1);
}

/* ---- kiln version / help ------------------------------------------------------------------- */
static int cmd_version(int argc, char **argv) {
  if (argc > 1) return usage_error("version: unexpected argument '%s'", argv[1]);
  printf("kiln %s\n", KILN_VERSION_STRING);
  return EXIT_OK;
}

static int cmd_help(int argc, char **argv);
static int cmd_tune(int argc, char **argv);

/* New subcommands (train, generate, chat, serve, info) join this table. */
static const command commands[] = {
    {"devices", cmd_devices, "", "list the devices kiln can run on"},
    {"train", cmd_train, "fashion-mnist [flags]",
     "train the Fashion-MNIST CNN (kiln train --help)"},
    {"generate", cmd_generate, "-m MODEL -p PROMPT [flags]",
     "complete a prompt with a GGUF model (kiln generate --help)"},
    {"chat", cmd_chat, "[-m MODEL] [flags]", "chat with a GGUF model on stdin (kiln chat --help)"},
    {"serve", cmd_serve, "[-m MODEL] [flags]",
     "serve a GGUF model over an OpenAI-compatible HTTP API and a chat page (kiln serve --help)"},
    {"bench", cmd_bench, "<benchmark> [flags]",
     "run a benchmark (bench matmul, bench train, bench llm)"},
    {"info", cmd_info, "MODEL.gguf", "check a GGUF file and print its metadata and tensors"},
    {"tokenize", cmd_tokenize, "[-m MODEL] [--ids] TEXT",
     "print the tokens a model's tokenizer makes of TEXT (kiln tokenize --help)"},
    {"tune", cmd_tune, "[--beam N] <command> [args]",
     "run a command with the kernel search unbounded, caching what it finds"},
    {"version", cmd_version, "", "print the version"},
    {"help", cmd_help, "", "print this help"},
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static int cmd_help(int argc, char **argv) {
  (void)argc;
  (void)argv;
  printf("kiln %s - a small deep-learning framework with fused, generated C kernels\n\n"
         "usage: kiln <command> [args]\n\ncommands:\n",
         KILN_VERSION_STRING);
  print_table(stdout, "", commands, NCOMMANDS);
  printf("\nbenchmarks:\n");
  print_table(stdout, "bench ", bench_table, NBENCH);
  printf("\nenvironment: KILN_DEVICE, KILN_THREADS, KILN_CACHE, KILN_CC, KILN_TUNE, "
         "KILN_TUNE_BUDGET, BEAM, DEBUG\n");
  return EXIT_OK;
}

/* ---- kiln tune: a workload's kernels searched ahead of time --------------------------------
 * Runs another kiln command (a short training run, a generation) with the search free of its
 * time budget, or as a beam search of width N; the verdicts land in the disk cache, so later
 * runs of the same shapes on the same device start with them. */
static int cmd_tune(int argc, char **argv) {
  int i = 1;
  const char *beam = NULL;
  for (; i < argc && argv[i][0] == '-'; i++) {
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("usage: kiln tune [--beam N] <command> [args]\n"
             "  runs the command (train, generate, bench ...) with every kernel worth it searched\n"
             "  without the first run's time budget; --beam N: a beam search of width N over\n"
             "  transform lists (slower, finds more). Example:\n"
             "    kiln tune train fashion-mnist --limit 1024 --epochs 1 --device CL\n");
      return EXIT_OK;
    }
    if (!strcmp(argv[i], "--beam") && i + 1 < argc) {
      beam = argv[++i];
      char *end;
      long n = strtol(beam, &end, 10);
      if (*end || n < 1 || n > 64) return usage_error("tune: --beam wants 1..64, not '%s'", beam);
    } else
      return usage_error("tune: unknown flag '%s' (kiln tune --help)", argv[i]);
  }
  if (i >= argc) return usage_error("tune: which command? (kiln tune --help)");
  const command *c = find_command(commands, NCOMMANDS, argv[i]);
  if (!c || c->fn == cmd_tune || c->fn == cmd_help)
    return usage_error("tune: '%s' is not a command to tune", argv[i]);
  setenv("KILN_TUNE_BUDGET", "1000000000", 1);
  if (beam) setenv("BEAM", beam, 1);
  return c->fn(argc - i, argv + i);
}

int main(int argc, char **argv) {
  if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)
    return cmd_help(argc, argv);
  if (strcmp(argv[1], "--version") == 0) return cmd_version(1, argv);
  const command *c = find_command(commands, NCOMMANDS, argv[1]);
  if (!c) return usage_error("unknown command '%s'", argv[1]);
  return c->fn(argc - 1, argv + 1);
}
