/* c.c — the C renderer: a table from low-level op to C syntax, plus the kernel prologue.
 * Half types compute as float; integer results are truncated to their type by assignment;
 * kernels are compiled with -fwrapv so integer overflow wraps as in the interpreter. */
#include "internal.h"
#include "render/prelude.h"
#include <math.h>

typedef struct {
  char *s;
  size_t n, cap;
} sbuf;
static void put(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(sbuf *b, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int k = vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    if (k >= 0 && (size_t)k < b->cap - b->n) {
      b->n += k;
      return;
    }
    b->cap = b->cap * 2 + k + 256;
    b->s = kn_xrealloc(b->s, b->cap);
  }
}

static const char *ctype(int dt) {
  static const char *t[KILN_NDTYPES] = {"_Bool", "uint8_t", "int8_t", "uint16_t", "int16_t",
                                        "uint32_t", "int32_t", "uint64_t", "int64_t", "float",
                                        "float", "float", "double"};
  return t[dt];
}
static const char *stype(int dt) {
  if (dt == KILN_BOOL) return "uint8_t";
  if (dt == KILN_F16 || dt == KILN_BF16) return "uint16_t";
  return ctype(dt);
}

/* The value of lop i as a C expression (constants inline, others by name). */
static const char *val(const kn_kernel *k, int i, char *buf) {
  const kn_lop *o = &k->ops[i];
  if (o->op != L_CONST) {
    snprintf(buf, 64, "v%d", i);
    return buf;
  }
  int dt = o->dtype;
  bool f32 = kn_compute_dtype(dt) == KILN_F32;
  if (kiln_dtype_is_float(dt)) {
    if (isnan(o->fval)) snprintf(buf, 64, "__builtin_nan%s(\"\")", f32 ? "f" : "");
    else if (isinf(o->fval)) snprintf(buf, 64, "(%s__builtin_inf%s())", o->fval < 0 ? "-" : "", f32 ? "f" : "");
    else snprintf(buf, 64, "%a%s", o->fval, f32 ? "f" : "");
  } else if (dt == KILN_U64) snprintf(buf, 64, "((uint64_t)%lluull)", (unsigned long long)o->ival);
  else if (o->ival == INT64_MIN) snprintf(buf, 64, "((int64_t)(-9223372036854775807ll-1))");
  else snprintf(buf, 64, "((%s)%lldll)", ctype(dt), (long long)o->ival);
  return buf;
}

static void cast_expr(sbuf *b, int to, int from, const char *a) {
  bool fto = kiln_dtype_is_float(to), ffrom = kiln_dtype_is_float(from);
  if (to == KILN_BOOL) put(b, "(%s != 0)", a);
  else if (fto) {
    if (to == KILN_F16) put(b, "kn_rh((float)%s)", a);
    else if (to == KILN_BF16) put(b, "kn_rbf((float)%s)", a);
    else put(b, "(%s)%s", ctype(to), a);
  } else if (ffrom) {
    int bits = kn_dtype_bits(to);
    if (kn_dtype_is_unsigned(to)) put(b, "(%s)kn_d2u((double)%s, %.17g)", ctype(to), a, ldexp(1, bits) - 1);
    else put(b, "(%s)kn_d2i((double)%s, %.17g, %.17g)", ctype(to), a, -ldexp(1, bits - 1), ldexp(1, bits - 1) - 1);
  } else put(b, "(%s)%s", ctype(to), a);
}

/* Bits of a value of dtype dt as the unsigned storage integer. */
static void bits_expr(sbuf *b, int dt, const char *a) {
  if (dt == KILN_F16) put(b, "kn_f2h(%s)", a);
  else if (dt == KILN_BF16) put(b, "kn_f2bf(%s)", a);
  else put(b, "%s", a);
}

char *kn_render_c(const kn_kernel *k) {
  sbuf b = {kn_xmalloc(4096), 0, 4096};
  put(&b, "#include <stdint.h>\n#include <math.h>\n%s\n", KN_STRINGIFY(KN_PRELUDE_BODY));
  put(&b, "void %s(void **bufs, long start, long end) {\n", k->name);
  for (int i = 0; i < k->nbufs; i++)
    put(&b, "  %s%s *restrict b%d = (%s%s *)bufs[%d];\n", i ? "const " : "", stype(k->buf_dtype[i]),
        i, i ? "const " : "", stype(k->buf_dtype[i]), i);
  if (k->nglobal == 0) put(&b, "  if (start >= end) return;\n");
  int depth = 1;
  char x[64], y[64], z[64];
  for (int i = 0; i < k->nops; i++) {
    const kn_lop *o = &k->ops[i];
    int dt = o->dtype;
    const char *T = ctype(dt);
    const char *a = o->src[0] >= 0 ? val(k, o->src[0], x) : "";
    const char *c1 = o->src[1] >= 0 ? val(k, o->src[1], y) : "";
    const char *c2 = o->src[2] >= 0 ? val(k, o->src[2], z) : "";
    if (o->op == L_CONST) continue;
    put(&b, "%*s", depth * 2, "");
    int sdt = o->src[0] >= 0 ? k->ops[o->src[0]].dtype : dt;
    bool fl = kiln_dtype_is_float(dt), f32 = kn_compute_dtype(dt) == KILN_F32;
    switch (o->op) {
    case L_RANGE:
      if (o->ival == 0) put(&b, "for (long v%d = start; v%d < end; v%d++) {\n", i, i, i);
      else put(&b, "for (long v%d = 0; v%d < %lld; v%d++) {\n", i, i, (long long)o->arg, i);
      depth++;
      break;
    case L_END:
      b.n -= 2;
      put(&b, "}\n");
      depth--;
      break;
    case L_LOAD: {
      char e[128];
      int bdt = k->buf_dtype[o->arg];
      snprintf(e, sizeof e, "b%lld[%s]", (long long)o->arg, a);
      put(&b, "%s v%d = ", T, i);
      if (o->src[1] >= 0) put(&b, "!%s ? 0 : ", c1);
      if (bdt == KILN_F16) put(&b, "kn_h2f(%s);\n", e);
      else if (bdt == KILN_BF16) put(&b, "kn_bf2f(%s);\n", e);
      else put(&b, "%s;\n", e);
      break;
    }
    case L_STORE:
      put(&b, "b%lld[%s] = ", (long long)o->arg, a);
      if (dt == KILN_F16) put(&b, "kn_f2h(%s);\n", c1);
      else if (dt == KILN_BF16) put(&b, "kn_f2bf(%s);\n", c1);
      else put(&b, "%s;\n", c1);
      break;
    case L_ACC: {
      kn_lop cst = {.op = L_CONST, .dtype = dt, .ival = o->ival, .fval = o->fval};
      kn_kernel tmp = {.ops = &cst};
      char ib[64];
      if (o->arg2 > 1)
        put(&b, "%s v%d[%lld]; for (int l_ = 0; l_ < %lld; l_++) v%d[l_] = %s;\n", T, i,
            (long long)o->arg2, (long long)o->arg2, i, val(&tmp, 0, ib));
      else put(&b, "%s v%d = %s;\n", T, i, val(&tmp, 0, ib));
      break;
    }
    case L_ACCUP: {
      char acc[64];
      if (o->src[2] >= 0) snprintf(acc, sizeof acc, "%s[%s]", a, c2);
      else snprintf(acc, sizeof acc, "%s", a);
      if (o->arg == N_ADD) put(&b, "%s = %s + %s;\n", acc, acc, c1);
      else if (o->arg == N_MUL) put(&b, "%s = %s * %s;\n", acc, acc, c1);
      else if (fl) put(&b, "%s = kn_max%s(%s, %s);\n", acc, f32 ? "f" : "d", acc, c1);
      else put(&b, "%s = %s > %s ? %s : %s;\n", acc, acc, c1, acc, c1);
      break;
    }
    case L_LANE: put(&b, "%s v%d = %s[%lld];\n", T, i, a, (long long)o->arg); break;
    default: {
      put(&b, "%s v%d = ", T, i);
      const char *fs = f32 ? "f" : "";
      switch (o->op) {
      case N_NEG: put(&b, fl ? "-%s;\n" : "(%s)(0 - %s);\n", fl ? a : T, a); break;
      case N_EXP2: put(&b, "exp2%s(%s);\n", fs, a); break;
      case N_LOG2: put(&b, "log2%s(%s);\n", fs, a); break;
      case N_SIN: put(&b, "sin%s(%s);\n", fs, a); break;
      case N_SQRT: put(&b, "sqrt%s(%s);\n", fs, a); break;
      case N_RECIP: put(&b, "1.0%s / %s;\n", fs, a); break;
      case N_CAST: cast_expr(&b, dt, sdt, a); put(&b, ";\n"); break;
      case N_BITCAST:
        put(&b, "({ %s s_ = ", stype(sdt));
        bits_expr(&b, sdt, a);
        put(&b, "; %s r_; __builtin_memcpy(&r_, &s_, sizeof r_); ", stype(dt));
        if (dt == KILN_F16) put(&b, "kn_h2f(r_); });\n");
        else if (dt == KILN_BF16) put(&b, "kn_bf2f(r_); });\n");
        else put(&b, "r_; });\n");
        break;
      case N_ADD: put(&b, "(%s)(%s + %s);\n", T, a, c1); break;
      case N_MUL: put(&b, "(%s)(%s * %s);\n", T, a, c1); break;
      case N_MAX:
        if (fl) put(&b, "kn_max%s(%s, %s);\n", f32 ? "f" : "d", a, c1);
        else put(&b, "%s > %s ? %s : %s;\n", a, c1, a, c1);
        break;
      case N_CMPLT: put(&b, "%s < %s;\n", a, c1); break;
      case N_CMPNE: put(&b, "%s != %s;\n", a, c1); break;
      case N_IDIV:
      case N_MOD: {
        bool isdiv = o->op == N_IDIV;
        const kn_lop *d = &k->ops[o->src[1]];
        if (d->op == L_CONST && d->ival > 0) put(&b, "%s %s %s;\n", a, isdiv ? "/" : "%", c1);
        else if (kn_dtype_is_unsigned(dt)) put(&b, "(%s)kn_u%s(%s, %s);\n", T, isdiv ? "div" : "mod", a, c1);
        else put(&b, "(%s)kn_i%s(%s, %s);\n", T, isdiv ? "div" : "mod", a, c1);
        break;
      }
      case N_AND: put(&b, "(%s)(%s & %s);\n", T, a, c1); break;
      case N_OR: put(&b, "(%s)(%s | %s);\n", T, a, c1); break;
      case N_XOR: put(&b, "(%s)(%s ^ %s);\n", T, a, c1); break;
      case N_SHL:
        put(&b, "(%s)((uint64_t)%s << (%s & %d));\n", T, a, c1, kn_dtype_bits(dt) - 1);
        break;
      case N_SHR: put(&b, "(%s)(%s >> (%s & %d));\n", T, a, c1, kn_dtype_bits(dt) - 1); break;
      case N_WHERE: put(&b, "%s ? %s : %s;\n", a, c1, c2); break;
      default: KN_ASSERT(0, "C renderer: no syntax for op %d", o->op);
      }
    }
    }
  }
  put(&b, "}\n");
  return b.s;
}
