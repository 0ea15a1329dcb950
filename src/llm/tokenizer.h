/* tokenizer.h — building a tokenizer from plain arrays (what kiln_tokenizer_from_gguf reads
 * from the file), for tests and for vocabularies that come from elsewhere. */
#ifndef KN_TOKENIZER_H
#define KN_TOKENIZER_H

#include "internal.h"

/* Token types, numbered as in tokenizer.ggml.token_type. */
enum {
  KN_TOK_UNDEFINED,
  KN_TOK_NORMAL,
  KN_TOK_UNKNOWN,
  KN_TOK_CONTROL,
  KN_TOK_USER,
  KN_TOK_UNUSED,
  KN_TOK_BYTE
};

typedef struct {
  const char *model; /* "gpt2" (byte-level BPE) or "llama" (SentencePiece) */
  const char *pre;   /* pre-tokenizer name for gpt2; NULL means "default" */
  int64_t n_vocab;
  const char *const *tokens; /* [n_vocab] token texts */
  const size_t *token_lens;  /* [n_vocab] byte lengths, or NULL for strlen */
  const float *scores;       /* [n_vocab] or NULL (all 0) */
  const int32_t *types;      /* [n_vocab] or NULL (all normal) */
  int64_t n_merges;
  const char *const *merges; /* [n_merges] "left right", rank = index (gpt2 only) */
  /* Special ids; -2 means "not given" (the model's default applies), -1 "none". */
  int64_t bos, eos, eot, eom, unk, pad;
  int add_bos, add_space_prefix; /* -1: the model's default */
} kn_tok_spec;

/* A spec with every id and flag "not given". */
kn_tok_spec kn_tok_spec_init(void);
kiln_tokenizer *kn_tokenizer_build(const kn_tok_spec *spec);
/* kiln_tokenize with control tokens matched only outside the data spans (sorted, disjoint), and
 * none that would reach into one: a chat template's markers around messages whose text is data.
 * (User-defined tokens are text and match everywhere.) */
int64_t kn_tokenize_data(const kiln_tokenizer *t, const char *text, size_t len, bool add_bos,
                         const kn_text_span *data, int ndata, int32_t *out, int64_t cap);
/* The pre-tokens of valid UTF-8 text (a BPE tokenizer's regex split): writes up to cap byte
 * lengths and returns how many there are; < 0 for an error or a SentencePiece tokenizer. */
int64_t kn_tokenizer_split(const kiln_tokenizer *t, const char *text, size_t len, size_t *lens,
                           int64_t cap);
/* The token type of id (KN_TOK_*), or -1 for a bad id. */
int kn_token_type(const kiln_tokenizer *t, int32_t id);

#endif
