/* node.c — the graph IR: hash-consed immutable nodes with reference counts. A node is
 * identified by (op, dtype, device, shape, sources, arg, cval); BUFFER nodes are unique. */
#include "internal.h"

const char *const kn_op_names[N_NOPS] = {
    "BUFFER",  "CONST",   "NEG",    "EXP2", "LOG2",   "SIN",   "SQRT",   "RECIP",
    "CAST",    "BITCAST", "ADD",    "MUL",  "MAX",    "CMPLT", "CMPNE",  "IDIV",
    "MOD",     "AND",     "OR",     "XOR",  "SHL",    "SHR",   "DOT4",   "WHERE",  "REDUCE",
    "RESHAPE", "PERMUTE", "EXPAND", "PAD",  "SHRINK", "FLIP",  "GATHER", "CONTIGUOUS"};

static kn_node **table;
static size_t table_cap, table_len;
static int64_t live_nodes, buffer_ids;

int64_t kn_nodes_live(void) { return live_nodes; }

/* Hash of the identity fields only. */
static uint64_t node_hash(const kn_node *n) {
  uint64_t h = kn_hash_bytes(0, &n->op, 4);
  h = kn_hash_bytes(h, &n->device, sizeof n->device);
  h = kn_hash_bytes(h, &n->rg, 1);
  h = kn_hash_bytes(h, n->shape, sizeof(int64_t) * n->ndim);
  h = kn_hash_bytes(h, n->src, sizeof(kn_node *) * n->nsrc);
  h = kn_hash_bytes(h, n->arg, sizeof n->arg);
  h = kn_hash_bytes(h, &n->cval, sizeof n->cval);
  return h ^ (h >> 29);
}

static bool node_eq(const kn_node *a, const kn_node *b) {
  return a->op == b->op && a->rg == b->rg && a->dtype == b->dtype && a->ndim == b->ndim &&
         a->nsrc == b->nsrc && a->device == b->device &&
         !memcmp(a->shape, b->shape, sizeof(int64_t) * a->ndim) &&
         !memcmp(a->src, b->src, sizeof(kn_node *) * a->nsrc) &&
         !memcmp(a->arg, b->arg, sizeof a->arg) && !memcmp(&a->cval, &b->cval, sizeof a->cval);
}

static void table_grow(void) {
  size_t ncap = table_cap ? table_cap * 2 : 4096;
  kn_node **nt = kn_xcalloc(ncap, sizeof *nt);
  for (size_t i = 0; i < table_cap; i++)
    for (kn_node *n = table[i], *next; n; n = next) {
      next = n->chain;
      n->chain = nt[n->hash & (ncap - 1)];
      nt[n->hash & (ncap - 1)] = n;
    }
  free(table);
  table = nt;
  table_cap = ncap;
}

static void table_remove(kn_node *n) {
  if (!table_cap) return;
  for (kn_node **p = &table[n->hash & (table_cap - 1)]; *p; p = &(*p)->chain)
    if (*p == n) {
      *p = n->chain;
      table_len--;
      return;
    }
}

kn_node *kn_node_make(int op, int dtype, int device, int ndim, const int64_t *shape, int nsrc,
                      kn_node *const *src, const int64_t *arg, int narg, double cval) {
  kn_node key;
  memset(&key, 0, sizeof key);
  key.op = op, key.dtype = dtype, key.device = device, key.ndim = ndim, key.nsrc = nsrc;
  if (ndim) memcpy(key.shape, shape, sizeof(int64_t) * ndim);
  for (int i = 0; i < nsrc; i++) {
    key.src[i] = src[i];
    key.rg |= src[i]->rg && kn_grad_enabled;
  }
  if (narg) memcpy(key.arg, arg, sizeof(int64_t) * narg);
  if (cval == 0) cval = 0; /* -0.0 and 0.0 hash alike only where they are equal values */
  key.cval = cval;
  key.hash = node_hash(&key);
  if (table_len * 2 >= table_cap) table_grow();
  for (kn_node *n = table[key.hash & (table_cap - 1)]; n; n = n->chain)
    if (n->hash == key.hash && node_eq(n, &key)) {
      n->refs++;
      return n;
    }
  kn_node *n = kn_xmalloc(sizeof *n);
  *n = key;
  n->refs = 1;
  for (int i = 0; i < nsrc; i++)
    kn_node_ref(src[i]);
  n->chain = table[key.hash & (table_cap - 1)];
  table[key.hash & (table_cap - 1)] = n;
  table_len++;
  live_nodes++;
  return n;
}

kn_node *kn_node_buffer(int dtype, int device, int ndim, const int64_t *shape,
                        struct kn_buffer *buf) {
  int64_t id = ++buffer_ids;
  kn_node *n = kn_node_make(N_BUFFER, dtype, device, ndim, shape, 0, NULL, &id, 1, 0);
  n->buf = buf;
  return n;
}

kn_node *kn_node_unique_view(kn_node *v, bool rg) {
  int64_t arg[2 * KILN_MAX_DIMS] = {0};
  memcpy(arg, v->shape, sizeof(int64_t) * v->ndim);
  arg[2 * KILN_MAX_DIMS - 1] = ++buffer_ids; /* past the shape: only makes it unique */
  kn_node *n = kn_node_make(N_RESHAPE, v->dtype, v->device, v->ndim, v->shape, 1, &v, arg,
                            2 * KILN_MAX_DIMS, 0);
  if (rg && !n->rg) { /* rg is part of the identity: rehash */
    table_remove(n);
    n->rg = 1;
    n->hash = node_hash(n);
    n->chain = table[n->hash & (table_cap - 1)];
    table[n->hash & (table_cap - 1)] = n;
    table_len++;
  }
  return n;
}

void kn_node_ref(kn_node *n) { n->refs++; }

void kn_node_unref(kn_node *n) {
  KN_ASSERT(n->refs > 0, "unref of a dead node (%s)", kn_op_names[n->op]);
  if (--n->refs) return;
  table_remove(n);
  for (int i = 0; i < n->nsrc; i++)
    kn_node_unref(n->src[i]);
  kn_held_drop(n->buf);
  if (n->grad) kn_node_unref(n->grad);
  kn_held_drop(n->vjp);
  live_nodes--;
  free(n);
}

bool kn_grad_enabled = true;

void kn_node_set_realized(kn_node *n, struct kn_buffer *buf) {
  if (n->rg) { /* stays in the table: equal graphs later reuse the data */
    n->buf = buf;
    return;
  }
  table_remove(n);
  n->op = N_BUFFER;
  n->buf = buf;
  n->arg[0] = ++buffer_ids;
  int nsrc = n->nsrc;
  n->nsrc = 0;
  for (int i = 0; i < nsrc; i++)
    kn_node_unref(n->src[i]);
  n->hash = node_hash(n);
  n->chain = NULL; /* buffers are never looked up by structure */
}
