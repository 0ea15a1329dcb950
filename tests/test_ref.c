/* test_ref.c — the reference checked against facts that do not come from kiln: IEEE half and
 * bfloat16 encodings, Python slice results, small hand-worked sums and products. */
#include "check.h"

static void check_1d(const char *what, const ref_t *r, int n, const double *want) {
  CHECKF(r->ndim == 1 && r->shape[0] == n, "%s: shape (%lld), want (%d)", what,
         (long long)(r->ndim ? r->shape[0] : -1), n);
  if (r->ndim != 1 || r->shape[0] != n) return;
  for (int i = 0; i < n; i++)
    CHECKF(ref_get(r, i) == want[i], "%s[%d] = %g, want %g", what, i, ref_get(r, i), want[i]);
}

TEST(ref_half_encodings) {
  struct {
    double v;
    uint16_t h;
  } f16[] = {
      {1.0, 0x3c00},       {-2.0, 0xc000},      {65504, 0x7bff},    {65520, 0x7c00},
      {0x1p-24, 0x0001},   {0.1, 0x2e66},       {1.0 / 3, 0x3555},  {0x1p-25, 0x0000},
      {0x1.8p-24, 0x0002}, {0x1.4p-23, 0x0002}, {INFINITY, 0x7c00}, {-INFINITY, 0xfc00},
      {0x1p-14, 0x0400},
  };
  for (size_t i = 0; i < sizeof f16 / sizeof f16[0]; i++) {
    CHECKF(ref_f16_bits(f16[i].v) == f16[i].h, "f16 bits of %a: %#x, want %#x", f16[i].v,
           ref_f16_bits(f16[i].v), f16[i].h);
    if (f16[i].h != 0x7c00 || isinf(f16[i].v))
      CHECKF(ref_f16_value(f16[i].h) == ref_round(f16[i].v, KILN_F16), "f16 value of %#x",
             f16[i].h);
  }
  CHECK(isnan(ref_f16_value(ref_f16_bits(NAN))));
  struct {
    double v;
    uint16_t h;
  } bf[] = {
      {1.0, 0x3f80},        {0.1, 0x3dcd},        {3.0, 0x4040},
      {1 + 0x1p-8, 0x3f80}, {1 + 0x3p-8, 0x3f82}, {-INFINITY, 0xff80},
  };
  for (size_t i = 0; i < sizeof bf / sizeof bf[0]; i++)
    CHECKF(ref_bf16_bits(bf[i].v) == bf[i].h, "bf16 bits of %a: %#x, want %#x", bf[i].v,
           ref_bf16_bits(bf[i].v), bf[i].h);
  CHECK(ref_round(300, KILN_U8) == 44);
  CHECK(ref_round(-1, KILN_U8) == 255);
  CHECK(ref_round(200, KILN_I8) == -56);
  CHECK(ref_round(-2.75, KILN_I32) == -2);
  CHECK(ref_round(0.5, KILN_BOOL) == 1);
}

TEST(ref_slices_match_python) {
  int64_t n7 = 7, s6[] = {1, 6};
  double v7[7], v6[6];
  for (int i = 0; i < 7; i++)
    v7[i] = i;
  for (int i = 0; i < 6; i++)
    v6[i] = i;
  ref_t *a = ref_from(1, &n7, v7), *b = ref_from(2, s6, v6);
  check_1d("[6:-8:-1]", ref_slice(a, 0, 6, -8, -1), 7, (double[]){6, 5, 4, 3, 2, 1, 0});
  check_1d("[-1:-8:-2]", ref_slice(a, 0, -1, -8, -2), 4, (double[]){6, 4, 2, 0});
  check_1d("[-3:100:1]", ref_slice(a, 0, -3, 100, 1), 3, (double[]){4, 5, 6});
  check_1d("[5:2:1]", ref_slice(a, 0, 5, 2, 1), 0, NULL);
  check_1d("[0:7:10]", ref_slice(a, 0, 0, 7, 10), 1, (double[]){0});
  check_1d("[1:7:3]", ref_slice(a, 0, 1, 7, 3), 2, (double[]){1, 4});
  check_1d("[:,4:0:-3]", ref_squeeze(ref_slice(b, 1, 4, 0, -3), 0), 2, (double[]){4, 1});
  check_1d("[:,-100:100:4]", ref_squeeze(ref_slice(b, -1, -100, 100, 4), 0), 2, (double[]){0, 4});
}

TEST(ref_small_worked_examples) {
  int64_t s22[] = {2, 2}, s23[] = {2, 3};
  ref_t *a = ref_from(2, s22, (double[]){1, 2, 3, 4}),
        *b = ref_from(2, s22, (double[]){5, 6, 7, 8});
  check_1d("matmul", ref_reshape(ref_matmul(a, b), 1, (int64_t[]){4}), 4,
           (double[]){19, 22, 43, 50});
  ref_t *c = ref_from(2, s23, (double[]){1, 5, 2, 7, 0, 7});
  int ax1[] = {1}, ax0[] = {0};
  check_1d("sum axis 1", ref_reduce(c, REF_SUM, 1, ax1, false), 2, (double[]){8, 14});
  check_1d("prod axis 0", ref_reduce(c, REF_PROD, 1, ax0, false), 3, (double[]){7, 0, 14});
  check_1d("argmax axis 1 (first of ties)", ref_reduce(c, REF_ARGMAX, 1, ax1, false), 2,
           (double[]){1, 0});
  check_1d("argmin axis 1", ref_reduce(c, REF_ARGMIN, 1, ax1, false), 2, (double[]){0, 1});
  check_1d("transpose", ref_reshape(ref_transpose(c, 0, 1), 1, (int64_t[]){6}), 6,
           (double[]){1, 7, 5, 0, 2, 7});
  int f1[] = {1};
  check_1d("flip", ref_reshape(ref_flip(c, 1, f1), 1, (int64_t[]){6}), 6,
           (double[]){2, 5, 1, 7, 0, 7});
  check_1d(
      "pad",
      ref_pad(ref_from(1, (int64_t[]){2}, (double[]){1, 2}), (int64_t[]){1}, (int64_t[]){2}, 9), 5,
      (double[]){9, 1, 2, 9, 9});
  ref_t *xs[] = {ref_from(1, (int64_t[]){2}, (double[]){1, 2}),
                 ref_from(1, (int64_t[]){1}, (double[]){3})};
  check_1d("cat", ref_cat(2, xs, 0), 3, (double[]){1, 2, 3});
  ref_t *ys[] = {xs[0], xs[0]};
  check_1d("stack axis 1", ref_reshape(ref_stack(2, ys, 1), 1, (int64_t[]){4}), 4,
           (double[]){1, 1, 2, 2});
  ref_t *sm = ref_softmax(ref_from(1, (int64_t[]){2}, (double[]){0, log(3.0)}), 0);
  CHECK_NEAR(ref_get(sm, 0), 0.25, 1e-15);
  CHECK_NEAR(ref_get(sm, 1), 0.75, 1e-15);
  ref_t *bc = ref_map2(ref_from(2, (int64_t[]){2, 1}, (double[]){10, 20}),
                       ref_from(1, (int64_t[]){3}, (double[]){1, 2, 3}), fmax);
  check_1d("broadcast", ref_reshape(bc, 1, (int64_t[]){6}), 6, (double[]){10, 10, 10, 20, 20, 20});
}
