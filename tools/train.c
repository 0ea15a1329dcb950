/* train.c — `kiln train fashion-mnist` and `kiln bench train`: the classic small CNN (two conv
 * blocks with batchnorm and max-pool, then a linear classifier, ~88k parameters) trained with
 * Adam, written with the public API like any user program. */
#include "kiln.h"
#include "cli.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the model ----------------------------------------------------------------------------
 * x (N,1,28,28) -> conv1 5x5 32 -> act -> conv2 5x5 32 -> act -> bn1 -> maxpool 2
 *   (N,32,10,10) -> conv3 3x3 64 -> act -> conv4 3x3 64 -> act -> bn2 -> maxpool 2
 *   (N,64,3,3) -> flatten 576 -> linear 10
 * act is relu or gelu (--act). */
typedef struct {
  kiln_params *params;  /* trainable */
  kiln_params *buffers; /* batchnorm running statistics */
  int act;              /* ACT_RELU or ACT_GELU */
  double bn_momentum;   /* of the running statistics in training mode (0.1) */
} cnn;
enum { ACT_RELU, ACT_GELU };
static const char *const act_names[] = {"relu", "gelu"};

static const struct {
  const char *name;
  int64_t shape[4];
  int ndim;
  int64_t fan_in; /* 0: batchnorm weight (ones) or bias (zeros) */
} cnn_layout[] = {
    {"conv1.weight", {32, 1, 5, 5}, 4, 25},      {"conv1.bias", {32}, 1, 25},
    {"conv2.weight", {32, 32, 5, 5}, 4, 800},    {"conv2.bias", {32}, 1, 800},
    {"bn1.weight", {32}, 1, 0},                  {"bn1.bias", {32}, 1, -1},
    {"conv3.weight", {64, 32, 3, 3}, 4, 288},    {"conv3.bias", {64}, 1, 288},
    {"conv4.weight", {64, 64, 3, 3}, 4, 576},    {"conv4.bias", {64}, 1, 576},
    {"bn2.weight", {64}, 1, 0},                  {"bn2.bias", {64}, 1, -1},
    {"fc.weight", {10, 576}, 2, 576},            {"fc.bias", {10}, 1, 576},
};
#define NLAYOUT ((int)(sizeof cnn_layout / sizeof cnn_layout[0]))

static void cnn_free(cnn *m) {
  for (int i = 0; i < kiln_params_count(m->params); i++) kiln_zero_grad(kiln_params_get(m->params, i));
  kiln_params_free(m->params);
  kiln_params_free(m->buffers);
}

/* Weights and biases uniform in +-1/sqrt(fan_in) (PyTorch's default), from the seed. */
static int cnn_init(cnn *m, uint64_t seed, int act) {
  m->act = act;
  m->bn_momentum = 0.1;
  m->params = kiln_params_new();
  m->buffers = kiln_params_new();
  for (int i = 0; i < NLAYOUT; i++) {
    const int64_t *s = cnn_layout[i].shape;
    int nd = cnn_layout[i].ndim;
    kiln_tensor *t;
    if (cnn_layout[i].fan_in > 0) {
      double bound = 1 / sqrt((double)cnn_layout[i].fan_in);
      t = kiln_binary_s(KILN_ADD, kiln_binary_s(KILN_MUL, kiln_rand(nd, s, seed * 1000 + i), 2 * bound), -bound);
    } else t = kiln_full(KILN_F32, nd, s, cnn_layout[i].fan_in == 0 ? 1 : 0);
    if (kiln_params_add(m->params, cnn_layout[i].name, t) < 0 || kiln_set_requires_grad(t, true) < 0)
      return -1;
  }
  const char *bn[4] = {"bn1.running_mean", "bn1.running_var", "bn2.running_mean", "bn2.running_var"};
  for (int i = 0; i < 4; i++) {
    int64_t c = i < 2 ? 32 : 64;
    if (kiln_params_add(m->buffers, bn[i], kiln_full(KILN_F32, 1, &c, i % 2)) < 0) return -1;
  }
  return 0;
}

static kiln_tensor *P(const cnn *m, const char *name) { return kiln_params_find(m->params, name); }
static kiln_tensor *B(const cnn *m, const char *name) { return kiln_params_find(m->buffers, name); }

static kiln_tensor *conv_act(const cnn *m, kiln_tensor *x, const char *layer) {
  char w[32], b[32];
  snprintf(w, sizeof w, "%s.weight", layer);
  snprintf(b, sizeof b, "%s.bias", layer);
  x = kiln_conv2d(x, P(m, w), P(m, b), NULL, NULL, NULL, 1);
  return m->act == ACT_GELU ? kiln_gelu(x) : kiln_relu(x);
}

static kiln_tensor *bn_pool(const cnn *m, kiln_tensor *x, const char *layer, bool training) {
  char n[4][40];
  const char *suffix[4] = {"weight", "bias", "running_mean", "running_var"};
  for (int i = 0; i < 4; i++) snprintf(n[i], sizeof n[i], "%s.%s", layer, suffix[i]);
  x = kiln_batch_norm2d(x, P(m, n[0]), P(m, n[1]), B(m, n[2]), B(m, n[3]), training, m->bn_momentum, 1e-5);
  return kiln_max_pool2d(x, (int[]){2, 2}, NULL, NULL);
}

/* logits (N, 10) */
static kiln_tensor *cnn_forward(const cnn *m, kiln_tensor *x, bool training) {
  x = conv_act(m, conv_act(m, x, "conv1"), "conv2");
  x = bn_pool(m, x, "bn1", training);
  x = conv_act(m, conv_act(m, x, "conv3"), "conv4");
  x = bn_pool(m, x, "bn2", training);
  x = kiln_reshape(x, 2, (int64_t[]){kiln_dim(x, 0), -1});
  return kiln_linear(x, P(m, "fc.weight"), P(m, "fc.bias"));
}

/* ---- data ---------------------------------------------------------------------------------- */
#define FM_MEAN 0.2860f
#define FM_STD 0.3530f

/* Batch of images idx[0..n) as normalized f32 (n,1,28,28) and labels i64 (n). */
static void make_batch(const kiln_image_set *d, const int64_t *idx, int64_t n, kiln_tensor **x,
                       kiln_tensor **y) {
  int64_t px = d->rows * d->cols;
  float *xb = malloc(sizeof(float) * (size_t)(n * px));
  int64_t *yb = malloc(sizeof(int64_t) * (size_t)n);
  for (int64_t i = 0; i < n; i++) {
    const uint8_t *img = d->images + idx[i] * px;
    for (int64_t p = 0; p < px; p++) xb[i * px + p] = (img[p] / 255.0f - FM_MEAN) / FM_STD;
    yb[i] = d->labels[idx[i]];
  }
  *x = kiln_from_data(KILN_F32, 4, (int64_t[]){n, 1, d->rows, d->cols}, xb);
  *y = kiln_from_data(KILN_I64, 1, &n, yb);
  free(xb);
  free(yb);
}

static uint64_t splitmix(uint64_t *s) {
  uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static void shuffle(int64_t *v, int64_t n, uint64_t seed) {
  uint64_t s = seed;
  for (int64_t i = n - 1; i > 0; i--) {
    int64_t j = (int64_t)(splitmix(&s) % (uint64_t)(i + 1)), t = v[i];
    v[i] = v[j], v[j] = t;
  }
}

static long peak_rss_mb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "VmHWM:", 6)) kb = atol(line + 6);
  if (f) fclose(f);
  return kb < 0 ? -1 : kb / 1024;
}

/* ---- patch-whitening start for conv1 (--init whiten) -----------------------------------------
 * conv1's 32 filters start as 16 whitening filters of the training images' 5x5 patches and their
 * negatives: the top 16 eigenvectors v_i of the patch covariance, each scaled by
 * 1/sqrt(lambda_i + eps), with biases that make each filter's mean output 0. The first layer then
 * hands on decorrelated, unit-variance features from the first step, which trains faster
 * (bench/RESULTS.md); its weights train from there like the others. */
#define WHITEN_IMAGES 5000
#define WHITEN_CHUNK 500 /* images per pass: (500, 25, 24, 24) patches, 29 MB */
#define WHITEN_EPS 5e-4
static int whiten_conv1(cnn *m, const kiln_image_set *train) {
  enum { K = 5, KK = 25, HALF = 16 };
  int64_t n = train->n < WHITEN_IMAGES ? train->n : WHITEN_IMAGES, idx[WHITEN_CHUNK];
  float eye[KK * KK] = {0};
  for (int i = 0; i < KK; i++) eye[i * (KK + 1)] = 1;
  double sum[KK] = {0}, prod[KK * KK] = {0}, count = 0; /* of the patches, over all chunks */
  bool old = kiln_set_grad_enabled(false);
  int rc = 0;
  for (int64_t s = 0; s < n && rc == 0; s += WHITEN_CHUNK) {
    int64_t c = n - s < WHITEN_CHUNK ? n - s : WHITEN_CHUNK;
    for (int64_t i = 0; i < c; i++) idx[i] = s + i;
    kiln_scope_begin();
    kiln_tensor *x, *y;
    make_batch(train, idx, c, &x, &y);
    /* each patch as a column: (25, c * 24 * 24) */
    kiln_tensor *p = kiln_conv2d(x, kiln_from_data(KILN_F32, 4, (int64_t[]){KK, 1, K, K}, eye), NULL, NULL, NULL, NULL, 1);
    p = kiln_reshape(kiln_transpose(p, 0, 1), 2, (int64_t[]){KK, -1});
    float ps[KK], pp[KK * KK];
    rc = kiln_to_host(kiln_sum(p, 1, (int[]){1}, false), ps, sizeof ps);
    if (rc == 0) rc = kiln_to_host(kiln_matmul(p, kiln_transpose(p, 0, 1)), pp, sizeof pp);
    for (int i = 0; i < KK * KK; i++) prod[i] += pp[i];
    for (int i = 0; i < KK; i++) sum[i] += ps[i];
    count += (double)kiln_dim(p, 1);
    kiln_scope_end();
  }
  double cov[KK * KK];
  float mean[KK];
  for (int i = 0; i < KK; i++) mean[i] = (float)(sum[i] / count);
  for (int i = 0; i < KK * KK; i++) cov[i] = (prod[i] - sum[i / KK] * sum[i % KK] / count) / (count - 1);
  kiln_scope_begin();
  kiln_tensor *values, *vectors;
  if (rc == 0) rc = kiln_eigh(kiln_from_data(KILN_F64, 2, (int64_t[]){KK, KK}, cov), &values, &vectors);
  if (rc == 0) { /* values ascend: the top half is the last 16, largest first */
    kiln_tensor *top = kiln_flip(kiln_slice(vectors, 1, KK - HALF, KK, 1), 1, (int[]){1});
    kiln_tensor *scale = kiln_flip(kiln_slice(values, 0, KK - HALF, KK, 1), 1, (int[]){0});
    scale = kiln_unary(KILN_RSQRT, kiln_binary_s(KILN_ADD, scale, WHITEN_EPS));
    kiln_tensor *w = kiln_mul(kiln_transpose(top, 0, 1), kiln_unsqueeze(scale, 1)); /* (16, 25) */
    w = kiln_cast(kiln_cat(2, (kiln_tensor *[]){w, kiln_neg(w)}, 0), KILN_F32);      /* (32, 25) */
    kiln_tensor *bias = kiln_neg(kiln_matmul(w, kiln_from_data(KILN_F32, 1, (int64_t[]){KK}, mean)));
    rc = kiln_assign(P(m, "conv1.weight"), kiln_reshape(w, 4, (int64_t[]){2 * HALF, 1, K, K}));
    if (rc == 0) rc = kiln_assign(P(m, "conv1.bias"), bias);
    if (rc == 0) rc = kiln_realize_many(2, (kiln_tensor *[]){P(m, "conv1.weight"), P(m, "conv1.bias")});
  }
  kiln_scope_end();
  kiln_set_grad_enabled(old);
  kiln_release_memory(); /* the patches' buffers: training takes other sizes */
  return rc;
}

/* ---- one step, evaluation ------------------------------------------------------------------ */
/* Forward, backward and update; *loss and *correct (in the batch) are read back. */
static int train_step(const cnn *m, kiln_optim *opt, kiln_tensor *x, kiln_tensor *y, double smoothing,
                      double *loss, int64_t *correct) {
  kiln_scope_begin();
  kiln_tensor *logits = cnn_forward(m, x, true);
  kiln_tensor *l = kiln_cross_entropy(logits, y, smoothing);
  bool old = kiln_set_grad_enabled(false);
  kiln_tensor *hits = kiln_sum(kiln_binary(KILN_EQ, kiln_argmax(kiln_detach(logits), 1, false), y), 0, NULL, false);
  kiln_set_grad_enabled(old);
  kiln_tensor *outs[6] = {l, hits, B(m, "bn1.running_mean"), B(m, "bn1.running_var"),
                          B(m, "bn2.running_mean"), B(m, "bn2.running_var")};
  int rc = kiln_realize_many(6, outs);
  if (rc == 0) rc = kiln_backward(l);
  if (rc == 0) rc = kiln_optim_step(opt);
  if (rc == 0) {
    *loss = kiln_item(l);
    *correct = (int64_t)kiln_item(hits);
  }
  kiln_scope_end();
  return rc;
}

/* The batchnorm running statistics recomputed with the current weights: the plain average of
 * the batch statistics of `batches` training batches (momentum 1/(k+1) for the k-th), where
 * training leaves a decayed average of statistics taken while the weights still moved. */
static int recompute_bn_stats(cnn *m, const kiln_image_set *train, int64_t batch, long batches, uint64_t seed) {
  bool old = kiln_set_grad_enabled(false);
  int64_t *idx = malloc(sizeof(int64_t) * (size_t)batch);
  uint64_t s = seed;
  int rc = 0;
  for (long k = 0; k < batches && rc == 0; k++) {
    for (int64_t i = 0; i < batch; i++) idx[i] = (int64_t)(splitmix(&s) % (uint64_t)train->n);
    kiln_scope_begin();
    kiln_tensor *x, *y;
    make_batch(train, idx, batch, &x, &y);
    m->bn_momentum = 1.0 / (double)(k + 1);
    kiln_tensor *outs[8], *bn = cnn_forward(m, x, true); /* queues the statistics' updates */
    int nb = kiln_params_count(m->buffers);
    for (int i = 0; i < nb; i++) outs[i] = kiln_params_get(m->buffers, i);
    rc = bn ? kiln_realize_many(nb, outs) : -1;
    kiln_scope_end();
  }
  m->bn_momentum = 0.1;
  free(idx);
  kiln_set_grad_enabled(old);
  return rc;
}

static int evaluate(const cnn *m, const kiln_image_set *test, double *acc) {
  bool old = kiln_set_grad_enabled(false);
  int64_t hits = 0, bs = 1000;
  int64_t *idx = malloc(sizeof(int64_t) * (size_t)bs);
  int rc = 0;
  for (int64_t s = 0; s < test->n && rc == 0; s += bs) {
    int64_t n = test->n - s < bs ? test->n - s : bs;
    for (int64_t i = 0; i < n; i++) idx[i] = s + i;
    kiln_scope_begin();
    kiln_tensor *x, *y;
    make_batch(test, idx, n, &x, &y);
    kiln_tensor *pred = kiln_argmax(cnn_forward(m, x, false), 1, false);
    double h = kiln_item(kiln_sum(kiln_binary(KILN_EQ, pred, y), 0, NULL, false));
    if (isnan(h)) rc = -1;
    hits += (int64_t)h;
    kiln_scope_end();
  }
  free(idx);
  kiln_set_grad_enabled(old);
  *acc = 100.0 * (double)hits / (double)test->n;
  return rc;
}

/* ---- checkpoints: model, batchnorm buffers, optimizer state, the averaged model (--ema) and
 * the epoch in one file ------------------------------------------------------------------------ */
#define NSETS 5
#define REPORTED (-2) /* failed, and the message is out */
static void checkpoint_sets(const cnn *m, kiln_optim *opt, const cnn *ema, kiln_params **sets, const char **prefix) {
  kiln_params *s[NSETS] = {m->params, m->buffers, kiln_optim_state(opt), ema ? ema->params : NULL,
                           ema ? ema->buffers : NULL};
  const char *p[NSETS] = {"model.", "model.", "optim.", "ema.", "ema."};
  memcpy(sets, s, sizeof s);
  memcpy(prefix, p, sizeof p);
}

static int save_checkpoint(const cnn *m, kiln_optim *opt, const cnn *ema, int64_t epoch, const char *path) {
  kiln_params *all = kiln_params_new(), *sets[NSETS];
  const char *prefix[NSETS];
  checkpoint_sets(m, opt, ema, sets, prefix);
  char name[256];
  int rc = 0;
  kiln_scope_begin(); /* the set borrows handles: copies, so freeing it frees only these */
  for (int s = 0; s < NSETS && rc == 0; s++)
    for (int i = 0; sets[s] && i < kiln_params_count(sets[s]) && rc == 0; i++) {
      snprintf(name, sizeof name, "%s%s", prefix[s], kiln_params_name(sets[s], i));
      rc = kiln_params_add(all, name, kiln_detach(kiln_params_get(sets[s], i)));
    }
  int64_t act = m->act;
  if (rc == 0) rc = kiln_params_add(all, "epoch", kiln_from_data(KILN_I64, 0, NULL, &epoch));
  if (rc == 0) rc = kiln_params_add(all, "activation", kiln_from_data(KILN_I64, 0, NULL, &act));
  kiln_scope_end();
  if (rc == 0) rc = kiln_save_safetensors(all, path);
  kiln_params_free(all);
  return rc;
}

/* The averaged model is taken from the file where it has one, else it starts from the weights. */
static int load_checkpoint(cnn *m, kiln_optim *opt, cnn *ema, const char *path, int64_t *epoch) {
  kiln_params *all = kiln_load_safetensors(path), *sets[NSETS];
  if (!all) return -1;
  const char *prefix[NSETS];
  char name[256];
  int rc = 0;
  /* check everything first so a bad file changes nothing */
  kiln_tensor *e = kiln_params_find(all, "epoch"), *a = kiln_params_find(all, "activation");
  if (!e) {
    fprintf(stderr, "kiln: train: checkpoint %s has no 'epoch'\n", path);
    rc = REPORTED;
  }
  int64_t act = a ? (int64_t)kiln_item(a) : ACT_RELU; /* files from before --act: relu */
  if (rc == 0 && act != m->act) {
    fprintf(stderr, "kiln: train: checkpoint %s was trained with --act %s, not %s\n", path,
            act == ACT_GELU || act == ACT_RELU ? act_names[act] : "(unknown)", act_names[m->act]);
    rc = REPORTED;
  }
  bool file_ema = ema && kiln_params_find(all, "ema.fc.weight");
  checkpoint_sets(m, opt, file_ema ? ema : NULL, sets, prefix);
  for (int pass = 0; pass < 2 && rc == 0; pass++)
    for (int s = 0; s < NSETS && rc == 0; s++)
      for (int i = 0; sets[s] && i < kiln_params_count(sets[s]) && rc == 0; i++) {
        kiln_tensor *dst = kiln_params_get(sets[s], i);
        snprintf(name, sizeof name, "%s%s", prefix[s], kiln_params_name(sets[s], i));
        kiln_tensor *src = kiln_params_find(all, name);
        if (!src || kiln_ndim(src) != kiln_ndim(dst) || kiln_numel(src) != kiln_numel(dst) ||
            kiln_dtype_of(src) != kiln_dtype_of(dst)) {
          fprintf(stderr, "kiln: train: checkpoint %s: '%s' is missing or has the wrong shape\n", path, name);
          rc = REPORTED;
        } else if (pass == 1)
          rc = kiln_assign(dst, src);
      }
  if (rc == 0) *epoch = (int64_t)kiln_item(e);
  if (rc == 0 && ema && !file_ema) /* from the weights, as at the start */
    for (int s = 0; s < 2 && rc == 0; s++) {
      kiln_params *from = s ? m->buffers : m->params, *to = s ? ema->buffers : ema->params;
      for (int i = 0; i < kiln_params_count(to) && rc == 0; i++)
        rc = kiln_assign(kiln_params_get(to, i), kiln_params_get(from, i));
    }
  /* what now names the file's data (all but the weights, which assign realized) is realized
   * before the file goes */
  checkpoint_sets(m, opt, ema, sets, prefix);
  for (int s = 1; s < NSETS && rc == 0; s++)
    for (int i = 0; sets[s] && i < kiln_params_count(sets[s]) && rc == 0; i++)
      rc = kiln_realize(kiln_params_get(sets[s], i));
  kiln_params_free(all);
  return rc;
}

/* ---- the averaged model (--ema D): after each step, e = D * e + (1 - D) * w ------------------ */
static int ema_init(cnn *e, const cnn *m) {
  e->act = m->act;
  e->bn_momentum = 0.1;
  e->params = kiln_params_new();
  e->buffers = kiln_params_new();
  int rc = 0;
  for (int s = 0; s < 2 && rc == 0; s++) {
    kiln_params *from = s ? m->buffers : m->params, *to = s ? e->buffers : e->params;
    for (int i = 0; i < kiln_params_count(from) && rc == 0; i++) {
      kiln_tensor *t = kiln_contiguous(kiln_detach(kiln_params_get(from, i)));
      rc = kiln_realize(t);
      if (rc == 0) rc = kiln_params_add(to, kiln_params_name(from, i), t);
    }
  }
  return rc;
}

static int ema_update(cnn *e, const cnn *m, double decay) {
  int n = kiln_params_count(e->params), rc = 0;
  kiln_tensor **outs = malloc(sizeof(kiln_tensor *) * (size_t)n);
  kiln_scope_begin();
  for (int i = 0; i < n && rc == 0; i++) {
    kiln_tensor *a = kiln_params_get(e->params, i), *w = kiln_detach(kiln_params_get(m->params, i));
    outs[i] = a;
    rc = kiln_assign(a, kiln_add(kiln_binary_s(KILN_MUL, a, decay), kiln_binary_s(KILN_MUL, w, 1 - decay)));
  }
  if (rc == 0) rc = kiln_realize_many(n, outs);
  kiln_scope_end();
  free(outs);
  return rc;
}

/* ---- kiln train fashion-mnist --------------------------------------------------------------- */
typedef struct {
  long epochs, batch, seed, steps, warmup, limit, warmup_steps;
  long bn_batches; /* --bn-batches: batchnorm statistics recomputed before each evaluation */
  int act; /* --act: ACT_RELU or ACT_GELU */
  double lr, smoothing; /* label smoothing of the loss */
  double ema;           /* --ema: decay of the averaged weights (0: none) */
  double beta1, beta2;  /* Adam's */
  bool whiten; /* --init whiten: conv1 starts as patch-whitening filters (else uniform) */
  bool cosine; /* --schedule cosine: linear warmup over warmup_steps, then cosine decay to 0 */
  const char *device, *checkpoint, *resume, *data;
} train_opts;

static const char train_usage[] =
    "usage: kiln train fashion-mnist [--epochs 3] [--batch 512] [--lr 0.005] [--seed 42]\n"
    "                                [--device D] [--checkpoint PATH] [--resume PATH]\n"
    "                                [--data DIR] [--limit N] [--schedule cosine|constant]\n"
    "                                [--warmup-steps 30] [--label-smoothing 0.1] [--act gelu|relu]\n"
    "                                [--bn-batches 20] [--ema 0.9] [--init whiten|uniform]\n"
    "                                [--beta1 0.8] [--beta2 0.99]\n"
    "  trains the Fashion-MNIST CNN with Adam, evaluates on the 10k test images after each\n"
    "  epoch, saves a safetensors checkpoint (default fashion-mnist.safetensors) each epoch,\n"
    "  and ends with a line 'test accuracy: NN.NN%'. --resume continues from a checkpoint.\n"
    "  --limit N uses only the first N training and test images (a quick check).\n"
    "  --schedule cosine ramps the rate up linearly over --warmup-steps steps, then decays it\n"
    "  along a cosine to 0 at the end of the last epoch (the default; constant keeps --lr).\n"
    "  --act is the activation after each convolution; --resume needs the checkpoint's one.\n"
    "  --bn-batches N recomputes the batchnorm statistics over N training batches with the\n"
    "  weights an epoch ends with, before its evaluation (0: the running averages as trained).\n"
    "  --ema DECAY keeps an exponential moving average of the weights (after each step,\n"
    "  avg = DECAY * avg + (1 - DECAY) * weights), evaluated with its own batchnorm statistics\n"
    "  (over --bn-batches batches, else the trained ones) and reported as the test accuracy\n"
    "  beside the trained weights' (0: none).\n"
    "  --init whiten starts conv1 as whitening filters of the training images' 5x5 patches\n"
    "  (the default); uniform starts every layer uniform in +-1/sqrt(fan_in).\n"
    "  --beta1, --beta2 are Adam's decay rates of its gradient averages.\n";

/* A number in [0, 1) into *out: 0, or -1 if v is not one. */
static int parse_fraction(const char *v, double *out) {
  char *end;
  double d = strtod(v, &end);
  if (end == v || *end || !(d >= 0 && d < 1)) return -1;
  *out = d;
  return 0;
}

static int parse_train_flags(int argc, char **argv, train_opts *o, bool bench) {
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    const char *v;
    long lv;
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf(bench ? "usage: kiln bench train %s\n" : "%s", bench ? bench_train_usage : train_usage);
      return 1;
    } else if ((v = flag_value(argc, argv, &i, "--epochs", &missing)) && !bench) {
      if (parse_int(v, 1, 1000, &o->epochs)) return usage_error("train: --epochs wants 1..1000, got '%s'", v);
    } else if ((v = flag_value(argc, argv, &i, "--batch", &missing))) {
      if (parse_int(v, 1, 65536, &o->batch)) return usage_error("train: --batch wants 1..65536, got '%s'", v);
    } else if ((v = flag_value(argc, argv, &i, "--seed", &missing))) {
      if (parse_int(v, 0, 1L << 40, &lv)) return usage_error("train: --seed wants a whole number >= 0, got '%s'", v);
      o->seed = lv;
    } else if ((v = flag_value(argc, argv, &i, "--steps", &missing)) && bench) {
      if (parse_int(v, 1, 100000, &o->steps)) return usage_error("bench train: --steps wants 1..100000, got '%s'", v);
    } else if ((v = flag_value(argc, argv, &i, "--warmup", &missing)) && bench) {
      if (parse_int(v, 0, 100000, &o->warmup)) return usage_error("bench train: --warmup wants 0..100000, got '%s'", v);
    } else if ((v = flag_value(argc, argv, &i, "--lr", &missing))) {
      char *end;
      o->lr = strtod(v, &end);
      if (end == v || *end || !(o->lr > 0 && o->lr < 10)) return usage_error("train: --lr wants a number in (0, 10), got '%s'", v);
    } else if ((v = flag_value(argc, argv, &i, "--device", &missing))) {
      o->device = v;
    } else if ((v = flag_value(argc, argv, &i, "--act", &missing))) {
      if (strcmp(v, "relu") && strcmp(v, "gelu")) return usage_error("train: --act wants relu or gelu, got '%s'", v);
      o->act = !strcmp(v, "gelu") ? ACT_GELU : ACT_RELU;
    } else if ((v = flag_value(argc, argv, &i, "--init", &missing)) && !bench) {
      if (strcmp(v, "whiten") && strcmp(v, "uniform")) return usage_error("train: --init wants whiten or uniform, got '%s'", v);
      o->whiten = !strcmp(v, "whiten");
    } else if ((v = flag_value(argc, argv, &i, "--checkpoint", &missing)) && !bench) {
      o->checkpoint = v;
    } else if ((v = flag_value(argc, argv, &i, "--resume", &missing)) && !bench) {
      o->resume = v;
    } else if ((v = flag_value(argc, argv, &i, "--data", &missing)) && !bench) {
      o->data = v;
    } else if ((v = flag_value(argc, argv, &i, "--schedule", &missing)) && !bench) {
      if (strcmp(v, "constant") && strcmp(v, "cosine"))
        return usage_error("train: --schedule wants constant or cosine, got '%s'", v);
      o->cosine = !strcmp(v, "cosine");
    } else if ((v = flag_value(argc, argv, &i, "--label-smoothing", &missing)) && !bench) {
      if (parse_fraction(v, &o->smoothing)) return usage_error("train: --label-smoothing wants a number in [0, 1), got '%s'", v);
    } else if ((v = flag_value(argc, argv, &i, "--beta1", &missing)) && !bench) {
      if (parse_fraction(v, &o->beta1)) return usage_error("train: --beta1 wants a number in [0, 1), got '%s'", v);
    } else if ((v = flag_value(argc, argv, &i, "--beta2", &missing)) && !bench) {
      if (parse_fraction(v, &o->beta2)) return usage_error("train: --beta2 wants a number in [0, 1), got '%s'", v);
    } else if ((v = flag_value(argc, argv, &i, "--warmup-steps", &missing)) && !bench) {
      if (parse_int(v, 0, 1000000, &o->warmup_steps)) return usage_error("train: --warmup-steps wants 0..1000000, got '%s'", v);
    } else if ((v = flag_value(argc, argv, &i, "--ema", &missing)) && !bench) {
      if (parse_fraction(v, &o->ema)) return usage_error("train: --ema wants a number in [0, 1), got '%s'", v);
    } else if ((v = flag_value(argc, argv, &i, "--bn-batches", &missing)) && !bench) {
      if (parse_int(v, 0, 10000, &o->bn_batches)) return usage_error("train: --bn-batches wants 0..10000, got '%s'", v);
    } else if ((v = flag_value(argc, argv, &i, "--limit", &missing)) && !bench) {
      if (parse_int(v, 1, 1L << 40, &o->limit)) return usage_error("train: --limit wants a whole number >= 1, got '%s'", v);
    } else if (missing) {
      return usage_error("train: %s needs a value", argv[i]);
    } else {
      return usage_error("train: unknown argument '%s'", argv[i]);
    }
  }
  if (o->device && kiln_set_device(o->device) < 0) {
    fprintf(stderr, "kiln: train: --device %s: %s\n", o->device, kiln_error());
    return EXIT_USAGE;
  }
  return 0;
}

/* The test accuracy after an epoch: of the averaged model where there is one (*acc; the
 * trained weights' in *wacc), each with its batchnorm statistics recomputed if asked. */
static int evaluate_models(cnn *m, cnn *ema, const kiln_image_set *train, const kiln_image_set *test,
                           const train_opts *o, long ep, double *acc, double *wacc) {
  uint64_t seed = (uint64_t)o->seed * 7919 + (uint64_t)ep + 1000;
  int rc = o->bn_batches ? recompute_bn_stats(m, train, o->batch, o->bn_batches, seed) : 0;
  if (rc == 0) rc = evaluate(m, test, ema ? wacc : acc);
  if (rc || !ema) return rc;
  if (o->bn_batches) rc = recompute_bn_stats(ema, train, o->batch, o->bn_batches, seed);
  else
    for (int i = 0; i < kiln_params_count(ema->buffers) && rc == 0; i++)
      rc = kiln_assign(kiln_params_get(ema->buffers, i), kiln_params_get(m->buffers, i));
  return rc ? rc : evaluate(ema, test, acc);
}

static void progress(long epoch, long epochs, int64_t step, int64_t steps, double loss, double acc,
                     double sps) {
  int w = 24, done = (int)(w * step / (steps ? steps : 1));
  char bar[32];
  for (int i = 0; i < w; i++) bar[i] = i < done ? '#' : '.';
  bar[w] = 0;
  fprintf(stderr, "\repoch %ld/%ld [%s] %lld/%lld  loss %.4f  acc %5.2f%%  %6.0f samples/s ", epoch, epochs,
          bar, (long long)step, (long long)steps, loss, acc, sps);
  fflush(stderr);
}

int cmd_train(int argc, char **argv) {
  if (argc < 2 || (strcmp(argv[1], "fashion-mnist") && strcmp(argv[1], "--help") && strcmp(argv[1], "-h"))) {
    fprintf(stderr, "%s", train_usage);
    return argc < 2 ? EXIT_USAGE : usage_error("train: unknown dataset '%s' (have: fashion-mnist)", argv[1]);
  }
  /* defaults: the best of the settings tried (bench/RESULTS.md) */
  train_opts o = {.epochs = 3, .batch = 512, .seed = 42, .lr = 5e-3, .warmup_steps = 30, .cosine = true,
                  .smoothing = 0.1, .act = ACT_GELU, .ema = 0.9, .bn_batches = 20, .whiten = true,
                  .beta1 = 0.8, .beta2 = 0.99,
                  .checkpoint = "fashion-mnist.safetensors"};
  int pr = parse_train_flags(argc - (argv[1][0] != '-'), argv + (argv[1][0] != '-'), &o, false);
  if (pr) return pr < 0 ? EXIT_USAGE : pr == 1 ? EXIT_OK : pr;
  kiln_image_set train = {0}, test = {0};
  if (kiln_fashion_mnist_load(o.data, true, &train) < 0 || kiln_fashion_mnist_load(o.data, false, &test) < 0) {
    kiln_image_set_free(&train);
    return runtime_error("train");
  }
  if (o.limit) {
    train.n = train.n < o.limit ? train.n : o.limit;
    test.n = test.n < o.limit ? test.n : o.limit;
  }
  cnn m;
  kiln_optim *opt = NULL;
  int rc = cnn_init(&m, (uint64_t)o.seed, o.act);
  if (rc == 0 && o.whiten && !o.resume) rc = whiten_conv1(&m, &train);
  if (rc == 0) opt = kiln_adam(m.params, o.lr, o.beta1, o.beta2, 1e-8, 0, false);
  cnn avg = {0}, *ema = o.ema > 0 ? &avg : NULL;
  if (rc == 0 && ema) rc = ema_init(ema, &m);
  int64_t start_epoch = 0;
  if (rc == 0 && opt && o.resume) {
    rc = load_checkpoint(&m, opt, ema, o.resume, &start_epoch);
    if (rc == 0) fprintf(stderr, "resumed from %s after epoch %lld\n", o.resume, (long long)start_epoch);
  }
  if (!opt) rc = -1;
  int64_t *order = malloc(sizeof(int64_t) * (size_t)train.n);
  int64_t steps = (train.n + o.batch - 1) / o.batch;
  double acc = 0;
  for (long ep = start_epoch; rc == 0 && ep < o.epochs; ep++) {
    for (int64_t i = 0; i < train.n; i++) order[i] = i;
    shuffle(order, train.n, (uint64_t)o.seed * 7919 + (uint64_t)ep);
    double t0 = now_seconds(), loss_sum = 0;
    int64_t seen = 0, hits = 0;
    for (int64_t s = 0; s < steps && rc == 0; s++) {
      int64_t n = train.n - s * o.batch < o.batch ? train.n - s * o.batch : o.batch;
      kiln_scope_begin();
      kiln_tensor *x, *y;
      make_batch(&train, order + s * o.batch, n, &x, &y);
      double loss;
      int64_t correct;
      if (o.cosine) { /* the rate of this step of the whole run */
        int64_t step = ep * steps + s, total = o.epochs * steps;
        double lr = step < o.warmup_steps ? kiln_lr_warmup(step, o.warmup_steps, o.lr)
                                          : kiln_lr_cosine(step - o.warmup_steps, total - o.warmup_steps, o.lr, 0);
        kiln_optim_set_lr(opt, lr);
      }
      rc = train_step(&m, opt, x, y, o.smoothing, &loss, &correct);
      if (rc == 0 && ema) rc = ema_update(ema, &m, o.ema);
      kiln_scope_end();
      if (rc) break;
      loss_sum += loss * (double)n, seen += n, hits += correct;
      progress(ep + 1, o.epochs, s + 1, steps, loss_sum / (double)seen, 100.0 * (double)hits / (double)seen,
               (double)seen / (now_seconds() - t0));
    }
    if (rc) break;
    double secs = now_seconds() - t0, wacc = 0;
    rc = evaluate_models(&m, ema, &train, &test, &o, ep, &acc, &wacc);
    if (rc) break;
    kiln_release_memory(); /* the evaluation's buffers, before training's come back */
    fprintf(stderr, "\n");
    char also[64] = "";
    if (ema) snprintf(also, sizeof also, " (averaged; weights %.2f%%)", wacc);
    printf("epoch %ld: train loss %.4f  train acc %.2f%%  test acc %.2f%%%s  %.1f s  %.0f samples/s  peak RSS %ld MB\n",
           ep + 1, loss_sum / (double)seen, 100.0 * (double)hits / (double)seen, acc, also, secs,
           (double)seen / secs, peak_rss_mb());
    fflush(stdout);
    if (o.checkpoint && *o.checkpoint) rc = save_checkpoint(&m, opt, ema, ep + 1, o.checkpoint);
  }
  if (rc == 0 && start_epoch >= o.epochs) rc = evaluate(ema ? ema : &m, &test, &acc);
  free(order);
  kiln_image_set_free(&train);
  kiln_image_set_free(&test);
  kiln_optim_free(opt);
  cnn_free(&m);
  if (ema) cnn_free(ema);
  if (rc) return rc == REPORTED ? EXIT_RUNTIME : runtime_error("train");
  if (o.checkpoint && *o.checkpoint) printf("checkpoint: %s\n", o.checkpoint);
  printf("test accuracy: %.2f%%\n", acc);
  return EXIT_OK;
}

/* ---- kiln bench train: step time on random data (no dataset needed) ------------------------- */
const char bench_train_usage[] = "[--batch 512] [--steps 10] [--warmup 3] [--lr 0.001] [--seed 42] [--act gelu|relu] [--device D]";

int bench_train(int argc, char **argv) {
  train_opts o = {.batch = 512, .seed = 42, .lr = 1e-3, .steps = 10, .warmup = 3, .act = ACT_GELU};
  int pr = parse_train_flags(argc, argv, &o, true);
  if (pr) return pr == 1 ? EXIT_OK : pr;
  cnn m;
  kiln_optim *opt = NULL;
  int rc = cnn_init(&m, (uint64_t)o.seed, o.act);
  if (rc == 0) opt = kiln_adam(m.params, o.lr, 0.9, 0.999, 1e-8, 0, false);
  if (!opt) rc = -1;
  double *times = malloc(sizeof(double) * (size_t)o.steps);
  int64_t n = o.batch;
  int64_t *labels = malloc(sizeof(int64_t) * (size_t)n);
  for (int64_t i = 0; i < n; i++) labels[i] = (i * 7) % 10;
  for (long s = 0; rc == 0 && s < o.warmup + o.steps; s++) {
    kiln_scope_begin();
    kiln_tensor *x = kiln_randn(4, (int64_t[]){n, 1, 28, 28}, (uint64_t)s);
    kiln_tensor *y = kiln_from_data(KILN_I64, 1, &n, labels);
    rc = kiln_realize(x);
    double t0 = now_seconds(), loss;
    int64_t correct;
    if (rc == 0) rc = train_step(&m, opt, x, y, 0, &loss, &correct);
    if (s >= o.warmup) times[s - o.warmup] = now_seconds() - t0;
    kiln_scope_end();
  }
  if (rc == 0) {
    double mn = times[0];
    for (long i = 1; i < o.steps; i++) mn = times[i] < mn ? times[i] : mn;
    double med = median(times, (int)o.steps);
    const char *thr = getenv("KILN_THREADS");
    printf("kiln step_ms median %.1f min %.1f samples/s %.0f threads %s batch %lld device %s\n", med * 1e3,
           mn * 1e3, (double)n / med, thr && *thr ? thr : "all", (long long)n, kiln_get_device());
  }
  free(times);
  free(labels);
  kiln_optim_free(opt);
  cnn_free(&m);
  return rc ? runtime_error("bench train") : EXIT_OK;
}
