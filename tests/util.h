/* util.h — helpers the tests share for the world outside the process: files beside the tests,
 * shell quoting, running a command and reading what it printed, and scratch directories. */
#ifndef KILN_TEST_UTIL_H
#define KILN_TEST_UTIL_H

#include <stdbool.h>
#include <stddef.h>

/* The readable file rel under tests/ (e.g. "llm/ref_llama.py") written into buf, found from
 * this source file's path or the usual working directories; NULL when there is none. */
const char *test_path(char *buf, size_t n, const char *rel);

/* s in single quotes for sh, written into out (n bytes). False (out cut short) if it does not
 * fit. */
bool test_shell_quote(char *out, size_t n, const char *s);

/* Runs cmd under sh with stderr joined to stdout; the first n - 1 bytes of the output go to out
 * (NUL-terminated). Returns the exit code: 127 when sh cannot find the program, -1 when the
 * command could not be started or did not exit normally. */
int test_run(const char *cmd, char *out, size_t n);

/* test_run of `python3 SCRIPT MODE FILE`, with script and file quoted; -1 if they do not fit. */
int test_run_python(const char *script, const char *mode, const char *file, char *out, size_t n);

/* Like test_run, but returns all of the output (NUL-terminated; caller frees; NULL when the
 * command could not be started or memory ran out) and the exit code in *rc. */
char *test_run_alloc(const char *cmd, int *rc);

/* A fresh directory under $TMPDIR (or /tmp) written into dir; false if it could not be made. */
bool test_tmp_dir(char *dir, size_t n);
/* Undoes the \\n, \\r, \\t and \\\\ escapes of a fixture line, in place. */
void test_unescape(char *s);
/* Bytes of the Python white space character (str.isspace) at s, n bytes left; 0 if none. */
size_t test_py_space_at(const unsigned char *s, size_t n);

/* Removes dir and everything in it. */
void test_tmp_dir_remove(const char *dir);

/* The SmolLM2 test model (KILN_MODEL_SMOLLM2, else as scripts/fetch-model stores it) written
 * into buf; NULL when it is not here. */
const char *smollm2_path(char *buf, size_t n);

#endif
