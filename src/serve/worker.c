/* worker.c — the one thread of `kiln serve` that calls the engine: a queue of jobs, slots that
 * are the sequences of one model (each its own KV cache), and a scheduler that interleaves them
 * (prompts fed in chunks, then one batched decode step for every slot that generates). HTTP
 * threads only touch jobs. */
#include "internal.h"
#include "serve/serve.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHUNK 64 /* prompt tokens a slot feeds per scheduler step (the engine's biggest chunk) */
#define MAX_QUEUE 1024   /* waiting jobs beyond this are refused (503) */
#define DEFAULT_CTX 4096 /* tokens per slot unless told */

typedef enum { FREE, PROMPT, DECODE } slot_state;

typedef struct {
  int seq;        /* its sequence of the worker's model */
  int32_t *cache; /* the tokens its KV cache holds: cache[0..n_cache), n_ctx entries */
  int64_t n_cache;
  int64_t n_whole; /* cache[0..n_whole) was read in whole chunks from position 0 (below) */
  float *logits;   /* n_vocab: the last position's, valid in DECODE */
  slot_state state;
  ks_job *job;
  bool fresh;         /* job assigned, not yet set up (engine work happens unlocked) */
  int64_t limit;      /* tokens the job may generate */
  int32_t next;       /* token sampled and to be evaluated this step, or -1 */
  uint64_t last_used; /* scheduler step of its last job: the least recent is reused first */
  kiln_sampler *smp;  /* per job */
  kiln_detok *dt;     /* per job */
  ks_stopper stop;    /* per job */
} slot;

struct ks_worker {
  pthread_mutex_t mu;
  pthread_cond_t cv; /* wakes the worker: a job came or left, or stop */
  pthread_t thread;
  bool running, stopping;
  ks_job *qhead, *qtail;
  int qlen;
  kiln_llm *m; /* one sequence per slot */
  slot *slots;
  int nslots;
  float *logits; /* nslots * n_vocab: a batched decode's */
  kiln_tokenizer *tok;
  int64_t n_ctx, n_vocab;
  char *jinja;
  uint64_t steps;
};

/* ---- jobs ------------------------------------------------------------------------------- */
ks_job *ks_job_new(void) {
  ks_job *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  if (pthread_cond_init(&j->cv, NULL)) {
    free(j);
    return NULL;
  }
  j->refs = 1;
  return j;
}

static void job_unref(ks_job *j) { /* under the lock */
  if (--j->refs > 0) return;
  pthread_cond_destroy(&j->cv);
  ks_buf_free(&j->out);
  free(j->prompt);
  for (int i = 0; i < j->nstop; i++)
    free(j->stop[i]);
  free(j);
}

/* Marks j done (under the lock) and wakes its HTTP thread. */
static void job_done(ks_job *j, const char *finish, const char *error) {
  j->done = true;
  j->finish = finish;
  if (error) snprintf(j->error, sizeof j->error, "%s", error);
  pthread_cond_signal(&j->cv);
}

int ks_submit(ks_worker *w, ks_job *j) {
  pthread_mutex_lock(&w->mu);
  int rc = -1;
  if (!w->stopping && w->qlen < MAX_QUEUE) {
    j->refs++;
    j->next = NULL;
    if (w->qtail)
      w->qtail->next = j;
    else
      w->qhead = j;
    w->qtail = j;
    w->qlen++;
    pthread_cond_signal(&w->cv);
    rc = 0;
  }
  pthread_mutex_unlock(&w->mu);
  return rc;
}

bool ks_job_wait(ks_worker *w, ks_job *j, ks_buf *out, int timeout_ms) {
  pthread_mutex_lock(&w->mu);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += timeout_ms / 1000;
  until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
  while (j->out.n == 0 && !j->done)
    if (pthread_cond_timedwait(&j->cv, &w->mu, &until) == ETIMEDOUT) break;
  bool done = j->done;
  if (j->out.n && ks_buf_add(out, j->out.p, j->out.n) < 0 && !j->done) {
    j->cancelled = true; /* out of memory on our side: give up on the job */
    pthread_cond_signal(&w->cv);
  }
  j->out.n = 0;
  pthread_mutex_unlock(&w->mu);
  return done;
}

void ks_job_release(ks_worker *w, ks_job *j) {
  if (!j) return;
  pthread_mutex_lock(&w->mu);
  if (!j->done) {
    j->cancelled = true;
    pthread_cond_signal(&w->cv);
  }
  job_unref(j);
  pthread_mutex_unlock(&w->mu);
}

void ks_job_result(ks_worker *w, ks_job *j, const char **finish, int64_t *n_gen, char *error,
                   size_t n) {
  pthread_mutex_lock(&w->mu);
  *finish = j->finish;
  *n_gen = j->n_gen;
  snprintf(error, n, "%s", j->error);
  pthread_mutex_unlock(&w->mu);
}

/* ---- slots (engine work: worker thread only, unlocked) ------------------------------------- */
static int64_t common_prefix(const int32_t *a, int64_t na, const int32_t *b, int64_t nb) {
  int64_t i = 0;
  while (i < na && i < nb && a[i] == b[i])
    i++;
  return i;
}

/* How much of a slot's cache a prompt may keep: its common prefix, cut to the whole chunks
 * read from position 0, and at least one token short of the prompt. Those are the positions
 * that reading the prompt afresh computes the same way (whole chunks of CHUNK from position
 * 0): the keys and values of a shorter chunk or of a decode step are the same numbers from
 * other kernels, whose last bits may differ, and with 8-bit activations one such bit can
 * change a token. So an answer is the same however the slot was used before. */
static int64_t reusable(const slot *s, const ks_job *j) {
  int64_t keep = common_prefix(s->cache, s->n_cache, j->prompt, j->n_prompt);
  if (keep > s->n_whole) keep = s->n_whole;
  if (keep >= j->n_prompt) keep = j->n_prompt - 1; /* the last token's logits are needed */
  return keep - keep % CHUNK;
}

/* The free slot whose cache shares the longest reusable prefix with j's prompt (ties: least
 * recently used), or NULL. Under the lock. */
static slot *pick_slot(ks_worker *w, const ks_job *j) {
  slot *best = NULL;
  int64_t best_len = -1;
  for (int i = 0; i < w->nslots; i++) {
    slot *s = &w->slots[i];
    if (s->job) continue;
    int64_t len = reusable(s, j);
    if (len > best_len || (len == best_len && s->last_used < best->last_used))
      best = s, best_len = len;
  }
  return best;
}

/* Sets up a newly assigned slot: keeps the cached prefix, makes the job's sampler, detokenizer
 * and stop matcher. The job's reference now belongs to the slot. */
static int slot_begin(ks_worker *w, slot *s) {
  ks_job *j = s->job;
  int64_t keep = reusable(s, j);
  if (kiln_llm_seq_rewind(w->m, s->seq, keep) < 0) return -1;
  s->n_cache = s->n_whole = keep;
  s->smp = kiln_sampler_new(&j->sp);
  s->dt = kiln_detok_new(w->tok, false);
  if (!s->smp || !s->dt) return -1;
  for (int64_t i = 0; i < j->n_prompt; i++)
    kiln_sampler_accept(s->smp, j->prompt[i]);
  ks_stop_init(&s->stop, j->stop, j->nstop);
  int64_t room = w->n_ctx - j->n_prompt; /* the HTTP side made sure room >= 1 */
  s->limit = j->max_tokens < 0 || j->max_tokens > room ? room : j->max_tokens;
  s->next = -1;
  s->state = PROMPT;
  return 0;
}

/* Ends a slot's job (finish NULL with error set: it failed; both NULL: it was cancelled). Under
 * the lock. The cache stays for the next job that shares its prefix. */
static void slot_end(slot *s, const char *finish, const char *error) {
  if (finish || error) job_done(s->job, finish, error);
  job_unref(s->job);
  s->job = NULL;
  s->state = FREE;
  s->fresh = false;
  kiln_sampler_free(s->smp);
  kiln_detok_free(s->dt);
  ks_stop_free(&s->stop);
  s->smp = NULL, s->dt = NULL;
}

/* An engine error leaves the cache in an unknown state: start it over. */
static void slot_fail(ks_worker *w, slot *s) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s", kiln_error());
  kiln_clear_error();
  kiln_llm_seq_rewind(w->m, s->seq, 0);
  s->n_cache = s->n_whole = 0;
  pthread_mutex_lock(&w->mu);
  slot_end(s, NULL, msg[0] ? msg : "engine error");
  pthread_mutex_unlock(&w->mu);
}

/* Feeds the next chunk of the prompt; the slot decodes once the prompt is all in. */
static int slot_feed(ks_worker *w, slot *s) {
  ks_job *j = s->job;
  int64_t n = j->n_prompt - s->n_cache;
  if (n > CHUNK) n = CHUNK;
  if (kiln_llm_seq_eval(w->m, s->seq, j->prompt + s->n_cache, n, s->logits, false) < 0) return -1;
  memcpy(s->cache + s->n_cache, j->prompt + s->n_cache, sizeof(int32_t) * (size_t)n);
  if (n == CHUNK && s->n_whole == s->n_cache) s->n_whole += n;
  s->n_cache += n;
  if (s->n_cache == j->n_prompt) s->state = DECODE;
  return 0;
}

/* Text of token id (or of what the detokenizer held back, when id is -1 and flush) through the
 * stop matcher into out; 1 when a stop string matched. */
static int slot_text(slot *s, int32_t id, bool flush, ks_buf *out) {
  char buf[256];
  int64_t n;
  int hit = 0;
  while (!hit && (n = flush ? kiln_detok_flush(s->dt, buf, sizeof buf)
                            : kiln_detok_push(s->dt, id, buf, sizeof buf)) > 0) {
    hit = ks_stop_push(&s->stop, buf, (size_t)n, out);
    if (hit < 0) return -1;
    id = -1; /* the rest of this token's text */
  }
  if (!hit && flush && ks_stop_finish(&s->stop, out) < 0) return -1;
  return hit;
}

/* One token of a decoding slot: sample, turn it into text, decide whether the job goes on. */
static int slot_sample(ks_worker *w, slot *s) {
  int32_t id = kiln_sample(s->smp, s->logits, w->n_vocab);
  if (id < 0) return -1;
  ks_buf text = {0};
  const char *finish = NULL;
  int hit = 0;
  if (kiln_token_is_eog(w->tok, id))
    finish = "stop";
  else {
    pthread_mutex_lock(&w->mu);
    s->job->n_gen++;
    int64_t got = s->job->n_gen;
    pthread_mutex_unlock(&w->mu);
    hit = slot_text(s, id, false, &text);
    if (hit == 1)
      finish = "stop";
    else if (hit == 0 && got >= s->limit)
      finish = "length";
    else
      s->next = id;
  }
  if (hit == 0 && finish) hit = slot_text(s, -1, true, &text);
  pthread_mutex_lock(&w->mu);
  if (hit < 0 || (text.n && ks_buf_add(&s->job->out, text.p, text.n) < 0)) {
    s->next = -1;
    slot_end(s, NULL, "out of memory");
  } else {
    if (text.n) pthread_cond_signal(&s->job->cv);
    if (finish) slot_end(s, finish, NULL);
  }
  pthread_mutex_unlock(&w->mu);
  ks_buf_free(&text);
  return 0;
}

/* Evaluates the sampled token of every slot in ss in one batched step: the weights are read
 * once for all of them, and each slot's tokens are what they would be alone. */
static void decode_batch(ks_worker *w, slot **ss, int n) {
  if (!n) return;
  int seqs[KS_MAX_SLOTS];
  int32_t toks[KS_MAX_SLOTS];
  for (int i = 0; i < n; i++)
    seqs[i] = ss[i]->seq, toks[i] = ss[i]->next;
  if (kiln_llm_decode(w->m, n, seqs, toks, w->logits) < 0) {
    char msg[256];
    snprintf(msg, sizeof msg, "%s", kiln_error());
    for (int i = 0; i < n; i++) { /* the step failed as a whole: every slot starts over */
      kn_err("%s", msg);
      slot_fail(w, ss[i]);
    }
    return;
  }
  for (int i = 0; i < n; i++) {
    slot *s = ss[i];
    memcpy(s->logits, w->logits + (size_t)i * (size_t)w->n_vocab,
           sizeof(float) * (size_t)w->n_vocab);
    s->cache[s->n_cache++] = s->next;
    s->next = -1;
  }
}

/* ---- the scheduler ----------------------------------------------------------------------- */
/* Under the lock: drops cancelled jobs, hands queued ones to free slots. Returns whether any
 * slot has work. */
static bool schedule(ks_worker *w) {
  for (int i = 0; i < w->nslots; i++)
    if (w->slots[i].job && w->slots[i].job->cancelled) slot_end(&w->slots[i], NULL, NULL);
  for (ks_job **p = &w->qhead; *p;) {
    ks_job *j = *p;
    slot *s = j->cancelled ? NULL : pick_slot(w, j);
    if (!j->cancelled && !s) break; /* first come, first served */
    *p = j->next;
    if (w->qtail == j) w->qtail = NULL;
    w->qlen--;
    if (s) {
      s->job = j, s->fresh = true, s->last_used = w->steps;
    } else
      job_unref(j);
  }
  if (!w->qhead)
    w->qtail = NULL;
  else if (!w->qtail)
    for (w->qtail = w->qhead; w->qtail->next; w->qtail = w->qtail->next)
      ;
  bool busy = false;
  for (int i = 0; i < w->nslots; i++)
    busy |= w->slots[i].job != NULL;
  return busy;
}

/* Ends every job, running or queued, with an error: the server is stopping. */
static void cancel_all(ks_worker *w) {
  for (int i = 0; i < w->nslots; i++)
    if (w->slots[i].job) slot_end(&w->slots[i], NULL, "the server is shutting down");
  while (w->qhead) {
    ks_job *j = w->qhead;
    w->qhead = j->next;
    job_done(j, NULL, "the server is shutting down");
    job_unref(j);
  }
  w->qtail = NULL, w->qlen = 0;
}

/* One step: set up new jobs, feed one chunk of each prompt, then one token for every slot
 * that decodes. Runs unlocked except where jobs are touched. */
static void step(ks_worker *w) {
  slot *dec[KS_MAX_SLOTS];
  int ndec = 0;
  for (int i = 0; i < w->nslots; i++) {
    slot *s = &w->slots[i];
    if (!s->job) continue; /* only this thread clears or sets s->job between schedules */
    if (s->fresh) {
      s->fresh = false;
      if (slot_begin(w, s) < 0) {
        slot_fail(w, s);
        continue;
      }
    }
    if (s->state == PROMPT && slot_feed(w, s) < 0) {
      slot_fail(w, s);
      continue;
    }
    if (s->state == DECODE) {
      if (slot_sample(w, s) < 0)
        slot_fail(w, s);
      else if (s->job && s->next >= 0)
        dec[ndec++] = s;
    }
  }
  decode_batch(w, dec, ndec);
  w->steps++;
}

static void *worker_main(void *arg) {
  ks_worker *w = arg;
  pthread_mutex_lock(&w->mu);
  for (;;) {
    if (w->stopping) {
      cancel_all(w);
      break;
    }
    if (!schedule(w)) {
      pthread_cond_wait(&w->cv, &w->mu);
      continue;
    }
    pthread_mutex_unlock(&w->mu);
    step(w);
    pthread_mutex_lock(&w->mu);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

/* ---- start and stop ---------------------------------------------------------------------- */
static int load_slots(ks_worker *w, int64_t n_ctx) {
  w->logits = malloc(sizeof(float) * (size_t)w->nslots * (size_t)w->n_vocab);
  if (!w->logits) {
    kn_err("serve: out of memory for %d slots' logits", w->nslots);
    return -1;
  }
  for (int i = 0; i < w->nslots; i++) {
    slot *s = &w->slots[i];
    s->seq = i;
    s->cache = malloc(sizeof(int32_t) * (size_t)n_ctx);
    s->logits = malloc(sizeof(float) * (size_t)w->n_vocab);
    if (!s->cache || !s->logits) {
      kn_err("serve: out of memory for slot %d's %lld-token cache", i, (long long)n_ctx);
      return -1;
    }
  }
  return 0;
}

ks_worker *ks_worker_start(const char *path, int nslots, int64_t n_ctx) {
  if (nslots < 1 || nslots > KS_MAX_SLOTS) {
    kn_err("serve: %d slots: want 1 to %d", nslots, KS_MAX_SLOTS);
    return NULL;
  }
  ks_worker *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  pthread_mutex_init(&w->mu, NULL);
  pthread_cond_init(&w->cv, NULL);
  w->nslots = nslots;
  w->slots = calloc((size_t)nslots, sizeof *w->slots);
  /* one model, a sequence per slot; the model's own context bounds ours */
  if (!w->slots) kn_err("serve: out of memory for %d slots", nslots);
  w->m = w->slots ? kiln_llm_load_seqs(path, n_ctx > 0 ? n_ctx : DEFAULT_CTX, nslots) : NULL;
  int ok = w->m != NULL;
  if (ok) {
    w->n_ctx = kiln_llm_n_ctx(w->m);
    w->n_vocab = kiln_llm_n_vocab(w->m);
    w->tok = kiln_tokenizer_from_gguf(kiln_llm_gguf(w->m));
    const char *jinja = kiln_gguf_get_str(kiln_llm_gguf(w->m), "tokenizer.chat_template");
    w->jinja = jinja ? strdup(jinja) : NULL;
    ok = w->tok && (!jinja || w->jinja);
  }
  if (ok) ok = load_slots(w, w->n_ctx) == 0;
  if (ok) ok = pthread_create(&w->thread, NULL, worker_main, w) == 0;
  if (!ok) {
    ks_worker_free(w);
    return NULL;
  }
  w->running = true;
  return w;
}

void ks_worker_stop(ks_worker *w) {
  if (!w) return;
  pthread_mutex_lock(&w->mu);
  w->stopping = true;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
  if (w->running) pthread_join(w->thread, NULL);
  w->running = false;
}

void ks_worker_free(ks_worker *w) {
  if (!w) return;
  ks_worker_stop(w);
  for (int i = 0; w->slots && i < w->nslots; i++) {
    free(w->slots[i].cache);
    free(w->slots[i].logits);
  }
  free(w->slots);
  free(w->logits);
  kiln_llm_free(w->m);
  kiln_tokenizer_free(w->tok);
  free(w->jinja);
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  free(w);
}

const kiln_tokenizer *ks_worker_tokenizer(const ks_worker *w) { return w->tok; }
int64_t ks_worker_n_ctx(const ks_worker *w) { return w->n_ctx; }
const char *ks_worker_chat_template_jinja(const ks_worker *w) { return w->jinja; }
