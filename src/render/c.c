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
  if (o->ival == 0)
    kn_sbuf_printf(b, "for (int64_t v%d = start; v%d < end; v%d++) {\n", i, i, i);
  else
    kn_sbuf_printf(b, "for (int64_t v%d = 0; v%d < %lld; v%d++) {\n", i, i, (long long)o->arg, i);
  return 1;
}
static void c_special(kn_sbuf *b, bool f32, bool nan, bool neg) {
  if (nan)
    kn_sbuf_printf(b, "__builtin_nan%s(\"\")", f32 ? "f" : "");
  else
    kn_sbuf_printf(b, "(%s__builtin_inf%s())", neg ? "-" : "", f32 ? "f" : "");
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
    .lane_vectors = true,
};
