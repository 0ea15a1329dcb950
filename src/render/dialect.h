/* dialect.h — what a C-like language spells differently: the table a dialect fills in. The
 * base renderer (render.c) walks the low-level program and asks the table for the kernel's
 * signature, how an index op is written, type and literal spellings, and math names; it
 * decides nothing about structure. */
#ifndef KN_DIALECT_H
#define KN_DIALECT_H
#include "internal.h"

struct kn_dialect {
  const char *name;
  /* before the shared helper functions (render/prelude.h): includes, typedefs of the stdint
   * names, the builtins the helpers use; and after them (fast paths of the language) */
  const char *prelude, *postlude;
  const char *bool_type;               /* the compute type of bool values */
  const char *i64_suffix, *u64_suffix; /* of 64-bit integer literals */
  const char *f32_math; /* suffix of f32 math functions: "f" (sinf) or "" (overloads) */
  bool wrap; /* signed integer overflow is undefined (no -fwrapv): integer + - * go unsigned */
  /* the kernel's opening line(s) up to and including its buffer pointers b0.. */
  void (*signature)(kn_sbuf *b, const kn_kernel *k);
  /* lop i, a launch index (L_GIDX): its definition; returns the number of blocks it opened
   * (C opens a loop per launch dim), closed at the end of the kernel */
  int (*gidx)(kn_sbuf *b, const kn_kernel *k, int i);
  /* f32 / f64 NaN and infinity (sign given) as expressions */
  void (*special)(kn_sbuf *b, bool f32, bool nan, bool neg);
  /* vector values (vec_type NULL in a language without them): the name of a W-lane vector of
   * dt; declarations written once per kernel (or NULL); printf formats of a vector of type %s
   * with every lane %s, of lane %u of vector %s, and of a bitcast to type %s of %s; a load of W
   * consecutive elements of buffer buf from index idx into `V v<i>`; an expression converting
   * vector a of from-lanes to the type named to; whether 8-bit lanes shift as 16-bit ones */
  void (*vec_type)(char *out, size_t n, int dt, int W);
  void (*vec_decls)(kn_sbuf *b, int W);
  const char *vec_splat, *vec_lane, *vec_bitcast;
  void (*vec_load)(kn_sbuf *b, const char *V, int W, int i, int buf, const char *idx);
  void (*vec_convert)(kn_sbuf *b, const char *to, int to_dt, int from_dt, int W, const char *a);
  bool vec_shift_bytes_as_16;
  /* the name of a function-like macro, given the width W (printf %d), that the dialect's
   * prelude defines as s + DOT4(a, b) (s: W lanes of i32, a and b: of u32) where the target has
   * an instruction for it (or NULL) */
  const char *vec_dot4;
  /* work-groups (NULL in a language without them): the group's index and the work-item's
   * index in it along launch dims 0..2, the qualifier of local memory, the barrier */
  const char *group_id[3], *local_id[3], *local_decl, *barrier;
};

/* C type of values of dt in a kernel, and of its storage in a buffer. */
const char *kn_ctype(const kn_dialect *d, int dt);
const char *kn_stype(const kn_dialect *d, int dt);
#endif
