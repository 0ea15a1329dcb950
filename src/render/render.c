/* render.c — the C-like base renderer: walks a kernel's low-level program and writes one
 * statement per lop, asking the dialect (C, OpenCL C, CUDA C) for every spelling that differs.
 * Half types compute as float; integer results are truncated to their type by assignment;
 * kernels are compiled so that integer overflow wraps as in the interpreter. */
#include "render/dialect.h"
#include "render/prelude.h"
#include <math.h>

typedef kn_sbuf sbuf;
#define put kn_sbuf_printf

const char *kn_ctype(const kn_dialect *d, int dt) {
  static const char *t[KILN_NDTYPES] = {"",         "uint8_t", "int8_t",   "uint16_t", "int16_t",
                                        "uint32_t", "int32_t", "uint64_t", "int64_t",  "float",
                                        "float",    "float",   "double"};
  return dt == KILN_BOOL ? d->bool_type : t[dt];
}
const char *kn_stype(const kn_dialect *d, int dt) {
  if (dt == KILN_BOOL) return "uint8_t";
  if (dt == KILN_F16 || dt == KILN_BF16) return "uint16_t";
  return kn_ctype(d, dt);
}
static const kn_dialect *D; /* the dialect being rendered (set by kn_render) */
static const char *ctype(int dt) { return kn_ctype(D, dt); }
/* a op c in type dt. Integers wrap around, as kiln's semantics say: a dialect whose compiler
 * has no -fwrapv (D->wrap) computes them in unsigned arithmetic, where overflow is defined, so
 * its optimizer cannot assume that signed values never overflow. Floats and the C dialect
 * (compiled with -fwrapv): the plain expression. */
static void int_arith(sbuf *b, int dt, const char *a, const char *op, const char *c) {
  if (D->wrap && kn_dtype_is_int(dt)) {
    const char *U = kn_dtype_bits(dt) > 32 ? "uint64_t" : "uint32_t";
    put(b, "(%s)((%s)%s %s (%s)%s)", ctype(dt), U, a, op, U, c);
  } else
    put(b, "(%s)(%s %s %s)", ctype(dt), a, op, c);
}
static const char *stype(int dt) { return kn_stype(D, dt); }

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
    if (isnan(o->fval) || isinf(o->fval)) {
      kn_sbuf t = {0};
      D->special(&t, f32, isnan(o->fval), o->fval < 0);
      snprintf(buf, 64, "%s", t.s);
      free(t.s);
    } else
      snprintf(buf, 64, "%a%s", o->fval, f32 ? "f" : "");
  } else if (dt == KILN_U64)
    snprintf(buf, 64, "((uint64_t)%llu%s)", (unsigned long long)o->ival, D->u64_suffix);
  else if (o->ival == INT64_MIN)
    snprintf(buf, 64, "((int64_t)(-9223372036854775807%s-1))", D->i64_suffix);
  else
    snprintf(buf, 64, "((%s)%lld%s)", ctype(dt), (long long)o->ival, D->i64_suffix);
  return buf;
}

static void cast_expr(sbuf *b, int to, int from, const char *a) {
  bool fto = kiln_dtype_is_float(to), ffrom = kiln_dtype_is_float(from);
  if (to == KILN_BOOL)
    put(b, "(%s != 0)", a);
  else if (fto) {
    if (to == KILN_F16)
      put(b, "kn_rh((float)%s)", a);
    else if (to == KILN_BF16)
      put(b, "kn_rbf((float)%s)", a);
    else
      put(b, "(%s)%s", ctype(to), a);
  } else if (ffrom) {
    int bits = kn_dtype_bits(to);
    if (kn_dtype_is_unsigned(to))
      put(b, "(%s)kn_d2u((double)%s, %.17g)", ctype(to), a, ldexp(1, bits) - 1);
    else
      put(b, "(%s)kn_d2i((double)%s, %.17g, %.17g)", ctype(to), a, -ldexp(1, bits - 1),
          ldexp(1, bits - 1) - 1);
  } else
    put(b, "(%s)%s", ctype(to), a);
}

/* Bits of a value of dtype dt as the unsigned storage integer. */
static void bits_expr(sbuf *b, int dt, const char *a) {
  if (dt == KILN_F16)
    put(b, "kn_f2h(%s)", a);
  else if (dt == KILN_BF16)
    put(b, "kn_f2bf(%s)", a);
  else
    put(b, "%s", a);
}

/* Reads of each lop of the kernel being rendered (by other lops; a loop's END aside). */
static int *nuse;
static void count_uses(const kn_kernel *k) {
  nuse = kn_xcalloc((size_t)k->nops + 1, sizeof(int));
  for (int j = 0; j < k->nops; j++)
    for (int q = 0; q < 3 && k->ops[j].op != L_END; q++)
      if (k->ops[j].src[q] >= 0) nuse[k->ops[j].src[q]]++;
}

/* s + DOT4 of the u32 vectors a and c as `V v<i>` (V: W lanes of i32; s NULL: 0): the
 * dialect's instruction where the target has one, else each lane's four byte products. */
static void vec_dot4(sbuf *b, const char *V, int W, int i, const char *s, const char *a,
                     const char *c) {
  char m[32] = "", z[64];
  if (D->vec_dot4) snprintf(m, sizeof m, D->vec_dot4, W);
  if (!s) snprintf(z, sizeof z, D->vec_splat, V, "0"), s = z;
  if (*m) put(b, "\n#ifdef %s\n%s v%d = %s(%s, %s, %s);\n#else\n", m, V, i, m, s, a, c);
  put(b, "%s v%d = %s + ", V, i, s);
  for (int j = 0; j < 4; j++) {
    char x[192], y[192];
    snprintf(x, sizeof x, j < 3 ? "(%s >> %d & 255u)" : "(%s >> %d)", a, 8 * j);
    snprintf(y, sizeof y, "(%s << %d)", c, 24 - 8 * j);
    put(b, "%s", j ? " + " : "");
    put(b, D->vec_bitcast, V, x);
    put(b, " * (");
    put(b, D->vec_bitcast, V, y);
    put(b, " >> 24)");
  }
  put(b, ";\n");
  if (*m) put(b, "#endif\n");
}

/* Vector lop i is the one read of a DOT4 that it adds to its other source: the DOT4 is
 * written in it, one instruction that accumulates (where the dialect has one). Returns which
 * source (0, 1) of the add is that DOT4, or -1. */
static int folded_dot4(const kn_kernel *k, int i) {
  const kn_lop *o = &k->ops[i];
  if (!D->vec_dot4 || !o->vec || o->op != N_ADD) return -1;
  for (int s = 1; s >= 0; s--) {
    int d = o->src[s];
    if (d >= 0 && k->ops[d].op == N_DOT4 && k->ops[d].vec && nuse[d] == 1) return s;
  }
  return -1;
}

/* Lop i is a float sum (an add, or an accumulator's update) of a product read nowhere else:
 * the product is written in its statement, `acc += a * b`, `c + a * b`, which a compiler
 * fuses into one multiply-add even where it fuses only within statements (clang here: see
 * runtime/cpu.c). Returns the product's lop, or -1; *which: the source it is. */
static int folded_mul_src(const kn_kernel *k, int i, int *which) {
  const kn_lop *o = &k->ops[i];
  bool acc = o->op == L_ACCUP && o->arg == N_ADD;
  if ((!acc && o->op != N_ADD) || (o->dtype != KILN_F32 && o->dtype != KILN_F64)) return -1;
  for (int s = 1; s >= (acc ? 1 : 0); s--) {
    int m = o->src[s];
    if (m >= 0 && k->ops[m].op == N_MUL && k->ops[m].dtype == o->dtype &&
        !k->ops[m].vec == !o->vec && nuse[m] == 1) {
      *which = s;
      return m;
    }
  }
  return -1;
}
static int folded_mul(const kn_kernel *k, int i) {
  int s;
  return folded_mul_src(k, i, &s);
}
static const char *mul_expr(const kn_kernel *k, int m, char *buf, size_t n) {
  char x[64], y[64];
  snprintf(buf, n, "(%s * %s)", val(k, k->ops[m].src[0], x), val(k, k->ops[m].src[1], y));
  return buf;
}

/* Vector lop i (kn_lop.vec > 0, or an L_LANE of a vector accumulator) as one statement, given
 * its sources' spellings a, c (for L_ACC, a is the initial value) and the chunk of its lane
 * loop being written. */
static void render_vec(sbuf *b, const kn_kernel *k, int i, const char *a, const char *c,
                       int chunk) {
  const kn_lop *o = &k->ops[i];
  int dt = o->dtype, W = o->vec;
  char V[32], w16[32];
  switch (o->op) {
  case L_ACC: {
    long long n = o->arg2 / W;
    D->vec_type(V, sizeof V, dt, W);
    put(b, "%s v%d[%lld]; for (int l_ = 0; l_ < %lld; l_++) v%d[l_] = ", V, i, n, n, i);
    put(b, D->vec_splat, V, a);
    put(b, ";\n");
    return;
  }
  case L_LANE: { /* lane l of a vector accumulator: lane l % W of vector l / W */
    W = k->ops[o->src[0]].vec;
    char vq[80];
    snprintf(vq, sizeof vq, "%s[%lld]", a, (long long)(o->arg / W));
    put(b, "%s v%d = ", ctype(dt), i);
    put(b, D->vec_lane, vq, (unsigned)(o->arg % W));
    put(b, ";\n");
    return;
  }
  case L_LOAD:
    D->vec_type(V, sizeof V, k->buf_dtype[o->arg], W);
    D->vec_load(b, V, W, i, (int)o->arg, a);
    return;
  case L_ACCUP: {
    char e[160];
    int m = folded_mul(k, i);
    put(b, "v%d[%d] += %s;\n", o->src[0], chunk, m >= 0 ? mul_expr(k, m, e, sizeof e) : c);
    return;
  }
  default:
    break;
  }
  D->vec_type(V, sizeof V, dt, W);
  int f = o->op == N_ADD ? folded_dot4(k, i) : -1;
  if (o->op == N_DOT4 || f >= 0) { /* a lane-invariant operand (an activation word) splat */
    const kn_lop *d = f >= 0 ? &k->ops[o->src[f]] : o;
    char U[32], sa[128], sc[128], x[64], y[64];
    D->vec_type(U, sizeof U, KILN_U32, W);
    const char *da = val(k, d->src[0], x), *dc = val(k, d->src[1], y);
    if (!k->ops[d->src[0]].vec) snprintf(sa, sizeof sa, D->vec_splat, U, da), da = sa;
    if (!k->ops[d->src[1]].vec) snprintf(sc, sizeof sc, D->vec_splat, U, dc), dc = sc;
    vec_dot4(b, V, W, i, f < 0 ? NULL : f ? a : c, da, dc);
    return;
  }
  put(b, "%s v%d = ", V, i);
  int fs, fm = folded_mul_src(k, i, &fs);
  char e[160];
  if (fm >= 0) { /* c + a * b in one statement */
    put(b, "%s + %s;\n", fs ? a : c, mul_expr(k, fm, e, sizeof e));
    return;
  }
  static const char *const bin[] = {[N_ADD] = "+", [N_MUL] = "*",  [N_AND] = "&", [N_OR] = "|",
                                    [N_XOR] = "^", [N_SHL] = "<<", [N_SHR] = ">>"};
  switch (o->op) {
  case N_NEG:
    put(b, "-%s", a);
    break;
  case N_ADD:
  case N_MUL:
  case N_AND:
  case N_OR:
  case N_XOR:
    put(b, "%s %s %s", a, bin[o->op], c);
    break;
  case N_SHL:
  case N_SHR:
    if (kn_dtype_bits(dt) == 8 && D->vec_shift_bytes_as_16) {
      int wdt = kn_dtype_is_unsigned(dt) ? KILN_U16 : KILN_I16;
      sbuf t = {0};
      D->vec_type(w16, sizeof w16, wdt, W);
      D->vec_convert(&t, w16, wdt, dt, W, a);
      put(&t, " %s (%s & 7)", bin[o->op], c);
      D->vec_convert(b, V, dt, wdt, W, t.s);
      free(t.s);
    } else
      put(b, "%s %s (%s & %d)", a, bin[o->op], c, kn_dtype_bits(dt) - 1);
    break;
  case N_BITCAST:
    put(b, D->vec_bitcast, V, a);
    break;
  case N_CAST:
    D->vec_convert(b, V, dt, k->ops[o->src[0]].dtype, W, a);
    break;
  default:
    KN_ASSERT(0, "%s: op %d has no vector spelling", D->name, o->op);
  }
  put(b, ";\n");
}

char *kn_render(const kn_dialect *dialect, const kn_kernel *k) {
  D = dialect;
  sbuf b = {0};
  put(&b, "%s\n%s\n%s\n", D->prelude, KN_STRINGIFY(KN_PRELUDE_BODY), D->postlude);
  D->signature(&b, k);
  int opened = 0; /* blocks the launch indices opened */
  /* vector lane loops (codegen marked them: kn_lop.vec), written in chunks of W lanes */
  int W = 0;
  for (int i = 0; i < k->nops; i++)
    if (k->ops[i].vec) W = k->ops[i].vec;
  if (W) {
    KN_ASSERT(D->vec_type, "%s has no vector types", D->name);
    if (D->vec_decls) D->vec_decls(&b, W);
  }
  count_uses(k);
  bool *folded = kn_xcalloc((size_t)k->nops + 1, sizeof(bool)); /* written in their reader */
  for (int i = 0; i < k->nops; i++) {
    int f = folded_dot4(k, i), m = folded_mul(k, i);
    if (f >= 0) folded[k->ops[i].src[f]] = true;
    if (m >= 0) folded[m] = true;
  }
  int vloop = -1, chunk = 0; /* the lane loop being written, and its chunk */
  int depth = 1;
  char x[64], y[64], z[64];
  for (int i = 0; i < k->nops; i++) {
    const kn_lop *o = &k->ops[i];
    int dt = o->dtype;
    const char *T = ctype(dt);
    if (o->op == L_RANGE && o->vec) { /* the lane loop: one pass per chunk of W lanes */
      put(&b, "%*s{ const long v%d = %lld;\n", depth * 2, "", i, (long long)(chunk * W));
      vloop = i;
      depth++;
      continue;
    }
    if (o->op == L_END && o->src[0] == vloop) {
      depth--;
      put(&b, "%*s}\n", depth * 2, "");
      if (++chunk * W < k->ops[vloop].arg)
        i = vloop - 1; /* the next chunk */
      else
        vloop = -1, chunk = 0;
      continue;
    }
    if (folded[i]) continue;
    if (o->vec || (o->op == L_LANE && k->ops[o->src[0]].vec)) { /* a vector value */
      kn_lop init = {.op = L_CONST, .dtype = dt, .ival = o->ival, .fval = o->fval};
      const char *va = o->op == L_ACC   ? val(&(kn_kernel){.ops = &init}, 0, x)
                       : o->src[0] >= 0 ? val(k, o->src[0], x)
                                        : "";
      const char *vb = o->src[1] >= 0 ? val(k, o->src[1], y) : "";
      put(&b, "%*s", depth * 2, "");
      render_vec(&b, k, i, va, vb, chunk);
      continue;
    }
    const char *a = o->src[0] >= 0 ? val(k, o->src[0], x) : "";
    const char *c1 = o->src[1] >= 0 ? val(k, o->src[1], y) : "";
    const char *c2 = o->src[2] >= 0 ? val(k, o->src[2], z) : "";
    if (o->op == L_CONST) continue;
    put(&b, "%*s", depth * 2, "");
    int sdt = o->src[0] >= 0 ? k->ops[o->src[0]].dtype : dt;
    bool fl = kiln_dtype_is_float(dt), f32 = kn_compute_dtype(dt) == KILN_F32;
    switch (o->op) {
    case L_GIDX: {
      int n = D->gidx(&b, k, i);
      opened += n, depth += n;
      break;
    }
    case L_GROUP:
    case L_LIDX:
      KN_ASSERT(D->group_id[0] && o->ival < 3, "%s has no work-groups", D->name);
      put(&b, "const %s v%d = (%s)%s;\n", T, i, T,
          (o->op == L_GROUP ? D->group_id : D->local_id)[o->ival]);
      break;
    case L_DEFLOCAL:
      put(&b, "%s %s v%d[%lld];\n", D->local_decl, T, i, (long long)o->arg);
      break;
    case L_LOCSTORE:
      put(&b, "%s[%s] = %s;\n", a, c1, c2);
      break;
    case L_LOCLOAD:
      put(&b, "%s v%d = %s[%s];\n", T, i, a, c1);
      break;
    case L_BARRIER:
      put(&b, "%s\n", D->barrier);
      break;
    case L_RANGE:
      if (o->src[0] >= 0)
        put(&b, "for (%s v%d = 0; v%d < (%s ? %lld : 0); v%d++) {\n", T, i, i, a, (long long)o->arg,
            i);
      else
        put(&b, "for (%s v%d = 0; v%d < %lld; v%d++) {\n", T, i, i, (long long)o->arg, i);
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
      if (bdt == KILN_F16)
        put(&b, "kn_h2f(%s);\n", e);
      else if (bdt == KILN_BF16)
        put(&b, "kn_bf2f(%s);\n", e);
      else
        put(&b, "%s;\n", e);
      break;
    }
    case L_STORE:
      if (o->src[2] >= 0) put(&b, "if (%s) ", c2);
      put(&b, "b%lld[%s] = ", (long long)o->arg, a);
      if (dt == KILN_F16)
        put(&b, "kn_f2h(%s);\n", c1);
      else if (dt == KILN_BF16)
        put(&b, "kn_f2bf(%s);\n", c1);
      else
        put(&b, "%s;\n", c1);
      break;
    case L_ACC: {
      kn_lop cst = {.op = L_CONST, .dtype = dt, .ival = o->ival, .fval = o->fval};
      kn_kernel tmp = {.ops = &cst};
      char ib[64];
      if (o->arg2 > 1)
        put(&b, "%s v%d[%lld]; for (int l_ = 0; l_ < %lld; l_++) v%d[l_] = %s;\n", T, i,
            (long long)o->arg2, (long long)o->arg2, i, val(&tmp, 0, ib));
      else
        put(&b, "%s v%d = %s;\n", T, i, val(&tmp, 0, ib));
      break;
    }
    case L_ACCUP: {
      char acc[64], e[160];
      int m = folded_mul(k, i);
      if (m >= 0) c1 = mul_expr(k, m, e, sizeof e);
      if (o->src[2] >= 0)
        snprintf(acc, sizeof acc, "%s[%s]", a, c2);
      else
        snprintf(acc, sizeof acc, "%s", a);
      if (o->arg == N_ADD || o->arg == N_MUL) {
        put(&b, "%s = ", acc);
        int_arith(&b, dt, acc, o->arg == N_ADD ? "+" : "*", c1);
        put(&b, ";\n");
      } else if (fl)
        put(&b, "%s = kn_max%s(%s, %s);\n", acc, f32 ? "f" : "d", acc, c1);
      else
        put(&b, "%s = %s > %s ? %s : %s;\n", acc, acc, c1, acc, c1);
      break;
    }
    case L_LANE:
      put(&b, "%s v%d = %s[%lld];\n", T, i, a, (long long)o->arg);
      break;
    default: {
      if (o->op == N_BITCAST) { /* the storage bits of one type read as another's, via a union */
        put(&b, "%s v%d; { union { %s s; %s r; } u_; u_.s = ", T, i, stype(sdt), stype(dt));
        bits_expr(&b, sdt, a);
        if (dt == KILN_F16)
          put(&b, "; v%d = kn_h2f(u_.r); }\n", i);
        else if (dt == KILN_BF16)
          put(&b, "; v%d = kn_bf2f(u_.r); }\n", i);
        else
          put(&b, "; v%d = u_.r; }\n", i);
        break;
      }
      put(&b, "%s v%d = ", T, i);
      const char *fs = f32 ? D->f32_math : "";
      switch (o->op) {
      case N_NEG:
        if (fl)
          put(&b, "-%s;\n", a);
        else
          int_arith(&b, dt, "0", "-", a), put(&b, ";\n");
        break;
      case N_EXP2:
        put(&b, f32 ? "kn_exp2f(%s);\n" : "exp2(%s);\n", a);
        break;
      case N_LOG2:
        put(&b, "log2%s(%s);\n", fs, a);
        break;
      case N_SIN:
        put(&b, "sin%s(%s);\n", fs, a);
        break;
      case N_SQRT:
        put(&b, "sqrt%s(%s);\n", fs, a);
        break;
      case N_RECIP:
        put(&b, "1.0%s / %s;\n", f32 ? "f" : "", a);
        break;
      case N_CAST:
        cast_expr(&b, dt, sdt, a);
        put(&b, ";\n");
        break;
      case N_ADD:
      case N_MUL: {
        int fs, fm = folded_mul_src(k, i, &fs);
        char e[160];
        if (fm >= 0) /* c + a * b in one statement */
          int_arith(&b, dt, fs ? a : c1, "+", mul_expr(k, fm, e, sizeof e));
        else
          int_arith(&b, dt, a, o->op == N_ADD ? "+" : "*", c1);
        put(&b, ";\n");
        break;
      }
      case N_MAX:
        if (fl)
          put(&b, "kn_max%s(%s, %s);\n", f32 ? "f" : "d", a, c1);
        else
          put(&b, "%s > %s ? %s : %s;\n", a, c1, a, c1);
        break;
      case N_CMPLT:
        put(&b, "%s < %s;\n", a, c1);
        break;
      case N_CMPNE:
        put(&b, "%s != %s;\n", a, c1);
        break;
      case N_IDIV:
      case N_MOD: {
        bool isdiv = o->op == N_IDIV;
        const kn_lop *d = &k->ops[o->src[1]];
        if (d->op == L_CONST && d->ival > 0)
          put(&b, "%s %s %s;\n", a, isdiv ? "/" : "%", c1);
        else if (kn_dtype_is_unsigned(dt))
          put(&b, "(%s)kn_u%s(%s, %s);\n", T, isdiv ? "div" : "mod", a, c1);
        else
          put(&b, "(%s)kn_i%s(%s, %s);\n", T, isdiv ? "div" : "mod", a, c1);
        break;
      }
      case N_AND:
        put(&b, "(%s)(%s & %s);\n", T, a, c1);
        break;
      case N_OR:
        put(&b, "(%s)(%s | %s);\n", T, a, c1);
        break;
      case N_XOR:
        put(&b, "(%s)(%s ^ %s);\n", T, a, c1);
        break;
      case N_SHL:
        put(&b, "(%s)((uint64_t)%s << (%s & %d));\n", T, a, c1, kn_dtype_bits(dt) - 1);
        break;
      case N_SHR:
        put(&b, "(%s)(%s >> (%s & %d));\n", T, a, c1, kn_dtype_bits(dt) - 1);
        break;
      case N_DOT4:
        put(&b, "kn_dot4(%s, %s);\n", a, c1);
        break;
      case N_WHERE:
        put(&b, "%s ? %s : %s;\n", a, c1, c2);
        break;
      default:
        KN_ASSERT(0, "C renderer: no syntax for op %d", o->op);
      }
    }
    }
  }
  while (opened--)
    put(&b, "%*s}\n", --depth * 2, "");
  put(&b, "}\n");
  free(folded), free(nuse);
  nuse = NULL;
  return b.s;
}
