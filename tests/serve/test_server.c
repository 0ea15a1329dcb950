/* test_server.c — `kiln serve` as a user runs it: the built `kiln` binary beside kiln_tests,
 * started on a free port with the SmolLM2 model, driven by the official openai client
 * (openai_check.py) and by headless Chromium on its page (page_check.py), then stopped with
 * SIGTERM, which must end it with status 0. Skipped with a note when a piece is missing. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <libgen.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"
#include "util.h"

#define API_KEY "kiln-test-key"
#define TIMEOUT_S "2" /* the slow-client check waits for this */

typedef struct {
  pid_t pid;
  char url[128], dir[1024], log[1200];
} served;

static bool serve_binary(char *buf, size_t n) {
  char self[4096];
  ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) return false;
  self[len] = '\0';
  snprintf(buf, n, "%s/kiln", dirname(self));
  return access(buf, X_OK) == 0;
}

static void sleep_ms(int ms) {
  struct timespec t = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&t, NULL);
}

/* Starts `kiln serve` on port 0 (the kernel picks a free one) and waits for its URL. */
static bool serve_start(served *s, const char *kiln, const char *model, const char *parallel) {
  memset(s, 0, sizeof *s);
  if (!test_tmp_dir(s->dir, sizeof s->dir)) return false;
  snprintf(s->log, sizeof s->log, "%s/serve.log", s->dir);
  s->pid = fork();
  if (s->pid < 0) return false;
  if (s->pid == 0) {
    int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd >= 0) dup2(fd, 1), dup2(fd, 2);
    setenv("KILN_TUNE", "0", 1); /* the kernel search is tested elsewhere; here it only costs */
    execl(kiln, kiln, "serve", "-m", model, "--port", "0", "--parallel", parallel, "--api-key",
          API_KEY, "--timeout", TIMEOUT_S, (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 600; i++) { /* 60 s */
    FILE *f = fopen(s->log, "r");
    char line[512];
    while (f && fgets(line, sizeof line, f)) {
      const char *u = strstr(line, "listening on ");
      if (u && sscanf(u + 13, "%127s", s->url) == 1) {
        fclose(f);
        return true;
      }
    }
    if (f) fclose(f);
    int st;
    if (waitpid(s->pid, &st, WNOHANG) == s->pid) {
      s->pid = 0;
      return false;
    }
    sleep_ms(100);
  }
  return false;
}

/* SIGTERM; returns the exit status (-1: killed by a signal or still running after 30 s). */
static int serve_stop(served *s) {
  if (s->pid <= 0) return -1;
  kill(s->pid, SIGTERM);
  for (int i = 0; i < 300; i++) {
    int st;
    if (waitpid(s->pid, &st, WNOHANG) == s->pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    sleep_ms(100);
  }
  kill(s->pid, SIGKILL);
  waitpid(s->pid, NULL, 0);
  return -1;
}

static void print_log(const served *s) {
  char cmd[1400], q[1300];
  if (!test_shell_quote(q, sizeof q, s->log)) return;
  snprintf(cmd, sizeof cmd, "tail -n 20 %s", q);
  int rc;
  char *out = test_run_alloc(cmd, &rc);
  if (out) printf("server log:\n%s\n", out);
  free(out);
}

/* What a test needs before it starts a server; false (with a note printed) to skip. */
static bool ready(const char *test, const char *module, char *kiln, char *model) {
  if (!serve_binary(kiln, 4096)) {
    printf("note: %s skipped: the kiln binary is not beside kiln_tests\n", test);
    return false;
  }
  if (!smollm2_path(model, 4096)) {
    printf("note: %s skipped: no SmolLM2 model; get it with scripts/fetch-model\n", test);
    return false;
  }
  char cmd[256], out[256];
  snprintf(cmd, sizeof cmd, "python3 -c 'import %s'", module);
  if (test_run(cmd, out, sizeof out) != 0) {
    printf("note: %s skipped: python3 with the %s module is needed (scripts/setup)\n", test,
           module);
    return false;
  }
  return true;
}

/* Runs python3 tests/serve/SCRIPT URL KEY ARG against a fresh server and stops it. */
static void check_with_script(const char *test, const char *module, const char *script,
                              const char *parallel, const char *arg_file) {
  char kiln[4096], model[4096], path[1024];
  if (!ready(test, module, kiln, model)) return;
  REQUIRE(test_path(path, sizeof path, script));
  served s;
  bool up = serve_start(&s, kiln, model, parallel);
  if (!up) print_log(&s);
  CHECKF(up, "kiln serve did not start (log: %s)", s.log);
  if (up) {
    char q[3][1300], cmd[4096], arg[1300];
    snprintf(arg, sizeof arg, "%s/%s", s.dir, arg_file);
    test_shell_quote(q[0], sizeof q[0], path);
    test_shell_quote(q[1], sizeof q[1], s.url);
    test_shell_quote(q[2], sizeof q[2], arg_file[0] ? arg : TIMEOUT_S);
    snprintf(cmd, sizeof cmd, "timeout 600 python3 %s %s %s %s", q[0], q[1], API_KEY, q[2]);
    int rc;
    char *out = test_run_alloc(cmd, &rc);
    if (rc == 77)
      printf("note: %s skipped: %s", test, out ? out : "(no output)\n");
    else {
      CHECKF(rc == 0, "%s failed (%d); its output is above", script, rc);
      if (rc != 0) { /* the whole output: a failure message keeps only its start */
        printf("%s output:\n%s\n", script, out ? out : "");
        print_log(&s);
      }
    }
    if (out && arg_file[0] && strstr(out, "screenshot: ")) printf("%s: screenshot %s\n", test, arg);
    free(out);
  }
  int status = serve_stop(&s);
  CHECKF(!up || status == 0, "kiln serve exited with %d after SIGTERM, not 0", status);
  if (!arg_file[0]) test_tmp_dir_remove(s.dir); /* the page test keeps its screenshot */
}

TEST(serve_openai_client) {
  check_with_script("serve_openai_client", "openai", "serve/openai_check.py", "4", "");
}

TEST(serve_page_in_browser) {
  check_with_script("serve_page_in_browser", "selenium", "serve/page_check.py", "2",
                    "screenshot.png");
}
