/* safetensors.c — parameter sets to and from safetensors files: an 8-byte little-endian header
 * length, a JSON header giving each tensor's dtype, shape and byte span, then the raw data.
 * The reader has its own strict JSON parser and validates the whole header (types, spans,
 * coverage of the data section) before it creates a single tensor. */
#include "internal.h"

#include <errno.h>
#include <sys/stat.h>

#define ST_MAX_HEADER (100u * 1000 * 1000) /* bytes; a header larger than this is not a model */
#define JSON_MAX_DEPTH 32                  /* the format needs 3 levels */

/* The format's dtype names, indexed by kiln_dtype. */
static const char *const st_dtype_names[KILN_NDTYPES] = {
    [KILN_BOOL] = "BOOL", [KILN_U8] = "U8",   [KILN_I8] = "I8",     [KILN_U16] = "U16",
    [KILN_I16] = "I16",   [KILN_U32] = "U32", [KILN_I32] = "I32",   [KILN_U64] = "U64",
    [KILN_I64] = "I64",   [KILN_F16] = "F16", [KILN_BF16] = "BF16", [KILN_F32] = "F32",
    [KILN_F64] = "F64",
};

/* Every error names the file: "safetensors: PATH: problem". */
static void st_err(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void st_err(const char *path, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  kn_err("safetensors: %s: %s", path, msg);
}

/* The data is little-endian; a big-endian host swaps each element in place. */
static bool host_is_little_endian(void) {
  const uint16_t one = 1;
  return *(const uint8_t *)&one == 1;
}
static void to_little_endian(void *data, size_t nbytes, size_t esize) {
  if (host_is_little_endian() || esize < 2) return;
  uint8_t *p = data;
  for (size_t i = 0; i + esize <= nbytes; i += esize)
    for (size_t a = 0, b = esize - 1; a < b; a++, b--) {
      uint8_t t = p[i + a];
      p[i + a] = p[i + b];
      p[i + b] = t;
    }
}

/* ---- UTF-8 ---------------------------------------------------------------------------------- */
/* Length of the well-formed UTF-8 sequence at s (n bytes available), or 0 when there is none:
 * no overlong forms, no surrogates, nothing above U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  uint32_t cp, min;
  if (c >= 0xC2 && c <= 0xDF)
    len = 2, cp = c & 0x1F, min = 0x80;
  else if ((c & 0xF0) == 0xE0)
    len = 3, cp = c & 0x0F, min = 0x800;
  else if (c >= 0xF0 && c <= 0xF4)
    len = 4, cp = c & 0x07, min = 0x10000;
  else
    return 0;
  if (n < len) return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    cp = cp << 6 | (s[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

static size_t utf8_put(char *out, uint32_t cp) {
  unsigned char *o = (unsigned char *)out;
  if (cp < 0x80) return o[0] = (unsigned char)cp, 1;
  if (cp < 0x800) {
    o[0] = (unsigned char)(0xC0 | cp >> 6), o[1] = (unsigned char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (unsigned char)(0xE0 | cp >> 12), o[1] = (unsigned char)(0x80 | (cp >> 6 & 0x3F));
    o[2] = (unsigned char)(0x80 | (cp & 0x3F));
    return 3;
  }
  o[0] = (unsigned char)(0xF0 | cp >> 18), o[1] = (unsigned char)(0x80 | (cp >> 12 & 0x3F));
  o[2] = (unsigned char)(0x80 | (cp >> 6 & 0x3F)), o[3] = (unsigned char)(0x80 | (cp & 0x3F));
  return 4;
}

static bool utf8_valid(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  for (size_t i = 0, l; i < n; i += l)
    if (!(l = utf8_seq(p + i, n - i))) return false;
  return true;
}

/* ---- a strict JSON parser (RFC 8259), into a small tree ----------------------------------------
 * Strings are decoded to UTF-8 (escapes, surrogate pairs) and may hold NULs (see len).
 * Numbers keep only what the format can use: an int64 when the text is an integer in range. */
typedef enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ } jkind;
static const char *const jkind_names[] = {"null",     "a boolean", "a number",
                                          "a string", "an array",  "an object"};

typedef struct jval {
  jkind kind;
  bool is_int, too_big; /* J_NUM: integer text; integer text outside int64 */
  int64_t i;            /* J_NUM when is_int */
  char *s;              /* J_STR: decoded, NUL-terminated, len bytes */
  size_t len;
  char *key; /* a member of an J_OBJ: its decoded key, keylen bytes */
  size_t keylen;
  struct jval *items; /* J_ARR, J_OBJ: n children (cap allocated) */
  int n, cap;
} jval;

static void jfree(jval *v) {
  for (int i = 0; i < v->n; i++)
    jfree(&v->items[i]);
  free(v->items);
  free(v->s);
  free(v->key);
}

typedef struct {
  const unsigned char *p, *start, *end;
  char err[200];
} jparser;

static bool jfail(jparser *jp, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool jfail(jparser *jp, const char *fmt, ...) {
  if (jp->err[0]) return false;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(jp->err, sizeof jp->err, fmt, ap);
  va_end(ap);
  if (n >= 0 && (size_t)n < sizeof jp->err)
    snprintf(jp->err + n, sizeof jp->err - (size_t)n, " at byte %zu", (size_t)(jp->p - jp->start));
  return false;
}

/* "'x'" for a printable character, "byte 0xNN" otherwise. */
static const char *char_desc(char *buf, unsigned c) {
  if (c >= 0x20 && c < 0x7F)
    snprintf(buf, 16, "'%c'", (char)c);
  else
    snprintf(buf, 16, "byte 0x%02x", c);
  return buf;
}

static bool is_digit(unsigned c) { return c >= '0' && c <= '9'; }

static void skip_ws(jparser *jp) {
  while (jp->p < jp->end && (*jp->p == ' ' || *jp->p == '\t' || *jp->p == '\n' || *jp->p == '\r'))
    jp->p++;
}

static bool hex4(jparser *jp, const unsigned char *limit, uint32_t *out) {
  if (limit - jp->p < 4) return jfail(jp, "\\u needs 4 hex digits");
  uint32_t v = 0;
  for (int k = 0; k < 4; k++) {
    unsigned c = jp->p[k];
    int d = is_digit(c)              ? (int)(c - '0')
            : (c >= 'a' && c <= 'f') ? (int)(c - 'a' + 10)
            : (c >= 'A' && c <= 'F') ? (int)(c - 'A' + 10)
                                     : -1;
    if (d < 0) return jfail(jp, "\\u needs 4 hex digits");
    v = v << 4 | (uint32_t)d;
  }
  jp->p += 4;
  *out = v;
  return true;
}

/* At an opening quote. The decoded text never outgrows the escaped one, so one allocation of
 * the quoted span suffices (and a huge header cannot make every string allocate the rest). */
static bool parse_string(jparser *jp, char **out, size_t *outlen) {
  const unsigned char *q = ++jp->p;
  while (q < jp->end && *q != '"')
    q += (*q == '\\' && q + 1 < jp->end) ? 2 : 1;
  if (q >= jp->end) return jfail(jp, "unterminated string");
  /* every backslash in [p, q) now has its escaped character before q */
  char *buf = kn_xmalloc((size_t)(q - jp->p) + 1), cd[16];
  size_t n = 0;
  while (jp->p < q) {
    unsigned c = *jp->p;
    if (c < 0x20) {
      free(buf);
      return jfail(jp, "control character 0x%02x in a string (must be escaped)", c);
    }
    if (c != '\\') {
      size_t l = utf8_seq(jp->p, (size_t)(q - jp->p));
      if (!l) {
        free(buf);
        return jfail(jp, "invalid UTF-8 (byte 0x%02x) in a string", c);
      }
      memcpy(buf + n, jp->p, l);
      n += l, jp->p += l;
      continue;
    }
    unsigned e = jp->p[1];
    jp->p += 2;
    uint32_t cp, lo;
    switch (e) {
    case '"':
      buf[n++] = '"';
      break;
    case '\\':
      buf[n++] = '\\';
      break;
    case '/':
      buf[n++] = '/';
      break;
    case 'b':
      buf[n++] = '\b';
      break;
    case 'f':
      buf[n++] = '\f';
      break;
    case 'n':
      buf[n++] = '\n';
      break;
    case 'r':
      buf[n++] = '\r';
      break;
    case 't':
      buf[n++] = '\t';
      break;
    case 'u':
      if (!hex4(jp, q, &cp)) goto fail;
      if (cp >= 0xDC00 && cp <= 0xDFFF) {
        jfail(jp, "unpaired low surrogate \\u%04X", cp);
        goto fail;
      }
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (q - jp->p < 2 || jp->p[0] != '\\' || jp->p[1] != 'u') {
          jfail(jp, "unpaired high surrogate \\u%04X", cp);
          goto fail;
        }
        jp->p += 2;
        if (!hex4(jp, q, &lo)) goto fail;
        if (lo < 0xDC00 || lo > 0xDFFF) {
          jfail(jp, "unpaired high surrogate \\u%04X (followed by \\u%04X)", cp, lo);
          goto fail;
        }
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
      }
      n += utf8_put(buf + n, cp);
      break;
    default:
      jfail(jp, "invalid escape \\ followed by %s", char_desc(cd, e));
      goto fail;
    }
  }
  jp->p = q + 1;
  buf[n] = 0;
  *out = buf;
  *outlen = n;
  return true;
fail:
  free(buf);
  return false;
}

static bool parse_number(jparser *jp, jval *v) {
  const unsigned char *s = jp->p, *e = jp->end;
  bool neg = s < e && *s == '-', is_int = true, big = false;
  if (neg) s++;
  if (s >= e || !is_digit(*s)) return jfail(jp, "invalid number");
  uint64_t mag = 0;
  if (*s == '0') {
    if (++s < e && is_digit(*s)) return jfail(jp, "number with a leading zero");
  } else {
    for (; s < e && is_digit(*s); s++) {
      unsigned d = *s - '0';
      if (mag > (UINT64_MAX - d) / 10)
        big = true;
      else
        mag = mag * 10 + d;
    }
  }
  if (s < e && *s == '.') {
    if (++s >= e || !is_digit(*s)) return jp->p = s, jfail(jp, "digit expected after '.'");
    while (s < e && is_digit(*s))
      s++;
    is_int = false;
  }
  if (s < e && (*s == 'e' || *s == 'E')) {
    if (++s < e && (*s == '+' || *s == '-')) s++;
    if (s >= e || !is_digit(*s)) return jp->p = s, jfail(jp, "digit expected in exponent");
    while (s < e && is_digit(*s))
      s++;
    is_int = false;
  }
  if (mag > (uint64_t)INT64_MAX + neg) big = true; /* INT64_MIN is representable */
  v->kind = J_NUM;
  v->is_int = is_int && !big;
  v->too_big = is_int && big;
  if (v->is_int) v->i = neg ? (mag ? -(int64_t)(mag - 1) - 1 : 0) : (int64_t)mag;
  jp->p = s;
  return true;
}

static jval *jpush(jval *v) {
  if (v->n == v->cap) {
    v->cap = v->cap ? 2 * v->cap : 4;
    v->items = kn_xrealloc(v->items, sizeof(jval) * (size_t)v->cap);
  }
  jval *c = &v->items[v->n++];
  memset(c, 0, sizeof *c);
  return c;
}

/* Parses into v, which stays freeable by jfree whatever happens. */
static bool parse_value(jparser *jp, jval *v, int depth) {
  char cd[16];
  skip_ws(jp);
  if (jp->p >= jp->end) return jfail(jp, "unexpected end of header");
  unsigned c = *jp->p;
  if (c == '{' || c == '[') {
    if (depth >= JSON_MAX_DEPTH) return jfail(jp, "nested deeper than %d levels", JSON_MAX_DEPTH);
    bool obj = c == '{';
    char close = obj ? '}' : ']';
    v->kind = obj ? J_OBJ : J_ARR;
    jp->p++;
    skip_ws(jp);
    if (jp->p < jp->end && *jp->p == close) return jp->p++, true;
    for (;;) {
      char *key = NULL;
      size_t keylen = 0;
      if (obj) {
        skip_ws(jp);
        if (jp->p >= jp->end || *jp->p != '"') return jfail(jp, "expected a string key");
        if (!parse_string(jp, &key, &keylen)) return false;
        skip_ws(jp);
        if (jp->p >= jp->end || *jp->p != ':') {
          free(key);
          return jfail(jp, "expected ':' after a key");
        }
        jp->p++;
      }
      jval *child = jpush(v);
      child->key = key, child->keylen = keylen;
      if (!parse_value(jp, child, depth + 1)) return false;
      skip_ws(jp);
      if (jp->p >= jp->end)
        return jfail(jp, "unexpected end of header in %s", jkind_names[v->kind]);
      if (*jp->p == ',') {
        jp->p++;
        continue;
      }
      if (*jp->p == (unsigned char)close) return jp->p++, true;
      return jfail(jp, "expected ',' or '%c', got %s", close, char_desc(cd, *jp->p));
    }
  }
  if (c == '"') {
    v->kind = J_STR;
    return parse_string(jp, &v->s, &v->len);
  }
  if (c == '-' || is_digit(c)) return parse_number(jp, v);
  static const struct {
    const char *word;
    jkind kind;
  } lits[] = {{"true", J_BOOL}, {"false", J_BOOL}, {"null", J_NULL}};
  for (size_t k = 0; k < sizeof lits / sizeof lits[0]; k++) {
    size_t l = strlen(lits[k].word);
    if ((size_t)(jp->end - jp->p) >= l && !memcmp(jp->p, lits[k].word, l)) {
      v->kind = lits[k].kind;
      jp->p += l;
      return true;
    }
  }
  return jfail(jp, "unexpected %s", char_desc(cd, c));
}

/* Duplicate keys of an object: the first found (in sorted order), or NULL. */
static int key_cmp(const void *pa, const void *pb) {
  const jval *a = *(const jval *const *)pa, *b = *(const jval *const *)pb;
  int c = memcmp(a->key, b->key, a->keylen < b->keylen ? a->keylen : b->keylen);
  return c ? c : (a->keylen > b->keylen) - (a->keylen < b->keylen);
}
static const jval *duplicate_key(const jval *obj) {
  if (obj->n < 2) return NULL;
  const jval **ms = kn_xmalloc(sizeof(jval *) * (size_t)obj->n);
  for (int i = 0; i < obj->n; i++)
    ms[i] = &obj->items[i];
  qsort(ms, (size_t)obj->n, sizeof *ms, key_cmp);
  const jval *dup = NULL;
  for (int i = 1; i < obj->n && !dup; i++)
    if (!key_cmp(&ms[i - 1], &ms[i])) dup = ms[i];
  free(ms);
  return dup;
}

/* ---- the header: JSON tree -> validated entries ------------------------------------------------
 */
typedef struct {
  const char *name; /* in the parsed header */
  int dtype, ndim;
  int64_t shape[KILN_MAX_DIMS];
  int64_t begin, end; /* relative to the data section */
} st_entry;

/* v as a non-negative int64 for field `what` of tensor `name`. */
static bool get_count(const char *path, const char *name, const char *what, const jval *v,
                      int64_t *out) {
  if (v->kind != J_NUM || (!v->is_int && !v->too_big)) {
    st_err(path, "tensor '%s': %s is %s, not an integer", name, what,
           v->kind == J_NUM ? "a fraction or exponent" : jkind_names[v->kind]);
    return false;
  }
  if (v->too_big) {
    st_err(path, "tensor '%s': %s is too large for a 64-bit integer", name, what);
    return false;
  }
  if (v->i < 0) {
    st_err(path, "tensor '%s': %s is negative (%lld)", name, what, (long long)v->i);
    return false;
  }
  *out = v->i;
  return true;
}

static bool check_metadata(const char *path, const jval *m) {
  if (m->kind != J_OBJ) {
    st_err(path, "__metadata__ is %s, not an object of strings", jkind_names[m->kind]);
    return false;
  }
  const jval *dup = duplicate_key(m);
  if (dup) {
    st_err(path, "__metadata__ has the key '%s' twice (duplicate)", dup->key);
    return false;
  }
  for (int i = 0; i < m->n; i++)
    if (m->items[i].kind != J_STR) {
      st_err(path, "__metadata__ value of '%s' is %s, not a string", m->items[i].key,
             jkind_names[m->items[i].kind]);
      return false;
    }
  return true;
}

/* One tensor entry {"dtype", "shape", "data_offsets"} against a data section of data_len bytes. */
static bool parse_entry(const char *path, const jval *m, int64_t data_len, st_entry *e) {
  const char *name = m->key;
  e->name = name;
  if (strlen(name) != m->keylen) {
    st_err(path, "a tensor name contains a NUL character ('%s...')", name);
    return false;
  }
  if (m->kind != J_OBJ) {
    st_err(path, "tensor '%s': entry is %s, not an object", name, jkind_names[m->kind]);
    return false;
  }
  const jval *dtype = NULL, *shape = NULL, *offs = NULL;
  for (int i = 0; i < m->n; i++) {
    const jval *f = &m->items[i];
    const jval **slot = !strcmp(f->key, "dtype")          ? &dtype
                        : !strcmp(f->key, "shape")        ? &shape
                        : !strcmp(f->key, "data_offsets") ? &offs
                                                          : NULL;
    if (!slot || strlen(f->key) != f->keylen) {
      st_err(path, "tensor '%s': unknown field '%s'", name, f->key);
      return false;
    }
    if (*slot) {
      st_err(path, "tensor '%s': duplicate field '%s'", name, f->key);
      return false;
    }
    *slot = f;
  }
  const char *missing = !dtype ? "dtype" : !shape ? "shape" : !offs ? "data_offsets" : NULL;
  if (missing) {
    st_err(path, "tensor '%s': missing field '%s'", name, missing);
    return false;
  }

  if (dtype->kind != J_STR) {
    st_err(path, "tensor '%s': dtype is %s, not a string", name, jkind_names[dtype->kind]);
    return false;
  }
  e->dtype = -1;
  for (int d = 0; d < KILN_NDTYPES; d++)
    if (strlen(st_dtype_names[d]) == dtype->len && !strcmp(st_dtype_names[d], dtype->s))
      e->dtype = d;
  if (e->dtype < 0) {
    st_err(path, "tensor '%s': unknown dtype '%s'", name, dtype->s);
    return false;
  }

  if (shape->kind != J_ARR) {
    st_err(path, "tensor '%s': shape is %s, not an array", name, jkind_names[shape->kind]);
    return false;
  }
  if (shape->n > KILN_MAX_DIMS) {
    st_err(path, "tensor '%s': shape has %d dims, more than the %d kiln supports", name, shape->n,
           KILN_MAX_DIMS);
    return false;
  }
  e->ndim = shape->n;
  int64_t numel = 1;
  for (int i = 0; i < shape->n; i++) {
    char what[32];
    snprintf(what, sizeof what, "shape[%d]", i);
    if (!get_count(path, name, what, &shape->items[i], &e->shape[i])) return false;
    if (e->shape[i] && numel > INT64_MAX / e->shape[i]) {
      st_err(path, "tensor '%s': the element count of shape %s%s overflows 64 bits", name,
             kn_shape_str((char[200]){0}, i + 1, e->shape), i + 1 < e->ndim ? " (and more)" : "");
      return false;
    }
    numel *= e->shape[i];
  }
  int64_t esize = (int64_t)kiln_dtype_size(e->dtype);
  if (numel > INT64_MAX / esize) {
    st_err(path, "tensor '%s': the byte size of %s %s overflows 64 bits", name,
           st_dtype_names[e->dtype], kn_shape_str((char[200]){0}, e->ndim, e->shape));
    return false;
  }

  if (offs->kind != J_ARR || offs->n != 2) {
    st_err(path, "tensor '%s': data_offsets must be an array of two integers [begin, end]", name);
    return false;
  }
  if (!get_count(path, name, "data_offsets[0]", &offs->items[0], &e->begin) ||
      !get_count(path, name, "data_offsets[1]", &offs->items[1], &e->end))
    return false;
  if (e->end < e->begin) {
    st_err(path, "tensor '%s': data_offsets end %lld is before begin %lld", name, (long long)e->end,
           (long long)e->begin);
    return false;
  }
  if (e->end > data_len) {
    st_err(path, "tensor '%s': data_offsets [%lld, %lld] lie outside the data section (%lld bytes)",
           name, (long long)e->begin, (long long)e->end, (long long)data_len);
    return false;
  }
  if (e->end - e->begin != numel * esize) {
    st_err(path, "tensor '%s': %s %s needs %lld bytes but data_offsets [%lld, %lld] span %lld",
           name, st_dtype_names[e->dtype], kn_shape_str((char[200]){0}, e->ndim, e->shape),
           (long long)(numel * esize), (long long)e->begin, (long long)e->end,
           (long long)(e->end - e->begin));
    return false;
  }
  return true;
}

static int entry_cmp(const void *pa, const void *pb) {
  const st_entry *a = *(const st_entry *const *)pa, *b = *(const st_entry *const *)pb;
  if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
  if (a->end != b->end) return a->end < b->end ? -1 : 1;
  return (a > b) - (a < b); /* header order among equals */
}

/* The tensors must tile the data section exactly: no overlap, no hole, nothing left over. */
static bool check_coverage(const char *path, st_entry *es, int n, int64_t data_len) {
  st_entry **sorted = kn_xmalloc(sizeof(st_entry *) * (size_t)(n ? n : 1));
  for (int i = 0; i < n; i++)
    sorted[i] = &es[i];
  qsort(sorted, (size_t)n, sizeof *sorted, entry_cmp);
  bool ok = true;
  int64_t cursor = 0;
  const st_entry *prev = NULL;
  for (int i = 0; i < n && ok; i++) {
    const st_entry *e = sorted[i];
    if (e->begin < cursor) {
      st_err(path, "tensors '%s' [%lld, %lld] and '%s' [%lld, %lld] overlap", prev->name,
             (long long)prev->begin, (long long)prev->end, e->name, (long long)e->begin,
             (long long)e->end);
      ok = false;
    } else if (e->begin > cursor) {
      st_err(path, "data bytes [%lld, %lld) are not covered by any tensor (a hole before '%s')",
             (long long)cursor, (long long)e->begin, e->name);
      ok = false;
    }
    cursor = e->end;
    prev = e;
  }
  if (ok && cursor != data_len) {
    st_err(path, "data bytes [%lld, %lld) at the end are not covered by any tensor",
           (long long)cursor, (long long)data_len);
    ok = false;
  }
  free(sorted);
  return ok;
}

/* The header text -> entries in header order (pointing into *root, which the caller frees). */
static bool parse_header(const char *path, const char *text, size_t len, int64_t data_len,
                         jval *root, st_entry **out, int *nout) {
  jparser jp = {.p = (const unsigned char *)text, .start = (const unsigned char *)text};
  jp.end = jp.p + len;
  if (!parse_value(&jp, root, 0)) {
    st_err(path, "header is not valid JSON: %s", jp.err);
    return false;
  }
  skip_ws(&jp);
  if (jp.p != jp.end) {
    char cd[16];
    st_err(path, "trailing characters after the header's JSON (%s at byte %zu)",
           char_desc(cd, *jp.p), (size_t)(jp.p - jp.start));
    return false;
  }
  if (root->kind != J_OBJ) {
    st_err(path, "header is %s, not a JSON object", jkind_names[root->kind]);
    return false;
  }
  const jval *dup = duplicate_key(root);
  if (dup) {
    st_err(path, "duplicate tensor name '%s' in the header", dup->key);
    return false;
  }
  st_entry *es = kn_xcalloc((size_t)(root->n ? root->n : 1), sizeof *es);
  int n = 0;
  for (int i = 0; i < root->n; i++) {
    const jval *m = &root->items[i];
    bool ok = !strcmp(m->key, "__metadata__") && m->keylen == 12
                  ? check_metadata(path, m)
                  : parse_entry(path, m, data_len, &es[n++]);
    if (!ok) {
      free(es);
      return false;
    }
  }
  if (!check_coverage(path, es, n, data_len)) {
    free(es);
    return false;
  }
  *out = es;
  *nout = n;
  return true;
}

/* ---- reading -----------------------------------------------------------------------------------
 */
static bool read_at(FILE *f, const char *path, int64_t off, void *dst, size_t n) {
  if (!n) return true;
  if (fseeko(f, (off_t)off, SEEK_SET) != 0 || fread(dst, 1, n, f) != n) {
    st_err(path, "read of %zu bytes at offset %lld failed: %s", n, (long long)off,
           ferror(f) ? strerror(errno) : "unexpected end of file");
    return false;
  }
  return true;
}

kiln_params *kiln_load_safetensors(const char *path) {
  if (!path) {
    kn_err("load_safetensors: path is NULL");
    return NULL;
  }
  FILE *f = fopen(path, "rb");
  if (!f) {
    st_err(path, "cannot open: %s", strerror(errno));
    return NULL;
  }
  kiln_params *p = NULL;
  char *header = NULL;
  jval root = {0};
  st_entry *es = NULL;
  int n = 0;
  uint8_t *buf = NULL;
  size_t bufcap = 0;

  struct stat st;
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    st_err(path, "not a regular file");
    goto done;
  }
  int64_t fsize = (int64_t)st.st_size;
  if (fsize < 8) {
    st_err(path, "file is too short (%lld bytes) to hold the 8-byte header length",
           (long long)fsize);
    goto done;
  }
  uint8_t lenbytes[8];
  if (!read_at(f, path, 0, lenbytes, 8)) goto done;
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; i--)
    hlen = hlen << 8 | lenbytes[i];
  if (hlen > ST_MAX_HEADER) {
    st_err(path, "header length %llu is beyond the limit of %u bytes (a corrupt file?)",
           (unsigned long long)hlen, ST_MAX_HEADER);
    goto done;
  }
  if ((int64_t)hlen > fsize - 8) {
    st_err(path, "header length %llu is larger than the file (%lld bytes after the length)",
           (unsigned long long)hlen, (long long)(fsize - 8));
    goto done;
  }
  header = kn_xmalloc(hlen + 1);
  if (!read_at(f, path, 8, header, hlen)) goto done;
  int64_t data_start = 8 + (int64_t)hlen, data_len = fsize - data_start;
  if (!parse_header(path, header, hlen, data_len, &root, &es, &n)) goto done;

  p = kiln_params_new();
  kiln_scope_begin();
  bool ok = true;
  for (int i = 0; i < n && ok; i++) {
    const st_entry *e = &es[i];
    size_t nbytes = (size_t)(e->end - e->begin);
    if (nbytes > bufcap) {
      free(buf);
      buf = kn_xmalloc(nbytes);
      bufcap = nbytes;
    }
    ok = read_at(f, path, data_start + e->begin, buf, nbytes);
    if (!ok) break;
    to_little_endian(buf, nbytes, kiln_dtype_size(e->dtype));
    kiln_tensor *t = kiln_from_data(e->dtype, e->ndim, e->shape, buf);
    ok = t && kiln_params_add(p, e->name, t) == 0;
  }
  kiln_scope_end();
  if (!ok) {
    kiln_params_free(p);
    p = NULL;
  }
done:
  fclose(f);
  free(buf);
  free(es);
  jfree(&root);
  free(header);
  return p;
}

int kiln_params_load(kiln_params *p, const char *path) {
  if (!p || !path) {
    kn_err("params_load: %s is NULL", !p ? "the set" : "the path");
    return -1;
  }
  kiln_params *q = kiln_load_safetensors(path);
  if (!q) return -1;
  int rc = -1;
  char a[200], b[200];
  for (int i = 0; i < kiln_params_count(p); i++) {
    const char *name = kiln_params_name(p, i);
    kiln_tensor *dst = kiln_params_get(p, i), *src = kiln_params_find(q, name);
    if (!src) {
      st_err(path, "tensor '%s' of the set is missing from the file", name);
      goto done;
    }
    if (kiln_dtype_of(dst) != kiln_dtype_of(src)) {
      st_err(path, "tensor '%s': dtype differs: the set has %s, the file %s", name,
             kiln_dtype_name(kiln_dtype_of(dst)), kiln_dtype_name(kiln_dtype_of(src)));
      goto done;
    }
    if (kiln_ndim(dst) != kiln_ndim(src) ||
        memcmp(kiln_shape(dst), kiln_shape(src), sizeof(int64_t) * (size_t)kiln_ndim(dst))) {
      st_err(path, "tensor '%s': shape differs: the set has %s, the file %s", name,
             kn_shape_str(a, kiln_ndim(dst), kiln_shape(dst)),
             kn_shape_str(b, kiln_ndim(src), kiln_shape(src)));
      goto done;
    }
  }
  /* Counts match only if the file has nothing extra (names in the file are unique). */
  int extra = kiln_params_count(q) - kiln_params_count(p);
  if (extra > 0) {
    char names[400] = "";
    size_t len = 0;
    for (int i = 0, shown = 0; i < kiln_params_count(q) && shown < 3; i++) {
      const char *name = kiln_params_name(q, i);
      if (kiln_params_find(p, name)) continue;
      int w = snprintf(names + len, sizeof names - len, "%s'%s'", shown ? ", " : "", name);
      if (w < 0 || (size_t)w >= sizeof names - len) break;
      len += (size_t)w, shown++;
    }
    st_err(path, "the file has %d extra tensor%s the set does not have: %s%s", extra,
           extra > 1 ? "s" : "", names, extra > 3 ? ", ..." : "");
    goto done;
  }
  /* Everything checked: now assign (shares the loaded buffers, copies nothing). */
  for (int i = 0; i < kiln_params_count(p); i++)
    if (kiln_assign(kiln_params_get(p, i), kiln_params_find(q, kiln_params_name(p, i))) < 0)
      goto done;
  rc = 0;
done:
  kiln_params_free(q);
  return rc;
}

/* ---- writing -----------------------------------------------------------------------------------
 */
typedef kn_sbuf sbuf;
static void sb_put(sbuf *b, const char *s, size_t n) { kn_sbuf_put(b, s, n); }
static void sb_puts(sbuf *b, const char *s) { kn_sbuf_put(b, s, strlen(s)); }
#define sb_printf kn_sbuf_printf

/* A JSON string literal of s (valid UTF-8, checked by the caller). */
static void sb_json_string(sbuf *b, const char *s) {
  sb_puts(b, "\"");
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"':
      sb_puts(b, "\\\"");
      break;
    case '\\':
      sb_puts(b, "\\\\");
      break;
    case '\b':
      sb_puts(b, "\\b");
      break;
    case '\f':
      sb_puts(b, "\\f");
      break;
    case '\n':
      sb_puts(b, "\\n");
      break;
    case '\r':
      sb_puts(b, "\\r");
      break;
    case '\t':
      sb_puts(b, "\\t");
      break;
    default:
      if (*p < 0x20)
        sb_printf(b, "\\u%04x", *p);
      else
        sb_put(b, (const char *)p, 1);
    }
  }
  sb_puts(b, "\"");
}

static bool write_all(FILE *f, const void *data, size_t n) {
  return !n || fwrite(data, 1, n, f) == n;
}

int kiln_save_safetensors(const kiln_params *p, const char *path) {
  if (!p || !path) {
    kn_err("save_safetensors: %s is NULL", !p ? "the set" : "the path");
    return -1;
  }
  int n = kiln_params_count(p);
  for (int i = 0; i < n; i++) {
    const char *name = kiln_params_name(p, i);
    if (!strcmp(name, "__metadata__")) {
      st_err(path, "the tensor name '__metadata__' is reserved by the format");
      return -1;
    }
    if (!utf8_valid(name, strlen(name))) {
      st_err(path, "tensor name '%s' is not valid UTF-8", name);
      return -1;
    }
  }
  /* One schedule realizes every tensor still lazy, before anything is written. */
  kiln_tensor **ts = kn_xmalloc(sizeof(kiln_tensor *) * (size_t)(n ? n : 1));
  for (int i = 0; i < n; i++)
    ts[i] = kiln_params_get(p, i);
  int realized = n ? kiln_realize_many(n, ts) : 0;
  free(ts);
  if (realized < 0) return -1;

  sbuf h = {0};
  sb_puts(&h, "{");
  uint64_t off = 0;
  size_t maxbytes = 0;
  for (int i = 0; i < n; i++) {
    kiln_tensor *t = kiln_params_get(p, i);
    size_t nbytes = (size_t)kiln_numel(t) * kiln_dtype_size(kiln_dtype_of(t));
    if (nbytes > maxbytes) maxbytes = nbytes;
    if (i) sb_puts(&h, ",");
    sb_json_string(&h, kiln_params_name(p, i));
    sb_printf(&h, ":{\"dtype\":\"%s\",\"shape\":[", st_dtype_names[kiln_dtype_of(t)]);
    for (int d = 0; d < kiln_ndim(t); d++)
      sb_printf(&h, "%s%lld", d ? "," : "", (long long)kiln_shape(t)[d]);
    sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
              (unsigned long long)(off + nbytes));
    off += nbytes;
  }
  sb_puts(&h, "}");
  while (h.n % 8)
    sb_puts(&h, " "); /* keeps the data 8-byte aligned, as the reference does */

  /* Written beside the target and renamed over it: a failed save never leaves half a file. */
  size_t plen = strlen(path);
  char *tmp = kn_xmalloc(plen + 5);
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp", 5);
  uint8_t *data = kn_xmalloc(maxbytes ? maxbytes : 1);
  int rc = -1;
  FILE *f = fopen(tmp, "wb");
  if (!f) {
    st_err(path, "cannot create '%s': %s", tmp, strerror(errno));
    goto done;
  }
  uint8_t lenbytes[8];
  for (int i = 0; i < 8; i++)
    lenbytes[i] = (uint8_t)((uint64_t)h.n >> (8 * i));
  bool ok = write_all(f, lenbytes, 8) && write_all(f, h.s, h.n);
  for (int i = 0; i < n && ok; i++) {
    kiln_tensor *t = kiln_params_get(p, i);
    size_t esize = kiln_dtype_size(kiln_dtype_of(t)), nbytes = (size_t)kiln_numel(t) * esize;
    if (kiln_to_host(t, data, nbytes) < 0) {
      fclose(f);
      remove(tmp);
      goto done;
    }
    to_little_endian(data, nbytes, esize);
    ok = write_all(f, data, nbytes);
  }
  int saved_errno = errno;
  if (fclose(f) != 0 || !ok) {
    st_err(path, "write failed: %s", strerror(ok ? errno : saved_errno));
    remove(tmp);
    goto done;
  }
  if (rename(tmp, path) != 0) {
    st_err(path, "cannot rename '%s' to it: %s", tmp, strerror(errno));
    remove(tmp);
    goto done;
  }
  rc = 0;
done:
  free(data);
  free(tmp);
  free(h.s);
  return rc;
}
