/* prelude.h — scalar helpers with kiln's exact semantics (half conversion, safe integer
 * division, saturating float->int casts, NaN-propagating max, and an f32 exp2 that the
 * compiler vectorizes: a degree-6 polynomial on [-1/2, 1/2] scaled by two powers of two, within
 * 2.1e-7 relative of the exact value). The same text is compiled into the library (interpreter,
 * host reads) and pasted at the top of every generated C kernel, so both sides agree bit for
 * bit. No preprocessor lines or comments may appear inside. */
#ifndef KN_PRELUDE_H
#define KN_PRELUDE_H
#include <math.h>
#include <stdint.h>

#define KN_PRELUDE(...) __VA_ARGS__
#define KN_STRINGIFY_(...) #__VA_ARGS__
#define KN_STRINGIFY(...) KN_STRINGIFY_(__VA_ARGS__)
#define KN_PRELUDE_BODY                                                                          \
  typedef union { float f; uint32_t u; } kn_fu;                                                 \
  static inline float kn_h2f(uint16_t h) {                                                      \
    uint32_t s = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;            \
    kn_fu r;                                                                                    \
    if (e == 0) {                                                                               \
      float v = (float)m * 5.9604644775390625e-8f;                                               \
      r.f = v; r.u |= s; return r.f;                                                            \
    }                                                                                           \
    if (e == 31) r.u = s | 0x7f800000u | (m << 13);                                             \
    else r.u = s | ((e + 112) << 23) | (m << 13);                                               \
    return r.f;                                                                                 \
  }                                                                                             \
  static inline uint16_t kn_f2h(float f) {                                                      \
    kn_fu v; v.f = f;                                                                           \
    uint32_t x = v.u, s = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;                             \
    if (ax >= 0x7f800000u) return (uint16_t)(s | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));    \
    if (ax >= 0x477ff000u) return (uint16_t)(s | 0x7c00);                                      \
    if (ax < 0x38800000u) {                                                                     \
      kn_fu a; a.u = ax;                                                                        \
      float q = a.f * 16777216.0f;                                                              \
      uint32_t m = (uint32_t)q; float fr = q - (float)m;                                        \
      if (fr > 0.5f || (fr == 0.5f && (m & 1))) m++;                                            \
      return (uint16_t)(s | m);                                                                 \
    }                                                                                           \
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1);                                                \
    return (uint16_t)(s | ((r - 0x38000000u) >> 13));                                           \
  }                                                                                             \
  static inline float kn_bf2f(uint16_t b) { kn_fu r; r.u = (uint32_t)b << 16; return r.f; }   \
  static inline uint16_t kn_f2bf(float f) {                                                     \
    kn_fu v; v.f = f;                                                                           \
    if ((v.u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((v.u >> 16) | 0x40);              \
    return (uint16_t)((v.u + 0x7fffu + ((v.u >> 16) & 1)) >> 16);                               \
  }                                                                                             \
  static inline int32_t kn_dot4(uint32_t a, uint32_t b) {                                      \
    return (int32_t)(a & 255) * ((int32_t)(b << 24) >> 24) +                                    \
           (int32_t)(a >> 8 & 255) * ((int32_t)(b << 16) >> 24) +                               \
           (int32_t)(a >> 16 & 255) * ((int32_t)(b << 8) >> 24) +                               \
           (int32_t)(a >> 24) * ((int32_t)b >> 24);                                             \
  }                                                                                             \
  static inline float kn_rh(float f) { return kn_h2f(kn_f2h(f)); }                              \
  static inline float kn_rbf(float f) { return kn_bf2f(kn_f2bf(f)); }                           \
  static inline float kn_maxf(float a, float b) { return (a != a || a > b) ? a : b; }           \
  static inline double kn_maxd(double a, double b) { return (a != a || a > b) ? a : b; }        \
  static inline int64_t kn_d2i(double d, double lo, double hi) {                                \
    if (d != d) return 0;                                                                       \
    if (d <= lo) return (int64_t)lo;                                                            \
    if (d >= hi) return d >= 9.2233720368547758e18 ? INT64_MAX : (int64_t)hi;                  \
    return (int64_t)d;                                                                          \
  }                                                                                             \
  static inline uint64_t kn_d2u(double d, double hi) {                                          \
    if (d != d || d <= 0) return 0;                                                             \
    if (d >= hi) return d >= 1.8446744073709552e19 ? UINT64_MAX : (uint64_t)hi;                \
    return (uint64_t)d;                                                                         \
  }                                                                                             \
  static inline int64_t kn_idiv(int64_t a, int64_t b) {                                         \
    return b == 0 ? 0 : (b == -1 ? (int64_t)(0 - (uint64_t)a) : a / b);                         \
  }                                                                                             \
  static inline int64_t kn_imod(int64_t a, int64_t b) { return (b == 0 || b == -1) ? 0 : a % b; } \
  static inline uint64_t kn_udiv(uint64_t a, uint64_t b) { return b ? a / b : 0; }             \
  static inline uint64_t kn_umod(uint64_t a, uint64_t b) { return b ? a % b : 0; }             \
  static inline float kn_exp2f(float x) {                                                     \
    float c = x < -150.0f ? -150.0f : (x > 128.0f ? 128.0f : x);                              \
    c = c == c ? c : 0.0f;                                                                    \
    float k = __builtin_rintf(c), f = c - k, p = 1.5403530393381606e-4f;                      \
    p = __builtin_fmaf(p, f, 1.3333558146428443e-3f);                                         \
    p = __builtin_fmaf(p, f, 9.6181291076284772e-3f);                                         \
    p = __builtin_fmaf(p, f, 5.5504108664821580e-2f);                                         \
    p = __builtin_fmaf(p, f, 2.4022650695910071e-1f);                                         \
    p = __builtin_fmaf(p, f, 6.9314718055994531e-1f);                                         \
    p = __builtin_fmaf(p, f, 1.0f);                                                           \
    int32_t ki = (int32_t)k, k1 = ki / 2, k2 = ki - k1;                                       \
    kn_fu s1, s2;                                                                             \
    s1.u = (uint32_t)(k1 + 127) << 23;                                                        \
    s2.u = (uint32_t)(k2 + 127) << 23;                                                        \
    float r = p * s1.f * s2.f;                                                                \
    return x == x ? r : x;                                                                    \
  }

KN_PRELUDE(KN_PRELUDE_BODY)

#endif
