/* gguf.c — the GGUF (v2, v3) reader: maps a model file read-only, checks every count, length,
 * type, offset and size against the bytes that are really there before it trusts them, and
 * keeps the metadata (keys, scalars, arrays) and the tensor table for lookups. Tensor data is
 * never copied: kiln_gguf_tensor.data points into the mapping. */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define GG_MAX_NAME 65535 /* bytes in a key or a tensor name (the specification's limit) */
#define GG_MAX_DIMS 4
#define GG_DEFAULT_ALIGNMENT 32
#define GG_NTYPES 13 /* metadata value types */

/* ---- ggml tensor types ----------------------------------------------------------------------
 * Elements per block and bytes per block, by type code. Codes 4, 5 and 31..33, 36..38 were
 * used by formats ggml has since removed; they are unknown here, like any code not listed.
 * Q8_1 is 2 halves and 32 quants as ggml lays it out today (older ggml used two floats). */
static const struct {
  const char *name;
  int64_t block, size;
} ggml_types[] = {
    [0] = {"F32", 1, 4},         [1] = {"F16", 1, 2},         [2] = {"Q4_0", 32, 18},
    [3] = {"Q4_1", 32, 20},      [6] = {"Q5_0", 32, 22},      [7] = {"Q5_1", 32, 24},
    [8] = {"Q8_0", 32, 34},      [9] = {"Q8_1", 32, 36},      [10] = {"Q2_K", 256, 84},
    [11] = {"Q3_K", 256, 110},   [12] = {"Q4_K", 256, 144},   [13] = {"Q5_K", 256, 176},
    [14] = {"Q6_K", 256, 210},   [15] = {"Q8_K", 256, 292},   [16] = {"IQ2_XXS", 256, 66},
    [17] = {"IQ2_XS", 256, 74},  [18] = {"IQ3_XXS", 256, 98}, [19] = {"IQ1_S", 256, 50},
    [20] = {"IQ4_NL", 32, 18},   [21] = {"IQ3_S", 256, 110},  [22] = {"IQ2_S", 256, 82},
    [23] = {"IQ4_XS", 256, 136}, [24] = {"I8", 1, 1},         [25] = {"I16", 1, 2},
    [26] = {"I32", 1, 4},        [27] = {"I64", 1, 8},        [28] = {"F64", 1, 8},
    [29] = {"IQ1_M", 256, 56},   [30] = {"BF16", 1, 2},       [34] = {"TQ1_0", 256, 54},
    [35] = {"TQ2_0", 256, 66},   [39] = {"MXFP4", 32, 17},
};
#define GGML_NCODES ((int)(sizeof ggml_types / sizeof ggml_types[0]))

static bool ggml_known(int type) {
  return type >= 0 && type < GGML_NCODES && ggml_types[type].name != NULL;
}
const char *kiln_ggml_type_name(int type) { return ggml_known(type) ? ggml_types[type].name : "?"; }
int64_t kiln_ggml_block_size(int type) { return ggml_known(type) ? ggml_types[type].block : 0; }
int64_t kiln_ggml_type_size(int type) { return ggml_known(type) ? ggml_types[type].size : 0; }

/* ---- metadata value types ---- */
static const char *const value_type_names[GG_NTYPES] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"};
/* Bytes of one value on disk; 0 for the variable-length ones (string, array). */
static const uint8_t value_type_sizes[GG_NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
/* The fewest bytes a value of each type can take (a string is at least its length). */
static const uint8_t value_type_min[GG_NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 8, 12, 8, 8, 8};

const char *kiln_gguf_type_name(kiln_gguf_type t) {
  return (unsigned)t < GG_NTYPES ? value_type_names[t] : "?";
}

static bool type_is_int(kiln_gguf_type t) {
  return t <= KILN_GGUF_I32 || t == KILN_GGUF_U64 || t == KILN_GGUF_I64;
}
static bool type_is_float(kiln_gguf_type t) { return t == KILN_GGUF_F32 || t == KILN_GGUF_F64; }

/* ---- the handle ---------------------------------------------------------------------------- */
typedef struct {
  char *key;
  kiln_gguf_type type;
  kiln_gguf_type elem; /* ARRAY: element type */
  int64_t n;           /* ARRAY: element count */
  const uint8_t *raw;  /* scalar, or numeric array: little-endian bytes inside the mapping */
  char *str;           /* STRING: a copy of len bytes and a NUL */
  size_t len;
  char *blob;   /* string ARRAY: the elements, each followed by a NUL */
  size_t *offs; /* string ARRAY: element j is blob[offs[j] .. offs[j+1]-1) (n+1 entries) */
} gg_kv;

struct kiln_gguf {
  const uint8_t *map; /* the whole file, read-only */
  size_t size;
  int version;
  uint64_t alignment, data_start; /* data_start: file offset of the data section */
  gg_kv *kvs;
  int64_t nkv, kv_cap;
  kiln_gguf_tensor *ts;
  int64_t nt, t_cap;
  int64_t *kv_order, *t_order; /* indices sorted by key / by name, for lookups */
};

void kiln_gguf_close(kiln_gguf *g) {
  if (!g) return;
  for (int64_t i = 0; i < g->nkv; i++) {
    free(g->kvs[i].key);
    free(g->kvs[i].str);
    free(g->kvs[i].blob);
    free(g->kvs[i].offs);
  }
  free(g->kvs);
  for (int64_t i = 0; i < g->nt; i++)
    free((char *)g->ts[i].name);
  free(g->ts);
  free(g->kv_order);
  free(g->t_order);
  if (g->map) munmap((void *)g->map, g->size);
  free(g);
}

/* ---- reading bytes -------------------------------------------------------------------------
 * A cursor over the mapping. Every read first checks that the bytes are there; a failed check
 * records the error and every caller returns false up to kiln_gguf_open. */
typedef struct {
  const char *path;
  const uint8_t *p;
  size_t pos, size;
  char ctx[200]; /* what is being read: "kv 3 'general.name'", "tensor 'x'" */
} gg_reader;

static void gg_err(const gg_reader *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void gg_err(const gg_reader *r, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  kn_err("gguf: %s: %s%s%s", r->path, r->ctx, r->ctx[0] ? ": " : "", msg);
}

static uint64_t le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--)
    v = v << 8 | p[i];
  return v;
}

static size_t left(const gg_reader *r) { return r->size - r->pos; }

static bool need(gg_reader *r, size_t n, const char *what) {
  if (left(r) >= n) return true;
  gg_err(r, "truncated: %s needs %zu bytes at byte %zu, the file ends at %zu", what, n, r->pos,
         r->size);
  return false;
}

static bool rd_u32(gg_reader *r, const char *what, uint32_t *out) {
  if (!need(r, 4, what)) return false;
  *out = (uint32_t)le(r->p + r->pos, 4);
  r->pos += 4;
  return true;
}

static bool rd_u64(gg_reader *r, const char *what, uint64_t *out) {
  if (!need(r, 8, what)) return false;
  *out = le(r->p + r->pos, 8);
  r->pos += 8;
  return true;
}

/* A string's length and bytes: *s points into the mapping. */
static bool rd_str(gg_reader *r, const char *what, const uint8_t **s, uint64_t *len) {
  char lw[96];
  snprintf(lw, sizeof lw, "the length of %s", what);
  if (!rd_u64(r, lw, len)) return false;
  if (*len > left(r)) {
    gg_err(r, "%s length %llu runs past the end of the file (%zu bytes left at byte %zu)", what,
           (unsigned long long)*len, left(r), r->pos);
    return false;
  }
  *s = r->p + r->pos;
  r->pos += (size_t)*len;
  return true;
}

/* A key or tensor name: bounded, non-empty, without NUL; copied into a new C string. */
static char *rd_name(gg_reader *r, const char *what) {
  const uint8_t *s;
  uint64_t len;
  size_t at = r->pos;
  char lw[96];
  snprintf(lw, sizeof lw, "the length of the %s", what);
  if (!rd_u64(r, lw, &len)) return NULL;
  if (len > GG_MAX_NAME) {
    gg_err(r, "%s length %llu exceeds the limit of %d bytes", what, (unsigned long long)len,
           GG_MAX_NAME);
    return NULL;
  }
  r->pos = at;
  if (!rd_str(r, what, &s, &len)) return NULL;
  if (len == 0) {
    gg_err(r, "empty %s", what);
    return NULL;
  }
  if (memchr(s, 0, (size_t)len)) {
    gg_err(r, "%s '%.*s...' contains a NUL byte", what, (int)strnlen((const char *)s, 100), s);
    return NULL;
  }
  char *c = kn_xmalloc((size_t)len + 1);
  memcpy(c, s, (size_t)len);
  c[len] = 0;
  return c;
}

/* ---- metadata values ---------------------------------------------------------------------- */
static bool check_bools(gg_reader *r, const uint8_t *p, int64_t n) {
  for (int64_t j = 0; j < n; j++)
    if (p[j] > 1) {
      if (n == 1)
        gg_err(r, "bool value %u (must be 0 or 1)", p[j]);
      else
        gg_err(r, "bool value %u at element %lld (must be 0 or 1)", p[j], (long long)j);
      return false;
    }
  return true;
}

/* An array of strings: one pass checks the lengths (nothing allocated yet), the next copies. */
static bool rd_str_array(gg_reader *r, gg_kv *kv) {
  size_t start = r->pos;
  uint64_t total = 0;
  for (int64_t j = 0; j < kv->n; j++) {
    const uint8_t *s;
    uint64_t len;
    char what[64];
    snprintf(what, sizeof what, "string element %lld", (long long)j);
    if (!rd_str(r, what, &s, &len)) return false;
    total += len; /* bounded by the file size: no overflow */
  }
  kv->blob = kn_xmalloc((size_t)total + (size_t)kv->n + 1);
  kv->offs = kn_xmalloc(sizeof(size_t) * ((size_t)kv->n + 1));
  size_t o = 0, pos = start;
  for (int64_t j = 0; j < kv->n; j++) {
    size_t len = (size_t)le(r->p + pos, 8);
    kv->offs[j] = o;
    memcpy(kv->blob + o, r->p + pos + 8, len);
    kv->blob[o + len] = 0;
    o += len + 1;
    pos += 8 + len;
  }
  kv->offs[kv->n] = o;
  return true;
}

static bool rd_array(gg_reader *r, gg_kv *kv) {
  uint32_t et;
  uint64_t n;
  if (!rd_u32(r, "the array element type", &et) || !rd_u64(r, "the array length", &n)) return false;
  if (et == KILN_GGUF_ARRAY) {
    gg_err(r, "arrays of arrays are not supported");
    return false;
  }
  if (et >= GG_NTYPES) {
    gg_err(r, "unknown array element type %u", et);
    return false;
  }
  if (n > left(r) / value_type_min[et]) {
    gg_err(r, "array of %llu %s elements needs more than the %zu bytes left at byte %zu",
           (unsigned long long)n, value_type_names[et], left(r), r->pos);
    return false;
  }
  kv->elem = (kiln_gguf_type)et;
  kv->n = (int64_t)n;
  if (et == KILN_GGUF_STRING) return rd_str_array(r, kv);
  kv->raw = r->p + r->pos;
  r->pos += (size_t)n * value_type_sizes[et];
  return et != KILN_GGUF_BOOL || check_bools(r, kv->raw, kv->n);
}

static bool rd_value(gg_reader *r, gg_kv *kv) {
  uint32_t t;
  if (!rd_u32(r, "the value type", &t)) return false;
  if (t >= GG_NTYPES) {
    gg_err(r, "unknown value type %u", t);
    return false;
  }
  kv->type = (kiln_gguf_type)t;
  if (t == KILN_GGUF_ARRAY) return rd_array(r, kv);
  if (t == KILN_GGUF_STRING) {
    const uint8_t *s;
    uint64_t len;
    if (!rd_str(r, "the string", &s, &len)) return false;
    kv->len = (size_t)len;
    kv->str = kn_xmalloc(kv->len + 1);
    memcpy(kv->str, s, kv->len);
    kv->str[kv->len] = 0;
    return true;
  }
  if (!need(r, value_type_sizes[t], value_type_names[t])) return false;
  kv->raw = r->p + r->pos;
  r->pos += value_type_sizes[t];
  return t != KILN_GGUF_BOOL || check_bools(r, kv->raw, 1);
}

/* ---- sorted lookups ----------------------------------------------------------------------- */
static const char *sort_names_base; /* qsort has no context argument */
static size_t sort_names_stride;
static const char *name_at(int64_t i) {
  return *(const char *const *)(sort_names_base + (size_t)i * sort_names_stride);
}
static int cmp_by_name(const void *a, const void *b) {
  return strcmp(name_at(*(const int64_t *)a), name_at(*(const int64_t *)b));
}

/* Indices 0..n-1 sorted by the name at the start of each element of base (stride bytes); the
 * first duplicate name, or NULL. */
static const char *sort_names(const void *base, size_t stride, int64_t n, int64_t **order) {
  *order = kn_xmalloc(sizeof(int64_t) * (size_t)(n ? n : 1));
  for (int64_t i = 0; i < n; i++)
    (*order)[i] = i;
  sort_names_base = base;
  sort_names_stride = stride;
  qsort(*order, (size_t)n, sizeof(int64_t), cmp_by_name);
  for (int64_t i = 1; i < n; i++)
    if (!strcmp(name_at((*order)[i - 1]), name_at((*order)[i]))) return name_at((*order)[i]);
  return NULL;
}

static int64_t find_name(const void *base, size_t stride, const int64_t *order, int64_t n,
                         const char *name) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    int64_t mid = lo + (hi - lo) / 2;
    const char *s = *(const char *const *)((const char *)base + (size_t)order[mid] * stride);
    int c = strcmp(s, name);
    if (c == 0) return order[mid];
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return -1;
}

/* ---- header, metadata, tensor infos -------------------------------------------------------- */
static bool rd_header(gg_reader *r, kiln_gguf *g, uint64_t *nt, uint64_t *nkv) {
  if (r->size == 0) {
    gg_err(r, "empty file (not a GGUF file)");
    return false;
  }
  if (r->size < 4 || memcmp(r->p, "GGUF", 4) != 0) {
    char shown[8] = {0};
    for (size_t i = 0; i < 4 && i < r->size; i++)
      shown[i] = (r->p[i] >= 0x20 && r->p[i] < 0x7f) ? (char)r->p[i] : '.';
    gg_err(r, "bad magic '%s' (%zu bytes): not a GGUF file", shown, r->size < 4 ? r->size : 4);
    return false;
  }
  r->pos = 4;
  uint32_t v;
  if (!rd_u32(r, "the version", &v)) return false;
  uint32_t swapped = (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) | (v << 24);
  if (v == 1) {
    gg_err(r, "GGUF version 1 is not supported (it used 32-bit counts; reconvert the model)");
    return false;
  }
  if (v != 2 && v != 3) {
    if (swapped == 2 || swapped == 3)
      gg_err(r, "a big-endian GGUF file (version %u byte-swapped): not supported", swapped);
    else
      gg_err(r, "unsupported GGUF version %u (kiln reads versions 2 and 3)", v);
    return false;
  }
  g->version = (int)v;
  if (!rd_u64(r, "the tensor count", nt) || !rd_u64(r, "the metadata count", nkv)) return false;
  /* each kv takes at least 8 (key length) + 1 (key) + 4 (type) + 1 (value) bytes, each tensor
   * info at least 8 + 1 (name) + 4 (n_dims) + 8 (a dim) + 4 (type) + 8 (offset) */
  if (*nkv > left(r) / 14) {
    gg_err(r, "n_kv %llu is more than the %zu bytes left could hold", (unsigned long long)*nkv,
           left(r));
    return false;
  }
  if (*nt > (left(r) - *nkv * 14) / 33) {
    gg_err(r, "n_tensors %llu is more than the %zu bytes left could hold", (unsigned long long)*nt,
           left(r));
    return false;
  }
  return true;
}

static bool rd_kvs(gg_reader *r, kiln_gguf *g, uint64_t nkv) {
  for (uint64_t i = 0; i < nkv; i++) {
    if (g->nkv == g->kv_cap) { /* grows with what was read, not with what was claimed */
      g->kv_cap = g->kv_cap ? 2 * g->kv_cap : 16;
      g->kvs = kn_xrealloc(g->kvs, sizeof(gg_kv) * (size_t)g->kv_cap);
    }
    gg_kv *kv = &g->kvs[g->nkv++];
    memset(kv, 0, sizeof *kv);
    snprintf(r->ctx, sizeof r->ctx, "kv %llu", (unsigned long long)i);
    if (!(kv->key = rd_name(r, "key"))) return false;
    snprintf(r->ctx, sizeof r->ctx, "kv %llu '%.120s'", (unsigned long long)i, kv->key);
    if (!rd_value(r, kv)) return false;
  }
  r->ctx[0] = 0;
  const char *dup = sort_names(g->kvs, sizeof(gg_kv), g->nkv, &g->kv_order);
  if (dup) {
    gg_err(r, "duplicate key '%.120s'", dup);
    return false;
  }
  return true;
}

/* general.alignment: an integer (the specification says u32), a power of two. */
static bool rd_alignment(gg_reader *r, kiln_gguf *g) {
  g->alignment = GG_DEFAULT_ALIGNMENT;
  int64_t i = kiln_gguf_find_key(g, "general.alignment");
  if (i < 0) return true;
  const gg_kv *kv = &g->kvs[i];
  if (!type_is_int(kv->type)) {
    gg_err(r, "general.alignment has type %s, must be an integer (u32)",
           value_type_names[kv->type]);
    return false;
  }
  int n = value_type_sizes[kv->type];
  uint64_t a = le(kv->raw, n);
  bool is_signed = kv->type == KILN_GGUF_I8 || kv->type == KILN_GGUF_I16 ||
                   kv->type == KILN_GGUF_I32 || kv->type == KILN_GGUF_I64;
  if (is_signed && n < 8 && (a >> (8 * n - 1))) a |= ~UINT64_C(0) << (8 * n); /* sign-extend */
  if (a == 0 || (a & (a - 1)) || (is_signed && (int64_t)a < 0)) {
    if (is_signed)
      gg_err(r, "general.alignment %lld is not a power of two", (long long)(int64_t)a);
    else
      gg_err(r, "general.alignment %llu is not a power of two", (unsigned long long)a);
    return false;
  }
  g->alignment = a;
  return true;
}

/* One tensor info: name, dims, type, offset; sizes derived and checked (placement later). */
static bool rd_tensor_info(gg_reader *r, kiln_gguf_tensor *t, int64_t i) {
  snprintf(r->ctx, sizeof r->ctx, "tensor %lld", (long long)i);
  char *name = rd_name(r, "tensor name");
  if (!name) return false;
  t->name = name;
  snprintf(r->ctx, sizeof r->ctx, "tensor '%.120s'", name);
  uint32_t nd, type;
  if (!rd_u32(r, "n_dims", &nd)) return false;
  if (nd < 1 || nd > GG_MAX_DIMS) {
    gg_err(r, "n_dims %u (must be 1..%d)", nd, GG_MAX_DIMS);
    return false;
  }
  t->ndim = (int)nd;
  int64_t numel = 1, span = 1; /* span: the product with zero dims taken as 1 */
  for (uint32_t d = 0; d < nd; d++) {
    uint64_t v;
    if (!rd_u64(r, "a dim", &v)) return false;
    if (v > INT64_MAX) {
      gg_err(r, "dims[%u] = %llu is too large", d, (unsigned long long)v);
      return false;
    }
    t->dims[d] = (int64_t)v;
    int64_t f = v ? (int64_t)v : 1;
    if (span > INT64_MAX / f) {
      char sh[200];
      gg_err(r, "the element count of dims %s overflows a 64-bit integer",
             kn_shape_str(sh, t->ndim, t->dims));
      return false;
    }
    span *= f;
    numel = v ? numel * f : 0;
  }
  for (int d = t->ndim; d < GG_MAX_DIMS; d++)
    t->dims[d] = 1;
  t->numel = numel;
  if (!rd_u32(r, "the tensor type", &type)) return false;
  if (type >= (uint32_t)GGML_NCODES || !ggml_known((int)type)) {
    gg_err(r, "unknown tensor type %u", type);
    return false;
  }
  t->type = (int)type;
  int64_t bs = ggml_types[type].block, ts = ggml_types[type].size;
  if (t->dims[0] % bs) {
    gg_err(r,
           "dims[0] = %lld is not a multiple of the block size %lld of %s (a row must hold "
           "whole blocks)",
           (long long)t->dims[0], (long long)bs, ggml_types[type].name);
    return false;
  }
  if (numel / bs > (int64_t)(SIZE_MAX > INT64_MAX ? INT64_MAX : SIZE_MAX) / ts) {
    gg_err(r, "%lld %s elements take more bytes than fit in 64 bits", (long long)numel,
           ggml_types[type].name);
    return false;
  }
  t->nbytes = (size_t)(numel / bs * ts);
  if (!rd_u64(r, "the data offset", &t->offset)) return false;
  return true;
}

static int cmp_by_offset(const void *a, const void *b) {
  const kiln_gguf_tensor *x = *(kiln_gguf_tensor *const *)a, *y = *(kiln_gguf_tensor *const *)b;
  return (x->offset > y->offset) - (x->offset < y->offset);
}

/* Offsets aligned, data inside the file, no two tensors sharing a byte. */
static bool place_tensors(gg_reader *r, kiln_gguf *g) {
  uint64_t end_infos = r->pos;
  uint64_t pad = (g->alignment - end_infos % g->alignment) % g->alignment;
  g->data_start = end_infos + pad; /* end_infos < 2^63 and pad < alignment <= 2^63 */
  if (g->nt > 0 && g->data_start > g->size) {
    gg_err(r,
           "the data section starts at byte %llu (after the tensor infos, aligned to %llu), "
           "past the end of the file (%zu bytes)",
           (unsigned long long)g->data_start, (unsigned long long)g->alignment, g->size);
    return false;
  }
  uint64_t room = g->size - (g->data_start < g->size ? g->data_start : g->size);
  for (int64_t i = 0; i < g->nt; i++) {
    kiln_gguf_tensor *t = &g->ts[i];
    snprintf(r->ctx, sizeof r->ctx, "tensor '%.120s'", t->name);
    if (t->offset % g->alignment) {
      gg_err(r, "data offset %llu is not a multiple of the alignment %llu",
             (unsigned long long)t->offset, (unsigned long long)g->alignment);
      return false;
    }
    if (t->offset > room || t->nbytes > room - t->offset) {
      uint64_t b = g->data_start + (t->offset > room ? room : t->offset); /* no overflow */
      if (t->offset > room)
        gg_err(r,
               "data offset %llu past end of file (the data section has %llu bytes, the file "
               "%zu)",
               (unsigned long long)t->offset, (unsigned long long)room, g->size);
      else
        gg_err(r, "data [%llu, %llu) past end of file (%zu bytes)", (unsigned long long)b,
               (unsigned long long)(b + t->nbytes), g->size);
      return false;
    }
    t->data = g->map + g->data_start + t->offset;
  }
  r->ctx[0] = 0;
  kiln_gguf_tensor **by_off = kn_xmalloc(sizeof *by_off * (size_t)(g->nt ? g->nt : 1));
  int64_t n = 0;
  for (int64_t i = 0; i < g->nt; i++)
    if (g->ts[i].nbytes) by_off[n++] = &g->ts[i];
  qsort(by_off, (size_t)n, sizeof *by_off, cmp_by_offset);
  for (int64_t i = 1; i < n; i++) {
    const kiln_gguf_tensor *a = by_off[i - 1], *b = by_off[i];
    if (a->offset + a->nbytes > b->offset) {
      gg_err(
          r,
          "tensors '%.120s' [%llu, %llu) and '%.120s' [%llu, %llu) overlap (data section offsets)",
          a->name, (unsigned long long)a->offset, (unsigned long long)(a->offset + a->nbytes),
          b->name, (unsigned long long)b->offset, (unsigned long long)(b->offset + b->nbytes));
      free(by_off);
      return false;
    }
  }
  free(by_off);
  return true;
}

static bool rd_tensors(gg_reader *r, kiln_gguf *g, uint64_t nt) {
  for (uint64_t i = 0; i < nt; i++) {
    if (g->nt == g->t_cap) {
      g->t_cap = g->t_cap ? 2 * g->t_cap : 16;
      g->ts = kn_xrealloc(g->ts, sizeof(kiln_gguf_tensor) * (size_t)g->t_cap);
    }
    kiln_gguf_tensor *t = &g->ts[g->nt++];
    memset(t, 0, sizeof *t);
    if (!rd_tensor_info(r, t, (int64_t)i)) return false;
  }
  r->ctx[0] = 0;
  const char *dup = sort_names(g->ts, sizeof(kiln_gguf_tensor), g->nt, &g->t_order);
  if (dup) {
    gg_err(r, "duplicate tensor name '%.120s'", dup);
    return false;
  }
  return place_tensors(r, g);
}

kiln_gguf *kiln_gguf_open(const char *path) {
  gg_reader r = {.path = path ? path : "(null)"};
  if (!path) {
    gg_err(&r, "no path given");
    return NULL;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    gg_err(&r, "cannot open: %s", strerror(errno));
    return NULL;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    gg_err(&r, "not a regular file");
    close(fd);
    return NULL;
  }
  kiln_gguf *g = kn_xcalloc(1, sizeof *g);
  g->size = (size_t)st.st_size;
  if (g->size > 0) {
    void *m = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      gg_err(&r, "cannot map %zu bytes: %s", g->size, strerror(errno));
      close(fd);
      free(g);
      return NULL;
    }
    g->map = m;
  }
  close(fd); /* the mapping stays valid */
  r.p = g->map;
  r.size = g->size;
  uint64_t nt, nkv;
  if (!rd_header(&r, g, &nt, &nkv) || !rd_kvs(&r, g, nkv) || !rd_alignment(&r, g) ||
      !rd_tensors(&r, g, nt)) {
    kiln_gguf_close(g);
    return NULL;
  }
  return g;
}

/* ---- accessors ---------------------------------------------------------------------------- */
int kiln_gguf_version(const kiln_gguf *g) { return g ? g->version : -1; }
size_t kiln_gguf_file_size(const kiln_gguf *g) { return g ? g->size : 0; }
int64_t kiln_gguf_alignment(const kiln_gguf *g) { return g ? (int64_t)g->alignment : -1; }
int64_t kiln_gguf_data_offset(const kiln_gguf *g) { return g ? (int64_t)g->data_start : -1; }
int64_t kiln_gguf_n_kv(const kiln_gguf *g) { return g ? g->nkv : 0; }
int64_t kiln_gguf_n_tensors(const kiln_gguf *g) { return g ? g->nt : 0; }

static const gg_kv *kv_at(const kiln_gguf *g, int64_t i) {
  return g && i >= 0 && i < g->nkv ? &g->kvs[i] : NULL;
}
static const gg_kv *kv_find(const kiln_gguf *g, const char *key) {
  return kv_at(g, kiln_gguf_find_key(g, key));
}
static const gg_kv *arr_at(const kiln_gguf *g, int64_t i, int64_t j) {
  const gg_kv *kv = kv_at(g, i);
  return kv && kv->type == KILN_GGUF_ARRAY && j >= 0 && j < kv->n ? kv : NULL;
}

const char *kiln_gguf_key(const kiln_gguf *g, int64_t i) {
  const gg_kv *kv = kv_at(g, i);
  return kv ? kv->key : NULL;
}

int64_t kiln_gguf_find_key(const kiln_gguf *g, const char *key) {
  if (!g || !key || !g->kv_order) return -1;
  return find_name(g->kvs, sizeof(gg_kv), g->kv_order, g->nkv, key);
}

kiln_gguf_type kiln_gguf_kv_type(const kiln_gguf *g, int64_t i) {
  const gg_kv *kv = kv_at(g, i);
  return kv ? kv->type : (kiln_gguf_type)-1;
}

/* A number of type t at p: as an int64 when it is an integer (or bool) that fits, and as a
 * double when it is a number (not a bool). */
static void num_at(kiln_gguf_type t, const uint8_t *p, bool *is_int, int64_t *iv, bool *is_num,
                   double *fv) {
  int n = value_type_sizes[t];
  uint64_t u = le(p, n);
  *is_int = *is_num = false;
  switch (t) {
  case KILN_GGUF_I8:
  case KILN_GGUF_I16:
  case KILN_GGUF_I32:
  case KILN_GGUF_I64:
    if (n < 8 && (u >> (8 * n - 1))) u |= ~UINT64_C(0) << (8 * n);
    *iv = (int64_t)u;
    *fv = (double)*iv;
    *is_int = *is_num = true;
    break;
  case KILN_GGUF_U8:
  case KILN_GGUF_U16:
  case KILN_GGUF_U32:
  case KILN_GGUF_U64:
    *is_int = u <= INT64_MAX;
    *iv = (int64_t)u;
    *fv = (double)u;
    *is_num = true;
    break;
  case KILN_GGUF_BOOL:
    *iv = (int64_t)u;
    *is_int = true;
    break;
  case KILN_GGUF_F32: {
    uint32_t b = (uint32_t)u;
    float f;
    memcpy(&f, &b, 4);
    *fv = f;
    *is_num = true;
    break;
  }
  case KILN_GGUF_F64:
    memcpy(fv, &u, 8);
    *is_num = true;
    break;
  default:
    break;
  }
}

static bool get_int(kiln_gguf_type t, const uint8_t *p, int64_t *out) {
  bool is_int, is_num;
  int64_t iv = 0;
  double fv = 0;
  if (!type_is_int(t) && t != KILN_GGUF_BOOL) return false;
  num_at(t, p, &is_int, &iv, &is_num, &fv);
  if (is_int) *out = iv;
  return is_int;
}

static bool get_float(kiln_gguf_type t, const uint8_t *p, double *out) {
  bool is_int, is_num;
  int64_t iv = 0;
  double fv = 0;
  if (!type_is_int(t) && !type_is_float(t)) return false;
  num_at(t, p, &is_int, &iv, &is_num, &fv);
  *out = fv;
  return true;
}

bool kiln_gguf_get_int(const kiln_gguf *g, const char *key, int64_t *out) {
  const gg_kv *kv = kv_find(g, key);
  return kv && kv->raw && kv->type != KILN_GGUF_ARRAY && get_int(kv->type, kv->raw, out);
}

bool kiln_gguf_get_float(const kiln_gguf *g, const char *key, double *out) {
  const gg_kv *kv = kv_find(g, key);
  return kv && kv->raw && kv->type != KILN_GGUF_ARRAY && get_float(kv->type, kv->raw, out);
}

const char *kiln_gguf_get_str(const kiln_gguf *g, const char *key) {
  const gg_kv *kv = kv_find(g, key);
  return kv && kv->type == KILN_GGUF_STRING ? kv->str : NULL;
}

kiln_gguf_type kiln_gguf_arr_type(const kiln_gguf *g, int64_t i) {
  const gg_kv *kv = kv_at(g, i);
  return kv && kv->type == KILN_GGUF_ARRAY ? kv->elem : (kiln_gguf_type)-1;
}

int64_t kiln_gguf_arr_len(const kiln_gguf *g, int64_t i) {
  const gg_kv *kv = kv_at(g, i);
  return kv && kv->type == KILN_GGUF_ARRAY ? kv->n : -1;
}

bool kiln_gguf_arr_int(const kiln_gguf *g, int64_t i, int64_t j, int64_t *out) {
  const gg_kv *kv = arr_at(g, i, j);
  return kv && kv->raw && get_int(kv->elem, kv->raw + (size_t)j * value_type_sizes[kv->elem], out);
}

bool kiln_gguf_arr_float(const kiln_gguf *g, int64_t i, int64_t j, double *out) {
  const gg_kv *kv = arr_at(g, i, j);
  return kv && kv->raw &&
         get_float(kv->elem, kv->raw + (size_t)j * value_type_sizes[kv->elem], out);
}

const char *kiln_gguf_arr_str(const kiln_gguf *g, int64_t i, int64_t j, size_t *len) {
  const gg_kv *kv = arr_at(g, i, j);
  if (!kv || kv->elem != KILN_GGUF_STRING) return NULL;
  if (len) *len = kv->offs[j + 1] - kv->offs[j] - 1;
  return kv->blob + kv->offs[j];
}

const kiln_gguf_tensor *kiln_gguf_tensor_at(const kiln_gguf *g, int64_t i) {
  return g && i >= 0 && i < g->nt ? &g->ts[i] : NULL;
}

const kiln_gguf_tensor *kiln_gguf_find_tensor(const kiln_gguf *g, const char *name) {
  if (!g || !name || !g->t_order) return NULL;
  return kiln_gguf_tensor_at(g,
                             find_name(g->ts, sizeof(kiln_gguf_tensor), g->t_order, g->nt, name));
}

/* ---- printable values ----------------------------------------------------------------------
 * Numbers in the shortest form that reads back to the same value; strings quoted with C
 * escapes, cut to fit with their length appended: "abc..." (1234 bytes). */
static void fmt_float(char *buf, size_t cap, double v, bool single) {
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(buf, cap, "%.*g", prec, v);
    if (single ? strtof(buf, NULL) == (float)v : strtod(buf, NULL) == v) return;
    if (v != v) return; /* NaN never compares equal */
  }
}

/* The escaped form of byte c into e; its length. */
static size_t escape_byte(unsigned char c, char e[8]) {
  if (c == '"' || c == '\\') return (size_t)snprintf(e, 8, "\\%c", c);
  if (c == '\n') return (size_t)snprintf(e, 8, "\\n");
  if (c == '\t') return (size_t)snprintf(e, 8, "\\t");
  if (c < 0x20 || c == 0x7f) return (size_t)snprintf(e, 8, "\\x%02x", c);
  e[0] = (char)c, e[1] = 0;
  return 1;
}

static void fmt_string(char *buf, size_t cap, const char *s, size_t len) {
  char e[8], tail[48];
  size_t full = 2;
  for (size_t i = 0; i < len; i++)
    full += escape_byte((unsigned char)s[i], e);
  bool cut = full + 1 > cap;
  size_t tl = cut ? (size_t)snprintf(tail, sizeof tail, "...\" (%zu bytes)", len)
                  : (size_t)snprintf(tail, sizeof tail, "\"");
  if (1 + tl + 1 > cap) { /* not even the quotes fit */
    snprintf(buf, cap, "(%zu bytes)", len);
    return;
  }
  size_t o = 0, i = 0;
  buf[o++] = '"';
  for (; i < len; i++) {
    size_t el = escape_byte((unsigned char)s[i], e);
    if (o + el + tl + 1 > cap) break;
    memcpy(buf + o, e, el);
    o += el;
  }
  if (i < len && ((unsigned char)s[i] & 0xC0) == 0x80) { /* do not split a UTF-8 sequence */
    while (o > 1 && ((unsigned char)buf[o - 1] & 0xC0) == 0x80)
      o--;
    if (o > 1 && (unsigned char)buf[o - 1] >= 0xC0) o--;
  }
  memcpy(buf + o, tail, tl + 1);
}

static void fmt_scalar(char *buf, size_t cap, kiln_gguf_type t, const uint8_t *p) {
  bool is_int, is_num;
  int64_t iv = 0;
  double fv = 0;
  num_at(t, p, &is_int, &iv, &is_num, &fv);
  if (t == KILN_GGUF_BOOL)
    snprintf(buf, cap, "%s", iv ? "true" : "false");
  else if (t == KILN_GGUF_U64)
    snprintf(buf, cap, "%llu", (unsigned long long)le(p, 8));
  else if (is_int)
    snprintf(buf, cap, "%lld", (long long)iv);
  else
    fmt_float(buf, cap, fv, t == KILN_GGUF_F32);
}

const char *kiln_gguf_value_str(const kiln_gguf *g, int64_t i, char *buf, size_t cap) {
  if (!buf || !cap) return buf;
  buf[0] = 0;
  const gg_kv *kv = kv_at(g, i);
  if (!kv) return buf;
  if (kv->type == KILN_GGUF_ARRAY)
    snprintf(buf, cap, "[%s; %lld]", value_type_names[kv->elem], (long long)kv->n);
  else if (kv->type == KILN_GGUF_STRING)
    fmt_string(buf, cap, kv->str, kv->len);
  else
    fmt_scalar(buf, cap, kv->type, kv->raw);
  return buf;
}

const char *kiln_gguf_elem_str(const kiln_gguf *g, int64_t i, int64_t j, char *buf, size_t cap) {
  if (!buf || !cap) return buf;
  buf[0] = 0;
  const gg_kv *kv = arr_at(g, i, j);
  if (!kv) return buf;
  if (kv->elem == KILN_GGUF_STRING)
    fmt_string(buf, cap, kv->blob + kv->offs[j], kv->offs[j + 1] - kv->offs[j] - 1);
  else
    fmt_scalar(buf, cap, kv->elem, kv->raw + (size_t)j * value_type_sizes[kv->elem]);
  return buf;
}
