/* util.c — errors, allocation checks, hashing and small helpers shared by every stage. */
#include "internal.h"
#include <time.h>

static _Thread_local char err_msg[1024];
static _Thread_local bool err_set;

/* Names of the composite ops running now: an error inside one is reported under the
 * outermost name ("linear: matmul: inner dims differ ..."). */
static _Thread_local const char *err_ctx[16];
static _Thread_local int err_depth;
void kn_err_push(const char *name) {
  if (err_depth < 16) err_ctx[err_depth] = name;
  err_depth++;
}
void kn_err_pop(void) {
  if (err_depth > 0) err_depth--;
}

void kn_err(const char *fmt, ...) {
  if (err_set) return; /* keep the first error: it names the real cause */
  va_list ap;
  va_start(ap, fmt);
  int o = 0;
  size_t n = err_depth ? strlen(err_ctx[0]) : 0;
  if (err_depth && strncmp(fmt, err_ctx[0], n) != 0)
    o = snprintf(err_msg, sizeof err_msg, "%s: ", err_ctx[0]);
  vsnprintf(err_msg + o, sizeof err_msg - o, fmt, ap);
  va_end(ap);
  err_set = true;
  if (kn_debug_level() >= 1) fprintf(stderr, "kiln: error: %s\n", err_msg);
}

const char *kiln_error(void) { return err_set ? err_msg : ""; }
void kiln_clear_error(void) {
  err_set = false;
  err_msg[0] = 0;
}

static void oom(size_t n) {
  fprintf(stderr, "kiln: out of memory allocating %zu bytes\nHINT: use smaller shapes or batch\n",
          n);
  abort();
}
void *kn_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) oom(n);
  return p;
}
void *kn_xcalloc(size_t n, size_t sz) {
  void *p = calloc(n ? n : 1, sz ? sz : 1);
  if (!p) oom(n * sz);
  return p;
}
void *kn_xrealloc(void *q, size_t n) {
  void *p = realloc(q, n ? n : 1);
  if (!p) oom(n);
  return p;
}

const char *kn_shape_str(char *buf, int ndim, const int64_t *shape) {
  int o = snprintf(buf, 200, "(");
  for (int i = 0; i < ndim && o < 180; i++)
    o += snprintf(buf + o, 200 - o, "%s%lld", i ? "," : "", (long long)shape[i]);
  snprintf(buf + o, 200 - o, ")");
  return buf;
}

int kn_debug_level(void) {
  static int level = -1;
  if (level < 0) {
    const char *s = getenv("DEBUG");
    level = s ? atoi(s) : 0;
  }
  return level;
}

uint64_t kn_hash_bytes(uint64_t h, const void *p, size_t n) {
  const unsigned char *c = p; /* FNV-1a, then a final mix */
  if (!h) h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211ull;
  return h;
}

double kn_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int64_t kn_numel(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++) n *= shape[i];
  return n;
}

/* ---- dtypes ---- */
static const struct {
  const char *name;
  int size, bits;
  bool is_float, is_unsigned;
} dtinfo[KILN_NDTYPES] = {
    [KILN_BOOL] = {"bool", 1, 1, false, true},  [KILN_U8] = {"u8", 1, 8, false, true},
    [KILN_I8] = {"i8", 1, 8, false, false},     [KILN_U16] = {"u16", 2, 16, false, true},
    [KILN_I16] = {"i16", 2, 16, false, false},  [KILN_U32] = {"u32", 4, 32, false, true},
    [KILN_I32] = {"i32", 4, 32, false, false},  [KILN_U64] = {"u64", 8, 64, false, true},
    [KILN_I64] = {"i64", 8, 64, false, false},  [KILN_F16] = {"f16", 2, 16, true, false},
    [KILN_BF16] = {"bf16", 2, 16, true, false}, [KILN_F32] = {"f32", 4, 32, true, false},
    [KILN_F64] = {"f64", 8, 64, true, false},
};

const char *kiln_dtype_name(kiln_dtype dt) {
  return (unsigned)dt < KILN_NDTYPES ? dtinfo[dt].name : "?";
}
size_t kiln_dtype_size(kiln_dtype dt) { return (unsigned)dt < KILN_NDTYPES ? dtinfo[dt].size : 0; }
bool kiln_dtype_is_float(kiln_dtype dt) {
  return (unsigned)dt < KILN_NDTYPES && dtinfo[dt].is_float;
}
bool kn_dtype_is_unsigned(int dt) { return dtinfo[dt].is_unsigned && dt != KILN_BOOL; }
bool kn_dtype_is_int(int dt) { return dt != KILN_BOOL && !dtinfo[dt].is_float; }
int kn_dtype_bits(int dt) { return dtinfo[dt].bits; }
int kn_compute_dtype(int dt) { return dt == KILN_F16 || dt == KILN_BF16 ? KILN_F32 : dt; }

static int int_of(bool is_unsigned, int bits) {
  switch (bits) {
  case 8: return is_unsigned ? KILN_U8 : KILN_I8;
  case 16: return is_unsigned ? KILN_U16 : KILN_I16;
  case 32: return is_unsigned ? KILN_U32 : KILN_I32;
  default: return is_unsigned ? KILN_U64 : KILN_I64;
  }
}

kiln_dtype kiln_promote(kiln_dtype a, kiln_dtype b) {
  if (a == b) return a;
  if (a == KILN_BOOL) return b;
  if (b == KILN_BOOL) return a;
  bool fa = dtinfo[a].is_float, fb = dtinfo[b].is_float;
  if (fa && fb) {
    if ((a == KILN_F16 && b == KILN_BF16) || (a == KILN_BF16 && b == KILN_F16)) return KILN_F32;
    return dtinfo[a].bits >= dtinfo[b].bits ? a : b;
  }
  if (fa) return a;
  if (fb) return b;
  bool ua = dtinfo[a].is_unsigned, ub = dtinfo[b].is_unsigned;
  int ba = dtinfo[a].bits, bb = dtinfo[b].bits;
  if (ua == ub) return ba >= bb ? a : b;
  int ubits = ua ? ba : bb, sbits = ua ? bb : ba; /* mixed signedness */
  if (sbits > ubits) return int_of(false, sbits);
  return int_of(false, ubits * 2 > 64 ? 64 : ubits * 2);
}

void kn_sbuf_put(kn_sbuf *b, const char *s, size_t n) {
  if (b->n + n + 1 > b->cap) {
    while (b->n + n + 1 > b->cap) b->cap = b->cap ? 2 * b->cap : 256;
    b->s = kn_xrealloc(b->s, b->cap);
  }
  memcpy(b->s + b->n, s, n);
  b->n += n;
  b->s[b->n] = 0;
}
void kn_sbuf_printf(kn_sbuf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  KN_ASSERT(k >= 0, "kn_sbuf_printf: bad format '%s'", fmt);
  kn_sbuf_put(b, "", 0);
  if (b->n + (size_t)k + 1 > b->cap) {
    while (b->n + (size_t)k + 1 > b->cap) b->cap *= 2;
    b->s = kn_xrealloc(b->s, b->cap);
  }
  va_start(ap, fmt);
  vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
  va_end(ap);
  b->n += (size_t)k;
}
