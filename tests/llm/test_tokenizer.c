/* test_tokenizer.c — tokenizers: toy vocabularies whose expected ids are worked out by hand from
 * the BPE and SentencePiece rules, special tokens, invalid UTF-8, the streaming detokenizer,
 * errors and malformed GGUF metadata; then independent references: llama.cpp's ids for the
 * SmolLM2 vocabulary (tok_smollm2.txt), sentencepiece's ids for a model trained on the corpus,
 * and Python `regex` splits for the published pre-tokenizer patterns (tok_check.py). */
#define _GNU_SOURCE
#include <glob.h>
#include <stdlib.h>
#include <unistd.h>

#include "gguf_write.h"
#include "llm/tokenizer.h"
#include "test.h"
#include "util.h"

/* ---- helpers ------------------------------------------------------------------------------- */
static char *read_all(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, len = 0, got;
  char *b = malloc(cap + 1);
  while (b && (got = fread(b + len, 1, cap - len, f)) > 0)
    if ((len += got) == cap) b = realloc(b, (cap *= 2) + 1);
  fclose(f);
  if (b) b[len] = 0, *n = len;
  return b;
}

/* Runs `python3 tests/llm/tok_check.py ARGS`; its stdout (caller frees) and exit code. */
static char *run_check(const char *args, int *rc) {
  char script[1024], qs[1100], cmd[2400];
  *rc = -1;
  if (!test_path(script, sizeof script, "llm/tok_check.py")) return NULL;
  if (!test_shell_quote(qs, sizeof qs, script)) return NULL;
  snprintf(cmd, sizeof cmd, "python3 %s %s 2>/dev/null", qs, args);
  return test_run_alloc(cmd, rc);
}

/* The corpus, one unescaped text per line (\n \t \r \\ as in tok_fixtures.py). */
typedef struct {
  char **text;
  size_t *len;
  int n;
} corpus;

/* Appends the lines of the file tests/REL to c. */
static bool corpus_add(corpus *c, const char *rel) {
  char path[1024];
  size_t n;
  char *all = test_path(path, sizeof path, rel) ? read_all(path, &n) : NULL;
  if (!all) return false;
  int add = 0;
  for (size_t i = 0; i < n; i++)
    add += all[i] == '\n';
  c->text = realloc(c->text, (size_t)(c->n + add) * sizeof *c->text);
  c->len = realloc(c->len, (size_t)(c->n + add) * sizeof *c->len);
  char *p = all;
  for (int k = c->n; k < c->n + add; k++) {
    char *e = strchr(p, '\n');
    char *o = c->text[k] = malloc((size_t)(e - p) + 1);
    size_t m = 0;
    for (; p < e; p++) {
      if (*p == '\\' && p + 1 < e && strchr("ntr\\", p[1])) {
        p++;
        o[m++] = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p == 'r' ? '\r' : '\\';
      } else
        o[m++] = *p;
    }
    o[m] = 0;
    c->len[k] = m;
    p = e + 1;
  }
  c->n += add;
  free(all);
  return true;
}

static bool corpus_load(corpus *c) {
  *c = (corpus){0};
  return corpus_add(c, "llm/tok_corpus.txt");
}

static void corpus_free(corpus *c) {
  for (int k = 0; k < c->n; k++)
    free(c->text[k]);
  free(c->text), free(c->len);
}

/* ids of text, malloc'd; *n their count (-1 on error). */
static int32_t *encode(const kiln_tokenizer *t, const char *s, size_t len, bool bos, bool special,
                       int64_t *n) {
  *n = kiln_tokenize(t, s, len, bos, special, NULL, 0);
  if (*n < 0) return NULL;
  int32_t *ids = malloc((size_t)(*n + 1) * sizeof *ids);
  int64_t again = kiln_tokenize(t, s, len, bos, special, ids, *n);
  if (again != *n) *n = -1;
  return ids;
}

/* Streams ids through a detokenizer 16 bytes at a time; malloc'd text, *len. */
static char *decode(const kiln_tokenizer *t, const int32_t *ids, int64_t n, size_t *len) {
  kiln_detok *d = kiln_detok_new(t, false);
  size_t cap = 64, k = 0;
  char *s = malloc(cap);
  for (int64_t i = 0; i <= n; i++) {
    int32_t id = i < n ? ids[i] : -1;
    for (int64_t got = 1; got > 0; id = -1) { /* drain what did not fit */
      if (k + 16 > cap) s = realloc(s, cap *= 2);
      got = i < n || id >= 0 ? kiln_detok_push(d, id, s + k, 16) : kiln_detok_flush(d, s + k, 16);
      k += got > 0 ? (size_t)got : 0;
      if (i < n && id >= 0 && got == 0) got = 1; /* the token itself may have made no text */
    }
  }
  kiln_detok_free(d);
  *len = k;
  return s;
}

static bool same_ids(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
  return na == nb && (na == 0 || !memcmp(a, b, (size_t)na * sizeof *a));
}

static void ids_str(char *buf, size_t n, const int32_t *ids, int64_t k) {
  size_t m = 0;
  buf[0] = 0;
  for (int64_t i = 0; i < k && m + 16 < n; i++)
    m += (size_t)snprintf(buf + m, n - m, " %d", (int)ids[i]);
}

/* ---- toy byte-level BPE ---------------------------------------------------------------------
 * Ids 0..255 are the GPT-2 letters of bytes 0..255, so byte b is token b. Then: */
enum { T_AB = 256, T_BC, T_ABC, T_GA, T_CTRL, T_USER, T_END, T_N };

static size_t gpt2_letter(char *o, int b) { /* written from the published byte table */
  int cp = b;
  if (!((b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE)) {
    int k = 0;
    for (int x = 0; x < b; x++)
      k += !((x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE);
    cp = 256 + k;
  }
  if (cp < 0x80) return o[0] = (char)cp, 1;
  o[0] = (char)(0xC0 | (cp >> 6)), o[1] = (char)(0x80 | (cp & 0x3F));
  return 2;
}

static kiln_tokenizer *toy_bpe(const char *pre) {
  static char letters[256][3];
  const char *tokens[T_N];
  int32_t types[T_N];
  for (int b = 0; b < 256; b++) {
    letters[b][gpt2_letter(letters[b], b)] = 0;
    tokens[b] = letters[b], types[b] = KN_TOK_NORMAL;
  }
  tokens[T_AB] = "ab", tokens[T_BC] = "bc", tokens[T_ABC] = "abc",
  tokens[T_GA] = "\xC4\xA0"
                 "a";
  tokens[T_CTRL] = "<|c|>", tokens[T_USER] = "<u>", tokens[T_END] = "<|im_end|>";
  types[T_AB] = types[T_BC] = types[T_ABC] = types[T_GA] = KN_TOK_NORMAL;
  types[T_CTRL] = types[T_END] = KN_TOK_CONTROL, types[T_USER] = KN_TOK_USER;
  static const char *merges[] = {"b c", "a b", "a bc", "ab c", "\xC4\xA0 a"};
  kn_tok_spec sp = kn_tok_spec_init();
  sp.model = "gpt2", sp.pre = pre, sp.n_vocab = T_N, sp.tokens = tokens, sp.types = types;
  sp.merges = merges, sp.n_merges = 5, sp.eos = T_END;
  return kn_tokenizer_build(&sp);
}

static void check_encode(const kiln_tokenizer *t, const char *s, bool special, const int32_t *want,
                         int64_t nwant) {
  int64_t n;
  int32_t *ids = encode(t, s, strlen(s), false, special, &n);
  char g[512], w[512];
  ids_str(g, sizeof g, ids, n), ids_str(w, sizeof w, want, nwant);
  CHECKF(same_ids(ids, n, want, nwant), "'%s' (special %d): got%s, want%s", s, special, g, w);
  free(ids);
}

TEST(tok_bpe_merges_by_rank) {
  kiln_tokenizer *t = toy_bpe("gpt-2");
  REQUIRE(t);
  /* abc: "b c" (rank 0) beats "a b" (rank 1); then "a bc" (rank 2) makes abc. */
  check_encode(t, "abc", false, (int32_t[]){T_ABC}, 1);
  check_encode(t, "abab", false, (int32_t[]){T_AB, T_AB}, 2);
  check_encode(t, "cab", false, (int32_t[]){'c', T_AB}, 2);
  /* The pre-tokenizer cuts "ab abc a" into "ab", " abc", " a"; " abc" = Ġ a b c: "b c" first,
   * then "a bc" wins over "Ġ a" (rank 4); " a" = Ġ a -> Ġa. */
  check_encode(t, "ab abc a", false, (int32_t[]){T_AB, ' ', T_ABC, T_GA}, 4);
  /* Letters and digits are different pre-tokens, so "a1b" never merges across. */
  check_encode(t, "ab1bc", false, (int32_t[]){T_AB, '1', T_BC}, 3);
  kiln_tokenizer_free(t);
}

TEST(tok_bpe_special_tokens) {
  kiln_tokenizer *t = toy_bpe("gpt-2");
  REQUIRE(t);
  /* Control tokens only when parse_special; user-defined tokens always. */
  check_encode(t, "<|c|>", true, (int32_t[]){T_CTRL}, 1);
  check_encode(t, "<|c|>", false, (int32_t[]){'<', '|', 'c', '|', '>'}, 5);
  check_encode(t, "<u>", false, (int32_t[]){T_USER}, 1);
  check_encode(t, "ab<|c|>bc", true, (int32_t[]){T_AB, T_CTRL, T_BC}, 3);
  check_encode(t, "<|c|<|c|>", true, (int32_t[]){'<', '|', 'c', '|', T_CTRL}, 5);
  /* add_bos without a BOS token adds nothing. */
  CHECK_EQ_INT(kiln_tokenize(t, "a", 1, true, false, NULL, 0), 1);
  CHECK_EQ_INT(kiln_token_bos(t), -1);
  CHECK_EQ_INT(kiln_token_eos(t), T_END);
  CHECK(kiln_token_is_eog(t, T_END));
  CHECK(!kiln_token_is_eog(t, T_CTRL));
  CHECK_EQ_INT(kiln_token_find(t, "<u>", 3), T_USER);
  CHECK_EQ_INT(kiln_token_find(t, "zz", 2), -1);
  size_t len;
  const char *p = kiln_token_piece(t, T_CTRL, false, &len);
  CHECK(p && len == 0);
  p = kiln_token_piece(t, T_CTRL, true, &len);
  CHECK(p && len == 5 && !memcmp(p, "<|c|>", 5));
  p = kiln_token_piece(t, T_GA, false, &len);
  CHECK(p && len == 2 && !memcmp(p, " a", 2));
  kiln_tokenizer_free(t);
}

/* Data spans (chat messages) never yield control tokens, even where the text around them
 * does; a control token cannot start before a span and end inside it. */
static void check_data(const kiln_tokenizer *t, const char *s, const kn_text_span *sp, int nsp,
                       const int32_t *want, int64_t nwant) {
  int32_t ids[64];
  int64_t n = kn_tokenize_data(t, s, strlen(s), false, sp, nsp, ids, 64);
  char g[512], w[512];
  ids_str(g, sizeof g, ids, n < 0 ? 0 : n), ids_str(w, sizeof w, want, nwant);
  CHECKF(same_ids(ids, n, want, nwant), "'%s' data [%zu, +%zu) of %d: got%s, want%s", s,
         nsp ? sp[0].off : 0, nsp ? sp[0].len : 0, nsp, g, w);
}
#define SPANS(...)                                                                                 \
  (kn_text_span[]){__VA_ARGS__}, (int)(sizeof((kn_text_span[]){__VA_ARGS__}) / sizeof(kn_text_span))
TEST(tok_data_spans) {
  kiln_tokenizer *t = toy_bpe("gpt-2");
  REQUIRE(t);
  check_data(t, "<|c|>ab<|c|>", SPANS({5, 2}), (int32_t[]){T_CTRL, T_AB, T_CTRL}, 3);
  check_data(t, "<|c|>ab<|c|>", SPANS({0, 7}), (int32_t[]){'<', '|', 'c', '|', '>', T_AB, T_CTRL},
             7);
  check_data(t, "ab<|c|>ab", SPANS({2, 5}), (int32_t[]){T_AB, '<', '|', 'c', '|', '>', T_AB}, 7);
  check_data(t, "<|c|>", SPANS({2, 3}), (int32_t[]){'<', '|', 'c', '|', '>'}, 5);
  check_data(t, "<u>", SPANS({0, 3}), (int32_t[]){T_USER}, 1); /* user-defined tokens are text */
  /* two messages: markers between them are control tokens, those inside are text */
  check_data(
      t, "<|c|><|c|>a<|c|><|c|><|c|>", SPANS({5, 6}, {16, 5}),
      (int32_t[]){T_CTRL, '<', '|', 'c', '|', '>', 'a', T_CTRL, '<', '|', 'c', '|', '>', T_CTRL},
      14);
  check_data(t, "<|c|>", NULL, 0, (int32_t[]){T_CTRL}, 1); /* no data: every marker counts */
  kiln_clear_error();
  int32_t ids[8];
  CHECK(kn_tokenize_data(t, "ab", 2, false, SPANS({1, 2}), ids, 8) < 0);
  CHECK_CONTAINS(kiln_error(), "data span 0");
  kiln_clear_error();
  CHECK(kn_tokenize_data(t, "abcd", 4, false, SPANS({2, 1}, {1, 1}), ids, 8) < 0);
  CHECK_CONTAINS(kiln_error(), "data span 1");
  kiln_clear_error();
  kiln_tokenizer_free(t);
}

TEST(tok_bpe_any_bytes_round_trip) {
  kiln_tokenizer *t = toy_bpe("llama3");
  REQUIRE(t);
  /* Invalid UTF-8 (a lone continuation, a truncated sequence, 0xFF) is encoded byte by byte. */
  static const char s[] = "a\x80"
                          "b\xE2\x82 \xFF\xFE\x00z\xF0\x9F\xA6\x99 abc";
  size_t n = sizeof s - 1;
  int64_t k;
  int32_t *ids = encode(t, s, n, false, false, &k);
  REQUIRE(ids && k > 0);
  size_t out_len = 0;
  bool raw_ok = true;
  char raw[64];
  for (int64_t i = 0; i < k; i++) { /* the pieces concatenate back to the bytes */
    size_t l;
    const char *p = kiln_token_piece(t, ids[i], false, &l);
    if (!p || out_len + l > sizeof raw) raw_ok = false;
    if (raw_ok) memcpy(raw + out_len, p, l), out_len += l;
  }
  CHECK(raw_ok && out_len == n && !memcmp(raw, s, n));
  free(ids);
  kiln_tokenizer_free(t);
}

/* ---- toy SentencePiece -------------------------------------------------------------------- */
#define SP "\xE2\x96\x81"
enum { S_UNK, S_BOS, S_EOS, S_BYTE0, S_SP = S_BYTE0 + 256, S_A, S_B, S_SPA, S_AB, S_SPAB, S_N };

static kiln_tokenizer *toy_spm(int add_space_prefix) {
  static char bytes[256][8];
  const char *tokens[S_N];
  float scores[S_N] = {0};
  int32_t types[S_N];
  tokens[S_UNK] = "<unk>", tokens[S_BOS] = "<s>", tokens[S_EOS] = "</s>";
  types[S_UNK] = KN_TOK_UNKNOWN, types[S_BOS] = types[S_EOS] = KN_TOK_CONTROL;
  for (int b = 0; b < 256; b++) {
    snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
    tokens[S_BYTE0 + b] = bytes[b], types[S_BYTE0 + b] = KN_TOK_BYTE;
  }
  const char *pieces[] = {SP, "a", "b", SP "a", "ab", SP "ab"};
  const float sc[] = {-1, -2, -3, -0.5f, -0.1f, -0.2f};
  for (int i = 0; i < 6; i++)
    tokens[S_SP + i] = pieces[i], scores[S_SP + i] = sc[i], types[S_SP + i] = KN_TOK_NORMAL;
  kn_tok_spec sp = kn_tok_spec_init();
  sp.model = "llama", sp.n_vocab = S_N, sp.tokens = tokens, sp.types = types, sp.scores = scores;
  sp.add_space_prefix = add_space_prefix;
  return kn_tokenizer_build(&sp);
}

TEST(tok_spm_merges_by_score) {
  kiln_tokenizer *t = toy_spm(-1);
  REQUIRE(t);
  /* "ab" -> ▁ a b: "ab" (-0.1) beats "▁a" (-0.5); then "▁ab" (-0.2). */
  check_encode(t, "ab", false, (int32_t[]){S_SPAB}, 1);
  /* "b a" -> ▁ b ▁ a: only "▁a" is a token. */
  check_encode(t, "b a", false, (int32_t[]){S_SP, S_B, S_SPA}, 3);
  /* 'c' is not in the vocabulary: its byte; é is two bytes. */
  check_encode(t, "c\xC3\xA9", false,
               (int32_t[]){S_SP, S_BYTE0 + 'c', S_BYTE0 + 0xC3, S_BYTE0 + 0xA9}, 4);
  /* Text after a special token gets the space prefix again. */
  check_encode(t, "a</s>a", true, (int32_t[]){S_SPA, S_EOS, S_SPA}, 3);
  CHECK_EQ_INT(kiln_token_bos(t), S_BOS); /* SentencePiece defaults: <s> = 1, </s> = 2 */
  CHECK_EQ_INT(kiln_token_eos(t), S_EOS);
  CHECK(kiln_tokenizer_add_bos(t));
  int32_t ids[4];
  CHECK_EQ_INT(kiln_tokenize(t, "ab", 2, true, false, ids, 4), 2);
  CHECK(ids[0] == S_BOS && ids[1] == S_SPAB);
  /* Decoding drops the prefix space once and turns byte tokens back into bytes. */
  int64_t k;
  int32_t *e = encode(t, "b a c\xC3\xA9 ", 8, true, false, &k);
  size_t n;
  char *d = decode(t, e, k, &n);
  CHECK(n == 8 && !memcmp(d, "b a c\xC3\xA9 ", 8));
  free(e), free(d);
  kiln_tokenizer_free(t);
  t = toy_spm(0);
  REQUIRE(t);
  check_encode(t, "ab", false, (int32_t[]){S_AB}, 1);
  kiln_tokenizer_free(t);
}

/* ---- streaming detokenizer ------------------------------------------------------------------ */
TEST(tok_detok_streaming) {
  kiln_tokenizer *t = toy_bpe("gpt-2"); /* token b is byte b */
  REQUIRE(t);
  kiln_detok *d = kiln_detok_new(t, false);
  REQUIRE(d);
  char out[64];
  static const unsigned char llama[4] = {0xF0, 0x9F, 0xA6, 0x99};
  for (int i = 0; i < 3; i++) /* nothing until the character is complete */
    CHECK_EQ_INT(kiln_detok_push(d, llama[i], out, sizeof out), 0);
  CHECK_EQ_INT(kiln_detok_push(d, llama[3], out, sizeof out), 4);
  CHECK(!memcmp(out, llama, 4));
  /* A byte that can start nothing is U+FFFD at once; so is a lead byte whose next byte does
   * not continue it (then the next byte counts on its own). */
  CHECK_EQ_INT(kiln_detok_push(d, 0xFF, out, sizeof out), 3);
  CHECK(!memcmp(out, "\xEF\xBF\xBD", 3));
  CHECK_EQ_INT(kiln_detok_push(d, 0xE0, out, sizeof out), 0);
  CHECK_EQ_INT(kiln_detok_push(d, 'A', out, sizeof out), 4);
  CHECK(!memcmp(out,
                "\xEF\xBF\xBD"
                "A",
                4));
  /* Overlong and surrogate forms never complete. */
  CHECK_EQ_INT(kiln_detok_push(d, 0xC0, out, sizeof out), 3);
  CHECK_EQ_INT(kiln_detok_push(d, 0xED, out, sizeof out), 0);
  CHECK_EQ_INT(kiln_detok_push(d, 0xA0, out, sizeof out), 6);
  /* An incomplete tail at the end of the stream becomes U+FFFD. */
  CHECK_EQ_INT(kiln_detok_push(d, 0xF0, out, sizeof out), 0);
  CHECK_EQ_INT(kiln_detok_push(d, 0x9F, out, sizeof out), 0);
  CHECK_EQ_INT(kiln_detok_flush(d, out, sizeof out), 3);
  CHECK(!memcmp(out, "\xEF\xBF\xBD", 3));
  CHECK_EQ_INT(kiln_detok_flush(d, out, sizeof out), 0);
  /* A small buffer gets whole characters only; the rest waits. */
  for (int i = 0; i < 4; i++)
    kiln_detok_push(d, llama[i], out, 3);
  CHECK_EQ_INT(kiln_detok_push(d, 'x', out, 3), 0);
  CHECK_EQ_INT(kiln_detok_push(d, -1, out, 4), 4);
  CHECK(!memcmp(out, llama, 4));
  CHECK_EQ_INT(kiln_detok_push(d, -1, out, 4), 1);
  CHECK(out[0] == 'x');
  /* Control tokens: nothing, unless the detokenizer renders them. */
  CHECK_EQ_INT(kiln_detok_push(d, T_CTRL, out, sizeof out), 0);
  kiln_detok *ds = kiln_detok_new(t, true);
  CHECK_EQ_INT(kiln_detok_push(ds, T_CTRL, out, sizeof out), 5);
  CHECK_EQ_INT(kiln_detok_push(d, T_N, out, sizeof out), -1);
  CHECK_CONTAINS(kiln_error(), "bad token id");
  kiln_clear_error();
  kiln_detok_free(ds);
  kiln_detok_free(d);
  kiln_tokenizer_free(t);
}

/* ---- errors ------------------------------------------------------------------------------------
 */
TEST(tok_errors) {
  kiln_tokenizer *t = toy_bpe("qwen2");
  REQUIRE(t);
  CHECK_EQ_INT(kiln_tokenize(t, NULL, 3, false, false, NULL, 0), -1);
  CHECK_CONTAINS(kiln_error(), "NULL");
  kiln_clear_error();
  CHECK_EQ_INT(kiln_tokenize(NULL, "a", 1, false, false, NULL, 0), -1);
  kiln_clear_error();
  CHECK_EQ_INT(kiln_tokenize(t, NULL, 0, false, false, NULL, 0), 0);
  /* More ids than room: the count comes back, nothing is written past cap. */
  int32_t out[4] = {-7, -7, -7, -7};
  CHECK_EQ_INT(kiln_tokenize(t, "x y z w", 7, false, false, out, 2), 7);
  CHECK(out[0] == 'x' && out[2] == -7 && out[3] == -7);
  CHECK(kiln_token_piece(t, -1, false, NULL) == NULL);
  CHECK(kiln_token_piece(t, T_N, false, NULL) == NULL);
  kiln_clear_error();
  kiln_tokenizer_free(t);

  kn_tok_spec sp = kn_tok_spec_init();
  const char *tokens[] = {"a", "b", "ab"};
  sp.model = "bert", sp.n_vocab = 3, sp.tokens = tokens;
  CHECK(!kn_tokenizer_build(&sp));
  CHECK_CONTAINS(kiln_error(), "'bert'");
  kiln_clear_error();
  sp.model = "gpt2", sp.pre = "nonsense"; /* an unknown pre-tokenizer is the default one */
  CHECK(!kn_tokenizer_build(&sp));        /* and the next check says what is missing */
  CHECK_CONTAINS(kiln_error(), "merges");
  kiln_clear_error();
  sp.pre = "gpt-2";
  CHECK(!kn_tokenizer_build(&sp)); /* no merges */
  CHECK_CONTAINS(kiln_error(), "merges");
  kiln_clear_error();
  const char *bad_merge[] = {"ab"};
  sp.merges = bad_merge, sp.n_merges = 1;
  CHECK(!kn_tokenizer_build(&sp));
  CHECK_CONTAINS(kiln_error(), "merge 0");
  kiln_clear_error();
  CHECK(!kiln_tokenizer_from_gguf(NULL));
  kiln_clear_error();
}

/* ---- GGUF metadata -------------------------------------------------------------------------- */
enum { GT_U32 = 4, GT_I32 = 5, GT_F32 = 6, GT_BOOL = 7, GT_STR = 8, GT_ARR = 9 };

/* A vocabulary-only GGUF: what = 0 valid, 1 no model key, 2 tokens as integers, 3 a token_type
 * array shorter than the tokens, 4 an unknown pre-tokenizer (loads, with the default split). */
static bool write_vocab(const char *path, int what) {
  static const char *toks[] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "h", "i", "hi"};
  gw_buf b = {0};
  gw_header(&b, 3, 0, what == 1 ? 7 : 8);
  if (what != 1) gw_key(&b, "tokenizer.ggml.model", GT_STR), gw_str(&b, "gpt2");
  gw_key(&b, "tokenizer.ggml.pre", GT_STR), gw_str(&b, what == 4 ? "klingon" : "qwen2");
  gw_key(&b, "tokenizer.ggml.tokens", GT_ARR);
  if (what == 2) {
    gw_array(&b, GT_I32, 6);
    for (int i = 0; i < 6; i++)
      gw_u32(&b, (uint32_t)i);
  } else {
    gw_array(&b, GT_STR, 6);
    for (int i = 0; i < 6; i++)
      gw_str(&b, toks[i]);
  }
  gw_key(&b, "tokenizer.ggml.token_type", GT_ARR);
  int nt = what == 3 ? 5 : 6;
  gw_array(&b, GT_I32, (uint64_t)nt);
  for (int i = 0; i < nt; i++)
    gw_u32(&b, i < 3 ? 3 : 1);
  gw_key(&b, "tokenizer.ggml.merges", GT_ARR), gw_array(&b, GT_STR, 1), gw_str(&b, "h i");
  gw_key(&b, "tokenizer.ggml.bos_token_id", GT_U32), gw_u32(&b, 1);
  gw_key(&b, "tokenizer.ggml.eos_token_id", GT_U32), gw_u32(&b, 0);
  gw_key(&b, "tokenizer.ggml.add_bos_token", GT_BOOL), gw_u8(&b, 1);
  bool ok = gw_write_file(path, b.p, b.n);
  gw_free(&b);
  return ok;
}

TEST(tok_gguf_metadata) {
  char dir[512], path[1024];
  REQUIRE(test_tmp_dir(dir, sizeof dir));
  snprintf(path, sizeof path, "%s/vocab.gguf", dir);
  static const char *const want_err[] = {NULL, "tokenizer.ggml.model", "tokenizer.ggml.tokens",
                                         "tokenizer.ggml.token_type", NULL};
  for (int what = 0; what < 5; what++) {
    test_set_context("case %d", what);
    CHECK(write_vocab(path, what));
    kiln_gguf *g = kiln_gguf_open(path);
    CHECKF(g, "open: %s", test_errmsg());
    kiln_tokenizer *t = g ? kiln_tokenizer_from_gguf(g) : NULL;
    kiln_gguf_close(g);
    if (want_err[what]) {
      CHECK(!t);
      CHECK_CONTAINS(kiln_error(), want_err[what]);
      kiln_clear_error();
    } else if (t) {
      CHECK_EQ_INT(kiln_tokenizer_n_vocab(t), 6);
      CHECK_EQ_INT(kiln_token_bos(t), 1);
      CHECK_EQ_INT(kiln_token_eos(t), 0);
      CHECK_EQ_INT(kiln_token_eot(t), 2); /* found by its text */
      CHECK(kiln_token_is_eog(t, 0) && kiln_token_is_eog(t, 2) && !kiln_token_is_eog(t, 1));
      CHECK(kiln_tokenizer_add_bos(t));
      int32_t ids[8];
      CHECK_EQ_INT(kiln_tokenize(t, "<|im_start|>hi", 14, true, true, ids, 8), 3);
      CHECK(ids[0] == 1 && ids[1] == 1 && ids[2] == 5);
      kiln_tokenizer_free(t);
    } else
      test_fail(__FILE__, __LINE__, "valid vocab rejected: %s", test_errmsg());
  }
  test_set_context("%s", "");
  test_tmp_dir_remove(dir);
}

/* ---- references ------------------------------------------------------------------------------ */

/* Parses "TAG id id ..." into ids (malloc'd). */
static int32_t *parse_ids(const char *line, const char *tag, int64_t *n) {
  size_t tl = strlen(tag);
  *n = -1;
  if (strncmp(line, tag, tl) || (line[tl] != ' ' && line[tl] != 0)) return NULL;
  int32_t *ids = malloc((strlen(line) / 2 + 1) * sizeof *ids);
  const char *p = line + tl;
  char *e;
  *n = 0;
  for (long v; (v = strtol(p, &e, 10)), e != p; p = e)
    ids[(*n)++] = (int32_t)v;
  return ids;
}

static void compare_line(const kiln_tokenizer *t, const char *text, size_t len, const char *line,
                         const char *tag, bool special, int k) {
  int64_t nw, ng;
  int32_t *want = parse_ids(line, tag, &nw);
  int32_t *got = encode(t, text, len, false, special, &ng);
  if (nw < 0) {
    test_fail(__FILE__, __LINE__, "line %d: fixture line '%.40s' is not tagged %s", k, line, tag);
  } else if (!same_ids(got, ng, want, nw)) {
    char g[600], w[600];
    ids_str(g, sizeof g, got, ng), ids_str(w, sizeof w, want, nw);
    test_fail(__FILE__, __LINE__, "line %d %s '%.40s': got%s\n  want%s", k, tag, text, g, w);
  }
  free(want), free(got);
}

static void check_round_trip(const kiln_tokenizer *t, const char *text, size_t len, int k) {
  int64_t n;
  int32_t *ids = encode(t, text, len, false, false, &n);
  size_t dl;
  char *d = decode(t, ids, n, &dl);
  CHECKF(dl == len && !memcmp(d, text, len), "line %d: decode(encode('%.40s')) = '%.*s'", k, text,
         (int)(dl < 60 ? dl : 60), d);
  free(ids), free(d);
}

TEST(tok_smollm2_matches_llamacpp) {
  char mp[1024], fp[1024];
  const char *model = smollm2_path(mp, sizeof mp);
  if (!model) {
    printf("note: tok_smollm2_matches_llamacpp skipped: no SmolLM2 model; get it with "
           "scripts/fetch-model (or set KILN_MODEL_SMOLLM2=path.gguf)\n");
    return;
  }
  corpus c;
  size_t fl;
  char *fix = test_path(fp, sizeof fp, "llm/tok_smollm2.txt") ? read_all(fp, &fl) : NULL;
  REQUIRE(fix && corpus_load(&c));
  kiln_gguf *g = kiln_gguf_open(model);
  REQUIRE(g);
  kiln_tokenizer *t = kiln_tokenizer_from_gguf(g);
  kiln_gguf_close(g);
  REQUIRE(t);
  CHECK_EQ_INT(kiln_tokenizer_n_vocab(t), 49152);
  CHECK_EQ_INT(kiln_token_bos(t), kiln_token_find(t, "<|im_start|>", 12));
  CHECK_EQ_INT(kiln_token_eos(t), kiln_token_find(t, "<|im_end|>", 10));
  CHECK(kiln_token_is_eog(t, kiln_token_find(t, "<|endoftext|>", 13)));
  CHECK(!kiln_token_is_eog(t, kiln_token_find(t, "<|im_start|>", 12)));
  CHECK(!kiln_tokenizer_add_bos(t)); /* tokenizer.ggml.add_bos_token = false */
  char *save = NULL, *line = strtok_r(fix, "\n", &save);
  for (int k = 0; k < c.n; k++) {
    for (int s = 0; s < 2; s++, line = strtok_r(NULL, "\n", &save)) {
      if (!line) break;
      compare_line(t, c.text[k], c.len[k], line, s ? "S" : "N", s, k + 1);
    }
    check_round_trip(t, c.text[k], c.len[k], k + 1);
  }
  /* The whole corpus as one text. */
  size_t total = 0;
  for (int k = 0; k < c.n; k++)
    total += c.len[k] + 1;
  char *all = malloc(total), *p = all;
  for (int k = 0; k < c.n; k++) {
    memcpy(p, c.text[k], c.len[k]);
    p += c.len[k];
    if (k + 1 < c.n) *p++ = '\n';
  }
  for (int s = 0; s < 2 && line; s++, line = strtok_r(NULL, "\n", &save))
    compare_line(t, all, (size_t)(p - all), line, s ? "SA" : "NA", s, 0);
  CHECKF(line == NULL, "tok_smollm2.txt has more lines than the corpus (regenerate it)");
  check_round_trip(t, all, (size_t)(p - all), 0);
  free(all), free(fix);
  corpus_free(&c);
  kiln_tokenizer_free(t);
}

/* A SentencePiece BPE model trained on the corpus (byte fallback), with the space it puts
 * before a text (LLaMA's kind) or without (Gemma's): kiln's ids against sentencepiece's. */
static void check_spm(bool prefix) {
  char dir[512], path[1024], qd[600], args[1200];
  REQUIRE(test_tmp_dir(dir, sizeof dir));
  test_shell_quote(qd, sizeof qd, dir);
  snprintf(args, sizeof args, "spm %s%s", qd, prefix ? "" : " noprefix");
  int rc;
  char *out = run_check(args, &rc);
  if (rc == 77 || rc == 127 || !out) {
    printf("note: tok_spm_matches_sentencepiece skipped: needs python3 with sentencepiece and "
           "gguf (pip install sentencepiece gguf)\n");
    free(out), test_tmp_dir_remove(dir);
    return;
  }
  CHECKF(rc == 0, "tok_check.py spm failed (%d)", rc);
  snprintf(path, sizeof path, "%s/%s", dir, prefix ? "spm.gguf" : "spm-noprefix.gguf");
  kiln_gguf *g = rc == 0 ? kiln_gguf_open(path) : NULL;
  kiln_tokenizer *t = g ? kiln_tokenizer_from_gguf(g) : NULL;
  kiln_gguf_close(g);
  corpus c;
  if (t && corpus_load(&c)) {
    char *save = NULL, *line = strtok_r(out, "\n", &save);
    char tagged[65536];
    for (int k = 0; k < c.n; k++) {
      /* sentencepiece prints nothing for an empty text: an empty line, which strtok skips */
      if (c.len[k] == 0) continue;
      if (!line) {
        test_fail(__FILE__, __LINE__, "reference ended early at line %d", k + 1);
        break;
      }
      snprintf(tagged, sizeof tagged, "N %s", line);
      compare_line(t, c.text[k], c.len[k], tagged, "N", false, k + 1);
      check_round_trip(t, c.text[k], c.len[k], k + 1);
      line = strtok_r(NULL, "\n", &save);
    }
    corpus_free(&c);
  } else
    test_fail(__FILE__, __LINE__, "cannot load %s: %s", path, test_errmsg());
  kiln_tokenizer_free(t);
  free(out);
  test_tmp_dir_remove(dir);
}
TEST(tok_spm_matches_sentencepiece) {
  test_set_context("%s", "with a space prefix");
  check_spm(true);
  test_set_context("%s", "without a space prefix");
  check_spm(false);
  test_set_context("%s", "");
}

/* Every name kiln knows (tokenizer.ggml.pre): kiln's split of the corpus and of the lines kept
 * for this check (tok_corpus_split.txt) against the published patterns run by Python `regex`
 * (tok_check.py prints one block of lines per name). A name kiln lacked would fall back to the
 * default split and differ. */
TEST(tok_pretokenizers_match_regex) {
  static const char names[] =
      "gpt-2 gpt2 mpt olmo phi-2 jais gigachat a.x-4.0 mellum exaone4 trillion granite-docling "
      "smollm starcoder refact command-r codeshell exaone minerva-7b mellum2 "
      "llama3 llama-v3 llama-bpe falcon3 falcon-h1 midm-2.0 lfm2 dbrx smaug-bpe glm4 chatglm-bpe "
      "minicpm5 jais-2 qwen2 deepseek-r1-qwen stablelm2 megrez hunyuan grok-2 solar-open kormo "
      "f2llmv2 qwen35 seed-coder bailingmoe bailingmoe2 llada-moe gpt-4o llama4 minimax-m2 "
      "kanana2 tekken pixtral kimi-k2 deepseek-v3 hunyuan-dense joyai-llm deepseek-llm "
      "deepseek-coder bloom gpt3-finnish poro-chat viking falcon default";
  corpus c;
  REQUIRE(corpus_load(&c));
  REQUIRE(corpus_add(&c, "llm/tok_corpus_split.txt"));
  char args[sizeof names + 8], list[sizeof names];
  snprintf(args, sizeof args, "split %s", names);
  memcpy(list, names, sizeof names);
  int rc;
  char *out = run_check(args, &rc);
  if (rc == 77 || rc == 127 || !out) {
    printf("note: tok_pretokenizers_match_regex skipped: needs python3 with regex "
           "(pip install regex)\n");
    free(out);
    corpus_free(&c);
    return;
  }
  CHECKF(rc == 0, "tok_check.py split failed (%d)", rc);
  char *p = out, *save = NULL;
  for (char *pre = strtok_r(list, " ", &save); pre && rc == 0; pre = strtok_r(NULL, " ", &save)) {
    kiln_tokenizer *t = toy_bpe(pre);
    CHECKF(t != NULL, "%s: no tokenizer: %s", pre, test_errmsg());
    if (!t) break;
    for (int k = 0; k < c.n; k++) {
      char *e = strchr(p, '\n');
      if (!e) {
        test_fail(__FILE__, __LINE__, "%s: reference ended early at line %d", pre, k + 1);
        rc = -1;
        break;
      }
      *e = 0;
      size_t lens[4096], want[4096];
      int64_t nw = 0;
      char *q = p, *qe;
      for (long v; (v = strtol(q, &qe, 10)), qe != q && nw < 4096; q = qe)
        want[nw++] = (size_t)v;
      int64_t ng = kn_tokenizer_split(t, c.text[k], c.len[k], lens, 4096);
      bool same = ng == nw && (nw == 0 || !memcmp(lens, want, (size_t)nw * sizeof *lens));
      CHECKF(same, "%s line %d '%.40s': %lld pieces, regex gives %lld ('%.60s')", pre, k + 1,
             c.text[k], (long long)ng, (long long)nw, p);
      p = e + 1;
    }
    kiln_tokenizer_free(t);
  }
  free(out);
  corpus_free(&c);
}
