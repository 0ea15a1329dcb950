/* optim.c — optimizers (SGD with momentum/Nesterov/weight decay, Adam, AdamW) and learning-rate
 * schedules. A step builds every update lazily and realizes all of them, with the backward pass
 * they consume, in one schedule. Values that change every step (learning rate, bias
 * corrections) are fed as tensors, so the compiled kernels are reused across steps. */
#include "internal.h"
#include <math.h>

enum { OPT_SGD, OPT_ADAM };
struct kiln_optim {
  int kind;
  kiln_params *p;     /* borrowed: the model's parameters */
  kiln_params *state; /* owned: "<slot>.<param name>" moments and "step" */
  double lr, momentum, wd, beta1, beta2, eps;
  bool nesterov, decoupled;
};

static kiln_optim *optim_new(int kind, kiln_params *p, double lr) {
  if (!p) {
    kn_err("optimizer: the parameter set is NULL");
    return NULL;
  }
  if (!(lr >= 0)) {
    kn_err("optimizer: learning rate must be >= 0, got %g", lr);
    return NULL;
  }
  kiln_optim *o = kn_xcalloc(1, sizeof *o);
  o->kind = kind, o->p = p, o->lr = lr, o->state = kiln_params_new();
  kiln_params_add(o->state, "step", kiln_zeros(KILN_I64, 0, NULL));
  return o;
}

/* One zero-initialized state tensor per trainable parameter, named "<slot>.<param>". */
static void add_slots(kiln_optim *o, const char *slot) {
  char name[512];
  for (int i = 0; i < kiln_params_count(o->p); i++) {
    kiln_tensor *w = kiln_params_get(o->p, i);
    if (!kiln_requires_grad(w)) continue;
    snprintf(name, sizeof name, "%s.%s", slot, kiln_params_name(o->p, i));
    kiln_params_add(o->state, name, kiln_zeros(kiln_dtype_of(w), kiln_ndim(w), kiln_shape(w)));
  }
}
static kiln_tensor *slot_of(kiln_optim *o, const char *slot, int i) {
  char name[512];
  snprintf(name, sizeof name, "%s.%s", slot, kiln_params_name(o->p, i));
  return kiln_params_find(o->state, name);
}

kiln_optim *kiln_sgd(kiln_params *p, double lr, double momentum, double wd, bool nesterov) {
  if (!(momentum >= 0) || !(wd >= 0) || (nesterov && !(momentum > 0))) {
    kn_err("sgd: bad momentum %g / weight decay %g (nesterov needs momentum > 0)", momentum, wd);
    return NULL;
  }
  kiln_optim *o = optim_new(OPT_SGD, p, lr);
  if (!o) return NULL;
  o->momentum = momentum, o->wd = wd, o->nesterov = nesterov;
  if (momentum > 0) add_slots(o, "momentum");
  return o;
}

kiln_optim *kiln_adam(kiln_params *p, double lr, double b1, double b2, double eps, double wd,
                      bool decoupled) {
  if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1 && eps >= 0 && wd >= 0)) {
    kn_err("adam: bad betas (%g, %g), eps %g or weight decay %g", b1, b2, eps, wd);
    return NULL;
  }
  kiln_optim *o = optim_new(OPT_ADAM, p, lr);
  if (!o) return NULL;
  o->beta1 = b1, o->beta2 = b2, o->eps = eps, o->wd = wd, o->decoupled = decoupled;
  add_slots(o, "m");
  add_slots(o, "v");
  return o;
}

void kiln_optim_set_lr(kiln_optim *o, double lr) {
  if (o) o->lr = lr;
}
double kiln_optim_get_lr(const kiln_optim *o) { return o ? o->lr : NAN; }
kiln_params *kiln_optim_state(kiln_optim *o) { return o ? o->state : NULL; }
void kiln_optim_free(kiln_optim *o) {
  if (!o) return;
  kiln_params_free(o->state);
  free(o);
}

/* A 0-d buffer (not a constant baked into kernels) of the parameter's precision. */
static kiln_tensor *scalar_input(double v, kiln_dtype like) {
  if (like == KILN_F64) return kiln_from_data(KILN_F64, 0, NULL, &v);
  float f = (float)v;
  return kiln_from_data(KILN_F32, 0, NULL, &f);
}
static kiln_tensor *muls(kiln_tensor *x, double v) { return kiln_binary_s(KILN_MUL, x, v); }

int kiln_optim_step(kiln_optim *o) {
  if (!o) {
    kn_err("optim_step: optimizer is NULL");
    return -1;
  }
  int n = kiln_params_count(o->p);
  bool old = kiln_set_grad_enabled(false);
  kiln_scope_begin();
  kiln_tensor *stept = kiln_params_find(o->state, "step");
  int64_t t = (int64_t)kiln_item(stept) + 1;
  kiln_tensor **news = kn_xmalloc(sizeof(kiln_tensor *) * (3 * n + 1)), **dsts = kn_xmalloc(sizeof(kiln_tensor *) * (3 * n + 1));
  int nn = 0;
  for (int i = 0; i < n; i++) {
    kiln_tensor *w = kiln_params_get(o->p, i), *g = kiln_grad(w);
    if (!kiln_requires_grad(w) || !g) continue;
    kiln_tensor *lr = scalar_input(o->lr, kiln_dtype_of(w));
    if (o->wd > 0 && !(o->kind == OPT_ADAM && o->decoupled)) g = kiln_add(g, muls(w, o->wd));
    kiln_tensor *upd;
    if (o->kind == OPT_SGD) {
      upd = g;
      if (o->momentum > 0) { /* buf = momentum * buf + g (buf = g on the first step) */
        kiln_tensor *buf = slot_of(o, "momentum", i);
        kiln_tensor *nb = t == 1 ? g : kiln_add(muls(buf, o->momentum), g);
        news[nn] = nb, dsts[nn++] = buf;
        upd = o->nesterov ? kiln_add(g, muls(nb, o->momentum)) : nb;
      }
      news[nn] = kiln_sub(w, kiln_mul(lr, upd));
    } else {
      kiln_tensor *m = slot_of(o, "m", i), *v = slot_of(o, "v", i);
      kiln_tensor *nm = kiln_add(muls(m, o->beta1), muls(g, 1 - o->beta1));
      kiln_tensor *nv = kiln_add(muls(v, o->beta2), muls(kiln_mul(g, g), 1 - o->beta2));
      news[nn] = nm, dsts[nn++] = m;
      news[nn] = nv, dsts[nn++] = v;
      /* step size lr / (1 - b1^t) and sqrt(1 - b2^t) come in as tensors */
      kiln_tensor *a = scalar_input(o->lr / (1 - pow(o->beta1, (double)t)), kiln_dtype_of(w));
      kiln_tensor *c2 = scalar_input(1 / sqrt(1 - pow(o->beta2, (double)t)), kiln_dtype_of(w));
      kiln_tensor *den = kiln_binary_s(KILN_ADD, kiln_mul(kiln_sqrt(nv), c2), o->eps);
      kiln_tensor *nw = w;
      if (o->decoupled && o->wd > 0) nw = kiln_sub(w, kiln_mul(lr, muls(w, o->wd)));
      news[nn] = kiln_sub(nw, kiln_mul(a, kiln_div(nm, den)));
    }
    if (kiln_dtype_of(news[nn]) != kiln_dtype_of(w)) news[nn] = kiln_cast(news[nn], kiln_dtype_of(w));
    dsts[nn++] = w;
  }
  int64_t tv = t;
  news[nn] = kiln_from_data(KILN_I64, 0, NULL, &tv), dsts[nn++] = stept;
  int rc = 0;
  for (int i = 0; i < nn; i++)
    if (!news[i]) rc = -1;
  if (rc == 0) rc = kiln_realize_many(nn, news);
  /* clear gradients first: a gradient's graph refers back to the parameter it belongs to */
  for (int i = 0; i < n; i++) kiln_zero_grad(kiln_params_get(o->p, i));
  for (int i = 0; rc == 0 && i < nn; i++) rc = kiln_assign(dsts[i], news[i]);
  free(news);
  free(dsts);
  kiln_scope_end();
  kiln_set_grad_enabled(old);
  return rc;
}

double kiln_lr_cosine(int64_t step, int64_t total, double base, double min_lr) {
  if (total <= 0) return base;
  double f = step >= total ? 1 : (double)step / (double)total;
  return min_lr + 0.5 * (base - min_lr) * (1 + cos(M_PI * f));
}
double kiln_lr_warmup(int64_t step, int64_t warmup, double base) {
  if (warmup <= 0 || step >= warmup) return base;
  return base * (double)(step + 1) / (double)warmup;
}
