/* device.c — the device registry, buffers, the in-memory program cache, and the loop that
 * runs a schedule (lower -> compile -> allocate -> launch), with DEBUG reporting. */
#include "internal.h"

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
  b->ptr = b->dev->alloc(b->dev, nbytes);
  kn_stats.bytes_allocated += nbytes;
  return b;
}
void kn_buffer_free(kn_buffer *b) {
  kn_stats.bytes_allocated -= b->nbytes;
  b->dev->free(b->dev, b->ptr);
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
    h = kn_hash_bytes(h, n->arg, sizeof n->arg);
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

void kn_program_cache_clear(void) {
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
void kiln_reset_caches(void) { kn_program_cache_clear(); }

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

int kn_schedule_run(kn_schedule *s) {
  double t0 = kn_now(), tk = 0;
  int ran = 0;
  for (int i = 0; i < s->nitems; i++) {
    kn_sched_item *it = &s->items[i];
    kn_node *out = it->out;
    int dev = out->device;
    for (int j = 0; j < it->ninputs; j++)
      if (it->inputs[j]->device != dev) {
        kn_err("realize: a kernel on %s reads a buffer on %s (copies between devices are not "
               "supported yet)", devices[dev]->name, devices[it->inputs[j]->device]->name);
        return -1;
      }
    int64_t numel = kn_numel(out->ndim, out->shape);
    kn_buffer *buf = kn_buffer_alloc(dev, (size_t)numel * kiln_dtype_size(out->dtype));
    if (numel > 0) {
      prog *p = get_program(it, dev);
      if (!p) {
        kn_buffer_free(buf);
        return -1;
      }
      void *bufs[64];
      bufs[0] = buf->ptr;
      for (int j = 0; j < it->ninputs; j++) bufs[j + 1] = it->inputs[j]->buf->ptr;
      double t1 = kn_now();
      devices[dev]->launch(devices[dev], p->prog, p->kernel, bufs);
      double dt = kn_now() - t1;
      tk += dt;
      kn_stats.kernels_run++;
      ran++;
      if (kn_debug_level() >= 2)
        fprintf(stderr, "kiln: %-6s %-28s %9.3f ms %8.2f GFLOP/s %8.2f GB/s\n", devices[dev]->name,
                p->kernel->name, dt * 1e3, p->kernel->flops / dt * 1e-9, p->kernel->bytes / dt * 1e-9);
    }
    kn_node_set_realized(out, buf);
  }
  if (ran) kn_stats.schedules++;
  if (ran && kn_debug_level() >= 1)
    fprintf(stderr, "kiln: realize ran %d kernel%s in %.3f ms (%.3f ms in kernels)\n", ran,
            ran == 1 ? "" : "s", (kn_now() - t0) * 1e3, tk * 1e3);
  return 0;
}
