/* interp.c — the INTERP device: executes the linear low-level program directly. It is the
 * executable definition of kiln's semantics and the oracle the compiled backends are tested
 * against; it mirrors the C renderer op for op, using the same prelude helpers. */
#include "internal.h"
#include "render/prelude.h"
#include <math.h>

typedef union {
  double f;
  int64_t i;
  uint64_t u;
} val;

/* Truncates an integer result to dt's width (sign- or zero-extending back to 64 bits). */
static int64_t wrapi(int dt, uint64_t v) {
  switch (dt) {
  case KILN_BOOL:
    return v != 0;
  case KILN_U8:
    return (uint8_t)v;
  case KILN_I8:
    return (int8_t)v;
  case KILN_U16:
    return (uint16_t)v;
  case KILN_I16:
    return (int16_t)v;
  case KILN_U32:
    return (uint32_t)v;
  case KILN_I32:
    return (int32_t)v;
  default:
    return (int64_t)v;
  }
}
static double roundf_dt(int dt, double v) {
  return kn_compute_dtype(dt) == KILN_F32 ? (double)(float)v : v;
}

static val load(const void *p, int dt, int64_t i) {
  val r;
  switch (dt) {
  case KILN_BOOL:
    r.i = ((const uint8_t *)p)[i] != 0;
    break;
  case KILN_U8:
    r.i = ((const uint8_t *)p)[i];
    break;
  case KILN_I8:
    r.i = ((const int8_t *)p)[i];
    break;
  case KILN_U16:
    r.i = ((const uint16_t *)p)[i];
    break;
  case KILN_I16:
    r.i = ((const int16_t *)p)[i];
    break;
  case KILN_U32:
    r.i = ((const uint32_t *)p)[i];
    break;
  case KILN_I32:
    r.i = ((const int32_t *)p)[i];
    break;
  case KILN_U64:
    r.u = ((const uint64_t *)p)[i];
    break;
  case KILN_I64:
    r.i = ((const int64_t *)p)[i];
    break;
  case KILN_F16:
    r.f = kn_h2f(((const uint16_t *)p)[i]);
    break;
  case KILN_BF16:
    r.f = kn_bf2f(((const uint16_t *)p)[i]);
    break;
  case KILN_F32:
    r.f = ((const float *)p)[i];
    break;
  default:
    r.f = ((const double *)p)[i];
    break;
  }
  return r;
}
static void store(void *p, int dt, int64_t i, val v) {
  switch (dt) {
  case KILN_BOOL:
  case KILN_U8:
  case KILN_I8:
    ((uint8_t *)p)[i] = (uint8_t)v.u;
    break;
  case KILN_U16:
  case KILN_I16:
    ((uint16_t *)p)[i] = (uint16_t)v.u;
    break;
  case KILN_U32:
  case KILN_I32:
    ((uint32_t *)p)[i] = (uint32_t)v.u;
    break;
  case KILN_U64:
  case KILN_I64:
    ((uint64_t *)p)[i] = v.u;
    break;
  case KILN_F16:
    ((uint16_t *)p)[i] = kn_f2h((float)v.f);
    break;
  case KILN_BF16:
    ((uint16_t *)p)[i] = kn_f2bf((float)v.f);
    break;
  case KILN_F32:
    ((float *)p)[i] = (float)v.f;
    break;
  default:
    ((double *)p)[i] = v.f;
    break;
  }
}

static val cast(int to, int from, val a) {
  val r;
  bool fto = kiln_dtype_is_float(to), ffrom = kiln_dtype_is_float(from);
  if (to == KILN_BOOL)
    r.i = ffrom ? a.f != 0 : a.i != 0;
  else if (fto) {
    double d = ffrom ? a.f : kn_dtype_is_unsigned(from) ? (double)a.u : (double)a.i;
    if (to == KILN_F16)
      r.f = kn_rh((float)d);
    else if (to == KILN_BF16)
      r.f = kn_rbf((float)d);
    else if (to == KILN_F32) {
      /* int -> float converts in one rounding, as C does */
      if (!ffrom)
        r.f = kn_dtype_is_unsigned(from) ? (double)(float)a.u : (double)(float)a.i;
      else
        r.f = (float)d;
    } else
      r.f = ffrom ? d : kn_dtype_is_unsigned(from) ? (double)a.u : (double)a.i;
  } else if (ffrom) {
    int bits = kn_dtype_bits(to);
    double d = kn_compute_dtype(from) == KILN_F32 ? (double)(float)a.f : a.f;
    if (kn_dtype_is_unsigned(to))
      r.i = wrapi(to, kn_d2u(d, ldexp(1, bits) - 1));
    else
      r.i = wrapi(to, (uint64_t)kn_d2i(d, -ldexp(1, bits - 1), ldexp(1, bits - 1) - 1));
  } else
    r.i = wrapi(to, a.u);
  return r;
}

static uint64_t bits_of(int dt, val a) {
  switch (dt) {
  case KILN_F16:
    return kn_f2h((float)a.f);
  case KILN_BF16:
    return kn_f2bf((float)a.f);
  case KILN_F32: {
    float f = (float)a.f;
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
  }
  case KILN_F64:
    return a.u;
  default:
    return a.u;
  }
}
static val from_bits(int dt, uint64_t u) {
  val r;
  switch (dt) {
  case KILN_F16:
    r.f = kn_h2f((uint16_t)u);
    break;
  case KILN_BF16:
    r.f = kn_bf2f((uint16_t)u);
    break;
  case KILN_F32: {
    uint32_t w = (uint32_t)u;
    float f;
    memcpy(&f, &w, 4);
    r.f = f;
    break;
  }
  case KILN_F64:
    r.u = u;
    break;
  default:
    r.i = wrapi(dt, u);
    break;
  }
  return r;
}

static val alu(const kn_lop *o, int sdt, val a, val b, val c) {
  int dt = o->dtype;
  bool fl = kiln_dtype_is_float(dt), sfl = kiln_dtype_is_float(sdt),
       f32 = kn_compute_dtype(dt) == KILN_F32;
  bool uns = kn_dtype_is_unsigned(sdt);
  val r = {0};
  int bits = kn_dtype_bits(dt);
  switch (o->op) {
  case N_NEG:
    if (fl)
      r.f = -a.f;
    else
      r.i = wrapi(dt, 0 - a.u);
    break;
  case N_EXP2:
    r.f = f32 ? kn_exp2f((float)a.f) : exp2(a.f);
    break;
  case N_LOG2:
    r.f = f32 ? log2f((float)a.f) : log2(a.f);
    break;
  case N_SIN:
    r.f = f32 ? sinf((float)a.f) : sin(a.f);
    break;
  case N_SQRT:
    r.f = f32 ? sqrtf((float)a.f) : sqrt(a.f);
    break;
  case N_RECIP:
    r.f = f32 ? 1.0f / (float)a.f : 1.0 / a.f;
    break;
  case N_CAST:
    return cast(dt, sdt, a);
  case N_BITCAST:
    return from_bits(dt, bits_of(sdt, a));
  case N_ADD:
    if (fl)
      r.f = roundf_dt(dt, a.f + b.f);
    else
      r.i = wrapi(dt, a.u + b.u);
    break;
  case N_MUL:
    if (fl)
      r.f = roundf_dt(dt, a.f * b.f);
    else
      r.i = wrapi(dt, a.u * b.u);
    break;
  case N_MAX:
    if (fl)
      r.f = f32 ? kn_maxf((float)a.f, (float)b.f) : kn_maxd(a.f, b.f);
    else
      r = uns ? (a.u > b.u ? a : b) : (a.i > b.i ? a : b);
    break;
  case N_CMPLT:
    r.i = sfl ? a.f < b.f : uns ? a.u < b.u : a.i < b.i;
    break;
  case N_CMPNE:
    r.i = sfl ? a.f != b.f : a.i != b.i;
    break;
  case N_IDIV:
    r.i = wrapi(dt, uns ? kn_udiv(a.u, b.u) : (uint64_t)kn_idiv(a.i, b.i));
    break;
  case N_MOD:
    r.i = wrapi(dt, uns ? kn_umod(a.u, b.u) : (uint64_t)kn_imod(a.i, b.i));
    break;
  case N_AND:
    r.i = wrapi(dt, a.u & b.u);
    break;
  case N_OR:
    r.i = wrapi(dt, a.u | b.u);
    break;
  case N_XOR:
    r.i = wrapi(dt, a.u ^ b.u);
    break;
  case N_SHL:
    r.i = wrapi(dt, a.u << (b.u & (bits - 1)));
    break;
  case N_SHR:
    if (uns)
      r.i = wrapi(dt, a.u >> (b.u & (bits - 1)));
    else
      r.i = wrapi(dt, (uint64_t)(a.i >> (b.u & (bits - 1))));
    break;
  case N_DOT4:
    r.i = kn_dot4((uint32_t)a.u, (uint32_t)b.u);
    break;
  case N_WHERE:
    return a.i ? b : c;
  default:
    KN_ASSERT(0, "interpreter: unknown op %d", o->op);
  }
  return r;
}

/* Where one work-item is: its index along each launch dim, its group's, its index in the
 * group; its registers and accumulator lanes, and its group's local memory. */
typedef struct {
  int64_t gid[2 * KILN_MAX_DIMS], grp[2 * KILN_MAX_DIMS], lid[2 * KILN_MAX_DIMS];
  val *reg, *lanes, *lmem;
} witem;

/* Runs pcs [from, to) of k for one work-item (from `from` on, or the part before any launch
 * index, or one phase between barriers). */
static void exec(const kn_kernel *k, void *const *bufs, witem *w, int from, int to) {
  val *reg = w->reg, *lanes = w->lanes;
  for (int pc = from; pc < to; pc++) {
    const kn_lop *o = &k->ops[pc];
    val a = o->src[0] >= 0 ? reg[o->src[0]] : (val){0};
    switch (o->op) {
    case L_CONST:
      if (kiln_dtype_is_float(o->dtype))
        reg[pc].f = o->fval;
      else
        reg[pc].i = o->ival;
      break;
    case L_GIDX:
      reg[pc].i = w->gid[o->ival];
      break;
    case L_GROUP:
      reg[pc].i = w->grp[o->ival];
      break;
    case L_LIDX:
      reg[pc].i = w->lid[o->ival];
      break;
    case L_DEFLOCAL: { /* its elements' offset in the group's local memory */
      int64_t off = 0;
      for (int q = 0; q < pc; q++)
        if (k->ops[q].op == L_DEFLOCAL) off += k->ops[q].arg;
      reg[pc].i = off;
      break;
    }
    case L_LOCSTORE:
      KN_ASSERT(reg[o->src[1]].i >= 0 && reg[o->src[1]].i < k->ops[o->src[0]].arg,
                "local store out of bounds");
      w->lmem[a.i + reg[o->src[1]].i] = reg[o->src[2]];
      break;
    case L_LOCLOAD:
      KN_ASSERT(reg[o->src[1]].i >= 0 && reg[o->src[1]].i < k->ops[o->src[0]].arg,
                "local load out of bounds");
      reg[pc] = w->lmem[a.i + reg[o->src[1]].i];
      break;
    case L_BARRIER:
      KN_ASSERT(0, "interpreter: a barrier inside a loop");
      break;
    case L_RANGE:
      if (o->arg <= 0 || (o->src[0] >= 0 && !reg[o->src[0]].i))
        pc = (int)o->arg2; /* no trips: jump to its END, which falls through */
      else
        reg[pc].i = 0;
      break;
    case L_END:
      if (++reg[o->src[0]].i < k->ops[o->src[0]].arg) pc = o->src[0];
      break;
    case L_LOAD:
      if (o->src[1] >= 0 && !reg[o->src[1]].i)
        reg[pc] = kiln_dtype_is_float(o->dtype) ? (val){.f = 0} : (val){.i = 0};
      else {
        /* the oracle checks what compiled kernels cannot: every access inside its buffer */
        KN_ASSERT(a.i >= 0 && a.i < k->buf_numel[o->arg], "%s: lop %d loads b%lld[%lld] of %lld",
                  k->name, pc, (long long)o->arg, (long long)a.i, (long long)k->buf_numel[o->arg]);
        reg[pc] = load(bufs[o->arg], k->buf_dtype[o->arg], a.i);
      }
      break;
    case L_STORE:
      if (o->src[2] < 0 || reg[o->src[2]].i) {
        KN_ASSERT(a.i >= 0 && a.i < k->buf_numel[o->arg], "%s: lop %d stores b%lld[%lld] of %lld",
                  k->name, pc, (long long)o->arg, (long long)a.i, (long long)k->buf_numel[o->arg]);
        store(bufs[o->arg], k->buf_dtype[o->arg], a.i, reg[o->src[1]]);
      }
      break;
    case L_ACC: {
      val init = kiln_dtype_is_float(o->dtype) ? (val){.f = o->fval} : (val){.i = o->ival};
      if (o->arg2 > 1) {
        int64_t off = 0;
        for (int q = 0; q < pc; q++)
          if (k->ops[q].op == L_ACC && k->ops[q].arg2 > 1) off += k->ops[q].arg2;
        for (int64_t l = 0; l < o->arg2; l++)
          lanes[off + l] = init;
        reg[pc].i = off;
      } else
        reg[pc] = init;
      break;
    }
    case L_ACCUP: {
      kn_lop op = *o;
      op.op = (uint8_t)o->arg;
      val *acc = o->src[2] >= 0 ? &lanes[a.i + reg[o->src[2]].i] : &reg[o->src[0]];
      *acc = alu(&op, o->dtype, *acc, reg[o->src[1]], (val){0});
      break;
    }
    case L_LANE:
      reg[pc] = lanes[a.i + o->arg];
      break;
    default: {
      int sdt = o->src[0] >= 0 ? k->ops[o->src[0]].dtype : o->dtype;
      val b = o->src[1] >= 0 ? reg[o->src[1]] : (val){0},
          c = o->src[2] >= 0 ? reg[o->src[2]] : (val){0};
      reg[pc] = alu(o, sdt, a, b, c);
    }
    }
  }
}

/* A kernel with work-groups: group after group, every work-item of the group runs each phase
 * (the code between barriers) before any runs the next. Local memory starts each group
 * poisoned (NaN, or a pattern for integers), so a read of what no work-item stored shows. */
static void run_groups(const kn_kernel *k, void *const *bufs, int64_t nlanes) {
  int64_t items = 1, groups = 1, nlocal = 0, ngrp[2 * KILN_MAX_DIMS];
  for (int d = 0; d < k->nglobal; d++) {
    items *= k->local[d];
    ngrp[d] = k->global[d] / k->local[d];
    groups *= ngrp[d];
  }
  int cuts[64], ncut = 0, depth = 0; /* phase boundaries: the barriers, all outside loops */
  cuts[ncut++] = -1;
  for (int pc = 0; pc < k->nops; pc++) {
    depth += k->ops[pc].op == L_RANGE ? 1 : k->ops[pc].op == L_END ? -1 : 0;
    if (k->ops[pc].op == L_DEFLOCAL) nlocal += k->ops[pc].arg;
    if (k->ops[pc].op != L_BARRIER) continue;
    KN_ASSERT(depth == 0 && ncut < 63, "interpreter: a barrier inside a loop");
    cuts[ncut++] = pc;
  }
  cuts[ncut] = k->nops;
  val *reg = kn_xcalloc((size_t)(items * k->nops), sizeof(val));
  val *lanes = kn_xcalloc((size_t)(items * (nlanes ? nlanes : 1)), sizeof(val));
  val *lmem = kn_xmalloc(sizeof(val) * (size_t)(nlocal ? nlocal : 1));
  witem w = {0};
  for (int64_t g = 0; g < groups; g++) {
    for (int64_t q = g, d = k->nglobal - 1; d >= 0; d--)
      w.grp[d] = q % ngrp[d], q /= ngrp[d];
    for (int64_t i = 0; i < nlocal; i++)
      lmem[i].u = 0x7ff8dead5a5a5a5aull;
    for (int c = 0; c < ncut; c++)
      for (int64_t it = 0; it < items; it++) {
        for (int64_t q = it, d = k->nglobal - 1; d >= 0; d--) {
          w.lid[d] = q % k->local[d], q /= k->local[d];
          w.gid[d] = w.grp[d] * k->local[d] + w.lid[d];
        }
        w.reg = reg + it * k->nops, w.lanes = lanes + it * nlanes, w.lmem = lmem;
        exec(k, bufs, &w, cuts[c] + 1, cuts[c + 1]);
      }
  }
  free(reg), free(lanes), free(lmem);
}

/* Every work-item whose index along launch dim 0 is in [start, end), each to completion (the
 * part before the first launch index, which no work-item's index changes, once). */
void kn_interp_run(const kn_kernel *k, void *const *bufs, long start, long end) {
  if (start >= end) return;
  int64_t nlanes = 0;
  int first = k->nops;
  for (int pc = 0; pc < k->nops; pc++) {
    if (k->ops[pc].op == L_ACC && k->ops[pc].arg2 > 1) nlanes += k->ops[pc].arg2;
    if ((k->ops[pc].op == L_GIDX || k->ops[pc].op == L_GROUP) && pc < first) first = pc;
  }
  if (k->groups) {
    KN_ASSERT(start == 0 && end == k->global[0], "a kernel with work-groups runs whole");
    run_groups(k, bufs, nlanes);
    return;
  }
  /* accumulator arrays: lane storage after the registers, at an offset kept in reg[acc].i */
  witem w = {.gid = {start}, .reg = kn_xcalloc(k->nops, sizeof(val))};
  w.lanes = kn_xcalloc(nlanes ? (size_t)nlanes : 1, sizeof(val));
  exec(k, bufs, &w, 0, first);
  for (bool more = first < k->nops; more;) {
    exec(k, bufs, &w, first, k->nops);
    more = false;
    for (int d = k->nglobal - 1; d >= 0 && !more; d--) { /* the next work-item, last dim fastest */
      more = ++w.gid[d] < (d ? k->global[d] : end);
      if (!more) w.gid[d] = 0;
    }
  }
  free(w.reg);
  free(w.lanes);
}
