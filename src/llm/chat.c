/* chat.c — chat templates: a model's own Jinja template or one of kiln's built-ins (Jinja texts
 * too), rendered for a whole conversation by the interpreter (jinja.c) and tokenized with the
 * message contents as data: only the template's own text becomes control tokens. */
#include "internal.h"
#include "llm/jinja.h"
#include "llm/tokenizer.h"

struct kiln_chat {
  char *name, *jinja, *bos, *eos;
};

/* ---- the built-ins ---------------------------------------------------------------------------
 * Each writes what the model family's published template writes for conversations of system,
 * user and assistant messages (tests/llm/test_chat.c holds them to those templates' output). */
#define CHATML_TURNS                                                                               \
  "{% for m in messages %}{{ '<|im_start|>' ~ m.role ~ '\\n' ~ m.content ~ '<|im_end|>\\n' }}"     \
  "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
#define ALTERNATE(family)                                                                          \
  "{% if (m.role == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('" family               \
  ": the roles must alternate user, assistant, user, ...') }}{% endif %}"

/* clang-format off */
static const struct {
  const char *name, *jinja;
} builtins[] = {
    {"chatml", CHATML_TURNS},
    {"smollm2", /* ChatML with a default system prompt */
     "{% if messages and messages[0].role != 'system' %}{{ '<|im_start|>system\\nYou are a "
     "helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}{% endif %}"
     CHATML_TURNS},
    {"llama3",
     "{% for m in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
     "{{ '<|start_header_id|>' ~ m.role ~ '<|end_header_id|>\\n\\n' ~ (m.content | trim) ~ "
     "'<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
     "{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"},
    {"llama2", /* the system prompt opens the first user turn; the model answers after [/INST] */
     "{% set sys = '' %}{% set turns = messages %}"
     "{% if messages and messages[0].role == 'system' %}"
     "{% set sys = '<<SYS>>\\n' ~ messages[0].content ~ '\\n<</SYS>>\\n\\n' %}"
     "{% set turns = messages[1:] %}{% endif %}"
     "{% for m in turns %}" ALTERNATE("llama2")
     "{% if m.role == 'user' %}"
     "{{ bos_token ~ '[INST] ' ~ ((sys if loop.first else '') ~ m.content).strip() ~ ' [/INST]' }}"
     "{% else %}{{ ' ' ~ m.content.strip() ~ ' ' ~ eos_token }}{% endif %}{% endfor %}"},
    {"zephyr",
     "{% for m in messages %}{{ '<|' ~ m.role ~ '|>\\n' ~ m.content ~ eos_token ~ '\\n' }}"
     "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"},
    {"gemma",
     "{{ bos_token }}{% for m in messages %}{% if m.role == 'system' %}"
     "{{ raise_exception('gemma: the template has no system role (put it in the first user "
     "message)') }}{% endif %}" ALTERNATE("gemma")
     "{{ '<start_of_turn>' ~ ('model' if m.role == 'assistant' else m.role) ~ '\\n' ~ "
     "(m.content | trim) ~ '<end_of_turn>\\n' }}{% endfor %}"
     "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"},
};
/* clang-format on */
#define NBUILTINS ((int)(sizeof builtins / sizeof builtins[0]))

static int builtin_index(const char *name) {
  for (int i = 0; name && i < NBUILTINS; i++)
    if (!strcmp(name, builtins[i].name)) return i;
  kn_sbuf names = {0};
  for (int i = 0; i < NBUILTINS; i++)
    kn_sbuf_printf(&names, "%s%s", i ? ", " : "", builtins[i].name);
  kn_err("chat template: unknown name '%.64s' (known: %s)", name ? name : "(null)", names.s);
  free(names.s);
  return -1;
}
bool kiln_chat_builtin(const char *name) { return builtin_index(name) >= 0; }

/* ---- templates ------------------------------------------------------------------------------- */
static char *dup_n(const char *s, size_t n) {
  char *d = kn_xmalloc(n + 1);
  memcpy(d, s, n);
  d[n] = 0;
  return d;
}
static char *token_text(const kiln_tokenizer *tok, int32_t id) {
  size_t len = 0;
  const char *p = tok && id >= 0 ? kiln_token_piece(tok, id, true, &len) : NULL;
  return dup_n(p ? p : "", p ? len : 0);
}

void kiln_chat_free(kiln_chat *c) {
  if (!c) return;
  free(c->name), free(c->jinja), free(c->bos), free(c->eos);
  free(c);
}

kiln_chat *kn_chat_open_texts(const char *jinja, const char *name, const char *bos,
                              const char *eos) {
  int b = name ? builtin_index(name) : !jinja || !*jinja ? 0 : -1;
  if (name && b < 0) return NULL;
  const char *nm = b >= 0 ? builtins[b].name : "the model's own";
  const char *src = b >= 0 ? builtins[b].jinja : jinja;
  kiln_chat *c = kn_xcalloc(1, sizeof *c);
  c->name = dup_n(nm, strlen(nm)), c->jinja = dup_n(src, strlen(src));
  c->bos = dup_n(bos ? bos : "", bos ? strlen(bos) : 0);
  c->eos = dup_n(eos ? eos : "", eos ? strlen(eos) : 0);
  char *probe = kiln_chat_render(c, &(kiln_chat_msg){"user", "Hi"}, 1, true);
  if (!probe) {
    kiln_chat_free(c);
    return NULL;
  }
  free(probe);
  return c;
}

kiln_chat *kiln_chat_open(const char *jinja, const kiln_tokenizer *tok, const char *name) {
  char *bos = token_text(tok, tok ? kiln_token_bos(tok) : -1);
  char *eos = token_text(tok, tok ? kiln_token_eos(tok) : -1);
  kiln_chat *c = kn_chat_open_texts(jinja, name, bos, eos);
  free(bos), free(eos);
  return c;
}

const char *kiln_chat_name(const kiln_chat *c) { return c ? c->name : NULL; }

/* The rendering and, when spans is not NULL, where the contents lie in it. */
static char *render(const kiln_chat *c, const kiln_chat_msg *msgs, int n, bool gen,
                    kn_text_span **spans, int *nspans) {
  if (!c || n < 0 || (n > 0 && !msgs)) {
    kn_err("chat: %s", !c ? "the template is NULL" : "bad message list");
    return NULL;
  }
  kn_jinja_msg *jm = kn_xcalloc((size_t)(n ? n : 1), sizeof *jm);
  for (int i = 0; i < n; i++) {
    if (!msgs[i].role || !msgs[i].content) {
      kn_err("chat: message %d has no %s", i, msgs[i].role ? "content" : "role");
      free(jm);
      return NULL;
    }
    jm[i] = (kn_jinja_msg){.role = msgs[i].role, .content = msgs[i].content};
  }
  char *text = kn_jinja_render(c->jinja, jm, n, gen, c->bos, c->eos, spans, nspans);
  free(jm);
  return text;
}

char *kiln_chat_render(const kiln_chat *c, const kiln_chat_msg *msgs, int n,
                       bool add_generation_prompt) {
  return render(c, msgs, n, add_generation_prompt, NULL, NULL);
}

int64_t kiln_chat_tokenize(const kiln_chat *c, const kiln_tokenizer *tok, const kiln_chat_msg *msgs,
                           int n, bool add_generation_prompt, int32_t **ids) {
  if (!ids || !tok) {
    kn_err("chat tokenize: %s is NULL", ids ? "the tokenizer" : "ids");
    return -1;
  }
  *ids = NULL;
  kn_text_span *sp = NULL;
  int nsp = 0;
  char *text = render(c, msgs, n, add_generation_prompt, &sp, &nsp);
  if (!text) return -1;
  /* the template's own BOS text (outside the contents) is the BOS token already */
  size_t len = strlen(text), nb = strlen(c->bos);
  bool has_bos = nb && !strncmp(text, c->bos, nb) && !(nsp && sp[0].off == 0);
  bool add_bos = kiln_tokenizer_add_bos(tok) && !has_bos;
  int64_t k = (int64_t)len + 8, cap; /* enough for any text; a second call if not */
  do {
    cap = k;
    free(*ids);
    *ids = malloc(sizeof(int32_t) * (size_t)cap);
    if (!*ids) kn_err("chat tokenize: out of memory for %lld tokens", (long long)cap);
    k = *ids ? kn_tokenize_data(tok, text, len, add_bos, sp, nsp, *ids, cap) : -1;
  } while (k > cap);
  free(text), free(sp);
  if (!*ids || k < 0) {
    free(*ids);
    *ids = NULL;
    return -1;
  }
  return k;
}
