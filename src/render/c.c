/* c.c — the C dialect (CPU): a kernel is a function over a slice [start, end) of launch dim 0,
 * which the CPU device splits over its threads; every launch index is a loop inside it. */
#include "render/dialect.h"

static void c_signature(kn_sbuf *b, const kn_kernel *k) {
  kn_sbuf_printf(b, "void %s(void *const *bufs, long start, long end) {\n", k->name);
  for (int i = 0; i < k->nbufs; i++) {
    const char *c = i ? "const " : "", *t = kn_stype(&kn_dialect_c, k->buf_dtype[i]);
    kn_sbuf_printf(b, "  %s%s *restrict b%d = (%s%s *)bufs[%d];\n", c, t, i, c, t, i);
  }
  if (k->nglobal == 0) kn_sbuf_printf(b, "  if (start >= end) return;\n");
}
static int c_gidx(kn_sbuf *b, const kn_kernel *k, int i) {
  const kn_lop *o = &k->ops[i];
  const char *T = kn_ctype(&kn_dialect_c, o->dtype);
  if (o->ival == 0)
    kn_sbuf_printf(b, "for (%s v%d = start; v%d < end; v%d++) {\n", T, i, i, i);
  else
    kn_sbuf_printf(b, "for (%s v%d = 0; v%d < %lld; v%d++) {\n", T, i, i, (long long)o->arg, i);
  return 1;
}
static void c_special(kn_sbuf *b, bool f32, bool nan, bool neg) {
  if (nan)
    kn_sbuf_printf(b, "__builtin_nan%s(\"\")", f32 ? "f" : "");
  else
    kn_sbuf_printf(b, "(%s__builtin_inf%s())", neg ? "-" : "", f32 ? "f" : "");
}
/* ---- vector values: GCC vector types, W lanes each ---- */
static const char *vname(int dt) {
  static const char *t[KILN_NDTYPES] = {"",       "kv_u8",  "kv_i8",  "kv_u16", "kv_i16",
                                        "kv_u32", "kv_i32", "kv_u64", "kv_i64", "",
                                        "",       "kv_f32", "kv_f64"};
  return t[dt];
}
static void c_vec_types(kn_sbuf *b, int W) {
  static const int vdt[] = {KILN_U8,  KILN_I8,  KILN_U16, KILN_I16, KILN_U32,
                            KILN_I32, KILN_U64, KILN_I64, KILN_F32, KILN_F64};
  for (size_t t = 0; t < sizeof vdt / sizeof *vdt; t++)
    kn_sbuf_printf(b, "  typedef %s %s __attribute__((vector_size(%lld)));\n",
                   kn_ctype(&kn_dialect_c, vdt[t]), vname(vdt[t]),
                   (long long)W * (long long)kiln_dtype_size(vdt[t]));
}
static void c_vec(kn_sbuf *b, const kn_kernel *k, int i, const char *a, const char *c, int chunk) {
  const kn_lop *o = &k->ops[i];
  int dt = o->dtype;
  const char *V = vname(dt);
  switch (o->op) {
  case L_ACC: {
    long long n = o->arg2 / o->vec;
    kn_sbuf_printf(b, "%s v%d[%lld]; for (int l_ = 0; l_ < %lld; l_++) v%d[l_] = (%s){0} + %s;\n",
                   V, i, n, n, i, V, a);
    return;
  }
  case L_LANE: { /* lane l of a vector accumulator: element l % W of vector l / W */
    int W = k->ops[o->src[0]].vec;
    kn_sbuf_printf(b, "%s v%d = %s[%lld][%lld];\n", kn_ctype(&kn_dialect_c, dt), i, a,
                   (long long)(o->arg / W), (long long)(o->arg % W));
    return;
  }
  case L_LOAD:
    kn_sbuf_printf(b, "%s v%d; __builtin_memcpy(&v%d, &b%lld[%s], sizeof v%d);\n",
                   vname(k->buf_dtype[o->arg]), i, i, (long long)o->arg, a, i);
    return;
  case L_ACCUP:
    kn_sbuf_printf(b, "v%d[%d] += %s;\n", o->src[0], chunk, c);
    return;
  default:
    break;
  }
  kn_sbuf_printf(b, "%s v%d = ", V, i);
  switch (o->op) {
  case N_NEG:
    kn_sbuf_printf(b, "-%s;\n", a);
    break;
  case N_ADD:
    kn_sbuf_printf(b, "%s + %s;\n", a, c);
    break;
  case N_MUL:
    kn_sbuf_printf(b, "%s * %s;\n", a, c);
    break;
  case N_AND:
    kn_sbuf_printf(b, "%s & %s;\n", a, c);
    break;
  case N_OR:
    kn_sbuf_printf(b, "%s | %s;\n", a, c);
    break;
  case N_XOR:
    kn_sbuf_printf(b, "%s ^ %s;\n", a, c);
    break;
  case N_SHL:
  case N_SHR: { /* x86 has no byte shifts: shift 8-bit lanes as 16-bit ones */
    const char *sh = o->op == N_SHL ? "<<" : ">>";
    if (kn_dtype_bits(dt) == 8) {
      const char *W = dt == KILN_U8 ? "kv_u16" : "kv_i16";
      kn_sbuf_printf(b,
                     "__builtin_convertvector(__builtin_convertvector(%s, %s) %s (%s & 7), %s);\n",
                     a, W, sh, c, V);
    } else
      kn_sbuf_printf(b, "%s %s (%s & %d);\n", a, sh, c, kn_dtype_bits(dt) - 1);
    break;
  }
  case N_BITCAST:
    kn_sbuf_printf(b, "(%s)%s;\n", V, a);
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
      kn_sbuf_printf(b, "__builtin_convertvector(");
    kn_sbuf_printf(b, "%s", a);
    for (int q = 0; q < ns; q++)
      kn_sbuf_printf(b, ", %s)", steps[q]);
    kn_sbuf_printf(b, ";\n");
    break;
  }
  default:
    KN_ASSERT(0, "C dialect: op %d has no vector spelling", o->op);
  }
}

const kn_dialect kn_dialect_c = {
    .name = "C",
    .prelude = "#include <stdint.h>\n#include <math.h>",
    /* where the compiler targets F16C, half -> float is one instruction (exact, as kn_h2f) */
    .postlude = "#ifdef __F16C__\ntypedef short kn_v8hi __attribute__((vector_size(16)));\n"
                "static inline float kn_h2f_hw(uint16_t h) { return "
                "__builtin_ia32_vcvtph2ps((kn_v8hi){(short)h})[0]; }\n"
                "#define kn_h2f kn_h2f_hw\n#endif",
    .bool_type = "_Bool",
    .i64_suffix = "ll",
    .u64_suffix = "ull",
    .f32_math = "f",
    .signature = c_signature,
    .gidx = c_gidx,
    .special = c_special,
    .vec_types = c_vec_types,
    .vec = c_vec,
};
