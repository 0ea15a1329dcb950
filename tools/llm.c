/* llm.c — `kiln generate`, `kiln chat` and `kiln bench llm`: load a GGUF model, tokenize,
 * run it through kiln_llm, sample, and stream the text. Shared option parsing lives here. */
#include "kiln.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- options ------------------------------------------------------------------------------ */
typedef struct {
  const char *model, *prompt, *device, *system, *chat_template, *preset, *dtype;
  bool random;
  long n_predict, n_ctx, runs, n_prompt, batch;
  kiln_sampler_params sp;
} llm_opts;

static char default_model_path[4096];
/* The model scripts/fetch-model puts in the cache, or NULL. */
const char *default_model(void) {
  return kiln_model_find("SmolLM2", default_model_path, sizeof default_model_path);
}

static int parse_real(const char *s, double lo, double hi, double *out) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || *end || !(v >= lo && v <= hi)) return -1;
  *out = v;
  return 0;
}

int sampling_flag(const char *cmd, int argc, char **argv, int *i, bool seed,
                  kiln_sampler_params *sp) {
  static const struct {
    const char *name;
    double lo, hi;
    bool integer;
  } flags[] = {{"--temp", 0, 100, false},
               {"--top-k", 0, 1 << 30, true},
               {"--top-p", 1e-9, 1, false},
               {"--min-p", 0, 1, false},
               {"--repeat-penalty", 1e-6, 100, false},
               {"--repeat-last-n", 0, 1 << 20, true},
               {"--frequency-penalty", -100, 100, false},
               {"--presence-penalty", -100, 100, false},
               {"--seed", 0, 0x7fffffff, true}};
  for (int f = 0; f < (int)(sizeof flags / sizeof *flags); f++) {
    if (!seed && f == 8) break;
    int missing = 0;
    const char *v = flag_value(argc, argv, i, flags[f].name, &missing);
    if (missing) return 1 + usage_error("%s: %s needs a value", cmd, flags[f].name);
    if (!v) continue;
    double x = 0;
    long n = 0;
    bool bad = flags[f].integer ? parse_int(v, (long)flags[f].lo, (long)flags[f].hi, &n) != 0
                                : parse_real(v, flags[f].lo, flags[f].hi, &x) != 0;
    if (bad)
      return 1 + usage_error("%s: %s wants %s in %.10g..%.10g, got '%s'", cmd, flags[f].name,
                             flags[f].integer ? "an integer" : "a number", flags[f].lo, flags[f].hi,
                             v);
    switch (f) {
    case 0:
      sp->temperature = x;
      break;
    case 1:
      sp->top_k = (int)n;
      break;
    case 2:
      sp->top_p = x;
      break;
    case 3:
      sp->min_p = x;
      break;
    case 4:
      sp->repeat_penalty = x;
      break;
    case 5:
      sp->repeat_last_n = (int)n;
      break;
    case 6:
      sp->frequency_penalty = x;
      break;
    case 7:
      sp->presence_penalty = x;
      break;
    default:
      sp->seed = (uint64_t)n;
      break;
    }
    return -1;
  }
  return 0;
}

/* Parses the flags every LLM command shares; cmd names the command for messages. Returns -1
 * when done, or an exit code (help printed, usage error). */
static int parse_llm_opts(const char *cmd, const char *usage, int argc, char **argv, llm_opts *o) {
  memset(o, 0, sizeof *o);
  kiln_sampler_defaults(&o->sp);
  o->n_predict = -1, o->runs = 3, o->n_prompt = 128, o->batch = 1;
  for (int i = 1; i < argc; i++) {
    int missing = 0, rc;
    const char *v;
    const char *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      printf("usage: kiln %s %s\n", cmd, usage);
      return EXIT_OK;
    }
#define FLAG(name) ((v = flag_value(argc, argv, &i, name, &missing)) != NULL)
#define INT(dst, lo, hi, what)                                                                     \
  if (parse_int(v, lo, hi, &dst))                                                                  \
  return usage_error("%s: %s wants an integer in %ld..%ld, got '%s'", cmd, what, (long)(lo),       \
                     (long)(hi), v)
    if (FLAG("-m") || FLAG("--model"))
      o->model = v;
    else if (FLAG("-p") || FLAG("--prompt")) {
      if (!strcmp(cmd, "bench llm")) {
        INT(o->n_prompt, 1, 4096, "-p (prompt tokens)");
      } else
        o->prompt = v;
    } else if (FLAG("-n") || FLAG("--n-predict")) {
      INT(o->n_predict, 0, 1000000, "-n");
    } else if (FLAG("--ctx")) {
      INT(o->n_ctx, 16, 1 << 20, "--ctx");
    } else if (FLAG("--runs")) {
      INT(o->runs, 1, 100, "--runs");
    } else if (FLAG("--batch")) {
      INT(o->batch, 1, 256, "--batch");
    } else if ((rc = sampling_flag(cmd, argc, argv, &i, true, &o->sp)) != 0) {
      if (rc > 0) return rc - 1;
    } else if (FLAG("--device"))
      o->device = v;
    else if (!strcmp(cmd, "bench llm") && FLAG("--preset"))
      o->preset = v;
    else if (!strcmp(cmd, "bench llm") && FLAG("--dtype"))
      o->dtype = v;
    else if (!strcmp(cmd, "bench llm") && !strcmp(a, "--random"))
      o->random = true;
    else if (FLAG("-s") || FLAG("--system"))
      o->system = v;
    else if (FLAG("--chat-template"))
      o->chat_template = v;
    else if (missing)
      return usage_error("%s: %s needs a value", cmd, a);
    else
      return usage_error("%s: unknown argument '%s'", cmd, a);
#undef FLAG
#undef INT
  }
  if (o->device && kiln_set_device(o->device) < 0) {
    fprintf(stderr, "kiln: %s: --device %s: %s\n", cmd, o->device, kiln_error());
    return EXIT_USAGE;
  }
  if (o->preset && !o->random)
    return usage_error("%s: --preset %s has no weights file: add --random", cmd, o->preset);
  if ((o->random || o->dtype) && !o->preset)
    return usage_error("%s: --random and --dtype go with --preset", cmd);
  if (o->dtype && strcmp(o->dtype, "f16") && strcmp(o->dtype, "q4_0"))
    return usage_error("%s: --dtype wants f16 or q4_0, got '%s'", cmd, o->dtype);
  if (!o->preset && !o->model && !(o->model = default_model())) {
    fprintf(stderr,
            "kiln: %s: no model given and none in the cache; fetch the default one with "
            "scripts/fetch-model, or pass -m MODEL.gguf\n",
            cmd);
    return EXIT_USAGE;
  }
  return -1;
}

/* ---- a loaded model with its tokenizer ---------------------------------------------------- */
typedef struct {
  kiln_llm *m;
  kiln_tokenizer *tok;
  float *logits;
  double load_s;
} session;

static int session_open(session *s, const char *cmd, const llm_opts *o) {
  memset(s, 0, sizeof *s);
  double t0 = now_seconds();
  s->m = kiln_llm_load(o->model, o->n_ctx);
  if (!s->m) return runtime_error(cmd);
  s->tok = kiln_tokenizer_from_gguf(kiln_llm_gguf(s->m));
  if (!s->tok) {
    kiln_llm_free(s->m);
    return runtime_error(cmd);
  }
  s->logits = malloc(sizeof(float) * (size_t)kiln_llm_n_vocab(s->m));
  if (!s->logits) {
    fprintf(stderr, "kiln: %s: out of memory\n", cmd);
    return EXIT_RUNTIME;
  }
  s->load_s = now_seconds() - t0;
  return -1;
}
static void session_close(session *s) {
  free(s->logits);
  kiln_tokenizer_free(s->tok);
  kiln_llm_free(s->m);
}

/* Tokenizes text into a malloc'ed array; NULL on error (message set). */
static int32_t *tokenize(const kiln_tokenizer *t, const char *text, bool bos, bool special,
                         int64_t *n) {
  size_t len = strlen(text);
  int64_t cap = (int64_t)len + 8; /* enough for any text; kiln_tokenize says when it is not */
  for (;;) {
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    if (!ids) return NULL;
    *n = kiln_tokenize(t, text, len, bos, special, ids, cap);
    if (*n >= 0 && *n <= cap) return ids;
    free(ids);
    if (*n < 0) return NULL;
    cap = *n;
  }
}

/* What a reply streamed: its token ids (those fed to the cache) and its text. */
typedef struct {
  int32_t *ids;
  int64_t n;
  char *text;
  size_t len;
} reply;
static bool reply_text(reply *r, const char *s, size_t n) {
  char *t = realloc(r->text, r->len + n + 1);
  if (!t) return false;
  memcpy(t + r->len, s, n);
  r->text = t, r->len += n, t[r->len] = 0;
  return true;
}
static void put_text(reply *r, const char *s, size_t n, bool *ok) {
  fwrite(s, 1, n, stdout);
  if (r && !reply_text(r, s, n)) *ok = false;
}

/* Samples and streams up to max tokens after the logits in s->logits, feeding each one back
 * (so the cache holds the whole reply); stops at an end-of-generation token (not fed) or a
 * full context. r (may be NULL) gets the tokens fed and the text. Returns the number of tokens
 * generated, or < 0 on error. */
static int64_t stream(session *s, kiln_sampler *smp, int64_t max, bool *hit_eog, bool *ctx_full,
                      reply *r) {
  kiln_detok *d = kiln_detok_new(s->tok, false);
  char buf[512];
  int64_t got = 0, w;
  bool ok = d != NULL;
  *hit_eog = *ctx_full = false;
  int64_t cap = max < 4096 ? max + 1 : 4096;
  if (r && !(r->ids = malloc(sizeof(int32_t) * (size_t)cap))) ok = false;
  while (ok && got < max) {
    int32_t id = kiln_sample(smp, s->logits, kiln_llm_n_vocab(s->m));
    if (id < 0) {
      ok = false;
      break;
    }
    if (kiln_token_is_eog(s->tok, id)) {
      *hit_eog = true;
      break;
    }
    got++;
    for (int32_t t = id; (w = kiln_detok_push(d, t, buf, sizeof buf)) > 0; t = -1)
      put_text(r, buf, (size_t)w, &ok);
    fflush(stdout);
    if (kiln_llm_pos(s->m) >= kiln_llm_n_ctx(s->m)) {
      *ctx_full = true;
      break;
    }
    if (kiln_llm_eval(s->m, &id, 1, s->logits, false) < 0) {
      ok = false;
      break;
    }
    if (r && r->n == cap) {
      int32_t *more = realloc(r->ids, sizeof(int32_t) * (size_t)(cap *= 2));
      if (!more)
        ok = false;
      else
        r->ids = more;
    }
    if (r && ok) r->ids[r->n++] = id;
  }
  while (d && (w = kiln_detok_flush(d, buf, sizeof buf)) > 0)
    put_text(r, buf, (size_t)w, &ok);
  fflush(stdout);
  kiln_detok_free(d);
  return ok ? got : -1;
}

/* ---- kiln generate ----------------------------------------------------------------------- */
const char generate_usage[] =
    "[-m MODEL] -p PROMPT [-n N] [--temp T] [--top-k K] [--top-p P] [--min-p P] "
    "[--repeat-penalty R] [--seed S] [--ctx N] [--device D]";

int cmd_generate(int argc, char **argv) {
  llm_opts o;
  int rc = parse_llm_opts("generate", generate_usage, argc, argv, &o);
  if (rc >= 0) return rc;
  if (!o.prompt) return usage_error("generate: -p PROMPT is required");
  if (o.n_predict < 0) o.n_predict = 128;
  session s;
  if ((rc = session_open(&s, "generate", &o)) >= 0) return rc;
  kiln_sampler *smp = kiln_sampler_new(&o.sp);
  int64_t n = 0;
  int32_t *ids = smp ? tokenize(s.tok, o.prompt, kiln_tokenizer_add_bos(s.tok), false, &n) : NULL;
  if (!ids || n == 0) {
    if (ids && n == 0)
      fprintf(stderr, "kiln: generate: the prompt has no tokens\n");
    else
      runtime_error("generate");
    free(ids), kiln_sampler_free(smp), session_close(&s);
    return ids ? EXIT_USAGE : EXIT_RUNTIME;
  }
  for (int64_t i = 0; i < n; i++)
    kiln_sampler_accept(smp, ids[i]);
  double t0 = now_seconds();
  rc = kiln_llm_eval(s.m, ids, n, s.logits, false);
  double t1 = now_seconds();
  bool eog, full;
  int64_t got = rc < 0 ? -1 : stream(&s, smp, o.n_predict, &eog, &full, NULL);
  double t2 = now_seconds();
  printf("\n");
  if (got < 0)
    rc = runtime_error("generate");
  else {
    if (full)
      fprintf(stderr, "kiln: generate: the context (%lld tokens) is full\n",
              (long long)kiln_llm_n_ctx(s.m));
    fprintf(
        stderr,
        "kiln: load %.2f s | prompt %lld tokens, %.1f tok/s | generated %lld tokens, %.1f tok/s\n",
        s.load_s, (long long)n, n / (t1 - t0), (long long)got, got > 0 ? got / (t2 - t1) : 0.0);
    rc = EXIT_OK;
  }
  free(ids), kiln_sampler_free(smp), session_close(&s);
  return rc;
}

/* ---- kiln chat ---------------------------------------------------------------------------- */
const char chat_usage[] =
    "[-m MODEL] [-s SYSTEM] [--chat-template NAME] [-n MAX] [--temp T] [--top-k K] [--top-p P] "
    "[--min-p P] [--repeat-penalty R] [--seed S] [--ctx N] [--device D]";

typedef struct {
  session s;
  kiln_chat *tmpl;
  kiln_sampler *smp;
  kiln_chat_msg *msgs; /* the conversation; contents malloc'ed */
  int nmsg, cap;
  int32_t *cached; /* the tokens in the model's cache, in order */
  int64_t ncached, max_reply;
  const char *system;
} chat;

static bool chat_push(chat *c, const char *role, char *content) {
  if (!content) return false;
  if (c->nmsg == c->cap) {
    kiln_chat_msg *m = realloc(c->msgs, sizeof *m * (size_t)(c->cap = c->cap ? 2 * c->cap : 8));
    if (!m) {
      free(content);
      return false;
    }
    c->msgs = m;
  }
  c->msgs[c->nmsg++] = (kiln_chat_msg){role, content};
  return true;
}
static void chat_pop_to(chat *c, int n) {
  while (c->nmsg > n)
    free((char *)c->msgs[--c->nmsg].content);
}
static void chat_set_cached(chat *c, int32_t *ids, int64_t n) {
  free(c->cached);
  c->cached = ids, c->ncached = n;
}

/* Renders the whole conversation with the generation prompt and evaluates the tokens past those
 * already cached (a reply re-tokenized differently is re-evaluated from where it differs).
 * 0, 1 when it does not fit the context, < 0. */
static int chat_feed(chat *c) {
  int32_t *ids;
  int64_t n = kiln_chat_tokenize(c->tmpl, c->s.tok, c->msgs, c->nmsg, true, &ids);
  if (n < 0) return -1;
  if (n + 1 > kiln_llm_n_ctx(c->s.m)) {
    free(ids);
    return 1;
  }
  int64_t same = 0;
  while (same < n - 1 && same < c->ncached && ids[same] == c->cached[same])
    same++;
  int rc = kiln_llm_rewind(c->s.m, same);
  for (int64_t i = same; rc == 0 && i < n; i++)
    kiln_sampler_accept(c->smp, ids[i]);
  if (rc == 0) rc = kiln_llm_eval(c->s.m, ids + same, n - same, c->s.logits, false);
  chat_set_cached(c, rc == 0 ? ids : NULL, rc == 0 ? n : 0);
  if (rc) free(ids);
  return rc;
}

static int chat_turn(chat *c, const char *line) {
  int before = c->nmsg;
  bool ok = true;
  if (!c->nmsg && c->system && *c->system) ok = chat_push(c, "system", strdup(c->system));
  if (ok) ok = chat_push(c, "user", strdup(line));
  int rc = ok ? chat_feed(c) : -1;
  if (rc) { /* the turn is not part of the conversation */
    chat_pop_to(c, before);
    if (!ok) fprintf(stderr, "kiln: chat: out of memory\n");
    return rc;
  }
  bool eog, full;
  reply r = {0};
  int64_t got = stream(&c->s, c->smp, c->max_reply, &eog, &full, &r);
  printf("\n");
  fflush(stdout);
  if (got >= 0 && r.n) { /* the reply's tokens follow the prompt in the cache */
    int32_t *all = realloc(c->cached, sizeof(int32_t) * (size_t)(c->ncached + r.n));
    if (all) {
      memcpy(all + c->ncached, r.ids, sizeof(int32_t) * (size_t)r.n);
      c->cached = all, c->ncached += r.n;
    } else {
      chat_set_cached(c, NULL, 0); /* forget it: the next turn is evaluated from the start */
    }
  }
  free(r.ids);
  if (got < 0) {
    free(r.text);
    return -1;
  }
  if (!chat_push(c, "assistant", r.text ? r.text : strdup(""))) return -1;
  return full ? 1 : 0;
}

static void chat_reset(chat *c) {
  kiln_llm_rewind(c->s.m, 0);
  kiln_sampler_reset(c->smp);
  chat_pop_to(c, 0);
  chat_set_cached(c, NULL, 0);
}

int cmd_chat(int argc, char **argv) {
  llm_opts o;
  int rc = parse_llm_opts("chat", chat_usage, argc, argv, &o);
  if (rc >= 0) return rc;
  chat c = {0};
  c.system = o.system;
  c.max_reply = o.n_predict < 0 ? 1 << 20 : o.n_predict;
  if (o.n_ctx == 0) o.n_ctx = 4096;
  if ((rc = session_open(&c.s, "chat", &o)) >= 0) return rc;
  const char *jinja = kiln_gguf_get_str(kiln_llm_gguf(c.s.m), "tokenizer.chat_template");
  c.tmpl = kiln_chat_open(jinja, c.s.tok, o.chat_template);
  c.smp = c.tmpl ? kiln_sampler_new(&o.sp) : NULL;
  if (!c.smp) {
    if (o.chat_template)
      rc = usage_error("chat: %s", kiln_error());
    else
      rc = usage_error("chat: the model's chat template: %s (pass a built-in one with "
                       "--chat-template NAME)",
                       kiln_error());
    kiln_chat_free(c.tmpl), session_close(&c.s);
    return rc;
  }
  fprintf(
      stderr,
      "kiln: chat with %s (template %s, context %lld tokens); /reset starts over, /exit quits\n",
      o.model, kiln_chat_name(c.tmpl), (long long)kiln_llm_n_ctx(c.s.m));
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  rc = EXIT_OK;
  bool tty = isatty(0) && isatty(1);
  for (;;) {
    if (tty) {
      fputs("> ", stdout);
      fflush(stdout);
    }
    if ((len = getline(&line, &cap, stdin)) < 0) break;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
      line[--len] = 0;
    if (!strcmp(line, "/exit") || !strcmp(line, "/quit")) break;
    if (!strcmp(line, "/reset")) {
      chat_reset(&c);
      fprintf(stderr, "kiln: conversation reset\n");
      continue;
    }
    if (!len) continue;
    int t = chat_turn(&c, line);
    if (t < 0) {
      rc = runtime_error("chat");
      break;
    }
    if (t == 1)
      fprintf(stderr,
              "kiln: the context is full (%lld tokens); type /reset to start a new "
              "conversation (or run with a larger --ctx)\n",
              (long long)kiln_llm_n_ctx(c.s.m));
  }
  free(line);
  chat_reset(&c);
  free(c.msgs);
  kiln_chat_free(c.tmpl);
  kiln_sampler_free(c.smp);
  session_close(&c.s);
  return rc;
}

/* ---- kiln bench llm ---------------------------------------------------------------------- */
const char bench_llm_usage[] =
    "[-m MODEL] [-p PROMPT_TOKENS] [-n GEN_TOKENS] [--batch N] [--runs R] [--device D]\n"
    "       kiln bench llm --preset llama-7b|llama-13b|llama-70b|tiny --random "
    "[--dtype f16|q4_0] [-n GEN_TOKENS] [--ctx 512] [--runs R] [--device D]";

/* Batch-1 decode of a random model of a preset's shape: tokens/s and the weight bandwidth it
 * reaches (bytes of weights read per token times tokens/s). */
static int bench_random(const llm_opts *o) {
  kiln_llm_shape sh;
  if (kiln_llm_preset(o->preset, &sh) < 0) return usage_error("bench llm: %s", kiln_error());
  int type = o->dtype && !strcmp(o->dtype, "q4_0") ? 2 : 1;
  long n = o->n_predict < 0 ? 32 : o->n_predict, ctx = o->n_ctx ? o->n_ctx : 512;
  if (n + 2 > ctx) return usage_error("bench llm: -n %ld does not fit --ctx %ld", n, ctx);
  double t0 = now_seconds();
  kiln_llm *m = kiln_llm_random(&sh, type, 1, ctx);
  if (!m) return runtime_error("bench llm");
  double load = now_seconds() - t0, tg[100];
  int64_t V = kiln_llm_n_vocab(m);
  float *logits = malloc(sizeof(float) * (size_t)V);
  int rc = logits ? EXIT_OK : runtime_error("bench llm");
  for (long r = -1; r < o->runs && rc == EXIT_OK; r++) { /* run -1 warms up (compiles) */
    kiln_llm_rewind(m, 0);
    int32_t tok = 1;
    if (kiln_llm_eval(m, &tok, 1, logits, false) < 0) rc = runtime_error("bench llm");
    double t1 = now_seconds();
    for (long i = 0; i < n && rc == EXIT_OK; i++) {
      tok = (int32_t)((i * 7919 + 13) % V); /* the work does not depend on the ids */
      if (kiln_llm_eval(m, &tok, 1, logits, false) < 0) rc = runtime_error("bench llm");
    }
    if (r >= 0) tg[r] = (double)n / (now_seconds() - t1);
  }
  if (rc == EXIT_OK) {
    double tps = median(tg, (int)o->runs), gb = kiln_llm_weight_bytes(m) * 1e-9;
    printf("model: %s, random %s weights (%.3f GB read per token), %s\n", o->preset,
           type == 2 ? "q4_0" : "f16", gb, kiln_get_device());
    printf("build: %.3f s\n", load);
    printf("tg%ld: %.2f tok/s (median of %ld), %.1f GB/s of weights\n", n, tps, o->runs, gb * tps);
  }
  free(logits);
  kiln_llm_free(m);
  return rc;
}

static int32_t argmax(const float *l, int64_t n) {
  int32_t best = 0;
  for (int64_t j = 1; j < n; j++)
    if (l[j] > l[best]) best = (int32_t)j;
  return best;
}

/* --batch N: N sequences of one model, each given the prompt in turn, then decoding together
 * (one step for all of them: the weights are read once per step); aggregate tokens/s. */
static int bench_batch(const llm_opts *o) {
  double t0 = now_seconds();
  kiln_llm *m = kiln_llm_load_seqs(o->model, o->n_prompt + o->n_predict + 1, (int)o->batch);
  if (!m) return runtime_error("bench llm");
  double load = now_seconds() - t0, pp[100], tg[100];
  int N = (int)o->batch;
  int64_t V = kiln_llm_n_vocab(m);
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)o->n_prompt), *next = malloc(sizeof(int32_t) * N);
  int *seqs = malloc(sizeof(int) * N);
  float *logits = malloc(sizeof(float) * (size_t)V * N);
  int rc = ids && next && seqs && logits ? EXIT_OK : runtime_error("bench llm");
  for (long r = -1; r < o->runs && rc == EXIT_OK; r++) { /* run -1 warms up (compiles) */
    double t1 = now_seconds();
    for (int q = 0; q < N && rc == EXIT_OK; q++) { /* a different prompt per sequence */
      for (long i = 0; i < o->n_prompt; i++)
        ids[i] = (int32_t)((i * 7919 + 13 + q * 104729) % V);
      seqs[q] = q;
      if (kiln_llm_seq_rewind(m, q, 0) < 0 ||
          kiln_llm_seq_eval(m, q, ids, o->n_prompt, logits + q * V, false) < 0)
        rc = runtime_error("bench llm");
    }
    double t2 = now_seconds();
    for (long i = 0; i < o->n_predict && rc == EXIT_OK; i++) {
      for (int q = 0; q < N; q++) /* greedy, so every run does the same work */
        next[q] = argmax(logits + q * V, V);
      if (kiln_llm_decode(m, N, seqs, next, logits) < 0) rc = runtime_error("bench llm");
    }
    double t3 = now_seconds();
    if (r >= 0)
      pp[r] = (double)(o->n_prompt * N) / (t2 - t1), tg[r] = (double)(o->n_predict * N) / (t3 - t2);
  }
  if (rc == EXIT_OK) {
    printf("model: %s, %d sequences\n", o->model, N);
    printf("load: %.3f s\n", load);
    printf("pp%ld: %.2f tok/s (median of %ld, all sequences)\n", o->n_prompt,
           median(pp, (int)o->runs), o->runs);
    printf("tg%ld: %.2f tok/s (median of %ld, all sequences)\n", o->n_predict,
           median(tg, (int)o->runs), o->runs);
  }
  free(ids), free(next), free(seqs), free(logits);
  kiln_llm_free(m);
  return rc;
}

int bench_llm(int argc, char **argv) {
  llm_opts o;
  int rc = parse_llm_opts("bench llm", bench_llm_usage, argc, argv, &o);
  if (rc >= 0) return rc;
  if (o.preset) return bench_random(&o);
  if (o.n_predict < 0) o.n_predict = 64;
  if (o.batch > 1) return bench_batch(&o);
  if (o.n_predict < 0) o.n_predict = 64;
  o.n_ctx = o.n_prompt + o.n_predict + 1;
  session s;
  if ((rc = session_open(&s, "bench llm", &o)) >= 0) return rc;
  int64_t V = kiln_llm_n_vocab(s.m);
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)o.n_prompt);
  for (long i = 0; i < o.n_prompt; i++)
    ids[i] = (int32_t)((i * 7919 + 13) % V);
  double pp[100], tg[100];
  rc = EXIT_OK;
  for (long r = -1; r < o.runs && rc == EXIT_OK; r++) { /* run -1 warms up (compiles) */
    kiln_llm_rewind(s.m, 0);
    double t0 = now_seconds();
    if (kiln_llm_eval(s.m, ids, o.n_prompt, s.logits, false) < 0) rc = runtime_error("bench llm");
    double t1 = now_seconds();
    for (long i = 0; i < o.n_predict && rc == EXIT_OK; i++) {
      int32_t best = argmax(s.logits, V); /* greedy, so every run does the same work */
      if (kiln_llm_eval(s.m, &best, 1, s.logits, false) < 0) rc = runtime_error("bench llm");
    }
    double t2 = now_seconds();
    if (r >= 0) pp[r] = o.n_prompt / (t1 - t0), tg[r] = o.n_predict / (t2 - t1);
  }
  if (rc == EXIT_OK) {
    printf("model: %s\n", o.model);
    printf("load: %.3f s\n", s.load_s);
    printf("pp%ld: %.2f tok/s (median of %ld)\n", o.n_prompt, median(pp, (int)o.runs), o.runs);
    printf("tg%ld: %.2f tok/s (median of %ld)\n", o.n_predict, median(tg, (int)o.runs), o.runs);
  }
  free(ids);
  session_close(&s);
  return rc;
}
