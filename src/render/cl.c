/* cl.c — the OpenCL C dialect: a kernel is one work-item; launch index d is get_global_id(d).
 * The stdint names are typedefs of OpenCL's sized types (long is 64 bits there). */
#include "render/dialect.h"

static void cl_signature(kn_sbuf *b, const kn_kernel *k) {
  kn_sbuf_printf(b, "__kernel void %s(", k->name);
  for (int i = 0; i < k->nbufs; i++)
    kn_sbuf_printf(b, "%s__global %s%s *restrict b%d", i ? ", " : "", i ? "const " : "",
                   kn_stype(&kn_dialect_cl, k->buf_dtype[i]), i);
  kn_sbuf_printf(b, ") {\n");
}
static int cl_gidx(kn_sbuf *b, const kn_kernel *k, int i) {
  const char *T = kn_ctype(&kn_dialect_cl, k->ops[i].dtype);
  kn_sbuf_printf(b, "const %s v%d = (%s)get_global_id(%lld);\n", T, i, T,
                 (long long)k->ops[i].ival);
  return 0;
}
static void cl_special(kn_sbuf *b, bool f32, bool nan, bool neg) {
  if (f32)
    kn_sbuf_printf(b, "as_float((uint)0x%cf%c00000u)", neg ? 'f' : '7', nan ? 'c' : '8');
  else
    kn_sbuf_printf(b, "as_double((ulong)0x%cff%c000000000000ul)", neg ? 'f' : '7', nan ? '8' : '0');
}
/* vector values: OpenCL's built-in vector types (float8, uchar16, ...) */
static void cl_vec_type(char *out, size_t n, int dt, int W) {
  static const char *t[KILN_NDTYPES] = {"",      "uchar", "char", "ushort", "short", "uint",  "int",
                                        "ulong", "long",  "",     "",       "float", "double"};
  snprintf(out, n, "%s%d", t[dt], W);
}
static void cl_vec_load(kn_sbuf *b, const char *V, int W, int i, int buf, const char *idx) {
  kn_sbuf_printf(b, "%s v%d = vload%d(0, b%d + (%s));\n", V, i, W, buf, idx);
}
static void cl_vec_convert(kn_sbuf *b, const char *to, int to_dt, int from, int W, const char *a) {
  (void)to_dt, (void)from, (void)W;
  kn_sbuf_printf(b, "convert_%s(%s)", to, a);
}
const kn_dialect kn_dialect_cl = {
    .name = "OpenCL C",
    .prelude = "#pragma OPENCL EXTENSION cl_khr_fp64 : enable\n"
               "typedef uchar uint8_t; typedef char int8_t; typedef ushort uint16_t; typedef short "
               "int16_t;\n"
               "typedef uint uint32_t; typedef int int32_t; typedef ulong uint64_t; typedef long "
               "int64_t;\n"
               "#define INT64_MAX LONG_MAX\n#define UINT64_MAX ULONG_MAX\n"
               "#define __builtin_rintf rint\n#define __builtin_fmaf fma",
    .postlude = "",
    .bool_type = "bool",
    .i64_suffix = "l",
    .u64_suffix = "ul",
    .f32_math = "",
    .wrap = true,
    .signature = cl_signature,
    .gidx = cl_gidx,
    .special = cl_special,
    .vec_type = cl_vec_type,
    .vec_splat = "(%s)(%s)",
    .vec_lane = "%s.s%x",
    .vec_bitcast = "as_%s(%s)",
    .vec_load = cl_vec_load,
    .vec_convert = cl_vec_convert,
    .group_id = {"get_group_id(0)", "get_group_id(1)", "get_group_id(2)"},
    .local_id = {"get_local_id(0)", "get_local_id(1)", "get_local_id(2)"},
    .local_decl = "__local",
    .barrier = "barrier(CLK_LOCAL_MEM_FENCE);",
};
