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
static void c_vec_type(char *out, size_t n, int dt, int W) {
  (void)W; /* declared once per kernel with the kernel's width */
  static const char *t[KILN_NDTYPES] = {"",       "kv_u8",  "kv_i8",  "kv_u16", "kv_i16",
                                        "kv_u32", "kv_i32", "kv_u64", "kv_i64", "",
                                        "",       "kv_f32", "kv_f64"};
  snprintf(out, n, "%s", t[dt]);
}
static void c_vec_decls(kn_sbuf *b, int W) {
  static const int vdt[] = {KILN_U8,  KILN_I8,  KILN_U16, KILN_I16, KILN_U32,
                            KILN_I32, KILN_U64, KILN_I64, KILN_F32, KILN_F64};
  char v[32];
  for (size_t t = 0; t < sizeof vdt / sizeof *vdt; t++) {
    c_vec_type(v, sizeof v, vdt[t], W);
    kn_sbuf_printf(b, "  typedef %s %s __attribute__((vector_size(%lld)));\n",
                   kn_ctype(&kn_dialect_c, vdt[t]), v,
                   (long long)W * (long long)kiln_dtype_size(vdt[t]));
  }
}
static void c_vec_load(kn_sbuf *b, const char *V, int W, int i, int buf, const char *idx) {
  (void)W;
  kn_sbuf_printf(b, "%s v%d; __builtin_memcpy(&v%d, &b%d[%s], sizeof v%d);\n", V, i, i, buf, idx,
                 i);
}
/* Widening goes step by step (8 -> 16 -> 32 bits, then to float): each step is one extend
 * instruction, where GCC converts lane by lane otherwise. */
static void c_vec_convert(kn_sbuf *b, const char *to, int to_dt, int from, int W, const char *a) {
  (void)W;
  const char *steps[3];
  int ns = 0;
  if (!kiln_dtype_is_float(from) && kn_dtype_bits(from) == 8 && kn_dtype_bits(to_dt) > 16)
    steps[ns++] = kn_dtype_is_unsigned(from) ? "kv_u16" : "kv_i16", from = KILN_I16;
  if (kiln_dtype_is_float(to_dt) && !kiln_dtype_is_float(from) && kn_dtype_bits(from) < 32)
    steps[ns++] = "kv_i32";
  steps[ns++] = to;
  for (int q = 0; q < ns; q++)
    kn_sbuf_printf(b, "__builtin_convertvector(");
  kn_sbuf_printf(b, "%s", a);
  for (int q = 0; q < ns; q++)
    kn_sbuf_printf(b, ", %s)", steps[q]);
}

const kn_dialect kn_dialect_c = {
    .name = "C",
    .prelude = "#include <stdint.h>\n#include <math.h>",
    /* where the compiler targets F16C, half -> float is one instruction (exact, as kn_h2f) */
    .postlude =
        "#ifdef __F16C__\ntypedef short kn_v8hi __attribute__((vector_size(16)));\n"
        "static inline float kn_h2f_hw(uint16_t h) { return "
        "__builtin_ia32_vcvtph2ps((kn_v8hi){(short)h})[0]; }\n"
        "#define kn_h2f kn_h2f_hw\n#endif\n"
        /* s + DOT4 of 4, 8 or 16 lanes in one VNNI instruction (vpdpbusd) where the target
         * has it */
        "#if (defined(__AVX512VNNI__) && defined(__AVX512VL__)) || defined(__AVXVNNI__)\n"
        "typedef int kn_i32x4 __attribute__((vector_size(16)));\n"
        "typedef int kn_i32x8 __attribute__((vector_size(32)));\n"
        "#ifdef __clang__\n"
        "#define kn_dpbusd4(s, a, b) __builtin_ia32_vpdpbusd128((kn_i32x4)(s), (kn_i32x4)(a), "
        "(kn_i32x4)(b))\n"
        "#define kn_dpbusd8(s, a, b) __builtin_ia32_vpdpbusd256((kn_i32x8)(s), (kn_i32x8)(a), "
        "(kn_i32x8)(b))\n"
        "#else\n"
        "#define kn_dpbusd4(s, a, b) __builtin_ia32_vpdpbusd_v4si((kn_i32x4)(s), (kn_i32x4)(a), "
        "(kn_i32x4)(b))\n"
        "#define kn_dpbusd8(s, a, b) __builtin_ia32_vpdpbusd_v8si((kn_i32x8)(s), (kn_i32x8)(a), "
        "(kn_i32x8)(b))\n"
        "#endif\n#endif\n"
        "#ifdef __AVX512VNNI__\n"
        "typedef int kn_i32x16 __attribute__((vector_size(64)));\n"
        "#ifdef __clang__\n"
        "#define kn_dpbusd16(s, a, b) __builtin_ia32_vpdpbusd512((kn_i32x16)(s), "
        "(kn_i32x16)(a), (kn_i32x16)(b))\n"
        "#else\n"
        "#define kn_dpbusd16(s, a, b) __builtin_ia32_vpdpbusd_v16si((kn_i32x16)(s), "
        "(kn_i32x16)(a), (kn_i32x16)(b))\n"
        "#endif\n#endif",
    .bool_type = "_Bool",
    .i64_suffix = "ll",
    .u64_suffix = "ull",
    .f32_math = "f",
    .signature = c_signature,
    .gidx = c_gidx,
    .special = c_special,
    .vec_type = c_vec_type,
    .vec_decls = c_vec_decls,
    .vec_splat = "(%s){0} + %s",
    .vec_lane = "%s[%u]",
    .vec_bitcast = "(%s)%s",
    .vec_load = c_vec_load,
    .vec_convert = c_vec_convert,
    .vec_shift_bytes_as_16 = true, /* x86 has no byte shifts */
    .vec_dot4 = "kn_dpbusd%d",
};
