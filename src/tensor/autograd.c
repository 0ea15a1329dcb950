/* autograd.c — reverse-mode differentiation over the graph IR: one gradient rule per
 * primitive op. Gradients are more lazy graph, built with the Tensor API, so the backward
 * pass fuses with the optimizer update that consumes it. */
#include "internal.h"
#include <math.h>

typedef kiln_tensor T;
static T *tn(kn_node *n) { /* a scope-owned handle on n */
  kn_node_ref(n);
  return kn_wrap(n);
}

bool kiln_set_grad_enabled(bool on) {
  bool old = kn_grad_enabled;
  kn_grad_enabled = on;
  return old;
}
bool kiln_requires_grad(const kiln_tensor *t) { return t && t->node->rg; }

int kiln_set_requires_grad(kiln_tensor *t, bool on) {
  if (!t) return -1;
  if (on && !kiln_dtype_is_float(t->node->dtype)) {
    kn_err("set_requires_grad: only float tensors can require grad (got %s)",
           kiln_dtype_name(t->node->dtype));
    return -1;
  }
  if (on && (t->node->op != N_BUFFER || t->node->refs > 1)) {
    /* a parameter is a leaf with a buffer of its own (equal graphs share nodes) */
    if (kiln_realize(t) < 0) return -1;
    kn_node *n = t->node;
    kn_buffer *buf = kn_buffer_alloc_scratch(n->device, n->buf->nbytes);
    if (!buf) return -1;
    kn_buffer_copy(buf, 0, n->buf, 0, n->buf->nbytes);
    kn_node *leaf = kn_node_buffer(n->dtype, n->device, n->ndim, n->shape, buf);
    kn_node_unref(t->node);
    t->node = leaf;
  }
  t->node->rg = on; /* a BUFFER is never looked up by structure, so its hash may stay */
  return 0;
}

kiln_tensor *kiln_grad(const kiln_tensor *t) {
  if (!t || !t->node->grad) return NULL;
  kn_node_ref(t->node->grad);
  return kn_wrap(t->node->grad);
}
void kiln_zero_grad(kiln_tensor *t) {
  if (t && t->node->grad) {
    kn_node_unref(t->node->grad);
    t->node->grad = NULL;
  }
}

kiln_tensor *kiln_detach(kiln_tensor *t) {
  if (!t) return NULL;
  kn_node *n = t->node;
  if (!n->rg) return tn(n);
  bool old = kiln_set_grad_enabled(false); /* an identity view whose rg is off */
  kn_node *d =
      kn_node_make(N_RESHAPE, n->dtype, n->device, n->ndim, n->shape, 1, &n, n->shape, n->ndim, 0);
  kiln_set_grad_enabled(old);
  return kn_wrap(d);
}

int kiln_assign(kiln_tensor *dst, kiln_tensor *src) {
  if (!dst || !src) {
    kn_err("assign: tensor is NULL (an earlier op failed)");
    return -1;
  }
  kn_node *a = dst->node, *b = src->node;
  if (a->ndim != b->ndim || memcmp(a->shape, b->shape, 8 * a->ndim) || a->dtype != b->dtype) {
    kn_err("assign: %s %s cannot take the value of %s %s", kiln_dtype_name(a->dtype),
           kn_shape_str((char[200]){0}, a->ndim, a->shape), kiln_dtype_name(b->dtype),
           kn_shape_str((char[200]){0}, b->ndim, b->shape));
    return -1;
  }
  bool leaf_rg = a->op == N_BUFFER && a->rg;
  if (!leaf_rg) { /* lazy: dst now names src's (detached) graph, realized with whatever reads it */
    kiln_tensor *d = kiln_detach(src);
    kn_node_ref(d->node);
    kn_node_unref(dst->node);
    dst->node = d->node;
    kiln_free(d);
    return 0;
  }
  kiln_scope_begin();
  kiln_tensor *v = kiln_detach(src);
  if (kiln_realize(v) < 0) {
    kiln_scope_end();
    return -1;
  }
  kn_node *n = v->node;
  if (n->op != N_BUFFER) { /* still carries a graph: copy the data into a fresh leaf */
    size_t nb = n->buf->nbytes;
    kn_buffer *buf = kn_buffer_alloc_scratch(n->device, nb);
    if (!buf) {
      kiln_scope_end();
      return -1;
    }
    kn_buffer_copy(buf, 0, n->buf, 0, nb);
    n = kn_node_buffer(n->dtype, n->device, n->ndim, n->shape, buf);
  } else
    kn_node_ref(n);
  kiln_scope_end();
  if (leaf_rg) n->rg = 1;
  kn_node_unref(dst->node);
  dst->node = n;
  return 0;
}

/* ---- custom gradients ---- */
static void vjp_drop(kn_held *h) {
  kn_vjp *v = (kn_vjp *)h;
  for (int i = 0; i < v->n; i++)
    kn_node_unref(v->in[i]);
  free(v);
}
T *kn_custom_grad(T *value, int n, T *const *in, kn_vjp_fn fn, const int64_t *iarg) {
  if (!value) return NULL;
  bool any = false;
  for (int i = 0; i < n; i++) {
    if (!in[i]) return NULL;
    any = any || in[i]->node->rg;
  }
  if (!kn_grad_enabled || !any || n > KN_VJP_MAX) return tn(value->node);
  kn_node *c = kn_node_unique_view(value->node, true);
  kn_vjp *v = kn_xcalloc(1, sizeof *v);
  v->held.drop = vjp_drop;
  v->fn = fn, v->n = n;
  for (int i = 0; i < n; i++)
    kn_node_ref(v->in[i] = in[i]->node);
  if (iarg) memcpy(v->iarg, iarg, sizeof v->iarg);
  c->vjp = v;
  return kn_wrap(c);
}
/* the k-th node gradient flows to from n: its sources, then its custom gradient's inputs */
static int nsources(const kn_node *n) { return n->nsrc + (n->vjp ? n->vjp->n : 0); }
static kn_node *source(const kn_node *n, int k) {
  return k < n->nsrc ? n->src[k] : n->vjp->in[k - n->nsrc];
}

/* ---- node -> gradient map (open addressing) ---- */
typedef struct {
  kn_node **k;
  T **v;
  size_t cap;
} gmap;
static T **gslot(gmap *m, kn_node *n) {
  for (size_t i = ((uintptr_t)n * 0x9E3779B97F4A7C15ull) >> 9;; i++) {
    size_t j = i & (m->cap - 1);
    if (m->k[j] == n || !m->k[j]) {
      m->k[j] = n;
      return &m->v[j];
    }
  }
}
static void accumulate(gmap *m, kn_node *n, T *g) {
  if (!g) return;
  T **s = gslot(m, n);
  *s = *s ? kiln_add(*s, g) : g;
}

/* Gradients of n's sources given g = d loss / d n. */
static void rule(kn_node *n, T *g, T *out[3]) {
  T *x = n->nsrc > 0 ? tn(n->src[0]) : NULL, *y = n->nsrc > 1 ? tn(n->src[1]) : NULL;
  T *self = tn(n);
  int nd = n->ndim;
  switch (n->op) {
  case N_ADD:
    out[0] = g, out[1] = g;
    break;
  case N_MUL:
    out[0] = kiln_mul(g, y), out[1] = kiln_mul(g, x);
    break;
  case N_NEG:
    out[0] = kiln_neg(g);
    break;
  case N_EXP2:
    out[0] = kiln_binary_s(KILN_MUL, kiln_mul(g, self), M_LN2);
    break;
  case N_LOG2:
    out[0] = kiln_div(g, kiln_binary_s(KILN_MUL, x, M_LN2));
    break;
  case N_SIN:
    out[0] = kiln_mul(g, kiln_unary(KILN_COS, x));
    break;
  case N_SQRT:
    out[0] = kiln_div(kiln_binary_s(KILN_MUL, g, 0.5), self);
    break;
  case N_RECIP:
    out[0] = kiln_neg(kiln_mul(g, kiln_mul(self, self)));
    break;
  case N_CAST:
    if (kiln_dtype_is_float(n->src[0]->dtype)) out[0] = kiln_cast(g, n->src[0]->dtype);
    break;
  case N_MAX: { /* ties share the gradient equally */
    T *w = kiln_where(kiln_binary(KILN_LT, y, x), kiln_scalar(n->dtype, 1),
                      kiln_where(kiln_binary(KILN_EQ, x, y), kiln_scalar(n->dtype, 0.5),
                                 kiln_scalar(n->dtype, 0)));
    out[0] = kiln_mul(g, w);
    out[1] = kiln_sub(g, out[0]);
    break;
  }
  case N_WHERE: {
    T *c = x, *z = kiln_zeros(n->dtype, 0, NULL);
    out[1] = kiln_where(c, g, z);
    out[2] = kiln_where(c, z, g);
    break;
  }
  case N_REDUCE: {
    kn_node *s = n->src[0];
    T *ge = kiln_expand(g, s->ndim, s->shape);
    if (n->arg[0] == N_ADD)
      out[0] = ge;
    else if (n->arg[0] == N_MUL)
      out[0] = kiln_div(kiln_mul(ge, kiln_expand(self, s->ndim, s->shape)), x);
    else { /* max: split among the positions equal to the max */
      T *mask = kiln_cast(kiln_binary(KILN_EQ, x, kiln_expand(self, s->ndim, s->shape)), n->dtype);
      int axes[KILN_MAX_DIMS], na = 0;
      for (int i = 0; i < s->ndim; i++)
        if (n->arg[1] >> i & 1) axes[na++] = i;
      T *cnt = kiln_sum(mask, na, axes, true);
      out[0] = kiln_div(kiln_mul(ge, mask), kiln_expand(cnt, s->ndim, s->shape));
    }
    break;
  }
  case N_RESHAPE:
    out[0] = kiln_reshape(g, n->src[0]->ndim, n->src[0]->shape);
    break;
  case N_PERMUTE: {
    int inv[KILN_MAX_DIMS];
    for (int i = 0; i < nd; i++)
      inv[n->arg[i]] = i;
    out[0] = kiln_permute(g, inv);
    break;
  }
  case N_EXPAND: {
    int axes[KILN_MAX_DIMS], na = 0;
    for (int i = 0; i < nd; i++)
      if (n->src[0]->shape[i] == 1 && n->shape[i] != 1) axes[na++] = i;
    out[0] = na ? kiln_sum(g, na, axes, true) : g;
    break;
  }
  case N_PAD: {
    int64_t st[KILN_MAX_DIMS], en[KILN_MAX_DIMS];
    for (int i = 0; i < nd; i++)
      st[i] = n->arg[2 * i], en[i] = st[i] + n->src[0]->shape[i];
    out[0] = kiln_shrink(g, st, en);
    break;
  }
  case N_SHRINK: {
    int64_t bf[KILN_MAX_DIMS], af[KILN_MAX_DIMS];
    for (int i = 0; i < nd; i++)
      bf[i] = n->arg[2 * i], af[i] = n->src[0]->shape[i] - n->arg[2 * i + 1];
    out[0] = kiln_pad(g, bf, af, 0);
    break;
  }
  case N_FLIP: {
    int axes[KILN_MAX_DIMS], na = 0;
    for (int i = 0; i < nd; i++)
      if (n->arg[i]) axes[na++] = i;
    out[0] = kiln_flip(g, na, axes);
    break;
  }
  case N_CONTIGUOUS:
    out[0] = g;
    break;
  case N_GATHER: { /* each row of the table gets the sum of g over the ids that picked it */
    kn_node *t = n->src[0], *ids = n->src[1];
    int64_t N = kn_numel(ids->ndim, ids->shape), V = t->shape[0],
            D = kn_numel(t->ndim - 1, t->shape + 1);
    T *hot = kiln_binary(KILN_EQ, kiln_reshape(tn(ids), 2, (int64_t[]){N, 1}),
                         kiln_arange(0, (double)V, 1, KILN_I64));
    T *gt = kiln_matmul(kiln_transpose(kiln_cast(hot, n->dtype), 0, 1),
                        kiln_reshape(g, 2, (int64_t[]){N, D}));
    out[0] = kiln_reshape(gt, t->ndim, t->shape);
    break;
  }
  default:
    break; /* comparisons, integer and bit ops carry no gradient */
  }
}

int kiln_backward(kiln_tensor *loss) {
  if (!loss) {
    kn_err("backward: loss is NULL (an earlier op failed)");
    return -1;
  }
  kn_node *root = loss->node;
  if (kn_numel(root->ndim, root->shape) != 1) {
    kn_err("backward: loss must have one element, got shape %s",
           kn_shape_str((char[200]){0}, root->ndim, root->shape));
    return -1;
  }
  if (!root->rg) {
    kn_err("backward: the loss does not depend on any tensor that requires grad");
    return -1;
  }
  /* topological order of the nodes gradients flow through (iterative DFS) */
  size_t cap = 1024, ntopo = 0, nst = 0;
  kn_node **topo = kn_xmalloc(sizeof(kn_node *) * cap);
  struct frame {
    kn_node *n;
    int next;
  } *st = kn_xmalloc(sizeof(struct frame) * cap);
  gmap seen = {kn_xcalloc(cap * 2, sizeof(kn_node *)), kn_xcalloc(cap * 2, sizeof(T *)), cap * 2};
  size_t nseen = 0;
  st[nst++] = (struct frame){root, 0};
  *gslot(&seen, root) = (T *)1;
  while (nst) {
    struct frame *f = &st[nst - 1];
    if (f->next < nsources(f->n)) {
      kn_node *s = source(f->n, f->next++);
      T **mark = s->rg ? gslot(&seen, s) : NULL;
      if (mark && !*mark) {
        *mark = (T *)1;
        if (++nseen * 2 >= seen.cap / 2) { /* grow the seen map */
          gmap o = seen;
          seen = (gmap){kn_xcalloc(o.cap * 2, sizeof(kn_node *)),
                        kn_xcalloc(o.cap * 2, sizeof(T *)), o.cap * 2};
          for (size_t i = 0; i < o.cap; i++)
            if (o.k[i]) *gslot(&seen, o.k[i]) = o.v[i];
          free(o.k), free(o.v);
        }
        if (nst == cap || ntopo == cap) {
          cap *= 2;
          st = kn_xrealloc(st, sizeof(struct frame) * cap);
          topo = kn_xrealloc(topo, sizeof(kn_node *) * cap);
        }
        st[nst++] = (struct frame){s, 0};
      }
    } else {
      if (ntopo == cap) {
        cap *= 2;
        st = kn_xrealloc(st, sizeof(struct frame) * cap);
        topo = kn_xrealloc(topo, sizeof(kn_node *) * cap);
      }
      topo[ntopo++] = f->n;
      nst--;
    }
  }
  free(st);
  bool old = kiln_set_grad_enabled(false);
  kiln_scope_begin();
  gmap gm = {kn_xcalloc(seen.cap, sizeof(kn_node *)), kn_xcalloc(seen.cap, sizeof(T *)), seen.cap};
  free(seen.k), free(seen.v);
  *gslot(&gm, root) = kiln_full(root->dtype, root->ndim, root->shape, 1);
  int rc = 0;
  for (size_t i = ntopo; i-- > 0;) {
    kn_node *n = topo[i];
    T *g = *gslot(&gm, n);
    if (!g) continue;
    if (n->nsrc == 0) { /* a leaf: add into its gradient */
      if (n->grad) g = kiln_add(tn(n->grad), g);
      if (!g) {
        rc = -1;
        break;
      }
      kn_node_ref(g->node);
      if (n->grad) kn_node_unref(n->grad);
      n->grad = g->node;
      continue;
    }
    T *out[3] = {NULL, NULL, NULL};
    rule(n, g, out);
    for (int k = 0; k < n->nsrc; k++)
      if (n->src[k]->rg) accumulate(&gm, n->src[k], out[k]);
    if (n->vjp) {
      T *in[KN_VJP_MAX], *grads[KN_VJP_MAX] = {NULL};
      for (int k = 0; k < n->vjp->n; k++)
        in[k] = tn(n->vjp->in[k]);
      n->vjp->fn(g, in, grads, n->vjp->iarg);
      for (int k = 0; k < n->vjp->n; k++)
        if (n->vjp->in[k]->rg) accumulate(&gm, n->vjp->in[k], grads[k]);
    }
  }
  free(gm.k), free(gm.v);
  free(topo);
  kiln_scope_end();
  kiln_set_grad_enabled(old);
  return rc;
}
