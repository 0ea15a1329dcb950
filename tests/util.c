/* util.c — the shared test helpers of util.h: files beside the tests, shell quoting, running
 * commands, scratch directories. */
#define _GNU_SOURCE
#include "util.h"
#include "kiln.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

const char *test_path(char *buf, size_t n, const char *rel) {
  /* __FILE__ is this file's path as the build named it (absolute under CMake); the others
   * cover a binary run from the repository root or from a build directory inside it. */
  const char *cands[] = {__FILE__, "tests/util.c", "../tests/util.c"};
  for (size_t i = 0; i < sizeof cands / sizeof cands[0]; i++) {
    const char *slash = strrchr(cands[i], '/');
    if (!slash) continue;
    int k = snprintf(buf, n, "%.*s/%s", (int)(slash - cands[i]), cands[i], rel);
    if (k > 0 && (size_t)k < n && access(buf, R_OK) == 0) return buf;
  }
  return NULL;
}

bool test_shell_quote(char *out, size_t n, const char *s) {
  if (n < 3) {
    if (n) out[0] = 0;
    return false;
  }
  size_t k = 0;
  out[k++] = '\'';
  /* room for the longest piece ('\'' is four bytes), the closing quote and the NUL */
  for (; *s && k + 6 <= n; s++) {
    if (*s == '\'') {
      memcpy(out + k, "'\\''", 4);
      k += 4;
    } else
      out[k++] = *s;
  }
  out[k++] = '\'';
  out[k] = 0;
  return *s == 0;
}

/* popen of cmd with stderr joined to stdout ({ } keeps the command's own redirections). */
static FILE *open_joined(const char *cmd) {
  size_t n = strlen(cmd) + 16;
  char *full = malloc(n);
  if (!full) return NULL;
  snprintf(full, n, "{ %s\n} 2>&1", cmd);
  FILE *f = popen(full, "r");
  free(full);
  return f;
}

static int close_status(FILE *f) {
  int st = pclose(f);
  return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int test_run(const char *cmd, char *out, size_t n) {
  if (n) out[0] = 0;
  FILE *f = open_joined(cmd);
  if (!f) return -1;
  size_t len = n ? fread(out, 1, n - 1, f) : 0;
  if (n) out[len] = 0;
  /* read the rest so that a long output does not kill the command with SIGPIPE */
  while (fgetc(f) != EOF) {
  }
  return close_status(f);
}

int test_run_python(const char *script, const char *mode, const char *file, char *out, size_t n) {
  char qs[1100], qf[1100], cmd[2400];
  if (!test_shell_quote(qs, sizeof qs, script) || !test_shell_quote(qf, sizeof qf, file)) return -1;
  snprintf(cmd, sizeof cmd, "python3 %s %s %s", qs, mode, qf);
  return test_run(cmd, out, n);
}

char *test_run_alloc(const char *cmd, int *rc) {
  *rc = -1;
  FILE *f = open_joined(cmd);
  if (!f) return NULL;
  size_t cap = 1 << 16, len = 0, got;
  char *b = malloc(cap + 1);
  while (b && (got = fread(b + len, 1, cap - len, f)) > 0) {
    len += got;
    if (len == cap) {
      char *nb = realloc(b, (cap *= 2) + 1);
      if (!nb) free(b);
      b = nb;
    }
  }
  while (fgetc(f) != EOF) {
  }
  *rc = close_status(f);
  if (b) b[len] = 0;
  return b;
}

bool test_tmp_dir(char *dir, size_t n) {
  const char *base = getenv("TMPDIR");
  int k = snprintf(dir, n, "%s/kiln-test-XXXXXX", base && base[0] ? base : "/tmp");
  return k > 0 && (size_t)k < n && mkdtemp(dir) != NULL;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  remove(path);
  return 0; /* carry on: remove what can be removed */
}

void test_tmp_dir_remove(const char *dir) {
  /* depth first, so a directory is emptied before it is removed; links are not followed */
  nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *smollm2_path(char *buf, size_t n) {
  const char *env = getenv("KILN_MODEL_SMOLLM2");
  if (env && *env) {
    snprintf(buf, n, "%s", env);
    return access(buf, R_OK) == 0 ? buf : NULL;
  }
  return kiln_model_find("SmolLM2", buf, n);
}

void test_unescape(char *s) {
  char *w = s;
  for (; *s; s++) {
    if (*s != '\\' || !s[1]) {
      *w++ = *s;
      continue;
    }
    s++;
    *w++ = *s == 'n' ? '\n' : *s == 'r' ? '\r' : *s == 't' ? '\t' : *s;
  }
  *w = 0;
}

/* Bytes of the Python white space character (str.isspace) at s, n bytes left, 0 if none: ASCII
 * \t-\r, \x1c-\x20 and the Unicode spaces (U+0085, U+00A0, U+1680, U+2000-U+200A, U+2028,
 * U+2029, U+202F, U+205F, U+3000), in UTF-8. */
size_t test_py_space_at(const unsigned char *s, size_t n) {
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
