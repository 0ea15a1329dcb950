/* schedule.c — cuts the lazy graph into kernels. Elementwise ops and movement views fuse
 * into their consumer; a reduce fuses with the ops feeding it and those after it. A node gets
 * its own buffer when it is a root, a CONTIGUOUS, a reduce that would otherwise be recomputed
 * (read through an expand, nested in another reduce, a second reduce in one kernel, read by
 * several nodes, or on a gradient path: backward reads it again), or an elementwise chain of more
 * than a couple of ops that a reduce reads through an expand (recomputing it for every expanded
 * copy costs more than storing it). */
#include "internal.h"

/* ---- a small pointer set (open addressing) ---- */
typedef struct {
  uintptr_t *keys;
  size_t cap, len;
} pset;
static bool pset_add(pset *s, uintptr_t k) { /* true if newly added */
  if (s->len * 2 >= s->cap) {
    pset o = *s;
    s->cap = o.cap ? o.cap * 2 : 64;
    s->keys = kn_xcalloc(s->cap, sizeof(uintptr_t));
    s->len = 0;
    for (size_t i = 0; i < o.cap; i++)
      if (o.keys[i]) pset_add(s, o.keys[i]);
    free(o.keys);
  }
  size_t i = (k * 0x9E3779B97F4A7C15ull) >> 7;
  for (;; i++) {
    uintptr_t *slot = &s->keys[i & (s->cap - 1)];
    if (*slot == k) return false;
    if (!*slot) {
      *slot = k;
      s->len++;
      return true;
    }
  }
}
static bool pset_has(const pset *s, uintptr_t k) {
  if (!s->cap) return false;
  for (size_t i = (k * 0x9E3779B97F4A7C15ull) >> 7;; i++) {
    uintptr_t v = s->keys[i & (s->cap - 1)];
    if (v == k) return true;
    if (!v) return false;
  }
}

typedef struct {
  kn_schedule *out;
  int cap;
  pset scheduled; /* nodes that get a buffer in this schedule */
  pset shared;    /* unrealized nodes read by more than one node of the graph */
  bool overflow;  /* a kernel being visited needed more than 63 inputs */
} builder;

/* Marks the nodes with more than one reader (seen holds those met once). */
static void count_readers(builder *b, pset *seen, kn_node *n) {
  for (int i = 0; i < n->nsrc; i++) {
    kn_node *s = n->src[i];
    if (kn_is_realized(s)) continue;
    if (pset_add(seen, (uintptr_t)s))
      count_readers(b, seen, s);
    else
      pset_add(&b->shared, (uintptr_t)s);
  }
}

/* Whether n's kernel would fuse a reduce (one not behind an expand, which gets a buffer). */
static bool fuses_reduce(builder *b, kn_node *n, int depth) {
  if (kn_is_realized(n) || pset_has(&b->scheduled, (uintptr_t)n) || n->op == N_EXPAND || depth > 64)
    return false;
  if (n->op == N_REDUCE) return true;
  for (int i = 0; i < n->nsrc; i++)
    if (fuses_reduce(b, n->src[i], depth + 1)) return true;
  return false;
}

/* ALU ops in the unrealized graph under n, counted up to `limit` (a reduce or a contiguous
 * copy gets a buffer of its own, so what is under it costs nothing here). */
static int alu_cost(builder *b, kn_node *n, int limit) {
  if (kn_is_realized(n) || pset_has(&b->scheduled, (uintptr_t)n) || n->op == N_REDUCE ||
      n->op == N_CONTIGUOUS)
    return 0;
  int c = kn_is_alu(n->op) && n->op != N_CAST ? 1 : 0;
  for (int i = 0; i < n->nsrc && c <= limit; i++)
    c += alu_cost(b, n->src[i], limit - c);
  return c;
}

/* Whether an expand under the reduce `red` broadcasts only dims that come after all the dims it
 * keeps, in loop order (e.g. (R,B,1,1) to (R,B,2,16) summed over the last dim): a scale per
 * block read by every element of the block. The loops run over the kept dims, then the reduced
 * ones innermost: (N,10,1) broadcast to (N,10,576) and summed over the 10 would be recomputed
 * per element of the sum. If n's shape is not the reduce's input shape, no order is known:
 * false. */
static bool expands_trailing_dims(const kn_node *n, const kn_node *red) {
  const kn_node *s = n->src[0], *in = red->src[0];
  if (in->ndim != n->ndim || memcmp(in->shape, n->shape, sizeof(int64_t) * n->ndim)) return false;
  int order[KILN_MAX_DIMS], k = 0;
  for (int reduced = 0; reduced < 2; reduced++)
    for (int i = 0; i < n->ndim; i++)
      if ((red->arg[1] >> i & 1) == reduced) order[k++] = i;
  bool seen_broadcast = false;
  for (int j = 0; j < n->ndim; j++) {
    int i = order[j];
    bool bc = s->shape[i] == 1 && n->shape[i] != 1;
    if (!bc && n->shape[i] != 1 && seen_broadcast) return false;
    seen_broadcast = seen_broadcast || bc;
  }
  return true;
}

/* Whether the unrealized graph under n reads model weights (kiln_from_blob): such views are
 * recomputed where read, never stored, so a model's weights are not copied (a quantized matrix
 * would grow eightfold as f32). */
static bool reads_blob(builder *b, kn_node *n, int *budget) {
  if (n->buf) return n->weights;
  if (pset_has(&b->scheduled, (uintptr_t)n) || --*budget < 0) return false; /* bounded walk */
  for (int i = 0; i < n->nsrc; i++)
    if (reads_blob(b, n->src[i], budget)) return true;
  return false;
}

static void add_input(builder *b, kn_sched_item *it, kn_node *n) {
  for (int i = 0; i < it->ninputs; i++)
    if (it->inputs[i] == n) return;
  if (it->ninputs == 63) { /* too many: the caller splits the graph and visits again */
    b->overflow = true;
    return;
  }
  it->inputs[it->ninputs++] = n;
  kn_node_ref(n);
}

static void schedule_node(builder *b, kn_node *n);

/* Visits the part of the graph fused into kernel `it`. */
static void visit(builder *b, kn_sched_item *it, pset *seen, kn_node *n, bool expand, bool inred,
                  bool root) {
  if (!pset_add(seen, (uintptr_t)n ^ (expand ? 1 : 0) ^ (inred ? 2 : 0) ^ (root ? 4 : 0))) return;
  if (kn_is_realized(n) || (!root && pset_has(&b->scheduled, (uintptr_t)n))) {
    add_input(b, it, n);
    return;
  }
  if (n->op == N_CONST) return;
  bool own =
      !root &&
      (n->op == N_CONTIGUOUS ||
       (n->op == N_REDUCE && (expand || inred || n->rg || (it->reduce && it->reduce != n))) ||
       (pset_has(&b->shared, (uintptr_t)n) && fuses_reduce(b, n, 0)));
  if (own) {
    schedule_node(b, n);
    add_input(b, it, n);
    return;
  }
  if (n->op == N_REDUCE) {
    it->reduce = n;
    inred = true;
  }
  if (n->op == N_EXPAND) {
    expand = true;
    kn_node *s = n->src[0];
    /* store it once rather than recompute it per copy; a broadcast of trailing dims only is
     * cheap to recompute, as codegen hoists it out of the inner loops those dims become */
    if (inred && !expands_trailing_dims(n, it->reduce) && alu_cost(b, s, 3) > 2 &&
        !reads_blob(b, s, &(int){256})) {
      schedule_node(b, s);
      add_input(b, it, s);
      return;
    }
  }
  for (int i = 0; i < n->nsrc; i++)
    visit(b, it, seen, n->src[i], expand, inred, false);
}

/* Buffers a kernel rooted at n would read (counted with repeats, so an upper bound). A kernel
 * takes at most 63: bottom-up, a node whose sources would read more than 48 gives its largest
 * source a kernel of its own. memo maps node -> count + 1. */
typedef struct {
  kn_node **k;
  int *v;
  size_t cap;
} cmap;
static int *cslot(cmap *m, kn_node *n) {
  for (size_t i = ((uintptr_t)n * 0x9E3779B97F4A7C15ull) >> 9;; i++) {
    size_t j = i & (m->cap - 1);
    if (m->k[j] == n || !m->k[j]) {
      m->k[j] = n;
      return &m->v[j];
    }
  }
}
static void schedule_node(builder *b, kn_node *n);
/* Gives n's largest sources kernels of their own until n reads at most 48 buffers. */
static int split_sources(builder *b, kn_node *n, int *c, int total) {
  while (total > 48) {
    int big = 0;
    for (int i = 1; i < n->nsrc; i++)
      big = c[i] > c[big] ? i : big;
    schedule_node(b, n->src[big]);
    total -= c[big] - 1, c[big] = 1;
  }
  return total;
}
static int chunk(builder *b, cmap *m, size_t *len, kn_node *n) {
  if (kn_is_realized(n) || pset_has(&b->scheduled, (uintptr_t)n)) return 1;
  if (n->op == N_CONST) return 0;
  int *memo = cslot(m, n);
  if (*memo) return *memo - 1;
  int c[3] = {0, 0, 0}, total = 0;
  for (int i = 0; i < n->nsrc; i++)
    total += c[i] = chunk(b, m, len, n->src[i]);
  total = split_sources(b, n, c, total);
  memo = cslot(m, n); /* the table may have been written meanwhile, never resized */
  *memo = total + 1;
  if (++*len * 2 >= m->cap) { /* grow: rebuild from scratch next time (rare) */
    m->cap *= 2;
    m->k = kn_xrealloc(m->k, sizeof(kn_node *) * m->cap);
    m->v = kn_xrealloc(m->v, sizeof(int) * m->cap);
    memset(m->k, 0, sizeof(kn_node *) * m->cap);
    *len = 0;
  }
  return total;
}

static void schedule_node(builder *b, kn_node *n) {
  if (kn_is_realized(n) || !pset_add(&b->scheduled, (uintptr_t)n)) return;
  kn_sched_item it = {.out = n, .inputs = kn_xmalloc(sizeof(kn_node *) * 64)};
  kn_node_ref(n);
  /* Visiting may schedule nodes that an earlier part of the same visit had fused (a reduce
   * seen first directly, then through an expand): visit again until nothing new is scheduled,
   * so every node with its own buffer is read as an input. */
  size_t before;
  bool split = false;
  do {
    if (b->overflow && !split) { /* split the graph bottom-up, then visit again */
      cmap m = {kn_xcalloc(1024, sizeof(kn_node *)), kn_xcalloc(1024, sizeof(int)), 1024};
      size_t mlen = 0;
      int c[3] = {0, 0, 0}, total = 0;
      for (int i = 0; i < n->nsrc; i++)
        total += c[i] = chunk(b, &m, &mlen, n->src[i]);
      split_sources(b, n, c, total);
      free(m.k), free(m.v);
      split = true;
    }
    b->overflow = false;
    before = b->scheduled.len;
    for (int i = 0; i < it.ninputs; i++)
      kn_node_unref(it.inputs[i]);
    it.ninputs = 0;
    it.reduce = NULL;
    pset seen = {0};
    visit(b, &it, &seen, n, false, false, true);
    free(seen.keys);
  } while (b->scheduled.len != before || (b->overflow && !split));
  KN_ASSERT(!b->overflow, "kernel still reads more than 63 buffers after splitting");
  for (int i = 0; i < it.ninputs; i++)
    if (it.inputs[i] == it.reduce) it.reduce = NULL; /* materialized after all: read it */
  kn_schedule *s = b->out;
  if (s->nitems == b->cap) {
    b->cap = b->cap ? b->cap * 2 : 16;
    s->items = kn_xrealloc(s->items, sizeof(kn_sched_item) * b->cap);
  }
  s->items[s->nitems++] = it;
}

int kn_schedule_build(int nroots, kn_node *const *roots, kn_schedule *out) {
  memset(out, 0, sizeof *out);
  builder b = {.out = out};
  pset seen = {0};
  for (int i = 0; i < nroots; i++)
    if (!kn_is_realized(roots[i]) && pset_add(&seen, (uintptr_t)roots[i]))
      count_readers(&b, &seen, roots[i]);
  free(seen.keys);
  for (int i = 0; i < nroots; i++)
    schedule_node(&b, roots[i]);
  free(b.scheduled.keys);
  free(b.shared.keys);
  return 0;
}

void kn_schedule_free(kn_schedule *s) {
  for (int i = 0; i < s->nitems; i++) {
    for (int j = 0; j < s->items[i].ninputs; j++)
      kn_node_unref(s->items[i].inputs[j]);
    free(s->items[i].inputs);
    kn_node_unref(s->items[i].out);
  }
  free(s->items);
  memset(s, 0, sizeof *s);
}
