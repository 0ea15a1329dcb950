/* serve.h — what the files of `kiln serve` share: the request an HTTP thread parses (api.c),
 * the JSON it answers with, the stop-string matcher, and the job queue between the HTTP threads
 * (server.c) and the one worker thread that owns the engine (worker.c). */
#ifndef KILN_SERVE_H
#define KILN_SERVE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kiln.h"

#define KS_MAX_STOP 4
#define KS_MAX_BODY (1u << 20) /* request bodies above this get 413 */
#define KS_MAX_SLOTS 64

/* ---- growable byte buffer ---------------------------------------------------------------- */
typedef struct {
  char *p;
  size_t n, cap;
} ks_buf;
int ks_buf_add(ks_buf *b, const void *data, size_t n); /* 0, or -1 when out of memory */
void ks_buf_free(ks_buf *b);

/* ---- requests (api.c: pure functions, no I/O) -------------------------------------------- */
typedef enum { KS_CHAT, KS_COMPLETION } ks_kind;

typedef struct {
  const char *role; /* one of the static strings "system", "user", "assistant" */
  char *content;    /* text parts joined */
} ks_message;

typedef struct {
  ks_kind kind;
  ks_message *msgs; /* KS_CHAT: nmsg >= 1 */
  int nmsg;
  char *prompt;       /* KS_COMPLETION */
  int64_t max_tokens; /* -1: as many as the context holds */
  bool stream, include_usage;
  kiln_sampler_params sp;
  char *stop[KS_MAX_STOP];
  int nstop;
} ks_request;

/* Why a request was refused: an HTTP status and an OpenAI-shaped error. */
typedef struct {
  int status;
  char message[512];
  char param[64]; /* "" when no single field is at fault */
} ks_error;

/* Parses a request body of len bytes into *r (zeroed first). sp holds the sampling defaults a
 * request's own fields override. 0, or -1 with *e filled (r then holds nothing to free). */
int ks_parse_request(const char *body, size_t len, ks_kind kind, const kiln_sampler_params *sp,
                     ks_request *r, ks_error *e);
void ks_request_free(ks_request *r);
bool ks_utf8_valid(const char *s, size_t n);

/* ---- responses (api.c): malloc'ed JSON text, NULL when out of memory --------------------- */
typedef struct {
  const char *id, *model;
  int64_t created;
  ks_kind kind;
} ks_resp_head;

char *ks_error_json(int status, const char *message, const char *param);
/* The whole answer of a non-streamed request. */
char *ks_response_json(const ks_resp_head *h, const char *text, size_t len, const char *finish,
                       int64_t prompt_tokens, int64_t completion_tokens);
/* One streamed chunk: text (len bytes; NULL for none) and/or a finish reason; first adds the
 * chat delta's role. */
char *ks_chunk_json(const ks_resp_head *h, const char *text, size_t len, bool first,
                    const char *finish);
char *ks_usage_chunk_json(const ks_resp_head *h, int64_t prompt_tokens, int64_t completion_tokens);
char *ks_models_json(const char *model, int64_t created);

/* ---- stop strings (api.c) -----------------------------------------------------------------
 * Text goes in as the model produces it; what comes out is all of it up to the first stop
 * string, minus a tail that might still become one (held back until decided). */
typedef struct {
  char *const *stops;
  int nstop;
  ks_buf held;
  bool matched;
} ks_stopper;
void ks_stop_init(ks_stopper *s, char *const *stops, int nstop);
/* Appends text; adds what is decided to out. True once a stop string has matched (the text
 * from it on is dropped and later pushes add nothing). -1 when out of memory. */
int ks_stop_push(ks_stopper *s, const char *text, size_t n, ks_buf *out);
/* End of text: what is held back was no stop string after all. */
int ks_stop_finish(ks_stopper *s, ks_buf *out);
void ks_stop_free(ks_stopper *s);

/* ---- jobs: one request between its HTTP thread and the worker (worker.c) ------------------
 * The HTTP thread fills the inputs and submits; the worker appends text and finally sets
 * done. Everything below `lock` is guarded by the worker's mutex; cv wakes the HTTP thread. */
typedef struct ks_job {
  int32_t *prompt; /* owned */
  int64_t n_prompt, max_tokens;
  kiln_sampler_params sp;
  char *stop[KS_MAX_STOP]; /* owned */
  int nstop;
  /* guarded */
  pthread_cond_t cv;
  ks_buf out;         /* text not yet taken by the HTTP thread */
  bool done;          /* no more text will come */
  bool cancelled;     /* the client left: the worker drops the job */
  const char *finish; /* "stop" or "length" when done without error */
  char error[256];    /* set when the engine failed */
  int64_t n_gen;      /* tokens generated */
  int refs;           /* the HTTP thread and, while it holds the job, the worker */
  struct ks_job *next;
} ks_job;

typedef struct ks_worker ks_worker;
/* Loads nslots models of path with n_ctx tokens each (0: 4096 capped at the model's) and the
 * tokenizer, then starts the worker thread. NULL and a kiln error on failure. */
ks_worker *ks_worker_start(const char *path, int nslots, int64_t n_ctx);
/* Ends every job (done, with an error saying the server stops) and joins the thread; later
 * submits fail. Then ks_worker_free, once no HTTP thread uses w, frees the models. */
void ks_worker_stop(ks_worker *w);
void ks_worker_free(ks_worker *w);
const kiln_tokenizer *ks_worker_tokenizer(const ks_worker *w);
int64_t ks_worker_n_ctx(const ks_worker *w);
const char *ks_worker_chat_template_jinja(const ks_worker *w); /* NULL when the file has none */

ks_job *ks_job_new(void);
/* Queues j (taking the worker's reference); -1 when the queue is full or the worker stops. */
int ks_submit(ks_worker *w, ks_job *j);
/* Waits until j has text or is done, or until timeout_ms passes; moves its text to out and
 * returns whether j is done. */
bool ks_job_wait(ks_worker *w, ks_job *j, ks_buf *out, int timeout_ms);
/* The HTTP side lets go of j: the worker drops it if it is still running. */
void ks_job_release(ks_worker *w, ks_job *j);
/* A done job's results, read under the lock. */
void ks_job_result(ks_worker *w, ks_job *j, const char **finish, int64_t *n_gen, char *error,
                   size_t n);

#endif
