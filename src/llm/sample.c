/* sample.c — the token sampler: repetition/frequency/presence penalties over a window of recent
 * tokens, then greedy argmax or top-k -> temperature softmax -> top-p -> min-p -> a draw from a
 * seeded splitmix64 stream. Works on a host copy of the logits; top-k selects with a k-sized
 * heap, so a 150k vocabulary is never fully sorted when top_k is set. */
#include "internal.h"
#include <math.h>

#define SAMPLER_MAX_WINDOW (1 << 24) /* tokens; a longer penalty window is a mistake */

typedef struct {
  int32_t id;
  float logit; /* after penalties */
  double p;    /* unnormalized probability */
} cand;

struct kiln_sampler {
  kiln_sampler_params prm;
  uint64_t rng;
  int32_t *hist;     /* ring of the last prm.repeat_last_n ids */
  int64_t hist_len;  /* ids in the ring (<= repeat_last_n) */
  int64_t hist_next; /* where the next id goes */
  int32_t *window;   /* scratch: a sorted copy of the ring */
  float *work;       /* scratch (cap): penalized logits */
  cand *cands;       /* scratch (cap) */
  int64_t cap;
};

/* ---- parameters ----------------------------------------------------------------------------- */
void kiln_sampler_defaults(kiln_sampler_params *p) {
  if (!p) return;
  *p = (kiln_sampler_params){.temperature = 0.8,
                             .top_k = 40,
                             .top_p = 0.95,
                             .min_p = 0.05,
                             .repeat_penalty = 1.0,
                             .repeat_last_n = 64,
                             .frequency_penalty = 0,
                             .presence_penalty = 0,
                             .seed = 0};
}

static bool params_ok(const kiln_sampler_params *p) {
  if (!(p->temperature >= 0) || isinf(p->temperature)) {
    kn_err("sampler: temperature must be finite and >= 0, got %g", p->temperature);
    return false;
  }
  if (p->top_k < 0) {
    kn_err("sampler: top_k must be >= 0 (0 = off), got %d", p->top_k);
    return false;
  }
  if (!(p->top_p > 0 && p->top_p <= 1)) {
    kn_err("sampler: top_p must be in (0, 1], got %g", p->top_p);
    return false;
  }
  if (!(p->min_p >= 0 && p->min_p <= 1)) {
    kn_err("sampler: min_p must be in [0, 1], got %g", p->min_p);
    return false;
  }
  if (!(p->repeat_penalty > 0) || isinf(p->repeat_penalty)) {
    kn_err("sampler: repeat_penalty must be finite and > 0 (1 = off), got %g", p->repeat_penalty);
    return false;
  }
  if (p->repeat_last_n < 0 || p->repeat_last_n > SAMPLER_MAX_WINDOW) {
    kn_err("sampler: repeat_last_n must be in [0, %d], got %d", SAMPLER_MAX_WINDOW,
           p->repeat_last_n);
    return false;
  }
  if (!isfinite(p->frequency_penalty) || !isfinite(p->presence_penalty)) {
    kn_err("sampler: frequency_penalty %g and presence_penalty %g must be finite",
           p->frequency_penalty, p->presence_penalty);
    return false;
  }
  return true;
}

/* ---- lifetime ------------------------------------------------------------------------------- */
kiln_sampler *kiln_sampler_new(const kiln_sampler_params *p) {
  if (!p) {
    kn_err("sampler: params are NULL");
    return NULL;
  }
  if (!params_ok(p)) return NULL;
  kiln_sampler *s = kn_xcalloc(1, sizeof *s);
  s->prm = *p;
  if (p->repeat_last_n > 0) {
    s->hist = kn_xmalloc((size_t)p->repeat_last_n * sizeof *s->hist);
    s->window = kn_xmalloc((size_t)p->repeat_last_n * sizeof *s->window);
  }
  kiln_sampler_reset(s);
  return s;
}

void kiln_sampler_reset(kiln_sampler *s) {
  if (!s) return;
  s->rng = s->prm.seed;
  s->hist_len = s->hist_next = 0;
}

void kiln_sampler_free(kiln_sampler *s) {
  if (!s) return;
  free(s->hist);
  free(s->window);
  free(s->work);
  free(s->cands);
  free(s);
}

void kiln_sampler_accept(kiln_sampler *s, int32_t id) {
  if (!s || s->prm.repeat_last_n == 0) return;
  s->hist[s->hist_next] = id;
  s->hist_next = (s->hist_next + 1) % s->prm.repeat_last_n;
  if (s->hist_len < s->prm.repeat_last_n) s->hist_len++;
}

/* ---- random numbers: splitmix64, one 64-bit word of state ----------------------------------- */
static uint64_t rng_next(uint64_t *state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static double rng_uniform(uint64_t *state) { /* [0, 1), 53 bits */
  return (double)(rng_next(state) >> 11) * 0x1.0p-53;
}

/* ---- penalties ------------------------------------------------------------------------------ */
static int cmp_id(const void *a, const void *b) {
  int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
  return (x > y) - (x < y);
}

static bool penalties_on(const kiln_sampler_params *p) {
  return p->repeat_last_n > 0 &&
         (p->repeat_penalty != 1 || p->frequency_penalty != 0 || p->presence_penalty != 0);
}

/* Each distinct id of the window, with its count, penalized once. Ids outside the vocabulary
 * (a forced token of another model) are skipped. */
static void apply_penalties(kiln_sampler *s, float *l, int64_t n) {
  const kiln_sampler_params *p = &s->prm;
  if (!penalties_on(p) || s->hist_len == 0) return;
  memcpy(s->window, s->hist, (size_t)s->hist_len * sizeof *s->window);
  qsort(s->window, (size_t)s->hist_len, sizeof *s->window, cmp_id);
  for (int64_t i = 0; i < s->hist_len;) {
    int32_t id = s->window[i];
    int64_t j = i;
    while (j < s->hist_len && s->window[j] == id)
      j++;
    int64_t count = j - i;
    i = j;
    if (id < 0 || id >= n) continue;
    double v = l[id];
    v = v > 0 ? v / p->repeat_penalty : v * p->repeat_penalty;
    v -= (double)count * p->frequency_penalty + p->presence_penalty;
    l[id] = (float)v;
  }
}

/* ---- candidate selection -------------------------------------------------------------------- */
/* a ranks before b: higher logit, then lower id. */
static bool better(const cand *a, const cand *b) {
  return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}
static int cmp_cand(const void *pa, const void *pb) {
  const cand *a = pa, *b = pb;
  return better(a, b) ? -1 : better(b, a) ? 1 : 0;
}

/* A min-heap on rank: the root is the worst of the kept candidates. */
static void heap_sift_down(cand *h, int64_t n, int64_t i) {
  for (;;) {
    int64_t w = i, l = 2 * i + 1, r = l + 1;
    if (l < n && better(&h[w], &h[l])) w = l;
    if (r < n && better(&h[w], &h[r])) w = r;
    if (w == i) return;
    cand t = h[i];
    h[i] = h[w], h[w] = t;
    i = w;
  }
}
static void heap_sift_up(cand *h, int64_t i) {
  while (i > 0) {
    int64_t parent = (i - 1) / 2;
    if (!better(&h[parent], &h[i])) return;
    cand t = h[i];
    h[i] = h[parent], h[parent] = t;
    i = parent;
  }
}

/* The best k of the n logits above -inf into c, best first. */
static int64_t select_top_k(const float *l, int64_t n, int64_t k, cand *c) {
  int64_t m = 0;
  for (int64_t i = 0; i < n; i++) {
    if (l[i] == -INFINITY) continue;
    cand x = {(int32_t)i, l[i], 0};
    if (m < k) {
      c[m] = x;
      heap_sift_up(c, m++);
    } else if (better(&x, &c[0])) {
      c[0] = x;
      heap_sift_down(c, m, 0);
    }
  }
  qsort(c, (size_t)m, sizeof *c, cmp_cand);
  return m;
}

/* ---- sampling ------------------------------------------------------------------------------- */
static int32_t argmax(const float *l, int64_t n) {
  int64_t best = -1;
  for (int64_t i = 0; i < n; i++)
    if (l[i] > -INFINITY && (best < 0 || l[i] > l[best])) best = i;
  if (best < 0) kn_err("sample: every one of the %lld logits is -inf", (long long)n);
  return (int32_t)best;
}

static int32_t sample_dist(kiln_sampler *s, float *l, int64_t n) {
  const kiln_sampler_params *p = &s->prm;
  /* +inf logits take all the probability, shared equally. */
  bool has_pinf = false;
  int64_t nfin = 0;
  for (int64_t i = 0; i < n; i++) {
    has_pinf |= l[i] == INFINITY;
    nfin += l[i] > -INFINITY;
  }
  if (nfin == 0) {
    kn_err("sample: every one of the %lld logits is -inf", (long long)n);
    return -1;
  }
  if (has_pinf)
    for (int64_t i = 0; i < n; i++)
      l[i] = l[i] == INFINITY ? 0.0f : -INFINITY;

  cand *c = s->cands;
  int64_t m;
  if (p->top_k > 0 && p->top_k < n) {
    m = select_top_k(l, n, p->top_k, c);
  } else {
    m = 0;
    for (int64_t i = 0; i < n; i++)
      if (l[i] > -INFINITY) c[m++] = (cand){(int32_t)i, l[i], 0};
    if (p->top_p < 1) qsort(c, (size_t)m, sizeof *c, cmp_cand);
  }

  /* softmax(logits / T), unnormalized: the best token has p = 1 */
  float lmax = c[0].logit;
  for (int64_t i = 1; i < m; i++)
    lmax = c[i].logit > lmax ? c[i].logit : lmax;
  double sum = 0;
  for (int64_t i = 0; i < m; i++)
    sum += c[i].p = exp(((double)c[i].logit - lmax) / p->temperature);

  if (p->top_p < 1) { /* c is sorted best first here */
    double cum = 0, need = p->top_p * sum;
    for (int64_t i = 0; i < m; i++) {
      cum += c[i].p;
      if (cum >= need) {
        m = i + 1;
        break;
      }
    }
  }
  if (p->min_p > 0) { /* the best token (p = 1) always stays */
    int64_t kept = 0;
    for (int64_t i = 0; i < m; i++)
      if (c[i].p >= p->min_p) c[kept++] = c[i];
    m = kept;
  }

  double total = 0;
  for (int64_t i = 0; i < m; i++)
    total += c[i].p;
  double u = rng_uniform(&s->rng) * total, acc = 0;
  for (int64_t i = 0; i < m; i++) {
    acc += c[i].p;
    if (u < acc) return c[i].id;
  }
  return c[m - 1].id; /* u within rounding of total */
}

int32_t kiln_sample(kiln_sampler *s, const float *logits, int64_t n_vocab) {
  if (!s || !logits) {
    kn_err("sample: %s is NULL", s ? "logits" : "sampler");
    return -1;
  }
  if (n_vocab < 1 || n_vocab > INT32_MAX) {
    kn_err("sample: n_vocab must be in [1, %d], got %lld", INT32_MAX, (long long)n_vocab);
    return -1;
  }
  for (int64_t i = 0; i < n_vocab; i++)
    if (isnan(logits[i])) {
      kn_err("sample: logit %lld of %lld is NaN", (long long)i, (long long)n_vocab);
      return -1;
    }
  if (n_vocab > s->cap) {
    free(s->work);
    free(s->cands);
    s->work = kn_xmalloc((size_t)n_vocab * sizeof *s->work);
    s->cands = kn_xmalloc((size_t)n_vocab * sizeof *s->cands);
    s->cap = n_vocab;
  }
  float *l = s->work;
  memcpy(l, logits, (size_t)n_vocab * sizeof *l);
  apply_penalties(s, l, n_vocab);
  int32_t id = s->prm.temperature == 0 ? argmax(l, n_vocab) : sample_dist(s, l, n_vocab);
  if (id >= 0) kiln_sampler_accept(s, id);
  return id;
}
