/* device.c — the device registry (devices by name, probed once, the default device) and
 * buffers: allocations, views at an offset, and the copies between them and the host. */
#include "internal.h"

kiln_stats kn_stats;
static kn_device *devices[] = {&kn_dev_cpu, &kn_dev_interp, &kn_dev_cl, &kn_dev_cuda};
#define NDEV ((int)(sizeof devices / sizeof devices[0]))
static int default_dev = -1;
static const char *why_not[NDEV];
static bool probed[NDEV];

int kn_device_count(void) { return NDEV; }
kn_device *kn_device_get(int i) { return devices[i]; }
int kn_device_find(const char *name) {
  for (int i = 0; i < NDEV; i++)
    if (name && !strcasecmp(name, devices[i]->name)) return i;
  return -1;
}
bool kn_device_usable(int i, const char **why) {
  if (!probed[i]) {
    why_not[i] = devices[i]->probe ? devices[i]->probe(devices[i]) : NULL;
    probed[i] = true;
  }
  if (why) *why = why_not[i];
  return why_not[i] == NULL;
}
static const char *names_list(void) {
  static char buf[128];
  int n = 0;
  for (int i = 0; i < NDEV; i++)
    n += snprintf(buf + n, sizeof buf - n, "%s%s", i ? ", " : "", devices[i]->name);
  return buf;
}
int kn_device_default(void) {
  if (default_dev < 0) {
    const char *e = getenv("KILN_DEVICE"), *why;
    default_dev = 0;
    int d = e && *e ? kn_device_find(e) : 0;
    if (d < 0)
      fprintf(stderr, "kiln: KILN_DEVICE=%s is not a device (have %s); using CPU\n", e,
              names_list());
    else if (!kn_device_usable(d, &why))
      fprintf(stderr, "kiln: KILN_DEVICE=%s does not work here (%s); using CPU\n", e, why);
    else
      default_dev = d;
  }
  return default_dev;
}
int kiln_set_device(const char *name) {
  int d = kn_device_find(name);
  const char *why;
  if (d < 0) {
    kn_err("set_device: unknown device '%s' (have %s)", name ? name : "(null)", names_list());
    return -1;
  }
  if (!kn_device_usable(d, &why)) {
    kn_err("set_device: %s does not work here: %s", devices[d]->name, why);
    return -1;
  }
  default_dev = d;
  return 0;
}
const char *kiln_get_device(void) { return devices[kn_device_default()]->name; }
int kiln_device_count(void) { return NDEV; }
const char *kiln_device_name(int i) { return i >= 0 && i < NDEV ? devices[i]->name : NULL; }
const char *kiln_device_status(int i) {
  if (i < 0 || i >= NDEV) return "no such device";
  const char *why;
  return kn_device_usable(i, &why) ? NULL : why;
}

/* ---- buffers ---- */
static void buffer_drop(kn_held *h) { kn_buffer_free((kn_buffer *)h); }
static kn_buffer *buffer_new(kn_device *d, void *h, size_t nbytes, bool external) {
  kn_buffer *b = kn_xmalloc(sizeof *b);
  *b = (kn_buffer){{buffer_drop}, d, h, nbytes, 1, NULL, external};
  return b;
}
static kn_buffer *alloc(int device, size_t nbytes, bool zeroed) {
  kn_device *d = devices[device];
  void *h = d->alloc(d, nbytes, zeroed);
  if (!h) return NULL;
  kn_stats.bytes_allocated += nbytes;
  return buffer_new(d, h, nbytes, false);
}
kn_buffer *kn_buffer_alloc(int device, size_t nbytes) { return alloc(device, nbytes, true); }
kn_buffer *kn_buffer_alloc_scratch(int device, size_t nbytes) {
  return alloc(device, nbytes, false);
}
kn_buffer *kn_buffer_wrap(int device, void *ptr, size_t nbytes) {
  KN_ASSERT(devices[device]->caps.host_memory, "device %s cannot read host memory",
            devices[device]->name);
  return buffer_new(devices[device], ptr, nbytes, true);
}
kn_buffer *kn_buffer_view(kn_buffer *b, size_t off, size_t n) {
  KN_ASSERT(off <= b->nbytes && n <= b->nbytes - off, "view [%zu, +%zu) past a buffer of %zu bytes",
            off, n, b->nbytes);
  void *h = b->dev->view(b->dev, b->h, off, n);
  if (!h) return NULL;
  kn_buffer *v = buffer_new(b->dev, h, n, false);
  v->base = b;
  b->refs++;
  return v;
}
void kn_buffer_free(kn_buffer *b) {
  if (!b || --b->refs > 0) return;
  if (b->base) {
    b->dev->free_view(b->dev, b->h);
    kn_buffer_free(b->base);
  } else if (!b->external) {
    kn_stats.bytes_allocated -= b->nbytes;
    b->dev->free(b->dev, b->h);
  }
  free(b);
}
void kn_buffer_write(kn_buffer *b, size_t off, const void *src, size_t n) {
  KN_ASSERT(off <= b->nbytes && n <= b->nbytes - off, "write past a buffer");
  if (n) b->dev->copyin(b->dev, b->h, off, src, n);
}
void kn_buffer_read(kn_buffer *b, void *dst, size_t off, size_t n) {
  KN_ASSERT(off <= b->nbytes && n <= b->nbytes - off, "read past a buffer");
  if (n) b->dev->copyout(b->dev, dst, b->h, off, n);
}
void kn_buffer_copy(kn_buffer *dst, size_t doff, kn_buffer *src, size_t soff, size_t n) {
  KN_ASSERT(doff <= dst->nbytes && n <= dst->nbytes - doff && soff <= src->nbytes &&
                n <= src->nbytes - soff,
            "copy past a buffer");
  if (!n) return;
  if (dst->dev == src->dev) return dst->dev->copy(dst->dev, dst->h, doff, src->h, soff, n);
  void *tmp = kn_xmalloc(n);
  kn_buffer_read(src, tmp, soff, n);
  kn_buffer_write(dst, doff, tmp, n);
  free(tmp);
}

/* the devices in use: probed and working, or needing no probe (CPU, INTERP) */
static bool in_use(int i) { return !devices[i]->probe || (probed[i] && !why_not[i]); }
void kiln_synchronize(void) {
  for (int i = 0; i < NDEV; i++)
    if (in_use(i)) devices[i]->synchronize(devices[i]);
}
void kiln_release_memory(void) {
  for (int i = 0; i < NDEV; i++)
    if (devices[i]->release && in_use(i)) devices[i]->release(devices[i]);
}
void kiln_reset_caches(void) {
  kn_program_cache_clear();
  kiln_release_memory();
}
