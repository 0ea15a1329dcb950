/* vectorize.c — the last pass of lowering: writes the lane loops of a SPLIT reduce as vector
 * code. The innermost loop of a SPLIT reduce (its ACCUP indexes an accumulator array by the
 * loop variable) reads consecutive elements into independent lanes. When every op in it is
 * lane-wise and every load walks memory with stride 1, the loop and its lane-varying lops are
 * marked with a vector width W (kn_lop.vec): the loop runs in chunks of W lanes, each marked
 * lop is one W-lane vector value (a load reads W consecutive elements from the index of the
 * chunk's first lane), and the accumulator array is held as vectors. Lane by lane this is the
 * same arithmetic as the loop, so the interpreter runs it as the loop and results are equal;
 * a language with vector types writes it with them instead of leaving the compiler to find
 * the vectors. */
#include "internal.h"

static bool vec_type_ok(int dt) { return dt != KILN_BOOL && dt != KILN_F16 && dt != KILN_BF16; }

/* Whether loop r can be written as vectors; vary[j]: lop j differs between lanes, stride[j]:
 * its step per lane (index math). */
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
    case N_DOT4:
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

/* Index math stays scalar in a vector loop: it is computed for the chunk's first lane. */
static bool is_index(const kn_kernel *k, const kn_lop *o) {
  return o->dtype == KILN_I64 && o->op != N_CAST && o->op != N_BITCAST && o->op != L_LOAD &&
         o->op != L_ACCUP && (o->src[0] < 0 || k->ops[o->src[0]].dtype == KILN_I64);
}

void kn_vectorize(kn_kernel *k, int width) {
  if (width < 2) return;
  bool *vary = kn_xcalloc((size_t)k->nops + 1, sizeof(bool));
  int64_t *stride = kn_xcalloc((size_t)k->nops + 1, sizeof(int64_t));
  int W = 0; /* one width per kernel: a language declares its vector types once */
  for (int i = 0; i < k->nops; i++) {
    kn_lop *o = &k->ops[i];
    if (o->op != L_RANGE || !vec_loop(k, i, vary, stride)) continue;
    int w = (int)(o->arg < width ? o->arg : width);
    if (o->arg % w || (W && w != W)) continue;
    W = w;
    o->vec = (uint8_t)w;
    for (int j = i + 1; j < o->arg2; j++) {
      kn_lop *p = &k->ops[j];
      if (!vary[j] || is_index(k, p)) continue;
      p->vec = (uint8_t)w;
      if (p->op == L_ACCUP) k->ops[p->src[0]].vec = (uint8_t)w;
    }
  }
  free(vary), free(stride);
}
