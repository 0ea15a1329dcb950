/* chat.c — chat templates: recognizing a model's Jinja chat template by its markers, and
 * rendering one message at a time exactly as the official template renders it inside a whole
 * conversation (so a chat can feed only the new turn to its KV cache). */
#include "internal.h"
#include "llm/tokenizer.h"

typedef struct {
  const char *name;
  const char *eot;
  bool bos;
} tmpl_info;

static const tmpl_info tmpls[KILN_CHAT_NTEMPLATES] = {
    [KILN_CHAT_CHATML] = {"chatml", "<|im_end|>", false},
    [KILN_CHAT_SMOLLM2] = {"smollm2", "<|im_end|>", false},
    [KILN_CHAT_LLAMA3] = {"llama3", "<|eot_id|>", true},
    [KILN_CHAT_LLAMA2] = {"llama2", "</s>", true},
    [KILN_CHAT_ZEPHYR] = {"zephyr", "</s>", false},
    [KILN_CHAT_GEMMA] = {"gemma", "<end_of_turn>", true},
};

#define SMOLLM2_SYSTEM "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

static bool valid(kiln_chat_template t) { return t >= 0 && t < KILN_CHAT_NTEMPLATES; }

const char *kiln_chat_name(kiln_chat_template t) { return valid(t) ? tmpls[t].name : NULL; }
const char *kiln_chat_eot(kiln_chat_template t) { return valid(t) ? tmpls[t].eot : NULL; }
bool kiln_chat_wants_bos(kiln_chat_template t) { return valid(t) && tmpls[t].bos; }

static void names_list(char *buf, size_t n) {
  size_t k = 0;
  buf[0] = 0;
  for (int i = 0; i < KILN_CHAT_NTEMPLATES && k < n; i++)
    k += (size_t)snprintf(buf + k, n - k, "%s%s", i ? ", " : "", tmpls[i].name);
}

kiln_chat_template kiln_chat_from_name(const char *name) {
  for (int i = 0; name && i < KILN_CHAT_NTEMPLATES; i++)
    if (!strcmp(name, tmpls[i].name)) return (kiln_chat_template)i;
  char names[200];
  names_list(names, sizeof names);
  kn_err("chat template: unknown name '%.64s' (known: %s)", name ? name : "(null)", names);
  return KILN_CHAT_UNKNOWN;
}

/* The first marker found decides; more specific markers come first. */
kiln_chat_template kiln_chat_detect(const char *jinja) {
  static const struct {
    const char *marker;
    kiln_chat_template t;
  } markers[] = {
      {"<|start_header_id|>", KILN_CHAT_LLAMA3},
      {"<start_of_turn>", KILN_CHAT_GEMMA},
      {"<|im_start|>", KILN_CHAT_CHATML},
      {"<|user|>", KILN_CHAT_ZEPHYR},
      {"[INST]", KILN_CHAT_LLAMA2},
  };
  if (!jinja) {
    kn_err("chat template: the model has no chat template; pass one by name");
    return KILN_CHAT_UNKNOWN;
  }
  for (size_t i = 0; i < sizeof markers / sizeof markers[0]; i++)
    if (strstr(jinja, markers[i].marker)) {
      if (markers[i].t == KILN_CHAT_CHATML && strstr(jinja, SMOLLM2_SYSTEM))
        return KILN_CHAT_SMOLLM2;
      return markers[i].t;
    }
  char names[200];
  names_list(names, sizeof names);
  kn_err("chat template: not recognized (no <|im_start|>, <|start_header_id|>, [INST], <|user|> "
         "or <start_of_turn> in \"%.60s%s\"); pass one by name: %s",
         jinja, strlen(jinja) > 60 ? "..." : "", names);
  return KILN_CHAT_UNKNOWN;
}

/* ---- text helpers -----------------------------------------------------------------------------
 */
typedef kn_sbuf sbuf;
static void put_n(sbuf *b, const char *s, size_t n) { kn_sbuf_put(b, s, n); }
static void put(sbuf *b, const char *s) { kn_sbuf_put(b, s, strlen(s)); }

/* Bytes of the whitespace character at s (n bytes left), 0 if none. The set is Python's
 * str.isspace, which Jinja's trim and the templates' .strip() use: ASCII \t-\r, \x1c-\x20 and
 * the Unicode spaces (U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028, U+2029, U+202F, U+205F,
 * U+3000), here in UTF-8. */
size_t kn_py_space_at(const unsigned char *s, size_t n) {
  if (n >= 1 && ((s[0] >= 0x09 && s[0] <= 0x0d) || (s[0] >= 0x1c && s[0] <= 0x20))) return 1;
  if (n >= 2 && s[0] == 0xc2 && (s[1] == 0x85 || s[1] == 0xa0)) return 2;
  if (n >= 3 && s[0] == 0xe1 && s[1] == 0x9a && s[2] == 0x80) return 3;
  if (n >= 3 && s[0] == 0xe2 && s[1] == 0x80 &&
      (s[2] <= 0x8a || s[2] == 0xa8 || s[2] == 0xa9 || s[2] == 0xaf))
    return 3;
  if (n >= 3 && s[0] == 0xe2 && s[1] == 0x81 && s[2] == 0x9f) return 3;
  if (n >= 3 && s[0] == 0xe3 && s[1] == 0x80 && s[2] == 0x80) return 3;
  return 0;
}

/* Python's strip() of s: the kept span [*start, *start + *len). Trailing whitespace is found by
 * scanning forward, so a continuation byte is never mistaken for the start of a character. */
static void strip_span(const char *s, bool left, bool right, size_t *start, size_t *len) {
  const unsigned char *u = (const unsigned char *)s;
  size_t n = strlen(s), a = 0, w;
  if (left)
    while (a < n && (w = kn_py_space_at(u + a, n - a)))
      a += w;
  size_t end = n;
  if (right) {
    end = a;
    for (size_t i = a; i < n;) {
      w = kn_py_space_at(u + i, n - i);
      i += w ? w : 1;
      if (!w) end = i;
    }
  }
  *start = a, *len = end - a;
}
static void put_stripped(sbuf *b, const char *s, bool left, bool right) {
  size_t a, n;
  strip_span(s, left, right, &a, &n);
  put_n(b, s + a, n);
}

/* ---- rendering --------------------------------------------------------------------------------
 */
enum { R_SYSTEM, R_USER, R_ASSISTANT };
static int role_of(const char *r) {
  if (!r) return -1;
  return !strcmp(r, "system")      ? R_SYSTEM
         : !strcmp(r, "user")      ? R_USER
         : !strcmp(r, "assistant") ? R_ASSISTANT
                                   : -1;
}
static const char *const role_names[] = {"system", "user", "assistant"};

/* The message's content, stripped as the template does; its span in b is kept in span[0..1] so
 * it can be tokenized as plain text (never as control tokens). */
static void put_content(sbuf *b, size_t *span, const char *content, bool left, bool right) {
  span[0] = b->n;
  put_stripped(b, content, left, right);
  span[1] = b->n;
}

static int render(sbuf *b, kiln_chat_template t, int prev, int role, const char *content, bool gen,
                  size_t *span) {
  const char *rn = role_names[role];
  switch (t) {
  case KILN_CHAT_SMOLLM2:
    if (prev < 0 && role != R_SYSTEM) put(b, "<|im_start|>system\n" SMOLLM2_SYSTEM "<|im_end|>\n");
    /* fall through */
  case KILN_CHAT_CHATML:
    put(b, "<|im_start|>"), put(b, rn), put(b, "\n"), put_content(b, span, content, false, false);
    put(b, "<|im_end|>\n");
    if (gen) put(b, "<|im_start|>assistant\n");
    return 0;
  case KILN_CHAT_LLAMA3:
    put(b, "<|start_header_id|>"), put(b, rn), put(b, "<|end_header_id|>\n\n");
    put_content(b, span, content, true, true), put(b, "<|eot_id|>");
    if (gen) put(b, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return 0;
  case KILN_CHAT_LLAMA2:
    /* The system prompt opens the first [INST] block and the first user message closes it; the
     * official template strips the block as a whole, so the user text keeps its leading
     * whitespace there. It has no generation prompt: the model answers after [/INST]. */
    if (role == R_SYSTEM) {
      if (prev >= 0) {
        kn_err("chat format: llama2: a system message must come first");
        return -1;
      }
      put(b, "[INST] <<SYS>>\n"), put_content(b, span, content, false, false);
      put(b, "\n<</SYS>>\n\n");
    } else if (role == R_USER) {
      if (prev == R_SYSTEM) {
        put_content(b, span, content, false, true);
      } else {
        put(b, prev < 0 ? "[INST] " : "<s>[INST] ");
        put_content(b, span, content, true, true);
      }
      put(b, " [/INST]");
    } else {
      put(b, " "), put_content(b, span, content, true, true), put(b, " </s>");
    }
    return 0;
  case KILN_CHAT_ZEPHYR:
    put(b, "<|"), put(b, rn), put(b, "|>\n"), put_content(b, span, content, false, false);
    put(b, "</s>\n");
    if (gen) put(b, "<|assistant|>\n");
    return 0;
  case KILN_CHAT_GEMMA:
    if (role == R_SYSTEM) {
      kn_err("chat format: gemma: the template has no system role (put it in the first user "
             "message)");
      return -1;
    }
    put(b, "<start_of_turn>"), put(b, role == R_USER ? "user" : "model"), put(b, "\n");
    put_content(b, span, content, true, true), put(b, "<end_of_turn>\n");
    if (gen) put(b, "<start_of_turn>model\n");
    return 0;
  default:
    break;
  }
  kn_err("chat format: invalid template %d", (int)t);
  return -1;
}

/* Renders one message into *out; span: where its content lies in it. */
static int format_span(kiln_chat_template t, const char *prev_role, const char *role,
                       const char *content, bool add_generation_prompt, char **out, size_t *span) {
  if (!out) {
    kn_err("chat format: out is NULL");
    return -1;
  }
  *out = NULL;
  if (!valid(t)) {
    kn_err("chat format: invalid template %d", (int)t);
    return -1;
  }
  int r = role_of(role), prev = prev_role ? role_of(prev_role) : -1;
  if (r < 0 || (prev_role && prev < 0)) {
    const char *bad = r < 0 ? role : prev_role;
    kn_err("chat format: role must be system, user or assistant, got '%.32s'",
           bad ? bad : "(null)");
    return -1;
  }
  if (!content) {
    kn_err("chat format: the %s message's content is NULL", role);
    return -1;
  }
  sbuf b = {0};
  put(&b, "");
  if (render(&b, t, prev, r, content, add_generation_prompt, span) < 0) {
    free(b.s);
    return -1;
  }
  *out = b.s;
  return 0;
}

int kiln_chat_format_after(kiln_chat_template t, const char *prev_role, const char *role,
                           const char *content, bool add_generation_prompt, char **out) {
  size_t span[2];
  return format_span(t, prev_role, role, content, add_generation_prompt, out, span);
}

int64_t kiln_chat_tokenize(const kiln_tokenizer *tok, kiln_chat_template t, const char *prev_role,
                           const char *role, const char *content, bool add_generation_prompt,
                           bool add_bos, int32_t **ids) {
  if (!ids || !tok) {
    kn_err("chat tokenize: %s is NULL", ids ? "the tokenizer" : "ids");
    return -1;
  }
  *ids = NULL;
  char *text = NULL;
  size_t span[2] = {0, 0};
  if (format_span(t, prev_role, role, content, add_generation_prompt, &text, span) < 0) return -1;
  /* the template's text around the content may hold control tokens; the content is the
   * user's, read as plain text */
  size_t len = strlen(text);
  int64_t n = (int64_t)len + 8, cap; /* enough for any text; a second call if not */
  do {
    cap = n;
    free(*ids);
    *ids = malloc(sizeof(int32_t) * (size_t)cap);
    if (!*ids) kn_err("chat tokenize: out of memory for %lld tokens", (long long)cap);
    n = *ids ? kn_tokenize_plain(tok, text, len, add_bos, span[0], span[1], *ids, cap) : -1;
  } while (n > cap);
  free(text);
  if (!*ids || n < 0) {
    free(*ids);
    *ids = NULL;
    return -1;
  }
  return n;
}

int kiln_chat_format(kiln_chat_template t, const char *role, const char *content, bool first,
                     bool add_generation_prompt, char **out) {
  const char *prev = NULL;
  if (!first) prev = role && !strcmp(role, "user") ? "assistant" : "user";
  return kiln_chat_format_after(t, prev, role, content, add_generation_prompt, out);
}
