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

/* ---- lane loops as vector code ----------------------------------------------------------
 * The innermost loop of a SPLIT reduce (its ACCUP indexes an accumulator array by the loop
 * variable) reads consecutive elements into independent lanes. When every op in it is lane-wise
 * and every load walks memory with stride 1, the loop is written once with GCC vector types:
 * the same per-lane arithmetic, so results equal the scalar loop's, but the compiler no longer
 * has to discover the vectors (it did, at half width, and not for every loop). */
static bool vec_type_ok(int dt) { return dt != KILN_BOOL && dt != KILN_F16 && dt != KILN_BF16; }
static bool vec_loop(const kn_kernel *k, int r, bool *vary, int64_t *stride) {
  int end = (int)k->ops[r].arg2;
  if (k->ops[r].arg > 16) return false;
  bool has_lane_acc = false;
  for (int j = r; j < end; j++) {
    const kn_lop *o = &k->ops[j];
    vary[j] = j == r;
    stride[j] = j == r ? 1 : 0;
    for (int q = 0; q < 3; q++)
      if (o->src[q] >= 0 && o->src[q] >= r && o->src[q] < end && vary[o->src[q]]) vary[j] = true;
    if (j == r || !vary[j]) continue;
    const kn_lop *s0 = o->src[0] >= 0 ? &k->ops[o->src[0]] : NULL;
    bool v0 = o->src[0] >= r && vary[o->src[0]],
         v1 = o->src[1] >= r && o->src[1] < end && vary[o->src[1]];
    if (o->op == L_ACCUP) {
      if (o->src[2] != r || o->arg != N_ADD || !vec_type_ok(o->dtype) || v0) return false;
      has_lane_acc = true;
      continue;
    }
    if (o->op == L_LOAD) {
      if (o->src[1] >= 0 || stride[o->src[0]] != 1 || !vec_type_ok(k->buf_dtype[o->arg]))
        return false;
      continue;
    }
    if (o->op == L_RANGE || o->op == L_STORE || o->op == L_ACC || o->op == L_LANE || o->op == L_END)
      return false;
    bool idx = o->dtype == KILN_I64 && (!s0 || s0->dtype == KILN_I64);
    if (idx) { /* index math: affine in the lane, used only by loads and more index math */
      for (int q = 0; q < 2; q++) /* its varying sources must be index math too */
        if (o->src[q] >= r && o->src[q] < end && vary[o->src[q]] && o->src[q] != r &&
            !(k->ops[o->src[q]].dtype == KILN_I64 && k->ops[o->src[q]].op != L_LOAD &&
              k->ops[o->src[q]].op != N_CAST && k->ops[o->src[q]].op != N_BITCAST))
          return false;
      if (o->op == N_ADD)
        stride[j] = (v0 ? stride[o->src[0]] : 0) + (v1 ? stride[o->src[1]] : 0);
      else if (o->op == N_MUL && !v1 && k->ops[o->src[1]].op == L_CONST)
        stride[j] = stride[o->src[0]] * k->ops[o->src[1]].ival;
      else
        return false;
      continue;
    }
    for (int q = 0; q < 3; q++) /* a lane-varying index may not be used as a value */
      if (o->src[q] >= r && o->src[q] < end && vary[o->src[q]] && o->src[q] != r &&
          k->ops[o->src[q]].dtype == KILN_I64 && k->ops[o->src[q]].op != L_LOAD)
        return false;
    if (o->src[0] == r || o->src[1] == r || !vec_type_ok(o->dtype) ||
        (s0 && !vec_type_ok(s0->dtype)))
      return false;
    switch (o->op) {
    case N_NEG:
    case N_ADD:
    case N_MUL:
    case N_AND:
    case N_OR:
    case N_XOR:
      break;
    case N_SHL:
    case N_SHR:
      if (v1) return false;
      break; /* shifts by a per-loop amount only */
    case N_BITCAST:
      if (kn_dtype_bits(o->dtype) != kn_dtype_bits(s0->dtype)) return false;
      break;
    case N_CAST:
      if (kiln_dtype_is_float(s0->dtype) && !kiln_dtype_is_float(o->dtype)) return false;
      break;
    default:
      return false;
    }
  }
  return has_lane_acc;
}
static const char *vname(int dt) {
  static const char *t[KILN_NDTYPES] = {"",       "kv_u8",  "kv_i8",  "kv_u16", "kv_i16",
                                        "kv_u32", "kv_i32", "kv_u64", "kv_i64", "",
                                        "",       "kv_f32", "kv_f64"};
  return t[dt];
}

char *kn_render(const kn_dialect *dialect, const kn_kernel *k) {
  D = dialect;
  sbuf b = {0};
  put(&b, "%s\n%s\n%s\n", D->prelude, KN_STRINGIFY(KN_PRELUDE_BODY), D->postlude);
  D->signature(&b, k);
  int opened = 0; /* blocks the launch indices opened */
  /* lane loops written as vector code, and the accumulators they update */
  bool *vary = kn_xcalloc((size_t)k->nops + 1, sizeof(bool)),
       *vecacc = kn_xcalloc((size_t)k->nops + 1, sizeof(bool));
  bool *vecloop = kn_xcalloc((size_t)k->nops + 1, sizeof(bool)),
       *invec = kn_xcalloc((size_t)k->nops + 1, sizeof(bool));
  int64_t *stride = kn_xcalloc((size_t)k->nops + 1, sizeof(int64_t)), lanes = 0;
  for (int i = 0; i < k->nops; i++)
    if (D->lane_vectors && k->ops[i].op == L_RANGE && vec_loop(k, i, vary, stride)) {
      vecloop[i] = true, lanes = k->ops[i].arg;
      for (int j = i; j < k->ops[i].arg2; j++) {
        invec[j] = vary[j];
        if (k->ops[j].op == L_ACCUP && k->ops[j].src[2] == i) vecacc[k->ops[j].src[0]] = true;
      }
    }
  /* lanes are written in chunks of W: eight f32 lanes fill an AVX register; wider GCC vectors
   * are split by the compiler through memory */
  int64_t W = lanes < 8 ? lanes : 8;
  if (lanes) {
    static const int vdt[] = {KILN_U8,  KILN_I8,  KILN_U16, KILN_I16, KILN_U32,
                              KILN_I32, KILN_U64, KILN_I64, KILN_F32, KILN_F64};
    for (size_t t = 0; t < sizeof vdt / sizeof *vdt; t++)
      put(&b, "  typedef %s %s __attribute__((vector_size(%lld)));\n", ctype(vdt[t]), vname(vdt[t]),
          (long long)(W * (int64_t)kiln_dtype_size(vdt[t])));
  }
  int vloop = -1, chunk = 0; /* the lane loop being written, and its chunk */
  int depth = 1;
  char x[64], y[64], z[64];
  for (int i = 0; i < k->nops; i++) {
    const kn_lop *o = &k->ops[i];
    int dt = o->dtype;
    const char *T = ctype(dt);
    if (vecloop[i]) { /* the lane loop: one pass per chunk of W lanes, with vector values */
      put(&b, "%*s{ const long v%d = %lld;\n", depth * 2, "", i, (long long)(chunk * W));
      vloop = i;
      depth++;
      continue;
    }
    if (o->op == L_END && o->src[0] == vloop) {
      depth--;
      put(&b, "%*s}\n", depth * 2, "");
      if (++chunk * W < lanes)
        i = vloop - 1; /* the next chunk */
      else
        vloop = -1, chunk = 0;
      continue;
    }
    if (invec[i] && o->op != L_LOAD && o->op != L_ACCUP &&
        !(dt == KILN_I64 && o->op != N_CAST && o->op != N_BITCAST)) {
      const char *va = o->src[0] >= 0 ? val(k, o->src[0], x) : "";
      const char *vb = o->src[1] >= 0 ? val(k, o->src[1], y) : "";
      const char *V = vname(dt);
      put(&b, "%*s%s v%d = ", depth * 2, "", V, i);
      switch (o->op) {
      case N_NEG:
        put(&b, "-%s;\n", va);
        break;
      case N_ADD:
        put(&b, "%s + %s;\n", va, vb);
        break;
      case N_MUL:
        put(&b, "%s * %s;\n", va, vb);
        break;
      case N_AND:
        put(&b, "%s & %s;\n", va, vb);
        break;
      case N_OR:
        put(&b, "%s | %s;\n", va, vb);
        break;
      case N_XOR:
        put(&b, "%s ^ %s;\n", va, vb);
        break;
      case N_SHL:
      case N_SHR: { /* x86 has no byte shifts: shift 8-bit lanes as 16-bit ones */
        const char *sh = o->op == N_SHL ? "<<" : ">>";
        if (kn_dtype_bits(dt) == 8) {
          const char *W = dt == KILN_U8 ? "kv_u16" : "kv_i16";
          put(&b, "__builtin_convertvector(__builtin_convertvector(%s, %s) %s (%s & 7), %s);\n", va,
              W, sh, vb, V);
        } else
          put(&b, "%s %s (%s & %d);\n", va, sh, vb, kn_dtype_bits(dt) - 1);
        break;
      }
      case N_BITCAST:
        put(&b, "(%s)%s;\n", V, va);
        break;
      case N_CAST: { /* widen step by step (8 -> 16 -> 32 bits, then to float): each step is one
                        extend instruction, where GCC converts lane by lane otherwise */
        int from = k->ops[o->src[0]].dtype;
        const char *steps[3];
        int ns = 0;
        if (!kiln_dtype_is_float(from) && kn_dtype_bits(from) == 8 && kn_dtype_bits(dt) > 16)
          steps[ns++] = kn_dtype_is_unsigned(from) ? "kv_u16" : "kv_i16", from = KILN_I16;
        if (kiln_dtype_is_float(dt) && !kiln_dtype_is_float(from) && kn_dtype_bits(from) < 32)
          steps[ns++] = "kv_i32";
        steps[ns++] = V;
        for (int q = 0; q < ns; q++)
          put(&b, "__builtin_convertvector(");
        put(&b, "%s", va);
        for (int q = 0; q < ns; q++)
          put(&b, ", %s)", steps[q]);
        put(&b, ";\n");
        break;
      }
      default:
        KN_ASSERT(0, "C renderer: op %d in a vector lane loop", o->op);
      }
      continue;
    }
    if (invec[i] && o->op == L_LOAD) {
      put(&b, "%*s%s v%d; __builtin_memcpy(&v%d, &b%lld[%s], sizeof v%d);\n", depth * 2, "",
          vname(k->buf_dtype[o->arg]), i, i, (long long)o->arg, val(k, o->src[0], x), i);
      continue;
    }
    if (invec[i] && o->op == L_ACCUP) {
      put(&b, "%*sv%d[%d] += %s;\n", depth * 2, "", o->src[0], chunk, val(k, o->src[1], y));
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
      put(&b, "const int64_t v%d = (int64_t)%s;\n", i,
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
      put(&b, "for (int64_t v%d = 0; v%d < %lld; v%d++) {\n", i, i, (long long)o->arg, i);
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
      if (vecacc[i])
        put(&b, "%s v%d[%lld]; for (int l_ = 0; l_ < %lld; l_++) v%d[l_] = (%s){0} + %s;\n",
            vname(dt), i, (long long)(o->arg2 / W), (long long)(o->arg2 / W), i, vname(dt),
            val(&tmp, 0, ib));
      else if (o->arg2 > 1)
        put(&b, "%s v%d[%lld]; for (int l_ = 0; l_ < %lld; l_++) v%d[l_] = %s;\n", T, i,
            (long long)o->arg2, (long long)o->arg2, i, val(&tmp, 0, ib));
      else
        put(&b, "%s v%d = %s;\n", T, i, val(&tmp, 0, ib));
      break;
    }
    case L_ACCUP: {
      char acc[64];
      if (o->src[2] >= 0)
        snprintf(acc, sizeof acc, "%s[%s]", a, c2);
      else
        snprintf(acc, sizeof acc, "%s", a);
      if (o->arg == N_ADD)
        put(&b, "%s = %s + %s;\n", acc, acc, c1);
      else if (o->arg == N_MUL)
        put(&b, "%s = %s * %s;\n", acc, acc, c1);
      else if (fl)
        put(&b, "%s = kn_max%s(%s, %s);\n", acc, f32 ? "f" : "d", acc, c1);
      else
        put(&b, "%s = %s > %s ? %s : %s;\n", acc, acc, c1, acc, c1);
      break;
    }
    case L_LANE:
      if (vecacc[o->src[0]])
        put(&b, "%s v%d = %s[%lld][%lld];\n", T, i, a, (long long)(o->arg / W),
            (long long)(o->arg % W));
      else
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
        put(&b, fl ? "-%s;\n" : "(%s)(0 - %s);\n", fl ? a : T, a);
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
        put(&b, "(%s)(%s + %s);\n", T, a, c1);
        break;
      case N_MUL:
        put(&b, "(%s)(%s * %s);\n", T, a, c1);
        break;
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
  free(vary), free(vecacc), free(vecloop), free(invec), free(stride);
  return b.s;
}
