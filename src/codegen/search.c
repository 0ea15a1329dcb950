/* search.c — codegen's search for a kernel's optimizations: a big reduce kernel is lowered
 * with several choices of upcast factors (which output dims a thread computes several of at
 * once, and how many: the register tile) and SPLIT lanes, each candidate compiled and timed on
 * scratch buffers by the device, and the fastest kept. The heuristic's choice is always a
 * candidate. The verdict is written to the disk cache (keyed by the kernel's structure, the
 * device and the codegen version), so later runs lower the winner directly and always run the
 * same code. KILN_TUNE=0 turns it off. */
#include "internal.h"
#include <unistd.h>

#define CODEGEN_VERSION 2  /* bump when a lowering changes what a verdict means */
#define TUNE_MIN_FLOPS 2e8 /* about 5 ms and more: training convolutions, not decode steps */
#define TUNE_MAX 16

bool kn_search_wanted(const kn_device *d, const kn_kernel *k) {
  static int off = -1;
  if (off < 0) {
    const char *e = getenv("KILN_TUNE");
    off = e && !strcmp(e, "0");
  }
  return !off && d->time_program && k->name[0] == 'r' && k->flops >= TUNE_MIN_FLOPS;
}

typedef struct {
  int64_t up[KILN_MAX_DIMS], lanes;
} cand;
static void add_candidate(int ng, cand *c, int *n, const int64_t *up, int64_t lanes) {
  for (int i = 0; i < *n; i++)
    if (!memcmp(c[i].up, up, sizeof(int64_t) * ng) && c[i].lanes == lanes) return;
  if (*n < TUNE_MAX) memcpy(c[*n].up, up, sizeof(int64_t) * ng), c[(*n)++].lanes = lanes;
}
/* Candidate factors: the heuristic's neighbours (below), then: a dim of at most 8 is unrolled
 * whole, a larger one by 2, 4, 8 or 16 (what divides it). Pairs of dims whose tile has 8 to 32
 * outputs come first (those with a small dim before the others), then single dims (3 outputs or
 * more). Where the heuristic vectorizes the reduce (SPLIT), the tiles are smaller (4 to 12
 * outputs, then single dims), each with 8 lanes of its own: the accumulators are vectors then,
 * and 16 registers hold about 12 of them. */
static int candidates(int ng, const int64_t *gs, const kn_kernel *k0, cand *c) {
  int64_t f[KILN_MAX_DIMS][4], up[KILN_MAX_DIMS];
  int nf[KILN_MAX_DIMS], n = 0;
  bool split = k0->split > 1;
  int64_t lo = split ? 4 : 8, hi = split ? 12 : 32, lanes = split ? 8 : 0, single = split ? 2 : 3;
  /* first the heuristic's neighbours: one factor doubled or halved, or one doubled and
   * another halved (a tile of up to 64 outputs, without SPLIT) */
  for (int a = 0; a < ng && !split; a++)
    for (int b = -1; b < ng; b++) /* b = -1: a alone */
      for (int dbl = 1; dbl >= (b < 0 ? 0 : 1); dbl--) {
        memcpy(up, k0->up, sizeof(int64_t) * ng);
        if (b == a || (!dbl && up[a] % 2) || (b >= 0 && up[b] % 2)) continue;
        up[a] = dbl ? up[a] * 2 : up[a] / 2;
        if (b >= 0) up[b] /= 2;
        int64_t t = 1;
        bool ok = true;
        for (int g = 0; g < ng; g++)
          t *= up[g], ok = ok && gs[g] % up[g] == 0;
        if (ok && t > 1 && t <= 64) add_candidate(ng, c, &n, up, 0);
      }
  for (int g = 0; g < ng; g++) {
    nf[g] = 0, up[g] = 1;
    if (gs[g] <= 8) {
      if (gs[g] >= 2) f[g][nf[g]++] = gs[g];
    } else
      for (int64_t x = 2; x <= 16; x *= 2)
        if (gs[g] % x == 0) f[g][nf[g]++] = x;
  }
  for (int small_first = 1; small_first >= 0; small_first--)
    for (int a = 0; a < ng; a++)
      for (int b = a + 1; b < ng; b++) {
        if ((gs[a] <= 8 || gs[b] <= 8) != small_first) continue;
        for (int i = 0; i < nf[a]; i++)
          for (int j = 0; j < nf[b]; j++) {
            up[a] = f[a][i], up[b] = f[b][j];
            if (up[a] * up[b] >= lo && up[a] * up[b] <= hi) add_candidate(ng, c, &n, up, lanes);
            up[a] = up[b] = 1;
          }
      }
  for (int a = 0; a < ng; a++)
    for (int i = 0; i < nf[a]; i++) {
      up[a] = f[a][i];
      if (up[a] >= single && up[a] <= hi) add_candidate(ng, c, &n, up, lanes);
      up[a] = 1;
    }
  return n;
}

static void tune_path(char *out, size_t n, uint64_t k1, uint64_t k2, const kn_device *d) {
  uint64_t key = kn_hash_bytes(k1, &k2, sizeof k2);
  key = kn_hash_bytes(key, d->name, strlen(d->name));
  key = kn_hash_bytes(key, &d->caps, sizeof d->caps);
  key = kn_hash_bytes(key, &(int){CODEGEN_VERSION}, sizeof(int));
  kn_cache_path(out, n, "tune", key, "");
}
/* The factors of a verdict file, if it holds ng valid ones for these dims, then the lanes
 * (0, the heuristic's SPLIT, where the file has none). */
static bool read_verdict(const char *path, int ng, const int64_t *gs, int64_t *up, int64_t *lanes) {
  FILE *f = kn_cache_valid(path) ? fopen(path, "r") : NULL;
  if (!f) return false;
  bool ok = true;
  long long v;
  for (int g = 0; g < ng && ok; g++) {
    ok = fscanf(f, "%lld", &v) == 1 && v >= 1 && v <= gs[g] && gs[g] % v == 0;
    up[g] = v;
  }
  *lanes = 0;
  if (ok && fscanf(f, "%lld", &v) == 1) {
    ok = v >= 0 && v <= 16;
    *lanes = v;
  }
  fclose(f);
  return ok;
}
static double time_kernel(kn_device *d, const kn_kernel *k) {
  bool had_error = kiln_error()[0] != 0;
  char *src = d->dialect ? kn_render(d->dialect, k) : NULL;
  void *pg = d->compile(d, k, src);
  free(src);
  if (!pg) {
    if (!had_error) kiln_clear_error(); /* a candidate that fails is only not chosen */
    return -1;
  }
  double t = d->time_program(d, pg, k);
  d->free_program(d, pg);
  return t;
}
/* Returns the kernel to use: k0 (the heuristic's) or a faster lowering of the same item. */
kn_kernel *kn_search(const kn_sched_item *it, kn_device *d, kn_kernel *k0, uint64_t k1,
                     uint64_t k2) {
  int64_t gs[KILN_MAX_DIMS], up[KILN_MAX_DIMS], lanes;
  int ng = kn_lower_gshape(it, gs);
  char path[1200];
  tune_path(path, sizeof path, k1, k2, d);
  if (read_verdict(path, ng, gs, up, &lanes)) {
    kn_kernel_free(k0);
    return kn_lower_with(it, &d->caps, up, lanes);
  }
  static bool told;
  if (!told && isatty(2)) /* a first run pauses here for a while: say why, once */
    fprintf(stderr,
            "kiln: autotuning new kernels (first run of these shapes; the choices are cached)\n");
  told = true;
  kn_quick_compile = true;
  kn_kernel *best = k0;
  double tbest = time_kernel(d, k0), t0 = tbest;
  cand *c = kn_xmalloc(sizeof(*c) * TUNE_MAX);
  int nc = tbest < 0 ? 0 : candidates(ng, gs, k0, c);
  for (int i = 0; i < nc; i++) {
    if (!memcmp(c[i].up, k0->up, sizeof(int64_t) * ng) && c[i].lanes == k0->lanes) continue;
    kn_kernel *k = kn_lower_with(it, &d->caps, c[i].up, c[i].lanes);
    double t = time_kernel(d, k);
    if (t >= 0 && t < 0.95 * tbest) { /* a clear win only: noise must not pick */
      if (best != k0) kn_kernel_free(best);
      best = k, tbest = t;
    } else
      kn_kernel_free(k);
  }
  free(c);
  kn_quick_compile = false;
  if (tbest < 0) return k0; /* could not be timed: nothing learned, nothing written */
  if (best != k0) kn_kernel_free(k0);
  if (kn_debug_level() >= 3)
    fprintf(stderr, "kiln: tuned %s over %d candidates: %.3f ms (heuristic %.3f ms): %s\n",
            best->name, nc, tbest * 1e3, t0 * 1e3, best->opts);
  kn_sbuf v = {0};
  for (int g = 0; g < ng; g++)
    kn_sbuf_printf(&v, "%lld ", (long long)best->up[g]);
  kn_sbuf_printf(&v, "%lld\n", (long long)best->lanes);
  if (kn_cache_mkdir("tune") == 0) kn_cache_store(path, v.s, v.n); /* else: searched again */
  free(v.s);
  return best;
}
