/* jinja.h — a small Jinja2 interpreter for LLM chat templates (tokenizer.chat_template).
 * Renders with jinja2's trim_blocks and lstrip_blocks on, as transformers does. Every string
 * keeps which of its bytes came from the caller's data (message contents): the render returns
 * those byte ranges so that a tokenizer can treat them as plain text, never as control tokens. */
#ifndef KN_JINJA_H
#define KN_JINJA_H

#include "internal.h"

/* One message: {role, content}. With nparts > 0, content is instead a list of
 * {"type": "text", "text": parts[i]} dicts (content may then be NULL). */
typedef struct {
  const char *role;
  const char *content;
  const char *const *parts;
  int nparts;
} kn_jinja_msg;

/* Limits that keep a downloaded template from running away. */
#define KN_JINJA_MAX_OUTPUT (16u << 20)  /* bytes of any one string, the output included */
#define KN_JINJA_MAX_MEMORY (256u << 20) /* bytes allocated by one render */
#define KN_JINJA_MAX_ITERS 1000000       /* loop iterations (all loops) and range() length */
#define KN_JINJA_MAX_DEPTH 64 /* macro calls, nested values; parser 4x, evaluation 16x this */

/* The time strftime_now() formats: 0 (the default) for the current local time, else these
 * seconds since the epoch, as UTC. Tests set it to render date-stamped templates reproducibly. */
extern int64_t kn_jinja_now;

/* Renders template_text with messages, add_generation_prompt, bos_token and eos_token (NULL
 * for ""). Returns the malloc'd text, or NULL with kiln_error() set ("chat template: line
 * L:C: ..."). When data_spans is not NULL it gets a malloc'd array (NULL when there are none)
 * of the ranges that came from message contents, sorted and disjoint, and *n_spans their
 * count. */
char *kn_jinja_render(const char *template_text, const kn_jinja_msg *msgs, int n,
                      bool add_generation_prompt, const char *bos_token, const char *eos_token,
                      kn_text_span **data_spans, int *n_spans);

/* kiln_chat_open (chat.c) with the bos_token and eos_token texts given (NULL: none) instead of a
 * tokenizer's. */
kiln_chat *kn_chat_open_texts(const char *jinja, const char *name, const char *bos,
                              const char *eos);

#endif
