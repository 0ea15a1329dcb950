/* tokenizer.c — text to token ids and back, from GGUF tokenizer metadata: byte-level BPE
 * (regex pre-tokenizer with PCRE2, the GPT-2 byte alphabet, merges applied by rank) and
 * SentencePiece-style BPE (spaces as U+2581, highest-scoring adjacent merge first, <0xNN>
 * byte fallback); special-token matching; a streaming detokenizer that emits whole UTF-8. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "internal.h"
#include "llm/tokenizer.h"

#include <pcre2.h>
#include <pthread.h>

enum { KIND_BPE, KIND_SPM };
#define MAX_STAGES 6
#define SPM_SPACE "\xE2\x96\x81" /* U+2581, SentencePiece's visible space */

/* ---- UTF-8 ------------------------------------------------------------------------------------
 */
/* Length of the well-formed UTF-8 sequence at s (n bytes available), or 0 when there is none
 * (overlong forms, surrogates, values above U+10FFFF and truncated sequences are not). */
static size_t utf8_valid(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  size_t len;
  unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
  if (c >= 0xC2 && c <= 0xDF)
    len = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0) lo = 0xA0;
    if (c == 0xED) hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0) lo = 0x90;
    if (c == 0xF4) hi = 0x8F;
  } else
    return 0;
  if (n < len || s[1] < lo || s[1] > hi) return 0;
  for (size_t i = 2; i < len; i++)
    if ((s[i] & 0xC0) != 0x80) return 0;
  return len;
}

/* Whether s[0..n) (n < 4) is a proper prefix of some well-formed character, so that more
 * bytes may still complete it. */
static bool utf8_incomplete(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  size_t len = c >= 0xC2 && c <= 0xDF   ? 2
               : c >= 0xE0 && c <= 0xEF ? 3
               : c >= 0xF0 && c <= 0xF4 ? 4
                                        : 0;
  if (!len || n >= len) return false;
  if (n >= 2) {
    unsigned lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80;
    unsigned hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
    if (s[1] < lo || s[1] > hi) return false;
  }
  for (size_t i = 2; i < n; i++)
    if ((s[i] & 0xC0) != 0x80) return false;
  return true;
}

static size_t utf8_put(char *out, uint32_t cp) {
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xE0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3;
  }
  out[0] = (char)(0xF0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
  out[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

static uint32_t utf8_get(const unsigned char *s, size_t len) {
  if (len == 1) return s[0];
  uint32_t cp = s[0] & (0x7F >> len);
  for (size_t i = 1; i < len; i++)
    cp = (cp << 6) | (s[i] & 0x3F);
  return cp;
}

/* ---- GPT-2 byte alphabet -----------------------------------------------------------------------
 * Byte-level BPE vocabularies spell every byte as a printable code point: printable Latin-1
 * bytes (! to ~, ¡ to ¬, ® to ÿ) stand for themselves, the other 68 bytes take U+0100.. in
 * byte order. */
static uint16_t g_byte_cp[256];
static int16_t g_cp_byte[324]; /* inverse, -1 where a code point is no byte */

static void byte_alphabet_fill(void) {
  int n = 0;
  for (int i = 0; i < 324; i++)
    g_cp_byte[i] = -1;
  for (int b = 0; b < 256; b++) {
    bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    g_byte_cp[b] = (uint16_t)(printable ? b : 256 + n++);
    g_cp_byte[g_byte_cp[b]] = (int16_t)b;
  }
}
static pthread_once_t g_byte_once = PTHREAD_ONCE_INIT;
static void byte_alphabet_init(void) { pthread_once(&g_byte_once, byte_alphabet_fill); }

/* ---- growable arrays ----------------------------------------------------------------------------
 */
typedef struct {
  int32_t *v;
  int64_t n, cap;
} ivec;

static void ivec_push(ivec *a, int32_t x) {
  if (a->n == a->cap) {
    a->cap = a->cap ? 2 * a->cap : 64;
    a->v = kn_xrealloc(a->v, (size_t)a->cap * sizeof *a->v);
  }
  a->v[a->n++] = x;
}

typedef struct {
  size_t off, len;
} span;
typedef struct {
  span *v;
  size_t n, cap;
} svec;

static void svec_push(svec *a, size_t off, size_t len) {
  if (!len) return;
  if (a->n == a->cap) {
    a->cap = a->cap ? 2 * a->cap : 64;
    a->v = kn_xrealloc(a->v, a->cap * sizeof *a->v);
  }
  a->v[a->n++] = (span){off, len};
}

/* ---- the tokenizer ----------------------------------------------------------------------------
 */
typedef struct {
  uint64_t key; /* left id << 32 | right id */
  int32_t rank, merged;
} merge_slot;

struct kiln_tokenizer {
  int kind;
  int32_t n_vocab;
  char *text;         /* all token texts, each NUL-terminated */
  size_t *text_off;   /* [n_vocab] */
  uint32_t *text_len; /* [n_vocab] */
  float *score;       /* [n_vocab] */
  uint8_t *type;      /* [n_vocab] KN_TOK_* */
  uint8_t *eog;       /* [n_vocab] */
  char *piece;        /* decoded bytes of all tokens */
  size_t *piece_off;  /* [n_vocab] */
  uint32_t *piece_len;
  int32_t *idx; /* text -> id, open addressing, idx_mask + 1 slots, -1 empty */
  uint64_t idx_mask;
  merge_slot *merges; /* (left, right) -> rank and merged id; key 0 never used by a real pair */
  uint64_t merge_mask;
  int32_t byte_tok[256]; /* the token of each single byte (its GPT-2 letter, or <0xNN>) */
  int32_t *special;      /* ids matched in raw text, by first byte then longest first */
  int32_t special_start[257];
  pcre2_code *stage[MAX_STAGES];
  int n_stages;
  bool ignore_merges, add_bos, add_space_prefix;
  int32_t bos, eos, eot, eom, unk, pad;
};

static const char *tok_text(const kiln_tokenizer *t, int32_t id, size_t *len) {
  *len = t->text_len[id];
  return t->text + t->text_off[id];
}

static uint64_t hash_text(const void *p, size_t n) {
  uint64_t h = kn_hash_bytes(0, p, n);
  return h ^ (h >> 29);
}

/* Id of the token spelled s[0..n), or -1. */
static int32_t find_text(const kiln_tokenizer *t, const char *s, size_t n) {
  for (uint64_t i = hash_text(s, n) & t->idx_mask;; i = (i + 1) & t->idx_mask) {
    int32_t id = t->idx[i];
    if (id < 0) return -1;
    if (t->text_len[id] == n && !memcmp(t->text + t->text_off[id], s, n)) return id;
  }
}

/* Tokens the merge loops may produce: not control, unknown or byte tokens, which only come from
 * special matching and byte fallback. */
static bool mergeable(const kiln_tokenizer *t, int32_t id) {
  if (id < 0) return false;
  int ty = t->type[id];
  return ty != KN_TOK_CONTROL && ty != KN_TOK_UNKNOWN && ty != KN_TOK_BYTE;
}

static int32_t find_mergeable(const kiln_tokenizer *t, const char *s, size_t n) {
  int32_t id = find_text(t, s, n);
  return id >= 0 && mergeable(t, id) ? id : -1;
}

static uint64_t hash_pair(uint64_t key) {
  key ^= key >> 31;
  key *= 0x9E3779B97F4A7C15ull;
  return key ^ (key >> 29);
}

static const merge_slot *find_merge(const kiln_tokenizer *t, int32_t l, int32_t r) {
  if (!t->merges || l < 0 || r < 0) return NULL;
  uint64_t key = ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) + 1;
  for (uint64_t i = hash_pair(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
    if (t->merges[i].key == key) return &t->merges[i];
    if (!t->merges[i].key) return NULL;
  }
}

/* ---- pre-tokenizers -----------------------------------------------------------------------------
 * Each is a list of patterns applied in turn: every piece from the previous stage is split at
 * the matches of the next pattern, and text between matches stays a piece of its own. White
 * space is the Unicode White_Space set (PCRE2's \s lacks U+0085). */
#define WS "\\t-\\r\\x{85}\\p{Z}"
#define S_ "[" WS "]"
#define NS "[^" WS "]"
#define CONTRACTIONS_CI "'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD]"
/* GPT-2: contractions, letters, numbers, other symbols (each with an optional leading space),
 * then white space that leaves its last character to the next word. */
#define GPT2_RE                                                                                    \
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|" S_ "+(?!" NS ")|" S_ "+"
/* White space after Llama 3: newline runs with the white space before them, runs that leave
 * their last character to the next word, the rest. */
#define WS_TAIL S_ "*[\\r\\n]+|" S_ "+(?!" NS ")|" S_ "+"
/* Llama 3 / Qwen 2: case-insensitive contractions, a word takes one leading non-letter,
 * numbers in runs of at most 3 (Qwen 2: 1), symbols keep trailing newlines, newlines group. */
#define LLAMA3_RE(num)                                                                             \
  CONTRACTIONS_CI "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|" num "| ?[^" WS                                 \
                  "\\p{L}\\p{N}]+[\\r\\n]*|" WS_TAIL
/* Qwen 3.5: Qwen 2 with combining marks inside words and out of symbol runs. */
#define QWEN35_RE                                                                                  \
  CONTRACTIONS_CI "|[^\\r\\n\\p{L}\\p{N}]?[\\p{L}\\p{M}]+|\\p{N}| ?[^" WS                          \
                  "\\p{L}\\p{M}\\p{N}]+[\\r\\n]*|" WS_TAIL
/* Seed-Coder: single digits, symbol runs stop at newlines. */
#define SEED_CODER_RE                                                                              \
  CONTRACTIONS_CI "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1}| ?[^" WS "\\p{L}\\p{N}\\r\\n]+"        \
                  "|" WS_TAIL
/* Ling (bailingmoe): possessive leading character and symbol runs, one newline at a time. */
#define BAILINGMOE_RE                                                                              \
  "'(?:[sSdDmMtT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}| ?[^" WS       \
  "\\p{L}\\p{N}]++[\\r\\n]*|" S_ "*[\\r\\n]|" S_ "+(?!" NS ")|" S_ "+"
/* Jais 2: Llama 3, with white space before a word cut into power-of-two runs. */
#define WS_RUN(n) S_ "{" #n "}(?!" NS ")|"
#define JAIS2_WS                                                                                   \
  WS_RUN(512) WS_RUN(256) WS_RUN(128) WS_RUN(64) WS_RUN(32) WS_RUN(16) WS_RUN(8) WS_RUN(4)
#define JAIS2_RE                                                                                   \
  CONTRACTIONS_CI "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^" WS                             \
                  "\\p{L}\\p{N}]+[\\r\\n]*|" S_ "*[\\r\\n]+|" JAIS2_WS S_ "{1,2}(?!" NS ")|" S_    \
                  "{1}"
/* GPT-4o / Llama 4 / Tekken (Mistral Nemo): a word is an optional non-letter, then upper-case,
 * then lower-case letters (caseless letters and marks count as both), so "CamelCase" is "Camel"
 * "Case"; GPT-4o lets a contraction follow and cuts numbers in runs of at most 3, Tekken takes
 * digits one by one; symbol runs keep trailing newlines and slashes. */
#define UPPER_ "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]"
#define LOWER_ "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]"
#define CASED_WORDS(up, low, tail)                                                                 \
  "[^\\r\\n\\p{L}\\p{N}]?" up "*" low "+" tail "|[^\\r\\n\\p{L}\\p{N}]?" up "+" low "*" tail
#define OPT_CONTRACTION "(?:" CONTRACTIONS_CI ")?"
#define GPT4O_RE                                                                                   \
  CASED_WORDS(UPPER_, LOWER_, OPT_CONTRACTION)                                                     \
  "|\\p{N}{1,3}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n/]*|" WS_TAIL
#define TEKKEN_RE                                                                                  \
  CASED_WORDS(UPPER_, LOWER_, "") "|\\p{N}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n/]*|" WS_TAIL
/* Kimi K2: Han runs, then GPT-4o's words without Han. The published classes intersect with
 * [^\p{Han}] (&&), which PCRE2 10.42 lacks: each is written as the complement of the other
 * general categories and Han (Han as a Script: PCRE2's plain \p{Han} would also take the CJK
 * punctuation, by Script_Extensions). */
#define HAN "\\p{sc:Han}"
#define NON_WORD_OR_HAN "\\p{N}\\p{P}\\p{S}\\p{Z}\\p{C}" HAN
#define KIMI_WORDS                                                                                 \
  CASED_WORDS("[^\\p{Ll}" NON_WORD_OR_HAN "]", "[^\\p{Lu}\\p{Lt}" NON_WORD_OR_HAN "]",             \
              OPT_CONTRACTION)
#define KIMI_K2_RE                                                                                 \
  "[" HAN "]+|" KIMI_WORDS "|\\p{N}{1,3}| ?[^" WS "\\p{L}\\p{N}]+[\\r\\n]*|" WS_TAIL
/* DeepSeek V3: numbers in runs of at most 3 and CJK runs first; then a word may take one
 * leading ASCII symbol before ASCII letters, or one leading non-symbol before letters and
 * marks. */
#define DEEPSEEK3_RE                                                                               \
  "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+"                                          \
  "|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|" WS_TAIL
#define DEEPSEEK3_STAGES                                                                           \
  { "\\p{N}{1,3}", "[\\x{4E00}-\\x{9FA5}\\x{3040}-\\x{309F}\\x{30A0}-\\x{30FF}]+", DEEPSEEK3_RE }
/* DeepSeek LLM / Coder: newlines on their own, then letter runs (DeepSeek LLM: the cased
 * scripts listed) and punctuation runs each with one leading space, (LLM:) trailing white
 * space, CJK and Hangul runs, numbers (Coder: digit by digit). */
#define DEEPSEEK_LLM_LETTERS                                                                       \
  "A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}"                   \
  "\\x{1C4}-\\x{293}\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}"   \
  "\\x{386}\\x{388}-\\x{38A}\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}"           \
  "\\x{48A}-\\x{52F}\\x{531}-\\x{556}\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}"    \
  "\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}"                   \
  "\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}\\x{1F20}-\\x{1F45}"                   \
  "\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}"           \
  "\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}"          \
  "\\x{1FD0}-\\x{1FD3}\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}"                   \
  "\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}"           \
  "\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}\\x{212F}-\\x{2134}\\x{2139}"                     \
  "\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}\\x{2C00}-\\x{2C7B}"           \
  "\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}"                    \
  "\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}"                   \
  "\\x{AB70}-\\x{ABBF}\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}"                   \
  "\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}"             \
  "\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}\\x{1E900}-\\x{1E943}"
#define DEEPSEEK_CJK "[\\x{4E00}-\\x{9FA5}\\x{800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+"
/* BLOOM and the Finnish models: anything up to white space, ( | ) or one of
 * . , ! ? … 。 ， 、 । ۔ ، with one leading space (published with these in a nested class). */
#define BLOOM_RE " ?[^(" WS "|.,!?\\x{2026}\\x{3002}\\x{FF0C}\\x{3001}\\x{964}\\x{6D4}\\x{60C})]+"
#define SMOLLM_STAGES                                                                              \
  { "\\p{N}", GPT2_RE }

typedef struct {
  const char *name;
  const char *re[MAX_STAGES];
  bool ignore_merges, add_bos;
} pre_kind;

/* Names as GGUF files carry them (tokenizer.ggml.pre); aliases share a pattern. */
static const pre_kind g_pre[] = {
    {"gpt-2", {GPT2_RE}, false, false},
    {"gpt2", {GPT2_RE}, false, false},
    {"mpt", {GPT2_RE}, false, false},
    {"olmo", {GPT2_RE}, false, false},
    {"phi-2", {GPT2_RE}, false, false},
    {"jais", {GPT2_RE}, false, false},
    {"gigachat", {GPT2_RE}, false, false},
    {"a.x-4.0", {GPT2_RE}, false, false},
    {"mellum", {GPT2_RE}, false, false},
    {"exaone4", {GPT2_RE}, false, false},
    {"trillion", {GPT2_RE}, false, false},
    {"granite-docling", {GPT2_RE}, false, false},
    /* Digits are split one by one before the GPT-2 pattern sees the text. */
    {"smollm", SMOLLM_STAGES, false, false},
    {"starcoder", SMOLLM_STAGES, false, false},
    {"refact", SMOLLM_STAGES, false, false},
    {"command-r", SMOLLM_STAGES, false, false},
    {"codeshell", SMOLLM_STAGES, false, false},
    {"exaone", SMOLLM_STAGES, false, false},
    {"minerva-7b", SMOLLM_STAGES, false, false},
    {"mellum2", SMOLLM_STAGES, false, false},
    {"llama3", {LLAMA3_RE("\\p{N}{1,3}")}, true, true},
    {"llama-v3", {LLAMA3_RE("\\p{N}{1,3}")}, true, true},
    {"llama-bpe", {LLAMA3_RE("\\p{N}{1,3}")}, true, true},
    {"falcon3", {LLAMA3_RE("\\p{N}{1,3}")}, true, true},
    {"falcon-h1", {LLAMA3_RE("\\p{N}{1,3}")}, true, true},
    {"midm-2.0", {LLAMA3_RE("\\p{N}{1,3}")}, true, true},
    {"lfm2", {LLAMA3_RE("\\p{N}{1,3}")}, true, true},
    {"dbrx", {LLAMA3_RE("\\p{N}{1,3}")}, false, false},
    {"smaug-bpe", {LLAMA3_RE("\\p{N}{1,3}")}, false, false},
    {"glm4", {LLAMA3_RE("\\p{N}{1,3}")}, false, false},
    {"chatglm-bpe", {LLAMA3_RE("\\p{N}{1,3}")}, false, false},
    {"minicpm5", {"\\p{N}{1,3}", LLAMA3_RE("\\p{N}+")}, true, false},
    {"jais-2", {JAIS2_RE}, false, false},
    {"qwen2", {LLAMA3_RE("\\p{N}")}, false, false},
    {"deepseek-r1-qwen", {LLAMA3_RE("\\p{N}")}, false, false},
    {"stablelm2", {LLAMA3_RE("\\p{N}")}, false, false},
    {"megrez", {LLAMA3_RE("\\p{N}")}, false, false},
    {"hunyuan", {LLAMA3_RE("\\p{N}")}, false, false},
    {"grok-2", {LLAMA3_RE("\\p{N}")}, false, false},
    {"solar-open", {LLAMA3_RE("\\p{N}")}, false, false},
    {"kormo", {LLAMA3_RE("\\p{N}")}, false, false},
    {"f2llmv2", {LLAMA3_RE("\\p{N}")}, false, false},
    {"qwen35", {QWEN35_RE}, false, false},
    {"seed-coder", {SEED_CODER_RE}, false, false},
    {"bailingmoe", {BAILINGMOE_RE}, false, false},
    {"bailingmoe2", {BAILINGMOE_RE}, false, false},
    {"llada-moe", {BAILINGMOE_RE}, false, false},
    {"gpt-4o", {GPT4O_RE}, false, false},
    {"llama4", {GPT4O_RE}, false, false},
    {"minimax-m2", {GPT4O_RE}, false, false},
    {"kanana2", {GPT4O_RE}, false, false},
    /* Pixtral carries Mistral Nemo's Tekken tokenizer (llama.cpp maps the name to Llama 3's
     * pattern instead). */
    {"tekken", {TEKKEN_RE}, true, true},
    {"pixtral", {TEKKEN_RE}, true, true},
    {"kimi-k2", {KIMI_K2_RE}, false, false},
    {"deepseek-v3", DEEPSEEK3_STAGES, false, false},
    {"hunyuan-dense", DEEPSEEK3_STAGES, false, false},
    {"joyai-llm", DEEPSEEK3_STAGES, false, false},
    {"deepseek-llm",
     {"[\\r\\n]", S_ "?[" DEEPSEEK_LLM_LETTERS "]+",
      S_ "?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+",
      S_ "+$", DEEPSEEK_CJK, "\\p{N}+"},
     false,
     false},
    {"deepseek-coder",
     {"[\\r\\n]", S_ "?\\p{L}+", S_ "?\\p{P}+", DEEPSEEK_CJK, "\\p{N}"},
     false,
     false},
    {"bloom", {BLOOM_RE}, false, false},
    {"gpt3-finnish", {BLOOM_RE}, false, false},
    {"poro-chat", {BLOOM_RE}, false, false},
    {"viking", {BLOOM_RE, "\\p{N}"}, false, false},
    /* Falcon: punctuation runs (Unicode's and ASCII's), the GPT-2 pattern, digit runs, then
     * runs of three digits. Its digit stages run on byte-level text, in which of all numerals
     * only ASCII digits are still themselves. */
    {"falcon", {"[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2_RE, "[0-9]+", "[0-9][0-9][0-9]"}, false, false},
    /* The fallback of older conversions: punctuation runs, GPT-2 words, then numbers cut into
     * runs of three ASCII digits. */
    {"default",
     {"[\\p{P}\\$\\+<=>\\^~\\|]+",
      "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|" S_ "+(?!" NS ")",
      "\\p{N}+", "[0-9][0-9][0-9]"},
     false,
     false},
};

static const pre_kind *find_pre(const char *name) {
  for (size_t i = 0; i < sizeof g_pre / sizeof g_pre[0]; i++)
    if (!strcmp(g_pre[i].name, name)) return &g_pre[i];
  return NULL;
}

static int compile_stages(kiln_tokenizer *t, const pre_kind *pk) {
  for (int s = 0; s < MAX_STAGES && pk->re[s]; s++) {
    int code;
    PCRE2_SIZE at;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pk->re[s], PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &code, &at, NULL);
    KN_ASSERT(re, "pre-tokenizer '%s' pattern %d compiles (error %d at %zu)", pk->name, s, code,
              (size_t)at);
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional: the interpreter is the fallback */
    t->stage[t->n_stages++] = re;
  }
  return 0;
}

/* Splits the valid UTF-8 text s[0..n) into pre-tokens (spans relative to s) through every
 * stage. Returns 0, or -1 with an error when the matcher fails. */
static int pre_split(const kiln_tokenizer *t, const char *s, size_t n, pcre2_match_data *md,
                     svec *out, svec *tmp) {
  out->n = 0;
  svec_push(out, 0, n);
  for (int st = 0; st < t->n_stages; st++) {
    tmp->n = 0;
    for (size_t p = 0; p < out->n; p++) {
      const char *sub = s + out->v[p].off;
      size_t len = out->v[p].len, pos = 0, gap = 0;
      while (pos < len) {
        int rc = pcre2_match(t->stage[st], (PCRE2_SPTR)sub, len, pos, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
          PCRE2_UCHAR msg[120];
          pcre2_get_error_message(rc, msg, sizeof msg);
          kn_err("tokenize: pre-tokenizer failed at byte %zu: %s", out->v[p].off + pos,
                 (const char *)msg);
          return -1;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        if (ov[1] == ov[0]) { /* an empty match: step over one character */
          pos = ov[0] + utf8_valid((const unsigned char *)sub + ov[0], len - ov[0]);
          continue;
        }
        svec_push(tmp, out->v[p].off + gap, ov[0] - gap);
        svec_push(tmp, out->v[p].off + ov[0], ov[1] - ov[0]);
        pos = gap = ov[1];
      }
      svec_push(tmp, out->v[p].off + gap, len - gap);
    }
    svec swap = *out;
    *out = *tmp;
    *tmp = swap;
  }
  return 0;
}

/* ---- merge loops --------------------------------------------------------------------------------
 * Both models keep a word as a linked list of symbols and a heap of candidate merges of adjacent
 * symbols, best first (lowest merge rank / highest score; ties go to the leftmost pair).
 * A candidate is stale once either side has changed, which the pop checks. */
typedef struct {
  double pri; /* lower pops first */
  int32_t left, right;
  int32_t lkey, rkey; /* the sides' ids (BPE) or lengths (SPM) when the candidate was made */
} cand;

typedef struct {
  cand *v;
  size_t n, cap;
} heap;

static bool cand_before(const cand *a, const cand *b) {
  return a->pri < b->pri || (a->pri == b->pri && a->left < b->left);
}

static void heap_push(heap *h, cand c) {
  if (h->n == h->cap) {
    h->cap = h->cap ? 2 * h->cap : 64;
    h->v = kn_xrealloc(h->v, h->cap * sizeof *h->v);
  }
  size_t i = h->n++;
  while (i > 0 && cand_before(&c, &h->v[(i - 1) / 2])) {
    h->v[i] = h->v[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  h->v[i] = c;
}

static cand heap_pop(heap *h) {
  cand top = h->v[0], last = h->v[--h->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= h->n) break;
    if (c + 1 < h->n && cand_before(&h->v[c + 1], &h->v[c])) c++;
    if (!cand_before(&h->v[c], &last)) break;
    h->v[i] = h->v[c];
    i = c;
  }
  if (h->n) h->v[i] = last;
  return top;
}

/* Symbols of one word: sym_id is a token id (BPE) or -1; off/len locate the text (SPM). */
typedef struct {
  int32_t *id, *prev, *next;
  uint32_t *off, *len;
  size_t cap;
  heap h;
  char *buf; /* SPM: the escaped fragment; BPE: the word in the byte alphabet */
  size_t buf_cap;
} work;

static void work_reserve(work *w, size_t n) {
  if (n <= w->cap) return;
  w->cap = n > 2 * w->cap ? n : 2 * w->cap;
  w->id = kn_xrealloc(w->id, w->cap * sizeof *w->id);
  w->prev = kn_xrealloc(w->prev, w->cap * sizeof *w->prev);
  w->next = kn_xrealloc(w->next, w->cap * sizeof *w->next);
  w->off = kn_xrealloc(w->off, w->cap * sizeof *w->off);
  w->len = kn_xrealloc(w->len, w->cap * sizeof *w->len);
}

static void work_buf(work *w, size_t n) {
  if (n > w->buf_cap) {
    w->buf_cap = n > 2 * w->buf_cap ? n : 2 * w->buf_cap;
    w->buf = kn_xrealloc(w->buf, w->buf_cap);
  }
}

static void work_free(work *w) {
  free(w->id), free(w->prev), free(w->next), free(w->off), free(w->len), free(w->h.v);
  free(w->buf);
}

static void bpe_try(const kiln_tokenizer *t, work *w, int32_t l, int32_t r) {
  if (l < 0 || r < 0) return;
  const merge_slot *m = find_merge(t, w->id[l], w->id[r]);
  if (m) heap_push(&w->h, (cand){(double)m->rank, l, r, w->id[l], w->id[r]});
}

/* One pre-token of raw bytes w[0..n) to ids. */
static void bpe_word(const kiln_tokenizer *t, work *w, const unsigned char *s, size_t n,
                     ivec *out) {
  if (t->ignore_merges) { /* a word that is a token is taken whole */
    work_buf(w, 2 * n);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
      k += utf8_put(w->buf + k, g_byte_cp[s[i]]);
    int32_t id = find_mergeable(t, w->buf, k);
    if (id >= 0) {
      ivec_push(out, id);
      return;
    }
  }
  work_reserve(w, n);
  for (size_t i = 0; i < n; i++) {
    w->id[i] = t->byte_tok[s[i]];
    w->prev[i] = (int32_t)i - 1;
    w->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
  }
  w->h.n = 0;
  for (size_t i = 1; i < n; i++)
    bpe_try(t, w, (int32_t)i - 1, (int32_t)i);
  while (w->h.n) {
    cand c = heap_pop(&w->h);
    if (w->next[c.left] != c.right || w->id[c.left] != c.lkey || w->id[c.right] != c.rkey) continue;
    w->id[c.left] = find_merge(t, c.lkey, c.rkey)->merged;
    w->next[c.left] = w->next[c.right];
    if (w->next[c.right] >= 0) w->prev[w->next[c.right]] = c.left;
    w->next[c.right] = w->prev[c.right] = -2; /* gone */
    bpe_try(t, w, w->prev[c.left], c.left);
    bpe_try(t, w, c.left, w->next[c.left]);
  }
  for (int32_t i = 0; i >= 0; i = w->next[i])
    if (w->id[i] >= 0) ivec_push(out, w->id[i]); /* a byte the vocabulary lacks is dropped */
}

static int bpe_fragment(const kiln_tokenizer *t, work *w, const char *s, size_t n,
                        pcre2_match_data *md, svec *pieces, svec *tmp, ivec *out) {
  const unsigned char *u = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) { /* runs of valid UTF-8 go through the pre-tokenizer; a bad byte is a word */
    size_t j = i, l;
    while (j < n && (l = utf8_valid(u + j, n - j)))
      j += l;
    if (j > i) {
      if (pre_split(t, s + i, j - i, md, pieces, tmp) < 0) return -1;
      for (size_t p = 0; p < pieces->n; p++)
        bpe_word(t, w, u + i + pieces->v[p].off, pieces->v[p].len, out);
    }
    if (j < n) bpe_word(t, w, u + j, 1, out);
    i = j < n ? j + 1 : j;
  }
  return 0;
}

static void spm_try(const kiln_tokenizer *t, work *w, int32_t l, int32_t r) {
  if (l < 0 || r < 0) return;
  int32_t id = find_mergeable(t, w->buf + w->off[l], w->len[l] + w->len[r]);
  if (id >= 0)
    heap_push(&w->h, (cand){-(double)t->score[id], l, r, (int32_t)w->len[l], (int32_t)w->len[r]});
}

/* One fragment of text between special tokens; prefix: put a space before it. */
static void spm_fragment(const kiln_tokenizer *t, work *w, const char *s, size_t n, bool prefix,
                         ivec *out) {
  work_buf(w, 3 * (n + 1));
  size_t k = 0;
  if (prefix) memcpy(w->buf, SPM_SPACE, 3), k = 3;
  for (size_t i = 0; i < n; i++)
    if (s[i] == ' ')
      memcpy(w->buf + k, SPM_SPACE, 3), k += 3;
    else
      w->buf[k++] = s[i];
  if (!k) return;
  work_reserve(w, k);
  int32_t ns = 0;
  for (size_t i = 0; i < k; ns++) {
    size_t l = utf8_valid((const unsigned char *)w->buf + i, k - i);
    w->off[ns] = (uint32_t)i;
    w->len[ns] = l ? (uint32_t)l : 1;
    w->prev[ns] = ns - 1;
    i += w->len[ns];
    w->next[ns] = i < k ? ns + 1 : -1;
  }
  w->h.n = 0;
  for (int32_t i = 1; i < ns; i++)
    spm_try(t, w, i - 1, i);
  while (w->h.n) {
    cand c = heap_pop(&w->h);
    if (w->next[c.left] != c.right || (int32_t)w->len[c.left] != c.lkey ||
        (int32_t)w->len[c.right] != c.rkey)
      continue;
    w->len[c.left] += w->len[c.right];
    w->next[c.left] = w->next[c.right];
    if (w->next[c.right] >= 0) w->prev[w->next[c.right]] = c.left;
    w->next[c.right] = w->prev[c.right] = -2;
    w->len[c.right] = 0;
    spm_try(t, w, w->prev[c.left], c.left);
    spm_try(t, w, c.left, w->next[c.left]);
  }
  for (int32_t i = 0; i >= 0; i = w->next[i]) {
    int32_t id = find_mergeable(t, w->buf + w->off[i], w->len[i]);
    if (id >= 0) {
      ivec_push(out, id);
      continue;
    }
    for (uint32_t j = 0; j < w->len[i]; j++) { /* not in the vocabulary: byte tokens */
      int32_t b = t->byte_tok[(unsigned char)w->buf[w->off[i] + j]];
      if (b < 0) b = t->unk;
      if (b >= 0) ivec_push(out, b);
    }
  }
}

/* ---- encoding ----------------------------------------------------------------------------------
 */
/* The special token that starts at s[0..n) (longest first), or -1. */
static int32_t special_at(const kiln_tokenizer *t, const char *s, size_t n, bool parse_special) {
  unsigned b = (unsigned char)s[0];
  for (int32_t k = t->special_start[b]; k < t->special_start[b + 1]; k++) {
    int32_t id = t->special[k];
    if (!parse_special && t->type[id] != KN_TOK_USER) continue;
    size_t len;
    const char *txt = tok_text(t, id, &len);
    if (len <= n && !memcmp(s, txt, len)) return id;
  }
  return -1;
}

int64_t kiln_tokenize(const kiln_tokenizer *t, const char *text, size_t len, bool add_bos,
                      bool parse_special, int32_t *out, int64_t cap) {
  kn_text_span all = {0, len};
  return kn_tokenize_data(t, text, len, add_bos, &all, parse_special ? 0 : 1, out, cap);
}

int64_t kn_tokenize_data(const kiln_tokenizer *t, const char *text, size_t len, bool add_bos,
                         const kn_text_span *data, int ndata, int32_t *out, int64_t cap) {
  if (!t || (!text && len)) {
    kn_err("tokenize: %s is NULL", t ? "text" : "tokenizer");
    return -1;
  }
  if (cap < 0 || (cap > 0 && !out)) {
    kn_err("tokenize: bad output buffer (cap %lld, out %s)", (long long)cap, out ? "set" : "NULL");
    return -1;
  }
  for (int k = 0; k < ndata; k++) {
    size_t from = k ? data[k - 1].off + data[k - 1].len : 0;
    if (!data || data[k].off < from || data[k].len > len || data[k].off > len - data[k].len) {
      kn_err("tokenize: data span %d [%zu, +%zu) is not inside the %zu bytes after the last one", k,
             data ? data[k].off : 0, data ? data[k].len : 0, len);
      return -1;
    }
  }
  if (len > (size_t)INT32_MAX / 4) {
    kn_err("tokenize: text of %zu bytes is too long (at most %d)", len, INT32_MAX / 4);
    return -1;
  }
  ivec ids = {0};
  work w = {0};
  svec pieces = {0}, tmp = {0};
  pcre2_match_data *md = t->kind == KIND_BPE ? pcre2_match_data_create(1, NULL) : NULL;
  int rc = 0;
  if (add_bos && t->bos >= 0) ivec_push(&ids, t->bos);
  bool prev_special = true; /* SentencePiece puts a space before text that follows one */
  size_t frag = 0;
  int k = 0; /* the first data span that does not end at or before i */
  for (size_t i = 0; i <= len && rc == 0;) {
    while (k < ndata && data[k].off + data[k].len <= i)
      k++;
    /* control tokens outside the data spans only, and none that reaches into one */
    bool plain = k < ndata && i >= data[k].off;
    size_t room = k < ndata && !plain ? data[k].off - i : len - i;
    int32_t sp = i < len ? special_at(t, text + i, plain ? len - i : room, !plain) : -1;
    if (sp < 0 && i < len) {
      i++;
      continue;
    }
    if (i > frag) {
      if (t->kind == KIND_BPE)
        rc = bpe_fragment(t, &w, text + frag, i - frag, md, &pieces, &tmp, &ids);
      else
        spm_fragment(t, &w, text + frag, i - frag, t->add_space_prefix && prev_special, &ids);
      prev_special = false;
    }
    if (sp < 0) break; /* i == len */
    ivec_push(&ids, sp);
    prev_special = true;
    i += t->text_len[sp];
    frag = i;
  }
  if (md) pcre2_match_data_free(md);
  work_free(&w);
  free(pieces.v), free(tmp.v);
  int64_t n = ids.n;
  if (rc == 0 && n && cap) memcpy(out, ids.v, (size_t)(n < cap ? n : cap) * sizeof *out);
  free(ids.v);
  return rc < 0 ? -1 : n;
}

int64_t kn_tokenizer_split(const kiln_tokenizer *t, const char *text, size_t len, size_t *lens,
                           int64_t cap) {
  if (!t || t->kind != KIND_BPE || (!text && len)) {
    kn_err("tokenizer_split: needs a BPE tokenizer and text");
    return -1;
  }
  for (size_t i = 0, l; i < len; i += l)
    if (!(l = utf8_valid((const unsigned char *)text + i, len - i))) {
      kn_err("tokenizer_split: invalid UTF-8 at byte %zu", i);
      return -1;
    }
  svec pieces = {0}, tmp = {0};
  pcre2_match_data *md = pcre2_match_data_create(1, NULL);
  int64_t n = len ? pre_split(t, text, len, md, &pieces, &tmp) : 0;
  if (n == 0) {
    n = (int64_t)pieces.n;
    for (int64_t i = 0; i < n && i < cap; i++)
      lens[i] = pieces.v[i].len;
  }
  pcre2_match_data_free(md);
  free(pieces.v), free(tmp.v);
  return n;
}

/* ---- building -------------------------------------------------------------------------------- */
kn_tok_spec kn_tok_spec_init(void) {
  return (kn_tok_spec){.bos = -2,
                       .eos = -2,
                       .eot = -2,
                       .eom = -2,
                       .unk = -2,
                       .pad = -2,
                       .add_bos = -1,
                       .add_space_prefix = -1};
}

void kiln_tokenizer_free(kiln_tokenizer *t) {
  if (!t) return;
  for (int s = 0; s < t->n_stages; s++)
    pcre2_code_free(t->stage[s]);
  free(t->text), free(t->text_off), free(t->text_len), free(t->score), free(t->type);
  free(t->eog), free(t->piece), free(t->piece_off), free(t->piece_len), free(t->idx);
  free(t->merges), free(t->special);
  free(t);
}

static int build_index(kiln_tokenizer *t) {
  uint64_t slots = 16;
  while (slots < 2 * (uint64_t)t->n_vocab)
    slots *= 2;
  t->idx_mask = slots - 1;
  t->idx = kn_xmalloc(slots * sizeof *t->idx);
  memset(t->idx, 0xFF, slots * sizeof *t->idx);
  for (int32_t id = 0; id < t->n_vocab; id++) {
    size_t n;
    const char *s = tok_text(t, id, &n);
    uint64_t i = hash_text(s, n) & t->idx_mask;
    for (; t->idx[i] >= 0; i = (i + 1) & t->idx_mask) {
      int32_t o = t->idx[i];
      if (t->text_len[o] == n && !memcmp(t->text + t->text_off[o], s, n)) break;
    }
    if (t->idx[i] < 0) t->idx[i] = id; /* a duplicate text keeps its first id */
  }
  return 0;
}

static int build_merges(kiln_tokenizer *t, const kn_tok_spec *sp) {
  if (sp->n_merges <= 0) return 0;
  if (sp->n_merges > INT32_MAX / 2 || !sp->merges) {
    kn_err("tokenizer: bad merge list (%lld merges)", (long long)sp->n_merges);
    return -1;
  }
  uint64_t slots = 16;
  while (slots < 2 * (uint64_t)sp->n_merges)
    slots *= 2;
  t->merge_mask = slots - 1;
  t->merges = kn_xcalloc(slots, sizeof *t->merges);
  char *cat = NULL;
  size_t cat_cap = 0;
  for (int64_t r = 0; r < sp->n_merges; r++) {
    const char *m = sp->merges[r];
    const char *sep = m && m[0] ? strchr(m + 1, ' ') : NULL; /* a side may start with a space */
    if (!sep) {
      kn_err("tokenizer: merge %lld is not \"left right\": '%s'", (long long)r, m ? m : "(null)");
      free(cat);
      return -1;
    }
    size_t ln = (size_t)(sep - m), rn = strlen(sep + 1);
    int32_t l = find_text(t, m, ln), rr = find_text(t, sep + 1, rn);
    if (ln + rn + 1 > cat_cap) cat_cap = 2 * (ln + rn + 1), cat = kn_xrealloc(cat, cat_cap);
    memcpy(cat, m, ln), memcpy(cat + ln, sep + 1, rn);
    int32_t merged = find_mergeable(t, cat, ln + rn);
    if (l < 0 || rr < 0 || merged < 0) continue; /* unreachable or producing no token */
    uint64_t key = ((uint64_t)(uint32_t)l << 32 | (uint32_t)rr) + 1;
    uint64_t i = hash_pair(key) & t->merge_mask;
    while (t->merges[i].key && t->merges[i].key != key)
      i = (i + 1) & t->merge_mask;
    if (t->merges[i].key) continue; /* a repeated pair keeps its best rank */
    t->merges[i] = (merge_slot){key, (int32_t)r, merged};
  }
  free(cat);
  return 0;
}

/* Specials sorted by first byte, then longest first. */
typedef struct {
  uint32_t first, len;
  int32_t id;
} special_key;

static int cmp_special(const void *pa, const void *pb) {
  const special_key *a = pa, *b = pb;
  if (a->first != b->first) return a->first < b->first ? -1 : 1;
  if (a->len != b->len) return a->len > b->len ? -1 : 1;
  return a->id < b->id ? -1 : a->id > b->id;
}

static void build_specials(kiln_tokenizer *t) {
  size_t n = 0;
  special_key *keys = kn_xmalloc(((size_t)t->n_vocab + 1) * sizeof *keys);
  for (int32_t id = 0; id < t->n_vocab; id++) {
    int ty = t->type[id];
    if ((ty == KN_TOK_CONTROL || ty == KN_TOK_USER || ty == KN_TOK_UNKNOWN) && t->text_len[id])
      keys[n++] = (special_key){(unsigned char)t->text[t->text_off[id]], t->text_len[id], id};
  }
  qsort(keys, n, sizeof *keys, cmp_special);
  t->special = kn_xmalloc((n + 1) * sizeof *t->special);
  size_t k = 0;
  for (uint32_t b = 0; b <= 256; b++) {
    t->special_start[b] = (int32_t)k;
    for (; b < 256 && k < n && keys[k].first == b; k++)
      t->special[k] = keys[k].id;
  }
  free(keys);
}

/* Decoded bytes of every token. */
static void build_pieces(kiln_tokenizer *t) {
  size_t total = 0;
  for (int32_t id = 0; id < t->n_vocab; id++)
    total += t->text_len[id] + 1;
  t->piece = kn_xmalloc(total ? total : 1);
  t->piece_off = kn_xmalloc((size_t)t->n_vocab * sizeof *t->piece_off);
  t->piece_len = kn_xmalloc((size_t)t->n_vocab * sizeof *t->piece_len);
  size_t k = 0;
  for (int32_t id = 0; id < t->n_vocab; id++) {
    size_t n;
    const unsigned char *s = (const unsigned char *)tok_text(t, id, &n);
    char *o = t->piece + k;
    size_t m = 0;
    int ty = t->type[id];
    if (ty == KN_TOK_USER) {
      memcpy(o, s, n), m = n;
    } else if (ty == KN_TOK_BYTE) {
      unsigned v;
      if (n == 6 && sscanf((const char *)s, "<0x%2X>", &v) == 1) o[m++] = (char)v;
    } else if (ty == KN_TOK_NORMAL || ty == KN_TOK_UNDEFINED) {
      for (size_t i = 0; i < n;) {
        size_t l = utf8_valid(s + i, n - i);
        if (!l) { /* not UTF-8: kept as it is */
          o[m++] = (char)s[i++];
          continue;
        }
        uint32_t cp = utf8_get(s + i, l);
        if (t->kind == KIND_BPE && cp < 324 && g_cp_byte[cp] >= 0)
          o[m++] = (char)g_cp_byte[cp];
        else if (t->kind == KIND_SPM && cp == 0x2581)
          o[m++] = ' ';
        else
          memcpy(o + m, s + i, l), m += l;
        i += l;
      }
    } /* control, unknown and unused tokens decode to nothing */
    t->piece_off[id] = k;
    t->piece_len[id] = (uint32_t)m;
    o[m] = 0;
    k += m + 1;
  }
}

static bool text_is(const kiln_tokenizer *t, int32_t id, const char *s) {
  return t->text_len[id] == strlen(s) && !memcmp(t->text + t->text_off[id], s, t->text_len[id]);
}

/* Special ids: a given id if in range, else -1 when given as -1 or absent with no default. */
static int32_t pick_id(const kiln_tokenizer *t, int64_t given, int32_t dflt) {
  if (given >= 0 && given < t->n_vocab) return (int32_t)given;
  if (given == -2 && dflt < t->n_vocab) return dflt;
  return -1; /* out of range ids are treated as absent */
}

/* The texts that end a turn or the text in the chat vocabularies kiln knows. */
static const char *const g_eog_texts[] = {
    "<|eot_id|>", "<|im_end|>",      "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|eom_id|>", "<|end_of_text|>", "<EOT>",   "<|return|>",    "<end_of_utterance>",
};

kiln_tokenizer *kn_tokenizer_build(const kn_tok_spec *sp) {
  byte_alphabet_init();
  if (!sp || !sp->model) {
    kn_err("tokenizer: no tokenizer model given (tokenizer.ggml.model)");
    return NULL;
  }
  int kind;
  if (!strcmp(sp->model, "gpt2"))
    kind = KIND_BPE;
  else if (!strcmp(sp->model, "llama"))
    kind = KIND_SPM;
  else {
    kn_err("tokenizer: unsupported tokenizer model '%s' (supported: gpt2, llama)", sp->model);
    return NULL;
  }
  const pre_kind *pk = NULL;
  if (kind == KIND_BPE) {
    const char *pre = sp->pre && sp->pre[0] ? sp->pre : "default";
    if (!(pk = find_pre(pre))) { /* a model newer than kiln: the default split, said once */
      fprintf(stderr,
              "kiln: tokenizer: unknown pre-tokenizer '%.64s' (tokenizer.ggml.pre); using the "
              "default one, so some texts may split differently than the model expects\n",
              pre);
      pk = find_pre("default");
    }
    if (sp->n_merges <= 0) {
      kn_err("tokenizer: a gpt2 tokenizer needs merges (tokenizer.ggml.merges)");
      return NULL;
    }
  }
  if (sp->n_vocab <= 0 || sp->n_vocab > INT32_MAX / 2 || !sp->tokens) {
    kn_err("tokenizer: bad vocabulary size %lld", (long long)sp->n_vocab);
    return NULL;
  }
  kiln_tokenizer *t = kn_xcalloc(1, sizeof *t);
  t->kind = kind;
  t->n_vocab = (int32_t)sp->n_vocab;
  size_t n = (size_t)sp->n_vocab, total = 0;
  t->text_off = kn_xmalloc(n * sizeof *t->text_off);
  t->text_len = kn_xmalloc(n * sizeof *t->text_len);
  t->score = kn_xcalloc(n, sizeof *t->score);
  t->type = kn_xmalloc(n);
  t->eog = kn_xcalloc(n, 1);
  for (size_t i = 0; i < n; i++) {
    const char *s = sp->tokens[i];
    size_t l = sp->token_lens ? sp->token_lens[i] : s ? strlen(s) : 0;
    if (!s || l > UINT32_MAX / 2) {
      kn_err("tokenizer: token %zu is %s", i, s ? "too long" : "missing");
      kiln_tokenizer_free(t);
      return NULL;
    }
    t->text_off[i] = total;
    t->text_len[i] = (uint32_t)l;
    total += l + 1;
    int32_t ty = sp->types ? sp->types[i] : KN_TOK_NORMAL;
    t->type[i] = (uint8_t)(ty >= KN_TOK_UNDEFINED && ty <= KN_TOK_BYTE ? ty : KN_TOK_UNDEFINED);
    if (sp->scores) t->score[i] = sp->scores[i];
  }
  t->text = kn_xmalloc(total);
  for (size_t i = 0; i < n; i++) {
    memcpy(t->text + t->text_off[i], sp->tokens[i], t->text_len[i]);
    t->text[t->text_off[i] + t->text_len[i]] = 0;
  }
  build_index(t);
  if (build_merges(t, sp) < 0) {
    kiln_tokenizer_free(t);
    return NULL;
  }
  for (int b = 0; b < 256; b++) {
    char s[8];
    size_t l = kind == KIND_BPE ? utf8_put(s, g_byte_cp[b])
                                : (size_t)snprintf(s, sizeof s, "<0x%02X>", (unsigned)b);
    t->byte_tok[b] = kind == KIND_BPE ? find_mergeable(t, s, l) : find_text(t, s, l);
  }
  build_specials(t);
  build_pieces(t);
  if (pk) {
    compile_stages(t, pk);
    t->ignore_merges = pk->ignore_merges;
  }

  /* Ids and flags: the file's values, else the model's defaults (SentencePiece vocabularies
   * put <unk>, <s>, </s> at 0, 1, 2). */
  bool spm = kind == KIND_SPM;
  t->bos = pick_id(t, sp->bos, spm ? 1 : -1);
  t->eos = pick_id(t, sp->eos, spm ? 2 : -1);
  t->unk = pick_id(t, sp->unk, spm ? 0 : -1);
  t->pad = pick_id(t, sp->pad, -1);
  t->eot = pick_id(t, sp->eot, -1);
  t->eom = pick_id(t, sp->eom, -1);
  t->add_bos = sp->add_bos >= 0 ? sp->add_bos != 0 : spm || (pk && pk->add_bos);
  t->add_space_prefix = spm && (sp->add_space_prefix >= 0 ? sp->add_space_prefix != 0 : true);
  for (size_t k = 0; k < sizeof g_eog_texts / sizeof g_eog_texts[0]; k++) {
    int32_t id = find_text(t, g_eog_texts[k], strlen(g_eog_texts[k]));
    if (id < 0) continue;
    t->eog[id] = 1;
    if (t->eot < 0 && !text_is(t, id, "<|endoftext|>") && !text_is(t, id, "<|eom_id|>"))
      t->eot = id;
  }
  if (t->eom < 0) t->eom = find_text(t, "<|eom_id|>", 10);
  int32_t ends[3] = {t->eos, t->eot, t->eom};
  for (int k = 0; k < 3; k++)
    if (ends[k] >= 0) t->eog[ends[k]] = 1;
  return t;
}

/* ---- GGUF -------------------------------------------------------------------------------------
 */
/* An array kv of the expected element kind (int, float or string) with at least min entries,
 * or -1 (absent, when optional) / -2 (an error, reported). */
static int64_t gguf_array(const kiln_gguf *g, const char *key, int kind, int64_t min,
                          bool required) {
  int64_t i = kiln_gguf_find_key(g, key);
  if (i < 0) {
    if (!required) return -1;
    kn_err("tokenizer: the model file has no %s", key);
    return -2;
  }
  int et = kiln_gguf_kv_type(g, i) == KILN_GGUF_ARRAY ? (int)kiln_gguf_arr_type(g, i) : -1;
  bool ok = kind == 's'   ? et == KILN_GGUF_STRING
            : kind == 'f' ? (et == KILN_GGUF_F32 || et == KILN_GGUF_F64 || et == KILN_GGUF_I32)
                          : (et <= KILN_GGUF_I32 || et == KILN_GGUF_U64 || et == KILN_GGUF_I64);
  if (et < 0 || !ok) {
    kn_err("tokenizer: %s is not an array of %s", key,
           kind == 's'   ? "strings"
           : kind == 'f' ? "numbers"
                         : "integers");
    return -2;
  }
  if (kiln_gguf_arr_len(g, i) < min) {
    kn_err("tokenizer: %s has %lld entries, fewer than the %lld tokens", key,
           (long long)kiln_gguf_arr_len(g, i), (long long)min);
    return -2;
  }
  return i;
}

kiln_tokenizer *kiln_tokenizer_from_gguf(const kiln_gguf *g) {
  if (!g) {
    kn_err("tokenizer: the model file is NULL");
    return NULL;
  }
  kn_tok_spec sp = kn_tok_spec_init();
  sp.model = kiln_gguf_get_str(g, "tokenizer.ggml.model");
  if (!sp.model) {
    kn_err("tokenizer: the model file has no tokenizer.ggml.model (a string)");
    return NULL;
  }
  sp.pre = kiln_gguf_get_str(g, "tokenizer.ggml.pre");
  int64_t ti = gguf_array(g, "tokenizer.ggml.tokens", 's', 1, true);
  if (ti < 0) return NULL;
  sp.n_vocab = kiln_gguf_arr_len(g, ti);
  if (sp.n_vocab > INT32_MAX / 2) {
    kn_err("tokenizer: %lld tokens is too many", (long long)sp.n_vocab);
    return NULL;
  }
  int64_t si = gguf_array(g, "tokenizer.ggml.scores", 'f', sp.n_vocab, false);
  int64_t yi = gguf_array(g, "tokenizer.ggml.token_type", 'i', sp.n_vocab, false);
  int64_t mi = gguf_array(g, "tokenizer.ggml.merges", 's', 0, false);
  if (si == -2 || yi == -2 || mi == -2) return NULL;
  size_t n = (size_t)sp.n_vocab;
  const char **tokens = kn_xmalloc(n * sizeof *tokens);
  size_t *lens = kn_xmalloc(n * sizeof *lens);
  float *scores = si >= 0 ? kn_xmalloc(n * sizeof *scores) : NULL;
  int32_t *types = yi >= 0 ? kn_xmalloc(n * sizeof *types) : NULL;
  int64_t nm = mi >= 0 ? kiln_gguf_arr_len(g, mi) : 0;
  const char **merges = nm > 0 ? kn_xmalloc((size_t)nm * sizeof *merges) : NULL;
  kiln_tokenizer *t = NULL;
  for (size_t i = 0; i < n; i++) {
    double d;
    int64_t v;
    tokens[i] = kiln_gguf_arr_str(g, ti, (int64_t)i, &lens[i]);
    if (!tokens[i] || (scores && !kiln_gguf_arr_float(g, si, (int64_t)i, &d)) ||
        (types && !kiln_gguf_arr_int(g, yi, (int64_t)i, &v))) {
      kn_err("tokenizer: cannot read the metadata of token %zu", i);
      goto done;
    }
    if (scores) scores[i] = (float)d;
    if (types) types[i] = v >= 0 && v <= KN_TOK_BYTE ? (int32_t)v : KN_TOK_UNDEFINED;
  }
  for (int64_t r = 0; r < nm; r++) {
    size_t l;
    if (!(merges[r] = kiln_gguf_arr_str(g, mi, r, &l))) {
      kn_err("tokenizer: cannot read merge %lld", (long long)r);
      goto done;
    }
  }
  sp.tokens = tokens, sp.token_lens = lens, sp.scores = scores, sp.types = types;
  sp.merges = merges, sp.n_merges = nm;
  static const struct {
    const char *key;
    size_t field;
  } ids[] = {
      {"tokenizer.ggml.bos_token_id", offsetof(kn_tok_spec, bos)},
      {"tokenizer.ggml.eos_token_id", offsetof(kn_tok_spec, eos)},
      {"tokenizer.ggml.eot_token_id", offsetof(kn_tok_spec, eot)},
      {"tokenizer.ggml.eom_token_id", offsetof(kn_tok_spec, eom)},
      {"tokenizer.ggml.unknown_token_id", offsetof(kn_tok_spec, unk)},
      {"tokenizer.ggml.padding_token_id", offsetof(kn_tok_spec, pad)},
  };
  for (size_t k = 0; k < sizeof ids / sizeof ids[0]; k++) {
    int64_t v;
    if (kiln_gguf_get_int(g, ids[k].key, &v)) *(int64_t *)((char *)&sp + ids[k].field) = v;
  }
  int64_t flag;
  if (kiln_gguf_get_int(g, "tokenizer.ggml.add_bos_token", &flag)) sp.add_bos = flag != 0;
  if (kiln_gguf_get_int(g, "tokenizer.ggml.add_space_prefix", &flag))
    sp.add_space_prefix = flag != 0;
  t = kn_tokenizer_build(&sp);
done:
  free(tokens), free(lens), free(scores), free(types), free(merges);
  return t;
}

/* ---- queries ----------------------------------------------------------------------------------
 */
static bool id_ok(const kiln_tokenizer *t, int32_t id) { return t && id >= 0 && id < t->n_vocab; }

const char *kiln_token_piece(const kiln_tokenizer *t, int32_t id, bool special, size_t *len) {
  if (!id_ok(t, id)) {
    kn_err("token_piece: bad token id %d (vocabulary of %d)", (int)id, t ? (int)t->n_vocab : 0);
    if (len) *len = 0;
    return NULL;
  }
  int ty = t->type[id];
  if (special && (ty == KN_TOK_CONTROL || ty == KN_TOK_UNKNOWN)) {
    if (len) *len = t->text_len[id];
    return t->text + t->text_off[id];
  }
  if (len) *len = t->piece_len[id];
  return t->piece + t->piece_off[id];
}

int32_t kiln_token_find(const kiln_tokenizer *t, const char *text, size_t len) {
  return t && (text || !len) ? find_text(t, text ? text : "", len) : -1;
}

int kn_token_type(const kiln_tokenizer *t, int32_t id) { return id_ok(t, id) ? t->type[id] : -1; }
int32_t kiln_tokenizer_n_vocab(const kiln_tokenizer *t) { return t ? t->n_vocab : 0; }
int32_t kiln_token_bos(const kiln_tokenizer *t) { return t ? t->bos : -1; }
int32_t kiln_token_eos(const kiln_tokenizer *t) { return t ? t->eos : -1; }
int32_t kiln_token_eot(const kiln_tokenizer *t) { return t ? t->eot : -1; }
bool kiln_token_is_eog(const kiln_tokenizer *t, int32_t id) { return id_ok(t, id) && t->eog[id]; }
bool kiln_tokenizer_add_bos(const kiln_tokenizer *t) { return t && t->add_bos; }

/* ---- streaming detokenizer ----------------------------------------------------------------------
 * Bytes of decoded pieces queue up; what is sure to be complete text (whole characters, with
 * U+FFFD for bytes that cannot be part of one) moves to the ready queue, from which calls
 * write. An incomplete tail waits in the pending queue for the next token. */
struct kiln_detok {
  const kiln_tokenizer *t;
  bool special, started;
  char *ready;
  size_t ready_n, ready_pos, ready_cap;
  unsigned char pend[4];
  size_t pend_n;
};

kiln_detok *kiln_detok_new(const kiln_tokenizer *t, bool special) {
  if (!t) {
    kn_err("detok: the tokenizer is NULL");
    return NULL;
  }
  kiln_detok *d = kn_xcalloc(1, sizeof *d);
  d->t = t;
  d->special = special;
  return d;
}

void kiln_detok_free(kiln_detok *d) {
  if (!d) return;
  free(d->ready);
  free(d);
}

static void ready_add(kiln_detok *d, const void *p, size_t n) {
  if (d->ready_pos && d->ready_pos == d->ready_n) d->ready_pos = d->ready_n = 0;
  if (d->ready_n + n > d->ready_cap) {
    d->ready_cap = 2 * (d->ready_n + n) + 64;
    d->ready = kn_xrealloc(d->ready, d->ready_cap);
  }
  memcpy(d->ready + d->ready_n, p, n);
  d->ready_n += n;
}

/* Moves the complete characters at the front of the pending bytes to ready. */
static void detok_feed(kiln_detok *d, const unsigned char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    d->pend[d->pend_n++] = s[i];
    for (;;) {
      if (!d->pend_n) break;
      size_t l = utf8_valid(d->pend, d->pend_n);
      if (l) {
        ready_add(d, d->pend, l);
      } else if (utf8_incomplete(d->pend, d->pend_n)) {
        break; /* wait for more */
      } else {
        ready_add(d, "\xEF\xBF\xBD", 3); /* the first byte cannot start this character */
        l = 1;
      }
      memmove(d->pend, d->pend + l, d->pend_n - l);
      d->pend_n -= l;
    }
  }
}

static int64_t ready_write(kiln_detok *d, char *out, size_t cap) {
  size_t k = 0;
  while (d->ready_pos < d->ready_n) { /* whole characters only */
    size_t l = utf8_valid((unsigned char *)d->ready + d->ready_pos, d->ready_n - d->ready_pos);
    if (!l) l = 1;
    if (k + l > cap) break;
    memcpy(out + k, d->ready + d->ready_pos, l);
    k += l;
    d->ready_pos += l;
  }
  return (int64_t)k;
}

int64_t kiln_detok_push(kiln_detok *d, int32_t id, char *out, size_t cap) {
  if (!d || (cap && !out)) {
    kn_err("detok: %s is NULL", d ? "out" : "the detokenizer");
    return -1;
  }
  if (id != -1) {
    size_t n;
    const char *p = kiln_token_piece(d->t, id, d->special, &n);
    if (!p) return -1;
    if (!d->started && n) { /* the space the encoder put before the text */
      d->started = true;
      if (d->t->kind == KIND_SPM && d->t->add_space_prefix && p[0] == ' ') p++, n--;
    }
    detok_feed(d, (const unsigned char *)p, n);
  }
  return ready_write(d, out, cap);
}

int64_t kiln_detok_flush(kiln_detok *d, char *out, size_t cap) {
  if (!d || (cap && !out)) {
    kn_err("detok: %s is NULL", d ? "out" : "the detokenizer");
    return -1;
  }
  if (d->pend_n) {
    d->pend_n = 0;
    ready_add(d, "\xEF\xBF\xBD", 3);
  }
  int64_t k = ready_write(d, out, cap);
  if (d->ready_pos == d->ready_n) d->started = false;
  return k;
}
