/* server.c — the HTTP side of `kiln serve` on libmicrohttpd: routes, the API key, limits on
 * bodies and connections, prompts tokenized from parsed requests, jobs handed to the worker, and
 * answers as JSON or as a server-sent event stream. Only worker.c calls the engine. */
#define _GNU_SOURCE
#include "internal.h"
#include "serve/serve.h"

#include <arpa/inet.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

extern const unsigned char kn_serve_page[]; /* page.html, embedded by the build */
extern const size_t kn_serve_page_len;

#define SLICE_MS 200 /* how often a waiting request checks that its client is still there */
#define MAX_DISCARD (16u * KS_MAX_BODY) /* bytes of a too large body read before it is refused */

typedef struct {
  ks_worker *w;
  const kiln_tokenizer *tok;
  kiln_chat *tmpl;
  char model[256]; /* the file's name, as /v1/models and every answer give it */
  const char *api_key;
  int timeout_s;
  kiln_sampler_params sp;
  int64_t n_ctx, started;
  uint64_t counter; /* ids and default seeds; atomic */
  bool loopback;    /* listening on a loopback address only */
} server;

/* ---- one request ------------------------------------------------------------------------- */
typedef enum { R_PAGE, R_HEALTH, R_MODELS, R_CHAT, R_COMPLETIONS } route_id;

typedef struct {
  server *srv;
  route_id route;
  ks_buf body;
  size_t body_seen; /* bytes received, kept or not */
  double start;
  ks_request req;
  ks_job *job;
  int64_t n_prompt;
  ks_resp_head head;
  char id[48];
  int fd;
  /* a stream: SSE bytes made but not yet handed to MHD */
  ks_buf sse;
  size_t sse_off;
  bool finished;
  double last_send;
} request;

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t mix64(uint64_t x) { /* splitmix64's finalizer */
  x += 0x9e3779b97f4a7c15u;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9u;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebu;
  return x ^ (x >> 31);
}

static uint64_t fresh_u64(server *s) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  uint64_t c = __atomic_fetch_add(&s->counter, 1, __ATOMIC_RELAXED);
  return mix64(c ^ mix64((uint64_t)t.tv_nsec ^ ((uint64_t)t.tv_sec << 32) ^ (uint64_t)getpid()));
}

/* Whether the client closed its end (checked while it waits for its answer). */
static bool peer_gone(int fd) {
  if (fd < 0) return false;
  struct pollfd p = {.fd = fd, .events = POLLRDHUP};
  return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

/* ---- plain answers ------------------------------------------------------------------------- */
static enum MHD_Result send_body(struct MHD_Connection *c, int status, const char *type,
                                 const void *data, size_t len, bool copy) {
  struct MHD_Response *r = MHD_create_response_from_buffer(
      len, (void *)data, copy ? MHD_RESPMEM_MUST_COPY : MHD_RESPMEM_PERSISTENT);
  if (!r) return MHD_NO;
  MHD_add_response_header(r, "Content-Type", type);
  MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(r, "Cache-Control", "no-store");
  if (status == MHD_HTTP_UNAUTHORIZED) MHD_add_response_header(r, "WWW-Authenticate", "Bearer");
  enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, r);
  MHD_destroy_response(r);
  return rc;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, char *json) {
  if (!json) return MHD_NO; /* out of memory: drop the connection */
  enum MHD_Result rc = send_body(c, status, "application/json", json, strlen(json), true);
  free(json);
  return rc;
}

static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *param,
                                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static enum MHD_Result send_error(struct MHD_Connection *c, int status, const char *param,
                                  const char *fmt, ...) {
  char msg[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return send_json(c, status, ks_error_json(status, msg, param));
}

static enum MHD_Result send_page(struct MHD_Connection *c) {
  struct MHD_Response *r = MHD_create_response_from_buffer(kn_serve_page_len, (void *)kn_serve_page,
                                                           MHD_RESPMEM_PERSISTENT);
  if (!r) return MHD_NO;
  MHD_add_response_header(r, "Content-Type", "text/html; charset=utf-8");
  MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(r, "X-Frame-Options", "DENY");
  /* the page is one file: nothing may load from elsewhere, it only talks to this server */
  MHD_add_response_header(r, "Content-Security-Policy",
                          "default-src 'none'; script-src 'unsafe-inline'; style-src "
                          "'unsafe-inline'; connect-src 'self'; img-src data:; "
                          "frame-ancestors 'none'");
  enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  return rc;
}

/* ---- routes ------------------------------------------------------------------------------ */
static const struct {
  const char *path, *method;
  route_id id;
} routes[] = {
    {"/", "GET", R_PAGE},
    {"/index.html", "GET", R_PAGE},
    {"/health", "GET", R_HEALTH},
    {"/v1/models", "GET", R_MODELS},
    {"/v1/chat/completions", "POST", R_CHAT},
    {"/v1/completions", "POST", R_COMPLETIONS},
};

/* 0 and *id, or the status to answer: 404 unknown path, 405 another method. */
static int find_route(const char *url, const char *method, route_id *id, const char **allowed) {
  for (size_t i = 0; i < sizeof routes / sizeof *routes; i++) {
    if (strcmp(url, routes[i].path)) continue;
    *allowed = routes[i].method;
    bool head = !strcmp(method, "HEAD") && !strcmp(routes[i].method, "GET");
    if (strcmp(method, routes[i].method) && !head) return MHD_HTTP_METHOD_NOT_ALLOWED;
    *id = routes[i].id;
    return 0;
  }
  return MHD_HTTP_NOT_FOUND;
}

/* Constant time in the key's length: the key is not guessed byte by byte from timings. */
static bool key_matches(const char *given, const char *key) {
  size_t gl = strlen(given), kl = strlen(key);
  unsigned char diff = gl != kl;
  for (size_t i = 0; i < kl; i++)
    diff |= (unsigned char)(key[i] ^ (i < gl ? given[i] : 0));
  return diff == 0;
}

static bool authorized(server *s, struct MHD_Connection *c) {
  if (!s->api_key) return true;
  const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
  if (!h || strncasecmp(h, "Bearer ", 7)) return false;
  h += 7;
  while (*h == ' ')
    h++;
  return key_matches(h, s->api_key);
}

/* ---- prompts ------------------------------------------------------------------------------ */
/* The conversation rendered whole: only the template's own text becomes control tokens. */
static int32_t *chat_prompt(server *s, const ks_request *r, int64_t *n, ks_error *e) {
  kiln_chat_msg *m = calloc((size_t)r->nmsg, sizeof *m);
  int32_t *ids = NULL;
  *n = -1;
  for (int i = 0; m && i < r->nmsg; i++)
    m[i] = (kiln_chat_msg){r->msgs[i].role, r->msgs[i].content};
  if (m) *n = kiln_chat_tokenize(s->tmpl, s->tok, m, r->nmsg, true, &ids);
  free(m);
  if (*n >= 0) return ids;
  e->status = m ? 400 : 500;
  snprintf(e->message, sizeof e->message, "messages: %s", m ? kiln_error() : "out of memory");
  snprintf(e->param, sizeof e->param, "messages");
  kiln_clear_error();
  return NULL;
}

/* A completion's prompt: plain text, never read for control tokens. */
static int32_t *text_prompt(server *s, const char *text, int64_t *n, ks_error *e) {
  size_t len = strlen(text);
  int64_t cap = (int64_t)len + 8;
  for (;;) {
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
    *n = ids ? kiln_tokenize(s->tok, text, len, kiln_tokenizer_add_bos(s->tok), false, ids, cap)
             : -1;
    if (*n >= 0 && *n <= cap) return ids;
    free(ids);
    if (*n < 0 || *n > (int64_t)(SIZE_MAX / sizeof(int32_t))) {
      e->status = ids ? 400 : 500;
      snprintf(e->message, sizeof e->message, "prompt: %s", ids ? kiln_error() : "out of memory");
      snprintf(e->param, sizeof e->param, "prompt");
      kiln_clear_error();
      return NULL;
    }
    cap = *n;
  }
}

/* Parses the body into a job and submits it; 0, or the status of the error answered. */
static int start_job(request *q, struct MHD_Connection *c) {
  server *s = q->srv;
  ks_error e = {0};
  kiln_sampler_params sp = s->sp;
  sp.seed = fresh_u64(s) >> 1; /* a request without a seed gets its own */
  ks_kind kind = q->route == R_CHAT ? KS_CHAT : KS_COMPLETION;
  int32_t *ids = NULL;
  if (ks_parse_request(q->body.p, q->body.n, kind, &sp, &q->req, &e) == 0)
    ids = kind == KS_CHAT ? chat_prompt(s, &q->req, &q->n_prompt, &e)
                          : text_prompt(s, q->req.prompt, &q->n_prompt, &e);
  const char *what = kind == KS_CHAT ? "messages" : "prompt";
  if (ids && q->n_prompt == 0) {
    e.status = 400;
    snprintf(e.message, sizeof e.message, "the prompt has no tokens");
    snprintf(e.param, sizeof e.param, "%s", what);
  } else if (ids && q->n_prompt >= s->n_ctx) {
    e.status = 400;
    snprintf(e.message, sizeof e.message,
             "the prompt has %lld tokens but the context holds %lld (one at least must be left "
             "for the reply): shorten the %s",
             (long long)q->n_prompt, (long long)s->n_ctx, what);
    snprintf(e.param, sizeof e.param, "%s", what);
  }
  if (e.status) {
    free(ids);
    send_error(c, e.status, e.param, "%s", e.message);
    return e.status;
  }
  ks_job *j = q->job = ks_job_new();
  if (!j) {
    free(ids);
    send_error(c, 500, NULL, "out of memory");
    return 500;
  }
  j->prompt = ids, j->n_prompt = q->n_prompt, j->max_tokens = q->req.max_tokens;
  j->sp = q->req.sp;
  for (int i = 0; i < q->req.nstop; i++) { /* the job owns its copies: it may outlive q */
    if (!(j->stop[i] = strdup(q->req.stop[i]))) {
      send_error(c, 500, NULL, "out of memory");
      return 500;
    }
    j->nstop = i + 1;
  }
  if (ks_submit(s->w, j) < 0) {
    send_error(c, 503, NULL, "the server is busy or shutting down; try again later");
    return 503;
  }
  uint64_t r = fresh_u64(s);
  snprintf(q->id, sizeof q->id, "%s%016llx%08llx", kind == KS_CHAT ? "chatcmpl-" : "cmpl-",
           (unsigned long long)r, (unsigned long long)(fresh_u64(s) >> 32));
  q->head = (ks_resp_head){q->id, s->model, (int64_t)time(NULL), kind};
  return 0;
}

/* ---- answers ------------------------------------------------------------------------------ */
/* A whole answer: waits for the job here (checking that the client stays), then sends it. */
static enum MHD_Result answer_whole(request *q, struct MHD_Connection *c) {
  ks_buf text = {0};
  MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u); /* generating is not idling */
  while (!ks_job_wait(q->srv->w, q->job, &text, SLICE_MS))
    if (peer_gone(q->fd)) {
      ks_buf_free(&text);
      return MHD_NO; /* closes the connection; completion releases the job */
    }
  const char *finish;
  int64_t n_gen;
  char err[256];
  ks_job_result(q->srv->w, q->job, &finish, &n_gen, err, sizeof err);
  MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, (unsigned)q->srv->timeout_s);
  enum MHD_Result rc;
  if (!finish)
    rc = send_error(c, strstr(err, "shutting down") ? 503 : 500, NULL, "%s", err);
  else
    rc = send_json(
        c, 200,
        ks_response_json(&q->head, text.p ? text.p : "", text.n, finish, q->n_prompt, n_gen));
  ks_buf_free(&text);
  return rc;
}

static int sse_add(request *q, char *json) {
  if (!json) return -1;
  int rc = ks_buf_add(&q->sse, "data: ", 6) | ks_buf_add(&q->sse, json, strlen(json)) |
           ks_buf_add(&q->sse, "\n\n", 2);
  free(json);
  return rc ? -1 : 0;
}

/* Turns what the job produced since the last call into SSE events in q->sse. */
static int sse_collect(request *q, const ks_buf *text, bool done) {
  if (text->n && sse_add(q, ks_chunk_json(&q->head, text->p, text->n, false, NULL)) < 0) return -1;
  if (!done) return 0;
  const char *finish;
  int64_t n_gen;
  char err[256];
  ks_job_result(q->srv->w, q->job, &finish, &n_gen, err, sizeof err);
  q->finished = true;
  if (!finish)
    return sse_add(q, ks_error_json(strstr(err, "shutting down") ? 503 : 500, err, NULL));
  if (sse_add(q, ks_chunk_json(&q->head, NULL, 0, false, finish)) < 0) return -1;
  if (q->req.include_usage && sse_add(q, ks_usage_chunk_json(&q->head, q->n_prompt, n_gen)) < 0)
    return -1;
  return ks_buf_add(&q->sse, "data: [DONE]\n\n", 14);
}

/* MHD asks for the next bytes of a stream. Blocking here is fine: each connection has its own
 * thread. While nothing comes, a comment line now and then keeps the connection from timing out
 * and shows whether the client is still there. */
static ssize_t sse_reader(void *cls, uint64_t pos, char *buf, size_t max) {
  (void)pos;
  request *q = cls;
  double idle_limit = q->srv->timeout_s / 3.0;
  for (;;) {
    if (q->sse_off < q->sse.n) {
      size_t n = q->sse.n - q->sse_off < max ? q->sse.n - q->sse_off : max;
      memcpy(buf, q->sse.p + q->sse_off, n);
      q->sse_off += n;
      q->last_send = now_s();
      return (ssize_t)n;
    }
    q->sse.n = q->sse_off = 0;
    if (q->finished) return MHD_CONTENT_READER_END_OF_STREAM;
    ks_buf text = {0};
    bool done = ks_job_wait(q->srv->w, q->job, &text, SLICE_MS);
    int rc = sse_collect(q, &text, done);
    ks_buf_free(&text);
    if (rc < 0) return MHD_CONTENT_READER_END_WITH_ERROR;
    if (q->sse.n == 0 && peer_gone(q->fd)) return MHD_CONTENT_READER_END_WITH_ERROR;
    if (q->sse.n == 0 && now_s() - q->last_send > idle_limit &&
        ks_buf_add(&q->sse, ": keep-alive\n\n", 14) < 0)
      return MHD_CONTENT_READER_END_WITH_ERROR;
  }
}

static enum MHD_Result answer_stream(request *q, struct MHD_Connection *c) {
  /* the role comes first, before any text: the client sees at once that the answer started */
  if (q->head.kind == KS_CHAT && sse_add(q, ks_chunk_json(&q->head, "", 0, true, NULL)) < 0)
    return MHD_NO;
  q->last_send = now_s();
  struct MHD_Response *r =
      MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, sse_reader, q, NULL);
  if (!r) return MHD_NO;
  MHD_add_response_header(r, "Content-Type", "text/event-stream");
  MHD_add_response_header(r, "Cache-Control", "no-cache");
  MHD_add_response_header(r, "X-Accel-Buffering", "no");
  enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  return rc;
}

static enum MHD_Result answer_get(request *q, struct MHD_Connection *c) {
  switch (q->route) {
  case R_PAGE:
    return send_page(c);
  case R_HEALTH:
    return send_body(c, 200, "application/json", "{\"status\":\"ok\"}", 15, false);
  case R_MODELS:
    return send_json(c, 200, ks_models_json(q->srv->model, q->srv->started));
  default:
    return MHD_NO;
  }
}

/* ---- the MHD callbacks ------------------------------------------------------------------- */
/* First call of a request: route, key, size and type checks before any body is read. Returns
 * 0 to read the body, or 1 when an answer was queued (*rc holds MHD's verdict). */
/* Listening on loopback only, the server answers only requests for a loopback name: a web page
 * whose own name was made to resolve to 127.0.0.1 (DNS rebinding) asks for that name, and
 * must not get to read answers from here. */
static bool host_allowed(const server *s, struct MHD_Connection *c) {
  const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
  if (!s->loopback || !h) return true; /* no Host: HTTP/1.0, no name asked for */
  const char *end = h[0] == '[' ? strchr(h, ']') : strchr(h, ':');
  size_t n = end ? (size_t)(end - h) + (h[0] == '[') : strlen(h);
  static const char *const names[] = {"localhost", "127.0.0.1", "[::1]"};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++)
    if (strlen(names[i]) == n && !strncasecmp(h, names[i], n)) return true;
  return false;
}

static int first_call(server *s, request *q, struct MHD_Connection *c, const char *url,
                      const char *method, enum MHD_Result *rc) {
  const char *allowed = NULL;
  if (!host_allowed(s, c)) {
    *rc = send_error(c, 403, NULL,
                     "this server listens on loopback only and answers requests for localhost, "
                     "127.0.0.1 or [::1] (start it with --host to serve other names)");
    return 1;
  }
  int st = find_route(url, method, &q->route, &allowed);
  if (st == MHD_HTTP_NOT_FOUND) {
    *rc = send_error(c, 404, NULL, "no such path: %s %s", method, url);
    return 1;
  }
  if (st == MHD_HTTP_METHOD_NOT_ALLOWED) {
    char msg[300];
    snprintf(msg, sizeof msg, "%s wants %s, not %s", url, allowed, method);
    char *json = ks_error_json(405, msg, NULL);
    struct MHD_Response *r =
        json ? MHD_create_response_from_buffer(strlen(json), json, MHD_RESPMEM_MUST_FREE) : NULL;
    if (!r) {
      free(json);
      *rc = MHD_NO;
      return 1;
    }
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, "Allow", allowed);
    *rc = MHD_queue_response(c, MHD_HTTP_METHOD_NOT_ALLOWED, r);
    MHD_destroy_response(r);
    return 1;
  }
  if (!strncmp(url, "/v1/", 4) && !authorized(s, c)) {
    *rc = send_error(c, 401, NULL, "missing or wrong API key: send 'Authorization: Bearer KEY'");
    return 1;
  }
  if (q->route == R_PAGE || q->route == R_HEALTH || q->route == R_MODELS) {
    *rc = answer_get(q, c);
    return 1;
  }
  /* a body somewhat too large is read and dropped, so that a client sending it all before it
   * reads sees the 413; a huge one is answered at once and the connection closed */
  const char *len = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
  if (len && strtoull(len, NULL, 10) > MAX_DISCARD) {
    *rc = send_error(c, 413, NULL, "the request body is larger than %u bytes", KS_MAX_BODY);
    return 1;
  }
  /* a browser cannot send application/json cross-site without asking first: no other page
   * can make a visitor's browser run requests here */
  const char *type = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Type");
  if (!type || strncasecmp(type, "application/json", 16)) {
    *rc =
        send_error(c, 415, NULL, "the request body must be JSON (Content-Type: application/json)");
    return 1;
  }
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
  q->fd = ci ? ci->connect_fd : -1;
  return 0;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
  (void)version;
  server *s = cls;
  request *q = *con_cls;
  if (!q) {
    if (!(q = calloc(1, sizeof *q))) return MHD_NO;
    q->srv = s, q->fd = -1, q->start = now_s();
    *con_cls = q;
    enum MHD_Result rc;
    return first_call(s, q, c, url, method, &rc) ? rc : MHD_YES;
  }
  if (*upload_size) { /* a piece of the body */
    q->body_seen += *upload_size;
    if (q->body_seen > MAX_DISCARD) return MHD_NO;
    if (q->body_seen <= KS_MAX_BODY && ks_buf_add(&q->body, upload, *upload_size) < 0)
      return MHD_NO;
    *upload_size = 0;
    /* a body trickling in is dropped after a while, however steady the trickle */
    return now_s() - q->start > 4.0 * s->timeout_s ? MHD_NO : MHD_YES;
  }
  if (q->job) return MHD_NO; /* an answer is queued already; MHD calls no more */
  if (q->body_seen > KS_MAX_BODY)
    return send_error(c, 413, NULL, "the request body is larger than %u bytes", KS_MAX_BODY);
  if (start_job(q, c)) return MHD_YES; /* the error is queued */
  return q->req.stream ? answer_stream(q, c) : answer_whole(q, c);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode why) {
  (void)c, (void)why;
  server *s = cls;
  request *q = *con_cls;
  if (!q) return;
  ks_job_release(s->w, q->job); /* a job still running is cancelled: its slot is free again */
  ks_buf_free(&q->body);
  ks_buf_free(&q->sse);
  ks_request_free(&q->req);
  free(q);
  *con_cls = NULL;
}

/* ---- start and stop ---------------------------------------------------------------------- */
static int g_stop_pipe[2] = {-1, -1};
static volatile sig_atomic_t g_stop_requested;

void kiln_serve_stop(void) {
  g_stop_requested = 1;
  int fd = g_stop_pipe[1];
  if (fd >= 0) (void)!write(fd, "x", 1);
}

void kiln_serve_defaults(kiln_serve_opts *o) {
  memset(o, 0, sizeof *o);
  o->host = "127.0.0.1";
  o->port = 8080;
  o->parallel = 4;
  o->timeout_s = 30;
  kiln_sampler_defaults(&o->sampling);
}

/* A listening socket on host:port, or -1 and an error naming the address. */
static int listen_on(const char *host, int port, char *url, size_t n, bool *loopback) {
  struct addrinfo hints = {
      .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *ai = NULL;
  char ps[16];
  snprintf(ps, sizeof ps, "%d", port);
  int gai = getaddrinfo(host, ps, &hints, &ai);
  if (gai) {
    kn_err("serve: cannot resolve host '%s': %s", host, gai_strerror(gai));
    return -1;
  }
  int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
  if (fd >= 0) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
    kn_err("serve: cannot listen on %s port %d: %s", host, port, strerror(errno));
    if (fd >= 0) close(fd);
    freeaddrinfo(ai);
    return -1;
  }
  struct sockaddr_storage sa;
  socklen_t sl = sizeof sa;
  char addr[INET6_ADDRSTRLEN] = "?";
  int real = port;
  if (getsockname(fd, (struct sockaddr *)&sa, &sl) == 0) {
    if (sa.ss_family == AF_INET6) {
      struct sockaddr_in6 *a = (struct sockaddr_in6 *)&sa;
      inet_ntop(AF_INET6, &a->sin6_addr, addr, sizeof addr), real = ntohs(a->sin6_port);
      *loopback = IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
    } else {
      struct sockaddr_in *a = (struct sockaddr_in *)&sa;
      inet_ntop(AF_INET, &a->sin_addr, addr, sizeof addr), real = ntohs(a->sin_port);
      *loopback = (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    }
  }
  snprintf(url, n, sa.ss_family == AF_INET6 ? "http://[%s]:%d" : "http://%s:%d", addr, real);
  freeaddrinfo(ai);
  return fd;
}

static int check_opts(const kiln_serve_opts *o) {
  if (!o || !o->model) return kn_err("serve: no model given"), -1;
  if (o->port < 0 || o->port > 65535) return kn_err("serve: port %d: want 0..65535", o->port), -1;
  if (o->parallel < 1 || o->parallel > KS_MAX_SLOTS)
    return kn_err("serve: parallel %d: want 1..%d", o->parallel, KS_MAX_SLOTS), -1;
  if (o->timeout_s < 1 || o->timeout_s > 86400)
    return kn_err("serve: timeout %d s: want 1..86400", o->timeout_s), -1;
  if (o->api_key && !*o->api_key) return kn_err("serve: the API key is empty"), -1;
  kiln_sampler *probe = kiln_sampler_new(&o->sampling); /* its message names the field */
  if (!probe) return -1;
  kiln_sampler_free(probe);
  return 0;
}

/* Stops taking connections, lets those open send what they have (the jobs are all ended) for
 * up to two seconds, then stops the daemon. */
static void drain(struct MHD_Daemon *d) {
  MHD_socket lfd = MHD_quiesce_daemon(d);
  for (int i = 0; i < 20; i++) {
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
    if (!info || info->num_connections == 0) break;
    struct timespec t = {0, 100000000L};
    nanosleep(&t, NULL);
  }
  MHD_stop_daemon(d);
  if (lfd != MHD_INVALID_SOCKET) close(lfd);
}

static const char *base_name(const char *path) {
  const char *b = strrchr(path, '/');
  return b ? b + 1 : path;
}

/* The template: a built-in asked for by name, else the model's own, else ChatML. */
static int pick_template(server *s, const kiln_serve_opts *o) {
  s->tmpl = kiln_chat_open(ks_worker_chat_template_jinja(s->w), ks_worker_tokenizer(s->w),
                           o->chat_template);
  if (!s->tmpl && !o->chat_template) { /* the file's own failed: say how to run anyway */
    char why[512];
    snprintf(why, sizeof why, "%s", kiln_error());
    kiln_clear_error();
    kn_err("the model's %s (pass a built-in one with --chat-template NAME)", why);
  }
  return s->tmpl ? 0 : -1;
}

int kiln_serve(const kiln_serve_opts *o) {
  if (check_opts(o) < 0) return -1;
  server s = {.api_key = o->api_key, .timeout_s = o->timeout_s, .sp = o->sampling};
  snprintf(s.model, sizeof s.model, "%s", base_name(o->model));
  char url[128];
  int lfd = listen_on(o->host ? o->host : "127.0.0.1", o->port, url, sizeof url, &s.loopback);
  if (lfd < 0) return -1;
  if (pipe2(g_stop_pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
    kn_err("serve: pipe: %s", strerror(errno));
    close(lfd);
    return -1;
  }
  int rc = -1;
  s.w = ks_worker_start(o->model, o->parallel, o->n_ctx);
  struct MHD_Daemon *d = NULL;
  if (s.w && pick_template(&s, o) == 0) {
    s.tok = ks_worker_tokenizer(s.w);
    s.n_ctx = ks_worker_n_ctx(s.w);
    s.started = (int64_t)time(NULL);
    d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD |
                             MHD_USE_POLL | MHD_USE_ITC,
                         0, NULL, NULL, on_request, &s, MHD_OPTION_LISTEN_SOCKET, lfd,
                         MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)o->timeout_s,
                         MHD_OPTION_CONNECTION_LIMIT, 256u, MHD_OPTION_NOTIFY_COMPLETED,
                         on_completed, &s, MHD_OPTION_END);
    if (!d) kn_err("serve: the HTTP server did not start on %s", url);
  }
  if (d) {
    lfd = -1; /* the daemon owns it now */
    if (o->on_listen) o->on_listen(url, o->on_listen_arg);
    while (!g_stop_requested) {
      struct pollfd p = {.fd = g_stop_pipe[0], .events = POLLIN};
      poll(&p, 1, 1000);
    }
    rc = 0;
  }
  /* stop: end every job (waiting clients get their answer or error), then the HTTP threads,
   * then the engine */
  ks_worker_stop(s.w);
  if (d) drain(d);
  ks_worker_free(s.w);
  kiln_chat_free(s.tmpl);
  if (lfd >= 0) close(lfd);
  int w = g_stop_pipe[1];
  g_stop_pipe[1] = -1;
  close(w);
  close(g_stop_pipe[0]);
  g_stop_pipe[0] = -1;
  g_stop_requested = 0;
  return rc;
}
