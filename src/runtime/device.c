/* device.c — the device registry, buffers, the in-memory program cache, and the loop that
 * runs a schedule (lower -> compile -> allocate -> launch), with DEBUG reporting. */
#include "internal.h"
#include <sys/stat.h>
#include <unistd.h>

kiln_stats kn_stats;
static kn_device *devices[] = {&kn_dev_cpu, &kn_dev_interp};
#define NDEV ((int)(sizeof devices / sizeof devices[0]))
static int default_dev = -1;

static int find_device(const char *name) {
  for (int i = 0; i < NDEV; i++)
    if (name && !strcasecmp(name, devices[i]->name)) return i;
  return -1;
}
int kn_device_default(void) {
  if (default_dev < 0) {
    const char *e = getenv("KILN_DEVICE");
    default_dev = e && *e ? find_device(e) : 0;
    if (default_dev < 0) {
      fprintf(stderr, "kiln: KILN_DEVICE=%s is not a device (have CPU, INTERP); using CPU\n", e);
      default_dev = 0;
    }
  }
  return default_dev;
}
kn_device *kn_device_get(int i) { return devices[i]; }
int kiln_set_device(const char *name) {
  int d = find_device(name);
  if (d < 0) {
    kn_err("set_device: unknown device '%s' (have CPU, INTERP)", name ? name : "(null)");
    return -1;
  }
  default_dev = d;
  return 0;
}
const char *kiln_get_device(void) { return devices[kn_device_default()]->name; }
int kiln_device_count(void) { return NDEV; }
const char *kiln_device_name(int i) { return i >= 0 && i < NDEV ? devices[i]->name : NULL; }

kn_buffer *kn_buffer_alloc(int device, size_t nbytes) {
  kn_buffer *b = kn_xmalloc(sizeof *b);
  b->dev = devices[device];
  b->nbytes = nbytes;
  b->external = false;
  b->ptr = b->dev->alloc(b->dev, nbytes);
  kn_stats.bytes_allocated += nbytes;
  return b;
}
kn_buffer *kn_buffer_alloc_scratch(int device, size_t nbytes) {
  kn_device *d = devices[device];
  if (!d->alloc_scratch) return kn_buffer_alloc(device, nbytes);
  kn_buffer *b = kn_xmalloc(sizeof *b);
  *b = (kn_buffer){d, d->alloc_scratch(d, nbytes), nbytes, false};
  kn_stats.bytes_allocated += nbytes;
  return b;
}
kn_buffer *kn_buffer_wrap(int device, void *ptr, size_t nbytes) {
  kn_buffer *b = kn_xmalloc(sizeof *b);
  *b = (kn_buffer){devices[device], ptr, nbytes, true};
  KN_ASSERT(b->dev->host_memory, "device %s cannot read host memory", b->dev->name);
  return b;
}
void kn_buffer_free(kn_buffer *b) {
  if (!b->external) {
    kn_stats.bytes_allocated -= b->nbytes;
    b->dev->free(b->dev, b->ptr);
  }
  free(b);
}

/* ---- structural key of a scheduled kernel: inputs become slots ---- */
typedef struct {
  kn_node *n;
  uint64_t h;
} hmemo;
typedef struct {
  hmemo *m;
  size_t cap;
} hmap;
static uint64_t *hmap_get(hmap *hm, kn_node *n) {
  size_t i = ((uintptr_t)n * 0x9E3779B97F4A7C15ull) >> 11;
  for (;; i++) {
    hmemo *e = &hm->m[i & (hm->cap - 1)];
    if (!e->n) {
      e->n = n;
      e->h = 0;
      return &e->h;
    }
    if (e->n == n) return &e->h;
  }
}
static uint64_t ast_hash(const kn_sched_item *it, kn_node *n, hmap *hm, uint64_t seed) {
  uint64_t *memo = hmap_get(hm, n);
  if (*memo) return *memo;
  uint64_t h = kn_hash_bytes(seed, &n->op, 4);
  h = kn_hash_bytes(h, n->shape, 8 * n->ndim);
  int slot = -1;
  for (int i = 0; i < it->ninputs; i++)
    if (it->inputs[i] == n) slot = i;
  if (slot >= 0 || kn_is_realized(n)) h = kn_hash_bytes(h ^ 0xabcdef, &slot, sizeof slot);
  else {
    /* a reshape's arg is its shape; past it, kn_node_unique_view's marker must not make every
     * step's kernels look new */
    h = kn_hash_bytes(h, n->arg, n->op == N_RESHAPE ? sizeof(int64_t) * n->ndim : sizeof n->arg);
    h = kn_hash_bytes(h, &n->cval, sizeof n->cval);
    for (int i = 0; i < n->nsrc; i++) {
      uint64_t c = ast_hash(it, n->src[i], hm, seed);
      h = kn_hash_bytes(h, &c, 8);
    }
  }
  h |= 1; /* 0 marks "not computed" */
  *hmap_get(hm, n) = h;
  return h;
}

/* ---- program cache ---- */
typedef struct prog {
  uint64_t k1, k2;
  int dev;
  kn_kernel *kernel;
  void *prog;
  struct prog *next;
} prog;
static prog *progs[4096];
static int64_t progs_generation; /* bumped when programs are freed: captures then go stale */

void kn_program_cache_clear(void) {
  progs_generation++;
  for (int i = 0; i < 4096; i++) {
    for (prog *p = progs[i], *nx; p; p = nx) {
      nx = p->next;
      devices[p->dev]->free_program(devices[p->dev], p->prog);
      kn_kernel_free(p->kernel);
      free(p);
    }
    progs[i] = NULL;
  }
}
void kiln_release_memory(void) { kn_cpu_scratch_release(); }
void kiln_reset_caches(void) {
  kn_program_cache_clear();
  kiln_release_memory();
}

/* ---- autotuning ----
 * A big reduce kernel is lowered with several choices of upcast factors (which output dims a
 * thread computes several of at once, and how many: the register tile), each candidate compiled
 * and timed on scratch buffers by the device, and the fastest kept. The heuristic's choice is
 * always a candidate. The verdict (the factors, then the SPLIT lanes) is written to the kernel
 * cache, so later runs lower the winner directly and always run the same code. KILN_TUNE=0
 * turns it off. */
#define TUNE_MIN_FLOPS 2e8 /* about 5 ms and more: training convolutions, not decode steps */
#define TUNE_MAX 16

static bool tune_wanted(const kn_device *d, const kn_kernel *k) {
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
        for (int g = 0; g < ng; g++) t *= up[g], ok = ok && gs[g] % up[g] == 0;
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
  snprintf(out, n, "%s/tune/%016llx%016llx.%s", kn_cache_dir(), (unsigned long long)k1,
           (unsigned long long)k2, d->name);
}
/* The factors of a verdict file, if it holds ng valid ones for these dims, then the lanes
 * (0, the heuristic's SPLIT, where the file has none). */
static bool read_verdict(const char *path, int ng, const int64_t *gs, int64_t *up, int64_t *lanes) {
  FILE *f = fopen(path, "r");
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
  void *pg = d->compile(d, k);
  if (!pg) {
    if (!had_error) kiln_clear_error(); /* a candidate that fails is only not chosen */
    return -1;
  }
  double t = d->time_program(d, pg, k);
  d->free_program(d, pg);
  return t;
}
/* Returns the kernel to use: k0 (the heuristic's) or a faster lowering of the same item. */
static kn_kernel *tune(const kn_sched_item *it, kn_device *d, kn_kernel *k0, uint64_t k1, uint64_t k2) {
  int64_t gs[KILN_MAX_DIMS], up[KILN_MAX_DIMS], lanes;
  int ng = kn_lower_gshape(it, gs);
  char path[1200];
  tune_path(path, sizeof path, k1, k2, d);
  if (read_verdict(path, ng, gs, up, &lanes)) {
    kn_kernel_free(k0);
    return kn_lower_with(it, up, lanes);
  }
  static bool told;
  if (!told && isatty(2)) /* a first run pauses here for a while: say why, once */
    fprintf(stderr, "kiln: autotuning new kernels (first run of these shapes; the choices are cached)\n");
  told = true;
  kn_quick_compile = true;
  kn_kernel *best = k0;
  double tbest = time_kernel(d, k0), t0 = tbest;
  cand *c = kn_xmalloc(sizeof(*c) * TUNE_MAX);
  int nc = tbest < 0 ? 0 : candidates(ng, gs, k0, c);
  for (int i = 0; i < nc; i++) {
    if (!memcmp(c[i].up, k0->up, sizeof(int64_t) * ng) && c[i].lanes == k0->lanes) continue;
    kn_kernel *k = kn_lower_with(it, c[i].up, c[i].lanes);
    double t = time_kernel(d, k);
    if (t >= 0 && t < 0.95 * tbest) { /* a clear win only: noise must not pick */
      if (best != k0) kn_kernel_free(best);
      best = k, tbest = t;
    } else kn_kernel_free(k);
  }
  free(c);
  kn_quick_compile = false;
  if (tbest < 0) return k0; /* could not be timed: nothing learned, nothing written */
  if (best != k0) kn_kernel_free(k0);
  if (kn_debug_level() >= 3)
    fprintf(stderr, "kiln: tuned %s over %d candidates: %.3f ms (heuristic %.3f ms): %s\n", best->name, nc,
            tbest * 1e3, t0 * 1e3, best->opts);
  char dir[1100];
  snprintf(dir, sizeof dir, "%s/tune", kn_cache_dir());
  mkdir(dir, 0755);
  FILE *f = fopen(path, "w");
  if (f) {
    for (int g = 0; g < ng; g++) fprintf(f, "%lld ", (long long)best->up[g]);
    fprintf(f, "%lld\n", (long long)best->lanes);
    fclose(f);
  }
  return best;
}

static prog *get_program(const kn_sched_item *it, int dev) {
  hmap hm = {kn_xcalloc(1024, sizeof(hmemo)), 1024};
  uint64_t k1 = ast_hash(it, it->out, &hm, 1);
  memset(hm.m, 0, sizeof(hmemo) * hm.cap);
  uint64_t k2 = ast_hash(it, it->out, &hm, 0x5bd1e995);
  free(hm.m);
  for (int i = 0; i < it->ninputs; i++) { /* dtypes and shapes of inputs are part of the key */
    k1 = kn_hash_bytes(k1, &it->inputs[i]->dtype, 1);
    k2 = kn_hash_bytes(k2, &it->inputs[i]->dtype, 1);
  }
  k1 = kn_hash_bytes(k1, &it->out->dtype, 1);
  for (prog *p = progs[k1 & 4095]; p; p = p->next)
    if (p->k1 == k1 && p->k2 == k2 && p->dev == dev) return p;
  kn_kernel *k = kn_lower(it);
  if (tune_wanted(devices[dev], k)) k = tune(it, devices[dev], k, k1, k2);
  if (kn_debug_level() >= 3 && k->opts[0]) fprintf(stderr, "kiln: %s opts: %s\n", k->name, k->opts);
  if (kn_debug_level() >= 5) kn_kernel_print(stderr, k);
  void *pg = devices[dev]->compile(devices[dev], k);
  if (!pg) {
    kn_kernel_free(k);
    return NULL;
  }
  prog *p = kn_xmalloc(sizeof *p);
  *p = (prog){k1, k2, dev, k, pg, progs[k1 & 4095]};
  progs[k1 & 4095] = p;
  return p;
}

static void report_launch(const kn_device *d, const kn_kernel *k, double dt) {
  fprintf(stderr, "kiln: %-6s %-28s %9.3f ms %8.2f GFLOP/s %8.2f GB/s\n", d->name, k->name,
          dt * 1e3, k->flops / dt * 1e-9, k->bytes / dt * 1e-9);
}

/* ---- capture and replay ----
 * A capture keeps each launch's program and the nodes whose buffers it used (a reference on
 * each, so the buffers live as long as the capture). */
typedef struct {
  prog *p;
  int nnodes;
  kn_node **nodes; /* output, then inputs */
} launch_rec;
struct kiln_capture {
  launch_rec *recs;
  int n, cap;
  int64_t generation;
};
static kiln_capture *capturing;

static void record_launch(prog *p, const kn_sched_item *it) {
  kiln_capture *c = capturing;
  if (c->n == c->cap) {
    c->cap = c->cap ? 2 * c->cap : 64;
    c->recs = kn_xrealloc(c->recs, sizeof(launch_rec) * (size_t)c->cap);
  }
  launch_rec *r = &c->recs[c->n++];
  r->p = p, r->nnodes = it->ninputs + 1;
  r->nodes = kn_xmalloc(sizeof(kn_node *) * (size_t)r->nnodes);
  r->nodes[0] = it->out;
  for (int j = 0; j < it->ninputs; j++) r->nodes[j + 1] = it->inputs[j];
  for (int j = 0; j < r->nnodes; j++) kn_node_ref(r->nodes[j]);
}

int kiln_capture_begin(void) {
  if (capturing) {
    kn_err("capture: a capture is already running");
    return -1;
  }
  capturing = kn_xcalloc(1, sizeof(kiln_capture));
  capturing->generation = progs_generation;
  return 0;
}
kiln_capture *kiln_capture_end(void) {
  kiln_capture *c = capturing;
  if (!c) kn_err("capture: no capture is running");
  capturing = NULL;
  return c;
}
int kiln_capture_replay(const kiln_capture *c) {
  if (!c) {
    kn_err("capture: replay of NULL");
    return -1;
  }
  if (c->generation != progs_generation) {
    kn_err("capture: its programs were freed by kiln_reset_caches; capture again");
    return -1;
  }
  for (int i = 0; i < c->n; i++) {
    const launch_rec *r = &c->recs[i];
    void *bufs[64];
    for (int j = 0; j < r->nnodes; j++) bufs[j] = r->nodes[j]->buf->ptr;
    kn_device *d = devices[r->p->dev];
    double t1 = kn_now();
    d->launch(d, r->p->prog, r->p->kernel, bufs);
    kn_stats.kernels_run++;
    if (kn_debug_level() >= 2) report_launch(d, r->p->kernel, kn_now() - t1);
  }
  return 0;
}
int kiln_capture_launches(const kiln_capture *c) { return c ? c->n : 0; }
void kiln_capture_free(kiln_capture *c) {
  if (!c) return;
  for (int i = 0; i < c->n; i++) {
    for (int j = 0; j < c->recs[i].nnodes; j++) kn_node_unref(c->recs[i].nodes[j]);
    free(c->recs[i].nodes);
  }
  free(c->recs);
  free(c);
}

/* Last reads: for each item's output, the index of the last item reading it, and the
 * references the schedule itself holds on it (its own item's, one per reading item). The
 * outputs whose last reader is item i are chained from dies[i] through next. */
typedef struct {
  int last, held, next, dies;
} use;
static use *plan_uses(const kn_schedule *s) {
  use *u = kn_xmalloc(sizeof(use) * (size_t)(s->nitems ? s->nitems : 1));
  size_t cap = 16;
  while (cap < (size_t)s->nitems * 2) cap *= 2;
  int *slot = kn_xmalloc(sizeof(int) * cap); /* open addressing: output node -> item + 1 */
  memset(slot, 0, sizeof(int) * cap);
  for (int i = 0; i < s->nitems; i++) {
    u[i] = (use){-1, 1, -1, -1};
    size_t h = ((uintptr_t)s->items[i].out * 0x9E3779B97F4A7C15ull) >> 17;
    while (slot[h & (cap - 1)]) h++;
    slot[h & (cap - 1)] = i + 1;
  }
  for (int i = 0; i < s->nitems; i++)
    for (int j = 0; j < s->items[i].ninputs; j++) {
      kn_node *n = s->items[i].inputs[j];
      for (size_t h = ((uintptr_t)n * 0x9E3779B97F4A7C15ull) >> 17; slot[h & (cap - 1)]; h++) {
        int k = slot[h & (cap - 1)] - 1;
        if (s->items[k].out == n) {
          u[k].last = i, u[k].held++;
          break;
        }
      }
    }
  free(slot);
  for (int k = 0; k < s->nitems; k++)
    if (u[k].last >= 0) u[k].next = u[u[k].last].dies, u[u[k].last].dies = k;
  return u;
}

/* Frees the buffers of item i's inputs that no later kernel reads and nothing outside the
 * schedule holds: activations die as soon as the step is past them. */
static void release_dead_inputs(const kn_schedule *s, const use *u, int i) {
  for (int k = u[i].dies; k >= 0; k = u[k].next) {
    kn_node *n = s->items[k].out;
    if (n->refs != u[k].held || n->op != N_BUFFER || n->rg || !n->buf) continue;
    kn_buffer_free(n->buf);
    n->buf = NULL;
  }
}

int kn_schedule_run(kn_schedule *s) {
  double t0 = kn_now(), tk = 0;
  int ran = 0;
  use *uses = capturing ? NULL : plan_uses(s); /* a capture keeps every buffer */
  for (int i = 0; i < s->nitems; i++) {
    if (uses && i > 0) release_dead_inputs(s, uses, i - 1);
    kn_sched_item *it = &s->items[i];
    kn_node *out = it->out;
    int dev = out->device;
    for (int j = 0; j < it->ninputs; j++)
      if (it->inputs[j]->device != dev) {
        kn_err("realize: a kernel on %s reads a buffer on %s (copies between devices are not "
               "supported yet)", devices[dev]->name, devices[it->inputs[j]->device]->name);
        free(uses);
        return -1;
      }
    int64_t numel = kn_numel(out->ndim, out->shape);
    kn_buffer *buf = kn_buffer_alloc_scratch(dev, (size_t)numel * kiln_dtype_size(out->dtype));
    if (numel > 0) {
      prog *p = get_program(it, dev);
      if (!p) {
        kn_buffer_free(buf);
        free(uses);
        return -1;
      }
      void *bufs[64];
      bufs[0] = buf->ptr;
      for (int j = 0; j < it->ninputs; j++) bufs[j + 1] = it->inputs[j]->buf->ptr;
      double t1 = kn_now();
      devices[dev]->launch(devices[dev], p->prog, p->kernel, bufs);
      if (capturing) record_launch(p, it);
      double dt = kn_now() - t1;
      tk += dt;
      kn_stats.kernels_run++;
      ran++;
      if (kn_debug_level() >= 2) report_launch(devices[dev], p->kernel, dt);
    }
    kn_node_set_realized(out, buf);
  }
  if (ran) kn_stats.schedules++;
  if (ran && kn_debug_level() >= 1)
    fprintf(stderr, "kiln: realize ran %d kernel%s in %.3f ms (%.3f ms in kernels)\n", ran,
            ran == 1 ? "" : "s", (kn_now() - t0) * 1e3, tk * 1e3);
  free(uses);
  return 0;
}
