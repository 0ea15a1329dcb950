/* test_errors.c — bad user input returns NULL (or < 0) with a message naming the op and the
 * values involved; NULL inputs propagate without crashing; the first message is kept. */
#include "check.h"

/* Evaluates a tensor expression that must fail; checks NULL and that the message holds every
 * given substring (case-insensitive; "a|b" accepts either). */
static bool has_any(const char *m, const char *alts) {
  char buf[128];
  snprintf(buf, sizeof buf, "%s", alts);
  for (char *save = NULL, *p = strtok_r(buf, "|", &save); p; p = strtok_r(NULL, "|", &save))
    if (test_contains(m, p)) return true;
  return false;
}

static void expect_fail_at(const char *file, int line, const char *expr, kiln_tensor *t,
                           const char *const *subs) {
  if (t) test_fail(file, line, "%s: expected NULL, got a tensor", expr);
  const char *m = kiln_error();
  if (!m || !m[0]) test_fail(file, line, "%s: no error message", expr);
  for (int i = 0; subs[i]; i++)
    if (!has_any(m, subs[i]))
      test_fail(file, line, "%s: message \"%s\" lacks \"%s\"", expr, m ? m : "(null)", subs[i]);
  kiln_clear_error();
}
#define EXPECT_FAIL(expr, ...)                                                                     \
  do {                                                                                             \
    kiln_clear_error();                                                                            \
    kiln_tensor *ef_t_ = (expr);                                                                   \
    const char *const ef_s_[] = {__VA_ARGS__, NULL};                                               \
    expect_fail_at(__FILE__, __LINE__, #expr, ef_t_, ef_s_);                                       \
  } while (0)

static kiln_tensor *zeros(kiln_dtype dt, int nd, int64_t d0, int64_t d1, int64_t d2) {
  int64_t s[] = {d0, d1, d2};
  return kiln_zeros(dt, nd, s);
}

TEST(errors_shapes) {
  kiln_tensor *a34 = zeros(KILN_F32, 2, 3, 4, 0), *b52 = zeros(KILN_F32, 2, 5, 2, 0);
  kiln_tensor *a23 = zeros(KILN_F32, 2, 2, 3, 0), *a43 = zeros(KILN_F32, 2, 4, 3, 0);
  kiln_tensor *a24 = zeros(KILN_F32, 2, 2, 4, 0), *a234 = zeros(KILN_F32, 3, 2, 3, 4);
  REQUIRE(a34 && b52 && a23 && a43 && a24 && a234);
  EXPECT_FAIL(kiln_matmul(a34, b52), "matmul", "(3,4)", "(5,2)");
  EXPECT_FAIL(kiln_matmul(kiln_scalar(KILN_F32, 1), a34), "matmul");
  EXPECT_FAIL(kiln_add(a23, a43), "add", "(2,3)", "(4,3)");
  EXPECT_FAIL(kiln_binary(KILN_MUL, a23, a24), "mul", "(2,3)", "(2,4)");
  EXPECT_FAIL(kiln_where(kiln_zeros(KILN_BOOL, 2, (int64_t[]){4, 3}), a23, a23), "where");
  int64_t r42[] = {4, 2}, rbad[] = {-1, -1}, r5m[] = {5, -1};
  EXPECT_FAIL(kiln_reshape(a23, 2, r42), "reshape", "(2,3)", "(4,2)");
  EXPECT_FAIL(kiln_reshape(a23, 2, rbad), "reshape");
  EXPECT_FAIL(kiln_reshape(a23, 2, r5m), "reshape");
  int p_dup[] = {0, 0, 1}, p_range[] = {0, 1, 3}, p_neg[] = {-5, 0, 1};
  EXPECT_FAIL(kiln_permute(a234, p_dup), "permute");
  EXPECT_FAIL(kiln_permute(a234, p_range), "permute");
  EXPECT_FAIL(kiln_permute(a234, p_neg), "permute");
  EXPECT_FAIL(kiln_transpose(a23, 0, 2), "transpose");
  int64_t e34[] = {3, 4}, e2[] = {2};
  EXPECT_FAIL(kiln_expand(a23, 2, e34), "expand", "(2,3)", "(3,4)");
  EXPECT_FAIL(kiln_expand(a23, 1, e2), "expand");
  int64_t st[] = {0, 2}, en_big[] = {2, 4}, en_rev[] = {2, 1};
  EXPECT_FAIL(kiln_shrink(a23, st, en_big), "shrink");
  EXPECT_FAIL(kiln_shrink(a23, st, en_rev), "shrink");
  EXPECT_FAIL(kiln_slice(a23, 1, 0, 3, 0), "slice");
  EXPECT_FAIL(kiln_slice(a23, 2, 0, 3, 1), "slice");
  int fl[] = {2};
  EXPECT_FAIL(kiln_flip(a23, 1, fl), "flip");
  EXPECT_FAIL(kiln_squeeze(a23, 5), "squeeze");
  EXPECT_FAIL(kiln_unsqueeze(a23, 4), "unsqueeze");
}

TEST(errors_axes_and_cat) {
  kiln_tensor *a23 = zeros(KILN_F32, 2, 2, 3, 0), *a24 = zeros(KILN_F32, 2, 2, 4, 0);
  kiln_tensor *a33 = zeros(KILN_F32, 2, 3, 3, 0);
  REQUIRE(a23 && a24 && a33);
  int ax2[] = {2}, axm3[] = {-3};
  EXPECT_FAIL(kiln_sum(a23, 1, ax2, false), "sum", "2");
  EXPECT_FAIL(kiln_sum(a23, 1, axm3, false), "sum", "-3");
  EXPECT_FAIL(kiln_max(a23, 1, ax2, true), "max");
  EXPECT_FAIL(kiln_mean(a23, 1, ax2, false), "mean");
  EXPECT_FAIL(kiln_argmax(a23, 2, false), "argmax");
  EXPECT_FAIL(kiln_argmin(a23, -3, false), "argmin");
  EXPECT_FAIL(kiln_softmax(a23, 2), "softmax");
  EXPECT_FAIL(kiln_log_softmax(a23, -3), "log_softmax");
  kiln_tensor *xs[] = {a23, a33};
  EXPECT_FAIL(kiln_cat(2, xs, 1), "cat", "(2,3)", "(3,3)");
  kiln_tensor *ys[] = {a23, a24};
  EXPECT_FAIL(kiln_cat(2, ys, 2), "cat");
  EXPECT_FAIL(kiln_cat(2, ys, 0), "cat", "(2,3)", "(2,4)");
  EXPECT_FAIL(kiln_cat(0, ys, 0), "cat");
  EXPECT_FAIL(kiln_stack(2, ys, 0), "stack", "(2,3)", "(2,4)");
  kiln_tensor *zs[] = {a23, a23};
  EXPECT_FAIL(kiln_stack(2, zs, 3), "stack");
}

TEST(errors_dtypes) {
  kiln_tensor *f = zeros(KILN_F32, 1, 4, 0, 0), *i = zeros(KILN_I32, 1, 4, 0, 0);
  REQUIRE(f && i);
  EXPECT_FAIL(kiln_bitcast(f, KILN_I16), "bitcast");
  EXPECT_FAIL(kiln_bitcast(i, KILN_F64), "bitcast");
  EXPECT_FAIL(kiln_binary(KILN_SHL, f, f), "sh");
  EXPECT_FAIL(kiln_binary(KILN_SHR, f, i), "sh");
  EXPECT_FAIL(kiln_binary(KILN_AND, f, f), "and");
  EXPECT_FAIL(kiln_binary(KILN_XOR, i, f), "xor");
  EXPECT_FAIL(kiln_cast(f, KILN_NDTYPES), "cast");
  EXPECT_FAIL(kiln_zeros(KILN_NDTYPES, 1, (int64_t[]){2}), "zeros|full");
  EXPECT_FAIL(kiln_binary(KILN_NBINARY, f, f), "binary");
  EXPECT_FAIL(kiln_unary(KILN_NUNARY, f), "unary");
  EXPECT_FAIL(kiln_reduce(KILN_NREDUCE, f, 0, NULL, false), "reduce");
}

TEST(errors_creation) {
  int64_t neg[] = {-1, 3}, ok[] = {2, 3}, big[] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  float data[6] = {0};
  EXPECT_FAIL(kiln_zeros(KILN_F32, 2, neg), "zeros|full", "-1");
  EXPECT_FAIL(kiln_ones(KILN_F32, 2, neg), "ones|full", "-1");
  EXPECT_FAIL(kiln_full(KILN_F32, 2, neg, 1), "full", "-1");
  EXPECT_FAIL(kiln_empty(KILN_F32, 2, neg), "empty|full", "-1");
  EXPECT_FAIL(kiln_from_data(KILN_F32, 2, neg, data), "from_data", "-1");
  EXPECT_FAIL(kiln_rand(2, neg, 1), "rand", "-1");
  EXPECT_FAIL(kiln_randn(2, neg, 1), "randn", "-1");
  EXPECT_FAIL(kiln_zeros(KILN_F32, KILN_MAX_DIMS + 1, big), "zeros|full");
  EXPECT_FAIL(kiln_zeros(KILN_F32, -1, ok), "zeros|full");
  EXPECT_FAIL(kiln_from_data(KILN_F32, 2, ok, NULL), "from_data");
  EXPECT_FAIL(kiln_arange(0, 10, 0, KILN_F32), "arange");
}

TEST(errors_running) {
  float out[8];
  int64_t shape[] = {2, 3};
  kiln_tensor *t = kiln_ones(KILN_F32, 2, shape);
  REQUIRE(t);
  kiln_clear_error();
  int rc = kiln_to_host(t, out, 12);
  CHECKF(rc < 0, "kiln_to_host with 12 bytes for 24 returned %d", rc);
  CHECK(test_has_error());
  CHECK_CONTAINS(kiln_error(), "12");
  CHECK_CONTAINS(kiln_error(), "24");
  kiln_clear_error();
  CHECK(!test_has_error());
  CHECK(kiln_to_host(t, out, 24) == 0);
  CHECK(!test_has_error());
  CHECK(kiln_to_host(t, NULL, 24) < 0);
  CHECK(test_has_error());
  kiln_clear_error();

  /* unknown device: an error, and the current device is unchanged */
  const char *before = kiln_get_device();
  char saved[32];
  snprintf(saved, sizeof saved, "%s", before ? before : "");
  CHECK(kiln_set_device("NOPE") < 0);
  CHECK_CONTAINS(kiln_error(), "NOPE");
  CHECKF(kiln_get_device() && strcmp(kiln_get_device(), saved) == 0,
         "device changed to %s after a failed set",
         kiln_get_device() ? kiln_get_device() : "(null)");
  kiln_clear_error();
  CHECK(kiln_set_device(NULL) < 0);
  kiln_clear_error();
  /* every listed device that works here can be selected (CPU and INTERP always do); one that
   * does not is refused with its reason, and the device stays as it was */
  int n = kiln_device_count();
  bool cpu = false, interp = false;
  for (int i = 0; i < n; i++) {
    const char *name = kiln_device_name(i), *why = kiln_device_status(i);
    REQUIRE(name);
    if (!why)
      CHECKF(kiln_set_device(name) == 0, "device %d (%s) not selectable: %s", i, name,
             test_errmsg());
    else {
      CHECKF(why[0] && !strchr(why, '\n'), "device %s: reason not one line: '%s'", name, why);
      const char *before = kiln_get_device();
      CHECKF(kiln_set_device(name) < 0, "device %s selected though: %s", name, why);
      CHECK_CONTAINS(kiln_error(), why);
      CHECK(kiln_get_device() == before);
    }
    kiln_clear_error();
    cpu |= !strcmp(name, "CPU") && !why, interp |= !strcmp(name, "INTERP") && !why;
  }
  CHECK(cpu && interp);
  CHECK(kiln_device_name(n) == NULL);
  CHECK(kiln_device_name(-1) == NULL);
  kiln_set_device(saved);
  kiln_clear_error();
}

TEST(errors_null_propagation) {
  int64_t shape[] = {2, 3}, bad[] = {7};
  kiln_tensor *x = kiln_ones(KILN_F32, 2, shape);
  REQUIRE(x);
  kiln_clear_error();
  /* the first error is kept through a chain of NULLs */
  kiln_tensor *r = kiln_reshape(x, 1, bad);
  CHECK(r == NULL);
  kiln_tensor *y = kiln_exp(kiln_add(kiln_binary_s(KILN_MUL, r, 2.0), x));
  CHECK(y == NULL);
  int ax[] = {0};
  CHECK(kiln_sum(y, 1, ax, false) == NULL);
  CHECK(kiln_matmul(y, x) == NULL);
  CHECK(kiln_matmul(x, NULL) == NULL);
  CHECK_CONTAINS(kiln_error(), "reshape");
  /* a second real error does not replace the first */
  kiln_tensor *a34 = zeros(KILN_F32, 2, 3, 4, 0);
  CHECK(kiln_matmul(a34, a34) == NULL);
  CHECK_CONTAINS(kiln_error(), "reshape");
  kiln_clear_error();
  CHECK(!test_has_error());

  /* every entry point survives NULL */
  kiln_tensor *n = NULL, *pair[2] = {x, NULL};
  int perm[] = {1, 0};
  int64_t st[] = {0, 0}, en[] = {1, 1};
  CHECK(kiln_unary(KILN_EXP, n) == NULL);
  CHECK(kiln_neg(n) == NULL && kiln_log(n) == NULL && kiln_sqrt(n) == NULL && kiln_relu(n) == NULL);
  CHECK(kiln_binary(KILN_ADD, x, n) == NULL && kiln_sub(n, x) == NULL && kiln_div(n, n) == NULL);
  CHECK(kiln_binary_s(KILN_ADD, n, 1) == NULL);
  CHECK(kiln_where(n, x, x) == NULL && kiln_where(x, n, x) == NULL);
  CHECK(kiln_cast(n, KILN_I32) == NULL && kiln_bitcast(n, KILN_I32) == NULL);
  CHECK(kiln_reduce(KILN_SUM, n, 0, NULL, false) == NULL && kiln_mean(n, 0, NULL, true) == NULL);
  CHECK(kiln_argmax(n, 0, false) == NULL && kiln_softmax(n, 0) == NULL &&
        kiln_log_softmax(n, 0) == NULL);
  CHECK(kiln_reshape(n, 2, shape) == NULL && kiln_permute(n, perm) == NULL);
  CHECK(kiln_transpose(n, 0, 1) == NULL && kiln_expand(n, 2, shape) == NULL);
  CHECK(kiln_pad(n, st, st, 0) == NULL && kiln_shrink(n, st, en) == NULL);
  CHECK(kiln_slice(n, 0, 0, 1, 1) == NULL && kiln_flip(n, 1, perm) == NULL);
  CHECK(kiln_cat(2, pair, 0) == NULL && kiln_stack(2, pair, 0) == NULL);
  CHECK(kiln_squeeze(n, 0) == NULL && kiln_unsqueeze(n, 0) == NULL && kiln_contiguous(n) == NULL);
  CHECK(kiln_realize(n) < 0);
  CHECK(kiln_realize_many(2, pair) < 0);
  float out[6];
  CHECK(kiln_to_host(n, out, sizeof out) < 0);
  (void)kiln_item(n); /* any value, but no crash */
  CHECK(kiln_keep(n) == NULL);
  kiln_free(n);
  kiln_clear_error();
}
