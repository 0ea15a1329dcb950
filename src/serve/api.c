/* api.c — the OpenAI-shaped surface of `kiln serve` as pure functions: a request body to a
 * checked ks_request (or a 400 naming the field), the JSON of answers, chunks and errors, and
 * the matcher that cuts text at stop strings split over tokens. No I/O, no engine calls. */
#include "serve/serve.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- buffers ------------------------------------------------------------------------------ */
int ks_buf_add(ks_buf *b, const void *data, size_t n) {
  if (n == 0) return 0;
  if (n > SIZE_MAX - b->n - 1) return -1;
  if (b->n + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + n + 1)
      cap = cap > SIZE_MAX / 2 ? b->n + n + 1 : cap * 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p, b->cap = cap;
  }
  memcpy(b->p + b->n, data, n);
  b->n += n;
  b->p[b->n] = '\0'; /* always a C string too */
  return 0;
}

void ks_buf_free(ks_buf *b) {
  free(b->p);
  b->p = NULL, b->n = b->cap = 0;
}

/* ---- UTF-8 -------------------------------------------------------------------------------- */
/* Strict: no overlong forms, no surrogates, nothing above U+10FFFF. */
bool ks_utf8_valid(const char *str, size_t n) {
  const unsigned char *s = (const unsigned char *)str;
  for (size_t i = 0; i < n;) {
    unsigned c = s[i];
    size_t len;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80) {
      i++;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF)
      len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0; /* overlong */
      if (c == 0xED) hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90; /* overlong */
      if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
    } else
      return false;
    if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) return false;
    for (size_t k = 2; k < len; k++)
      if ((s[i + k] & 0xC0) != 0x80) return false;
    i += len;
  }
  return true;
}

/* ---- request parsing ---------------------------------------------------------------------- */
static int fail(ks_error *e, int status, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(ks_error *e, int status, const char *param, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->message, sizeof e->message, fmt, ap);
  va_end(ap);
  snprintf(e->param, sizeof e->param, "%s", param ? param : "");
  e->status = status;
  return -1;
}

static const cJSON *field(const cJSON *o, const char *key) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return v && !cJSON_IsNull(v) ? v : NULL; /* null means "not given", as OpenAI reads it */
}

/* A number field in [lo, hi]; 0 when absent (*out kept), 1 when read, -1 on error. */
static int get_real(const cJSON *o, const char *key, double lo, double hi, double *out,
                    ks_error *e) {
  const cJSON *v = field(o, key);
  if (!v) return 0;
  if (!cJSON_IsNumber(v)) return fail(e, 400, key, "'%s' must be a number", key);
  double d = v->valuedouble;
  if (!isfinite(d) || d < lo || d > hi)
    return fail(e, 400, key, "'%s' must be between %g and %g, got %g", key, lo, hi, d);
  *out = d;
  return 1;
}

static int get_int(const cJSON *o, const char *key, double lo, double hi, int64_t *out,
                   ks_error *e) {
  double d = 0;
  const cJSON *v = field(o, key);
  if (v &&
      (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble != floor(v->valuedouble)))
    return fail(e, 400, key, "'%s' must be an integer", key);
  int rc = get_real(o, key, lo, hi, &d, e);
  if (rc == 1) *out = (int64_t)d;
  return rc;
}

static int get_bool(const cJSON *o, const char *key, bool *out, ks_error *e) {
  const cJSON *v = field(o, key);
  if (!v) return 0;
  if (!cJSON_IsBool(v)) return fail(e, 400, key, "'%s' must be true or false", key);
  *out = cJSON_IsTrue(v);
  return 1;
}

/* A string field that must be valid UTF-8; *out borrowed from the tree. */
static int get_str(const cJSON *v, const char *param, const char **out, ks_error *e) {
  if (!cJSON_IsString(v) || !v->valuestring)
    return fail(e, 400, param, "'%s' must be a string", param);
  if (!ks_utf8_valid(v->valuestring, strlen(v->valuestring)))
    return fail(e, 400, param, "'%s' is not valid UTF-8", param);
  *out = v->valuestring;
  return 0;
}

static char *dup_str(const char *s, ks_error *e) {
  char *d = strdup(s);
  if (!d) fail(e, 500, NULL, "out of memory");
  return d;
}

/* Fields a client may send that ask for nothing kiln does differently: accepted as long as
 * they hold the value that means "off". */
static bool is_off(const cJSON *v) {
  if (!v || cJSON_IsNull(v) || cJSON_IsFalse(v)) return true;
  if (cJSON_IsArray(v) || cJSON_IsObject(v)) return cJSON_GetArraySize(v) == 0;
  if (cJSON_IsNumber(v)) return v->valuedouble == 0;
  if (cJSON_IsString(v)) return !strcmp(v->valuestring, "") || !strcmp(v->valuestring, "none");
  return false;
}

typedef enum {
  F_USED,    /* read by the parser below */
  F_IGNORED, /* bookkeeping that changes no output (user, metadata, ...) */
  F_OFF,     /* a feature kiln lacks: only its "off" value is accepted */
} field_kind;

typedef struct {
  const char *name;
  field_kind kind;
  unsigned kinds; /* 1 << KS_CHAT | 1 << KS_COMPLETION */
} field_rule;

#define BOTH (1u << KS_CHAT | 1u << KS_COMPLETION)
#define CHAT (1u << KS_CHAT)
#define CMPL (1u << KS_COMPLETION)
static const field_rule rules[] = {
    {"model", F_USED, BOTH},
    {"messages", F_USED, CHAT},
    {"prompt", F_USED, CMPL},
    {"max_tokens", F_USED, BOTH},
    {"max_completion_tokens", F_USED, CHAT},
    {"temperature", F_USED, BOTH},
    {"top_p", F_USED, BOTH},
    {"seed", F_USED, BOTH},
    {"stop", F_USED, BOTH},
    {"presence_penalty", F_USED, BOTH},
    {"frequency_penalty", F_USED, BOTH},
    {"top_k", F_USED, BOTH},
    {"min_p", F_USED, BOTH},
    {"repeat_penalty", F_USED, BOTH},
    {"stream", F_USED, BOTH},
    {"stream_options", F_USED, BOTH},
    {"n", F_USED, BOTH},
    {"response_format", F_USED, CHAT},
    {"tool_choice", F_USED, CHAT},
    {"function_call", F_USED, CHAT},
    {"user", F_IGNORED, BOTH},
    {"metadata", F_IGNORED, CHAT},
    {"store", F_IGNORED, CHAT},
    {"service_tier", F_IGNORED, CHAT},
    {"parallel_tool_calls", F_IGNORED, CHAT},
    {"tools", F_OFF, CHAT},
    {"functions", F_OFF, CHAT},
    {"logprobs", F_OFF, BOTH},
    {"top_logprobs", F_OFF, CHAT},
    {"logit_bias", F_OFF, BOTH},
    {"echo", F_OFF, CMPL},
    {"suffix", F_OFF, CMPL},
    {"audio", F_OFF, CHAT},
    {"prediction", F_OFF, CHAT},
};

static int check_fields(const cJSON *root, ks_kind kind, ks_error *e) {
  for (const cJSON *f = root->child; f; f = f->next) {
    const field_rule *r = NULL;
    for (size_t i = 0; i < sizeof rules / sizeof *rules; i++)
      if (f->string && !strcmp(f->string, rules[i].name) && (rules[i].kinds >> kind & 1))
        r = &rules[i];
    const char *name = f->string && ks_utf8_valid(f->string, strlen(f->string)) ? f->string : "?";
    if (!r) return fail(e, 400, name, "unrecognized request argument supplied: %s", name);
    if (r->kind == F_OFF && !is_off(f))
      return fail(e, 400, name, "'%s' is not supported by this server", name);
  }
  return 0;
}

/* The choices and modes kiln has exactly one of: n = 1, best_of = 1, text responses, no tools. */
static int check_single_choice(const cJSON *root, ks_error *e) {
  int64_t n = 1;
  if (get_int(root, "n", -1e18, 1e18, &n, e) < 0) return -1;
  if (n != 1)
    return fail(e, 400, "n", "'n' must be 1 (one choice per request), got %lld", (long long)n);
  const cJSON *rf = field(root, "response_format");
  if (rf) {
    const cJSON *t = cJSON_IsObject(rf) ? cJSON_GetObjectItemCaseSensitive(rf, "type") : NULL;
    if (!cJSON_IsString(t) || strcmp(t->valuestring, "text"))
      return fail(e, 400, "response_format",
                  "only response_format {\"type\": \"text\"} is supported");
  }
  static const char *const choice_fields[] = {"tool_choice", "function_call"};
  for (int i = 0; i < 2; i++) {
    const cJSON *v = field(root, choice_fields[i]);
    if (v && !(cJSON_IsString(v) &&
               (!strcmp(v->valuestring, "none") || !strcmp(v->valuestring, "auto"))))
      return fail(e, 400, choice_fields[i], "'%s' is not supported by this server",
                  choice_fields[i]);
  }
  return 0;
}

/* content: a string, or an array of {"type": "text", "text": ...} parts (joined). */
static int parse_content(const cJSON *c, int i, ks_message *m, ks_error *e) {
  char param[64];
  snprintf(param, sizeof param, "messages[%d].content", i);
  const char *s;
  if (cJSON_IsString(c)) {
    if (get_str(c, param, &s, e) < 0) return -1;
    return (m->content = dup_str(s, e)) ? 0 : -1;
  }
  if (!cJSON_IsArray(c))
    return fail(e, 400, param, "'%s' must be a string or an array of text parts", param);
  ks_buf b = {0};
  int j = 0;
  for (const cJSON *part = c->child; part; part = part->next, j++) {
    char pp[96];
    snprintf(pp, sizeof pp, "%s[%d]", param, j);
    const cJSON *type =
        cJSON_IsObject(part) ? cJSON_GetObjectItemCaseSensitive(part, "type") : NULL;
    const cJSON *text =
        cJSON_IsObject(part) ? cJSON_GetObjectItemCaseSensitive(part, "text") : NULL;
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "text")) {
      ks_buf_free(&b);
      return fail(e, 400, param,
                  "'%s' must be {\"type\": \"text\", \"text\": ...}: only text "
                  "parts are supported",
                  pp);
    }
    if (get_str(text, param, &s, e) < 0 || ks_buf_add(&b, s, strlen(s)) < 0) {
      ks_buf_free(&b);
      return e->status ? -1 : fail(e, 500, NULL, "out of memory");
    }
  }
  m->content = b.p ? b.p : dup_str("", e);
  return m->content ? 0 : -1;
}

static int parse_messages(const cJSON *root, ks_request *r, ks_error *e) {
  const cJSON *ms = field(root, "messages");
  if (!ms) return fail(e, 400, "messages", "'messages' is required");
  if (!cJSON_IsArray(ms)) return fail(e, 400, "messages", "'messages' must be an array");
  int n = cJSON_GetArraySize(ms);
  if (n < 1) return fail(e, 400, "messages", "'messages' must not be empty");
  r->msgs = calloc((size_t)n, sizeof *r->msgs);
  if (!r->msgs) return fail(e, 500, NULL, "out of memory");
  static const char *const roles[] = {"system", "user", "assistant"};
  int i = 0;
  for (const cJSON *m = ms->child; m; m = m->next, i++) {
    char param[64];
    snprintf(param, sizeof param, "messages[%d]", i);
    if (!cJSON_IsObject(m)) return fail(e, 400, param, "'%s' must be an object", param);
    snprintf(param, sizeof param, "messages[%d].role", i);
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
    if (!cJSON_IsString(role)) return fail(e, 400, param, "'%s' must be a string", param);
    for (int k = 0; k < 3; k++)
      if (!strcmp(role->valuestring, roles[k])) r->msgs[i].role = roles[k];
    if (!r->msgs[i].role)
      return fail(e, 400, param, "'%s' must be 'system', 'user' or 'assistant'", param);
    for (const char *const *f = (const char *const[]){"tool_calls", "function_call", NULL}; *f; f++)
      if (!is_off(cJSON_GetObjectItemCaseSensitive(m, *f))) {
        snprintf(param, sizeof param, "messages[%d].%s", i, *f);
        return fail(e, 400, param, "'%s' is not supported by this server", param);
      }
    r->nmsg = i + 1; /* from here on, ks_request_free frees this message */
    if (parse_content(cJSON_GetObjectItemCaseSensitive(m, "content"), i, &r->msgs[i], e) < 0)
      return -1;
  }
  return 0;
}

static int parse_prompt(const cJSON *root, ks_request *r, ks_error *e) {
  const cJSON *p = field(root, "prompt");
  if (!p) return fail(e, 400, "prompt", "'prompt' is required");
  if (cJSON_IsArray(p) && cJSON_GetArraySize(p) == 1 && cJSON_IsString(p->child))
    p = p->child; /* ["text"]: one prompt */
  else if (!cJSON_IsString(p))
    return fail(e, 400, "prompt", "'prompt' must be a string (one prompt per request)");
  const char *s;
  if (get_str(p, "prompt", &s, e) < 0) return -1;
  return (r->prompt = dup_str(s, e)) ? 0 : -1;
}

static int parse_stop(const cJSON *root, ks_request *r, ks_error *e) {
  const cJSON *st = field(root, "stop");
  if (!st) return 0;
  const cJSON *one[1] = {st}, *const *list = one;
  const cJSON *items[KS_MAX_STOP];
  int n = 1;
  if (cJSON_IsArray(st)) {
    n = cJSON_GetArraySize(st);
    if (n > KS_MAX_STOP)
      return fail(e, 400, "stop", "'stop' holds at most %d strings, got %d", KS_MAX_STOP, n);
    int i = 0;
    for (const cJSON *s = st->child; s; s = s->next)
      items[i++] = s;
    list = items;
  }
  for (int i = 0; i < n; i++) {
    const char *s;
    if (get_str(list[i], "stop", &s, e) < 0) return -1;
    if (!*s) return fail(e, 400, "stop", "'stop' strings must not be empty");
    if (!(r->stop[r->nstop] = dup_str(s, e))) return -1;
    r->nstop++;
  }
  return 0;
}

static int parse_sampling(const cJSON *root, ks_request *r, ks_error *e) {
  kiln_sampler_params *sp = &r->sp;
  int64_t k = sp->top_k, seed = 0;
  if (get_real(root, "temperature", 0, 2, &sp->temperature, e) < 0 ||
      get_real(root, "top_p", 0, 1, &sp->top_p, e) < 0 ||
      get_real(root, "min_p", 0, 1, &sp->min_p, e) < 0 ||
      get_real(root, "presence_penalty", -2, 2, &sp->presence_penalty, e) < 0 ||
      get_real(root, "frequency_penalty", -2, 2, &sp->frequency_penalty, e) < 0 ||
      get_real(root, "repeat_penalty", 1e-6, 100, &sp->repeat_penalty, e) < 0 ||
      get_int(root, "top_k", 0, 1 << 30, &k, e) < 0)
    return -1;
  if (sp->top_p < 1e-9) sp->top_p = 1e-9; /* top_p 0: only the likeliest token */
  sp->top_k = (int)k;
  int rc = get_int(root, "seed", -9.2e18, 9.2e18, &seed, e);
  if (rc < 0) return -1;
  if (rc == 1) sp->seed = (uint64_t)seed;
  return 0;
}

static int parse_limits(const cJSON *root, ks_request *r, ks_error *e) {
  r->max_tokens = -1;
  const char *which = r->kind == KS_CHAT && field(root, "max_completion_tokens")
                          ? "max_completion_tokens"
                          : "max_tokens";
  if (get_int(root, which, 1, 9e15, &r->max_tokens, e) < 0) return -1;
  if (get_bool(root, "stream", &r->stream, e) < 0) return -1;
  const cJSON *so = field(root, "stream_options");
  if (so && !cJSON_IsObject(so))
    return fail(e, 400, "stream_options", "'stream_options' must be an object");
  if (so && get_bool(so, "include_usage", &r->include_usage, e) < 0) return -1;
  return 0;
}

int ks_parse_request(const char *body, size_t len, ks_kind kind, const kiln_sampler_params *sp,
                     ks_request *r, ks_error *e) {
  memset(r, 0, sizeof *r);
  memset(e, 0, sizeof *e);
  r->kind = kind;
  r->sp = *sp;
  if (!body || len == 0) return fail(e, 400, NULL, "the request body is empty: want a JSON object");
  if (!ks_utf8_valid(body, len)) return fail(e, 400, NULL, "the request body is not valid UTF-8");
  cJSON *root = cJSON_ParseWithLength(body, len);
  if (!root) return fail(e, 400, NULL, "the request body is not valid JSON");
  int rc = -1;
  if (!cJSON_IsObject(root))
    fail(e, 400, NULL, "the request body must be a JSON object");
  else if (check_fields(root, kind, e) == 0 && check_single_choice(root, e) == 0) {
    const cJSON *model = field(root, "model");
    const char *s;
    if (model && get_str(model, "model", &s, e) < 0)
      ;
    else if ((kind == KS_CHAT ? parse_messages(root, r, e) : parse_prompt(root, r, e)) == 0 &&
             parse_stop(root, r, e) == 0 && parse_sampling(root, r, e) == 0 &&
             parse_limits(root, r, e) == 0)
      rc = 0;
  }
  cJSON_Delete(root);
  if (rc < 0) ks_request_free(r);
  return rc;
}

void ks_request_free(ks_request *r) {
  for (int i = 0; i < r->nmsg; i++)
    free(r->msgs[i].content);
  free(r->msgs);
  free(r->prompt);
  for (int i = 0; i < r->nstop; i++)
    free(r->stop[i]);
  memset(r, 0, sizeof *r);
}

/* ---- response JSON ------------------------------------------------------------------------ */
static char *print_free(cJSON *o) {
  char *s = o ? cJSON_PrintUnformatted(o) : NULL;
  cJSON_Delete(o);
  return s;
}

/* cJSON strings are C strings: text with its length becomes a copy with a terminator. */
static cJSON *string_n(const char *text, size_t len) {
  char *t = malloc(len + 1);
  if (!t) return NULL;
  memcpy(t, text, len);
  t[len] = '\0';
  cJSON *s = cJSON_CreateString(t);
  free(t);
  return s;
}

char *ks_error_json(int status, const char *message, const char *param) {
  const char *type = status == 401   ? "authentication_error"
                     : status == 404 ? "not_found_error"
                     : status >= 500 ? "server_error"
                                     : "invalid_request_error";
  cJSON *o = cJSON_CreateObject(), *err = cJSON_AddObjectToObject(o, "error");
  cJSON_AddStringToObject(err, "message", message);
  cJSON_AddStringToObject(err, "type", type);
  if (param && *param)
    cJSON_AddStringToObject(err, "param", param);
  else
    cJSON_AddNullToObject(err, "param");
  cJSON_AddNullToObject(err, "code");
  return print_free(o);
}

static cJSON *head_object(const ks_resp_head *h, const char *object) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "id", h->id);
  cJSON_AddStringToObject(o, "object", object);
  cJSON_AddNumberToObject(o, "created", (double)h->created);
  cJSON_AddStringToObject(o, "model", h->model);
  return o;
}

static void add_usage(cJSON *o, int64_t prompt_tokens, int64_t completion_tokens) {
  cJSON *u = cJSON_AddObjectToObject(o, "usage");
  cJSON_AddNumberToObject(u, "prompt_tokens", (double)prompt_tokens);
  cJSON_AddNumberToObject(u, "completion_tokens", (double)completion_tokens);
  cJSON_AddNumberToObject(u, "total_tokens", (double)(prompt_tokens + completion_tokens));
}

static void add_finish(cJSON *c, const char *finish) {
  if (finish)
    cJSON_AddStringToObject(c, "finish_reason", finish);
  else
    cJSON_AddNullToObject(c, "finish_reason");
}

/* o's "choices": [{"index": 0}], the choice returned to be filled in. */
static cJSON *first_choice(cJSON *o) {
  cJSON *choices = cJSON_AddArrayToObject(o, "choices"), *c = cJSON_CreateObject();
  cJSON_AddItemToArray(choices, c);
  cJSON_AddNumberToObject(c, "index", 0);
  return c;
}

char *ks_response_json(const ks_resp_head *h, const char *text, size_t len, const char *finish,
                       int64_t prompt_tokens, int64_t completion_tokens) {
  bool chat = h->kind == KS_CHAT;
  cJSON *o = head_object(h, chat ? "chat.completion" : "text_completion"), *c = first_choice(o);
  if (chat) {
    cJSON *m = cJSON_AddObjectToObject(c, "message");
    cJSON_AddStringToObject(m, "role", "assistant");
    cJSON_AddItemToObject(m, "content", string_n(text, len));
  } else
    cJSON_AddItemToObject(c, "text", string_n(text, len));
  cJSON_AddNullToObject(c, "logprobs");
  add_finish(c, finish);
  add_usage(o, prompt_tokens, completion_tokens);
  return print_free(o);
}

char *ks_chunk_json(const ks_resp_head *h, const char *text, size_t len, bool first,
                    const char *finish) {
  bool chat = h->kind == KS_CHAT;
  cJSON *o = head_object(h, chat ? "chat.completion.chunk" : "text_completion");
  cJSON *c = first_choice(o);
  if (chat) {
    cJSON *d = cJSON_AddObjectToObject(c, "delta");
    if (first) cJSON_AddStringToObject(d, "role", "assistant");
    if (text) cJSON_AddItemToObject(d, "content", string_n(text, len));
  } else
    cJSON_AddItemToObject(c, "text", string_n(text ? text : "", text ? len : 0));
  cJSON_AddNullToObject(c, "logprobs");
  add_finish(c, finish);
  return print_free(o);
}

char *ks_usage_chunk_json(const ks_resp_head *h, int64_t prompt_tokens, int64_t completion_tokens) {
  cJSON *o = head_object(h, h->kind == KS_CHAT ? "chat.completion.chunk" : "text_completion");
  cJSON_AddArrayToObject(o, "choices");
  add_usage(o, prompt_tokens, completion_tokens);
  return print_free(o);
}

char *ks_models_json(const char *model, int64_t created) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "object", "list");
  cJSON *data = cJSON_AddArrayToObject(o, "data"), *m = cJSON_CreateObject();
  cJSON_AddItemToArray(data, m);
  cJSON_AddStringToObject(m, "id", model);
  cJSON_AddStringToObject(m, "object", "model");
  cJSON_AddNumberToObject(m, "created", (double)created);
  cJSON_AddStringToObject(m, "owned_by", "kiln");
  return print_free(o);
}

/* ---- stop strings ------------------------------------------------------------------------- */
void ks_stop_init(ks_stopper *s, char *const *stops, int nstop) {
  memset(s, 0, sizeof *s);
  s->stops = stops, s->nstop = nstop;
}

/* Length of the longest tail of t[0..n) that some stop string starts with (shorter than it). */
static size_t partial_tail(const ks_stopper *s, const char *t, size_t n) {
  size_t best = 0;
  for (int k = 0; k < s->nstop; k++) {
    size_t sl = strlen(s->stops[k]);
    for (size_t len = sl - 1 < n ? sl - 1 : n; len > best; len--)
      if (!memcmp(t + n - len, s->stops[k], len)) {
        best = len;
        break;
      }
  }
  return best;
}

int ks_stop_push(ks_stopper *s, const char *text, size_t n, ks_buf *out) {
  if (s->matched) return 1;
  if (ks_buf_add(&s->held, text, n) < 0) return -1;
  const char *h = s->held.p ? s->held.p : "";
  size_t first = s->held.n; /* where the earliest stop string starts */
  for (int k = 0; k < s->nstop; k++) {
    size_t sl = strlen(s->stops[k]);
    for (size_t i = 0; i + sl <= s->held.n && i < first; i++)
      if (!memcmp(h + i, s->stops[k], sl)) {
        first = i;
        break;
      }
  }
  size_t keep = first < s->held.n ? s->held.n - first : partial_tail(s, h, s->held.n);
  if (ks_buf_add(out, h, s->held.n - keep) < 0) return -1;
  if (first < s->held.n) {
    s->matched = true;
    s->held.n = 0;
    return 1;
  }
  if (keep) memmove(s->held.p, h + s->held.n - keep, keep); /* held.p is NULL while empty */
  s->held.n = keep;
  return 0;
}

int ks_stop_finish(ks_stopper *s, ks_buf *out) {
  int rc = s->matched ? 0 : ks_buf_add(out, s->held.p, s->held.n);
  s->held.n = 0;
  return rc;
}

void ks_stop_free(ks_stopper *s) { ks_buf_free(&s->held); }
