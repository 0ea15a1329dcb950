/* jinja.c — a Jinja2 subset for chat templates: lexer (whitespace control, trim_blocks,
 * lstrip_blocks), recursive-descent parser to a tree, tree-walking evaluator. All memory of a
 * render lives in one arena, freed at the end; errors longjmp out of the render. Strings carry
 * the byte ranges that came from caller data ("data spans"). */
#define _GNU_SOURCE
#include "llm/jinja.h"
#include "internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdint.h>
#include <time.h>

/* ---- arena and errors --------------------------------------------------------------------- */
typedef struct chunk {
  struct chunk *next;
  size_t used, cap, last;
  _Alignas(16) unsigned char data[];
} chunk;

typedef struct frame frame;
typedef struct pb pb;

typedef struct {
  const char *src; /* the normalized template */
  size_t srclen;
  chunk *chunks;
  size_t total;
  jmp_buf jb;
  char err[768];
  long iters;
  int depth, edepth; /* macro calls; evaluation recursion */
  frame *root, *top;
  pb *out;
  struct jv *loop_keys; /* "index", "index0", ... of loop objects */
} R;

static void where(const R *r, int pos, int *line, int *col) {
  *line = 1, *col = 1;
  for (int i = 0; i < pos && (size_t)i < r->srclen; i++) {
    if (r->src[i] == '\n')
      ++*line, *col = 1;
    else
      ++*col;
  }
}

/* Fails the render: "line L:C: msg" (pos < 0: no position). */
__attribute__((noreturn, format(printf, 3, 4))) static void fail(R *r, int pos, const char *fmt,
                                                                 ...) {
  int o = 0;
  if (pos >= 0) {
    int line, col;
    where(r, pos, &line, &col);
    o = snprintf(r->err, sizeof r->err, "line %d:%d: ", line, col);
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->err + o, sizeof r->err - (size_t)o, fmt, ap);
  va_end(ap);
  longjmp(r->jb, 1);
}

static void *ar_alloc(R *r, size_t n) {
  n = (n + 15) & ~(size_t)15;
  chunk *c = r->chunks;
  if (!c || c->cap - c->used < n) {
    size_t cap = n > (64u << 10) ? n : (64u << 10);
    r->total += cap;
    if (r->total > KN_JINJA_MAX_MEMORY)
      fail(r, -1, "template uses more than %u MiB of memory", KN_JINJA_MAX_MEMORY >> 20);
    c = kn_xmalloc(sizeof *c + cap);
    c->cap = cap, c->used = 0, c->last = 0;
    c->next = r->chunks;
    r->chunks = c;
  }
  c->last = c->used;
  void *p = c->data + c->used;
  c->used += n;
  return p;
}

/* Grows p (old bytes) to n bytes, in place when it was the last allocation. */
static void *ar_grow(R *r, void *p, size_t old, size_t n) {
  chunk *c = r->chunks;
  if (p && c && (unsigned char *)p == c->data + c->last) {
    size_t need = (n + 15) & ~(size_t)15;
    if (c->last + need <= c->cap) {
      c->used = c->last + need;
      return p;
    }
  }
  void *q = ar_alloc(r, n);
  if (old) memcpy(q, p, old);
  return q;
}

static char *ar_strndup(R *r, const char *s, size_t n) {
  char *p = ar_alloc(r, n + 1);
  memcpy(p, s, n);
  p[n] = 0;
  return p;
}

static void ar_free_all(R *r) {
  for (chunk *c = r->chunks, *n; c; c = n)
    n = c->next, free(c);
  r->chunks = NULL;
}

/* ---- strings with data spans ---------------------------------------------------------------- */
typedef struct {
  const char *s;
  size_t n;
  int nsp;
  kn_text_span *sp; /* sorted, disjoint, non-empty */
} jstr;

struct pb {
  char *s;
  size_t n, cap;
  kn_text_span *sp;
  int nsp, spcap;
};

static void pb_reserve(R *r, pb *b, size_t extra) {
  if (b->n + extra + 1 <= b->cap) return;
  if (b->n + extra > KN_JINJA_MAX_OUTPUT)
    fail(r, -1, "a string or the output grew past %u MiB", KN_JINJA_MAX_OUTPUT >> 20);
  size_t cap = b->cap ? b->cap * 2 : 64;
  while (cap < b->n + extra + 1)
    cap *= 2;
  b->s = ar_grow(r, b->s, b->n, cap);
  b->cap = cap;
}

static void pb_span(R *r, pb *b, size_t off, size_t len) {
  if (!len) return;
  if (b->nsp && b->sp[b->nsp - 1].off + b->sp[b->nsp - 1].len == off) {
    b->sp[b->nsp - 1].len += len;
    return;
  }
  if (b->nsp == b->spcap) {
    int cap = b->spcap ? b->spcap * 2 : 4;
    b->sp = ar_grow(r, b->sp, sizeof *b->sp * (size_t)b->nsp, sizeof *b->sp * (size_t)cap);
    b->spcap = cap;
  }
  b->sp[b->nsp++] = (kn_text_span){off, len};
}

static void pb_put(R *r, pb *b, const char *s, size_t n, bool data) {
  pb_reserve(r, b, n);
  if (n) memcpy(b->s + b->n, s, n);
  if (data) pb_span(r, b, b->n, n);
  b->n += n;
  b->s[b->n] = 0;
}
static void pb_puts(R *r, pb *b, const char *s) { pb_put(r, b, s, strlen(s), false); }

/* Appends x[off, off+len) with its spans. */
static void pb_sub(R *r, pb *b, const jstr *x, size_t off, size_t len) {
  size_t base = b->n;
  pb_put(r, b, x->s + off, len, false);
  for (int i = 0; i < x->nsp; i++) {
    size_t a = x->sp[i].off, e = a + x->sp[i].len;
    if (a < off) a = off;
    if (e > off + len) e = off + len;
    if (a < e) pb_span(r, b, base + a - off, e - a);
  }
}
static void pb_str(R *r, pb *b, const jstr *x) { pb_sub(r, b, x, 0, x->n); }

static jstr *pb_done(R *r, pb *b) {
  jstr *x = ar_alloc(r, sizeof *x);
  if (!b->s) pb_reserve(r, b, 0), b->s[0] = 0;
  x->s = b->s, x->n = b->n, x->nsp = b->nsp, x->sp = b->sp;
  memset(b, 0, sizeof *b);
  return x;
}

static jstr *mkstr(R *r, const char *s, size_t n, bool data) {
  pb b = {0};
  pb_put(r, &b, s, n, data);
  return pb_done(r, &b);
}

/* Whether byte i of x is data (cursor *k walks the spans forward). */
static bool is_data_at(const jstr *x, size_t i, int *k) {
  while (*k < x->nsp && x->sp[*k].off + x->sp[*k].len <= i)
    ++*k;
  return *k < x->nsp && x->sp[*k].off <= i;
}

static jstr *substr(R *r, const jstr *x, size_t off, size_t len) {
  pb b = {0};
  pb_sub(r, &b, x, off, len);
  return pb_done(r, &b);
}

/* ---- UTF-8 and Python's whitespace -------------------------------------------------------- */
/* Decodes the character at s (n > 0 bytes left) into *cp; returns its length (1 for a bad
 * byte, which stands for itself). */
static size_t utf8_dec(const unsigned char *s, size_t n, uint32_t *cp) {
  unsigned c = s[0];
  size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
  if (len == 0 || len > n) {
    *cp = c;
    return 1;
  }
  uint32_t v = len == 1 ? c : len == 2 ? (c & 31) : len == 3 ? (c & 15) : (c & 7);
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80) {
      *cp = c;
      return 1;
    }
    v = (v << 6) | (s[i] & 63);
  }
  *cp = v;
  return len;
}

static bool py_space(uint32_t c) {
  return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
         c == 0x3000;
}

/* Number of characters (code points) of x. */
static size_t u_len(const jstr *x) {
  size_t k = 0;
  uint32_t cp;
  for (size_t i = 0; i < x->n;)
    i += utf8_dec((const unsigned char *)x->s + i, x->n - i, &cp), k++;
  return k;
}

/* Byte offset of character index ci (clamped to the end). */
static size_t u_off(const jstr *x, size_t ci) {
  size_t i = 0;
  uint32_t cp;
  while (ci-- && i < x->n)
    i += utf8_dec((const unsigned char *)x->s + i, x->n - i, &cp);
  return i;
}

static bool in_chars(uint32_t c, const jstr *chars) {
  uint32_t d;
  for (size_t i = 0; i < chars->n;) {
    i += utf8_dec((const unsigned char *)chars->s + i, chars->n - i, &d);
    if (d == c) return true;
  }
  return false;
}

/* Python's strip/lstrip/rstrip (chars NULL: whitespace). which: 1 left, 2 right, 3 both. */
static jstr *strip(R *r, const jstr *x, const jstr *chars, int which) {
  size_t a = 0, e = x->n;
  uint32_t cp;
  const unsigned char *u = (const unsigned char *)x->s;
  if (which & 1)
    while (a < e) {
      size_t l = utf8_dec(u + a, e - a, &cp);
      if (chars ? !in_chars(cp, chars) : !py_space(cp)) break;
      a += l;
    }
  if (which & 2) {
    size_t keep = a; /* end of the last kept character */
    for (size_t i = a; i < e;) {
      size_t l = utf8_dec(u + i, e - i, &cp);
      i += l;
      if (chars ? !in_chars(cp, chars) : !py_space(cp)) keep = i;
    }
    e = keep;
  }
  return substr(r, x, a, e - a);
}

/* ---- values ------------------------------------------------------------------------------- */
typedef enum {
  V_UNDEF,
  V_NONE,
  V_BOOL,
  V_INT,
  V_FLOAT,
  V_STR,
  V_LIST,
  V_DICT,
  V_NS,
  V_MACRO,
  V_FUNC
} vtype;

typedef struct node node;
typedef struct jlist jlist;
typedef struct jdict jdict;

typedef struct jv {
  uint8_t t;
  union {
    bool b;
    int64_t i;
    double f;
    jstr *s;
    jlist *l;
    jdict *d;
    struct macro_val *m;
    int fn;
    const char *hint; /* undefined: what was missing */
  } u;
} jv;

struct jlist {
  jv *v;
  int n, cap;
  bool tuple; /* prints as (a, b) */
};
/* A macro and the scope it was defined in. */
struct macro_val {
  const node *node;
  frame *scope;
};
struct jdict {
  jv *k, *v;
  int n, cap;
};

static const jv UNDEF = {V_UNDEF, {.hint = NULL}};
static const jv NONE = {V_NONE, {.i = 0}};
static jv mkbool(bool b) { return (jv){V_BOOL, {.b = b}}; }
static jv mkint(int64_t i) { return (jv){V_INT, {.i = i}}; }
static jv mkfloat(double f) { return (jv){V_FLOAT, {.f = f}}; }
static jv mksv(jstr *s) { return (jv){V_STR, {.s = s}}; }
static jv mklit(R *r, const char *s) { return mksv(mkstr(r, s, strlen(s), false)); }

static jv mklist(R *r) {
  jlist *l = ar_alloc(r, sizeof *l);
  memset(l, 0, sizeof *l);
  return (jv){V_LIST, {.l = l}};
}
static void list_push(R *r, jlist *l, jv v) {
  if (l->n >= KN_JINJA_MAX_ITERS) fail(r, -1, "a list grew past %d items", KN_JINJA_MAX_ITERS);
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 4;
    l->v = ar_grow(r, l->v, sizeof *l->v * (size_t)l->n, sizeof *l->v * (size_t)cap);
    l->cap = cap;
  }
  l->v[l->n++] = v;
}
static jv mkdict(R *r, vtype t) {
  jdict *d = ar_alloc(r, sizeof *d);
  memset(d, 0, sizeof *d);
  return (jv){(uint8_t)t, {.d = d}};
}

static bool str_eq(const jstr *a, const jstr *b) {
  return a->n == b->n && !memcmp(a->s, b->s, a->n);
}
static bool str_is(const jstr *a, const char *s) {
  return a->n == strlen(s) && !memcmp(a->s, s, a->n);
}

static bool is_num(jv v) { return v.t == V_INT || v.t == V_FLOAT || v.t == V_BOOL; }
static double num(jv v) {
  return v.t == V_FLOAT ? v.u.f : v.t == V_BOOL ? (double)v.u.b : (double)v.u.i;
}
static int64_t ival(jv v) { return v.t == V_BOOL ? v.u.b : v.u.i; }

static bool equal(jv a, jv b, int depth) {
  if (depth > KN_JINJA_MAX_DEPTH) return false;
  if (is_num(a) && is_num(b)) {
    if (a.t != V_FLOAT && b.t != V_FLOAT) return ival(a) == ival(b);
    return num(a) == num(b);
  }
  if (a.t != b.t) return false;
  switch (a.t) {
  case V_UNDEF:
  case V_NONE:
    return true;
  case V_STR:
    return str_eq(a.u.s, b.u.s);
  case V_LIST:
    if (a.u.l->n != b.u.l->n) return false;
    for (int i = 0; i < a.u.l->n; i++)
      if (!equal(a.u.l->v[i], b.u.l->v[i], depth + 1)) return false;
    return true;
  case V_DICT:
  case V_NS:
    if (a.u.d == b.u.d) return true;
    if (a.t == V_NS || a.u.d->n != b.u.d->n) return false;
    for (int i = 0; i < a.u.d->n; i++)
      if (!equal(a.u.d->k[i], b.u.d->k[i], depth + 1) ||
          !equal(a.u.d->v[i], b.u.d->v[i], depth + 1))
        return false;
    return true;
  case V_MACRO:
    return a.u.m == b.u.m;
  case V_FUNC:
    return a.u.fn == b.u.fn;
  }
  return false;
}

static jv *dict_find(jdict *d, jv k) {
  for (int i = 0; i < d->n; i++)
    if (equal(d->k[i], k, 0)) return &d->v[i];
  return NULL;
}
static jv *dict_find_s(jdict *d, const char *k) {
  for (int i = 0; i < d->n; i++)
    if (d->k[i].t == V_STR && str_is(d->k[i].u.s, k)) return &d->v[i];
  return NULL;
}
static void dict_set(R *r, jdict *d, jv k, jv v) {
  jv *p = dict_find(d, k);
  if (p) {
    *p = v;
    return;
  }
  if (d->n == d->cap) {
    int cap = d->cap ? d->cap * 2 : 4;
    d->k = ar_grow(r, d->k, sizeof *d->k * (size_t)d->n, sizeof *d->k * (size_t)cap);
    d->v = ar_grow(r, d->v, sizeof *d->v * (size_t)d->n, sizeof *d->v * (size_t)cap);
    d->cap = cap;
  }
  d->k[d->n] = k;
  d->v[d->n++] = v;
}

static bool truthy(jv v) {
  switch (v.t) {
  case V_UNDEF:
  case V_NONE:
    return false;
  case V_BOOL:
    return v.u.b;
  case V_INT:
    return v.u.i != 0;
  case V_FLOAT:
    return v.u.f != 0;
  case V_STR:
    return v.u.s->n > 0;
  case V_LIST:
    return v.u.l->n > 0;
  case V_DICT:
    return v.u.d->n > 0;
  default:
    return true;
  }
}

static const char *tname(jv v) {
  static const char *names[] = {
      "undefined", "NoneType", "bool",      "int",   "float",           "str",
      "list",      "dict",     "Namespace", "macro", "builtin_function"};
  return names[v.t];
}

/* Python's repr of a float. */
static void fmt_float(char *out, size_t n, double f) {
  if (isnan(f)) {
    snprintf(out, n, "nan");
    return;
  }
  if (isinf(f)) {
    snprintf(out, n, f < 0 ? "-inf" : "inf");
    return;
  }
  char tmp[40];
  int p = 1;
  for (; p < 17; p++) {
    snprintf(tmp, sizeof tmp, "%.*e", p - 1, f);
    if (strtod(tmp, NULL) == f) break;
  }
  snprintf(tmp, sizeof tmp, "%.*e", p - 1, f);
  /* tmp: [-]d[.ddd]e[+-]XX */
  char digits[24];
  int nd = 0;
  const char *c = tmp;
  bool neg = *c == '-';
  if (neg) c++;
  for (; *c && *c != 'e'; c++)
    if (isdigit((unsigned char)*c)) digits[nd++] = *c;
  int exp = atoi(c + 1);
  while (nd > 1 && digits[nd - 1] == '0')
    nd--;
  digits[nd] = 0;
  size_t k = 0;
  if (neg) out[k++] = '-';
  if (exp >= -4 && exp < 16) {
    if (exp < 0) {
      k += (size_t)snprintf(out + k, n - k, "0.");
      for (int i = -1; i > exp; i--)
        out[k++] = '0';
      k += (size_t)snprintf(out + k, n - k, "%s", digits);
    } else {
      for (int i = 0; i <= exp; i++)
        out[k++] = i < nd ? digits[i] : '0';
      out[k++] = '.';
      if (nd > exp + 1)
        k += (size_t)snprintf(out + k, n - k, "%s", digits + exp + 1);
      else
        out[k++] = '0';
    }
    out[k] = 0;
  } else {
    out[k++] = digits[0];
    if (nd > 1) {
      out[k++] = '.';
      k += (size_t)snprintf(out + k, n - k, "%s", digits + 1);
    }
    snprintf(out + k, n - k, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
  }
}

/* Appends x escaped character by character, each piece taking the provenance of its source
 * character. esc returns the replacement of cp (NULL: copy as is) in buf. */
typedef const char *(*esc_fn)(uint32_t cp, char *buf, void *ctx);
static void pb_escaped(R *r, pb *b, const jstr *x, esc_fn esc, void *ctx) {
  int k = 0;
  char buf[32];
  for (size_t i = 0; i < x->n;) {
    uint32_t cp;
    size_t l = utf8_dec((const unsigned char *)x->s + i, x->n - i, &cp);
    bool d = is_data_at(x, i, &k);
    const char *e = esc(cp, buf, ctx);
    if (e)
      pb_put(r, b, e, strlen(e), d);
    else
      pb_put(r, b, x->s + i, l, d);
    i += l;
  }
}

static const char *repr_esc(uint32_t cp, char *buf, void *ctx) {
  char q = *(char *)ctx;
  if (cp == (uint32_t)q) return q == '\'' ? "\\'" : "\\\"";
  switch (cp) {
  case '\\':
    return "\\\\";
  case '\n':
    return "\\n";
  case '\r':
    return "\\r";
  case '\t':
    return "\\t";
  }
  if (cp < 0x20 || (cp >= 0x7f && cp <= 0xa0) || cp == 0xad) {
    snprintf(buf, 32, "\\x%02x", cp);
    return buf;
  }
  /* Python's repr escapes what str.isprintable rejects: here the spaces, separators, format
   * and private-use characters of the BMP (unassigned ones are not known) */
  if (cp == 0x61c || cp == 0x1680 || cp == 0x180e || (cp >= 0x2000 && cp <= 0x200f) ||
      (cp >= 0x2028 && cp <= 0x202f) || (cp >= 0x205f && cp <= 0x206f) || cp == 0x3000 ||
      (cp >= 0xd800 && cp <= 0xf8ff) || cp == 0xfeff || (cp >= 0xfff9 && cp <= 0xfffb)) {
    snprintf(buf, 32, "\\u%04x", cp);
    return buf;
  }
  return NULL;
}

static void to_pb(R *r, pb *b, jv v, bool repr, int depth);

static void repr_str(R *r, pb *b, const jstr *s) {
  char q = memchr(s->s, '\'', s->n) && !memchr(s->s, '"', s->n) ? '"' : '\'';
  pb_put(r, b, &q, 1, false);
  pb_escaped(r, b, s, repr_esc, &q);
  pb_put(r, b, &q, 1, false);
}

/* str(v) (or repr(v)) appended to b. */
static void to_pb(R *r, pb *b, jv v, bool repr, int depth) {
  char tmp[64];
  if (depth > KN_JINJA_MAX_DEPTH) fail(r, -1, "value nested too deeply to print");
  switch (v.t) {
  case V_UNDEF:
    if (repr) pb_puts(r, b, "Undefined");
    return;
  case V_NONE:
    pb_puts(r, b, "None");
    return;
  case V_BOOL:
    pb_puts(r, b, v.u.b ? "True" : "False");
    return;
  case V_INT:
    snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i), pb_puts(r, b, tmp);
    return;
  case V_FLOAT:
    fmt_float(tmp, sizeof tmp, v.u.f), pb_puts(r, b, tmp);
    return;
  case V_STR:
    if (repr)
      repr_str(r, b, v.u.s);
    else
      pb_str(r, b, v.u.s);
    return;
  case V_LIST:
    pb_puts(r, b, v.u.l->tuple ? "(" : "[");
    for (int i = 0; i < v.u.l->n; i++) {
      if (i) pb_puts(r, b, ", ");
      to_pb(r, b, v.u.l->v[i], true, depth + 1);
    }
    pb_puts(r, b, !v.u.l->tuple ? "]" : v.u.l->n == 1 ? ",)" : ")");
    return;
  case V_DICT:
    pb_puts(r, b, "{");
    for (int i = 0; i < v.u.d->n; i++) {
      if (i) pb_puts(r, b, ", ");
      to_pb(r, b, v.u.d->k[i], true, depth + 1);
      pb_puts(r, b, ": ");
      to_pb(r, b, v.u.d->v[i], true, depth + 1);
    }
    pb_puts(r, b, "}");
    return;
  case V_NS:
    pb_puts(r, b, "<Namespace>");
    return;
  case V_MACRO:
    pb_puts(r, b, "<Macro>");
    return;
  case V_FUNC:
    pb_puts(r, b, "<built-in function>");
    return;
  }
}

static jstr *to_str(R *r, jv v) {
  if (v.t == V_STR) return v.u.s;
  pb b = {0};
  to_pb(r, &b, v, false, 0);
  return pb_done(r, &b);
}

/* ---- JSON (jinja2's tojson: sorted keys, ASCII only, <>&' escaped) --------------------------- */
static const char *json_esc(uint32_t cp, char *buf, void *ctx) {
  (void)ctx;
  switch (cp) {
  case '"':
    return "\\\"";
  case '\\':
    return "\\\\";
  case '\n':
    return "\\n";
  case '\r':
    return "\\r";
  case '\t':
    return "\\t";
  case '\b':
    return "\\b";
  case '\f':
    return "\\f";
  case '<':
    return "\\u003c";
  case '>':
    return "\\u003e";
  case '&':
    return "\\u0026";
  case '\'':
    return "\\u0027";
  }
  if (cp < 0x20 || (cp >= 0x7f && cp < 0x10000)) {
    snprintf(buf, 32, "\\u%04x", cp);
    return buf;
  }
  if (cp >= 0x10000) {
    uint32_t v = cp - 0x10000;
    snprintf(buf, 32, "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
    return buf;
  }
  return NULL;
}

static int key_cmp(const void *a, const void *b) {
  const jv *x = *(jv *const *)a, *y = *(jv *const *)b;
  if (x->t == V_STR && y->t == V_STR) {
    size_t n = x->u.s->n < y->u.s->n ? x->u.s->n : y->u.s->n;
    int c = memcmp(x->u.s->s, y->u.s->s, n);
    return c ? c : (x->u.s->n > y->u.s->n) - (x->u.s->n < y->u.s->n);
  }
  if (is_num(*x) && is_num(*y)) return (num(*x) > num(*y)) - (num(*x) < num(*y));
  return 0;
}

static void json_pb(R *r, pb *b, jv v, int indent, int level, int pos) {
  char tmp[64];
  if (level > KN_JINJA_MAX_DEPTH) fail(r, pos, "tojson: value nested too deeply");
  switch (v.t) {
  case V_NONE:
    pb_puts(r, b, "null");
    return;
  case V_BOOL:
    pb_puts(r, b, v.u.b ? "true" : "false");
    return;
  case V_INT:
    snprintf(tmp, sizeof tmp, "%lld", (long long)v.u.i), pb_puts(r, b, tmp);
    return;
  case V_FLOAT:
    if (isnan(v.u.f))
      pb_puts(r, b, "NaN");
    else if (isinf(v.u.f))
      pb_puts(r, b, v.u.f < 0 ? "-Infinity" : "Infinity");
    else
      fmt_float(tmp, sizeof tmp, v.u.f), pb_puts(r, b, tmp);
    return;
  case V_STR:
    pb_puts(r, b, "\"");
    pb_escaped(r, b, v.u.s, json_esc, NULL);
    pb_puts(r, b, "\"");
    return;
  case V_LIST:
  case V_DICT: {
    bool isl = v.t == V_LIST;
    int n = isl ? v.u.l->n : v.u.d->n;
    pb_puts(r, b, isl ? "[" : "{");
    if (!n) {
      pb_puts(r, b, isl ? "]" : "}");
      return;
    }
    int *ord = ar_alloc(r, sizeof(int) * (size_t)n);
    jv **keys = ar_alloc(r, sizeof(jv *) * (size_t)n);
    for (int i = 0; i < n; i++)
      ord[i] = i;
    if (!isl) {
      for (int i = 0; i < n; i++)
        keys[i] = &v.u.d->k[i];
      qsort(keys, (size_t)n, sizeof *keys, key_cmp);
      for (int i = 0; i < n; i++)
        ord[i] = (int)(keys[i] - v.u.d->k);
    }
    for (int i = 0; i < n; i++) {
      if (i) pb_puts(r, b, indent >= 0 ? "," : ", ");
      if (indent >= 0) {
        pb_puts(r, b, "\n");
        for (int s = 0; s < indent * (level + 1); s++)
          pb_puts(r, b, " ");
      }
      if (!isl) {
        jv k = v.u.d->k[ord[i]];
        if (k.t == V_STR)
          json_pb(r, b, k, indent, level + 1, pos);
        else {
          pb_puts(r, b, "\"");
          to_pb(r, b, k, false, level);
          pb_puts(r, b, "\"");
        }
        pb_puts(r, b, ": ");
        json_pb(r, b, v.u.d->v[ord[i]], indent, level + 1, pos);
      } else
        json_pb(r, b, v.u.l->v[i], indent, level + 1, pos);
    }
    if (indent >= 0) {
      pb_puts(r, b, "\n");
      for (int s = 0; s < indent * level; s++)
        pb_puts(r, b, " ");
    }
    pb_puts(r, b, isl ? "]" : "}");
    return;
  }
  default:
    fail(r, pos, "tojson: object of type '%s' is not JSON serializable", tname(v));
  }
}

/* ---- lexer ---------------------------------------------------------------------------------- */
typedef enum {
  T_EOF,
  T_TEXT,
  T_VBEGIN,
  T_VEND,
  T_BBEGIN,
  T_BEND,
  T_NAME,
  T_STR,
  T_INT,
  T_FLOAT,
  T_OP
} ttype;

typedef struct {
  uint8_t t;
  int pos;
  const char *s; /* text, name or operator (not NUL-terminated) */
  size_t n;
  int64_t i;
  double f;
  jstr *str;
} tok;

typedef struct {
  tok *v;
  int n, cap;
} toks;

static void tok_add(R *r, toks *ts, tok t) {
  if (ts->n == ts->cap) {
    int cap = ts->cap ? ts->cap * 2 : 256;
    ts->v = ar_grow(r, ts->v, sizeof *ts->v * (size_t)ts->n, sizeof *ts->v * (size_t)cap);
    ts->cap = cap;
  }
  ts->v[ts->n++] = t;
}

static bool ws(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\v' || c == '\r';
}

/* A string literal at s[0] (the quote); returns its length in the source. */
static size_t lex_string(R *r, const char *s, size_t n, int pos, jstr **out) {
  char q = s[0];
  pb b = {0};
  size_t i = 1;
  for (;; i++) {
    if (i >= n) fail(r, pos, "unterminated string literal");
    char c = s[i];
    if (c == q) break;
    if (c != '\\' || i + 1 >= n) {
      pb_put(r, &b, &c, 1, false);
      continue;
    }
    char e = s[++i];
    const char *rep = NULL;
    switch (e) {
    case 'n':
      rep = "\n";
      break;
    case 't':
      rep = "\t";
      break;
    case 'r':
      rep = "\r";
      break;
    case '\\':
      rep = "\\";
      break;
    case '\'':
      rep = "'";
      break;
    case '"':
      rep = "\"";
      break;
    case 'a':
      rep = "\a";
      break;
    case 'b':
      rep = "\b";
      break;
    case 'f':
      rep = "\f";
      break;
    case 'v':
      rep = "\v";
      break;
    case '\n':
      rep = "";
      break;
    }
    if (rep) {
      pb_put(r, &b, rep, strlen(rep), false);
      continue;
    }
    uint32_t cp = 0;
    int digits = e == 'x' ? 2 : e == 'u' ? 4 : e == 'U' ? 8 : 0;
    if (digits) {
      for (int k = 0; k < digits; k++) {
        char h = i + 1 < n ? s[++i] : 0;
        if (!isxdigit((unsigned char)h)) fail(r, pos, "bad \\%c escape in string literal", e);
        cp = cp * 16 + (uint32_t)(isdigit((unsigned char)h) ? h - '0' : (tolower(h) - 'a' + 10));
      }
    } else if (e >= '0' && e <= '7') {
      cp = (uint32_t)(e - '0');
      for (int k = 0; k < 2 && i + 1 < n && s[i + 1] >= '0' && s[i + 1] <= '7'; k++)
        cp = cp * 8 + (uint32_t)(s[++i] - '0');
    } else {
      char two[2] = {'\\', e};
      pb_put(r, &b, two, 2, false);
      continue;
    }
    if (cp > 0x10ffff) fail(r, pos, "bad escape in string literal");
    char u[4];
    size_t l = cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    if (l == 1)
      u[0] = (char)cp;
    else if (l == 2)
      u[0] = (char)(0xc0 | (cp >> 6)), u[1] = (char)(0x80 | (cp & 63));
    else if (l == 3)
      u[0] = (char)(0xe0 | (cp >> 12)), u[1] = (char)(0x80 | ((cp >> 6) & 63)),
      u[2] = (char)(0x80 | (cp & 63));
    else
      u[0] = (char)(0xf0 | (cp >> 18)), u[1] = (char)(0x80 | ((cp >> 12) & 63)),
      u[2] = (char)(0x80 | ((cp >> 6) & 63)), u[3] = (char)(0x80 | (cp & 63));
    pb_put(r, &b, u, l, false);
  }
  *out = pb_done(r, &b);
  return i + 1;
}

static const char *const OPS[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                  "/",  "%",  "~",  "<",  ">",  "=",  "(", ")", "[",
                                  "]",  "{",  "}",  ",",  ".",  ":",  "|"};

/* Tokens of one {{ }} or {% %} tag from p; returns the position after its end delimiter, and
 * in *trim_after: 1 for '-' (strip whitespace after), 2 for '+', 0 plain. */
static size_t lex_tag(R *r, toks *ts, size_t p, bool var, int start, int *trim_after) {
  const char *s = r->src;
  size_t n = r->srclen;
  int depth = 0;
  for (;;) {
    while (p < n && ws(s[p]))
      p++;
    if (p >= n) fail(r, start, "unterminated '%s' tag", var ? "{{" : "{%");
    if (depth == 0) {
      const char *end = var ? "}}" : "%}";
      if (s[p] == '-' && p + 2 < n && !strncmp(s + p + 1, end, 2)) {
        *trim_after = 1;
        return p + 3;
      }
      if (!var && s[p] == '+' && p + 2 < n && !strncmp(s + p + 1, end, 2)) {
        *trim_after = 2;
        return p + 3;
      }
      if (p + 1 < n && !strncmp(s + p, end, 2)) {
        *trim_after = 0;
        return p + 2;
      }
    }
    tok t = {0};
    t.pos = (int)p;
    t.s = s + p;
    char c = s[p];
    if (isalpha((unsigned char)c) || c == '_') {
      size_t e = p;
      while (e < n && (isalnum((unsigned char)s[e]) || s[e] == '_'))
        e++;
      t.t = T_NAME, t.n = e - p, p = e;
    } else if (isdigit((unsigned char)c)) {
      size_t e = p;
      char buf[64];
      size_t k = 0;
      bool isf = false;
      while (e < n && (isdigit((unsigned char)s[e]) || s[e] == '_'))
        if (s[e++] != '_' && k < 63) buf[k++] = s[e - 1];
      if (e + 1 < n && s[e] == '.' && isdigit((unsigned char)s[e + 1])) {
        isf = true;
        buf[k < 63 ? k++ : k] = '.';
        e++;
        while (e < n && (isdigit((unsigned char)s[e]) || s[e] == '_'))
          if (s[e++] != '_' && k < 63) buf[k++] = s[e - 1];
      }
      if (e < n && (s[e] == 'e' || s[e] == 'E')) {
        size_t f = e + 1;
        if (f < n && (s[f] == '+' || s[f] == '-')) f++;
        if (f < n && isdigit((unsigned char)s[f])) {
          isf = true;
          while (e < f && k < 63)
            buf[k++] = s[e++];
          while (e < n && isdigit((unsigned char)s[e]))
            if (k < 63)
              buf[k++] = s[e++];
            else
              e++;
        }
      }
      buf[k] = 0;
      if (isf) {
        t.t = T_FLOAT, t.f = strtod(buf, NULL);
      } else {
        errno = 0;
        unsigned long long v = strtoull(buf, NULL, 10);
        if (errno || v > INT64_MAX) fail(r, (int)p, "integer literal too large");
        t.t = T_INT, t.i = (int64_t)v;
      }
      t.n = e - p, p = e;
    } else if (c == '\'' || c == '"') {
      size_t l = lex_string(r, s + p, n - p, (int)p, &t.str);
      t.t = T_STR, t.n = l, p += l;
    } else {
      size_t l = 0;
      for (size_t k = 0; k < sizeof OPS / sizeof OPS[0]; k++)
        if (!strncmp(s + p, OPS[k], strlen(OPS[k]))) {
          l = strlen(OPS[k]);
          break;
        }
      if (!l) fail(r, (int)p, "unexpected character '%c'", c);
      if (c == '(' || c == '[' || c == '{') depth++;
      if (c == ')' || c == ']' || c == '}') {
        if (depth == 0) fail(r, (int)p, "unexpected '%c'", c);
        depth--;
      }
      t.t = T_OP, t.n = l, p += l;
    }
    tok_add(r, ts, t);
  }
}

/* Splits the template into text and tags, applying -, +, trim_blocks and lstrip_blocks. */
static void lex(R *r, toks *ts) {
  const char *s = r->src;
  size_t n = r->srclen, p = 0;
  bool line_starting = true;
  for (;;) {
    size_t k = p;
    while (k + 1 < n && !(s[k] == '{' && (s[k + 1] == '{' || s[k + 1] == '%' || s[k + 1] == '#')))
      k++;
    if (k + 1 >= n) k = n;
    size_t te = k; /* end of the text before the tag */
    char kind = k < n ? s[k + 1] : 0;
    char sign = k + 2 < n ? s[k + 2] : 0;
    if (kind && sign == '-') {
      while (te > p && ws(s[te - 1]))
        te--;
    } else if (kind && sign != '+' && kind != '{') {
      size_t l = te; /* lstrip_blocks: only blanks between the line start and the tag */
      while (l > p && s[l - 1] != '\n')
        l--;
      bool blank = l < te;
      for (size_t i = l; i < te && blank; i++)
        blank = ws(s[i]);
      if (blank && (l > p || line_starting)) te = l;
    }
    if (te > p) tok_add(r, ts, (tok){.t = T_TEXT, .pos = (int)p, .s = s + p, .n = te - p});
    if (!kind) break;
    size_t q = k + 2 + (sign == '-' || sign == '+');
    int trim = 0;
    if (kind == '#') {
      const char *e = NULL;
      for (size_t i = q; i + 1 < n; i++)
        if (s[i] == '#' && s[i + 1] == '}') {
          e = s + i;
          break;
        }
      if (!e) fail(r, (int)k, "unterminated comment");
      size_t ei = (size_t)(e - s);
      trim = ei > q && s[ei - 1] == '-' ? 1 : ei > q && s[ei - 1] == '+' ? 2 : 0;
      p = ei + 2;
    } else {
      bool var = kind == '{';
      tok_add(r, ts, (tok){.t = var ? T_VBEGIN : T_BBEGIN, .pos = (int)k, .s = s + k, .n = 2});
      p = lex_tag(r, ts, q, var, (int)k, &trim);
      tok_add(r, ts, (tok){.t = var ? T_VEND : T_BEND, .pos = (int)p - 2, .s = s + p - 2, .n = 2});
      if (var && trim == 0) trim = 2; /* trim_blocks is for block tags only */
    }
    if (trim == 1)
      while (p < n && ws(s[p]))
        p++;
    else if (trim == 0 && p < n && s[p] == '\n')
      p++;
    line_starting = p > 0 && s[p - 1] == '\n';
  }
  tok_add(r, ts, (tok){.t = T_EOF, .pos = (int)n});
}

/* ---- syntax tree ---------------------------------------------------------------------------- */
typedef enum {
  E_LIT,
  E_NAME,
  E_ATTR,
  E_ITEM,
  E_SLICE,
  E_CALL,
  E_FILTER,
  E_TEST,
  E_BIN,
  E_NEG,
  E_POS,
  E_NOT,
  E_AND,
  E_OR,
  E_CMP,
  E_COND,
  E_LIST,
  E_DICT,
  S_TEXT,
  S_OUT,
  S_IF,
  S_FOR,
  S_SET,
  S_SETBLOCK,
  S_MACRO,
  S_FILTER,
  S_BODY,
  S_BREAK,
  S_CONTINUE
} nkind;

enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FDIV, OP_MOD, OP_POW, OP_CAT };
enum { C_EQ, C_NE, C_LT, C_LE, C_GT, C_GE, C_IN, C_NOTIN };

typedef struct {
  node **v;
  int n, cap;
} nlist;

struct node {
  uint8_t kind, op;
  bool neg;
  int pos;
  jv val;           /* E_LIT */
  const char *name; /* variable, attribute, filter, test, macro or set target */
  const char *attr; /* S_SET: ns.attr */
  node *a, *b, *c;  /* operands; S_IF: cond, else; S_FOR: iterable, filter, else */
  nlist args;       /* arguments, items, dict keys, comparison operands, statement body */
  nlist kwv;        /* keyword values, dict values, macro defaults, filters of S_FILTER */
  const char **kwn; /* keyword names, macro parameters, loop targets */
  int nkwn;
  int *ops; /* E_CMP */
};

typedef struct {
  R *r;
  toks *ts;
  int i, depth;
} P;

static void nl_add(R *r, nlist *l, node *n) {
  if (l->n == l->cap) {
    int cap = l->cap ? l->cap * 2 : 4;
    l->v = ar_grow(r, l->v, sizeof *l->v * (size_t)l->n, sizeof *l->v * (size_t)cap);
    l->cap = cap;
  }
  l->v[l->n++] = n;
}
static void names_add(R *r, node *n, const char *s) {
  n->kwn =
      ar_grow(r, n->kwn, sizeof *n->kwn * (size_t)n->nkwn, sizeof *n->kwn * (size_t)(n->nkwn + 1));
  n->kwn[n->nkwn++] = s;
}

static node *mknode(P *p, int kind, int pos) {
  node *n = ar_alloc(p->r, sizeof *n);
  memset(n, 0, sizeof *n);
  n->kind = (uint8_t)kind;
  n->pos = pos;
  return n;
}

static tok *cur(P *p) { return &p->ts->v[p->i]; }
static bool tok_is(const tok *t, int type, const char *s) {
  return t->t == type && (!s || (t->n == strlen(s) && !memcmp(t->s, s, t->n)));
}
static bool is_op(P *p, const char *s) { return tok_is(cur(p), T_OP, s); }
static bool is_kw(P *p, const char *s) { return tok_is(cur(p), T_NAME, s); }
static bool accept_op(P *p, const char *s) {
  if (!is_op(p, s)) return false;
  p->i++;
  return true;
}
static bool accept_kw(P *p, const char *s) {
  if (!is_kw(p, s)) return false;
  p->i++;
  return true;
}
static const char *tok_desc(P *p, char *buf, size_t n) {
  tok *t = cur(p);
  if (t->t == T_EOF) return "end of template";
  if (t->t == T_VEND || t->t == T_BEND) return "end of tag";
  if (t->t == T_TEXT) return "text";
  snprintf(buf, n, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->s);
  return buf;
}
__attribute__((noreturn)) static void expected(P *p, const char *what) {
  char buf[64];
  fail(p->r, cur(p)->pos, "expected %s, got %s", what, tok_desc(p, buf, sizeof buf));
}
static void expect_op(P *p, const char *s) {
  if (!accept_op(p, s)) {
    char w[16];
    snprintf(w, sizeof w, "'%s'", s);
    expected(p, w);
  }
}
static const char *expect_name(P *p) {
  if (cur(p)->t != T_NAME) expected(p, "a name");
  tok *t = &p->ts->v[p->i++];
  return ar_strndup(p->r, t->s, t->n);
}
static void enter(P *p) {
  /* an expression level takes about three parser levels */
  if (++p->depth > 4 * KN_JINJA_MAX_DEPTH)
    fail(p->r, cur(p)->pos, "template nested more than %d levels deep", 4 * KN_JINJA_MAX_DEPTH);
}

static const char *const FILTERS[] = {
    "trim",       "upper",   "lower",  "capitalize", "title",    "length",    "count",
    "items",      "default", "d",      "join",       "first",    "last",      "list",
    "string",     "int",     "float",  "safe",       "replace",  "tojson",    "selectattr",
    "rejectattr", "select",  "reject", "map",        "abs",      "reverse",   "unique",
    "indent",     "sum",     "min",    "max",        "dictsort", "wordcount", "center",
    "round",      "batch",   "escape", "e",          "format",   "striptags", "lstrip",
    "rstrip",     "sort",    "attr",   NULL};
static const char *const TESTS[] = {
    "defined", "undefined",   "none",     "string",  "mapping", "iterable", "sequence",
    "number",  "integer",     "float",    "boolean", "true",    "false",    "equalto",
    "eq",      "==",          "ne",       "!=",      "lt",      "<",        "le",
    "<=",      "gt",          ">",        "ge",      ">=",      "in",       "odd",
    "even",    "divisibleby", "callable", "lower",   "upper",   "sameas",   NULL};
static bool in_set(const char *const *set, const char *s) {
  for (; *set; set++)
    if (!strcmp(*set, s)) return true;
  return false;
}

static node *p_expr(P *p);
static node *p_or(P *p);
static node *p_unary(P *p, bool filters);

/* ( args ) into n->args and keyword arguments into n->kwn/kwv; the '(' is consumed. */
static void p_args(P *p, node *n) {
  while (!accept_op(p, ")")) {
    if (cur(p)->t == T_NAME && tok_is(&p->ts->v[p->i + 1], T_OP, "=")) {
      names_add(p->r, n, expect_name(p));
      p->i++;
      nl_add(p->r, &n->kwv, p_expr(p));
    } else {
      if (n->nkwn) fail(p->r, cur(p)->pos, "positional argument after keyword argument");
      nl_add(p->r, &n->args, p_expr(p));
    }
    if (!accept_op(p, ",")) {
      expect_op(p, ")");
      break;
    }
  }
}

static node *p_primary(P *p) {
  tok *t = cur(p);
  node *n;
  enter(p);
  if (t->t == T_NAME) {
    p->i++;
    n = mknode(p, E_LIT, t->pos);
    if (tok_is(t, T_NAME, "true") || tok_is(t, T_NAME, "True"))
      n->val = mkbool(true);
    else if (tok_is(t, T_NAME, "false") || tok_is(t, T_NAME, "False"))
      n->val = mkbool(false);
    else if (tok_is(t, T_NAME, "none") || tok_is(t, T_NAME, "None"))
      n->val = NONE;
    else {
      n->kind = E_NAME;
      n->name = ar_strndup(p->r, t->s, t->n);
    }
  } else if (t->t == T_STR) {
    n = mknode(p, E_LIT, t->pos);
    pb b = {0};
    while (cur(p)->t == T_STR)
      pb_str(p->r, &b, p->ts->v[p->i++].str);
    n->val = mksv(pb_done(p->r, &b));
  } else if (t->t == T_INT || t->t == T_FLOAT) {
    p->i++;
    n = mknode(p, E_LIT, t->pos);
    n->val = t->t == T_INT ? mkint(t->i) : mkfloat(t->f);
  } else if (accept_op(p, "(")) {
    n = p_expr(p);
    if (is_op(p, ",")) {
      node *l = mknode(p, E_LIST, t->pos);
      l->op = 1; /* a tuple */
      nl_add(p->r, &l->args, n);
      while (accept_op(p, ",") && !is_op(p, ")"))
        nl_add(p->r, &l->args, p_expr(p));
      n = l;
    }
    expect_op(p, ")");
  } else if (accept_op(p, "[")) {
    n = mknode(p, E_LIST, t->pos);
    while (!accept_op(p, "]")) {
      nl_add(p->r, &n->args, p_expr(p));
      if (!accept_op(p, ",")) {
        expect_op(p, "]");
        break;
      }
    }
  } else if (accept_op(p, "{")) {
    n = mknode(p, E_DICT, t->pos);
    while (!accept_op(p, "}")) {
      nl_add(p->r, &n->args, p_expr(p));
      expect_op(p, ":");
      nl_add(p->r, &n->kwv, p_expr(p));
      if (!accept_op(p, ",")) {
        expect_op(p, "}");
        break;
      }
    }
  } else
    expected(p, "an expression");
  p->depth--;
  return n;
}

static node *p_postfix(P *p, node *n) {
  for (;;) {
    tok *t = cur(p);
    if (accept_op(p, ".")) {
      node *a = mknode(p, E_ATTR, t->pos);
      a->a = n;
      if (cur(p)->t == T_INT) {
        a->kind = E_ITEM;
        a->b = mknode(p, E_LIT, cur(p)->pos);
        a->b->val = mkint(cur(p)->i);
        p->i++;
      } else
        a->name = expect_name(p);
      n = a;
    } else if (accept_op(p, "[")) {
      node *parts[3] = {NULL, NULL, NULL};
      bool slice = false;
      for (int k = 0; k < 3; k++) {
        if (!is_op(p, ":") && !is_op(p, "]")) parts[k] = p_expr(p);
        if (k < 2 && accept_op(p, ":"))
          slice = true;
        else
          break;
      }
      expect_op(p, "]");
      node *s = mknode(p, slice ? E_SLICE : E_ITEM, t->pos);
      s->a = n;
      if (slice)
        for (int k = 0; k < 3; k++)
          nl_add(p->r, &s->args, parts[k]);
      else if (!(s->b = parts[0]))
        fail(p->r, t->pos, "empty subscript");
      n = s;
    } else if (accept_op(p, "(")) {
      node *c = mknode(p, E_CALL, t->pos);
      c->a = n;
      p_args(p, c);
      n = c;
    } else
      return n;
  }
}

/* | filter(args) and "is [not] test" after an operand. */
static node *p_filters(P *p, node *n) {
  for (;;) {
    tok *t = cur(p);
    if (accept_op(p, "|")) {
      node *f = mknode(p, E_FILTER, cur(p)->pos);
      f->name = expect_name(p);
      if (!in_set(FILTERS, f->name)) fail(p->r, f->pos, "unknown filter '%s'", f->name);
      f->a = n;
      if (accept_op(p, "(")) p_args(p, f);
      n = f;
    } else if (accept_kw(p, "is")) {
      node *f = mknode(p, E_TEST, t->pos);
      f->neg = accept_kw(p, "not");
      tok *nt = cur(p);
      if (nt->t == T_NAME || (nt->t == T_OP && (tok_is(nt, T_OP, "==") || tok_is(nt, T_OP, "!=") ||
                                                tok_is(nt, T_OP, "<") || tok_is(nt, T_OP, ">") ||
                                                tok_is(nt, T_OP, "<=") || tok_is(nt, T_OP, ">="))))
        f->name = ar_strndup(p->r, nt->s, nt->n), p->i++;
      else
        expected(p, "a test name");
      if (!in_set(TESTS, f->name)) fail(p->r, nt->pos, "unknown test '%s'", f->name);
      f->a = n;
      tok *at = cur(p);
      if (accept_op(p, "("))
        p_args(p, f);
      else if ((at->t == T_NAME && !tok_is(at, T_NAME, "else") && !tok_is(at, T_NAME, "or") &&
                !tok_is(at, T_NAME, "and") && !tok_is(at, T_NAME, "if") &&
                !tok_is(at, T_NAME, "in") && !tok_is(at, T_NAME, "is") &&
                !tok_is(at, T_NAME, "not")) ||
               at->t == T_STR || at->t == T_INT || at->t == T_FLOAT || tok_is(at, T_OP, "[") ||
               tok_is(at, T_OP, "{"))
        nl_add(p->r, &f->args, p_postfix(p, p_primary(p)));
      n = f;
    } else if (is_op(p, "(")) {
      n = p_postfix(p, n);
    } else
      return n;
  }
}

static node *p_unary(P *p, bool filters) {
  tok *t = cur(p);
  node *n;
  enter(p);
  if (accept_op(p, "-") || accept_op(p, "+")) {
    n = mknode(p, t->s[0] == '-' ? E_NEG : E_POS, t->pos);
    n->a = p_unary(p, false);
  } else
    n = p_primary(p);
  n = p_postfix(p, n);
  if (filters) n = p_filters(p, n);
  p->depth--;
  return n;
}

static node *bin(P *p, int op, node *l, node *r, int pos) {
  node *n = mknode(p, E_BIN, pos);
  n->op = (uint8_t)op, n->a = l, n->b = r;
  return n;
}

static node *p_pow(P *p) {
  node *n = p_unary(p, true);
  while (is_op(p, "**")) {
    int pos = cur(p)->pos;
    p->i++;
    n = bin(p, OP_POW, n, p_unary(p, true), pos);
  }
  return n;
}
static node *p_mul(P *p) {
  node *n = p_pow(p);
  for (;;) {
    int pos = cur(p)->pos, op;
    if (accept_op(p, "*"))
      op = OP_MUL;
    else if (accept_op(p, "/"))
      op = OP_DIV;
    else if (accept_op(p, "//"))
      op = OP_FDIV;
    else if (accept_op(p, "%"))
      op = OP_MOD;
    else
      return n;
    n = bin(p, op, n, p_pow(p), pos);
  }
}
static node *p_cat(P *p) {
  node *n = p_mul(p);
  while (is_op(p, "~")) {
    int pos = cur(p)->pos;
    p->i++;
    n = bin(p, OP_CAT, n, p_mul(p), pos);
  }
  return n;
}
static node *p_add(P *p) {
  node *n = p_cat(p);
  for (;;) {
    int pos = cur(p)->pos, op;
    if (accept_op(p, "+"))
      op = OP_ADD;
    else if (accept_op(p, "-"))
      op = OP_SUB;
    else
      return n;
    n = bin(p, op, n, p_cat(p), pos);
  }
}
static node *p_cmp(P *p) {
  node *first = p_add(p), *n = NULL;
  for (;;) {
    int pos = cur(p)->pos, op;
    if (accept_op(p, "=="))
      op = C_EQ;
    else if (accept_op(p, "!="))
      op = C_NE;
    else if (accept_op(p, "<"))
      op = C_LT;
    else if (accept_op(p, "<="))
      op = C_LE;
    else if (accept_op(p, ">"))
      op = C_GT;
    else if (accept_op(p, ">="))
      op = C_GE;
    else if (accept_kw(p, "in"))
      op = C_IN;
    else if (is_kw(p, "not") && tok_is(&p->ts->v[p->i + 1], T_NAME, "in"))
      p->i += 2, op = C_NOTIN;
    else
      return n ? n : first;
    if (!n) {
      n = mknode(p, E_CMP, pos);
      nl_add(p->r, &n->args, first);
    }
    n->ops = ar_grow(p->r, n->ops, sizeof(int) * (size_t)(n->args.n - 1),
                     sizeof(int) * (size_t)n->args.n);
    n->ops[n->args.n - 1] = op;
    nl_add(p->r, &n->args, p_add(p));
  }
}
static node *p_not(P *p) {
  tok *t = cur(p);
  if (accept_kw(p, "not")) {
    enter(p);
    node *n = mknode(p, E_NOT, t->pos);
    n->a = p_not(p);
    p->depth--;
    return n;
  }
  return p_cmp(p);
}
static node *p_and(P *p) {
  node *n = p_not(p);
  while (is_kw(p, "and")) {
    node *a = mknode(p, E_AND, cur(p)->pos);
    p->i++;
    a->a = n, a->b = p_not(p), n = a;
  }
  return n;
}
static node *p_or(P *p) {
  node *n = p_and(p);
  while (is_kw(p, "or")) {
    node *a = mknode(p, E_OR, cur(p)->pos);
    p->i++;
    a->a = n, a->b = p_and(p), n = a;
  }
  return n;
}
static node *p_expr(P *p) {
  enter(p);
  node *n = p_or(p);
  while (is_kw(p, "if")) {
    node *c = mknode(p, E_COND, cur(p)->pos);
    p->i++;
    c->a = p_or(p);
    c->b = n;
    if (accept_kw(p, "else")) c->c = p_expr(p);
    n = c;
  }
  p->depth--;
  return n;
}

/* ---- statements ----------------------------------------------------------------------------- */
static void expect_end(P *p) {
  if (cur(p)->t != T_BEND) expected(p, "'%}'");
  p->i++;
}

/* Parses until one of the end tags (NULL-terminated) or the end of the template (ends NULL);
 * returns the index of the end tag found, its name consumed (not its '%}'). */
static int p_body(P *p, nlist *body, const char *const *ends, const char *what, int open_pos);

static node *p_stmt(P *p) {
  tok *t = cur(p);
  int pos = t->pos;
  if (t->t != T_NAME) expected(p, "a tag name");
  enter(p);
  node *n;
  if (accept_kw(p, "if")) {
    n = mknode(p, S_IF, pos);
    n->a = p_expr(p);
    expect_end(p);
    node *last = n;
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    for (;;) {
      int w = p_body(p, &last->args, ends, "if", pos);
      if (w == 0) {
        node *e = mknode(p, S_IF, cur(p)->pos);
        e->a = p_expr(p);
        expect_end(p);
        last->b = e;
        last = e;
      } else if (w == 1) {
        expect_end(p);
        node *e = mknode(p, S_BODY, cur(p)->pos);
        static const char *const endif[] = {"endif", NULL};
        p_body(p, &e->args, endif, "if", pos);
        expect_end(p);
        last->b = e;
        break;
      } else {
        expect_end(p);
        break;
      }
    }
  } else if (accept_kw(p, "for")) {
    n = mknode(p, S_FOR, pos);
    do
      names_add(p->r, n, expect_name(p));
    while (accept_op(p, ","));
    if (!accept_kw(p, "in")) expected(p, "'in'");
    n->a = p_or(p);
    if (accept_kw(p, "if")) n->b = p_expr(p);
    if (is_kw(p, "recursive")) fail(p->r, cur(p)->pos, "recursive loops are not supported");
    expect_end(p);
    static const char *const ends[] = {"else", "endfor", NULL};
    if (p_body(p, &n->args, ends, "for", pos) == 0) {
      expect_end(p);
      n->c = mknode(p, S_BODY, cur(p)->pos);
      static const char *const endfor[] = {"endfor", NULL};
      p_body(p, &n->c->args, endfor, "for", pos);
    }
    expect_end(p);
  } else if (accept_kw(p, "set")) {
    n = mknode(p, S_SET, pos);
    n->name = expect_name(p);
    if (accept_op(p, "."))
      n->attr = expect_name(p);
    else if (is_op(p, ",")) { /* set a, b = ... */
      names_add(p->r, n, n->name);
      while (accept_op(p, ","))
        names_add(p->r, n, expect_name(p));
    }
    if (accept_op(p, "=")) {
      n->a = p_expr(p);
      if (is_op(p, ",")) { /* set x = 1, 2: a tuple */
        node *l = mknode(p, E_LIST, n->a->pos);
        l->op = 1;
        nl_add(p->r, &l->args, n->a);
        while (accept_op(p, ","))
          nl_add(p->r, &l->args, p_expr(p));
        n->a = l;
      }
      expect_end(p);
    } else {
      if (n->nkwn) expected(p, "'='");
      n->kind = S_SETBLOCK;
      expect_end(p);
      static const char *const ends[] = {"endset", NULL};
      p_body(p, &n->args, ends, "set", pos);
      expect_end(p);
    }
  } else if (accept_kw(p, "macro")) {
    n = mknode(p, S_MACRO, pos);
    n->name = expect_name(p);
    expect_op(p, "(");
    while (!accept_op(p, ")")) {
      names_add(p->r, n, expect_name(p));
      nl_add(p->r, &n->kwv, accept_op(p, "=") ? p_expr(p) : NULL);
      if (!accept_op(p, ",")) {
        expect_op(p, ")");
        break;
      }
    }
    expect_end(p);
    static const char *const ends[] = {"endmacro", NULL};
    p_body(p, &n->args, ends, "macro", pos);
    expect_end(p);
  } else if (accept_kw(p, "filter")) {
    n = mknode(p, S_FILTER, pos);
    do {
      node *f = mknode(p, E_FILTER, cur(p)->pos);
      f->name = expect_name(p);
      if (!in_set(FILTERS, f->name)) fail(p->r, f->pos, "unknown filter '%s'", f->name);
      if (accept_op(p, "(")) p_args(p, f);
      nl_add(p->r, &n->kwv, f);
    } while (accept_op(p, "|"));
    expect_end(p);
    static const char *const ends[] = {"endfilter", NULL};
    p_body(p, &n->args, ends, "filter", pos);
    expect_end(p);
  } else if (accept_kw(p, "generation")) {
    n = mknode(p, S_BODY, pos);
    expect_end(p);
    static const char *const ends[] = {"endgeneration", NULL};
    p_body(p, &n->args, ends, "generation", pos);
    expect_end(p);
  } else if (accept_kw(p, "break") || accept_kw(p, "continue")) {
    n = mknode(p, t->s[0] == 'b' ? S_BREAK : S_CONTINUE, pos);
    expect_end(p);
  } else {
    fail(p->r, pos, "unknown tag '%.*s'", (int)(t->n > 40 ? 40 : t->n), t->s);
  }
  p->depth--;
  return n;
}

static int p_body(P *p, nlist *body, const char *const *ends, const char *what, int open_pos) {
  int last = 0;
  while (ends && ends[last + 1])
    last++;
  for (;;) {
    tok *t = cur(p);
    if (t->t == T_EOF) {
      if (ends) fail(p->r, open_pos, "'%s' tag is never closed (no '%s')", what, ends[last]);
      return -1;
    }
    if (t->t == T_TEXT) {
      node *n = mknode(p, S_TEXT, t->pos);
      n->val = mksv(mkstr(p->r, t->s, t->n, false));
      nl_add(p->r, body, n);
      p->i++;
    } else if (t->t == T_VBEGIN) {
      p->i++;
      node *n = mknode(p, S_OUT, t->pos);
      n->a = p_expr(p);
      if (cur(p)->t != T_VEND) expected(p, "'}}'");
      p->i++;
      nl_add(p->r, body, n);
    } else if (t->t == T_BBEGIN) {
      p->i++;
      for (int k = 0; ends && ends[k]; k++)
        if (is_kw(p, ends[k])) {
          p->i++;
          return k;
        }
      tok *nt = cur(p);
      if (nt->t == T_NAME && ((nt->n > 3 && !memcmp(nt->s, "end", 3)) ||
                              tok_is(nt, T_NAME, "elif") || tok_is(nt, T_NAME, "else")))
        fail(p->r, nt->pos, "unexpected '%.*s'%s%s%s", (int)nt->n, nt->s,
             ends ? " (expected '" : "", ends ? ends[last] : "", ends ? "')" : "");
      nl_add(p->r, body, p_stmt(p));
    } else
      expected(p, "text or a tag");
  }
}

/* ---- scopes --------------------------------------------------------------------------------- */
struct frame {
  frame *parent;
  const char **names;
  jv *vals;
  int n, cap;
};

static frame *push_frame(R *r, frame *parent) {
  frame *f = ar_alloc(r, sizeof *f);
  memset(f, 0, sizeof *f);
  f->parent = parent;
  return f;
}

static void frame_set(R *r, frame *f, const char *name, jv v) {
  for (int i = 0; i < f->n; i++)
    if (!strcmp(f->names[i], name)) {
      f->vals[i] = v;
      return;
    }
  if (f->n == f->cap) {
    int cap = f->cap ? f->cap * 2 : 8;
    f->names =
        ar_grow(r, f->names, sizeof *f->names * (size_t)f->n, sizeof *f->names * (size_t)cap);
    f->vals = ar_grow(r, f->vals, sizeof *f->vals * (size_t)f->n, sizeof *f->vals * (size_t)cap);
    f->cap = cap;
  }
  f->names[f->n] = name;
  f->vals[f->n++] = v;
}

int64_t kn_jinja_now;

enum { F_RANGE, F_NAMESPACE, F_RAISE, F_STRFTIME, F_DICT };
static const char *const FUNCS[] = {"range",        "namespace", "raise_exception",
                                    "strftime_now", "dict",      NULL};

static jv undef_hint(R *r, const char *fmt, const char *a, const char *b) {
  char buf[200];
  snprintf(buf, sizeof buf, fmt, a, b);
  jv v = UNDEF;
  v.u.hint = ar_strndup(r, buf, strlen(buf));
  return v;
}

static jv lookup(R *r, const char *name) {
  for (frame *f = r->top; f; f = f->parent)
    for (int i = f->n - 1; i >= 0; i--)
      if (!strcmp(f->names[i], name)) return f->vals[i];
  for (int i = 0; FUNCS[i]; i++)
    if (!strcmp(FUNCS[i], name)) return (jv){V_FUNC, {.fn = i}};
  return undef_hint(r, "'%s' is undefined", name, "");
}

/* ---- evaluation helpers --------------------------------------------------------------------- */
__attribute__((noreturn)) static void fail_undef(R *r, int pos, jv v) {
  fail(r, pos, "%s", v.u.hint ? v.u.hint : "value is undefined");
}

static const char *tdesc(jv v) {
  static const char *names[] = {"undefined",    "NoneType object", "bool object",
                                "int object",   "float object",    "str object",
                                "list object",  "dict object",     "Namespace object",
                                "Macro object", "function object"};
  return names[v.t];
}

static jv getattr_(R *r, int pos, jv o, const char *name) {
  if (o.t == V_UNDEF) fail_undef(r, pos, o);
  if (o.t == V_DICT || o.t == V_NS) {
    jv *p = dict_find_s(o.u.d, name);
    if (p) return *p;
  }
  return undef_hint(r, "'%s' has no attribute '%s'", tdesc(o), name);
}

/* o[k]; a missing key or index gives undefined, as in jinja2. */
static jv getitem(R *r, int pos, jv o, jv k) {
  if (o.t == V_UNDEF) fail_undef(r, pos, o);
  if (o.t == V_DICT || o.t == V_NS) {
    jv *p = dict_find(o.u.d, k);
    if (p) return *p;
  } else if ((o.t == V_LIST || o.t == V_STR) && (k.t == V_INT || k.t == V_BOOL)) {
    int64_t i = ival(k);
    if (o.t == V_LIST) {
      if (i < 0) i += o.u.l->n;
      if (i >= 0 && i < o.u.l->n) return o.u.l->v[i];
    } else {
      int64_t len = (int64_t)u_len(o.u.s);
      if (i < 0) i += len;
      if (i >= 0 && i < len) {
        size_t a = u_off(o.u.s, (size_t)i);
        size_t e = u_off(o.u.s, (size_t)i + 1);
        return mksv(substr(r, o.u.s, a, e - a));
      }
    }
  } else if (k.t == V_STR) {
    return getattr_(r, pos, o, ar_strndup(r, k.u.s->s, k.u.s->n));
  }
  if (k.t == V_STR) return undef_hint(r, "'%s' has no attribute '%s'", tdesc(o), to_str(r, k)->s);
  return undef_hint(r, "'%s' has no item %s", tdesc(o), to_str(r, k)->s);
}

/* The items a for loop (or a filter) walks over. */
static jlist *iter_items(R *r, int pos, jv v) {
  jv out = mklist(r);
  switch (v.t) {
  case V_UNDEF:
    break;
  case V_LIST:
    return v.u.l;
  case V_DICT:
    for (int i = 0; i < v.u.d->n; i++)
      list_push(r, out.u.l, v.u.d->k[i]);
    break;
  case V_STR:
    for (size_t i = 0; i < v.u.s->n;) {
      uint32_t cp;
      size_t l = utf8_dec((const unsigned char *)v.u.s->s + i, v.u.s->n - i, &cp);
      list_push(r, out.u.l, mksv(substr(r, v.u.s, i, l)));
      i += l;
    }
    break;
  default:
    fail(r, pos, "'%s' object is not iterable", tname(v));
  }
  return out.u.l;
}

static jv concat(R *r, const jstr *a, const jstr *b) {
  pb x = {0};
  pb_str(r, &x, a);
  pb_str(r, &x, b);
  return mksv(pb_done(r, &x));
}

static jv to_int(R *r, jv v, jv dflt);
static jv py_format(R *r, int pos, const jstr *f, const jv *args, int n, bool one);

static jv arith(R *r, int pos, int op, jv a, jv b) {
  if (a.t == V_UNDEF) fail_undef(r, pos, a);
  if (b.t == V_UNDEF) fail_undef(r, pos, b);
  static const char *sym[] = {"+", "-", "*", "/", "//", "%", "**", "~"};
  if (op == OP_ADD && a.t == V_STR && b.t == V_STR) return concat(r, a.u.s, b.u.s);
  if (op == OP_ADD && a.t == V_LIST && b.t == V_LIST) {
    jv l = mklist(r);
    for (int i = 0; i < a.u.l->n; i++)
      list_push(r, l.u.l, a.u.l->v[i]);
    for (int i = 0; i < b.u.l->n; i++)
      list_push(r, l.u.l, b.u.l->v[i]);
    return l;
  }
  if (op == OP_MUL && (a.t == V_STR || a.t == V_LIST) && (b.t == V_INT || b.t == V_BOOL)) {
    int64_t k = ival(b);
    if (a.t == V_STR) {
      pb x = {0};
      for (int64_t i = 0; i < k; i++)
        pb_str(r, &x, a.u.s);
      return mksv(pb_done(r, &x));
    }
    jv l = mklist(r);
    for (int64_t i = 0; i < k; i++)
      for (int j = 0; j < a.u.l->n; j++)
        list_push(r, l.u.l, a.u.l->v[j]);
    return l;
  }
  if (op == OP_MUL && (b.t == V_STR || b.t == V_LIST) && (a.t == V_INT || a.t == V_BOOL))
    return arith(r, pos, op, b, a);
  if (op == OP_MOD && a.t == V_STR) /* 'a %s' % x or % (x, y) */
    return b.t == V_LIST && b.u.l->tuple ? py_format(r, pos, a.u.s, b.u.l->v, b.u.l->n, false)
                                         : py_format(r, pos, a.u.s, &b, 1, true);
  if (!is_num(a) || !is_num(b))
    fail(r, pos, "unsupported operand types for %s: '%s' and '%s'", sym[op], tname(a), tname(b));
  if (a.t != V_FLOAT && b.t != V_FLOAT) {
    int64_t x = ival(a), y = ival(b), z;
    switch (op) {
    case OP_ADD:
      if (__builtin_add_overflow(x, y, &z)) break;
      return mkint(z);
    case OP_SUB:
      if (__builtin_sub_overflow(x, y, &z)) break;
      return mkint(z);
    case OP_MUL:
      if (__builtin_mul_overflow(x, y, &z)) break;
      return mkint(z);
    case OP_DIV:
      if (y == 0) fail(r, pos, "division by zero");
      return mkfloat((double)x / (double)y);
    case OP_FDIV:
    case OP_MOD:
      if (y == 0) fail(r, pos, "integer division or modulo by zero");
      if (x == INT64_MIN && y == -1) break;
      z = x / y;
      if ((x % y != 0) && ((x < 0) != (y < 0))) z--;
      return mkint(op == OP_FDIV ? z : x - z * y);
    case OP_POW:
      if (y < 0 && x == 0) fail(r, pos, "0.0 cannot be raised to a negative power");
      if (y < 0) return mkfloat(pow((double)x, (double)y));
      z = 1;
      for (int64_t i = 0; i < y; i++) {
        if (__builtin_mul_overflow(z, x, &z)) fail(r, pos, "integer overflow in **");
        if (z == 0 || z == 1) break;
      }
      if (x == -1) z = y % 2 ? -1 : 1;
      return mkint(z);
    }
    fail(r, pos, "integer overflow in %s", sym[op]);
  }
  double x = num(a), y = num(b);
  switch (op) {
  case OP_ADD:
    return mkfloat(x + y);
  case OP_SUB:
    return mkfloat(x - y);
  case OP_MUL:
    return mkfloat(x * y);
  case OP_DIV:
    if (y == 0) fail(r, pos, "float division by zero");
    return mkfloat(x / y);
  case OP_FDIV:
  case OP_MOD: {
    if (y == 0) fail(r, pos, "float modulo by zero");
    double m = fmod(x, y);
    if (m != 0 && ((m < 0) != (y < 0))) m += y;
    return mkfloat(op == OP_MOD ? m : floor((x - m) / y + 0.5));
  }
  case OP_POW:
    if (x == 0 && y < 0) fail(r, pos, "0.0 cannot be raised to a negative power");
    return mkfloat(pow(x, y));
  }
  return NONE;
}

static int compare(R *r, int pos, jv a, jv b, const char *op) {
  if (is_num(a) && is_num(b)) {
    if (a.t != V_FLOAT && b.t != V_FLOAT) return (ival(a) > ival(b)) - (ival(a) < ival(b));
    return (num(a) > num(b)) - (num(a) < num(b));
  }
  if (a.t == V_STR && b.t == V_STR) {
    size_t n = a.u.s->n < b.u.s->n ? a.u.s->n : b.u.s->n;
    int c = memcmp(a.u.s->s, b.u.s->s, n);
    return c ? (c > 0) - (c < 0) : (a.u.s->n > b.u.s->n) - (a.u.s->n < b.u.s->n);
  }
  if (a.t == V_LIST && b.t == V_LIST) {
    for (int i = 0; i < a.u.l->n && i < b.u.l->n; i++) {
      if (equal(a.u.l->v[i], b.u.l->v[i], 0)) continue;
      return compare(r, pos, a.u.l->v[i], b.u.l->v[i], op);
    }
    return (a.u.l->n > b.u.l->n) - (a.u.l->n < b.u.l->n);
  }
  if (a.t == V_UNDEF) fail_undef(r, pos, a);
  if (b.t == V_UNDEF) fail_undef(r, pos, b);
  fail(r, pos, "'%s' not supported between instances of '%s' and '%s'", op, tname(a), tname(b));
}

static bool contains(R *r, int pos, jv hay, jv needle) {
  switch (hay.t) {
  case V_STR:
    if (needle.t != V_STR)
      fail(r, pos, "'in <string>' requires string as left operand, not %s", tname(needle));
    if (!needle.u.s->n) return true;
    return memmem(hay.u.s->s, hay.u.s->n, needle.u.s->s, needle.u.s->n) != NULL;
  case V_LIST:
    for (int i = 0; i < hay.u.l->n; i++)
      if (equal(hay.u.l->v[i], needle, 0)) return true;
    return false;
  case V_DICT:
    return dict_find(hay.u.d, needle) != NULL;
  case V_UNDEF:
    return false;
  default:
    fail(r, pos, "argument of type '%s' is not iterable", tname(hay));
  }
}

/* Arguments of a call, evaluated. */
typedef struct {
  jv *pa;
  int np;
  const char **kn;
  jv *kv;
  int nk;
} args_t;

/* Positional argument i or keyword name; *found says whether it was given. */
static jv arg(const args_t *a, int i, const char *name, bool *found) {
  if (found) *found = true;
  if (i >= 0 && i < a->np) return a->pa[i];
  for (int k = 0; name && k < a->nk; k++)
    if (!strcmp(a->kn[k], name)) return a->kv[k];
  if (found) *found = false;
  return UNDEF;
}
static jv arg_or(const args_t *a, int i, const char *name, jv dflt) {
  bool found;
  jv v = arg(a, i, name, &found);
  return found ? v : dflt;
}

static jstr *need_str(R *r, int pos, jv v, const char *what) {
  if (v.t != V_STR) fail(r, pos, "%s: expected a string, got %s", what, tname(v));
  return v.u.s;
}

/* Case changes keep byte positions, so the spans carry over. Only ASCII and Latin-1 letters
 * change case; Latin, Greek and Cyrillic count as cased for title(). */
static bool cased(uint32_t c) {
  return (c < 0x80 && isalpha((int)c)) || (c >= 0xc0 && c <= 0x24f && c != 0xd7 && c != 0xf7) ||
         (c >= 0x370 && c <= 0x52f);
}
static uint32_t to_upper(uint32_t c) {
  if (c < 0x80) return (uint32_t)toupper((int)c);
  return c >= 0xe0 && c <= 0xfe && c != 0xf7 ? c - 0x20 : c;
}
static uint32_t to_lower(uint32_t c) {
  if (c < 0x80) return (uint32_t)tolower((int)c);
  return c >= 0xc0 && c <= 0xde && c != 0xd7 ? c + 0x20 : c;
}
/* str.title() (CASE_TITLE) and the title filter (CASE_JTITLE: words start after - ( { [ < or
 * whitespace) differ. */
enum { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_JTITLE, CASE_CAP };
static jstr *case_map(R *r, const jstr *x, int mode) {
  pb b = {0};
  pb_str(r, &b, x);
  bool prev_cased = false, word_sep = false;
  for (size_t i = 0; i < b.n;) {
    uint32_t c, d;
    size_t l = utf8_dec((const unsigned char *)b.s + i, b.n - i, &c);
    if (mode == CASE_UPPER)
      d = to_upper(c);
    else if (mode == CASE_LOWER)
      d = to_lower(c);
    else if (mode == CASE_CAP)
      d = i == 0 ? to_upper(c) : to_lower(c);
    else if (mode == CASE_TITLE)
      d = prev_cased ? to_lower(c) : to_upper(c);
    else
      d = i == 0 || word_sep ? to_upper(c) : to_lower(c);
    prev_cased = cased(c);
    word_sep = py_space(c) || c == 0x2d || c == 0x28 || c == 0x7b || c == 0x5b || c == 0x3c;
    if (d != c && l == 1)
      b.s[i] = (char)d;
    else if (d != c && l == 2)
      b.s[i] = (char)(0xc0 | (d >> 6)), b.s[i + 1] = (char)(0x80 | (d & 63));
    i += l;
  }
  return pb_done(r, &b);
}

static jv str_replace(R *r, const jstr *x, const jstr *old, const jstr *rep, int64_t count) {
  pb b = {0};
  size_t i = 0;
  if (!old->n) {
    for (; i < x->n && count != 0; count--) {
      uint32_t cp;
      size_t l = utf8_dec((const unsigned char *)x->s + i, x->n - i, &cp);
      pb_str(r, &b, rep);
      pb_sub(r, &b, x, i, l);
      i += l;
    }
    if (i >= x->n && count != 0) pb_str(r, &b, rep);
    pb_sub(r, &b, x, i, x->n - i);
    return mksv(pb_done(r, &b));
  }
  while (count != 0) {
    const char *f = memmem(x->s + i, x->n - i, old->s, old->n);
    if (!f) break;
    size_t at = (size_t)(f - x->s);
    pb_sub(r, &b, x, i, at - i);
    pb_str(r, &b, rep);
    i = at + old->n;
    if (count > 0) count--;
  }
  pb_sub(r, &b, x, i, x->n - i);
  return mksv(pb_done(r, &b));
}

static jv str_split(R *r, int pos, const jstr *x, jv sep, int64_t maxsplit) {
  jv out = mklist(r);
  const unsigned char *u = (const unsigned char *)x->s;
  if (sep.t == V_NONE || sep.t == V_UNDEF) {
    size_t i = 0;
    uint32_t cp;
    for (;;) {
      while (i < x->n) {
        size_t l = utf8_dec(u + i, x->n - i, &cp);
        if (!py_space(cp)) break;
        i += l;
      }
      if (i >= x->n) break;
      if (maxsplit == 0) {
        size_t e = x->n; /* the rest, trailing whitespace stripped */
        jstr *rest = strip(r, substr(r, x, i, e - i), NULL, 2);
        list_push(r, out.u.l, mksv(rest));
        break;
      }
      size_t s = i;
      while (i < x->n) {
        size_t l = utf8_dec(u + i, x->n - i, &cp);
        if (py_space(cp)) break;
        i += l;
      }
      list_push(r, out.u.l, mksv(substr(r, x, s, i - s)));
      if (maxsplit > 0) maxsplit--;
    }
    return out;
  }
  const jstr *s = need_str(r, pos, sep, "split");
  if (!s->n) fail(r, pos, "split: empty separator");
  size_t i = 0;
  for (;;) {
    const char *f = maxsplit != 0 ? memmem(x->s + i, x->n - i, s->s, s->n) : NULL;
    if (!f) {
      list_push(r, out.u.l, mksv(substr(r, x, i, x->n - i)));
      return out;
    }
    size_t at = (size_t)(f - x->s);
    list_push(r, out.u.l, mksv(substr(r, x, i, at - i)));
    i = at + s->n;
    if (maxsplit > 0) maxsplit--;
  }
}

static bool starts_ends(R *r, int pos, const jstr *x, jv pre, bool end) {
  if (pre.t == V_LIST) {
    for (int i = 0; i < pre.u.l->n; i++)
      if (starts_ends(r, pos, x, pre.u.l->v[i], end)) return true;
    return false;
  }
  const jstr *p = need_str(r, pos, pre, end ? "endswith" : "startswith");
  if (p->n > x->n) return false;
  return !memcmp(end ? x->s + x->n - p->n : x->s, p->s, p->n);
}

static jv join(R *r, int pos, jv v, const jstr *sep, const char *attr) {
  jlist *l = iter_items(r, pos, v);
  pb b = {0};
  for (int i = 0; i < l->n; i++) {
    if (i && sep) pb_str(r, &b, sep);
    jv it = attr ? getattr_(r, pos, l->v[i], attr) : l->v[i];
    to_pb(r, &b, it, false, 0);
  }
  return mksv(pb_done(r, &b));
}

static jv python_slice(R *r, int pos, jv o, jv start, jv stop, jv step) {
  if (o.t == V_UNDEF) fail_undef(r, pos, o);
  if (o.t != V_LIST && o.t != V_STR) fail(r, pos, "'%s' cannot be sliced", tdesc(o));
  for (int k = 0; k < 3; k++) {
    jv x = k == 0 ? start : k == 1 ? stop : step;
    if (x.t != V_NONE && x.t != V_UNDEF && x.t != V_INT && x.t != V_BOOL)
      fail(r, pos, "slice indices must be integers or none");
  }
  int64_t len = o.t == V_LIST ? o.u.l->n : (int64_t)u_len(o.u.s);
  int64_t st = step.t == V_INT || step.t == V_BOOL ? ival(step) : 1;
  if (st == 0) fail(r, pos, "slice step cannot be zero");
  int64_t lower = st > 0 ? 0 : -1, upper = st > 0 ? len : len - 1, a, e;
  if (start.t == V_INT || start.t == V_BOOL) {
    a = ival(start);
    if (a < 0)
      a = a + len < lower ? lower : a + len;
    else if (a > upper)
      a = upper;
  } else
    a = st < 0 ? upper : lower;
  if (stop.t == V_INT || stop.t == V_BOOL) {
    e = ival(stop);
    if (e < 0)
      e = e + len < lower ? lower : e + len;
    else if (e > upper)
      e = upper;
  } else
    e = st < 0 ? lower : upper;
  if (o.t == V_LIST) {
    jv out = mklist(r);
    for (int64_t i = a; st > 0 ? i < e : i > e; i += st)
      list_push(r, out.u.l, o.u.l->v[i]);
    return out;
  }
  const jstr *s = o.u.s;
  if (st == 1) {
    if (e <= a) return mksv(mkstr(r, "", 0, false));
    size_t x = u_off(s, (size_t)a), y = u_off(s, (size_t)e);
    return mksv(substr(r, s, x, y - x));
  }
  size_t *offs = ar_alloc(r, sizeof(size_t) * (size_t)(len + 1));
  size_t i = 0;
  for (int64_t k = 0; k <= len; k++) {
    offs[k] = i;
    if (k < len) {
      uint32_t cp;
      i += utf8_dec((const unsigned char *)s->s + i, s->n - i, &cp);
    }
  }
  pb b = {0};
  for (int64_t k = a; st > 0 ? k < e : k > e; k += st)
    pb_sub(r, &b, s, offs[k], offs[k + 1] - offs[k]);
  return mksv(pb_done(r, &b));
}

/* ---- tests and filters ---------------------------------------------------------------------- */
static const char *const TESTS_NOARG[] = {"defined",  "undefined", "none",   "string",  "mapping",
                                          "iterable", "sequence",  "number", "integer", "float",
                                          "boolean",  "true",      "false",  "odd",     "even",
                                          "callable", "lower",     "upper",  NULL};

static bool run_test(R *r, int pos, const char *name, jv v, const args_t *a) {
  jv x = arg(a, 0, NULL, NULL);
  if (a->np + a->nk > 0 && in_set(TESTS_NOARG, name))
    fail(r, pos, "test '%s' takes no arguments", name);
#define IS(s) (!strcmp(name, s))
  if (IS("defined")) return v.t != V_UNDEF;
  if (IS("undefined")) return v.t == V_UNDEF;
  if (IS("none")) return v.t == V_NONE;
  if (IS("string")) return v.t == V_STR;
  if (IS("mapping")) return v.t == V_DICT;
  if (IS("iterable")) return v.t == V_STR || v.t == V_LIST || v.t == V_DICT || v.t == V_UNDEF;
  if (IS("sequence")) return v.t == V_STR || v.t == V_LIST || v.t == V_DICT || v.t == V_UNDEF;
  if (IS("number")) return is_num(v);
  if (IS("integer")) return v.t == V_INT;
  if (IS("float")) return v.t == V_FLOAT;
  if (IS("boolean")) return v.t == V_BOOL;
  if (IS("true")) return v.t == V_BOOL && v.u.b;
  if (IS("false")) return v.t == V_BOOL && !v.u.b;
  if (IS("callable")) return v.t == V_MACRO || v.t == V_FUNC;
  if (IS("equalto") || IS("eq") || IS("==") || IS("sameas")) return equal(v, x, 0);
  if (IS("ne") || IS("!=")) return !equal(v, x, 0);
  if (IS("lt") || IS("<")) return compare(r, pos, v, x, "<") < 0;
  if (IS("le") || IS("<=")) return compare(r, pos, v, x, "<=") <= 0;
  if (IS("gt") || IS(">")) return compare(r, pos, v, x, ">") > 0;
  if (IS("ge") || IS(">=")) return compare(r, pos, v, x, ">=") >= 0;
  if (IS("in")) return contains(r, pos, x, v);
  if (IS("odd") || IS("even") || IS("divisibleby")) {
    if (!is_num(v)) fail(r, pos, "test '%s' wants a number, not %s", name, tname(v));
    if (v.t == V_FLOAT || x.t == V_FLOAT) { /* value % n == 0 (1 for odd), in floats */
      double dv = IS("divisibleby") ? (is_num(x) ? num(x) : 0) : 2;
      if (dv == 0) fail(r, pos, "divisibleby: needs a non-zero number");
      double m = fmod(num(v), dv);
      if (m != 0 && ((m < 0) != (dv < 0))) m += dv;
      return IS("odd") ? m == 1 : m == 0;
    }
    int64_t d = IS("divisibleby") ? ((x.t == V_INT || x.t == V_BOOL) ? ival(x) : 0) : 2;
    if (d == 0) fail(r, pos, "divisibleby: needs a non-zero integer");
    bool even = ival(v) % d == 0;
    return IS("odd") ? !even : even;
  }
  if (IS("lower") || IS("upper")) {
    if (v.t != V_STR) return false;
    bool cased = false;
    for (size_t i = 0; i < v.u.s->n; i++) {
      unsigned char c = (unsigned char)v.u.s->s[i];
      if (IS("lower") ? isupper(c) : islower(c)) return false;
      cased |= isalpha(c) != 0;
    }
    return cased;
  }
#undef IS
  fail(r, pos, "unknown test '%s'", name);
}

static jv apply_filter(R *r, int pos, const char *name, jv v, const args_t *a);

/* select/reject/selectattr/rejectattr. Like map, they give nothing for a false value (none,
 * undefined, 0, ''), as jinja2's do (`tools | selectattr(...)` with tools none). */
static jv select_items(R *r, int pos, jv v, const args_t *a, bool attr, bool keep) {
  jv out = mklist(r);
  if (!truthy(v)) return out;
  jlist *l = iter_items(r, pos, v);
  const char *attrname = NULL;
  int t0 = 0;
  if (attr) {
    attrname = to_str(r, arg(a, 0, NULL, NULL))->s;
    t0 = 1;
  }
  jv test = arg(a, t0, NULL, NULL);
  args_t rest = {a->pa + (a->np > t0 + 1 ? t0 + 1 : a->np), a->np > t0 + 1 ? a->np - t0 - 1 : 0,
                 NULL, NULL, 0};
  for (int i = 0; i < l->n; i++) {
    jv it = l->v[i], x = it;
    if (attr) {
      if (it.t == V_DICT || it.t == V_NS) {
        jv *p = dict_find_s(it.u.d, attrname);
        x = p ? *p : UNDEF;
      } else
        x = UNDEF;
    }
    bool ok = test.t == V_UNDEF ? truthy(x) : run_test(r, pos, to_str(r, test)->s, x, &rest);
    if (ok == keep) list_push(r, out.u.l, it);
  }
  return out;
}

static jv to_int(R *r, jv v, jv dflt) {
  if (v.t == V_INT) return v;
  if (v.t == V_BOOL) return mkint(v.u.b);
  if (v.t == V_FLOAT) {
    if (!isfinite(v.u.f) || fabs(v.u.f) > 9.2e18) return dflt;
    return mkint((int64_t)v.u.f);
  }
  if (v.t == V_STR) {
    jstr *s = strip(r, v.u.s, NULL, 3);
    char *z = ar_strndup(r, s->s, s->n), *w = z, *e;
    for (char *q = z; *q; q++)
      if (*q != '_') *w++ = *q;
    *w = 0;
    if (!*z || z[strspn(z, "0123456789+-.eE")]) return dflt; /* no hex, inf or nan */
    errno = 0;
    long long x = strtoll(z, &e, 10);
    if (!*e && !errno) return mkint(x);
    double f = strtod(z, &e);
    if (!*e && isfinite(f) && fabs(f) < 9.2e18) return mkint((int64_t)f);
  }
  return dflt;
}

/* Non-ASCII characters that are not \w in Python: Latin-1 punctuation, general punctuation,
 * symbols, CJK punctuation, private use and emoji (approximate). */
static bool nonword(uint32_t c) {
  return (c >= 0x80 && c <= 0xbf && c != 0xaa && c != 0xb2 && c != 0xb3 && c != 0xb5 && c != 0xb9 &&
          c != 0xba && c != 0xbc && c != 0xbd && c != 0xbe) ||
         c == 0xd7 || c == 0xf7 || (c >= 0x2000 && c <= 0x2bff) || (c >= 0x3000 && c <= 0x303f) ||
         (c >= 0xe000 && c <= 0xf8ff) || (c >= 0x1f000 && c <= 0x1faff);
}

/* Python's str % args: %s, %d, %i, %r and %%. one: args is a single non-tuple value. */
static jv py_format(R *r, int pos, const jstr *f, const jv *args, int n, bool one) {
  pb b = {0};
  int k = 0;
  for (size_t i = 0; i < f->n; i++) {
    char c = f->s[i];
    if (c != '%' || i + 1 >= f->n) {
      pb_sub(r, &b, f, i, 1);
      continue;
    }
    char d = f->s[++i];
    if (d == '%') {
      pb_puts(r, &b, "%");
      continue;
    }
    if (!strchr("sdir", d)) fail(r, pos, "format: unsupported conversion '%%%c'", d);
    if (k >= n) fail(r, pos, "format: not enough arguments");
    jv x = args[k++];
    if (d == 'd' || d == 'i') x = to_int(r, x, x);
    if ((d == 'd' || d == 'i') && x.t != V_INT)
      fail(r, pos, "format: %%%c wants a number, not %s", d, tname(x));
    to_pb(r, &b, x, d == 'r', 0);
  }
  if (k < n && !(one && (args[0].t == V_LIST || args[0].t == V_DICT)))
    fail(r, pos, "not all arguments converted during string formatting");
  return mksv(pb_done(r, &b));
}

static jv apply_filter(R *r, int pos, const char *name, jv v, const args_t *a) {
#define IS(s) (!strcmp(name, s))
  if (IS("default") || IS("d")) {
    bool boolean = truthy(arg(a, 1, "boolean", NULL));
    if (v.t == V_UNDEF || (boolean && !truthy(v)))
      return arg_or(a, 0, "default_value", mklit(r, ""));
    return v;
  }
  if (IS("safe") || IS("escape") || IS("e")) return v;
  if (IS("string")) return mksv(to_str(r, v));
  if (IS("trim") || IS("lstrip") || IS("rstrip")) {
    jv c = arg(a, 0, "chars", NULL);
    jstr *chars = c.t == V_STR ? c.u.s : NULL;
    return mksv(strip(r, to_str(r, v), chars, IS("trim") ? 3 : IS("lstrip") ? 1 : 2));
  }
  if (IS("upper")) return mksv(case_map(r, to_str(r, v), CASE_UPPER));
  if (IS("lower")) return mksv(case_map(r, to_str(r, v), CASE_LOWER));
  if (IS("title")) return mksv(case_map(r, to_str(r, v), CASE_JTITLE));
  if (IS("capitalize")) return mksv(case_map(r, to_str(r, v), CASE_CAP));
  if (IS("length") || IS("count")) {
    switch (v.t) {
    case V_UNDEF:
      return mkint(0);
    case V_STR:
      return mkint((int64_t)u_len(v.u.s));
    case V_LIST:
      return mkint(v.u.l->n);
    case V_DICT:
    case V_NS:
      return mkint(v.u.d->n);
    default:
      fail(r, pos, "object of type '%s' has no len()", tname(v));
    }
  }
  if (IS("wordcount")) { /* runs of \w: ASCII letters, digits, _ and most non-ASCII letters */
    jstr *s = to_str(r, v);
    int64_t k = 0;
    bool in = false;
    for (size_t i = 0; i < s->n;) {
      uint32_t c;
      i += utf8_dec((const unsigned char *)s->s + i, s->n - i, &c);
      bool w = c < 0x80 ? (isalnum((int)c) || c == '_') : !py_space(c) && !nonword(c);
      k += w && !in;
      in = w;
    }
    return mkint(k);
  }
  if (IS("items") || IS("dictsort")) {
    jv out = mklist(r);
    if (v.t == V_UNDEF) return out;
    if (v.t != V_DICT) fail(r, pos, "%s: expected a mapping, got %s", name, tname(v));
    int n = v.u.d->n;
    int *ord = ar_alloc(r, sizeof(int) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++)
      ord[i] = i;
    if (IS("dictsort")) /* stable insertion sort by key */
      for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && compare(r, pos, v.u.d->k[ord[j - 1]], v.u.d->k[ord[j]], "<") > 0;
             j--) {
          int t = ord[j];
          ord[j] = ord[j - 1], ord[j - 1] = t;
        }
    for (int i = 0; i < n; i++) {
      jv pair = mklist(r);
      list_push(r, pair.u.l, v.u.d->k[ord[i]]);
      list_push(r, pair.u.l, v.u.d->v[ord[i]]);
      pair.u.l->tuple = true;
      list_push(r, out.u.l, pair);
    }
    return out;
  }
  if (IS("join")) {
    jv sep = arg_or(a, 0, "d", mklit(r, ""));
    jv attr = arg(a, 1, "attribute", NULL);
    return join(r, pos, v, to_str(r, sep), attr.t == V_STR ? to_str(r, attr)->s : NULL);
  }
  if (IS("first") || IS("last")) {
    jlist *l = iter_items(r, pos, v);
    if (!l->n) return undef_hint(r, "%s%s of an empty sequence", name, "");
    return l->v[IS("first") ? 0 : l->n - 1];
  }
  if (IS("list")) {
    jlist *l = iter_items(r, pos, v);
    jv out = mklist(r);
    for (int i = 0; i < l->n; i++)
      list_push(r, out.u.l, l->v[i]);
    return out;
  }
  if (IS("reverse")) {
    if (v.t == V_STR) return python_slice(r, pos, v, NONE, NONE, mkint(-1));
    jlist *l = iter_items(r, pos, v);
    jv out = mklist(r);
    for (int i = l->n - 1; i >= 0; i--)
      list_push(r, out.u.l, l->v[i]);
    return out;
  }
  if (IS("unique")) {
    jlist *l = iter_items(r, pos, v);
    jv out = mklist(r);
    for (int i = 0; i < l->n; i++)
      if (!contains(r, pos, out, l->v[i])) list_push(r, out.u.l, l->v[i]);
    return out;
  }
  if ((IS("int") || IS("float")) && v.t == V_UNDEF) fail_undef(r, pos, v);
  if (IS("int")) return to_int(r, v, arg_or(a, 0, "default", mkint(0)));
  if (IS("float")) {
    if (is_num(v)) return mkfloat(num(v));
    if (v.t == V_STR) {
      jstr *s = strip(r, v.u.s, NULL, 3);
      char *z = ar_strndup(r, s->s, s->n), *e;
      double f = strtod(z, &e);
      if (*z && !*e && !strpbrk(z, "xX")) return mkfloat(f);
    }
    return arg_or(a, 0, "default", mkfloat(0));
  }
  if (IS("abs")) {
    if (v.t == V_INT) return mkint(v.u.i < 0 && v.u.i != INT64_MIN ? -v.u.i : v.u.i);
    if (v.t == V_BOOL) return mkint(v.u.b);
    if (v.t == V_FLOAT) return mkfloat(fabs(v.u.f));
    fail(r, pos, "bad operand type for abs(): '%s'", tname(v));
  }
  if (IS("round")) {
    if (!is_num(v)) fail(r, pos, "round: expected a number, got %s", tname(v));
    jv pr = arg_or(a, 0, "precision", mkint(0));
    double m = pow(10, (double)((pr.t == V_INT) ? pr.u.i : 0));
    return mkfloat(round(num(v) * m) / m);
  }
  if (IS("sum") || IS("min") || IS("max")) {
    jlist *l = iter_items(r, pos, v);
    if (IS("sum")) {
      jv s = arg_or(a, 1, "start", mkint(0));
      for (int i = 0; i < l->n; i++)
        s = arith(r, pos, OP_ADD, s, l->v[i]);
      return s;
    }
    if (!l->n) return undef_hint(r, "%s%s of an empty sequence", name, "");
    jv best = l->v[0];
    for (int i = 1; i < l->n; i++) {
      int c = compare(r, pos, l->v[i], best, "<");
      if (IS("min") ? c < 0 : c > 0) best = l->v[i];
    }
    return best;
  }
  if (IS("replace")) {
    jv old = arg(a, 0, "old", NULL), rep = arg(a, 1, "new", NULL);
    jv cnt = arg_or(a, 2, "count", NONE);
    return str_replace(r, to_str(r, v), need_str(r, pos, old, "replace"),
                       need_str(r, pos, rep, "replace"), cnt.t == V_INT ? cnt.u.i : -1);
  }
  if (IS("tojson")) {
    jv ind = arg_or(a, 0, "indent", NONE);
    pb b = {0};
    json_pb(r, &b, v,
            ind.t == V_INT ? (int)(ind.u.i < 0    ? 0
                                   : ind.u.i > 64 ? 64
                                                  : ind.u.i)
                           : -1,
            0, pos);
    return mksv(pb_done(r, &b));
  }
  if (IS("indent")) {
    jv w = arg_or(a, 0, "width", mkint(4));
    bool first = truthy(arg(a, 1, "first", NULL)), blank = truthy(arg(a, 2, "blank", NULL));
    pb ind = {0};
    if (w.t == V_STR)
      pb_str(r, &ind, w.u.s);
    else
      for (int64_t i = 0; i < (w.t == V_INT ? w.u.i : 4) && i < 256; i++)
        pb_puts(r, &ind, " ");
    jstr *pad = pb_done(r, &ind), *s = to_str(r, v);
    pb b = {0};
    size_t i = 0;
    bool line0 = true;
    while (i <= s->n) {
      const char *nl = memchr(s->s + i, '\n', s->n - i);
      size_t e = nl ? (size_t)(nl - s->s) : s->n;
      bool empty = e == i;
      if ((line0 ? first : true) && (blank || !empty)) pb_str(r, &b, pad);
      pb_sub(r, &b, s, i, e - i + (nl ? 1 : 0));
      line0 = false;
      if (!nl) break;
      i = e + 1;
    }
    return mksv(pb_done(r, &b));
  }
  if (IS("center")) {
    jv w = arg_or(a, 0, "width", mkint(80));
    jstr *s = to_str(r, v);
    int64_t len = (int64_t)u_len(s), width = w.t == V_INT ? w.u.i : 80;
    if (width > KN_JINJA_MAX_ITERS) width = KN_JINJA_MAX_ITERS;
    if (len >= width) return mksv(s);
    int64_t pad = width - len, left = pad / 2 + (pad & width & 1);
    pb b = {0};
    for (int64_t i = 0; i < left; i++)
      pb_puts(r, &b, " ");
    pb_str(r, &b, s);
    for (int64_t i = 0; i < pad - left; i++)
      pb_puts(r, &b, " ");
    return mksv(pb_done(r, &b));
  }
  if (IS("selectattr") || IS("rejectattr"))
    return select_items(r, pos, v, a, true, IS("selectattr"));
  if (IS("select") || IS("reject")) return select_items(r, pos, v, a, false, IS("select"));
  if (IS("map")) {
    jv out = mklist(r);
    if (!truthy(v)) return out; /* as select_items */
    jlist *l = iter_items(r, pos, v);
    bool has_attr;
    jv attr = arg(a, -1, "attribute", &has_attr);
    jv dflt = arg_or(a, -1, "default", UNDEF);
    const char *f = NULL;
    args_t rest = {0};
    if (!has_attr) {
      if (a->np < 1 || a->pa[0].t != V_STR) fail(r, pos, "map: expected a filter name");
      f = to_str(r, a->pa[0])->s;
      if (!in_set(FILTERS, f)) fail(r, pos, "unknown filter '%s'", f);
      rest = (args_t){a->pa + 1, a->np - 1, a->kn, a->kv, a->nk};
    }
    for (int i = 0; i < l->n; i++) {
      jv x;
      if (has_attr) {
        jv it = l->v[i];
        jv *p = (it.t == V_DICT || it.t == V_NS) ? dict_find_s(it.u.d, to_str(r, attr)->s) : NULL;
        x = p ? *p : dflt;
      } else
        x = apply_filter(r, pos, f, l->v[i], &rest);
      list_push(r, out.u.l, x);
    }
    return out;
  }
  if (IS("sort")) {
    bool rev = truthy(arg(a, 0, "reverse", NULL)), cs = truthy(arg(a, 1, "case_sensitive", NULL));
    jv at = arg(a, 2, "attribute", NULL);
    jlist *l = iter_items(r, pos, v);
    jv out = mklist(r), keys = mklist(r);
    for (int i = 0; i < l->n; i++) {
      jv k = at.t == V_STR ? getitem(r, pos, l->v[i], at) : l->v[i];
      if (k.t == V_STR && !cs) k = mksv(case_map(r, k.u.s, CASE_LOWER));
      list_push(r, out.u.l, l->v[i]);
      list_push(r, keys.u.l, k);
    }
    /* stable insertion sort; lists in templates are short */
    if (l->n > 10000) fail(r, pos, "sort: more than 10000 items");
    for (int i = 1; i < l->n; i++)
      for (int j = i; j > 0; j--) {
        int c = compare(r, pos, keys.u.l->v[j - 1], keys.u.l->v[j], "<");
        if (rev ? c >= 0 : c <= 0) break;
        jv t = keys.u.l->v[j];
        keys.u.l->v[j] = keys.u.l->v[j - 1], keys.u.l->v[j - 1] = t;
        t = out.u.l->v[j];
        out.u.l->v[j] = out.u.l->v[j - 1], out.u.l->v[j - 1] = t;
      }
    return out;
  }
  if (IS("attr")) {
    jv nm = arg(a, 0, "name", NULL);
    if (v.t == V_NS && nm.t == V_STR) return getitem(r, pos, v, nm);
    return undef_hint(r, "'%s' has no attribute '%s'", tdesc(v), to_str(r, nm)->s);
  }
  if (IS("format")) return py_format(r, pos, to_str(r, v), a->pa, a->np, false);
  if (IS("batch") || IS("striptags")) fail(r, pos, "filter '%s' is not supported", name);
#undef IS
  fail(r, pos, "unknown filter '%s'", name);
}

/* ---- methods and calls ---------------------------------------------------------------------- */
static jv call_method(R *r, int pos, jv o, const char *name, const args_t *a, bool *found) {
  *found = true;
#define IS(s) (!strcmp(name, s))
  if (o.t == V_STR) {
    jstr *s = o.u.s;
    if (IS("strip") || IS("lstrip") || IS("rstrip")) {
      jv c = arg(a, 0, "chars", NULL);
      return mksv(strip(r, s, c.t == V_STR ? c.u.s : NULL, IS("strip") ? 3 : IS("lstrip") ? 1 : 2));
    }
    if (IS("startswith") || IS("endswith"))
      return mkbool(starts_ends(r, pos, s, arg(a, 0, NULL, NULL), IS("endswith")));
    if (IS("split")) {
      jv ms = arg_or(a, 1, "maxsplit", mkint(-1));
      return str_split(r, pos, s, arg_or(a, 0, "sep", NONE), ms.t == V_INT ? ms.u.i : -1);
    }
    if (IS("upper")) return mksv(case_map(r, s, CASE_UPPER));
    if (IS("lower")) return mksv(case_map(r, s, CASE_LOWER));
    if (IS("title")) return mksv(case_map(r, s, CASE_TITLE));
    if (IS("capitalize")) return mksv(case_map(r, s, CASE_CAP));
    if (IS("replace")) {
      jv cnt = arg_or(a, 2, "count", mkint(-1));
      return str_replace(r, s, need_str(r, pos, arg(a, 0, NULL, NULL), "replace"),
                         need_str(r, pos, arg(a, 1, NULL, NULL), "replace"),
                         cnt.t == V_INT ? cnt.u.i : -1);
    }
    if (IS("find") || IS("count")) {
      jstr *sub = need_str(r, pos, arg(a, 0, NULL, NULL), name);
      if (IS("find")) {
        const char *f = memmem(s->s, s->n, sub->s, sub->n);
        if (!f) return mkint(-1);
        jstr pre = {s->s, (size_t)(f - s->s), 0, NULL};
        return mkint((int64_t)u_len(&pre));
      }
      if (!sub->n) return mkint((int64_t)u_len(s) + 1);
      int64_t k = 0;
      for (const char *p = s->s, *e = s->s + s->n; (p = memmem(p, (size_t)(e - p), sub->s, sub->n));
           p += sub->n)
        k++;
      return mkint(k);
    }
    if (IS("join")) return join(r, pos, arg(a, 0, NULL, NULL), s, NULL);
    if (IS("isspace") || IS("isdigit") || IS("isalpha") || IS("isalnum")) {
      if (!s->n) return mkbool(false);
      for (size_t i = 0; i < s->n; i++) {
        unsigned char c = (unsigned char)s->s[i];
        bool ok = IS("isspace")   ? isspace(c)
                  : IS("isdigit") ? isdigit(c)
                  : IS("isalpha") ? isalpha(c)
                                  : isalnum(c);
        if (!ok) return mkbool(false);
      }
      return mkbool(true);
    }
  } else if (o.t == V_DICT) {
    if (IS("get")) {
      jv *p = dict_find(o.u.d, arg(a, 0, "key", NULL));
      return p ? *p : arg_or(a, 1, "default", NONE);
    }
    if (IS("items")) return apply_filter(r, pos, "items", o, a);
    if (IS("keys") || IS("values")) {
      jv out = mklist(r);
      for (int i = 0; i < o.u.d->n; i++)
        list_push(r, out.u.l, IS("keys") ? o.u.d->k[i] : o.u.d->v[i]);
      return out;
    }
  } else if (o.t == V_LIST) {
    if (IS("append") || IS("pop") || IS("insert") || IS("extend") || IS("remove"))
      fail(r, pos, "access to attribute '%s' of 'list' object is unsafe", name);
    if (IS("index") || IS("count")) {
      jv x = arg(a, 0, NULL, NULL);
      int64_t k = 0;
      for (int i = 0; i < o.u.l->n; i++)
        if (equal(o.u.l->v[i], x, 0)) {
          if (IS("index")) return mkint(i);
          k++;
        }
      if (IS("index")) fail(r, pos, "list.index(x): x not in list");
      return mkint(k);
    }
  }
#undef IS
  *found = false;
  return UNDEF;
}

static int exec_body(R *r, const nlist *body);
static jv eval(R *r, const node *e);

static void eval_args(R *r, const node *e, args_t *a) {
  a->np = e->args.n;
  a->pa = ar_alloc(r, sizeof(jv) * (size_t)(a->np + 1));
  for (int i = 0; i < a->np; i++)
    a->pa[i] = eval(r, e->args.v[i]);
  a->nk = e->nkwn;
  a->kn = e->kwn;
  a->kv = ar_alloc(r, sizeof(jv) * (size_t)(a->nk + 1));
  for (int i = 0; i < a->nk; i++)
    a->kv[i] = eval(r, e->kwv.v[i]);
}

/* Runs body with out redirected to a fresh buffer; returns what it wrote. */
static jstr *capture(R *r, const nlist *body) {
  pb buf = {0}, *saved = r->out;
  r->out = &buf;
  exec_body(r, body);
  r->out = saved;
  return pb_done(r, &buf);
}

static jv call_macro(R *r, int pos, const struct macro_val *mv, const args_t *a) {
  const node *m = mv->node;
  if (r->depth >= KN_JINJA_MAX_DEPTH)
    fail(r, pos, "macro calls nested more than %d deep", KN_JINJA_MAX_DEPTH);
  if (a->np > m->nkwn)
    fail(r, pos, "macro '%s' takes not more than %d argument(s)", m->name, m->nkwn);
  frame *f = push_frame(r, mv->scope), *saved = r->top;
  for (int k = 0; k < a->nk; k++) {
    bool ok = false;
    for (int i = 0; i < m->nkwn; i++)
      ok |= !strcmp(a->kn[k], m->kwn[i]);
    if (!ok) fail(r, pos, "macro '%s' has no argument '%s'", m->name, a->kn[k]);
  }
  r->top = f;
  for (int i = 0; i < m->nkwn; i++) {
    bool found;
    jv v = arg(a, i, m->kwn[i], &found);
    if (!found)
      v = m->kwv.v[i] ? eval(r, m->kwv.v[i]) : undef_hint(r, "'%s' is undefined", m->kwn[i], "");
    frame_set(r, f, m->kwn[i], v);
  }
  r->depth++;
  jstr *s = capture(r, &m->args);
  r->depth--;
  r->top = saved;
  return mksv(s);
}

static jv call_func(R *r, int pos, int fn, const args_t *a) {
  switch (fn) {
  case F_RANGE: {
    int64_t x[3] = {0, 0, 1};
    if (a->np < 1 || a->np > 3) fail(r, pos, "range expects 1 to 3 arguments, got %d", a->np);
    for (int i = 0; i < a->np; i++) {
      if (a->pa[i].t != V_INT && a->pa[i].t != V_BOOL)
        fail(r, pos, "range: '%s' object cannot be interpreted as an integer", tname(a->pa[i]));
      x[a->np == 1 ? 1 : i] = ival(a->pa[i]);
    }
    if (x[2] == 0) fail(r, pos, "range() arg 3 must not be zero");
    double cnt = x[2] > 0 ? ceil(((double)x[1] - (double)x[0]) / (double)x[2])
                          : ceil(((double)x[0] - (double)x[1]) / -(double)x[2]);
    if (cnt > KN_JINJA_MAX_ITERS)
      fail(r, pos, "range of %.0f items is too large (limit %d)", cnt, KN_JINJA_MAX_ITERS);
    jv out = mklist(r);
    for (int64_t i = x[0]; x[2] > 0 ? i < x[1] : i > x[1]; i += x[2])
      list_push(r, out.u.l, mkint(i));
    return out;
  }
  case F_NAMESPACE:
  case F_DICT: {
    jv d = mkdict(r, fn == F_NAMESPACE ? V_NS : V_DICT);
    for (int i = 0; i < a->np; i++) {
      if (a->pa[i].t != V_DICT && a->pa[i].t != V_NS)
        fail(r, pos, "%s: positional arguments must be mappings", FUNCS[fn]);
      for (int k = 0; k < a->pa[i].u.d->n; k++)
        dict_set(r, d.u.d, a->pa[i].u.d->k[k], a->pa[i].u.d->v[k]);
    }
    for (int i = 0; i < a->nk; i++)
      dict_set(r, d.u.d, mklit(r, a->kn[i]), a->kv[i]);
    return d;
  }
  case F_RAISE: {
    jstr *m = to_str(r, arg(a, 0, NULL, NULL));
    snprintf(r->err, sizeof r->err, "raise_exception: %.*s", (int)(m->n > 600 ? 600 : m->n), m->s);
    longjmp(r->jb, 1);
  }
  case F_STRFTIME: {
    jstr *f = need_str(r, pos, arg(a, 0, NULL, NULL), "strftime_now");
    char buf[256];
    time_t now = kn_jinja_now ? (time_t)kn_jinja_now : time(NULL);
    struct tm tm;
    if (kn_jinja_now)
      gmtime_r(&now, &tm);
    else
      localtime_r(&now, &tm);
    size_t n = strftime(buf, sizeof buf, ar_strndup(r, f->s, f->n), &tm);
    return mksv(mkstr(r, buf, n, false));
  }
  }
  fail(r, pos, "bad builtin");
}

static jv eval_call(R *r, const node *e) {
  args_t a;
  const node *c = e->a;
  if (c->kind == E_ATTR) {
    jv o = eval(r, c->a);
    if (o.t == V_UNDEF) fail_undef(r, c->pos, o);
    eval_args(r, e, &a);
    bool found;
    jv v = call_method(r, e->pos, o, c->name, &a, &found);
    if (found) return v;
    jv f = getattr_(r, c->pos, o, c->name);
    if (f.t == V_MACRO) return call_macro(r, e->pos, f.u.m, &a);
    if (f.t == V_FUNC) return call_func(r, e->pos, f.u.fn, &a);
    if (f.t == V_UNDEF) fail_undef(r, c->pos, f);
    fail(r, e->pos, "'%s' is not callable", tdesc(f));
  }
  jv f = eval(r, c);
  eval_args(r, e, &a);
  if (f.t == V_MACRO) return call_macro(r, e->pos, f.u.m, &a);
  if (f.t == V_FUNC) return call_func(r, e->pos, f.u.fn, &a);
  if (f.t == V_UNDEF) fail_undef(r, c->pos, f);
  fail(r, e->pos, "'%s' is not callable", tdesc(f));
}

static jv eval_(R *r, const node *e);
/* Evaluation recursion is bounded: a long chain like 1+1+...+1 is one level per term. */
static jv eval(R *r, const node *e) {
  if (++r->edepth > 16 * KN_JINJA_MAX_DEPTH)
    fail(r, e->pos, "expression nested more than %d levels deep", 16 * KN_JINJA_MAX_DEPTH);
  jv v = eval_(r, e);
  r->edepth--;
  return v;
}

static jv eval_(R *r, const node *e) {
  switch ((nkind)e->kind) {
  case E_LIT:
    return e->val;
  case E_NAME:
    return lookup(r, e->name);
  case E_ATTR:
    return getattr_(r, e->pos, eval(r, e->a), e->name);
  case E_ITEM: {
    jv o = eval(r, e->a);
    return getitem(r, e->pos, o, eval(r, e->b));
  }
  case E_SLICE: {
    jv o = eval(r, e->a), x[3];
    for (int k = 0; k < 3; k++)
      x[k] = e->args.v[k] ? eval(r, e->args.v[k]) : NONE;
    return python_slice(r, e->pos, o, x[0], x[1], x[2]);
  }
  case E_CALL:
    return eval_call(r, e);
  case E_FILTER: {
    jv v = eval(r, e->a);
    args_t a;
    eval_args(r, e, &a);
    return apply_filter(r, e->pos, e->name, v, &a);
  }
  case E_TEST: {
    jv v = eval(r, e->a);
    args_t a;
    eval_args(r, e, &a);
    return mkbool(run_test(r, e->pos, e->name, v, &a) != e->neg);
  }
  case E_BIN: {
    jv a = eval(r, e->a), b = eval(r, e->b);
    if (e->op == OP_CAT) return concat(r, to_str(r, a), to_str(r, b));
    return arith(r, e->pos, e->op, a, b);
  }
  case E_NEG:
  case E_POS: {
    jv v = eval(r, e->a);
    if (v.t == V_UNDEF) fail_undef(r, e->pos, v);
    if (!is_num(v)) fail(r, e->pos, "bad operand type for unary -: '%s'", tname(v));
    if (e->kind == E_POS) return v.t == V_BOOL ? mkint(v.u.b) : v;
    if (v.t == V_FLOAT) return mkfloat(-v.u.f);
    if (ival(v) == INT64_MIN) fail(r, e->pos, "integer overflow in unary -");
    return mkint(-ival(v));
  }
  case E_NOT:
    return mkbool(!truthy(eval(r, e->a)));
  case E_AND: {
    jv a = eval(r, e->a);
    return truthy(a) ? eval(r, e->b) : a;
  }
  case E_OR: {
    jv a = eval(r, e->a);
    return truthy(a) ? a : eval(r, e->b);
  }
  case E_CMP: {
    jv a = eval(r, e->args.v[0]);
    static const char *sym[] = {"==", "!=", "<", "<=", ">", ">=", "in", "not in"};
    for (int i = 1; i < e->args.n; i++) {
      jv b = eval(r, e->args.v[i]);
      int op = e->ops[i - 1];
      bool ok;
      switch (op) {
      case C_EQ:
        ok = equal(a, b, 0);
        break;
      case C_NE:
        ok = !equal(a, b, 0);
        break;
      case C_IN:
        ok = contains(r, e->pos, b, a);
        break;
      case C_NOTIN:
        ok = !contains(r, e->pos, b, a);
        break;
      default: {
        int c = compare(r, e->pos, a, b, sym[op]);
        ok = op == C_LT ? c < 0 : op == C_LE ? c <= 0 : op == C_GT ? c > 0 : c >= 0;
      }
      }
      if (!ok) return mkbool(false);
      a = b;
    }
    return mkbool(true);
  }
  case E_COND:
    if (truthy(eval(r, e->a))) return eval(r, e->b);
    return e->c ? eval(r, e->c)
                : undef_hint(r, "the if expression was false and had no else%s%s", "", "");
  case E_LIST: {
    jv l = mklist(r);
    l.u.l->tuple = e->op == 1;
    for (int i = 0; i < e->args.n; i++)
      list_push(r, l.u.l, eval(r, e->args.v[i]));
    return l;
  }
  case E_DICT: {
    jv d = mkdict(r, V_DICT);
    for (int i = 0; i < e->args.n; i++)
      dict_set(r, d.u.d, eval(r, e->args.v[i]), eval(r, e->kwv.v[i]));
    return d;
  }
  default:
    fail(r, e->pos, "not an expression");
  }
}

/* ---- statements ----------------------------------------------------------------------------- */
enum { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE };

static void bind_targets(R *r, const node *s, jv item) {
  if (s->nkwn == 1) {
    frame_set(r, r->top, s->kwn[0], item);
    return;
  }
  if (item.t != V_LIST || item.u.l->n != s->nkwn)
    fail(r, s->pos, "cannot unpack %s into %d loop variables", tdesc(item), s->nkwn);
  for (int i = 0; i < s->nkwn; i++)
    frame_set(r, r->top, s->kwn[i], item.u.l->v[i]);
}

static void count_iter(R *r, int pos) {
  if (++r->iters > KN_JINJA_MAX_ITERS)
    fail(r, pos, "loops ran more than %d iterations", KN_JINJA_MAX_ITERS);
}

static void exec_for(R *r, const node *s) {
  jv seq = eval(r, s->a);
  jlist *items = iter_items(r, s->a->pos, seq);
  frame *saved = r->top;
  r->top = push_frame(r, saved);
  if (s->b) { /* for x in xs if cond */
    jv kept = mklist(r);
    for (int i = 0; i < items->n; i++) {
      count_iter(r, s->pos);
      r->top->n = 0;
      bind_targets(r, s, items->v[i]);
      if (truthy(eval(r, s->b))) list_push(r, kept.u.l, items->v[i]);
    }
    items = kept.u.l;
  }
  int n = items->n;
  /* the loop object: a dict made once per loop, its keys once per render */
  static const char *const keys[] = {"index",  "index0",   "revindex", "revindex0", "first", "last",
                                     "length", "previtem", "nextitem", "depth",     "depth0"};
  if (!r->loop_keys) {
    r->loop_keys = ar_alloc(r, sizeof(jv) * 11);
    for (int k = 0; k < 11; k++)
      r->loop_keys[k] = mklit(r, keys[k]);
  }
  jv loop = mkdict(r, V_DICT);
  loop.u.d->k = r->loop_keys;
  loop.u.d->v = ar_alloc(r, sizeof(jv) * 11);
  loop.u.d->n = loop.u.d->cap = 11;
  jv *lv = loop.u.d->v;
  for (int i = 0; i < n; i++) {
    count_iter(r, s->pos);
    lv[0] = mkint(i + 1), lv[1] = mkint(i), lv[2] = mkint(n - i), lv[3] = mkint(n - i - 1);
    lv[4] = mkbool(i == 0), lv[5] = mkbool(i == n - 1), lv[6] = mkint(n);
    lv[7] = i > 0 ? items->v[i - 1] : UNDEF;
    lv[8] = i + 1 < n ? items->v[i + 1] : UNDEF;
    lv[9] = mkint(1), lv[10] = mkint(0);
    r->top->n = 0; /* each iteration starts from the enclosing scope, as in jinja2 */
    bind_targets(r, s, items->v[i]);
    frame_set(r, r->top, "loop", loop);
    if (exec_body(r, &s->args) == FLOW_BREAK) break;
  }
  r->top = saved;
  if (n == 0 && s->c) exec_body(r, &s->c->args);
}

static int exec_stmt(R *r, const node *s) {
  switch ((nkind)s->kind) {
  case S_TEXT:
    pb_str(r, r->out, s->val.u.s);
    return FLOW_NEXT;
  case S_OUT:
    to_pb(r, r->out, eval(r, s->a), false, 0);
    return FLOW_NEXT;
  case S_IF:
    for (const node *c = s; c;) {
      if (c->kind == S_BODY) return exec_body(r, &c->args);
      if (truthy(eval(r, c->a))) return exec_body(r, &c->args);
      c = c->b;
    }
    return FLOW_NEXT;
  case S_FOR:
    exec_for(r, s);
    return FLOW_NEXT;
  case S_SET:
  case S_SETBLOCK: {
    jv v = s->kind == S_SET ? eval(r, s->a) : mksv(capture(r, &s->args));
    if (s->nkwn) { /* set a, b = ... */
      bind_targets(r, s, v);
      return FLOW_NEXT;
    }
    if (!s->attr) {
      frame_set(r, r->top, s->name, v);
      return FLOW_NEXT;
    }
    jv ns = lookup(r, s->name);
    if (ns.t != V_NS) fail(r, s->pos, "cannot assign attribute on non-namespace object");
    dict_set(r, ns.u.d, mklit(r, s->attr), v);
    return FLOW_NEXT;
  }
  case S_MACRO: {
    struct macro_val *mv = ar_alloc(r, sizeof *mv);
    mv->node = s, mv->scope = r->top;
    frame_set(r, r->top, s->name, (jv){V_MACRO, {.m = mv}});
    return FLOW_NEXT;
  }
  case S_FILTER: {
    jv v = mksv(capture(r, &s->args));
    for (int i = 0; i < s->kwv.n; i++) {
      args_t a;
      eval_args(r, s->kwv.v[i], &a);
      v = apply_filter(r, s->kwv.v[i]->pos, s->kwv.v[i]->name, v, &a);
    }
    to_pb(r, r->out, v, false, 0);
    return FLOW_NEXT;
  }
  case S_BODY:
    return exec_body(r, &s->args);
  case S_BREAK:
    return FLOW_BREAK;
  case S_CONTINUE:
    return FLOW_CONTINUE;
  default:
    fail(r, s->pos, "not a statement");
  }
}

static int exec_body(R *r, const nlist *body) {
  for (int i = 0; i < body->n; i++) {
    int f = exec_stmt(r, body->v[i]);
    if (f != FLOW_NEXT) return f;
  }
  return FLOW_NEXT;
}

/* ---- entry point ---------------------------------------------------------------------------- */
static jv data_str(R *r, const char *s) { return s ? mksv(mkstr(r, s, strlen(s), true)) : NONE; }

/* Everything that can fail; results in r->out. noinline: keeps locals out of the function
 * that calls setjmp. */
__attribute__((noinline)) static void render(R *r, const char *tmpl, const kn_jinja_msg *msgs,
                                             int n, bool gen, const char *bos, const char *eos) {
  /* jinja2 reads \r\n and \r as \n and drops one trailing newline */
  size_t len = strlen(tmpl), k = 0;
  if (len > KN_JINJA_MAX_OUTPUT) fail(r, -1, "template is too large");
  char *src = ar_alloc(r, len + 1);
  for (size_t i = 0; i < len; i++) {
    if (tmpl[i] == '\r') {
      src[k++] = '\n';
      if (i + 1 < len && tmpl[i + 1] == '\n') i++;
    } else
      src[k++] = tmpl[i];
  }
  if (k && src[k - 1] == '\n') k--;
  src[k] = 0;
  r->src = src, r->srclen = k;

  toks ts = {0};
  lex(r, &ts);
  P p = {r, &ts, 0, 0};
  nlist body = {0};
  p_body(&p, &body, NULL, NULL, 0);

  r->root = r->top = push_frame(r, NULL);
  jv list = mklist(r);
  for (int i = 0; i < n; i++) {
    if (!msgs[i].role) fail(r, -1, "message %d has no role", i);
    jv m = mkdict(r, V_DICT);
    dict_set(r, m.u.d, mklit(r, "role"), mklit(r, msgs[i].role));
    if (msgs[i].nparts > 0) {
      jv parts = mklist(r);
      for (int j = 0; j < msgs[i].nparts; j++) {
        jv part = mkdict(r, V_DICT);
        dict_set(r, part.u.d, mklit(r, "type"), mklit(r, "text"));
        dict_set(r, part.u.d, mklit(r, "text"), data_str(r, msgs[i].parts[j]));
        list_push(r, parts.u.l, part);
      }
      dict_set(r, m.u.d, mklit(r, "content"), parts);
    } else
      dict_set(r, m.u.d, mklit(r, "content"), data_str(r, msgs[i].content));
    list_push(r, list.u.l, m);
  }
  frame_set(r, r->root, "messages", list);
  frame_set(r, r->root, "add_generation_prompt", mkbool(gen));
  frame_set(r, r->root, "bos_token", mklit(r, bos ? bos : ""));
  frame_set(r, r->root, "eos_token", mklit(r, eos ? eos : ""));
  r->top = push_frame(r, r->root); /* the template's own variables */
  exec_body(r, &body);
}

char *kn_jinja_render(const char *template_text, const kn_jinja_msg *msgs, int n,
                      bool add_generation_prompt, const char *bos_token, const char *eos_token,
                      kn_text_span **data_spans, int *n_spans) {
  if (data_spans) *data_spans = NULL;
  if (n_spans) *n_spans = 0;
  if (!template_text) {
    kn_err("chat template: no template text");
    return NULL;
  }
  if (n < 0 || (n > 0 && !msgs)) {
    kn_err("chat template: invalid messages (n = %d)", n);
    return NULL;
  }
  R *r = kn_xcalloc(1, sizeof *r);
  pb *out = kn_xcalloc(1, sizeof *out);
  r->out = out;
  if (setjmp(r->jb)) {
    kn_err("chat template: %s", r->err);
    ar_free_all(r);
    free(out);
    free(r);
    return NULL;
  }
  render(r, template_text, msgs, n, add_generation_prompt, bos_token, eos_token);
  char *text = kn_xmalloc(out->n + 1);
  if (out->n) memcpy(text, out->s, out->n);
  text[out->n] = 0;
  if (data_spans && out->nsp) {
    *data_spans = kn_xmalloc(sizeof **data_spans * (size_t)out->nsp);
    memcpy(*data_spans, out->sp, sizeof **data_spans * (size_t)out->nsp);
  }
  if (n_spans) *n_spans = data_spans ? out->nsp : 0;
  ar_free_all(r);
  free(out);
  free(r);
  return text;
}
