/* search.c — codegen's search for a kernel's optimizations. A kernel's optimizations are a
 * list of transforms (kn_opts); the search lowers an item with several lists, compiles and
 * times each on scratch buffers on the device, and keeps the fastest. The heuristic's list is
 * always a candidate, and a list wins only by a clear margin. The verdict is written to the
 * disk cache, keyed by the kernel's structure, the device and its properties and the codegen
 * version, so later runs lower the winner directly and always run the same code.
 *
 * Two searches: by default a fixed set of register tiles around the heuristic's (the
 * candidates below) for the big reduce kernels, within a time budget per process (a first run
 * must not stall; what the budget leaves out is searched by a later run); with BEAM=N, a beam
 * search of width N over lists built one transform at a time, for every reduce kernel, without
 * a budget (what `kiln tune` runs). KILN_TUNE=0 turns both off. */
#include "internal.h"
#include <time.h>
#include <unistd.h>

#define CODEGEN_VERSION 4  /* bump when a lowering changes what a verdict means */
#define TUNE_MIN_FLOPS 2e8 /* about 5 ms and more: training convolutions, not decode steps */
#define BEAM_MIN_FLOPS 1e6 /* what BEAM=N also searches */
#define TUNE_MAX 16        /* candidates of the default search */
#define TUNE_BUDGET 10.0   /* seconds the default search may spend in one process */
#define BEAM_ROUNDS 4      /* transforms a beam search adds at most */
/* longer candidates are not tried: C compilers take minutes on them (a 128-row product with
 * every tile and unroll at once: 96k lines) */
#define MAX_CAND_OPS 16384

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}
static int env_int(const char *name, int dflt) {
  const char *e = getenv(name);
  return e && *e ? atoi(e) : dflt;
}
static double spent;   /* seconds the default search spent in this process */
static bool over_told; /* the budget's end was said */

int kn_beam_width(void) { return env_int("BEAM", 0); }
bool kn_search_budget_left(void) {
  return kn_beam_width() > 0 || spent < env_int("KILN_TUNE_BUDGET", (int)TUNE_BUDGET);
}
void kn_search_charge(double seconds) { spent += seconds; }

/* Whether k reads most of its input bytes at addresses computed from values read from memory
 * (rows picked by index: the cache blocks of the sequences of a step). Timed on zeroed scratch
 * buffers, all those reads would go to one place, whose speed tells nothing of the real one's. */
static bool reads_through_index(const kn_kernel *k) {
  bool *dep = kn_xcalloc((size_t)k->nops + 1, sizeof(bool)), through[64] = {false};
  for (int i = 0; i < k->nops; i++) {
    const kn_lop *o = &k->ops[i];
    if (o->op == L_LOAD && o->src[0] >= 0 && dep[o->src[0]] && o->arg < 64) through[o->arg] = true;
    dep[i] = o->op == L_LOAD;
    for (int s = 0; s < 3 && o->op != L_RANGE && o->op != L_END; s++)
      if (o->src[s] >= 0 && dep[o->src[s]] && !(o->op == L_LOAD && s > 0)) dep[i] = true;
  }
  free(dep);
  double all = 0, via = 0;
  for (int b = 1; b < k->nbufs && b < 64; b++) {
    double n = (double)k->buf_numel[b] * kiln_dtype_size(k->buf_dtype[b]);
    all += n, via += through[b] ? n : 0;
  }
  return via > all / 2;
}

/* a kernel the search handles: a reduce, on a device that compiles source, tuning on, whose
 * reads do not depend on data (above) */
static bool searchable(const kn_device *d, const kn_kernel *k) {
  return env_int("KILN_TUNE", 1) != 0 && d->dialect && k->name[0] == 'r' && !reads_through_index(k);
}
bool kn_search_wanted(const kn_device *d, const kn_kernel *k) {
  return searchable(d, k) && k->flops >= (kn_beam_width() > 0 ? BEAM_MIN_FLOPS : TUNE_MIN_FLOPS);
}

/* ---- candidates of the default search, as upcast factors and SPLIT lanes ---- */
typedef struct {
  int64_t up[KILN_MAX_DIMS], lanes;
} cand;
static void add_candidate(int ng, cand *c, int *n, const int64_t *up, int64_t lanes) {
  for (int i = 0; i < *n; i++)
    if (!memcmp(c[i].up, up, sizeof(int64_t) * ng) && c[i].lanes == lanes) return;
  if (*n < TUNE_MAX) memcpy(c[*n].up, up, sizeof(int64_t) * ng), c[(*n)++].lanes = lanes;
}
/* The heuristic's neighbours first: one factor doubled or halved, or one doubled and another
 * halved (a tile of up to 64 outputs, without SPLIT). Then: a dim of at most 8 is unrolled
 * whole, a larger one by 2, 4, 8 or 16 (what divides it). Pairs of dims whose tile has 8 to 32
 * outputs come first (those with a small dim before the others), then single dims (3 outputs or
 * more). Where the heuristic vectorizes the reduce (SPLIT), the tiles are smaller (4 to 12
 * outputs, then single dims), each with 8 lanes of its own: the accumulators are vectors then,
 * and 16 registers hold about 12 of them. */
static int candidates(int ng, const int64_t *gs, const int64_t *up0, bool split, cand *c) {
  int64_t f[KILN_MAX_DIMS][4], up[KILN_MAX_DIMS];
  int nf[KILN_MAX_DIMS], n = 0;
  int64_t lo = split ? 4 : 8, hi = split ? 12 : 32, lanes = split ? 8 : 0, single = split ? 2 : 3;
  for (int a = 0; a < ng && !split; a++)
    for (int b = -1; b < ng; b++) /* b = -1: a alone */
      for (int dbl = 1; dbl >= (b < 0 ? 0 : 1); dbl--) {
        memcpy(up, up0, sizeof(int64_t) * ng);
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

/* ---- timing ---- */
/* Seconds one launch of pg takes: the device's own timing where it has one (the CPU: pages
 * written first, threads warm), else through the device interface on zeroed scratch buffers
 * of k's sizes, the best of three launches after one that warms up, each waited for. */
enum { SCRATCH_MAX = 1 << 30 };
static double time_program(kn_device *d, void *pg, const kn_kernel *k) {
  if (d->time_program) return d->time_program(d, pg, k);
  double total = 0, best = -1;
  for (int i = 0; i < k->nbufs; i++)
    total += (double)k->buf_numel[i] * kiln_dtype_size(k->buf_dtype[i]);
  if (total > SCRATCH_MAX) return -1;
  void *bufs[64];
  int n = 0;
  for (; n < k->nbufs; n++) {
    size_t bytes = (size_t)k->buf_numel[n] * kiln_dtype_size(k->buf_dtype[n]);
    if (!(bufs[n] = d->alloc(d, bytes, true))) break;
  }
  for (int r = 0; n == k->nbufs && r < 4; r++) {
    double t = kn_now();
    bool had_error = kiln_error()[0] != 0;
    if (d->launch(d, pg, k, bufs) < 0) {
      if (!had_error) kiln_clear_error(); /* a candidate that fails is only not chosen */
      best = -1;
      break;
    }
    d->synchronize(d);
    t = kn_now() - t;
    if (r > 0 && (best < 0 || t < best)) best = t;
  }
  while (n--)
    d->free(d, bufs[n]);
  return best;
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
  double t = time_program(d, pg, k);
  d->free_program(d, pg);
  return t;
}
/* Lowers it with o and times it: < 0 if o does not apply or the kernel cannot be timed. */
static double time_opts(const kn_sched_item *it, kn_device *d, const kn_opts *o) {
  bool had_error = kiln_error()[0] != 0;
  kn_kernel *k = kn_lower(it, &d->caps, o);
  if (!k) {
    if (!had_error) kiln_clear_error();
    return -1;
  }
  if (k->nops > MAX_CAND_OPS) {
    kn_kernel_free(k);
    return -1;
  }
  double t = time_kernel(d, k);
  kn_kernel_free(k);
  return t;
}

/* The default search: the candidates as lists, each completed as the heuristic would. */
static double search_tiles(const kn_sched_item *it, kn_device *d, const kn_kernel *k0,
                           kn_opts *best, double tbest) {
  int64_t gs[KILN_MAX_DIMS], up0[KILN_MAX_DIMS];
  int ng = kn_lower_gshape(it, gs);
  bool split = false;
  int lanes_dim = -1; /* the heuristic's LANES, kept in every candidate */
  for (int g = 0; g < ng; g++)
    up0[g] = 1;
  for (int i = 0; i < k0->opts.n; i++) {
    if (k0->opts.o[i].op == KN_OPT_UPCAST) up0[k0->opts.o[i].axis] *= k0->opts.o[i].amt;
    if (k0->opts.o[i].op == KN_OPT_LANES) lanes_dim = k0->opts.o[i].axis;
    split = split || k0->opts.o[i].op == KN_OPT_SPLIT || k0->opts.o[i].op == KN_OPT_LANES;
  }
  cand *c = kn_xmalloc(sizeof(*c) * TUNE_MAX);
  int nc = candidates(ng, gs, up0, split, c);
  for (int i = 0; i < nc; i++) {
    kn_opts o;
    kn_opts_complete(it, &d->caps, c[i].up, c[i].lanes, lanes_dim, &o);
    if (kn_opts_equal(&o, &k0->opts)) continue;
    double t = time_opts(it, d, &o);
    if (t >= 0 && t < 0.95 * tbest)
      *best = o, tbest = t; /* a clear win only: noise must not pick */
  }
  free(c);
  return tbest;
}

/* BEAM=N: lists grown one transform at a time from the empty list and the heuristic's; each
 * round keeps the N fastest; it stops when a round finds nothing faster. */
typedef struct {
  kn_opts o;
  double t;
} entry;
static int actions(const kn_sched_item *it, const kn_devcaps *caps, kn_opt *a) {
  int64_t gs[KILN_MAX_DIMS];
  int ng = kn_lower_gshape(it, gs), n = 0;
  kn_node *s = it->reduce ? it->reduce->src[0] : NULL;
  for (int g = 0; g < ng; g++)
    for (int f = 2; f <= 8; f *= 2) {
      a[n++] = (kn_opt){KN_OPT_UPCAST, (uint8_t)g, f};
      if (f >= 4 && caps->max_local > 1) a[n++] = (kn_opt){KN_OPT_LOCAL, (uint8_t)g, 8 * f};
    }
  for (int g = 0; g < ng; g++) /* sizes the upcasts and groups above do not divide */
    for (int f = 4; f <= 32; f *= 2)
      if (gs[g] % f && gs[g] > f) a[n++] = (kn_opt){KN_OPT_PADTO, (uint8_t)g, f};
  for (int f = 4; f <= 16; f *= 2)
    a[n++] = (kn_opt){KN_OPT_SPLIT, 0, f};
  for (int g = 0; g < ng && (caps->opts & KN_OPT_BIT(KN_OPT_LANES)); g++)
    for (int f = 8; f <= 16; f *= 2)
      if (gs[g] % f == 0) a[n++] = (kn_opt){KN_OPT_LANES, (uint8_t)g, f};
  for (int f = 4; f <= 16; f *= 2)
    a[n++] = (kn_opt){KN_OPT_BLOCK, 0, f};
  for (int i = 0; s && i < s->ndim; i++)
    if (it->reduce->arg[1] >> i & 1)
      for (int f = 16; f <= 256; f *= 2) {
        a[n++] = (kn_opt){KN_OPT_GROUP, (uint8_t)i, f};
        if (f <= 64) a[n++] = (kn_opt){KN_OPT_UNROLL, (uint8_t)i, f / 8}; /* 2, 4, 8 */
      }
  return n;
}
static bool in_list(const entry *e, int n, const kn_opts *o) {
  for (int i = 0; i < n; i++)
    if (kn_opts_equal(&e[i].o, o)) return true;
  return false;
}
static double search_beam(const kn_sched_item *it, kn_device *d, const kn_kernel *k0, int width,
                          kn_opts *best, double tbest) {
  kn_opt act[256]; /* at most 11 per global dim, 6, and 8 per reduce axis */
  int na = actions(it, &d->caps, act);
  entry *beam = kn_xcalloc((size_t)width + 1, sizeof(entry));
  entry *seen = kn_xmalloc(sizeof(entry) * 4096);
  int nb = 0, nseen = 0;
  beam[nb++] = (entry){k0->opts, tbest};
  seen[nseen++] = beam[0];
  kn_opts none = {0};
  double tn = time_opts(it, d, &none);
  seen[nseen++] = (entry){none, tn};
  if (tn >= 0 && width > 1) beam[nb++] = (entry){none, tn};
  for (int round = 0; round < BEAM_ROUNDS; round++) {
    entry next[64];
    int nn = 0;
    for (int b = 0; b < nb; b++)
      for (int i = 0; i < na && nseen < 4096; i++) {
        kn_opts o = beam[b].o;
        if (o.n == KN_MAX_OPTS) continue;
        o.o[o.n++] = act[i];
        if (in_list(seen, nseen, &o)) continue;
        double t = time_opts(it, d, &o);
        seen[nseen++] = (entry){o, t};
        if (t < 0) continue;
        if (nn < width) /* keep the `width` fastest of this round, fastest first */
          next[nn++] = (entry){o, t};
        else if (t < next[nn - 1].t)
          next[nn - 1] = (entry){o, t};
        else
          continue;
        for (int j = nn - 1; j > 0 && next[j].t < next[j - 1].t; j--) {
          entry tmp = next[j];
          next[j] = next[j - 1], next[j - 1] = tmp;
        }
      }
    if (!nn || next[0].t >= 0.98 * tbest) break; /* nothing clearly faster: done */
    *best = next[0].o, tbest = next[0].t;
    memcpy(beam, next, sizeof(entry) * (size_t)nn);
    nb = nn;
  }
  free(beam), free(seen);
  return tbest;
}

/* ---- verdicts on disk ---- */
static void tune_path(char *out, size_t n, uint64_t k1, uint64_t k2, const kn_device *d) {
  uint64_t key = kn_hash_bytes(k1, &k2, sizeof k2);
  key = kn_hash_bytes(key, d->name, strlen(d->name));
  const kn_devcaps *c = &d->caps;
  int64_t props[] = {c->max_dims,  c->max_local, c->local_mem,   c->opts,
                     c->vec_width, c->index32,   c->host_memory, c->pool};
  key = kn_hash_bytes(key, props, sizeof props);
  key = kn_hash_bytes(key, &(int){CODEGEN_VERSION}, sizeof(int));
  kn_cache_path(out, n, "tune", key, "");
}
/* The list of a verdict file, if it holds one that applies to it on d. */
static kn_kernel *read_verdict(const char *path, const kn_sched_item *it, kn_device *d) {
  size_t n;
  char *t = kn_cache_valid(path) ? kn_cache_load(path, &n) : NULL;
  kn_opts o;
  bool ok = t && memchr(t, 0, n) == NULL;
  if (ok) {
    t = kn_xrealloc(t, n + 1);
    t[n] = 0;
    ok = kn_opts_parse(t, &o) == 0;
  }
  free(t);
  if (!ok) return NULL;
  bool had_error = kiln_error()[0] != 0;
  kn_kernel *k = kn_lower(it, &d->caps, &o);
  if (!k && !had_error) kiln_clear_error(); /* a stale verdict: searched again */
  return k;
}

kn_kernel *kn_search_cached(const kn_sched_item *it, kn_device *d, kn_kernel *k0, uint64_t k1,
                            uint64_t k2) {
  if (!searchable(d, k0)) return k0;
  char path[1200];
  tune_path(path, sizeof path, k1, k2, d);
  kn_kernel *v = read_verdict(path, it, d);
  if (!v) return k0;
  kn_kernel_free(k0);
  return v;
}

/* Returns the kernel to use: k0 (the heuristic's) or a faster lowering of the same item. */
kn_kernel *kn_search(const kn_sched_item *it, kn_device *d, kn_kernel *k0, uint64_t k1,
                     uint64_t k2) {
  kn_kernel *v = kn_search_cached(it, d, k0, k1, k2);
  if (v != k0 || !kn_search_wanted(d, k0)) return v;
  char path[1200];
  tune_path(path, sizeof path, k1, k2, d);
  int width = kn_beam_width();
  if (!kn_search_budget_left()) {
    if (!over_told && kn_debug_level() >= 1)
      fprintf(stderr, "kiln: the search's time budget is spent; later runs (or kiln tune) search "
                      "the remaining kernels\n");
    over_told = true;
    return k0; /* nothing written: a later run searches it */
  }
  static bool told;
  if (!told && isatty(2)) /* a first run pauses here for a while: say why, once */
    fprintf(stderr,
            "kiln: tuning new kernels (first run of these shapes; the choices are cached)\n");
  told = true;
  kn_stats.kernels_searched++;
  double t_start = now();
  kn_quick_compile = true;
  double t0 = time_kernel(d, k0), tbest = t0;
  kn_opts best = k0->opts;
  if (t0 >= 0)
    tbest = width > 0 ? search_beam(it, d, k0, width > 64 ? 64 : width, &best, t0)
                      : search_tiles(it, d, k0, &best, t0);
  kn_quick_compile = false;
  if (width <= 0) spent += now() - t_start;
  if (t0 < 0) return k0; /* could not be timed: nothing learned, nothing written */
  kn_kernel *k = k0;
  if (!kn_opts_equal(&best, &k0->opts)) {
    k = kn_lower(it, &d->caps, &best);
    KN_ASSERT(k, "a timed list no longer lowers");
    kn_kernel_free(k0);
  }
  char t[256];
  kn_opts_format(&best, t, sizeof t);
  if (kn_debug_level() >= 3)
    fprintf(stderr, "kiln: searched %s: %.3f ms (heuristic %.3f ms): %s\n", k->name, tbest * 1e3,
            t0 * 1e3, t);
  if (kn_cache_mkdir("tune") == 0) kn_cache_store(path, t, strlen(t)); /* else: searched again */
  return k;
}
