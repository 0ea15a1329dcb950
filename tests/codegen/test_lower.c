/* test_lower.c — codegen's transforms as data and GPU-shaped kernels. A reduce kernel is
 * lowered for a device with work-groups (the heuristic picks GROUP where the outputs are few)
 * and with given transform lists; each program runs on the interpreter, work-group by
 * work-group, against the plain CPU-shaped lowering of the same kernel; where CL works, the
 * same GPU-shaped program runs there too. Lists that do not apply are refused with an error.
 * Lane loops written as vectors compute on the CPU and on CL what the interpreter computes lane
 * by lane. */
#include "internal.h"
#include "render/dialect.h"
#include "test.h"
#include <stdlib.h>

/* A device with work-groups, as codegen sees one: launch dims are groups, 256 work-items. */
static const kn_devcaps gpu_caps = {
    .max_dims = 3, .max_local = 256, .local_mem = 32 << 10, .opts = KN_OPT_ALL, .index32 = true};

/* The one kernel of y's schedule (y's inputs realized on INTERP first). */
typedef struct {
  kn_schedule s;
  kn_sched_item *it;
} one_kernel;
static bool schedule_one(kiln_tensor *y, one_kernel *o) {
  kn_node *root = y->node;
  if (kn_schedule_build(1, &root, &o->s) != 0 || o->s.nitems != 1) return false;
  o->it = &o->s.items[0];
  return true;
}

/* Runs k on the interpreter over host copies of the item's inputs; returns the output (bytes
 * of dtype buf_dtype[0], malloc'ed). */
static void *run_interp(const kn_kernel *k, const kn_sched_item *it) {
  void *bufs[64];
  size_t n = (size_t)k->buf_numel[0] * kiln_dtype_size(k->buf_dtype[0]);
  bufs[0] = calloc(1, n ? n : 1);
  for (int i = 0; i < it->ninputs; i++)
    bufs[i + 1] = it->inputs[i]->buf->h; /* INTERP buffers are host memory */
  kn_interp_run(k, bufs, 0, k->nglobal ? k->global[0] : 1);
  return bufs[0];
}

/* The same program on device `name` (CL, CPU): NULL if it does not work here. */
static void *run_on(const char *name, const kn_kernel *k, const kn_sched_item *it) {
  int dev = kn_device_find(name);
  if (dev < 0 || !kn_device_usable(dev, &(const char *){NULL})) return NULL;
  kn_device *d = kn_device_get(dev);
  char *src = kn_render(d->dialect, k);
  void *pg = d->compile(d, k, src);
  free(src);
  if (!pg) return NULL;
  void *bufs[64];
  size_t n = (size_t)k->buf_numel[0] * kiln_dtype_size(k->buf_dtype[0]);
  bufs[0] = d->alloc(d, n, true);
  for (int i = 0; i < it->ninputs; i++) {
    size_t m = (size_t)k->buf_numel[i + 1] * kiln_dtype_size(k->buf_dtype[i + 1]);
    bufs[i + 1] = d->alloc(d, m, false);
    d->copyin(d, bufs[i + 1], 0, it->inputs[i]->buf->h, m);
  }
  void *out = NULL;
  if (d->launch(d, pg, k, bufs) == 0) {
    out = calloc(1, n ? n : 1);
    d->copyout(d, out, bufs[0], 0, n);
  }
  for (int i = 0; i <= it->ninputs; i++)
    d->free(d, bufs[i]);
  d->free_program(d, pg);
  return out;
}

static bool has_opt(const kn_kernel *k, int op) {
  for (int i = 0; i < k->opts.n; i++)
    if (k->opts.o[i].op == op) return true;
  return false;
}

/* Compares n outputs of dtype dt: exact for integers, to rel (relative to the largest) for
 * floats. */
static void compare(const char *what, int dt, const void *got, const void *want, int64_t n,
                    double rel) {
  double big = 0, worst = 0;
  int64_t at = -1;
  for (int64_t i = 0; i < n; i++) {
    double g = dt == KILN_F32 ? ((const float *)got)[i] : ((const int32_t *)got)[i];
    double w = dt == KILN_F32 ? ((const float *)want)[i] : ((const int32_t *)want)[i];
    big = fabs(w) > big ? fabs(w) : big;
    if (!(fabs(g - w) <= worst) || g != g) worst = fabs(g - w), at = i;
  }
  double tol = dt == KILN_F32 ? rel * (big > 1 ? big : 1) : 0;
  CHECKF(at < 0 || worst <= tol, "%s: element %lld off by %g (tolerance %g)", what, (long long)at,
         worst, tol);
}

/* Lowers it with opts (NULL: the heuristic for gpu_caps) and checks it on INTERP and CL
 * against the CPU-shaped lowering. */
static void check_lowering(const char *what, const kn_sched_item *it, const kn_opts *opts,
                           bool want_group) {
  test_set_context("%s", what);
  kn_kernel *ref = kn_lower(it, &kn_dev_interp.caps, NULL);
  kn_kernel *k = kn_lower(it, &gpu_caps, opts);
  REQUIRE(ref && k);
  char t[256];
  kn_opts_format(&k->opts, t, sizeof t);
  CHECKF(has_opt(k, KN_OPT_GROUP) == want_group, "opts %s: GROUP %s", t,
         want_group ? "missing" : "unexpected");
  if (want_group) {
    bool barrier = false;
    for (int i = 0; i < k->nops; i++)
      barrier = barrier || k->ops[i].op == L_BARRIER;
    CHECKF(k->groups && barrier && k->local[0] > 1, "a GROUP kernel without work-groups (%s)", t);
  }
  int dt = k->buf_dtype[0];
  void *want = run_interp(ref, it), *got = run_interp(k, it);
  compare(t, dt, got, want, k->buf_numel[0], 1e-5);
  void *cl = run_on("CL", k, it);
  if (cl) compare("CL", dt, cl, got, k->buf_numel[0], 1e-5);
  free(want), free(got), free(cl);
  kn_kernel_free(ref), kn_kernel_free(k);
  test_set_context("%s", "");
}

static kiln_tensor *rand_input(kiln_dtype dt, int ndim, const int64_t *shape, uint64_t seed) {
  int64_t n = kn_numel(ndim, shape);
  float *f = malloc(sizeof(float) * (size_t)n);
  int32_t *q = malloc(sizeof(int32_t) * (size_t)n);
  uint64_t s = test_seed(seed);
  for (int64_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    q[i] = (int32_t)(s >> 40) % 1000 - 500;
    f[i] = (float)q[i] / 128.0f;
  }
  kiln_tensor *t = kiln_from_data(dt, ndim, shape, dt == KILN_F32 ? (void *)f : (void *)q);
  free(f), free(q);
  kiln_realize(t);
  return t;
}

TEST(codegen_group_reduces) {
  REQUIRE(kiln_set_device("INTERP") >= 0);
  one_kernel o;
  /* a full sum (a loss), a row max, a matrix-vector product, an integer column sum, a reduce
   * with work after it (a mean, then more), a reduce over two axes */
  kiln_tensor *x = rand_input(KILN_F32, 1, (int64_t[]){4096}, 1);
  REQUIRE(schedule_one(kiln_sum(x, 0, NULL, false), &o));
  check_lowering("sum 4096", o.it, NULL, true);
  kn_schedule_free(&o.s);

  kiln_tensor *m = rand_input(KILN_F32, 2, (int64_t[]){8, 1024}, 2);
  REQUIRE(schedule_one(kiln_max(m, 1, (int[]){1}, false), &o));
  check_lowering("row max 8x1024", o.it, NULL, true);
  kn_schedule_free(&o.s);

  kiln_tensor *v = rand_input(KILN_F32, 2, (int64_t[]){1, 512}, 3);
  kiln_tensor *w = rand_input(KILN_F32, 2, (int64_t[]){512, 64}, 4);
  REQUIRE(schedule_one(kiln_matmul(v, w), &o));
  check_lowering("matvec 512x64", o.it, NULL, true);
  kn_opts up = {2, {{KN_OPT_UPCAST, 0, 4}, {KN_OPT_GROUP, 1, 32}}};
  kn_node *src = o.it->reduce->src[0];
  int rax = -1; /* the matmul's reduce axis in its reduce's source */
  for (int i = 0; i < src->ndim; i++)
    if (o.it->reduce->arg[1] >> i & 1 && src->shape[i] == 512) rax = i;
  REQUIRE(rax >= 0);
  up.o[1].axis = (int16_t)rax;
  check_lowering("matvec, UPCAST(0,4) GROUP(32)", o.it, &up, true);
  kn_schedule_free(&o.s);

  kiln_tensor *c = rand_input(KILN_I32, 2, (int64_t[]){256, 3}, 5);
  REQUIRE(schedule_one(kiln_sum(c, 1, (int[]){0}, false), &o));
  check_lowering("int column sum 256x3", o.it, NULL, true);
  kn_schedule_free(&o.s);

  kiln_tensor *mean =
      kiln_add(kiln_mul(kiln_sum(m, 1, (int[]){1}, true), kiln_scalar(KILN_F32, 0.5)),
               kiln_scalar(KILN_F32, 1.0));
  REQUIRE(schedule_one(kiln_mul(mean, kiln_scalar(KILN_F32, 3.0)), &o));
  check_lowering("sum then elementwise", o.it, NULL, true);
  kn_schedule_free(&o.s);

  kiln_tensor *t3 = rand_input(KILN_F32, 3, (int64_t[]){4, 64, 32}, 6);
  REQUIRE(schedule_one(kiln_sum(t3, 2, (int[]){1, 2}, false), &o));
  kn_opts gs = {2, {{KN_OPT_GROUP, 1, 16}, {KN_OPT_SPLIT, 0, 8}}};
  check_lowering("two axes, GROUP(1,16) SPLIT(0,8)", o.it, &gs, true);
  kn_schedule_free(&o.s);

  /* many outputs: no GROUP (the work-items are enough) */
  kiln_tensor *a = rand_input(KILN_F32, 2, (int64_t[]){256, 256}, 7);
  REQUIRE(schedule_one(kiln_matmul(a, a), &o));
  check_lowering("matmul 256", o.it, NULL, false);
  kn_schedule_free(&o.s);
  kiln_set_device("CPU");
}

/* it lowered with opts for caps, run on INTERP and on the device (CL for a device with
 * work-groups, else the CPU), against its plain lowering on INTERP; returns the kernel for
 * more checks (the caller frees it), NULL when it did not lower. */
static kn_kernel *check_opts_lowering(const kn_sched_item *it, const kn_devcaps *caps,
                                      const kn_opts *opts, double tol) {
  kn_kernel *ref = kn_lower(it, &kn_dev_interp.caps, &(kn_opts){0});
  kn_kernel *k = kn_lower(it, caps, opts);
  CHECKF(ref && k, "did not lower: %s", test_errmsg());
  if (ref && k) {
    void *want = run_interp(ref, it), *got = run_interp(k, it);
    compare("INTERP", KILN_F32, got, want, k->buf_numel[0], tol);
    void *dev = run_on(caps->pool ? "CPU" : "CL", k, it);
    CHECK(dev || !caps->pool);
    if (dev) compare("device", KILN_F32, dev, want, k->buf_numel[0], tol);
    free(want), free(got), free(dev);
  }
  kn_kernel_free(ref);
  return k;
}

/* UNROLL: a reduce axis walked `amt` elements per loop step, the body written amt times. The
 * program has amt updates of its accumulator and one loop step in amt; alone, beside SPLIT and
 * beside GROUP it computes what the plain lowering does, on INTERP, CL and the CPU. */
static int count_op(const kn_kernel *k, int op) {
  int n = 0;
  for (int i = 0; i < k->nops; i++)
    n += k->ops[i].op == op;
  return n;
}
TEST(codegen_unroll) {
  REQUIRE(kiln_set_device("INTERP") >= 0);
  one_kernel o;
  kiln_tensor *t3 = rand_input(KILN_F32, 3, (int64_t[]){4, 64, 32}, 21);
  REQUIRE(schedule_one(kiln_sum(t3, 2, (int[]){1, 2}, false), &o));
  const struct {
    const char *what;
    const kn_devcaps *caps;
    kn_opts o;
    int updates; /* accumulator updates in the program */
  } cases[] = {
      {"UNROLL(2,4) on the CPU", &kn_dev_cpu.caps, {1, {{KN_OPT_UNROLL, 2, 4}}}, 4},
      {"UNROLL(1,8) SPLIT(0,8) on the CPU",
       &kn_dev_cpu.caps,
       {2, {{KN_OPT_UNROLL, 1, 8}, {KN_OPT_SPLIT, 0, 8}}},
       8},
      {"GROUP(1,16) UNROLL(2,2) with work-groups",
       &gpu_caps,
       {2, {{KN_OPT_GROUP, 1, 16}, {KN_OPT_UNROLL, 2, 2}}},
       3},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    test_set_context("%s", cases[c].what);
    kn_kernel *k = check_opts_lowering(o.it, cases[c].caps, &cases[c].o, 1e-5);
    CHECKF(k && count_op(k, L_ACCUP) == cases[c].updates, "%d accumulator updates, want %d",
           k ? count_op(k, L_ACCUP) : -1, cases[c].updates);
    kn_kernel_free(k);
  }
  kn_schedule_free(&o.s);
  test_set_context("%s", "");
  kiln_set_device("CPU");
}

/* PADTO: a global dim launched as the next multiple of amt, so that UPCAST and LOCAL apply to
 * sizes they do not divide; work-items past the end store nothing (the interpreter's output
 * buffer is exactly the output's size, so a stray store is a sanitizer error). */
TEST(codegen_padto) {
  REQUIRE(kiln_set_device("INTERP") >= 0);
  one_kernel o;
  kiln_tensor *a = rand_input(KILN_F32, 2, (int64_t[]){13, 7}, 31);
  kiln_tensor *b = rand_input(KILN_F32, 2, (int64_t[]){7, 9}, 32);
  kiln_tensor *e = rand_input(KILN_F32, 2, (int64_t[]){5, 7}, 33);
  kiln_tensor *ys[] = {kiln_matmul(a, b), kiln_exp(e)};
  const struct {
    int y;
    const char *what;
    const kn_devcaps *caps;
    kn_opts o;
  } cases[] = {
      {0,
       "matmul 13x9: PADTO(0,4) UPCAST(0,4)",
       &kn_dev_cpu.caps,
       {2, {{KN_OPT_PADTO, 0, 4}, {KN_OPT_UPCAST, 0, 4}}}},
      {0,
       "matmul 13x9: both dims padded and upcast",
       &kn_dev_cpu.caps,
       {4,
        {{KN_OPT_PADTO, 0, 4},
         {KN_OPT_PADTO, 1, 2},
         {KN_OPT_UPCAST, 0, 4},
         {KN_OPT_UPCAST, 1, 2}}}},
      {0,
       "matmul 13x9: PADTO(1,16) LOCAL(1,16) with work-groups",
       &gpu_caps,
       {2, {{KN_OPT_PADTO, 1, 16}, {KN_OPT_LOCAL, 1, 16}}}},
      {1,
       "exp 5x7: PADTO(1,8) UPCAST(1,8)",
       &kn_dev_cpu.caps,
       {2, {{KN_OPT_PADTO, 1, 8}, {KN_OPT_UPCAST, 1, 8}}}},
      {1,
       "exp 5x7: PADTO(0,8) LOCAL(0,8) with work-groups",
       &gpu_caps,
       {2, {{KN_OPT_PADTO, 0, 8}, {KN_OPT_LOCAL, 0, 8}}}},
  };
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    test_set_context("%s", cases[c].what);
    REQUIRE(schedule_one(ys[cases[c].y], &o));
    kn_kernel_free(check_opts_lowering(o.it, cases[c].caps, &cases[c].o, 1e-6));
    kn_schedule_free(&o.s);
  }
  test_set_context("%s", "");
  kiln_set_device("CPU");
}

TEST(codegen_opts_refused) {
  REQUIRE(kiln_set_device("INTERP") >= 0);
  one_kernel o;
  kiln_tensor *m = rand_input(KILN_F32, 2, (int64_t[]){8, 1024}, 8);
  REQUIRE(schedule_one(kiln_sum(m, 1, (int[]){1}, false), &o));
  const struct {
    const char *what;
    const kn_devcaps *caps;
    kn_opts o;
  } bad[] = {
      {"GROUP on the CPU", &kn_dev_cpu.caps, {1, {{KN_OPT_GROUP, 1, 16}}}},
      {"GROUP of a kept axis", &gpu_caps, {1, {{KN_OPT_GROUP, 0, 8}}}},
      {"GROUP not dividing", &gpu_caps, {1, {{KN_OPT_GROUP, 1, 24}}}},
      {"GROUP over the device's limit", &gpu_caps, {1, {{KN_OPT_GROUP, 1, 512}}}},
      {"UPCAST not dividing", &gpu_caps, {1, {{KN_OPT_UPCAST, 0, 3}}}},
      {"UPCAST of no dim", &gpu_caps, {1, {{KN_OPT_UPCAST, 5, 2}}}},
      {"SPLIT twice", &gpu_caps, {2, {{KN_OPT_SPLIT, 0, 4}, {KN_OPT_SPLIT, 0, 4}}}},
      {"LOCAL on the CPU", &kn_dev_cpu.caps, {1, {{KN_OPT_LOCAL, 0, 8}}}},
      {"UNROLL of a kept axis", &gpu_caps, {1, {{KN_OPT_UNROLL, 0, 2}}}},
      {"UNROLL not dividing", &gpu_caps, {1, {{KN_OPT_UNROLL, 1, 3}}}},
      {"UNROLL of the GROUP axis", &gpu_caps, {2, {{KN_OPT_GROUP, 1, 16}, {KN_OPT_UNROLL, 2, 4}}}},
      {"PADTO of a dim it divides", &gpu_caps, {1, {{KN_OPT_PADTO, 0, 4}}}},
      {"PADTO after an UPCAST of the dim",
       &gpu_caps,
       {2, {{KN_OPT_UPCAST, 0, 2}, {KN_OPT_PADTO, 0, 3}}}},
      {"PADTO twice", &gpu_caps, {2, {{KN_OPT_PADTO, 0, 3}, {KN_OPT_PADTO, 0, 5}}}},
      {"unknown kind", &gpu_caps, {1, {{99, 0, 2}}}},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    kiln_clear_error();
    kn_kernel *k = kn_lower(o.it, bad[i].caps, &bad[i].o);
    CHECKF(!k, "%s: lowered", bad[i].what);
    CHECKF(test_has_error(), "%s: refused without an error", bad[i].what);
    kn_kernel_free(k);
  }
  kiln_clear_error();
  /* what the heuristic picks always lowers, and reads back from its text */
  kn_opts h, back;
  kn_heuristic(o.it, &gpu_caps, &h);
  char t[256];
  kn_opts_format(&h, t, sizeof t);
  CHECKF(kn_opts_parse(t, &back) == 0 && kn_opts_equal(&h, &back), "\"%s\" does not read back", t);
  const char *garbage[] = {"UPCAST(0)", "FOO(0,2)", "UPCAST(0,2) x", "UPCAST(-1,2)", "SPLIT(0,0)"};
  for (size_t i = 0; i < sizeof garbage / sizeof *garbage; i++)
    CHECKF(kn_opts_parse(garbage[i], &back) < 0, "\"%s\" read as a list", garbage[i]);
  kn_schedule_free(&o.s);
  kiln_set_device("CPU");
}

/* The lanes of a SPLIT reduce, marked as vectors for a language with vector types: the loop,
 * its loads and lane-wise ops and the accumulator; compiled for the CPU (GCC vector types) the
 * program computes what the interpreter does running the loop lane by lane. */
static int count_vec(const kn_kernel *k, int op) {
  int n = 0;
  for (int i = 0; i < k->nops; i++)
    n += k->ops[i].vec && (op < 0 || k->ops[i].op == op);
  return n;
}
TEST(codegen_vector_lanes) {
  REQUIRE(kiln_set_device("INTERP") >= 0);
  one_kernel o;
  /* an f32 matrix-vector product and a 4-bit dequantizing dot product (bytes, shifts, masks,
   * widening casts), each with 16 lanes */
  kiln_tensor *v = rand_input(KILN_F32, 2, (int64_t[]){1, 512}, 11);
  kiln_tensor *w = rand_input(KILN_F32, 2, (int64_t[]){40, 512}, 12);
  kiln_tensor *q = kiln_cast(rand_input(KILN_I32, 2, (int64_t[]){40, 512}, 13), KILN_U8);
  REQUIRE(kiln_realize(q) == 0);
  kiln_tensor *nib = kiln_cast(
      kiln_binary(KILN_AND, kiln_binary_s(KILN_SHR, q, 4), kiln_scalar(KILN_U8, 15)), KILN_F32);
  kiln_tensor *cases[] = {kiln_matmul(v, kiln_transpose(w, 0, 1)),
                          kiln_matmul(v, kiln_transpose(nib, 0, 1))};
  const char *names[] = {"f32 matvec", "u8 nibbles matvec"};
  kn_devcaps caps = kn_dev_cpu.caps;
  for (int c = 0; c < 2; c++) {
    test_set_context("%s", names[c]);
    REQUIRE(schedule_one(cases[c], &o));
    kn_opts split = {1, {{KN_OPT_SPLIT, 0, 16}}};
    caps.vec_width = 8;
    kn_kernel *k8 = kn_lower(o.it, &caps, &split);
    caps.vec_width = 0;
    kn_kernel *k0 = kn_lower(o.it, &caps, &split);
    REQUIRE(k8 && k0);
    CHECKF(count_vec(k8, L_RANGE) == 1 && count_vec(k8, L_LOAD) >= 1 && count_vec(k8, L_ACC) == 1 &&
               count_vec(k8, L_ACCUP) == 1,
           "width 8: %d loops, %d loads, %d accumulators, %d updates as vectors",
           count_vec(k8, L_RANGE), count_vec(k8, L_LOAD), count_vec(k8, L_ACC),
           count_vec(k8, L_ACCUP));
    for (int i = 0; i < k8->nops; i++)
      if (k8->ops[i].vec) CHECKF(k8->ops[i].vec == 8, "lop %d: %d lanes", i, k8->ops[i].vec);
    CHECKF(count_vec(k0, -1) == 0, "no vector types: %d lops marked", count_vec(k0, -1));
    void *want = run_interp(k0, o.it), *lanes = run_interp(k8, o.it),
         *cpu = run_on("CPU", k8, o.it), *cl = run_on("CL", k8, o.it);
    compare("INTERP, vectors marked", KILN_F32, lanes, want, k8->buf_numel[0], 0);
    CHECK(cpu != NULL);
    if (cpu) compare("CPU vectors", KILN_F32, cpu, want, k8->buf_numel[0], 1e-6);
    if (cl) compare("OpenCL vectors", KILN_F32, cl, want, k8->buf_numel[0], 1e-6);
    if (c == 1) { /* OpenCL C spells them with its own vector types */
      char *src = kn_render(&kn_dialect_cl, k8);
      CHECKF(strstr(src, "vload8(") && strstr(src, "convert_float8("), "no OpenCL vectors in:\n%s",
             src);
      free(src);
    }
    free(want), free(lanes), free(cpu), free(cl);
    kn_kernel_free(k8), kn_kernel_free(k0);
    kn_schedule_free(&o.s);
  }
  /* a max over lanes is not an add: no vectors */
  test_set_context("%s", "max");
  REQUIRE(schedule_one(kiln_max(w, 1, (int[]){1}, false), &o));
  caps.vec_width = 8;
  kn_kernel *km = kn_lower(o.it, &caps, &(kn_opts){1, {{KN_OPT_SPLIT, 0, 8}}});
  REQUIRE(km);
  CHECKF(count_vec(km, -1) == 0, "a max reduce: %d lops marked", count_vec(km, -1));
  kn_kernel_free(km);
  kn_schedule_free(&o.s);
  test_set_context("%s", "");
  kiln_set_device("CPU");
}

/* LANES: the outputs along a global dim as the lanes of one accumulator array. A matrix
 * product whose second operand is contiguous along the output's columns, with a bias read per
 * column after the reduce: with 8 lanes (beside upcasts of both dims, UNROLL, BLOCK) the lane
 * loop is vector code (the column operand's loads, the accumulators and their updates), and
 * every output is what the plain lowering computes on the interpreter, the CPU and CL. A list
 * with SPLIT beside it, or lanes that do not divide the dim, is refused. */
TEST(codegen_output_lanes) {
  REQUIRE(kiln_set_device("INTERP") >= 0);
  one_kernel o;
  kiln_tensor *a = rand_input(KILN_F32, 2, (int64_t[]){12, 64}, 41);
  kiln_tensor *b = rand_input(KILN_F32, 2, (int64_t[]){64, 48}, 42);
  kiln_tensor *bias = rand_input(KILN_F32, 1, (int64_t[]){48}, 43);
  REQUIRE(schedule_one(kiln_binary_s(KILN_MUL, kiln_add(kiln_matmul(a, b), bias), 0.5), &o));
  const struct {
    const char *what;
    kn_opts o;
  } cases[] = {
      {"LANES(1,8)", {1, {{KN_OPT_LANES, 1, 8}}}},
      {"LANES(1,8) UPCAST(0,4)", {2, {{KN_OPT_LANES, 1, 8}, {KN_OPT_UPCAST, 0, 4}}}},
      {"UPCAST(1,2) LANES(1,8) UPCAST(0,3) UNROLL(2,4)",
       {4,
        {{KN_OPT_UPCAST, 1, 2},
         {KN_OPT_LANES, 1, 8},
         {KN_OPT_UPCAST, 0, 3},
         {KN_OPT_UNROLL, 2, 4}}}},
      {"LANES(1,16) BLOCK(0,2)", {2, {{KN_OPT_LANES, 1, 16}, {KN_OPT_BLOCK, 0, 2}}}},
  };
  kn_devcaps caps = kn_dev_cpu.caps;
  caps.vec_width = 8;
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    test_set_context("%s", cases[c].what);
    kn_kernel *k = check_opts_lowering(o.it, &caps, &cases[c].o, 1e-5);
    if (!k) continue;
    int lanes = cases[c].o.o[cases[c].o.o[0].op == KN_OPT_LANES ? 0 : 1].amt;
    CHECKF(count_vec(k, L_RANGE) == 1 && count_vec(k, L_ACC) >= 1 && count_vec(k, L_ACCUP) >= 1 &&
               count_vec(k, L_LOAD) >= 1,
           "%d loops, %d accumulators, %d updates, %d loads as vectors", count_vec(k, L_RANGE),
           count_vec(k, L_ACC), count_vec(k, L_ACCUP), count_vec(k, L_LOAD));
    CHECKF(count_op(k, L_LANE) == count_op(k, L_STORE) && count_op(k, L_STORE) % lanes == 0,
           "%d lane reads for %d stores", count_op(k, L_LANE), count_op(k, L_STORE));
    void *cl = run_on("CL", k, o.it), *want = NULL;
    if (cl) {
      kn_kernel *ref = kn_lower(o.it, &kn_dev_interp.caps, &(kn_opts){0});
      want = run_interp(ref, o.it);
      compare("CL", KILN_F32, cl, want, k->buf_numel[0], 1e-5);
      kn_kernel_free(ref);
    }
    free(cl), free(want);
    kn_kernel_free(k);
  }
  const kn_opts bad[] = {{2, {{KN_OPT_LANES, 1, 8}, {KN_OPT_SPLIT, 0, 8}}},
                         {1, {{KN_OPT_LANES, 1, 5}}},
                         {2, {{KN_OPT_UPCAST, 1, 4}, {KN_OPT_LANES, 1, 16}}}};
  for (size_t c = 0; c < sizeof bad / sizeof *bad; c++) {
    char t[128];
    kn_opts_format(&bad[c], t, sizeof t);
    test_set_context("%s", t);
    kiln_clear_error();
    kn_kernel *k = kn_lower(o.it, &caps, &bad[c]);
    CHECKF(!k && strstr(test_errmsg(), "does not apply"), "lowered, or error '%s'", test_errmsg());
    kn_kernel_free(k);
  }
  kn_schedule_free(&o.s);
  test_set_context("%s", "");
  kiln_set_device("CPU");
}

static bool has_upcast(const kn_opts *o, int axis, int amt) {
  for (int i = 0; i < o->n; i++)
    if (o->o[i].op == KN_OPT_UPCAST && o->o[i].axis == axis && o->o[i].amt == amt) return true;
  return false;
}

/* Probabilities times cached values, as a decode step attends: each sequence's block of the
 * cache is picked by an index read from memory, a row holds every head. On a CPU the heuristic
 * tiles the whole row (heads and head dim upcast whole: one pass over the cache in order); the
 * kernel is not searched (timed on zeroed scratch, every row would read block 0); the tile
 * computes what the plain lowering does. A matrix product of the same size is searched. */
TEST(codegen_row_tiles) {
  REQUIRE(kiln_set_device("INTERP") >= 0);
  enum { S = 4, H = 3, T = 1024, HD = 64 };
  kiln_tensor *cache = rand_input(KILN_F32, 2, (int64_t[]){S * T, H * HD}, 21);
  kiln_tensor *p = rand_input(KILN_F32, 3, (int64_t[]){S, H, T}, 22);
  kiln_tensor *seq = kiln_from_data(KILN_I32, 1, (int64_t[]){S}, (int32_t[]){2, 0, 3, 1});
  REQUIRE(kiln_realize(seq) == 0);
  kiln_tensor *blocks = kiln_take(kiln_reshape(cache, 3, (int64_t[]){S, T, H * HD}), seq);
  kiln_tensor *v = kiln_permute(kiln_reshape(blocks, 4, (int64_t[]){S, T, H, HD}),
                                (int[]){0, 2, 1, 3}); /* (S, H, T, HD) */
  kiln_tensor *y = kiln_sum(kiln_mul(kiln_unsqueeze(p, -1), v), 1, (int[]){2}, false);
  one_kernel o;
  REQUIRE(schedule_one(y, &o));
  kn_opts h, hg;
  kn_heuristic(o.it, &kn_dev_cpu.caps, &h);
  kn_heuristic(o.it, &gpu_caps, &hg);
  char t[256], tg[256];
  kn_opts_format(&h, t, sizeof t), kn_opts_format(&hg, tg, sizeof tg);
  CHECKF(has_upcast(&h, 1, H) && has_upcast(&h, 2, HD), "CPU heuristic: %s", t);
  CHECKF(!has_upcast(&hg, 2, HD), "a device with work-groups tiles whole rows: %s", tg);
  kn_kernel *ref = kn_lower(o.it, &kn_dev_interp.caps, &(kn_opts){0}),
            *k = kn_lower(o.it, &kn_dev_cpu.caps, &h);
  REQUIRE(ref && k);
  void *want = run_interp(ref, o.it), *got = run_interp(k, o.it), *cpu = run_on("CPU", k, o.it);
  compare("row tile, INTERP", KILN_F32, got, want, k->buf_numel[0], 1e-6);
  CHECK(cpu != NULL);
  if (cpu) compare("row tile, CPU", KILN_F32, cpu, want, k->buf_numel[0], 1e-5);
  free(want), free(got), free(cpu);
  setenv("BEAM", "2", 1);
  CHECKF(!kn_search_wanted(&kn_dev_cpu, k), "a kernel reading through an index is searched");
  kiln_tensor *x = rand_input(KILN_F32, 2, (int64_t[]){16, 1024}, 23);
  kiln_tensor *w = rand_input(KILN_F32, 2, (int64_t[]){1024, 64}, 24);
  one_kernel o2;
  REQUIRE(schedule_one(kiln_matmul(x, w), &o2));
  kn_kernel *km = kn_lower(o2.it, &kn_dev_cpu.caps, NULL);
  REQUIRE(km);
  CHECKF(kn_search_wanted(&kn_dev_cpu, km), "a matrix product (%.3g flops) is not searched",
         km->flops);
  unsetenv("BEAM");
  kn_kernel_free(ref), kn_kernel_free(k), kn_kernel_free(km);
  kn_schedule_free(&o.s), kn_schedule_free(&o2.s);
  kiln_set_device("CPU");
}

/* Integer + - * wrap around on every device. OpenCL C and CUDA C have no -fwrapv, so they are
 * written in unsigned arithmetic, where overflow is defined. The GROUP combine is folded by the
 * group's first work-item only: its loop has no trips in the others. */
TEST(codegen_integers_wrap) {
  REQUIRE(kiln_set_device("INTERP") >= 0);
  one_kernel o;
  kiln_tensor *x = rand_input(KILN_I32, 2, (int64_t[]){6, 512}, 21);
  REQUIRE(schedule_one(kiln_max(kiln_neg(x), 1, (int[]){1}, false), &o));
  kn_kernel *k = kn_lower(o.it, &gpu_caps, NULL);
  REQUIRE(k);
  CHECK(has_opt(k, KN_OPT_GROUP));
  const kn_dialect *ds[] = {&kn_dialect_cuda, &kn_dialect_cl};
  for (int d = 0; d < 2; d++) {
    char *src = kn_render(ds[d], k);
    CHECKF(strstr(src, "(uint32_t)0 - (uint32_t)") && !strstr(src, "(int32_t)(0 - "),
           "%s: i32 negation not written in unsigned arithmetic:\n%s", ds[d]->name, src);
    CHECKF(strstr(src, " ? 512 : 0)") || strstr(src, " ? 64 : 0)") || strstr(src, " ? 32 : 0)") ||
               strstr(src, " ? 16 : 0)"),
           "%s: the combine loop is not limited to the first work-item:\n%s", ds[d]->name, src);
    free(src);
  }
  kn_kernel *ref = kn_lower(o.it, &kn_dev_interp.caps, NULL);
  REQUIRE(ref);
  void *want = run_interp(ref, o.it), *got = run_interp(k, o.it), *cl = run_on("CL", k, o.it);
  compare("INTERP, grouped", KILN_I32, got, want, k->buf_numel[0], 0);
  if (cl) compare("CL, grouped", KILN_I32, cl, want, k->buf_numel[0], 0);
  int32_t host[6 * 512], best[6];
  REQUIRE(kiln_to_host(x, host, sizeof host) == 0);
  for (int r = 0; r < 6; r++) { /* and the reference: the negated row minimum */
    best[r] = INT32_MIN;
    for (int j = 0; j < 512; j++)
      best[r] = -host[r * 512 + j] > best[r] ? -host[r * 512 + j] : best[r];
  }
  compare("against the host", KILN_I32, want, best, 6, 0);
  free(want), free(got), free(cl);
  kn_kernel_free(ref), kn_kernel_free(k);
  kn_schedule_free(&o.s);
  kiln_set_device("CPU");
}
