/* lower.c — codegen: turns one scheduled kernel into a linear low-level program. Movement
 * views become index arithmetic, simplified as it is built (constant folding, div/mod rules
 * from value ranges); upcast axes are unrolled into registers; every op is placed in the
 * outermost loop it depends on. */
#include "internal.h"
#include "render/prelude.h"

typedef struct {
  kn_lop op;
  int level;       /* loop depth it must live in: 0 outside loops, 1..G globals, G+1.. reduces */
  uint8_t stage;   /* 0: before and in the reduce loops; 1: after them (reads an accumulator);
                      2: the group's combine (GROUP); 3: after it */
  int64_t lo, hi;  /* value range of integer lops */
  bool lane_const; /* LANES: the constant lane of an output index (not folded as a constant) */
} blop;

typedef struct {
  blop *b;
  int n, cap;
  int *ht; /* CSE: open-addressing table of lop indices + 1 */
  int htcap;
  int nglobal, nred;
  /* memo of lowered (node, index, valid) */
  struct memo {
    kn_node *n;
    int idx[KILN_MAX_DIMS];
    int valid, val;
  } * memo;
  int nmemo, memocap;
  int *memoht; /* hash index into memo: entry + 1 */
  size_t memohtcap;
  const kn_sched_item *it;
  int red_range[KILN_MAX_DIMS]; /* reduce loop var per axis, -1 when the axis has size 1 */
  bool red_ready;
  int64_t ncombo; /* unrolled copies of the body (upcasts) */
  int split_axis; /* reduce axis walked by `lanes` accumulator lanes (SPLIT), or -1 */
  int64_t lanes;
  int lane_range;
  int group_axis;      /* reduce axis split over the work-items of a group (GROUP), or -1 */
  int64_t group;       /* its work-items */
  int lid, comb_range; /* the work-item's index in the group; the combine loop */
  int unroll_axis;     /* reduce axis unrolled (UNROLL), or -1 */
  int64_t unroll;
  bool read_index;  /* strides (heuristic): a value read from memory counts as its address */
  int lanes_dim;    /* global dim whose outputs are accumulator lanes (LANES), or -1 */
  int cur_lane;     /* LANES: the lane of the output being lowered */
  struct lane_acc { /* LANES: a reduce lowered (its index with the lane loop's variable) */
    kn_node *n;
    int idx[KILN_MAX_DIMS], valid, acc;
  } * lane_acc;
  int nlane_acc;
  bool failed; /* an opt turned out not to apply while lowering (the error is set) */
} lb;

#define IMIN INT64_MIN
#define IMAX INT64_MAX

static uint64_t lop_hash(const kn_lop *o) {
  uint64_t h = kn_hash_bytes(0, &o->op, 2);
  h = kn_hash_bytes(h, o->src, sizeof o->src);
  h = kn_hash_bytes(h, &o->arg, sizeof o->arg);
  h = kn_hash_bytes(h, &o->ival, sizeof o->ival);
  return kn_hash_bytes(h, &o->fval, sizeof o->fval);
}
static bool lop_eq(const kn_lop *a, const kn_lop *b) {
  return a->op == b->op && a->dtype == b->dtype && !memcmp(a->src, b->src, sizeof a->src) &&
         a->arg == b->arg && a->ival == b->ival && !memcmp(&a->fval, &b->fval, sizeof a->fval);
}

static int push(lb *L, kn_lop o, int level, int stage, int64_t lo, int64_t hi, bool cse) {
  uint64_t h = 0;
  if (cse) {
    if (L->n * 2 >= L->htcap) { /* grow and rehash */
      free(L->ht);
      L->htcap = L->htcap ? L->htcap * 2 : 1024;
      L->ht = kn_xcalloc(L->htcap, sizeof(int));
      for (int i = 0; i < L->n; i++) {
        uint64_t hh = lop_hash(&L->b[i].op);
        for (size_t j = hh;; j++)
          if (!L->ht[j & (L->htcap - 1)]) {
            L->ht[j & (L->htcap - 1)] = i + 1;
            break;
          }
      }
    }
    h = lop_hash(&o);
    for (size_t j = h;; j++) {
      int e = L->ht[j & (L->htcap - 1)];
      if (!e) break;
      if (lop_eq(&L->b[e - 1].op, &o)) return e - 1;
    }
  }
  if (L->n == L->cap) {
    L->cap = L->cap ? L->cap * 2 : 256;
    L->b = kn_xrealloc(L->b, sizeof(blop) * L->cap);
  }
  L->b[L->n] = (blop){o, level, (uint8_t)stage, lo, hi, false};
  if (cse)
    for (size_t j = h;; j++)
      if (!L->ht[j & (L->htcap - 1)]) {
        L->ht[j & (L->htcap - 1)] = L->n + 1;
        break;
      }
  return L->n++;
}

static bool is_intlike(int dt) { return !kiln_dtype_is_float(dt); }
/* the stage of a lop reading lop i: an accumulator's value is known one stage later */
static int stage_of(const lb *L, int i) { return L->b[i].stage + (L->b[i].op.op == L_ACC); }
static void dtype_range(int dt, int64_t *lo, int64_t *hi) {
  int bits = kn_dtype_bits(dt);
  if (dt == KILN_BOOL)
    *lo = 0, *hi = 1;
  else if (kn_dtype_is_unsigned(dt))
    *lo = 0, *hi = bits >= 63 ? IMAX : (int64_t)((1ull << bits) - 1);
  else if (kn_dtype_is_int(dt) && bits < 64)
    *lo = -(1ll << (bits - 1)), *hi = (1ll << (bits - 1)) - 1;
  else
    *lo = IMIN, *hi = IMAX;
}

static int cint(lb *L, int dt, int64_t v) {
  kn_lop o = {.op = L_CONST, .dtype = dt, .src = {-1, -1, -1}, .ival = v};
  return push(L, o, 0, false, v, v, true);
}
static int cflt(lb *L, int dt, double v) {
  kn_lop o = {.op = L_CONST, .dtype = dt, .src = {-1, -1, -1}, .fval = v};
  return push(L, o, 0, false, IMIN, IMAX, true);
}
static int cval(lb *L, int dt, double v) {
  if (kiln_dtype_is_float(dt)) return cflt(L, dt, v);
  if (kn_dtype_is_unsigned(dt) && v >= 9.2233720368547758e18)
    return cint(L, dt, (int64_t)kn_d2u(v, 1.8446744073709552e19));
  return cint(L, dt, (int64_t)v);
}
static bool is_const(lb *L, int i) {
  return i >= 0 && L->b[i].op.op == L_CONST && !L->b[i].lane_const;
}
static bool is_ci(lb *L, int i, int64_t v) {
  return is_const(L, i) && is_intlike(L->b[i].op.dtype) && L->b[i].op.ival == v;
}
static int64_t cv(lb *L, int i) { return L->b[i].op.ival; }

static bool ovf_add(int64_t a, int64_t b, int64_t *r) { return __builtin_add_overflow(a, b, r); }
static bool ovf_mul(int64_t a, int64_t b, int64_t *r) { return __builtin_mul_overflow(a, b, r); }

static int alu(lb *L, int op, int dt, int a, int b, int c);
/* Flattens a nonnegative i64 sum into terms coef * lop (lop -1 for the constant term). */
static bool collect_terms(lb *L, int x, int64_t coef, int *tv, int64_t *tc, int *nt) {
  kn_lop *o = &L->b[x].op;
  if (*nt >= 30 || L->b[x].lo < 0) return false;
  if (o->op == N_ADD && o->dtype == KILN_I64)
    return collect_terms(L, o->src[0], coef, tv, tc, nt) &&
           collect_terms(L, o->src[1], coef, tv, tc, nt);
  if (o->op == N_MUL && o->dtype == KILN_I64 && is_const(L, o->src[1]) && cv(L, o->src[1]) >= 0 &&
      !__builtin_mul_overflow(coef, cv(L, o->src[1]), &(int64_t){0}))
    return collect_terms(L, o->src[0], coef * cv(L, o->src[1]), tv, tc, nt);
  if (is_const(L, x)) {
    if (__builtin_mul_overflow(coef, cv(L, x), &tc[*nt])) return false;
    tv[(*nt)++] = -1;
    return true;
  }
  tv[*nt] = x, tc[(*nt)++] = coef;
  return true;
}

/* x % c + (x / c) * c -> x, and x % c + ((x / c) % d) * c -> x % (c * d), for x >= 0: what a
 * split index put back together (a reshape after a permute that moved nothing) reduces to. */
static int fold_split_index(lb *L, int a, int b) {
  for (int sw = 0; sw < 2; sw++) {
    int m = sw ? b : a, t = sw ? a : b;
    kn_lop *mo = &L->b[m].op, *to = &L->b[t].op;
    if (mo->op != N_MOD || !is_const(L, mo->src[1]) || to->op != N_MUL || !is_const(L, to->src[1]))
      continue;
    int x = mo->src[0];
    int64_t c = cv(L, mo->src[1]), cd;
    if (c <= 0 || cv(L, to->src[1]) != c || L->b[x].lo < 0) continue;
    kn_lop *q = &L->b[to->src[0]].op;
    if (q->op == N_IDIV && q->src[0] == x && is_ci(L, q->src[1], c)) return x;
    if (q->op == N_MOD && is_const(L, q->src[1]) && !ovf_mul(c, cv(L, q->src[1]), &cd) && cd > 0) {
      kn_lop *qq = &L->b[q->src[0]].op;
      if (qq->op == N_IDIV && qq->src[0] == x && is_ci(L, qq->src[1], c))
        return alu(L, N_MOD, KILN_I64, x, cint(L, KILN_I64, cd), -1);
    }
  }
  return -1;
}

/* Integer ALU with folding and index simplification; other dtypes get plain folding. */
static int alu(lb *L, int op, int dt, int a, int b, int c) {
  bool ints = is_intlike(dt) && (a < 0 || is_intlike(L->b[a].op.dtype));
  bool idx = dt == KILN_I64; /* index math is i64; rules below assume no wrap-around */
  int64_t alo = a >= 0 ? L->b[a].lo : 0, ahi = a >= 0 ? L->b[a].hi : 0;
  int64_t blo = b >= 0 ? L->b[b].lo : 0, bhi = b >= 0 ? L->b[b].hi : 0;
  if (op == N_WHERE) {
    if (is_const(L, a)) return cv(L, a) ? b : c;
    if (b == c) return b;
  }
  if (idx && ints) {
    if ((op == N_IDIV || op == N_MOD) && is_ci(L, b, 1)) /* any sign */
      return op == N_IDIV ? a : cint(L, dt, 0);
    if (op == N_ADD) {
      if (is_ci(L, a, 0)) return b;
      if (is_ci(L, b, 0)) return a;
      if (is_const(L, a) && is_const(L, b)) return cint(L, dt, cv(L, a) + cv(L, b));
      if (is_const(L, a)) return alu(L, N_ADD, dt, b, a, -1);
      int f = fold_split_index(L, a, b);
      if (f >= 0) return f;
      /* (x + c1) + c2 -> x + (c1 + c2) */
      if (is_const(L, b) && L->b[a].op.op == N_ADD && is_const(L, L->b[a].op.src[1]))
        return alu(L, N_ADD, dt, L->b[a].op.src[0],
                   cint(L, dt, cv(L, b) + cv(L, L->b[a].op.src[1])), -1);
    }
    if (op == N_MUL) {
      if (is_ci(L, a, 1)) return b;
      if (is_ci(L, b, 1)) return a;
      if (is_ci(L, a, 0) || is_ci(L, b, 0)) return cint(L, dt, 0);
      if (is_const(L, a) && is_const(L, b)) return cint(L, dt, cv(L, a) * cv(L, b));
      if (is_const(L, a)) return alu(L, N_MUL, dt, b, a, -1);
      /* (x * c1) * c2 -> x * (c1 * c2) */
      if (is_const(L, b) && L->b[a].op.op == N_MUL && is_const(L, L->b[a].op.src[1]))
        return alu(L, N_MUL, dt, L->b[a].op.src[0],
                   cint(L, dt, cv(L, b) * cv(L, L->b[a].op.src[1])), -1);
    }
    if ((op == N_IDIV || op == N_MOD) && is_const(L, b) && cv(L, b) > 0 && alo >= 0) {
      int64_t d = cv(L, b);
      if (op == N_IDIV && d == 1) return a;
      if (op == N_MOD && d == 1) return cint(L, dt, 0);
      if (ahi < d) return op == N_IDIV ? cint(L, dt, 0) : a;
      if (is_const(L, a)) return cint(L, dt, op == N_IDIV ? cv(L, a) / d : cv(L, a) % d);
      /* x = sum of terms t*c (t >= 0, c >= 0): x / d = sum t*(c/d) + (sum t*(c%d)) / d, and
       * x % d = (sum t*(c%d)) % d; when the remainder sum stays below d, both fold away */
      int tv[32], nt = 0;
      int64_t tc[32];
      if (collect_terms(L, a, 1, tv, tc, &nt)) {
        bool changed = false;
        int q = cint(L, dt, 0), r = cint(L, dt, 0);
        for (int i = 0; i < nt; i++) {
          changed = changed || tc[i] >= d;
          int t = tv[i] < 0 ? cint(L, dt, 1) : tv[i];
          if (tc[i] / d)
            q = alu(L, N_ADD, dt, q, alu(L, N_MUL, dt, t, cint(L, dt, tc[i] / d), -1), -1);
          if (tc[i] % d)
            r = alu(L, N_ADD, dt, r, alu(L, N_MUL, dt, t, cint(L, dt, tc[i] % d), -1), -1);
        }
        if (L->b[r].lo >= 0 && L->b[r].hi < d) return op == N_IDIV ? q : r;
        if (changed)
          return op == N_MOD ? alu(L, N_MOD, dt, r, b, -1)
                             : alu(L, N_ADD, dt, q, alu(L, N_IDIV, dt, r, b, -1), -1);
      }
    }
    if (op == N_CMPLT) {
      if (ahi < blo) return cint(L, KILN_BOOL, 1);
      if (alo >= bhi) return cint(L, KILN_BOOL, 0);
    }
  }
  if (dt == KILN_BOOL && op == N_AND) {
    if (is_const(L, a)) return cv(L, a) ? b : cint(L, dt, 0);
    if (is_const(L, b)) return cv(L, b) ? a : cint(L, dt, 0);
  }
  /* value ranges of the new lop */
  int64_t lo, hi;
  dtype_range(dt, &lo, &hi);
  if (idx && ints) {
    int64_t r1, r2, r3, r4;
    if (op == N_ADD && !ovf_add(alo, blo, &r1) && !ovf_add(ahi, bhi, &r2)) lo = r1, hi = r2;
    if (op == N_MUL && !ovf_mul(alo, blo, &r1) && !ovf_mul(alo, bhi, &r2) &&
        !ovf_mul(ahi, blo, &r3) && !ovf_mul(ahi, bhi, &r4)) {
      lo = r1 < r2 ? r1 : r2, lo = lo < r3 ? lo : r3, lo = lo < r4 ? lo : r4;
      hi = r1 > r2 ? r1 : r2, hi = hi > r3 ? hi : r3, hi = hi > r4 ? hi : r4;
    }
    if (op == N_IDIV && is_const(L, b) && cv(L, b) > 0 && alo >= 0)
      lo = alo / cv(L, b), hi = ahi / cv(L, b);
    if (op == N_MOD && is_const(L, b) && cv(L, b) > 0 && alo >= 0)
      lo = 0, hi = ahi < cv(L, b) ? ahi : cv(L, b) - 1;
    if (op == N_NEG && alo > IMIN) lo = -ahi, hi = -alo;
  }
  if (op == N_CMPLT || op == N_CMPNE) lo = 0, hi = 1;
  if (op == N_WHERE && is_intlike(dt)) { /* one of the two (a clamped index stays in range) */
    lo = blo < L->b[c].lo ? blo : L->b[c].lo;
    hi = bhi > L->b[c].hi ? bhi : L->b[c].hi;
  }
  int level = 0, stage = 0;
  int srcs[3] = {a, b, c};
  for (int i = 0; i < 3; i++)
    if (srcs[i] >= 0) {
      if (L->b[srcs[i]].level > level) level = L->b[srcs[i]].level;
      if (stage_of(L, srcs[i]) > stage) stage = stage_of(L, srcs[i]);
    }
  kn_lop o = {.op = op, .dtype = dt, .src = {a, b, c}};
  return push(L, o, level, stage, lo, hi, true);
}
static int add(lb *L, int a, int b) { return alu(L, N_ADD, KILN_I64, a, b, -1); }
static int mul(lb *L, int a, int64_t c) {
  return alu(L, N_MUL, KILN_I64, a, cint(L, KILN_I64, c), -1);
}
static int land(lb *L, int a, int b) { /* valid conditions: -1 means always */
  if (a < 0) return b;
  if (b < 0) return a;
  return alu(L, N_AND, KILN_BOOL, a, b, -1);
}

/* a sequential loop var (L_RANGE) or a launch index (L_GIDX along launch dim gdim) */
static int range_op(lb *L, int op, int64_t bound, int gdim, int level) {
  kn_lop o = {.op = op, .dtype = KILN_I64, .src = {-1, -1, -1}, .arg = bound, .ival = gdim};
  return push(L, o, level, 0, 0, bound > 0 ? bound - 1 : 0, false);
}
static int range(lb *L, int64_t bound, int level) { return range_op(L, L_RANGE, bound, -1, level); }

static int slot_of(const kn_sched_item *it, kn_node *n) {
  for (int i = 0; i < it->ninputs; i++)
    if (it->inputs[i] == n) return i + 1;
  return -1;
}

static int lower(lb *L, kn_node *n, const int *idx, int valid);

/* SPLIT (the kernel's lanes > 1): the innermost reduce axis is walked as an outer loop and an
 * innermost loop of `lanes` steps, each step adding into its own lane of an accumulator array;
 * the lanes are combined after the loops. The innermost loop reads consecutive elements into
 * independent lanes, which compilers turn into vector code. GROUP: one reduce axis is walked by
 * the work-items of a group in turn (element j * group + lid), each into its own accumulator;
 * the partial results meet in local memory after a barrier, and every work-item combines them
 * in the same order. */
/* LANES: index lop i with the output's constant lane put back as the lane loop's variable,
 * rebuilt through alu (so it simplifies as the original did); -2 where i depends on the lane
 * through more than index arithmetic. memo: per lop, its rebuilt form + 3. */
static int relane(lb *L, int i, int *memo) {
  if (i < 0 || memo[i]) return i < 0 ? i : memo[i] - 3;
  const blop *b = &L->b[i];
  int r = i, s[3];
  if (b->lane_const)
    r = L->lane_range;
  else {
    bool changed = false;
    for (int q = 0; q < 3; q++) {
      s[q] = relane(L, b->op.src[q], memo);
      if (s[q] == -2) r = -2;
      changed = changed || s[q] != b->op.src[q];
    }
    if (r != -2 && changed)
      r = kn_is_alu(b->op.op) ? alu(L, b->op.op, b->op.dtype, s[0], s[1], s[2]) : -2;
  }
  memo[i] = r + 3;
  return r;
}

/* LANES: the reduce n at (idx, valid) of the current lane, as that lane of the accumulator
 * array all lanes share; -1 the first time (the caller lowers it into *lidx, *lvalid). */
static int lane_of_reduce(lb *L, kn_node *n, const int *idx, int valid, int *lidx, int *lvalid) {
  int *memo = kn_xcalloc((size_t)L->n, sizeof(int));
  bool ok = (*lvalid = relane(L, valid, memo)) != -2;
  for (int i = 0; i < n->ndim && ok; i++)
    ok = (lidx[i] = relane(L, idx[i], memo)) != -2;
  free(memo);
  if (!ok) {
    kn_err("codegen: LANES: the reduce's index depends on the lane through more than index "
           "arithmetic");
    L->failed = true;
    return cint(L, KILN_I64, 0);
  }
  for (int e = 0; e < L->nlane_acc; e++) {
    struct lane_acc *a = &L->lane_acc[e];
    if (a->n == n && a->valid == *lvalid && !memcmp(a->idx, lidx, sizeof(int) * n->ndim)) {
      kn_lop rd = {.op = L_LANE, .dtype = n->dtype, .src = {a->acc, -1, -1}, .arg = L->cur_lane};
      return push(L, rd, L->nglobal, 1, L->b[a->acc].lo, L->b[a->acc].hi, false);
    }
  }
  return -1;
}

static int lower_reduce(lb *L, kn_node *n, const int *idx, int valid) {
  kn_node *s = n->src[0];
  int rop = (int)n->arg[0];
  if (!L->red_ready) { /* the kernel's reduce loops, created once; the lane loop innermost */
    for (int i = 0; i < s->ndim; i++) {
      L->red_range[i] = -1;
      int64_t bound = i == L->split_axis    ? s->shape[i] / L->lanes
                      : i == L->group_axis  ? s->shape[i] / L->group
                      : i == L->unroll_axis ? s->shape[i] / L->unroll
                                            : s->shape[i];
      if ((n->arg[1] >> i & 1) && bound != 1)
        L->red_range[i] = range(L, bound, L->nglobal + 1 + L->nred++);
    }
    if (L->split_axis >= 0 || L->lanes_dim >= 0)
      L->lane_range = range(L, L->lanes, L->nglobal + 1 + L->nred++);
    L->red_ready = true;
  }
  int lidx[KILN_MAX_DIMS];
  if (L->lanes_dim >= 0) {
    int got = lane_of_reduce(L, n, idx, valid, lidx, &valid);
    if (got >= 0) return got;
    idx = lidx;
  }
  int sidx[KILN_MAX_DIMS];
  for (int i = 0; i < s->ndim; i++)
    sidx[i] = !(n->arg[1] >> i & 1)  ? idx[i]
              : L->red_range[i] >= 0 ? L->red_range[i]
                                     : cint(L, KILN_I64, 0);
  if (L->group_axis >= 0)
    sidx[L->group_axis] = add(L, mul(L, sidx[L->group_axis], L->group), L->lid);
  int lane = L->lanes_dim >= 0 ? L->lane_range : -1;
  if (L->split_axis >= 0) {
    lane = L->lane_range;
    sidx[L->split_axis] = add(L, mul(L, sidx[L->split_axis], L->lanes), lane);
  }
  int cdt = kn_compute_dtype(n->dtype);
  kn_lop acc = {.op = L_ACC,
                .dtype = n->dtype,
                .src = {-1, -1, -1},
                .arg = rop,
                .arg2 = lane >= 0 ? L->lanes : 0};
  if (rop == N_ADD)
    acc.fval = 0, acc.ival = 0;
  else if (rop == N_MUL)
    acc.fval = 1, acc.ival = 1;
  else if (kiln_dtype_is_float(cdt))
    acc.fval = -INFINITY;
  else {
    int64_t lo, hi;
    dtype_range(n->dtype, &lo, &hi);
    acc.ival = lo;
  }
  int64_t lo, hi;
  dtype_range(n->dtype, &lo, &hi);
  int a = push(L, acc, L->nglobal, 0, lo, hi, false);
  /* UNROLL: elements u = 0.. of each step of the unrolled axis, accumulated in that order */
  int ua = L->unroll_axis, ubase = ua >= 0 ? mul(L, sidx[ua], L->unroll) : -1;
  for (int64_t u = 0; u < (ua >= 0 ? L->unroll : 1); u++) {
    if (ua >= 0) sidx[ua] = add(L, ubase, cint(L, KILN_I64, u));
    int v = lower(L, s, sidx, valid);
    kn_lop up = {.op = L_ACCUP, .dtype = n->dtype, .src = {a, v, lane}, .arg = rop};
    push(L, up, L->nglobal + L->nred, 0, lo, hi, false);
  }
  int r = a;
  if (L->lanes_dim >= 0) { /* this lane of it; the other lanes find it in lane_acc */
    L->lane_acc = kn_xrealloc(L->lane_acc, sizeof(struct lane_acc) * (size_t)(L->nlane_acc + 1));
    struct lane_acc *e = &L->lane_acc[L->nlane_acc++];
    e->n = n, e->valid = valid, e->acc = a;
    memcpy(e->idx, idx, sizeof(int) * n->ndim);
    kn_lop rd = {.op = L_LANE, .dtype = n->dtype, .src = {a, -1, -1}, .arg = L->cur_lane};
    return push(L, rd, L->nglobal, 1, lo, hi, false);
  }
  if (lane >= 0) {
    int part[16];
    for (int64_t c = 0; c < L->lanes; c++) {
      kn_lop rd = {.op = L_LANE, .dtype = n->dtype, .src = {a, -1, -1}, .arg = c};
      part[c] = push(L, rd, L->nglobal, 1, lo, hi, false);
    }
    for (int64_t w = 1; w < L->lanes; w *= 2) /* pairwise: (l0 + l1) + (l2 + l3) ... */
      for (int64_t c = 0; c + w < L->lanes; c += 2 * w)
        part[c] = alu(L, rop, n->dtype, part[c], part[c + w], -1);
    r = part[0];
  }
  if (L->group_axis < 0) return r;
  /* the group's combine: each work-item's partial into local memory, a barrier, then the
   * group's first work-item folds the partials in order (the one that stores; the others' loop
   * has no trips, so a group's combine costs one pass, not one per work-item) */
  kn_lop dl = {.op = L_DEFLOCAL, .dtype = n->dtype, .src = {-1, -1, -1}, .arg = L->group};
  int loc = push(L, dl, 0, 0, 0, 0, false);
  kn_lop ls = {.op = L_LOCSTORE, .dtype = n->dtype, .src = {loc, L->lid, r}};
  push(L, ls, L->nglobal, 1, 0, 0, false);
  if (L->comb_range < 0) {
    int first = alu(L, N_CMPLT, KILN_BOOL, L->lid, cint(L, KILN_I64, 1), -1);
    kn_lop cr = {
        .op = L_RANGE, .dtype = KILN_I64, .src = {first, -1, -1}, .arg = L->group, .ival = -1};
    L->comb_range = push(L, cr, L->nglobal + 1, 2, 0, L->group - 1, false);
  }
  acc.arg2 = 0;
  int a2 = push(L, acc, L->nglobal, 2, lo, hi, false);
  kn_lop ll = {.op = L_LOCLOAD, .dtype = n->dtype, .src = {loc, L->comb_range, -1}};
  int pv = push(L, ll, L->nglobal + 1, 2, lo, hi, false);
  kn_lop up2 = {.op = L_ACCUP, .dtype = n->dtype, .src = {a2, pv, -1}, .arg = rop};
  push(L, up2, L->nglobal + 1, 2, lo, hi, false);
  return a2;
}

static int lower_uncached(lb *L, kn_node *n, const int *idx, int valid) {
  int si[KILN_MAX_DIMS];
  kn_node *s = n->nsrc ? n->src[0] : NULL;
  int slot = slot_of(L->it, n);
  if (slot >= 0 || kn_is_realized(n)) {
    KN_ASSERT(slot >= 0, "kernel reads a buffer that is not among its inputs");
    int flat = cint(L, KILN_I64, 0);
    int64_t stride = 1;
    for (int i = n->ndim - 1; i >= 0; i--) {
      if (n->shape[i] != 1) flat = add(L, flat, mul(L, idx[i], stride));
      stride *= n->shape[i];
    }
    kn_lop o = {.op = L_LOAD, .dtype = n->dtype, .src = {flat, valid, -1}, .arg = slot};
    int level = L->b[flat].level, stage = stage_of(L, flat);
    if (valid >= 0 && L->b[valid].level > level) level = L->b[valid].level;
    if (valid >= 0 && stage_of(L, valid) > stage) stage = stage_of(L, valid);
    int64_t lo, hi;
    dtype_range(n->dtype, &lo, &hi);
    return push(L, o, level, stage, lo, hi, true);
  }
  switch (n->op) {
  case N_CONST:
    return cval(L, n->dtype, n->cval);
  case N_CONTIGUOUS:
    return lower(L, s, idx, valid);
  case N_GATHER: { /* the id, read at the leading output dims, indexes the table's dim 0 */
    kn_node *ids = n->src[1];
    int v = lower(L, ids, idx, valid);
    if (ids->dtype != KILN_I64) v = alu(L, N_CAST, KILN_I64, v, -1, -1);
    int in = land(L, alu(L, N_CMPLT, KILN_BOOL, cint(L, KILN_I64, -1), v, -1),
                  alu(L, N_CMPLT, KILN_BOOL, v, cint(L, KILN_I64, s->shape[0]), -1));
    si[0] = v;
    for (int i = 1; i < s->ndim; i++)
      si[i] = idx[ids->ndim + i - 1];
    return alu(L, N_WHERE, n->dtype, in, lower(L, s, si, land(L, valid, in)), cval(L, n->dtype, 0));
  }
  case N_REDUCE:
    return lower_reduce(L, n, idx, valid);
  case N_PERMUTE:
    for (int i = 0; i < n->ndim; i++)
      si[n->arg[i]] = idx[i];
    return lower(L, s, si, valid);
  case N_EXPAND:
    for (int i = 0; i < n->ndim; i++)
      si[i] = s->shape[i] == 1 ? cint(L, KILN_I64, 0) : idx[i];
    return lower(L, s, si, valid);
  case N_SHRINK:
    for (int i = 0; i < n->ndim; i++)
      si[i] = add(L, idx[i], cint(L, KILN_I64, n->arg[2 * i]));
    return lower(L, s, si, valid);
  case N_FLIP:
    for (int i = 0; i < n->ndim; i++)
      si[i] = n->arg[i] ? add(L, cint(L, KILN_I64, s->shape[i] - 1),
                              alu(L, N_NEG, KILN_I64, idx[i], -1, -1))
                        : idx[i];
    return lower(L, s, si, valid);
  case N_PAD: {
    int cond = -1;
    for (int i = 0; i < n->ndim; i++) {
      int64_t before = n->arg[2 * i];
      si[i] = add(L, idx[i], cint(L, KILN_I64, -before));
      if (n->arg[2 * i] == 0 && n->arg[2 * i + 1] == 0) continue;
      int ge = alu(L, N_CMPLT, KILN_BOOL, cint(L, KILN_I64, -1), si[i], -1);
      int lt = alu(L, N_CMPLT, KILN_BOOL, si[i], cint(L, KILN_I64, s->shape[i]), -1);
      cond = land(L, cond, land(L, is_ci(L, ge, 1) ? -1 : ge, is_ci(L, lt, 1) ? -1 : lt));
    }
    if (cond >= 0 && is_ci(L, cond, 0)) return cval(L, n->dtype, 0);
    int v = lower(L, s, si, land(L, valid, cond));
    return cond < 0 ? v : alu(L, N_WHERE, n->dtype, cond, v, cval(L, n->dtype, 0));
  }
  case N_RESHAPE: {
    /* group dims whose products match; within a group, linearize then split */
    int i = 0, j = 0;
    while (i < n->ndim || j < s->ndim) {
      int i0 = i, j0 = j;
      int64_t po = 1, ps = 1;
      do {
        if (j >= s->ndim || (i < n->ndim && po <= ps))
          po *= n->shape[i++];
        else
          ps *= s->shape[j++];
      } while (po != ps && (i < n->ndim || j < s->ndim));
      int flat = cint(L, KILN_I64, 0);
      int64_t st = 1;
      for (int k = i - 1; k >= i0; k--) {
        if (n->shape[k] != 1) flat = add(L, flat, mul(L, idx[k], st));
        st *= n->shape[k];
      }
      st = 1;
      for (int k = j - 1; k >= j0; k--) {
        int q = alu(L, N_IDIV, KILN_I64, flat, cint(L, KILN_I64, st), -1);
        si[k] = s->shape[k] == 1 ? cint(L, KILN_I64, 0)
                                 : alu(L, N_MOD, KILN_I64, q, cint(L, KILN_I64, s->shape[k]), -1);
        st *= s->shape[k];
      }
    }
    return lower(L, s, si, valid);
  }
  default:
    break;
  }
  KN_ASSERT(kn_is_alu(n->op), "cannot lower op %s", kn_op_names[n->op]);
  int v[3] = {-1, -1, -1};
  for (int k = 0; k < n->nsrc; k++)
    v[k] = lower(L, n->src[k], idx, valid);
  return alu(L, n->op, n->dtype, v[0], v[1], v[2]);
}

static uint64_t memo_hash(kn_node *n, const int *idx, int valid) {
  uint64_t h = kn_hash_bytes(0, &n, sizeof n);
  h = kn_hash_bytes(h, idx, sizeof(int) * n->ndim);
  return kn_hash_bytes(h, &valid, sizeof valid);
}
static int lower(lb *L, kn_node *n, const int *idx, int valid) {
  uint64_t h = memo_hash(n, idx, valid);
  for (size_t j = h; L->memoht; j++) {
    int e = L->memoht[j & (L->memohtcap - 1)];
    if (!e) break;
    struct memo *m = &L->memo[e - 1];
    if (m->n == n && m->valid == valid && !memcmp(m->idx, idx, sizeof(int) * n->ndim))
      return m->val;
  }
  int v = lower_uncached(L, n, idx, valid);
  if (L->nmemo == L->memocap) {
    L->memocap = L->memocap ? L->memocap * 2 : 256;
    L->memo = kn_xrealloc(L->memo, sizeof(struct memo) * L->memocap);
  }
  if ((size_t)(L->nmemo + 1) * 2 > L->memohtcap) { /* grow the index and re-insert every entry */
    free(L->memoht);
    L->memohtcap = L->memohtcap ? L->memohtcap * 2 : 1024;
    L->memoht = kn_xcalloc(L->memohtcap, sizeof(int));
    for (int i = 0; i < L->nmemo; i++)
      for (size_t j = memo_hash(L->memo[i].n, L->memo[i].idx, L->memo[i].valid);; j++)
        if (!L->memoht[j & (L->memohtcap - 1)]) {
          L->memoht[j & (L->memohtcap - 1)] = i + 1;
          break;
        }
  }
  struct memo *m = &L->memo[L->nmemo++];
  m->n = n, m->valid = valid, m->val = v;
  memcpy(m->idx, idx, sizeof(int) * n->ndim);
  for (size_t j = h;; j++)
    if (!L->memoht[j & (L->memohtcap - 1)]) {
      L->memoht[j & (L->memohtcap - 1)] = L->nmemo;
      break;
    }
  return v;
}

/* ---- heuristic optimizations: pick upcast factors for the global dims ----
 * A trial lowering tells, for every load in the reduce loop, its index stride along each
 * global dim. The inner upcast goes to a dim along which some load is contiguous (vector
 * loads); the outer one to a dim that the loads not yet reused do not depend on (each such
 * load then feeds several accumulators). */
static bool eval_index(lb *L, int i, const int64_t *rv, int64_t *memo, uint8_t *done,
                       int64_t *out) {
  if (done[i]) {
    *out = memo[i];
    return done[i] == 1;
  }
  kn_lop *o = &L->b[i].op;
  int64_t a = 0, b = 0;
  bool ok = true;
  switch (o->op) {
  case L_CONST:
    a = o->ival;
    break;
  case L_RANGE:
  case L_GIDX:
    a = rv[i];
    break;
  case N_ADD:
  case N_MUL:
  case N_IDIV:
  case N_MOD:
    ok = eval_index(L, o->src[0], rv, memo, done, &a) &&
         eval_index(L, o->src[1], rv, memo, done, &b);
    if (ok)
      a = o->op == N_ADD    ? a + b
          : o->op == N_MUL  ? a * b
          : b == 0          ? 0
          : o->op == N_IDIV ? a / b
                            : a % b;
    break;
  case N_NEG:
    ok = eval_index(L, o->src[0], rv, memo, done, &a), a = -a;
    break;
  case N_CAST:
    ok = is_intlike(o->dtype) && eval_index(L, o->src[0], rv, memo, done, &a);
    break;
  case L_LOAD: /* a value read from memory (a sequence's cache block), unknown: taken as its
                  own address, so that it moves where the address moves and stays put where
                  that does (the strides asked are differences) */
    ok = L->read_index && eval_index(L, o->src[0], rv, memo, done, &a);
    break;
  default:
    ok = false;
  }
  done[i] = ok ? 1 : 2;
  memo[i] = a;
  *out = a;
  return ok;
}

/* Index change of load l when loop variable var goes 0 -> 1; INT64_MIN if unknown. */
static int64_t load_stride(lb *T, int l, int var, int64_t *rv, int64_t *memo, uint8_t *done) {
  int64_t base, v;
  memset(done, 0, T->n);
  if (var < 0 || !eval_index(T, T->b[l].op.src[0], rv, memo, done, &base)) return INT64_MIN;
  rv[var] = 1;
  memset(done, 0, T->n);
  bool ok = eval_index(T, T->b[l].op.src[0], rv, memo, done, &v);
  rv[var] = 0;
  return ok ? v - base : INT64_MIN;
}

/* Outputs of a tile that covers a whole contiguous row (accumulators: 24 vectors of 8 lanes) */
#define ROW_TILE_MAX 192

/* An operand read contiguously along global dim g may go on contiguously along other dims
 * (the heads of a row of cached values, say): a tile of that whole row (its dims upcast whole)
 * reads it once per reduce step, in order, where a strip of it per tile walks the reduce axis
 * once per strip. Applied (true) when the row spans more than g and has at most ROW_TILE_MAX
 * outputs. rs: the operand's strides. */
static bool row_tile(int ng, const int64_t *gshape, const int64_t *rs, int g, int64_t *up) {
  bool in_run[KILN_MAX_DIMS] = {false};
  int64_t run = gshape[g];
  in_run[g] = true;
  for (bool grew = true; grew;) {
    grew = false;
    for (int d = 0; d < ng; d++)
      if (!in_run[d] && rs[d] == run && gshape[d] <= ROW_TILE_MAX / run)
        in_run[d] = true, run *= gshape[d], grew = true;
  }
  if (run == gshape[g] || gshape[g] > 64) return false;
  for (int d = 0; d < ng; d++)
    if (in_run[d]) up[d] = gshape[d];
  return true;
}

/* The choice, from the strides of the reduce loop's loads: stride[l][g] along global dim g
 * (rowstride[l][g] the same where a value read from memory counts as its address),
 * rstride[l] along the innermost reduce axis (of size rlen), size[l] of the buffer read; rows:
 * whole-row tiles allowed (a CPU's registers hold them). */
static void choose_upcasts(int ng, const int64_t *gshape, int nl, int64_t (*stride)[KILN_MAX_DIMS],
                           int64_t (*rowstride)[KILN_MAX_DIMS], const int64_t *rstride,
                           const int64_t *size, int64_t rlen, bool rows, bool dot4, int64_t *up,
                           int *lanes_dim) {
  bool fits[KILN_MAX_DIMS]; /* a dim an upcast of 4 divides, with some loop left */
  for (int g = 0; g < ng; g++)
    fits[g] = gshape[g] % 4 == 0 && gshape[g] >= 8;
  int inner = -1, outer = -1, best = 0;
  for (int g = 0; g < ng; g++) { /* inner: most loads contiguous along g */
    int c = 0;
    for (int l = 0; l < nl; l++)
      c += stride[l][g] == 1;
    if (fits[g] && c >= best && c > 0) best = c, inner = g;
  }
  int most = -1; /* the biggest buffer read; when not along the reduce axis but along an output
                    dim (through an index read from memory, maybe: rowstride), its rows */
  for (int l = 0; l < nl; l++)
    if (most < 0 || size[l] > size[most]) most = l;
  /* the biggest buffer contiguous along an output dim and not along the reduce, with nothing
   * of a comparable size read along the reduce (SPLIT would not vectorize): that dim's outputs
   * as vector lanes, LANES (column-major weights, weights repacked with rows interleaved),
   * and a few rows (of the operand it ignores) sharing each vector it reads */
  int w = -1; /* the biggest buffer read along the reduce (tables of the outputs aside) */
  for (int l = 0; l < nl; l++)
    if (rstride[l] != 0 && (w < 0 || size[l] > size[w])) w = l;
  bool no_lanes = w < 0 || rstride[w] == 1;
  for (int l = 0; l < nl && !no_lanes; l++)
    no_lanes = rstride[l] == 1 && size[l] * 8 >= size[w];
  for (int g = 0; g < ng && !no_lanes; g++) /* not where it is read through an index */
    no_lanes = rowstride[w][g] != stride[w][g];
  for (int g = 0; rows && dot4 && !no_lanes && g < ng; g++) /* 8-bit products, for now */
    if (stride[w][g] == 1 && gshape[g] % KN_OUT_LANES == 0) {
      *lanes_dim = g;
      int64_t acc = 1; /* accumulator arrays: independent chains of updates */
      for (int d = 0; d < ng && acc == 1; d++)
        if (d != g && stride[w][d] == 0 && (fits[d] || gshape[d] <= 4))
          acc = up[d] = fits[d] ? 4 : gshape[d];
      int64_t nout = 1;
      for (int d = 0; d < ng; d++)
        nout *= gshape[d];
      for (int e = -1; e < ng && acc < 4 && nout >= 512; e++) /* too few rows: more outputs, */
        for (int64_t f = 4 / acc, d = e < 0 ? g : e; f >= 2 && up[d] == 1; f /= 2) /* g first */
          if (gshape[d] % (f * (d == g ? KN_OUT_LANES : 1)) == 0 && gshape[d] > f)
            up[d] = f, acc *= f;
      return;
    }
  for (int g = 0; rows && most >= 0 && rstride[most] != 1 && g < ng; g++)
    if (rowstride[most][g] == 1 && row_tile(ng, gshape, rowstride[most], g, up)) return;
  int big = -1; /* the biggest buffer read contiguously along the reduce axis */
  for (int l = 0; l < nl; l++)
    if (rstride[l] == 1 && (big < 0 || size[l] > size[big])) big = l;
  if (inner < 0 && big >= 0 && rlen % 4 == 0) {
    /* keep SPLIT possible (it vectorizes that reduce): at most a small upcast of a dim the big
     * buffer (the weights of a matrix-vector product, say) ignores, so each run read from it
     * (and dequantized) feeds several accumulator arrays */
    for (int g = 0; g < ng && outer < 0; g++) /* a small dim (decoded sequences) whole */
      if (stride[big][g] == 0 && (fits[g] || (gshape[g] >= 2 && gshape[g] <= 4)))
        outer = g, up[g] = fits[g] ? 4 : gshape[g];
    return;
  }
  if (ng < 2) return; /* one global dim: no tile to pick */
  if (inner < 0) {    /* no contiguous loads: the dim most loads ignore */
    best = 0;
    for (int g = 0; g < ng; g++) {
      int c = 0;
      for (int l = 0; l < nl; l++)
        c += stride[l][g] == 0;
      if (fits[g] && c >= best && c > 0) best = c, inner = g;
    }
  }
  if (inner < 0) return;
  best = 0;
  for (int g = 0; g < ng; g++) { /* outer: reuse for the loads that depend on inner */
    if (g == inner) continue;
    int c = 0;
    for (int l = 0; l < nl; l++)
      c += stride[l][inner] != 0 && stride[l][g] == 0;
    if (fits[g] && c >= best && c > 0) best = c, outer = g;
  }
  static const int64_t fi[] = {16, 8, 4};
  for (int k = 0; k < 3; k++)
    if (gshape[inner] % fi[k] == 0 && gshape[inner] >= 2 * fi[k]) {
      up[inner] = fi[k];
      break;
    }
  if (outer >= 0) up[outer] = 4;
}

static void pick_upcasts(const kn_sched_item *it, int ng, const int *gdim_of, const int64_t *gshape,
                         bool rows, int64_t *up, int *lanes_dim) {
  for (int i = 0; i < ng; i++)
    up[i] = 1;
  *lanes_dim = -1;
  if (!it->reduce || ng < 1) return;
  kn_node *r = it->reduce, *s = r->src[0];
  int64_t rsize = 1;
  int rax = -1; /* the innermost reduce axis */
  for (int i = 0; i < s->ndim; i++)
    if (r->arg[1] >> i & 1) {
      rsize *= s->shape[i];
      if (s->shape[i] != 1) rax = i;
    }
  if (rsize < 16) return;
  /* trial lowering with one plain loop per global dim */
  lb T = {.it = it,
          .nglobal = ng,
          .split_axis = -1,
          .group_axis = -1,
          .comb_range = -1,
          .unroll_axis = -1,
          .unroll = 1,
          .lanes_dim = -1};
  kn_node *out = it->out;
  int idx[KILN_MAX_DIMS], var[KILN_MAX_DIMS];
  for (int i = 0; i < out->ndim; i++)
    idx[i] = cint(&T, KILN_I64, 0);
  for (int g = 0; g < ng; g++)
    idx[gdim_of[g]] = var[g] = range_op(&T, L_GIDX, gshape[g], g, g + 1);
  lower(&T, out, idx, -1);
  int nl = 0, *loads = kn_xmalloc(sizeof(int) * T.n);
  for (int i = 0; i < T.n; i++)
    if (T.b[i].op.op == L_LOAD && T.b[i].level > ng) loads[nl++] = i;
  int64_t(*stride)[KILN_MAX_DIMS] = kn_xmalloc(sizeof(*stride) * (nl ? nl : 1));
  int64_t *rstride = kn_xmalloc(sizeof(int64_t) * (nl ? nl : 1)),
          *size = kn_xmalloc(sizeof(int64_t) * (nl ? nl : 1));
  int64_t *rv = kn_xcalloc(T.n, sizeof(int64_t)), *memo = kn_xmalloc(sizeof(int64_t) * T.n);
  uint8_t *done = kn_xmalloc(T.n);
  int64_t(*rowstride)[KILN_MAX_DIMS] = kn_xmalloc(sizeof(*rowstride) * (nl ? nl : 1));
  for (int l = 0; l < nl; l++) {
    for (int g = 0; g < ng; g++) {
      stride[l][g] = load_stride(&T, loads[l], var[g], rv, memo, done);
      T.read_index = true; /* rows read through an index from memory (a sequence's cache) */
      rowstride[l][g] = load_stride(&T, loads[l], var[g], rv, memo, done);
      T.read_index = false;
    }
    rstride[l] = load_stride(&T, loads[l], rax >= 0 ? T.red_range[rax] : -1, rv, memo, done);
    kn_node *in = it->inputs[T.b[loads[l]].op.arg - 1];
    size[l] = kn_numel(in->ndim, in->shape);
  }
  bool dot4 = false; /* LANES by default only for 8-bit products: f32 kernels keep their tiles
                       (the beam search tries LANES on them) */
  for (int i = 0; i < T.n && !dot4; i++)
    dot4 = T.b[i].op.op == N_DOT4;
  choose_upcasts(ng, gshape, nl, stride, rowstride, rstride, size, rax >= 0 ? s->shape[rax] : 0,
                 rows, dot4, up, lanes_dim);
  free(loads), free(stride), free(rowstride), free(rstride), free(size), free(rv), free(memo),
      free(done);
  free(T.b), free(T.ht), free(T.memo), free(T.memoht);
}

/* global dims: the output's dims larger than 1 */
static int global_dims(const kn_node *out, int *gdim_of, int64_t *gshape) {
  int ng = 0;
  for (int i = 0; i < out->ndim; i++)
    if (out->shape[i] != 1) gdim_of[ng] = i, gshape[ng++] = out->shape[i];
  return ng;
}
/* Rows of dim 0 per block (BLOCK): when the reduce is long, a block of 8-16 row tiles reuses
 * one column strip of the last dim's operand from cache. */
static int64_t pick_block(const kn_sched_item *it, int ng, const int64_t *gshape,
                          const int64_t *up) {
  if (!it->reduce || ng < 2) return 1;
  kn_node *r = it->reduce, *s = r->src[0];
  int64_t rsize = 1;
  for (int i = 0; i < s->ndim; i++)
    if (r->arg[1] >> i & 1) rsize *= s->shape[i];
  if (rsize < 256 || gshape[ng - 1] / up[ng - 1] < 4) return 1;
  int64_t rows = gshape[0] / up[0];
  for (int64_t g = 16; g > 1; g /= 2)
    if (rows % g == 0 && rows / g >= 2) return g;
  return 1;
}

/* The innermost reduce axis of size > 1, or -1. */
static int inner_reduce_axis(const kn_sched_item *it) {
  if (!it->reduce) return -1;
  kn_node *r = it->reduce, *s = r->src[0];
  for (int i = s->ndim - 1; i >= 0; i--)
    if ((r->arg[1] >> i & 1) && s->shape[i] != 1) return i;
  return -1;
}

static void opt_add(kn_opts *o, int op, int axis, int64_t amt) {
  if (o->n < KN_MAX_OPTS) o->o[o->n++] = (kn_opt){(int16_t)op, (int16_t)axis, (int32_t)amt};
}

/* GROUP where a device has work-groups and a reduce's outputs are too few to keep it busy:
 * the innermost reduce axis that a group of 16 to 64 work-items divides. The group's first
 * work-item folds the partials one after another (GROUP's combine): 64 keeps that fold a small
 * part of the reading, and groups of 64 still fill a GPU (it holds 32 per multiprocessor). */
static bool pick_grouped(const kn_sched_item *it, const kn_devcaps *caps, int ng,
                         const int64_t *gshape, kn_opts *o) {
  if (!it->reduce || caps->pool || !(caps->opts & KN_OPT_BIT(KN_OPT_GROUP))) return false;
  kn_node *r = it->reduce, *s = r->src[0];
  int64_t nout = 1, rsize = 1;
  for (int g = 0; g < ng; g++)
    nout *= gshape[g];
  for (int i = 0; i < s->ndim; i++)
    if (r->arg[1] >> i & 1) rsize *= s->shape[i];
  if (rsize < 128 || nout > 16384) return false;
  for (int i = s->ndim - 1; i >= 0; i--) {
    if (!(r->arg[1] >> i & 1) || s->shape[i] < 16) continue;
    for (int64_t g = 64; g >= 16; g /= 2)
      if (g <= caps->max_local && s->shape[i] % g == 0 &&
          g * (int64_t)sizeof(double) <= caps->local_mem) {
        opt_add(o, KN_OPT_GROUP, i, g);
        return true;
      }
  }
  return false;
}

void kn_opts_complete(const kn_sched_item *it, const kn_devcaps *caps, const int64_t *up,
                      int64_t lanes, int lanes_dim, kn_opts *o) {
  int gdim_of[KILN_MAX_DIMS];
  int64_t gshape[KILN_MAX_DIMS];
  int ng = global_dims(it->out, gdim_of, gshape);
  memset(o, 0, sizeof *o);
  int64_t ncombo = 1;
  for (int g = 0; g < ng; g++)
    if (up[g] > 1) opt_add(o, KN_OPT_UPCAST, g, up[g]), ncombo *= up[g];
  int ax = inner_reduce_axis(it);
  bool out_lanes = lanes_dim >= 0 && lanes_dim < ng && (caps->opts & KN_OPT_BIT(KN_OPT_LANES)) &&
                   gshape[lanes_dim] % (up[lanes_dim] * KN_OUT_LANES) == 0;
  if (out_lanes) opt_add(o, KN_OPT_LANES, lanes_dim, KN_OUT_LANES);
  if (!out_lanes && ax >= 0 && (caps->opts & KN_OPT_BIT(KN_OPT_SPLIT)) &&
      (it->reduce->arg[0] == N_ADD || it->reduce->arg[0] == N_MAX)) {
    int64_t len = it->reduce->src[0]->shape[ax];
    if (lanes > 1 && lanes <= 16 && len % lanes == 0) opt_add(o, KN_OPT_SPLIT, 0, lanes);
    if (lanes == 0 && ncombo <= 4)
      for (int64_t k = 16; k >= 4; k /= 2)
        if (len % k == 0) {
          opt_add(o, KN_OPT_SPLIT, 0, k);
          break;
        }
  }
  int64_t upl[KILN_MAX_DIMS]; /* outputs per step of each dim's loop */
  for (int g = 0; g < ng; g++)
    upl[g] = up[g] * (out_lanes && g == lanes_dim ? KN_OUT_LANES : 1);
  int64_t blk = caps->opts & KN_OPT_BIT(KN_OPT_BLOCK) ? pick_block(it, ng, gshape, upl) : 1;
  if (blk > 1) opt_add(o, KN_OPT_BLOCK, 0, blk);
}

/* Appends the ordinary lops of one loop level (not loops, accumulators, constants, or what
 * runs after the reduce) in creation order, which is a valid order for their sources. */
static int emit_level(const lb *L, int lvl, int *order, int no) {
  for (int i = 0; i < L->n; i++) {
    int op = L->b[i].op.op;
    if (op == L_RANGE || op == L_GIDX || op == L_GROUP || op == L_LIDX || op == L_ACC ||
        op == L_ACCUP || op == L_CONST)
      continue;
    if (L->b[i].level == lvl && !L->b[i].stage) order[no++] = i;
  }
  return no;
}

int kn_lower_gshape(const kn_sched_item *it, int64_t *gshape) {
  int gdim_of[KILN_MAX_DIMS];
  return global_dims(it->out, gdim_of, gshape);
}

void kn_heuristic(const kn_sched_item *it, const kn_devcaps *caps, kn_opts *o) {
  int gdim_of[KILN_MAX_DIMS];
  int64_t gshape[KILN_MAX_DIMS], up[KILN_MAX_DIMS];
  int ng = global_dims(it->out, gdim_of, gshape), lanes_dim = -1;
  memset(o, 0, sizeof *o);
  if (pick_grouped(it, caps, ng, gshape, o)) return;
  if (caps->opts & KN_OPT_BIT(KN_OPT_UPCAST))
    pick_upcasts(it, ng, gdim_of, gshape, caps->pool, up, &lanes_dim); /* rows: CPU registers */
  else
    for (int g = 0; g < ng; g++)
      up[g] = 1;
  kn_opts_complete(it, caps, up, 0, lanes_dim, o);
}

const char *const kn_opt_names[KN_NOPT_KINDS] = {"UPCAST", "SPLIT",  "BLOCK", "GROUP",
                                                 "LOCAL",  "UNROLL", "PADTO", "LANES"};
void kn_opts_format(const kn_opts *o, char *out, size_t n) {
  size_t w = 0;
  out[0] = 0;
  for (int i = 0; i < o->n && w < n; i++)
    w += snprintf(out + w, n - w, "%s%s(%d,%d)", i ? " " : "",
                  o->o[i].op >= 0 && o->o[i].op < KN_NOPT_KINDS ? kn_opt_names[o->o[i].op] : "?",
                  o->o[i].axis, (int)o->o[i].amt);
}
bool kn_opts_equal(const kn_opts *a, const kn_opts *b) {
  if (a->n != b->n) return false;
  for (int i = 0; i < a->n; i++)
    if (a->o[i].op != b->o[i].op || a->o[i].axis != b->o[i].axis || a->o[i].amt != b->o[i].amt)
      return false;
  return true;
}
int kn_opts_parse(const char *s, kn_opts *o) {
  memset(o, 0, sizeof *o);
  for (;;) {
    while (*s == ' ' || *s == '\n')
      s++;
    if (!*s) return 0;
    char name[16];
    int axis, amt, used;
    if (o->n == KN_MAX_OPTS || sscanf(s, "%15[A-Z](%d,%d)%n", name, &axis, &amt, &used) != 3 ||
        axis < 0 || axis > 255 || amt < 1)
      return -1;
    int op = -1;
    for (int k = 0; k < KN_NOPT_KINDS; k++)
      if (!strcmp(name, kn_opt_names[k])) op = k;
    if (op < 0) return -1;
    opt_add(o, op, axis, amt);
    s += used;
  }
}

/* The loops of the launch before they become launch dims: global dim `dim`, its bound and
 * the multiple of the dim's index each step is worth. */
typedef struct {
  int dim;
  int64_t bound, mult, local;
} gloop;

static int64_t lanes_of(const lb *L, int g) { return g >= 0 && g == L->lanes_dim ? L->lanes : 1; }

/* Applies opts to L and the launch loops (gshape, the global dims' sizes, comes back padded
 * by PADTO); false with an error when one does not apply. */
static bool apply_opts(lb *L, const kn_devcaps *caps, const kn_opts *opts, int ng, int64_t *gshape,
                       int64_t *up, int64_t *blk, int64_t *local) {
  const kn_sched_item *it = L->it;
  kn_node *r = it->reduce, *s = r ? r->src[0] : NULL;
  bool padded[KILN_MAX_DIMS] = {false};
  for (int g = 0; g < ng; g++)
    up[g] = 1, local[g] = 1;
  *blk = 1;
  for (int i = 0; i < opts->n; i++) {
    const kn_opt *o = &opts->o[i];
    int ax = o->axis;
    int64_t amt = o->amt;
    bool ok = o->op < KN_NOPT_KINDS && (caps->opts & KN_OPT_BIT(o->op)) && amt >= 1;
    switch (o->op) {
    case KN_OPT_UPCAST:
      ok = ok && ax < ng && amt <= 64 && gshape[ax] % (up[ax] * amt * lanes_of(L, ax)) == 0;
      if (ok) up[ax] *= amt;
      break;
    case KN_OPT_SPLIT:
      ax = inner_reduce_axis(it);
      ok = ok && ax >= 0 && L->split_axis < 0 && L->lanes_dim < 0 && amt >= 2 && amt <= 16 &&
           s->shape[ax] % amt == 0 && ax != L->group_axis && ax != L->unroll_axis &&
           (r->arg[0] == N_ADD || r->arg[0] == N_MAX);
      if (ok) L->split_axis = ax, L->lanes = amt;
      break;
    case KN_OPT_BLOCK:
      ok = ok && ng >= 2 && *blk == 1 && amt >= 2;
      if (ok) *blk = amt;
      break;
    case KN_OPT_GROUP:
      ok = ok && r && ax < s->ndim && (r->arg[1] >> ax & 1) && L->group_axis < 0 &&
           L->lanes_dim < 0 && amt >= 2 && amt <= caps->max_local && s->shape[ax] % amt == 0 &&
           ax != L->split_axis && ax != L->unroll_axis &&
           amt * (int64_t)sizeof(double) <= caps->local_mem;
      if (ok) L->group_axis = ax, L->group = amt;
      break;
    case KN_OPT_LOCAL:
      ok = ok && ax < ng && local[ax] == 1 && amt >= 2 && amt <= caps->max_local;
      if (ok) local[ax] = amt;
      break;
    case KN_OPT_UNROLL:
      ok = ok && r && ax < s->ndim && (r->arg[1] >> ax & 1) && L->unroll_axis < 0 && amt >= 2 &&
           amt <= 32 && s->shape[ax] % amt == 0 && ax != L->split_axis && ax != L->group_axis;
      if (ok) L->unroll_axis = ax, L->unroll = amt;
      break;
    case KN_OPT_PADTO: /* before what it is for: nothing may have split the dim yet */
      ok = ok && ax < ng && !padded[ax] && up[ax] == 1 && local[ax] == 1 && ax != L->lanes_dim &&
           amt >= 2 && amt <= 256 && gshape[ax] % amt != 0;
      if (ok) padded[ax] = true, gshape[ax] = (gshape[ax] + amt - 1) / amt * amt;
      break;
    case KN_OPT_LANES:
      ok = ok && r && ax < ng && L->lanes_dim < 0 && L->split_axis < 0 && L->group_axis < 0 &&
           amt >= 2 && amt <= 16 && gshape[ax] % (up[ax] * amt) == 0;
      if (ok) L->lanes_dim = ax, L->lanes = amt;
      break;
    default:
      ok = false;
    }
    if (!ok) {
      char t[256];
      kn_opts_format(opts, t, sizeof t);
      kn_err("codegen: %s (option %d of %s) does not apply to this kernel on this device",
             o->op < KN_NOPT_KINDS ? kn_opt_names[o->op] : "?", i + 1, t);
      return false;
    }
  }
  for (int g = 0; g < ng; g++) /* what the upcasts leave of a dim its groups must divide */
    if ((gshape[g] / up[g] / lanes_of(L, g)) % local[g] || (L->group_axis >= 0 && local[g] > 1) ||
        (g == 0 && *blk > 1 && (gshape[0] / up[0] / lanes_of(L, 0)) % *blk)) {
      kn_err("codegen: LOCAL, BLOCK or GROUP do not divide global dim %d or do not combine", g);
      return false;
    }
  if (L->group_axis >= 0 && caps->pool) {
    kn_err("codegen: GROUP needs a device whose launch dims are work-groups");
    return false;
  }
  return true;
}

/* Index math in 32 bits where the value ranges allow: launch indices, loop variables and the
 * adds, products, divisions and remainders over them whose values all stay within 2^30 (a
 * margin for launches rounded up to whole work-groups), their constants as 32-bit twins.
 * What reads them as 64-bit values (a load of an i64 tensor's index, a comparison with a
 * 64-bit value) sees the same numbers. */
static void narrow_indices(lb *L) {
  int n0 = L->n;
  bool *narrow = kn_xcalloc((size_t)n0 + 1, sizeof(bool));
  for (int i = 0; i < n0; i++) {
    const blop *b = &L->b[i];
    int op = b->op.op;
    if (b->op.dtype != KILN_I64 || b->lo < -(1ll << 30) || b->hi > (1ll << 30) || op == L_CONST)
      continue;
    bool ok = op == L_GIDX || op == L_GROUP || op == L_LIDX || op == L_RANGE;
    if (op == N_ADD || op == N_MUL || op == N_IDIV || op == N_MOD || op == N_NEG || op == N_WHERE) {
      ok = true;
      for (int s = op == N_WHERE; s < 3; s++) { /* a where's condition is a bool */
        int x = b->op.src[s];
        if (x < 0) continue;
        const blop *sb = &L->b[x];
        ok = ok && (narrow[x] || (sb->op.op == L_CONST && sb->op.dtype == KILN_I64 &&
                                  sb->lo >= INT32_MIN && sb->hi <= INT32_MAX));
      }
    }
    narrow[i] = ok;
  }
  for (int i = 0; i < n0; i++) {
    if (!narrow[i]) continue;
    L->b[i].op.dtype = KILN_I32;
    for (int s = L->b[i].op.op == N_WHERE; s < 3; s++) {
      int x = L->b[i].op.src[s];
      if (x >= 0 && L->b[x].op.op == L_CONST) {
        int twin = cint(L, KILN_I32, L->b[x].op.ival); /* may move L->b */
        L->b[i].op.src[s] = twin;
      }
    }
  }
  free(narrow);
}

kn_kernel *kn_lower(const kn_sched_item *it, const kn_devcaps *caps, const kn_opts *given) {
  lb L = {.it = it,
          .split_axis = -1,
          .lanes = 1,
          .group_axis = -1,
          .group = 1,
          .comb_range = -1,
          .unroll_axis = -1,
          .unroll = 1,
          .lanes_dim = -1};
  kn_node *out = it->out;
  kn_opts heur;
  if (!given) kn_heuristic(it, caps, &heur);
  const kn_opts *opts = given ? given : &heur;
  int gdim_of[KILN_MAX_DIMS];
  int64_t gshape[KILN_MAX_DIMS], up[KILN_MAX_DIMS], glocal[KILN_MAX_DIMS], blk, gpad[KILN_MAX_DIMS];
  int ng = global_dims(out, gdim_of, gshape);
  memcpy(gpad, gshape, sizeof(int64_t) * (size_t)ng);
  if (!apply_opts(&L, caps, opts, ng, gpad, up, &blk, glocal)) {
    KN_ASSERT(given, "the heuristic's optimizations do not apply: %s", kiln_error());
    free(L.b), free(L.ht);
    return NULL;
  }
  kn_kernel *k = kn_xcalloc(1, sizeof *k);
  k->opts = *opts;
  k->nbufs = it->ninputs + 1;
  k->buf_dtype[0] = out->dtype;
  k->buf_numel[0] = kn_numel(out->ndim, out->shape);
  for (int i = 0; i < it->ninputs; i++) {
    k->buf_dtype[i + 1] = it->inputs[i]->dtype;
    k->buf_numel[i + 1] = kn_numel(it->inputs[i]->ndim, it->inputs[i]->shape);
  }
  /* global loops: one per dim, outermost first; BLOCK splits dim 0 so that a block of its
   * rows runs inside the loop over the last dim, keeping that dim's reduce operand in cache.
   * A kernel of one output element that GROUP spreads over a group has one loop of 1. */
  gloop loops[KILN_MAX_DIMS + 2];
  int nl = 0;
  int64_t upl[KILN_MAX_DIMS]; /* outputs per step of a dim's loop: its upcast and lanes */
  for (int g = 0; g < ng; g++)
    upl[g] = up[g] * lanes_of(&L, g);
  for (int g = 0; g < ng; g++) /* a dim its upcast takes whole needs no loop (and must not
                                  be the pool's dim 0, with one slice for all threads) */
    if (gpad[g] / upl[g] > 1) loops[nl++] = (gloop){g, gpad[g] / upl[g], upl[g], glocal[g]};
  if (blk > 1) {
    loops[0].bound /= blk, loops[0].mult *= blk;
    loops[nl++] = (gloop){0, blk, upl[0], 1};
  }
  if (!nl && L.group_axis >= 0) loops[nl++] = (gloop){-1, 1, 1, 1};
  /* launch dims: one per loop, or, past the device's limit, the outermost loops merged into
   * one (their vars recovered by division). On a pool device launch dim 0 is the outermost
   * (its threads take slices of it); elsewhere the innermost, so adjacent work-items touch
   * adjacent memory. A loop with work-groups (LOCAL) keeps a launch dim of its own. */
  int merge = nl > caps->max_dims ? nl - caps->max_dims + 1 : 1, nlaunch = nl - merge + 1;
  for (int l = 0; l < merge && merge > 1; l++)
    if (loops[l].local > 1) {
      kn_err("codegen: LOCAL on a global dim merged with others (the device has %d launch dims)",
             caps->max_dims);
      kn_kernel_free(k), free(L.b), free(L.ht);
      return NULL;
    }
  L.nglobal = nlaunch;
  int base[KILN_MAX_DIMS];
  for (int g = 0; g < ng; g++)
    base[g] = cint(&L, KILN_I64, 0);
  for (int j = 0; j < nlaunch; j++) {
    int first = j ? j + merge - 1 : 0, last = j ? first : merge - 1;
    int64_t bound = 1;
    for (int l = first; l <= last; l++)
      bound *= loops[l].bound;
    int dim = caps->pool ? j : nlaunch - 1 - j;
    bool grouped = L.group_axis >= 0 && dim == 0; /* the group's work-items run along dim 0 */
    int gid = range_op(&L, grouped ? L_GROUP : L_GIDX, bound, dim, j + 1);
    k->global[dim] = grouped ? bound * L.group : bound;
    k->local[dim] = grouped ? L.group : loops[last].local;
    if (grouped) {
      L.lid = range_op(&L, L_LIDX, L.group, 0, nlaunch);
      k->groups = true;
    }
    int64_t inner = bound;
    for (int l = first; l <= last; l++) {
      inner /= loops[l].bound;
      if (loops[l].dim < 0) continue;
      int var =
          alu(&L, N_MOD, KILN_I64, alu(&L, N_IDIV, KILN_I64, gid, cint(&L, KILN_I64, inner), -1),
              cint(&L, KILN_I64, loops[l].bound), -1);
      base[loops[l].dim] = add(&L, base[loops[l].dim], mul(&L, var, loops[l].mult));
    }
  }
  k->nglobal = nlaunch;
  /* every combination of upcast offsets is one unrolled copy of the body; with LANES each
   * lane's output is stored from its lane of the accumulators the combination shares */
  int64_t ncombo = 1, nlane = lanes_of(&L, L.lanes_dim);
  for (int g = 0; g < ng; g++)
    ncombo *= up[g];
  L.ncombo = ncombo;
  int lane_of[16];
  for (int l = 0; l < nlane && nlane > 1; l++) {
    /* arg 1: never equal to a plain constant (the CSE table holds every lop once grown) */
    kn_lop lc = {.op = L_CONST, .dtype = KILN_I64, .src = {-1, -1, -1}, .arg = 1, .ival = l};
    lane_of[l] = push(&L, lc, 0, 0, l, l, false);
    L.b[lane_of[l]].lane_const = true;
  }
  /* with GROUP, one work-item of the group stores */
  int guard =
      L.group_axis >= 0 ? alu(&L, N_CMPLT, KILN_BOOL, L.lid, cint(&L, KILN_I64, 1), -1) : -1;
  for (int64_t cl = 0; cl < ncombo * nlane; cl++) {
    int idx[KILN_MAX_DIMS];
    int64_t c = cl / nlane, rem = c;
    L.cur_lane = (int)(cl % nlane);
    for (int i = 0; i < out->ndim; i++)
      idx[i] = cint(&L, KILN_I64, 0);
    int store_guard = guard;
    for (int g = ng - 1; g >= 0; g--) {
      int64_t off = rem % up[g];
      rem /= up[g];
      int x = add(&L, base[g], cint(&L, KILN_I64, off * lanes_of(&L, g)));
      if (g == L.lanes_dim) x = add(&L, x, lane_of[L.cur_lane]);
      if (gpad[g] != gshape[g]) { /* PADTO: past the end, compute the last index, store nothing */
        int n = cint(&L, KILN_I64, gshape[g]), in = alu(&L, N_CMPLT, KILN_BOOL, x, n, -1);
        x = alu(&L, N_WHERE, KILN_I64, in, x, cint(&L, KILN_I64, gshape[g] - 1));
        store_guard = store_guard < 0 ? in : alu(&L, N_AND, KILN_BOOL, store_guard, in, -1);
      }
      idx[gdim_of[g]] = x;
    }
    int v = lower(&L, out, idx, -1);
    int flat = cint(&L, KILN_I64, 0);
    int64_t stride = 1;
    for (int i = out->ndim - 1; i >= 0; i--) {
      if (out->shape[i] != 1) flat = add(&L, flat, mul(&L, idx[i], stride));
      stride *= out->shape[i];
    }
    kn_lop st = {.op = L_STORE, .dtype = out->dtype, .src = {flat, v, store_guard}, .arg = 0};
    push(&L, st, nlaunch, stage_of(&L, v), 0, 0, false);
  }
  if (L.failed) {
    kn_kernel_free(k), free(L.b), free(L.ht), free(L.memo), free(L.memoht), free(L.lane_acc);
    if (given) return NULL;
    /* the heuristic's LANES on a reduce whose index reads memory along the lanes (rows picked
     * by index): the same list without it */
    kiln_clear_error();
    kn_opts o = {0};
    for (int i = 0; i < heur.n; i++)
      if (heur.o[i].op != KN_OPT_LANES) o.o[o.n++] = heur.o[i];
    kn_kernel *k2 = kn_lower(it, caps, &o);
    KN_ASSERT(k2, "the heuristic's optimizations do not apply: %s", kiln_error());
    return k2;
  }
  if (caps->index32) narrow_indices(&L);
  /* ---- linearize: loops open outermost first; each lop goes to its level, then its stage ---- */
  int G = nlaunch, R = L.nred, *order = kn_xmalloc(sizeof(int) * (L.n * 2 + 32)),
      *remap = kn_xmalloc(sizeof(int) * L.n);
  int no = 0;
  int ends[2 * KILN_MAX_DIMS], nends = 0;
  bool has_acc = false;
  for (int i = 0; i < L.n; i++)
    has_acc = has_acc || L.b[i].op.op == L_ACC;
  for (int i = 0; i < L.n; i++)
    if (L.b[i].op.op == L_CONST) order[no++] = i;
  for (int lvl = 0; lvl <= G; lvl++) { /* launch indices: no loops, so no ENDs */
    if (lvl > 0)
      for (int i = 0; i < L.n; i++)
        if ((L.b[i].op.op == L_GIDX || L.b[i].op.op == L_GROUP || L.b[i].op.op == L_LIDX) &&
            L.b[i].level == lvl)
          order[no++] = i;
    no = emit_level(&L, lvl, order, no);
  }
  if (has_acc) {
    for (int i = 0; i < L.n; i++)
      if (L.b[i].op.op == L_ACC && !L.b[i].stage) order[no++] = i;
    for (int lvl = G + 1; lvl <= G + R; lvl++) {
      for (int i = 0; i < L.n; i++)
        if (L.b[i].op.op == L_RANGE && L.b[i].level == lvl && !L.b[i].stage)
          order[no++] = i, ends[nends++] = i;
      no = emit_level(&L, lvl, order, no);
    }
    for (int i = 0; i < L.n; i++)
      if (L.b[i].op.op == L_ACCUP && !L.b[i].stage) order[no++] = i;
    for (int r = 0; r < R; r++)
      order[no++] = -1 - ends[--nends];
    for (int st = 1; st <= 3; st++) {
      if (st == 2 && L.comb_range >= 0) { /* the group's combine: barrier, accumulators, loop */
        order[no++] = -1 - L.n;
        for (int i = 0; i < L.n; i++)
          if (L.b[i].op.op == L_ACC && L.b[i].stage == 2) order[no++] = i;
        order[no++] = L.comb_range;
        for (int i = 0; i < L.n; i++)
          if (L.b[i].stage == 2 && (L.b[i].op.op == L_LOCLOAD || L.b[i].op.op == L_ACCUP))
            order[no++] = i;
        order[no++] = -1 - L.comb_range;
        continue;
      }
      for (int i = 0; i < L.n; i++) /* after the reduce: what reads its accumulators, in order */
        if (L.b[i].stage == st && L.b[i].op.op != L_ACC && L.b[i].op.op != L_ACCUP) order[no++] = i;
    }
  }
  while (nends)
    order[no++] = -1 - ends[--nends];
  /* renumber */
  k->ops = kn_xcalloc(no, sizeof(kn_lop));
  k->nops = no;
  double trips = 1;
  double tripstack[2 * KILN_MAX_DIMS + 1];
  int depth = 0;
  for (int p = 0; p < no; p++) {
    kn_lop *d = &k->ops[p];
    if (order[p] == -1 - L.n) {
      *d = (kn_lop){.op = L_BARRIER, .src = {-1, -1, -1}};
      continue;
    }
    if (order[p] < 0) { /* END */
      int r = -1 - order[p];
      *d = (kn_lop){.op = L_END, .dtype = KILN_I64, .src = {remap[r], -1, -1}};
      k->ops[remap[r]].arg2 = p;
      trips = tripstack[--depth];
      continue;
    }
    *d = L.b[order[p]].op;
    remap[order[p]] = p;
    for (int s = 0; s < 3; s++)
      if (d->src[s] >= 0) d->src[s] = remap[d->src[s]];
    if (d->op == L_RANGE) {
      tripstack[depth++] = trips;
      trips *= (double)d->arg;
    } else if (d->op == L_GIDX || d->op == L_GROUP || d->op == L_LIDX)
      trips *= (double)d->arg;
    else if (kn_is_alu(d->op) && kiln_dtype_is_float(d->dtype))
      k->flops += trips;
    else if (d->op == L_ACCUP && kiln_dtype_is_float(d->dtype))
      k->flops += trips;
  }
  /* every lop must come after its sources */
  for (int p = 0; p < no; p++)
    for (int s = 0; s < 3; s++)
      KN_ASSERT(k->ops[p].src[s] < p || k->ops[p].op == L_END, "lop %d reads a later lop", p);
  kn_vectorize(k, caps->vec_width);
  for (int i = 0; i < k->nbufs; i++)
    k->bytes += (double)k->buf_numel[i] * kiln_dtype_size(k->buf_dtype[i]);
  int nn = snprintf(k->name, sizeof k->name, "%s", it->reduce ? "r" : "E");
  for (int g = 0; g < ng && nn < 80; g++)
    nn += snprintf(k->name + nn, sizeof k->name - nn, "_%lld", (long long)gshape[g]);
  if (!ng) snprintf(k->name + nn, sizeof k->name - nn, "_1");
  free(order);
  free(remap);
  free(L.b);
  free(L.ht);
  free(L.memo);
  free(L.memoht);
  free(L.lane_acc);
  return k;
}

void kn_kernel_free(kn_kernel *k) {
  if (!k) return;
  free(k->ops);
  free(k);
}

void kn_kernel_print(FILE *f, const kn_kernel *k) {
  static const char *lnames[] = {"CONST", "GIDX",  "GROUP",  "LIDX",  "RANGE",
                                 "END",   "LOAD",  "STORE",  "ACC",   "ACCUP",
                                 "LANE",  "LOCAL", "LSTORE", "LLOAD", "BARRIER"};
  fprintf(f, "kernel %s (%d lops)\n", k->name, k->nops);
  for (int i = 0; i < k->nops; i++) {
    const kn_lop *o = &k->ops[i];
    const char *nm = o->op >= N_NOPS ? lnames[o->op - N_NOPS] : kn_op_names[o->op];
    fprintf(f, "  %4d %-8s %-5s src=(%d,%d,%d) arg=%lld i=%lld f=%g", i, nm,
            kiln_dtype_name(o->dtype), o->src[0], o->src[1], o->src[2], (long long)o->arg,
            (long long)o->ival, o->fval);
    fprintf(f, o->vec ? " vec=%d\n" : "\n", o->vec);
  }
}
