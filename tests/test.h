/* test.h — the test framework: self-registering tests, non-fatal checks, per-device runs.
 * A test is `TEST(name) { ... }`; checks record file:line and a message and carry on;
 * a test fails if any of its checks failed. main.c runs them all. */
#ifndef KILN_TEST_H
#define KILN_TEST_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kiln.h"

typedef void (*test_fn)(void);
void test_register(const char *name, const char *file, test_fn fn);

#define TEST(name)                                                                                 \
  static void test_##name(void);                                                                   \
  __attribute__((constructor)) static void test_register_##name(void) {                            \
    test_register(#name, __FILE__, test_##name);                                                   \
  }                                                                                                \
  static void test_##name(void)

/* Records one failure of the running test (printf-style message). */
void test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int test_failures(void); /* failures recorded so far in the running test */

/* A short label ("CPU", "INTERP", a case name) prefixed to failure messages; "" for none. */
void test_set_context(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
const char *test_context(void);

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    if (!(cond)) test_fail(__FILE__, __LINE__, "CHECK(%s) failed", #cond);                         \
  } while (0)

#define CHECKF(cond, ...)                                                                          \
  do {                                                                                             \
    if (!(cond)) test_fail(__FILE__, __LINE__, __VA_ARGS__);                                       \
  } while (0)

/* Stops the current (void) function when cond is false. */
#define REQUIRE(cond)                                                                              \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      test_fail(__FILE__, __LINE__, "REQUIRE(%s) failed (kiln_error: %s)", #cond, test_errmsg());  \
      return;                                                                                      \
    }                                                                                              \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
  do {                                                                                             \
    long long check_a_ = (long long)(a), check_b_ = (long long)(b);                                \
    if (check_a_ != check_b_)                                                                      \
      test_fail(__FILE__, __LINE__, "%s == %s failed: %lld vs %lld", #a, #b, check_a_, check_b_);  \
  } while (0)

#define CHECK_NEAR(a, b, tol)                                                                      \
  do {                                                                                             \
    double check_a_ = (double)(a), check_b_ = (double)(b), check_t_ = (double)(tol);               \
    if (!(fabs(check_a_ - check_b_) <= check_t_))                                                  \
      test_fail(__FILE__, __LINE__, "%s ~= %s failed: %.9g vs %.9g (tol %.3g)", #a, #b, check_a_,  \
                check_b_, check_t_);                                                               \
  } while (0)

/* Case-insensitive substring check on a possibly NULL string. */
bool test_contains(const char *s, const char *sub);
#define CHECK_CONTAINS(s, sub)                                                                     \
  do {                                                                                             \
    const char *check_s_ = (s);                                                                    \
    if (!test_contains(check_s_, (sub)))                                                           \
      test_fail(__FILE__, __LINE__, "expected \"%s\" in message \"%s\"", (sub),                    \
                check_s_ ? check_s_ : "(null)");                                                   \
  } while (0)

/* kiln_error() or "" — never NULL, for printing. */
const char *test_errmsg(void);
bool test_has_error(void);

/* The devices every op is tested on: CPU, then INTERP (the oracle), then each other device
 * that works here (CL, CUDA), or those $KILN_TEST_DEVICES names (comma-separated, INTERP
 * second). Set up by main.c. */
#define TEST_MAX_DEVICES 4
extern int test_ndevices;
extern const char *test_devices[TEST_MAX_DEVICES];

/* Runs body once per device inside its own scope, with the device selected and named in the
 * failure context. Restores the previous device after. */
void test_on_devices(void (*body)(const char *device));

/* Declares a test whose body runs on every device: TEST_DEVICES(name) { use `device` }. */
#define TEST_DEVICES(name)                                                                         \
  static void test_body_##name(const char *device);                                                \
  TEST(name) { test_on_devices(test_body_##name); }                                                \
  static void test_body_##name(const char *device)

/* base, or base mixed with $KILN_TEST_SEED when set (to explore other random cases). */
uint64_t test_seed(uint64_t base);

/* The directory the kiln disk cache lives in for this run (set up by main.c). */
const char *test_cache_dir(void);

#endif
