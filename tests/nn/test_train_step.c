/* test_train_step.c — whole training steps: a tiny MLP trained in f64 must follow the loss
 * curve of an independent numpy implementation (mlp_reference.py -> mlp_reference.h), and one
 * step of a small CNN must stay within a kernel budget (fusion) with flat memory. */
#include "mlp_reference.h"
#include "test.h"
#include <stdlib.h>

/* ---- the MLP: same formulas as mlp_reference.py (PyTorch (out, in) weight layout) -------- */

static double f_x(int i, int j) { return sin(0.7 * i + 1.3 * j + 0.1); }
static double f_y(int i, int k) { return 0.5 * cos(0.4 * i - 0.9 * k); }
static double f_w1(int h, int j) { return 0.4 * sin(1.1 * h + 0.37 * j + 0.5); }
static double f_b1(int h, int unused) { return (void)unused, 0.1 * cos(0.3 * h + 1.0); }
static double f_w2(int k, int h) { return 0.4 * cos(0.83 * k + 1.7 * h + 0.2); }
static double f_b2(int k, int unused) { return (void)unused, 0.05 * sin(k + 1.0); }

/* An f64 tensor of shape (rows, cols) (or (rows) when cols is 0) with values f(i, j). */
static kiln_tensor *table(int rows, int cols, double (*f)(int, int)) {
  double v[MLP_N * MLP_HID];
  int c = cols ? cols : 1;
  for (int i = 0; i < rows; i++)
    for (int j = 0; j < c; j++)
      v[i * c + j] = f(i, j);
  int64_t shape[2] = {rows, cols};
  return kiln_from_data(KILN_F64, cols ? 2 : 1, shape, v);
}

/* Trains the MLP for MLP_STEPS full-batch steps; losses[t] is the loss before step t. */
static void train_mlp(bool adam, double *losses) {
  kiln_tensor *x = table(MLP_N, MLP_DIN, f_x), *y = table(MLP_N, MLP_DOUT, f_y);
  kiln_params *p = kiln_params_new();
  kiln_tensor *w1 = table(MLP_HID, MLP_DIN, f_w1), *b1 = table(MLP_HID, 0, f_b1);
  kiln_tensor *w2 = table(MLP_DOUT, MLP_HID, f_w2), *b2 = table(MLP_DOUT, 0, f_b2);
  const char *names[] = {"w1", "b1", "w2", "b2"};
  kiln_tensor *ws[] = {w1, b1, w2, b2};
  for (int i = 0; i < 4; i++) {
    kiln_set_requires_grad(ws[i], true);
    kiln_params_add(p, names[i], ws[i]);
  }
  kiln_optim *o =
      adam ? kiln_adam(p, MLP_ADAM_LR, MLP_ADAM_BETA1, MLP_ADAM_BETA2, MLP_ADAM_EPS, 0, false)
           : kiln_sgd(p, MLP_SGD_LR, MLP_SGD_MOMENTUM, 0, false);
  for (int t = 0; t < MLP_STEPS; t++)
    losses[t] = NAN;
  for (int t = 0; o && t < MLP_STEPS; t++) {
    kiln_scope_begin();
    kiln_tensor *h = kiln_unary(KILN_TANH, kiln_linear(x, w1, b1));
    kiln_tensor *loss = kiln_mse_loss(kiln_linear(h, w2, b2), y);
    losses[t] = kiln_item(loss);
    int rc = kiln_backward(loss);
    if (rc == 0) rc = kiln_optim_step(o);
    kiln_scope_end();
    if (rc < 0) {
      test_fail(__FILE__, __LINE__, "step %d failed: %s", t, test_errmsg());
      break;
    }
  }
  if (!o) test_fail(__FILE__, __LINE__, "optimizer: %s", test_errmsg());
  kiln_optim_free(o);
  kiln_params_free(p);
}

/* Both sides compute in f64 and agree to a few 1e-16; 1e-12 leaves room for libm differences
 * and still catches a step value rounded to f32 (which shifts the curve by ~1e-10). */
static void check_curve(const char *what, const double *got, const double *want) {
  int bad = 0;
  for (int t = 0; t < MLP_STEPS && bad < 3; t++)
    if (!(fabs(got[t] - want[t]) <= 1e-12 * fabs(want[t]))) {
      test_fail(__FILE__, __LINE__,
                "%s loss before step %d: %.17g, reference %.17g (rel. diff %.2g)", what, t, got[t],
                want[t], fabs(got[t] - want[t]) / fabs(want[t]));
      bad++;
    }
}

TEST_DEVICES(train_mlp_sgd_matches_reference) {
  (void)device;
  double losses[MLP_STEPS];
  train_mlp(false, losses);
  check_curve("sgd momentum", losses, mlp_loss_sgd);
}

TEST_DEVICES(train_mlp_adam_matches_reference) {
  (void)device;
  double losses[MLP_STEPS];
  train_mlp(true, losses);
  check_curve("adam", losses, mlp_loss_adam);
}

/* ---- one CNN training step: kernel budget and flat memory --------------------------------- */

/* Kernel budgets for one step, measured and given a little slack. Forward (building the graph
 * and realizing the loss with the running statistics) measured 20: every reduction on the
 * gradient path (the conv, the batch mean and variance, the pool, the linear layer, the
 * log-softmax max and sum, the loss mean) is stored in a buffer of its own, because backward
 * reads it again; the elementwise ops between them fuse into their consumers, and the two
 * running-statistic updates are one kernel each. Backward + Adam measured 40 (41 on the first
 * step): the backward pass, then for each of the 6 parameters the reduction giving its gradient
 * and the new m, v and w. A fusion regression (an elementwise op or a view no longer fused into
 * its consumer, a reduction computed twice) adds kernels and trips these. */
enum { CNN_NPARAMS = 6 };
#define FWD_BUDGET 21
#define STEP_BUDGET (18 + 4 * CNN_NPARAMS + 2)

/* (8,1,8,8) -> conv 3x3 pad 1 (4 ch) -> relu -> batch_norm (training) -> max_pool 2 ->
 * (8, 64) -> linear (3) -> cross_entropy, trained with Adam. */
TEST(train_cnn_step_kernels_and_memory) {
  enum { N = 8, STEPS = 6 };
  kiln_tensor *x = kiln_randn(4, (int64_t[]){N, 1, 8, 8}, test_seed(301));
  int64_t lab[N];
  for (int i = 0; i < N; i++)
    lab[i] = i % 3;
  kiln_tensor *labels = kiln_from_data(KILN_I64, 1, (int64_t[]){N}, lab);
  REQUIRE(kiln_realize(x) == 0 && kiln_realize(labels) == 0);

  kiln_params *p = kiln_params_new();
  kiln_tensor *cw = kiln_binary_s(KILN_MUL, kiln_randn(4, (int64_t[]){4, 1, 3, 3}, 302), 0.3);
  kiln_tensor *cb = kiln_zeros(KILN_F32, 1, (int64_t[]){4});
  kiln_tensor *gamma = kiln_ones(KILN_F32, 1, (int64_t[]){4}),
              *beta = kiln_zeros(KILN_F32, 1, (int64_t[]){4});
  kiln_tensor *lw = kiln_binary_s(KILN_MUL, kiln_randn(2, (int64_t[]){3, 64}, 303), 0.1);
  kiln_tensor *lb = kiln_zeros(KILN_F32, 1, (int64_t[]){3});
  kiln_tensor *rmean = kiln_zeros(KILN_F32, 1, (int64_t[]){4}),
              *rvar = kiln_ones(KILN_F32, 1, (int64_t[]){4});
  const char *names[] = {"conv.w", "conv.b", "bn.w", "bn.b", "fc.w", "fc.b"};
  kiln_tensor *ws[CNN_NPARAMS] = {cw, cb, gamma, beta, lw, lb};
  for (int i = 0; i < CNN_NPARAMS; i++) {
    REQUIRE(kiln_set_requires_grad(ws[i], true) == 0);
    kiln_params_add(p, names[i], ws[i]);
  }
  REQUIRE(kiln_realize(rmean) == 0 && kiln_realize(rvar) == 0);
  kiln_params_add(p, "bn.running_mean", rmean);
  kiln_params_add(p, "bn.running_var", rvar);
  kiln_optim *o = kiln_adam(p, 1e-2, 0.9, 0.999, 1e-8, 0, false);
  REQUIRE(o);

  int64_t fwd[STEPS], upd[STEPS];
  kiln_stats mem[STEPS];
  double loss_v[STEPS];
  for (int s = 0; s < STEPS; s++) {
    kiln_stats a, b, c;
    kiln_get_stats(&a);
    kiln_scope_begin();
    kiln_tensor *h = kiln_relu(kiln_conv2d(x, cw, cb, NULL, (int[]){1, 1}, NULL, 1));
    h = kiln_batch_norm2d(h, gamma, beta, rmean, rvar, true, 0.1, 1e-5);
    h = kiln_reshape(kiln_max_pool2d(h, (int[]){2, 2}, NULL, NULL), 2, (int64_t[]){N, 64});
    kiln_tensor *loss = kiln_cross_entropy(kiln_linear(h, lw, lb), labels, 0);
    int rc = kiln_realize_many(3, (kiln_tensor *[]){loss, rmean, rvar});
    kiln_get_stats(&b);
    loss_v[s] = rc == 0 ? kiln_item(loss) : NAN;
    if (rc == 0) rc = kiln_backward(loss);
    if (rc == 0) rc = kiln_optim_step(o);
    kiln_get_stats(&c);
    kiln_scope_end();
    kiln_get_stats(&mem[s]);
    if (rc < 0) {
      test_fail(__FILE__, __LINE__, "step %d failed: %s", s, test_errmsg());
      break;
    }
    fwd[s] = b.kernels_run - a.kernels_run;
    upd[s] = c.kernels_run - b.kernels_run;
  }
  kiln_optim_free(o);
  kiln_params_free(p);
  if (test_failures()) return;
  if (getenv("KILN_TEST_VERBOSE"))
    for (int s = 0; s < STEPS; s++)
      printf("cnn step %d: loss %.6f, forward %lld kernels, backward+adam %lld kernels, nodes %lld "
             "tensors %lld bytes %lld\n",
             s, loss_v[s], (long long)fwd[s], (long long)upd[s], (long long)mem[s].nodes_live,
             (long long)mem[s].tensors_live, (long long)mem[s].bytes_allocated);

  for (int s = 0; s < STEPS; s++) {
    CHECKF(isfinite(loss_v[s]), "step %d: loss %g", s, loss_v[s]);
    CHECKF(fwd[s] <= FWD_BUDGET, "step %d: forward took %lld kernels, budget %d", s,
           (long long)fwd[s], FWD_BUDGET);
    CHECKF(upd[s] <= STEP_BUDGET, "step %d: backward + adam took %lld kernels, budget %d", s,
           (long long)upd[s], STEP_BUDGET);
  }
  CHECKF(loss_v[STEPS - 1] < loss_v[0], "the loss did not go down: %g -> %g", loss_v[0],
         loss_v[STEPS - 1]);
  /* after the first step (which creates the optimizer's moments), nothing accumulates */
  for (int s = 2; s < STEPS; s++) {
    CHECKF(mem[s].nodes_live == mem[1].nodes_live,
           "step %d: %lld graph nodes live, %lld after step 1", s, (long long)mem[s].nodes_live,
           (long long)mem[1].nodes_live);
    CHECKF(mem[s].tensors_live == mem[1].tensors_live,
           "step %d: %lld tensors live, %lld after step 1", s, (long long)mem[s].tensors_live,
           (long long)mem[1].tensors_live);
    CHECKF(mem[s].bytes_allocated == mem[1].bytes_allocated,
           "step %d: %lld bytes allocated, %lld after step 1", s, (long long)mem[s].bytes_allocated,
           (long long)mem[1].bytes_allocated);
  }
}
