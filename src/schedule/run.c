/* run.c — runs schedules: each kernel is lowered (codegen, with the search where it pays),
 * written in its device's dialect, compiled (an in-memory program cache keyed by the kernel's
 * structure, over the devices' disk cache), given an output buffer and launched; buffers no
 * later kernel reads are freed on the way. Also capture and replay, and DEBUG reporting. */
#include "internal.h"

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
  if (slot >= 0 || kn_is_realized(n))
    h = kn_hash_bytes(h ^ 0xabcdef, &slot, sizeof slot);
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
      kn_device_get(p->dev)->free_program(kn_device_get(p->dev), p->prog);
      kn_kernel_free(p->kernel);
      free(p);
    }
    progs[i] = NULL;
  }
}
/* KILN_NVRTC_CHECK=sm_XX: every new kernel is also lowered for CUDA, written in CUDA C and
 * compiled by NVRTC for that architecture, and a failure is the realize's error: CUDA code
 * is checked where there is no GPU (DEBUG=4 prints it, as it prints what the device runs). */
static int nvrtc_check(const kn_sched_item *it) {
  static const char *arch;
  if (!arch) arch = getenv("KILN_NVRTC_CHECK") ? getenv("KILN_NVRTC_CHECK") : "";
  if (!*arch) return 0;
  kn_kernel *k = kn_lower(it, &kn_dev_cuda.caps, NULL);
  char *src = kn_render(&kn_dialect_cuda, k);
  int rc = kn_cuda_check(src, k->name, arch);
  if ((rc < 0 && kn_debug_level() >= 1) || kn_debug_level() >= 4) fprintf(stderr, "%s\n", src);
  free(src);
  kn_kernel_free(k);
  return rc;
}

/* The program cache's two keys of item it. */
static void item_keys(const kn_sched_item *it, uint64_t *key1, uint64_t *key2) {
  hmap hm = {kn_xcalloc(1024, sizeof(hmemo)), 1024};
  uint64_t k1 = ast_hash(it, it->out, &hm, 1);
  memset(hm.m, 0, sizeof(hmemo) * hm.cap);
  uint64_t k2 = ast_hash(it, it->out, &hm, 0x5bd1e995);
  free(hm.m);
  for (int i = 0; i < it->ninputs; i++) { /* dtypes and shapes of inputs are part of the key */
    k1 = kn_hash_bytes(k1, &it->inputs[i]->dtype, 1);
    k2 = kn_hash_bytes(k2, &it->inputs[i]->dtype, 1);
  }
  *key1 = kn_hash_bytes(k1, &it->out->dtype, 1), *key2 = k2;
}
static prog *find_program(uint64_t k1, uint64_t k2, int dev) {
  for (prog *p = progs[k1 & 4095]; p; p = p->next)
    if (p->k1 == k1 && p->k2 == k2 && p->dev == dev) return p;
  return NULL;
}

/* A device that builds programs ahead (CPU: compiler processes in parallel) is handed the
 * heuristic's source of every kernel of the schedule it has no program for, before the first
 * runs: a new training step compiles on every core instead of one kernel after another.
 * Kernels the search will lower (while its budget lasts) are left to it. */
static void prefetch_programs(const kn_schedule *s, const uint64_t *keys) {
  for (int i = 0; i < s->nitems; i++) {
    const kn_sched_item *it = &s->items[i];
    kn_device *d = kn_device_get(it->out->device);
    if (!d->prefetch || kn_numel(it->out->ndim, it->out->shape) == 0 ||
        find_program(keys[2 * i], keys[2 * i + 1], it->out->device))
      continue;
    bool dup = false; /* the same kernel twice in one schedule: once */
    for (int j = 0; j < i && !dup; j++)
      dup = keys[2 * j] == keys[2 * i] && keys[2 * j + 1] == keys[2 * i + 1];
    kn_kernel *k = dup ? NULL : kn_lower(it, &d->caps, NULL), *k0 = k;
    if (k) k = kn_search_cached(it, d, k, keys[2 * i], keys[2 * i + 1]);
    if (k && !(k == k0 && kn_search_wanted(d, k) && kn_search_budget_left())) {
      char *src = kn_render(d->dialect, k);
      d->prefetch(d, k, src);
      free(src);
    }
    kn_kernel_free(k);
  }
}

static prog *get_program(const kn_sched_item *it, int dev, uint64_t k1, uint64_t k2) {
  prog *found = find_program(k1, k2, dev);
  if (found) return found;
  kn_device *d = kn_device_get(dev);
  if (nvrtc_check(it) < 0) return NULL;
  kn_kernel *k = kn_lower(it, &d->caps, NULL);
  k = kn_search(it, d, k, k1, k2);
  if (kn_debug_level() >= 3 && k->opts.n) {
    char t[256];
    kn_opts_format(&k->opts, t, sizeof t);
    fprintf(stderr, "kiln: %s opts: %s\n", k->name, t);
  }
  if (kn_debug_level() >= 5) kn_kernel_print(stderr, k);
  char *src = d->dialect ? kn_render(d->dialect, k) : NULL;
  if (src && kn_debug_level() >= 4) fprintf(stderr, "%s\n", src);
  void *pg = d->compile(d, k, src);
  free(src);
  if (!pg) {
    kn_kernel_free(k);
    return NULL;
  }
  prog *p = kn_xmalloc(sizeof *p);
  *p = (prog){k1, k2, dev, k, pg, progs[k1 & 4095]};
  progs[k1 & 4095] = p;
  return p;
}

/* One launch; timed (waiting for it) only at DEBUG >= 2. Returns the seconds it took (0 when
 * not timed), or < 0 if the device refused it. */
static double launch(kn_device *d, prog *p, void *const *bufs) {
  bool timed = kn_debug_level() >= 2;
  double t1 = timed ? kn_now() : 0;
  if (d->launch(d, p->prog, p->kernel, bufs) < 0) return -1;
  kn_stats.kernels_run++;
  if (!timed) return 0;
  d->synchronize(d);
  double dt = kn_now() - t1;
  fprintf(stderr, "kiln: %-6s %-28s %9.3f ms %8.2f GFLOP/s %8.2f GB/s\n", d->name, p->kernel->name,
          dt * 1e3, p->kernel->flops / dt * 1e-9, p->kernel->bytes / dt * 1e-9);
  return dt;
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
  void *graph; /* the launches as one submission, where their device builds one */
  kn_device *graph_dev;
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
  for (int j = 0; j < it->ninputs; j++)
    r->nodes[j + 1] = it->inputs[j];
  for (int j = 0; j < r->nnodes; j++)
    kn_node_ref(r->nodes[j]);
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
/* A capture whose launches all ran on one device that replays launches as one submission
 * (CUDA graphs) is handed to it once; KILN_GRAPH=0 keeps launches one by one. */
static void build_graph(kiln_capture *c) {
  kn_device *d = c->n ? kn_device_get(c->recs[0].p->dev) : NULL;
  const char *env = getenv("KILN_GRAPH");
  if (!d || !d->graph || (env && !strcmp(env, "0"))) return;
  for (int i = 0; i < c->n; i++)
    if (kn_device_get(c->recs[i].p->dev) != d) return;
  void **progs = kn_xmalloc(sizeof(void *) * (size_t)c->n),
       ***bufs = kn_xmalloc(sizeof(void **) * (size_t)c->n);
  const kn_kernel **ks = kn_xmalloc(sizeof(kn_kernel *) * (size_t)c->n);
  for (int i = 0; i < c->n; i++) {
    const launch_rec *r = &c->recs[i];
    progs[i] = r->p->prog, ks[i] = r->p->kernel;
    bufs[i] = kn_xmalloc(sizeof(void *) * (size_t)r->nnodes);
    for (int j = 0; j < r->nnodes; j++)
      bufs[i][j] = r->nodes[j]->buf->h;
  }
  c->graph = d->graph(d, c->n, progs, ks, (void *const *const *)bufs);
  c->graph_dev = c->graph ? d : NULL;
  if (kn_debug_level() >= 1)
    fprintf(stderr, "kiln: capture of %d launches %s\n", c->n,
            c->graph ? "replays as one graph" : "could not be built as a graph");
  for (int i = 0; i < c->n; i++)
    free(bufs[i]);
  free(progs), free(bufs), free(ks);
}
kiln_capture *kiln_capture_end(void) {
  kiln_capture *c = capturing;
  if (!c) kn_err("capture: no capture is running");
  capturing = NULL;
  if (c) build_graph(c);
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
  if (c->graph) {
    if (c->graph_dev->graph_launch(c->graph_dev, c->graph) < 0) return -1;
    kn_stats.kernels_run += c->n;
    return 0;
  }
  for (int i = 0; i < c->n; i++) {
    const launch_rec *r = &c->recs[i];
    void *bufs[64];
    for (int j = 0; j < r->nnodes; j++)
      bufs[j] = r->nodes[j]->buf->h;
    if (launch(kn_device_get(r->p->dev), r->p, bufs) < 0) return -1;
  }
  return 0;
}
int kiln_capture_launches(const kiln_capture *c) { return c ? c->n : 0; }
void kiln_capture_free(kiln_capture *c) {
  if (!c) return;
  if (c->graph) c->graph_dev->graph_free(c->graph_dev, c->graph);
  for (int i = 0; i < c->n; i++) {
    for (int j = 0; j < c->recs[i].nnodes; j++)
      kn_node_unref(c->recs[i].nodes[j]);
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
  while (cap < (size_t)s->nitems * 2)
    cap *= 2;
  int *slot = kn_xmalloc(sizeof(int) * cap); /* open addressing: output node -> item + 1 */
  memset(slot, 0, sizeof(int) * cap);
  for (int i = 0; i < s->nitems; i++) {
    u[i] = (use){-1, 1, -1, -1};
    size_t h = ((uintptr_t)s->items[i].out * 0x9E3779B97F4A7C15ull) >> 17;
    while (slot[h & (cap - 1)])
      h++;
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
  int ran = 0, rc = 0;
  use *uses = capturing ? NULL : plan_uses(s); /* a capture keeps every buffer */
  uint64_t *keys = kn_xmalloc(sizeof(uint64_t) * 2 * (size_t)(s->nitems ? s->nitems : 1));
  for (int i = 0; i < s->nitems; i++)
    item_keys(&s->items[i], &keys[2 * i], &keys[2 * i + 1]);
  prefetch_programs(s, keys);
  for (int i = 0; i < s->nitems && rc == 0; i++) {
    if (uses && i > 0) release_dead_inputs(s, uses, i - 1);
    kn_sched_item *it = &s->items[i];
    kn_node *out = it->out;
    int dev = out->device;
    kn_device *d = kn_device_get(dev);
    for (int j = 0; j < it->ninputs && rc == 0; j++)
      if (it->inputs[j]->device != dev) {
        kn_err("realize: a kernel on %s reads a buffer on %s (copies between devices are not "
               "supported yet)",
               d->name, kn_device_get(it->inputs[j]->device)->name);
        rc = -1;
      }
    int64_t numel = kn_numel(out->ndim, out->shape);
    kn_buffer *buf =
        rc ? NULL : kn_buffer_alloc_scratch(dev, (size_t)numel * kiln_dtype_size(out->dtype));
    prog *p = buf && numel > 0 ? get_program(it, dev, keys[2 * i], keys[2 * i + 1]) : NULL;
    if (!buf || (numel > 0 && !p)) {
      kn_buffer_free(buf);
      rc = -1;
      break;
    }
    if (p) {
      void *bufs[64];
      bufs[0] = buf->h;
      for (int j = 0; j < it->ninputs; j++)
        bufs[j + 1] = it->inputs[j]->buf->h;
      double dt = launch(d, p, bufs);
      if (dt < 0) {
        kn_buffer_free(buf);
        rc = -1;
        break;
      }
      tk += dt;
      if (capturing) record_launch(p, it);
      ran++;
    }
    kn_node_set_realized(out, buf);
  }
  if (ran) kn_stats.schedules++;
  if (ran && kn_debug_level() >= 1) {
    kn_device_get(s->items[0].out->device)->synchronize(kn_device_get(s->items[0].out->device));
    fprintf(stderr, "kiln: realize ran %d kernel%s in %.3f ms", ran, ran == 1 ? "" : "s",
            (kn_now() - t0) * 1e3);
    if (kn_debug_level() >= 2) fprintf(stderr, " (%.3f ms in kernels)", tk * 1e3);
    fprintf(stderr, "\n");
  }
  free(uses);
  free(keys);
  return rc;
}
