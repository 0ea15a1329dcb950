/* info.c — `kiln info MODEL.gguf`: what a GGUF file holds, read with the validating reader:
 * the header, every metadata value (long strings and arrays cut to one line), the tensor table
 * and totals. */
#include "kiln.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define INFO_LINE 100  /* characters of an array's elements shown before "..." */
#define INFO_STRING 80 /* a string value longer than this is cut */
#define INFO_NAME_MAX 48

static void print_size(const char *label, double bytes) {
  static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  double v = bytes;
  while (v >= 1024 && u < 4)
    v /= 1024, u++;
  if (u == 0)
    printf("%s%.0f bytes\n", label, bytes);
  else
    printf("%s%.0f bytes (%.1f %s)\n", label, bytes, v, units[u]);
}

/* "[string; 49152] "a", "b", ..." on one line of about INFO_LINE characters. */
static void print_array(const kiln_gguf *g, int64_t i) {
  char buf[INFO_STRING + 32];
  printf("%s", kiln_gguf_value_str(g, i, buf, sizeof buf));
  int64_t n = kiln_gguf_arr_len(g, i);
  size_t used = 0;
  for (int64_t j = 0; j < n; j++) {
    kiln_gguf_elem_str(g, i, j, buf, sizeof buf);
    if (j > 0 && used + strlen(buf) > INFO_LINE) {
      printf(", ...");
      return;
    }
    printf("%s%s", j ? ", " : " ", buf);
    used += strlen(buf) + 2;
  }
}

static void print_metadata(const kiln_gguf *g) {
  int64_t n = kiln_gguf_n_kv(g);
  int width = 0;
  for (int64_t i = 0; i < n; i++) {
    int len = (int)strlen(kiln_gguf_key(g, i));
    if (len > width) width = len < INFO_NAME_MAX ? len : INFO_NAME_MAX;
  }
  printf("\nmetadata (%lld):\n", (long long)n);
  for (int64_t i = 0; i < n; i++) {
    kiln_gguf_type t = kiln_gguf_kv_type(g, i);
    printf("  %-*s  %-6s  ", width, kiln_gguf_key(g, i), kiln_gguf_type_name(t));
    if (t == KILN_GGUF_ARRAY) {
      print_array(g, i);
    } else {
      char buf[INFO_STRING + 32];
      printf("%s", kiln_gguf_value_str(g, i, buf, sizeof buf));
    }
    printf("\n");
  }
}

static void print_tensors(const kiln_gguf *g) {
  int64_t n = kiln_gguf_n_tensors(g);
  int width = 4;
  for (int64_t i = 0; i < n; i++) {
    int len = (int)strlen(kiln_gguf_tensor_at(g, i)->name);
    if (len > width) width = len < INFO_NAME_MAX ? len : INFO_NAME_MAX;
  }
  printf("\ntensors (%lld):\n", (long long)n);
  printf("  %-*s  %-7s  %-26s  %14s  %14s\n", width, "name", "type", "shape", "bytes", "offset");
  double params = 0, bytes = 0;
  for (int64_t i = 0; i < n; i++) {
    const kiln_gguf_tensor *t = kiln_gguf_tensor_at(g, i);
    char shape[128];
    int o = snprintf(shape, sizeof shape, "[");
    for (int d = 0; d < t->ndim; d++)
      o += snprintf(shape + o, sizeof shape - (size_t)o, "%s%lld", d ? ", " : "",
                    (long long)t->dims[d]);
    snprintf(shape + o, sizeof shape - (size_t)o, "]");
    printf("  %-*s  %-7s  %-26s  %14zu  %14llu\n", width, t->name, kiln_ggml_type_name(t->type),
           shape, t->nbytes, (unsigned long long)t->offset);
    params += (double)t->numel;
    bytes += (double)t->nbytes;
  }
  printf("\ntotal: %.0f parameters, %.0f bytes", params, bytes);
  if (params > 0) printf(", %.3f bits per weight", 8 * bytes / params);
  printf("\n");
}

/* Whether kiln supports the file's architecture and tensor types, and if not what it lacks
 * (the architecture, or each type with how many tensors have it). */
static void print_support(const kiln_gguf *g) {
  const char *arch = kiln_gguf_get_str(g, "general.architecture");
  int64_t count[256] = {0}, n = kiln_gguf_n_tensors(g);
  bool types_ok = true;
  for (int64_t i = 0; i < n; i++) {
    int type = kiln_gguf_tensor_at(g, i)->type;
    if (!kiln_dequantize_supported(type)) count[type & 255]++, types_ok = false;
  }
  bool arch_ok = kiln_llm_arch_supported(arch);
  if (arch_ok && types_ok) {
    printf("\nsupported by kiln: architecture %s and every tensor type\n", arch);
    return;
  }
  printf("\nnot supported by kiln yet:");
  if (!arch_ok)
    printf(" architecture %s is not supported (llama and qwen2 are);", arch ? arch : "(none)");
  for (int t = 0; t < 256; t++)
    if (count[t])
      printf(" %lld tensor%s of type %s (%d) not supported;", (long long)count[t],
             count[t] > 1 ? "s" : "", kiln_ggml_type_name(t), t);
  printf("\n");
}

int cmd_info(int argc, char **argv) {
  if (argc < 2) return usage_error("info: missing the model file (usage: kiln info MODEL.gguf)");
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
    printf("usage: kiln info MODEL.gguf\n"
           "  prints a GGUF file's header, metadata and tensor table after checking all of it\n");
    return EXIT_OK;
  }
  if (argc > 2) return usage_error("info: unexpected argument '%s'", argv[2]);
  kiln_clear_error();
  kiln_gguf *g = kiln_gguf_open(argv[1]);
  if (!g) return runtime_error("info");
  printf("file: %s\n", argv[1]);
  print_size("  size: ", (double)kiln_gguf_file_size(g));
  printf("  version: %d\n  alignment: %lld\n  data section at byte: %lld\n  kv: %lld\n"
         "  tensors: %lld\n",
         kiln_gguf_version(g), (long long)kiln_gguf_alignment(g),
         (long long)kiln_gguf_data_offset(g), (long long)kiln_gguf_n_kv(g),
         (long long)kiln_gguf_n_tensors(g));
  print_metadata(g);
  print_tensors(g);
  print_support(g);
  kiln_gguf_close(g);
  return EXIT_OK;
}

/* ---- kiln tokenize: the ids (and pieces) a model's tokenizer makes of a text ---- */
static const char tokenize_usage[] =
    "usage: kiln tokenize [-m MODEL] [--ids] [--no-bos] [--special] TEXT\n"
    "  prints each token of TEXT as `ID -> 'PIECE'` (--ids: the ids alone, as [1, 2, 3])\n"
    "  -m MODEL    a GGUF file (default: the fetched SmolLM2); only its tokenizer is read\n"
    "  --no-bos    no BOS token first, even where the model wants one\n"
    "  --special   match control-token texts such as <|im_start|> in TEXT (default: plain text)\n";

/* a piece with control characters, quotes and backslashes escaped */
static void print_piece(const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)p[i];
    if (c == '\n') printf("\\n");
    else if (c == '\t') printf("\\t");
    else if (c == '\r') printf("\\r");
    else if (c == '\'' || c == '\\') printf("\\%c", c);
    else if (c < 0x20 || c == 0x7f) printf("\\x%02x", c);
    else putchar(c);
  }
}

int cmd_tokenize(int argc, char **argv) {
  const char *model = NULL, *text = NULL;
  bool ids_only = false, bos = true, special = false;
  for (int i = 1; i < argc; i++) {
    int missing = 0;
    const char *v;
    if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("%s", tokenize_usage);
      return EXIT_OK;
    } else if ((v = flag_value(argc, argv, &i, "-m", &missing)))
      model = v;
    else if (missing)
      return usage_error("tokenize: -m needs a file");
    else if (!strcmp(argv[i], "--ids"))
      ids_only = true;
    else if (!strcmp(argv[i], "--no-bos"))
      bos = false;
    else if (!strcmp(argv[i], "--special"))
      special = true;
    else if (argv[i][0] == '-' && argv[i][1])
      return usage_error("tokenize: unknown flag '%s' (kiln tokenize --help)", argv[i]);
    else if (text)
      return usage_error("tokenize: one TEXT only (quote it), got '%s' too", argv[i]);
    else
      text = argv[i];
  }
  if (!text) return usage_error("tokenize: missing TEXT (kiln tokenize --help)");
  if (!model && !(model = default_model()))
    return usage_error("tokenize: no model given and none in the cache (pass -m MODEL.gguf)");
  kiln_clear_error();
  kiln_gguf *g = kiln_gguf_open(model);
  kiln_tokenizer *t = g ? kiln_tokenizer_from_gguf(g) : NULL;
  kiln_gguf_close(g);
  if (!t) return runtime_error("tokenize");
  size_t len = strlen(text);
  bool add_bos = bos && kiln_tokenizer_add_bos(t);
  int64_t cap = (int64_t)len + 2, n;
  int32_t *ids = malloc(sizeof(int32_t) * (size_t)cap);
  if (!ids || (n = kiln_tokenize(t, text, len, add_bos, special, ids, cap)) < 0) {
    free(ids);
    kiln_tokenizer_free(t);
    return runtime_error("tokenize");
  }
  if (ids_only) {
    printf("[");
    for (int64_t i = 0; i < n; i++)
      printf("%s%d", i ? ", " : "", ids[i]);
    printf("]\n");
  } else
    for (int64_t i = 0; i < n; i++) {
      size_t pl = 0;
      const char *p = kiln_token_piece(t, ids[i], true, &pl);
      printf("%6d -> '", ids[i]);
      print_piece(p ? p : "", p ? pl : 0);
      printf("'\n");
    }
  free(ids);
  kiln_tokenizer_free(t);
  return EXIT_OK;
}
