/* cuda.c — the CUDA C dialect (compiled by NVRTC, which treats unmarked functions as device
 * code): a kernel is one thread of a one-dimensional launch in blocks; threads past the end of
 * the last block return at once. */
#include "render/dialect.h"

static void cuda_signature(kn_sbuf *b, const kn_kernel *k) {
  kn_sbuf_printf(b, "extern \"C\" __global__ void %s(", k->name);
  for (int i = 0; i < k->nbufs; i++)
    kn_sbuf_printf(b, "%s%s%s *__restrict__ b%d", i ? ", " : "", i ? "const " : "",
                   kn_stype(&kn_dialect_cuda, k->buf_dtype[i]), i);
  kn_sbuf_printf(b, ") {\n");
}
static int cuda_gidx(kn_sbuf *b, const kn_kernel *k, int i) {
  KN_ASSERT(k->ops[i].ival == 0, "CUDA kernels have one launch dim");
  const char *T = kn_ctype(&kn_dialect_cuda, k->ops[i].dtype);
  kn_sbuf_printf(b, "const %s v%d = (%s)(blockIdx.x * blockDim.x + threadIdx.x);\n", T, i, T);
  kn_sbuf_printf(b, "  if (v%d >= %lld) return;\n", i, (long long)k->ops[i].arg);
  return 0;
}
static void cuda_special(kn_sbuf *b, bool f32, bool nan, bool neg) {
  if (f32)
    kn_sbuf_printf(b, "__int_as_float((int)0x%cf%c00000u)", neg ? 'f' : '7', nan ? 'c' : '8');
  else
    kn_sbuf_printf(b, "__longlong_as_double((long long)0x%cff%c000000000000ull)", neg ? 'f' : '7',
                   nan ? '8' : '0');
}
const kn_dialect kn_dialect_cuda = {
    .name = "CUDA C",
    .prelude =
        "typedef unsigned char uint8_t; typedef signed char int8_t;\n"
        "typedef unsigned short uint16_t; typedef short int16_t;\n"
        "typedef unsigned int uint32_t; typedef int int32_t;\n"
        "typedef unsigned long long uint64_t; typedef long long int64_t;\n"
        "#define INT64_MAX 9223372036854775807ll\n#define UINT64_MAX 18446744073709551615ull\n"
        "#define __builtin_rintf rintf\n#define __builtin_fmaf fmaf",
    /* half -> float in one instruction (exact, as kn_h2f) */
    .postlude = "static __device__ __forceinline__ float kn_h2f_hw(uint16_t h) {\n"
                "  float f; asm(\"cvt.f32.f16 %0, %1;\" : \"=f\"(f) : \"h\"(h)); return f;\n}\n"
                "#define kn_h2f kn_h2f_hw\n"
                /* DOT4 in one instruction: bytes of a unsigned, of b signed */
                "static __device__ __forceinline__ int kn_dot4_hw(unsigned a, unsigned b) {\n"
                "  int r; asm(\"dp4a.u32.s32 %0, %1, %2, %3;\" : \"=r\"(r) : \"r\"(a), \"r\"(b), "
                "\"r\"(0)); return r;\n}\n"
                "#define kn_dot4 kn_dot4_hw",
    .bool_type = "bool",
    .i64_suffix = "ll",
    .u64_suffix = "ull",
    .f32_math = "f",
    .wrap = true,
    .signature = cuda_signature,
    .gidx = cuda_gidx,
    .special = cuda_special,
    .group_id = {"blockIdx.x", "blockIdx.y", "blockIdx.z"},
    .local_id = {"threadIdx.x", "threadIdx.y", "threadIdx.z"},
    .local_decl = "__shared__",
    .barrier = "__syncthreads();",
};
