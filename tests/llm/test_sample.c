/* test_sample.c — the sampler: greedy argmax (ties, -inf, +inf), top_k 1 at any temperature,
 * empirical distributions of seeded draws against a reference distribution computed here by a
 * plain sort-everything method, penalties against hand-computed values, the penalty window,
 * seeds, reset, large vocabularies, and bad parameters and inputs. */
#include <stdlib.h>

#include "test.h"

/* ---- helpers -------------------------------------------------------------------------------- */
static kiln_sampler_params params(double temp, int top_k, double top_p, double min_p,
                                  uint64_t seed) {
  kiln_sampler_params p;
  kiln_sampler_defaults(&p);
  p.temperature = temp, p.top_k = top_k, p.top_p = top_p, p.min_p = min_p, p.seed = seed;
  return p;
}

/* A fresh sampler's single draw. */
static int32_t sample_once(const kiln_sampler_params *p, const float *l, int64_t n) {
  kiln_sampler *s = kiln_sampler_new(p);
  if (!s) return -100;
  int32_t id = kiln_sample(s, l, n);
  kiln_sampler_free(s);
  return id;
}

static uint64_t lcg(uint64_t *s) {
  *s = *s * 6364136223846793005ull + 1442695040888963407ull;
  return *s >> 33;
}

/* The distribution the parameters define, the slow and obvious way: rank every token with an
 * insertion sort (higher logit first, lower id on ties), keep the first top_k, softmax over
 * them at the temperature, keep the ranked prefix until its mass first reaches top_p, drop
 * those below min_p times the largest, renormalize. */
static void reference_dist(const float *l, int n, double temp, int top_k, double top_p,
                           double min_p, double *prob) {
  int order[64];
  int m = 0;
  for (int i = 0; i < n; i++) {
    prob[i] = 0;
    if (l[i] == -INFINITY) continue;
    int j = m++;
    while (j > 0 && l[order[j - 1]] < l[i])
      order[j] = order[j - 1], j--;
    order[j] = i;
  }
  int keep = top_k > 0 && top_k < m ? top_k : m;
  double z = 0, w[64];
  for (int r = 0; r < keep; r++)
    z += w[r] = exp((l[order[r]] - l[order[0]]) / temp);
  double mass = 0;
  int cut = keep;
  for (int r = 0; r < keep; r++) {
    mass += w[r] / z;
    if (mass >= top_p) {
      cut = r + 1;
      break;
    }
  }
  double total = 0;
  for (int r = 0; r < cut; r++)
    if (w[r] / z >= min_p * (w[0] / z)) total += w[r];
  for (int r = 0; r < cut; r++)
    if (w[r] / z >= min_p * (w[0] / z)) prob[order[r]] = w[r] / total;
}

/* Pearson's chi-square of counts against prob (draws total); a draw of a zero-probability token
 * makes it infinite. */
static double chi_square(const int *counts, const double *prob, int n, int draws, int *df) {
  double chi = 0;
  *df = -1;
  for (int i = 0; i < n; i++) {
    if (prob[i] == 0) {
      if (counts[i]) return INFINITY;
      continue;
    }
    double e = prob[i] * draws;
    chi += (counts[i] - e) * (counts[i] - e) / e;
    ++*df;
  }
  return chi;
}
/* About the 0.9999 quantile of chi-square(df) for df <= 20 (Wilson-Hilferty, z = 3.72). */
static double chi_limit(int df) {
  if (df <= 0) return 1e-9;
  double a = 2.0 / (9.0 * df), c = 1 - a + 3.72 * sqrt(a);
  return df * c * c * c;
}

/* ---- defaults and parameters ---------------------------------------------------------------- */
TEST(sampler_defaults) {
  kiln_sampler_params p;
  memset(&p, 0xff, sizeof p);
  kiln_sampler_defaults(&p);
  CHECK(p.temperature == 0.8 && p.top_k == 40 && p.top_p == 0.95 && p.min_p == 0.05);
  CHECK(p.repeat_penalty == 1.0 && p.repeat_last_n == 64);
  CHECK(p.frequency_penalty == 0 && p.presence_penalty == 0 && p.seed == 0);
  kiln_sampler *s = kiln_sampler_new(&p);
  CHECK(s != NULL);
  kiln_sampler_free(s);
}

TEST(sampler_rejects_bad_params) {
  static const struct {
    const char *field;
    double temp, top_p, min_p, rep, freq;
    int top_k, last_n;
  } bad[] = {
      {"temperature", -0.1, 0.9, 0, 1, 0, 0, 0},
      {"temperature", NAN, 0.9, 0, 1, 0, 0, 0},
      {"temperature", INFINITY, 0.9, 0, 1, 0, 0, 0},
      {"top_k", 1, 0.9, 0, 1, 0, -1, 0},
      {"top_p", 1, 0, 0, 1, 0, 0, 0},
      {"top_p", 1, 1.5, 0, 1, 0, 0, 0},
      {"top_p", 1, NAN, 0, 1, 0, 0, 0},
      {"min_p", 1, 0.9, -0.5, 1, 0, 0, 0},
      {"min_p", 1, 0.9, 1.01, 1, 0, 0, 0},
      {"repeat_penalty", 1, 0.9, 0, 0, 0, 0, 0},
      {"repeat_penalty", 1, 0.9, 0, -2, 0, 0, 0},
      {"repeat_last_n", 1, 0.9, 0, 1, 0, 0, -1},
      {"frequency_penalty", 1, 0.9, 0, 1, NAN, 0, 0},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    kiln_sampler_params p = params(bad[i].temp, bad[i].top_k, bad[i].top_p, bad[i].min_p, 1);
    p.repeat_penalty = bad[i].rep, p.frequency_penalty = bad[i].freq;
    p.repeat_last_n = bad[i].last_n;
    kiln_clear_error();
    kiln_sampler *s = kiln_sampler_new(&p);
    CHECKF(s == NULL, "case %zu (%s) accepted", i, bad[i].field);
    CHECK_CONTAINS(kiln_error(), bad[i].field);
    kiln_sampler_free(s);
  }
  kiln_clear_error();
  CHECK(kiln_sampler_new(NULL) == NULL);
  CHECK(test_has_error());
  kiln_clear_error();
  /* The edges of the ranges are fine. */
  kiln_sampler_params ok = params(0, 0, 1, 1, 0);
  ok.repeat_last_n = 0;
  kiln_sampler *s = kiln_sampler_new(&ok);
  CHECK(s != NULL);
  kiln_sampler_free(s);
}

TEST(sampler_rejects_bad_input) {
  kiln_sampler_params p = params(1, 0, 1, 0, 3);
  kiln_sampler *s = kiln_sampler_new(&p);
  REQUIRE(s);
  float l[4] = {0, 1, 2, 3};
  kiln_clear_error();
  CHECK(kiln_sample(s, l, 0) < 0);
  CHECK_CONTAINS(kiln_error(), "n_vocab");
  kiln_clear_error();
  CHECK(kiln_sample(s, l, -5) < 0);
  kiln_clear_error();
  CHECK(kiln_sample(s, NULL, 4) < 0);
  CHECK_CONTAINS(kiln_error(), "logits");
  kiln_clear_error();
  CHECK(kiln_sample(NULL, l, 4) < 0);
  kiln_clear_error();
  CHECK(kiln_sample(s, l, (int64_t)INT32_MAX + 1) < 0);
  kiln_clear_error();
  l[2] = NAN;
  CHECK(kiln_sample(s, l, 4) < 0);
  CHECK_CONTAINS(kiln_error(), "logit 2 of 4 is NaN");
  kiln_clear_error();
  float ninf[3] = {-INFINITY, -INFINITY, -INFINITY};
  CHECK(kiln_sample(s, ninf, 3) < 0);
  CHECK_CONTAINS(kiln_error(), "-inf");
  kiln_clear_error();
  p.temperature = 0;
  CHECK(sample_once(&p, ninf, 3) < 0);
  CHECK_CONTAINS(kiln_error(), "-inf");
  kiln_clear_error();
  kiln_sampler_free(s);
  kiln_sampler_free(NULL);
  kiln_sampler_accept(NULL, 1);
  kiln_sampler_reset(NULL);
}

/* ---- greedy --------------------------------------------------------------------------------- */
TEST(sampler_greedy_is_argmax) {
  kiln_sampler_params p = params(0, 40, 0.95, 0.05, 7);
  float ties[8] = {1, 5, -2, 5, 4.999f, 5, 0, -INFINITY};
  CHECK_EQ_INT(sample_once(&p, ties, 8), 1);
  float neg[3] = {-INFINITY, -1e30f, -INFINITY};
  CHECK_EQ_INT(sample_once(&p, neg, 3), 1);
  float pinf[4] = {3, INFINITY, 2, INFINITY};
  CHECK_EQ_INT(sample_once(&p, pinf, 4), 1);
  float one = -3;
  CHECK_EQ_INT(sample_once(&p, &one, 1), 0);
  /* random vectors, with duplicated values so ties happen */
  uint64_t r = test_seed(11);
  for (int t = 0; t < 200; t++) {
    int n = 1 + (int)(lcg(&r) % 50);
    float l[50];
    for (int i = 0; i < n; i++)
      l[i] = (float)(lcg(&r) % 9) - 4;
    int want = 0;
    for (int i = 1; i < n; i++)
      if (l[i] > l[want]) want = i;
    CHECK_EQ_INT(sample_once(&p, l, n), want);
  }
}

/* top_k 1 leaves one candidate: the argmax, at any temperature and seed. */
TEST(sampler_top_k_1_is_greedy) {
  float l[6] = {0.5f, 2, -1, 2, 1.99f, 0};
  for (int i = 0; i < 20; i++) {
    kiln_sampler_params p = params(0.1 + i * 0.7, 1, 1, 0, (uint64_t)i);
    kiln_sampler *s = kiln_sampler_new(&p);
    REQUIRE(s);
    for (int d = 0; d < 50; d++)
      CHECK_EQ_INT(kiln_sample(s, l, 6), 1);
    kiln_sampler_free(s);
  }
}

/* ---- distributions -------------------------------------------------------------------------- */
#define NDRAWS 20000
typedef struct {
  const char *what;
  double temp, top_p, min_p;
  int top_k;
} dist_case;

static void draw_counts(const kiln_sampler_params *p, const float *l, int n, int *counts) {
  memset(counts, 0, sizeof(int) * (size_t)n);
  kiln_sampler *s = kiln_sampler_new(p);
  if (!s) {
    test_fail(__FILE__, __LINE__, "sampler_new: %s", test_errmsg());
    return;
  }
  for (int d = 0; d < NDRAWS; d++) {
    int32_t id = kiln_sample(s, l, n);
    if (id < 0 || id >= n) {
      test_fail(__FILE__, __LINE__, "draw %d gave %d: %s", d, id, test_errmsg());
      break;
    }
    counts[id]++;
  }
  kiln_sampler_free(s);
}

TEST(sampler_distribution_matches_reference) {
  /* 10 tokens; token 9 can never be drawn. Boundaries (top-p mass, min-p ratios) are kept well
   * away from the parameters so rounding cannot decide a token's fate. */
  const float l[10] = {1.0f, 2.5f, 0.2f, 2.5f, -1.0f, 1.7f, 3.0f, 0.9f, -0.3f, -INFINITY};
  const dist_case cases[] = {
      {"plain T=1", 1.0, 1.0, 0, 0},
      {"T=0.5", 0.5, 1.0, 0, 0},
      {"T=2.5", 2.5, 1.0, 0, 0},
      {"top_k 4", 1.0, 1.0, 0, 4},
      {"top_k 3 T=3", 3.0, 1.0, 0, 3},
      {"top_p 0.8", 1.0, 0.8, 0, 0},
      {"top_p 0.5 T=0.7", 0.7, 0.5, 0, 0},
      {"min_p 0.2", 1.0, 1.0, 0.2, 0},
      {"min_p 0.05 T=0.6", 0.6, 1.0, 0.05, 0},
      {"all", 1.3, 0.9, 0.1, 6},
      {"top_k > n_vocab", 1.0, 1.0, 0, 1000},
  };
  int counts[10];
  double prob[10], alt[10];
  for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
    const dist_case *k = &cases[c];
    test_set_context("%s", k->what);
    kiln_sampler_params p = params(k->temp, k->top_k, k->top_p, k->min_p, test_seed(100 + c));
    draw_counts(&p, l, 10, counts);
    reference_dist(l, 10, k->temp, k->top_k, k->top_p, k->min_p, prob);
    int df;
    double chi = chi_square(counts, prob, 10, NDRAWS, &df);
    CHECKF(chi < chi_limit(df), "chi-square %.1f over %d dof (limit %.1f)", chi, df, chi_limit(df));
    /* The same draws are far from what a sampler would give that ignored the temperature. */
    if (k->temp != 1.0) {
      reference_dist(l, 10, 1.0, k->top_k, k->top_p, k->min_p, alt);
      double chi_alt = chi_square(counts, alt, 10, NDRAWS, &df);
      CHECKF(chi_alt > 10 * chi_limit(df), "draws fit temperature 1 too (chi-square %.1f)",
             chi_alt);
    }
  }
  test_set_context("%s", "");
}

/* With top_p, the token whose mass crosses the threshold is kept: the set is the smallest whose
 * probability is >= top_p, not the largest below it. */
TEST(sampler_top_p_keeps_the_crossing_token) {
  /* probabilities 0.5, 0.3, 0.2 at T = 1 */
  const float l[3] = {(float)log(0.5), (float)log(0.3), (float)log(0.2)};
  int counts[3];
  kiln_sampler_params p = params(1, 0, 0.6, 0, test_seed(5));
  draw_counts(&p, l, 3, counts);
  CHECKF(counts[1] > NDRAWS / 4 && counts[2] == 0, "counts %d %d %d", counts[0], counts[1],
         counts[2]);
  p.top_p = 0.45;
  draw_counts(&p, l, 3, counts);
  CHECKF(counts[0] == NDRAWS, "counts %d %d %d", counts[0], counts[1], counts[2]);
}

/* +inf logits share all the probability equally; the rest get none. */
TEST(sampler_infinite_logits) {
  const float l[5] = {3, INFINITY, 100, INFINITY, -INFINITY};
  int counts[5];
  kiln_sampler_params p = params(0.9, 0, 1, 0.05, test_seed(9));
  draw_counts(&p, l, 5, counts);
  CHECKF(counts[0] == 0 && counts[2] == 0 && counts[4] == 0, "finite tokens drawn: %d %d %d",
         counts[0], counts[2], counts[4]);
  CHECKF(fabs(counts[1] - NDRAWS / 2.0) < 4 * sqrt(NDRAWS / 4.0), "+inf split %d / %d", counts[1],
         counts[3]);
}

/* ---- penalties ------------------------------------------------------------------------------ */
/* The penalized logit of token t, measured with greedy draws against a probe token (id 4,
 * never in the history, so never penalized) set just below and just above it. */
static void check_penalized(const kiln_sampler_params *p, const int32_t *hist, int nhist,
                            const float *l4, int t, double want) {
  for (int side = 0; side < 2; side++) {
    float l[5] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, 0};
    l[t] = l4[t];
    l[4] = (float)(want + (side ? 1e-3 : -1e-3));
    kiln_sampler *s = kiln_sampler_new(p);
    if (!s) {
      test_fail(__FILE__, __LINE__, "sampler_new: %s", test_errmsg());
      return;
    }
    for (int i = 0; i < nhist; i++)
      kiln_sampler_accept(s, hist[i]);
    int32_t got = kiln_sample(s, l, 5);
    CHECKF(got == (side ? 4 : t), "token %d: penalized logit is not %.4f (probe %s it won)", t,
           want, side ? "above: token" : "below: probe");
    kiln_sampler_free(s);
  }
}

TEST(sampler_penalties_hand_computed) {
  const float l[4] = {2.0f, -1.0f, 0.5f, 3.0f};
  /* history: 0 twice, 1 once, 3 once, and an out-of-vocabulary id that must be ignored */
  const int32_t hist[5] = {0, 3, 1, 0, 77};
  kiln_sampler_params p = params(0, 0, 1, 0, 1);
  p.repeat_penalty = 2.0, p.frequency_penalty = 0.5, p.presence_penalty = 0.25;
  p.repeat_last_n = 8;
  /* token 0: 2/2 - 2*0.5 - 0.25; token 1: -1*2 - 0.5 - 0.25; token 2: untouched;
   * token 3: 3/2 - 0.5 - 0.25 */
  const double want[4] = {-0.25, -2.75, 0.5, 0.75};
  for (int t = 0; t < 4; t++)
    check_penalized(&p, hist, 5, l, t, want[t]);
  /* only the last 3 ids count: 1, 0, 77 -> token 0 once, token 3 not at all */
  p.repeat_last_n = 3;
  check_penalized(&p, hist, 5, l, 0, 2.0 / 2 - 0.5 - 0.25);
  check_penalized(&p, hist, 5, l, 3, 3.0);
  /* repeat_last_n 0 turns every penalty off */
  p.repeat_last_n = 0;
  check_penalized(&p, hist, 5, l, 0, 2.0);
  check_penalized(&p, hist, 5, l, 1, -1.0);
}

/* The sampler's own picks enter the history: with a strong penalty over the last token only,
 * greedy decoding alternates between the two best tokens. */
TEST(sampler_history_records_picks) {
  kiln_sampler_params p = params(0, 0, 1, 0, 1);
  p.repeat_penalty = 10, p.repeat_last_n = 1;
  kiln_sampler *s = kiln_sampler_new(&p);
  REQUIRE(s);
  const float l[3] = {1.0f, 0.9f, 0.1f};
  for (int i = 0; i < 6; i++)
    CHECK_EQ_INT(kiln_sample(s, l, 3), i % 2);
  /* reset forgets the history */
  kiln_sampler_accept(s, 0);
  kiln_sampler_reset(s);
  CHECK_EQ_INT(kiln_sample(s, l, 3), 0);
  kiln_sampler_free(s);
}

/* ---- seeds ---------------------------------------------------------------------------------- */
static void draw_seq(kiln_sampler *s, const float *l, int n, int32_t *out, int k) {
  for (int i = 0; i < k; i++)
    out[i] = kiln_sample(s, l, n);
}

TEST(sampler_seeds) {
  float l[100];
  for (int i = 0; i < 100; i++)
    l[i] = (float)(i % 7) * 0.1f;
  kiln_sampler_params p = params(1, 0, 1, 0, 42);
  kiln_sampler *a = kiln_sampler_new(&p), *b = kiln_sampler_new(&p);
  p.seed = 43;
  kiln_sampler *c = kiln_sampler_new(&p);
  REQUIRE(a && b && c);
  int32_t sa[64], sb[64], sc[64], sr[64];
  draw_seq(a, l, 100, sa, 64);
  draw_seq(b, l, 100, sb, 64);
  draw_seq(c, l, 100, sc, 64);
  CHECK(!memcmp(sa, sb, sizeof sa));
  CHECK(memcmp(sa, sc, sizeof sa) != 0);
  int distinct = 0;
  for (int i = 0; i < 64; i++)
    distinct += sa[i] != sa[0];
  CHECK(distinct > 0);
  kiln_sampler_reset(a);
  draw_seq(a, l, 100, sr, 64);
  CHECK(!memcmp(sa, sr, sizeof sa));
  kiln_sampler_free(a);
  kiln_sampler_free(b);
  kiln_sampler_free(c);
}

/* ---- a real vocabulary size ----------------------------------------------------------------- */
static int cmp_desc(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x < y) - (x > y);
}

TEST(sampler_large_vocab) {
  const int64_t n = 151936;
  float *l = malloc((size_t)n * sizeof *l), *sorted = malloc((size_t)n * sizeof *l);
  REQUIRE(l && sorted);
  uint64_t r = test_seed(77);
  for (int64_t i = 0; i < n; i++)
    l[i] = (float)((double)lcg(&r) / (double)(1ull << 31) * 20 - 10);
  memcpy(sorted, l, (size_t)n * sizeof *l);
  qsort(sorted, (size_t)n, sizeof *sorted, cmp_desc);
  float kth = sorted[39];
  /* top_k 40 at a high temperature: every draw is one of the 40 best, and many differ */
  kiln_sampler_params p = params(5.0, 40, 1, 0, test_seed(3));
  kiln_sampler *s = kiln_sampler_new(&p);
  REQUIRE(s);
  int distinct = 0;
  int32_t seen[200];
  for (int d = 0; d < 200; d++) {
    int32_t id = kiln_sample(s, l, n);
    REQUIRE(id >= 0 && id < n);
    CHECKF(l[id] >= kth, "draw %d: token %d (logit %g) not in the top 40 (>= %g)", d, id, l[id],
           kth);
    bool again = false;
    for (int j = 0; j < distinct; j++)
      again |= seen[j] == id;
    if (!again) seen[distinct++] = id;
  }
  CHECK(distinct > 10);
  kiln_sampler_free(s);
  /* No top-k: three tokens at 20 hold about 90% of the mass against the rest (at most 10),
   * so top_p 0.85 (over the fully sorted vocabulary) and min_p 0.5 (unsorted) each keep just
   * those three. */
  const int64_t big[3] = {5, 7, 100000};
  for (int i = 0; i < 3; i++)
    l[big[i]] = 20;
  for (int mode = 0; mode < 2; mode++) {
    p = params(1, 0, mode ? 1 : 0.85, mode ? 0.5 : 0, test_seed(4));
    s = kiln_sampler_new(&p);
    REQUIRE(s);
    int hits[3] = {0, 0, 0};
    for (int d = 0; d < 40; d++) {
      int32_t id = kiln_sample(s, l, n);
      int which = id == big[0] ? 0 : id == big[1] ? 1 : id == big[2] ? 2 : -1;
      CHECKF(which >= 0, "%s: drew token %d (logit %g)", mode ? "min_p" : "top_p", id,
             id >= 0 ? l[id] : 0);
      if (which >= 0) hits[which]++;
    }
    CHECKF(hits[0] && hits[1] && hits[2], "%s: hits %d %d %d", mode ? "min_p" : "top_p", hits[0],
           hits[1], hits[2]);
    kiln_sampler_free(s);
  }
  free(l);
  free(sorted);
}
