/* serve.c — `kiln serve`: flags to kiln_serve_opts, SIGINT/SIGTERM to kiln_serve_stop, the URL
 * on stdout once listening. The server itself is kiln_serve (src/serve). */
#include "kiln.h"
#include "cli.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char serve_usage[] =
    "[-m MODEL] [--host 127.0.0.1] [--port 8080] [--parallel 4] [--ctx 4096] [--api-key KEY]\n"
    "                  [--timeout 30] [--chat-template NAME] [--device D] [sampling]";

static const char serve_help[] =
    "  Serves the model at http://HOST:PORT: a chat page at /, and an OpenAI-compatible API:\n"
    "  POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health.\n"
    "  --parallel N   conversations at once (each keeps its own cache of --ctx tokens)\n"
    "  --api-key KEY  /v1/ wants 'Authorization: Bearer KEY' (or set KILN_API_KEY)\n"
    "  --timeout S    drop a connection idle or trickling for S seconds\n"
    "  --port 0       any free port (the URL printed says which)\n"
    "  sampling: [--temp T] [--top-k K] [--top-p P] [--min-p P] [--repeat-penalty R]\n"
    "            [--repeat-last-n N] [--frequency-penalty F] [--presence-penalty P]:\n"
    "                 the defaults of requests that do not set them (a seed is drawn per request)\n"
    "  SIGINT or SIGTERM stops it: requests in flight are cancelled, exit status 0.\n";

static void on_signal(int sig) {
  (void)sig;
  kiln_serve_stop();
}

static void on_listen(const char *url, void *arg) {
  (void)arg;
  printf("kiln serve: listening on %s\n", url);
  fflush(stdout);
}

int cmd_serve(int argc, char **argv) {
  kiln_serve_opts o;
  kiln_serve_defaults(&o);
  o.api_key = getenv("KILN_API_KEY");
  if (o.api_key && !*o.api_key) o.api_key = NULL;
  const char *device = NULL;
  for (int i = 1; i < argc; i++) {
    int missing = 0, rc;
    long lv;
    const char *v, *a = argv[i];
    if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      printf("usage: kiln serve %s\n%s", serve_usage, serve_help);
      return EXIT_OK;
    }
#define FLAG(name) ((v = flag_value(argc, argv, &i, name, &missing)) != NULL)
#define INT(lo, hi, what)                                                                          \
  if (parse_int(v, lo, hi, &lv))                                                                   \
  return usage_error("serve: %s wants an integer in %ld..%ld, got '%s'", what, (long)(lo),         \
                     (long)(hi), v)
    if (FLAG("-m") || FLAG("--model"))
      o.model = v;
    else if (FLAG("--host"))
      o.host = v;
    else if (FLAG("--port")) {
      INT(0, 65535, "--port");
      o.port = (int)lv;
    } else if (FLAG("--parallel")) {
      INT(1, 64, "--parallel");
      o.parallel = (int)lv;
    } else if (FLAG("--ctx")) {
      INT(16, 1 << 20, "--ctx");
      o.n_ctx = lv;
    } else if (FLAG("--timeout")) {
      INT(1, 86400, "--timeout");
      o.timeout_s = (int)lv;
    } else if (FLAG("--api-key")) {
      if (!*v) return usage_error("serve: --api-key is empty");
      o.api_key = v;
    } else if (FLAG("--chat-template"))
      o.chat_template = v;
    else if ((rc = sampling_flag("serve", argc, argv, &i, false, &o.sampling)) != 0) {
      if (rc > 0) return rc - 1;
    } else if (FLAG("--device"))
      device = v;
    else if (missing)
      return usage_error("serve: %s needs a value", a);
    else
      return usage_error("serve: unknown argument '%s'", a);
#undef FLAG
#undef INT
  }
  if (device && kiln_set_device(device) < 0) {
    fprintf(stderr, "kiln: serve: --device %s: %s\n", device, kiln_error());
    return EXIT_USAGE;
  }
  if (!o.model && !(o.model = default_model())) {
    fprintf(stderr, "kiln: serve: no model given and none in the cache; fetch the default one "
                    "with scripts/fetch-model, or pass -m MODEL.gguf\n");
    return EXIT_USAGE;
  }
  if (o.chat_template && !kiln_chat_builtin(o.chat_template))
    return usage_error("serve: %s", kiln_error());
  struct sigaction sa = {.sa_handler = on_signal};
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  signal(SIGPIPE, SIG_IGN); /* a client gone mid-answer is an error return, not a signal */
  o.on_listen = on_listen;
  fprintf(stderr, "kiln serve: loading %s (%d slots)\n", o.model, o.parallel);
  if (kiln_serve(&o) < 0) { /* the message names its part: "serve: ...", "gguf: ..." */
    fprintf(stderr, "kiln: %s\n", kiln_error());
    return EXIT_RUNTIME;
  }
  fprintf(stderr, "kiln serve: stopped\n");
  return EXIT_OK;
}
