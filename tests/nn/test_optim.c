/* test_optim.c — optimizers against their update rules computed here in double (PyTorch's
 * conventions), over a few steps of loss = sum(c * w + d * w^2 / 2) (gradient c + d * w, so
 * each step sees a new gradient); their state; learning-rate schedules against the formulas;
 * bad hyperparameters rejected. */
#include "check.h"

enum { NW = 5, NSTEPS = 5 };
static const double w_init[NW] = {0.5, -1.25, 2.0, 0.125, -0.75};
static const double c_coef[NW] = {0.3, -0.7, 1.1, 0.05, -2.0};
static const double d_coef[NW] = {1.0, 0.5, 2.0, 0.25, 1.5};

typedef enum { SGD, ADAM } opt_kind;
typedef struct {
  const char *name;
  opt_kind kind;
  double lr, momentum, wd;
  bool nesterov;
  double beta1, beta2, eps;
  bool decoupled;
  bool cosine; /* lr follows kiln_lr_cosine(step, NSTEPS, lr, lr / 10), set before each step */
} opt_case;

static const opt_case cases[] = {
    {"sgd", SGD, 0.1, 0, 0, false, 0, 0, 0, false, false},
    {"sgd momentum", SGD, 0.1, 0.9, 0, false, 0, 0, 0, false, false},
    {"sgd nesterov", SGD, 0.1, 0.9, 0, true, 0, 0, 0, false, false},
    {"sgd weight decay", SGD, 0.1, 0, 0.05, false, 0, 0, 0, false, false},
    {"sgd momentum, nesterov, weight decay", SGD, 0.05, 0.8, 0.1, true, 0, 0, 0, false, false},
    {"sgd momentum, cosine lr", SGD, 0.1, 0.9, 0, false, 0, 0, 0, false, true},
    {"adam", ADAM, 0.01, 0, 0, false, 0.9, 0.999, 1e-8, false, false},
    {"adam betas (0.5, 0.9) eps 0.1", ADAM, 0.1, 0, 0, false, 0.5, 0.9, 0.1, false, false},
    {"adam weight decay (L2)", ADAM, 0.01, 0, 0.1, false, 0.9, 0.999, 1e-8, false, false},
    {"adamw", ADAM, 0.01, 0, 0.1, false, 0.9, 0.999, 1e-8, true, false},
    {"adamw, cosine lr", ADAM, 0.05, 0, 0.2, false, 0.8, 0.99, 1e-6, true, true},
};
#define NCASES (int)(sizeof cases / sizeof cases[0])

/* The cosine schedule, written from its definition: from base at step 0 to min_lr at total. */
static double cosine_lr(int64_t step, int64_t total, double base, double min_lr) {
  if (step >= total) return min_lr;
  return min_lr + (base - min_lr) * (1 + cos(M_PI * (double)step / (double)total)) / 2;
}

/* One step of the reference optimizer at step t (1-based) with learning rate lr. buf is the
 * SGD momentum buffer or Adam's first moment; v Adam's second moment. */
static void ref_step(const opt_case *o, int t, double lr, double *w, double *buf, double *v) {
  for (int i = 0; i < NW; i++) {
    double g = c_coef[i] + d_coef[i] * w[i];
    if (o->kind == SGD) {
      g += o->wd * w[i];
      double upd = g;
      if (o->momentum > 0) {
        buf[i] = t == 1 ? g : o->momentum * buf[i] + g;
        upd = o->nesterov ? g + o->momentum * buf[i] : buf[i];
      }
      w[i] -= lr * upd;
    } else {
      if (o->decoupled)
        w[i] -= lr * o->wd * w[i]; /* AdamW: decay the weight, not the gradient */
      else
        g += o->wd * w[i];
      buf[i] = o->beta1 * buf[i] + (1 - o->beta1) * g;
      v[i] = o->beta2 * v[i] + (1 - o->beta2) * g * g;
      double mhat = buf[i] / (1 - pow(o->beta1, t)), vhat = v[i] / (1 - pow(o->beta2, t));
      w[i] -= lr * mhat / (sqrt(vhat) + o->eps);
    }
  }
}

static kiln_tensor *tensor_of(kiln_dtype dt, int n, const double *v) {
  int64_t s = n;
  return kt_from_ref(ref_from(1, &s, v), dt);
}

/* loss = sum(c * w + d * w^2 / 2) */
static kiln_tensor *loss_of(kiln_tensor *w, kiln_dtype dt) {
  kiln_tensor *c = tensor_of(dt, NW, c_coef), *d = tensor_of(dt, NW, d_coef);
  kiln_tensor *q = kiln_binary_s(KILN_MUL, kiln_mul(d, kiln_mul(w, w)), 0.5);
  return kiln_sum(kiln_add(kiln_mul(c, w), q), 0, NULL, false);
}

/* The state tensor whose name contains `part` and whose values are want (n of them), or the
 * failure reason. */
static bool state_has(kiln_params *st, const char *part, const double *want, int n, double tol) {
  for (int i = 0; i < kiln_params_count(st); i++) {
    kiln_tensor *t = kiln_params_get(st, i);
    if (!test_contains(kiln_params_name(st, i), part) || kiln_numel(t) != n) continue;
    double got[NW];
    if (kiln_to_host(kiln_cast(t, KILN_F64), got, sizeof(double) * (size_t)n) < 0) continue;
    bool ok = true;
    for (int k = 0; k < n; k++)
      ok = ok && fabs(got[k] - want[k]) <= tol * (1 + fabs(want[k]));
    if (ok) return true;
  }
  return false;
}

/* Runs case o with a parameter of dtype dt next to a frozen one; compares w after every step
 * (relative tolerance tol) and the optimizer state after the last. */
static void run_case(const opt_case *o, kiln_dtype dt, double tol) {
  test_set_context("%s %s", o->name, kiln_dtype_name(dt));
  kiln_params *p = kiln_params_new();
  kiln_tensor *w = kiln_persist(tensor_of(dt, NW, w_init));
  kiln_tensor *frozen = kiln_persist(tensor_of(dt, NW, w_init));
  kiln_set_requires_grad(w, true);
  kiln_params_add(p, "frozen", frozen);
  kiln_params_add(p, "weight", w);
  kiln_optim *opt = o->kind == SGD
                        ? kiln_sgd(p, o->lr, o->momentum, o->wd, o->nesterov)
                        : kiln_adam(p, o->lr, o->beta1, o->beta2, o->eps, o->wd, o->decoupled);
  if (!opt) {
    test_fail(__FILE__, __LINE__, "constructor failed: %s", test_errmsg());
    kiln_params_free(p);
    return;
  }
  double rw[NW], buf[NW] = {0}, v[NW] = {0};
  memcpy(rw, w_init, sizeof rw);
  int64_t ns = NW;
  int f0 = test_failures();
  for (int t = 1; t <= NSTEPS && test_failures() == f0; t++) {
    double lr = o->cosine ? cosine_lr(t - 1, NSTEPS, o->lr, o->lr / 10) : o->lr;
    if (o->cosine) kiln_optim_set_lr(opt, kiln_lr_cosine(t - 1, NSTEPS, o->lr, o->lr / 10));
    CHECK_NEAR(kiln_optim_get_lr(opt), lr, 1e-15);
    kiln_scope_begin();
    CHECK(kiln_backward(loss_of(w, dt)) == 0);
    CHECK(kiln_optim_step(opt) == 0);
    CHECKF(kiln_grad(w) == NULL, "step %d left a gradient", t);
    ref_step(o, t, lr, rw, buf, v);
    char what[64];
    snprintf(what, sizeof what, "w after step %d", t);
    ref_t *got = kt_read(kiln_cast(w, KILN_F64));
    if (got) kt_compare(what, got, ref_from(1, &ns, rw), NULL, tol, tol);
    got = kt_read(kiln_cast(frozen, KILN_F64));
    if (got)
      kt_compare("the parameter without requires_grad", got, ref_from(1, &ns, w_init), NULL, 0, 0);
    kiln_scope_end();
  }
  kiln_params *st = kiln_optim_state(opt);
  CHECK(st != NULL);
  if (st && test_failures() == f0) {
    kiln_scope_begin();
    double steps = NSTEPS;
    CHECKF(state_has(st, "step", &steps, 1, 0), "no state tensor \"step\" holding %d", NSTEPS);
    if (o->kind == ADAM) {
      CHECKF(state_has(st, "weight", buf, NW, tol),
             "no state tensor for \"weight\" holding the first moment");
      CHECKF(state_has(st, "weight", v, NW, tol),
             "no state tensor for \"weight\" holding the second moment");
    } else if (o->momentum > 0) {
      CHECKF(state_has(st, "weight", buf, NW, tol),
             "no state tensor for \"weight\" holding the momentum buffer");
    }
    for (int i = 0; i < kiln_params_count(st); i++)
      CHECKF(!test_contains(kiln_params_name(st, i), "frozen"), "state for a frozen parameter: %s",
             kiln_params_name(st, i));
    kiln_scope_end();
  }
  kiln_optim_free(opt);
  kiln_params_free(p);
  kiln_clear_error();
  test_set_context("%s", "");
}

/* f64 parameters are updated in f64: the result matches the double-precision rule to
 * rounding. f32 ones to f32 precision. */
TEST(optim_updates_f64) {
  for (int i = 0; i < NCASES; i++)
    run_case(&cases[i], KILN_F64, 1e-12);
}
TEST(optim_updates_f32) {
  for (int i = 0; i < NCASES; i++)
    run_case(&cases[i], KILN_F32, 2e-6);
}

/* A step with no gradient (nothing backpropagated) changes nothing but the step count. */
TEST(optim_step_without_gradient) {
  kiln_params *p = kiln_params_new();
  kiln_tensor *w = kiln_persist(tensor_of(KILN_F64, NW, w_init));
  kiln_set_requires_grad(w, true);
  kiln_params_add(p, "w", w);
  kiln_optim *o = kiln_sgd(p, 0.1, 0, 0, false);
  REQUIRE(o);
  CHECK(kiln_optim_step(o) == 0);
  double got[NW];
  CHECK(kiln_to_host(w, got, sizeof got) == 0);
  for (int i = 0; i < NW; i++)
    CHECK_NEAR(got[i], w_init[i], 0);
  kiln_optim_free(o);
  kiln_params_free(p);
}

TEST(optim_lr_schedules) {
  const double base = 0.1, min_lr = 0.002;
  const int64_t total = 10;
  double prev = INFINITY;
  for (int64_t s = 0; s <= total + 2; s++) {
    double lr = kiln_lr_cosine(s, total, base, min_lr);
    CHECKF(fabs(lr - cosine_lr(s, total, base, min_lr)) <= 1e-15,
           "cosine step %lld: %.17g, want %.17g", (long long)s, lr,
           cosine_lr(s, total, base, min_lr));
    CHECKF(lr <= prev, "cosine step %lld rises: %g after %g", (long long)s, lr, prev);
    prev = lr;
  }
  CHECK_NEAR(kiln_lr_cosine(0, total, base, min_lr), base, 1e-15);
  CHECK_NEAR(kiln_lr_cosine(total / 2, total, base, min_lr), (base + min_lr) / 2, 1e-15);
  CHECK_NEAR(kiln_lr_cosine(total, total, base, min_lr), min_lr, 1e-15);
  /* Warmup: a linear ramp of base / warmup per step whose first step already moves (step 0
   * gets base / warmup, a zero first rate would waste it) and which reaches base at the last
   * warmup step, then stays there. */
  const int64_t warm = 4;
  for (int64_t s = 0; s < 8; s++) {
    double want = s < warm ? base * (double)(s + 1) / (double)warm : base;
    double lr = kiln_lr_warmup(s, warm, base);
    CHECKF(fabs(lr - want) <= 1e-15, "warmup step %lld: %.17g, want %.17g", (long long)s, lr, want);
  }
  CHECK_NEAR(kiln_lr_warmup(5, 0, base), base, 0); /* no warmup */
}

/* Constructors reject bad hyperparameters with a message naming the optimizer or the value. */
#define EXPECT_REJECTED(expr)                                                                      \
  do {                                                                                             \
    kiln_clear_error();                                                                            \
    kiln_optim *o_ = (expr);                                                                       \
    CHECKF(o_ == NULL, "%s: accepted", #expr);                                                     \
    if (o_) kiln_optim_free(o_);                                                                   \
    CHECKF(test_contains(kiln_error(), "sgd") || test_contains(kiln_error(), "adam") ||            \
               test_contains(kiln_error(), "optim"),                                               \
           "%s: message \"%s\" names no optimizer", #expr, test_errmsg());                         \
    kiln_clear_error();                                                                            \
  } while (0)

TEST(optim_bad_hyperparameters) {
  kiln_params *p = kiln_params_new();
  kiln_tensor *w = kiln_persist(tensor_of(KILN_F32, NW, w_init));
  kiln_set_requires_grad(w, true);
  kiln_params_add(p, "w", w);
  EXPECT_REJECTED(kiln_sgd(NULL, 0.1, 0, 0, false));
  EXPECT_REJECTED(kiln_sgd(p, -0.1, 0, 0, false));
  EXPECT_REJECTED(kiln_sgd(p, NAN, 0, 0, false));
  EXPECT_REJECTED(kiln_sgd(p, 0.1, -0.5, 0, false));
  EXPECT_REJECTED(kiln_sgd(p, 0.1, NAN, 0, false));
  EXPECT_REJECTED(kiln_sgd(p, 0.1, 0.9, -1e-4, false));
  EXPECT_REJECTED(kiln_sgd(p, 0.1, 0.9, NAN, false));
  EXPECT_REJECTED(kiln_sgd(p, 0.1, 0, 0, true)); /* nesterov needs momentum */
  EXPECT_REJECTED(kiln_adam(NULL, 0.1, 0.9, 0.999, 1e-8, 0, false));
  EXPECT_REJECTED(kiln_adam(p, -1e-3, 0.9, 0.999, 1e-8, 0, false));
  EXPECT_REJECTED(kiln_adam(p, 1e-3, 1.0, 0.999, 1e-8, 0, false));
  EXPECT_REJECTED(kiln_adam(p, 1e-3, -0.1, 0.999, 1e-8, 0, false));
  EXPECT_REJECTED(kiln_adam(p, 1e-3, 0.9, 1.0, 1e-8, 0, false));
  EXPECT_REJECTED(kiln_adam(p, 1e-3, 0.9, NAN, 1e-8, 0, false));
  EXPECT_REJECTED(kiln_adam(p, 1e-3, 0.9, 0.999, -1e-8, 0, false));
  EXPECT_REJECTED(kiln_adam(p, 1e-3, 0.9, 0.999, 1e-8, -0.01, true));
  CHECK(kiln_optim_step(NULL) < 0);
  kiln_clear_error();
  kiln_params_free(p);
}
