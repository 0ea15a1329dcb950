/* fuzz_api.c — libFuzzer target for `kiln serve`'s request parser (src/serve/api.c): any bytes
 * as a chat or completion body must parse or be refused with a 400, never crash or leak; what
 * parses must build answers and run through the stop matcher. Built with -DKILN_FUZZ=ON (clang),
 * not part of kiln_tests. */
#include <stdlib.h>
#include <string.h>

#include "serve/serve.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
  kiln_sampler_params sp = {0.8, 40, 0.95, 0.05, 1.0, 64, 0, 0, 1};
  ks_kind kind = size && (data[0] & 1) ? KS_COMPLETION : KS_CHAT; /* one input byte picks */
  ks_request r;
  ks_error e;
  if (ks_parse_request((const char *)data, size, kind, &sp, &r, &e) < 0) {
    if (e.status != 400 && e.status != 500) abort();
    char *json = ks_error_json(e.status, e.message, e.param);
    free(json);
    return 0;
  }
  const char *text = kind == KS_CHAT ? r.msgs[r.nmsg - 1].content : r.prompt;
  ks_resp_head h = {"id", "model", 0, kind};
  free(ks_response_json(&h, text, strlen(text), "stop", 1, 1));
  free(ks_chunk_json(&h, text, strlen(text), true, NULL));
  /* the text through the stop matcher in two pieces: what comes out is a prefix of it */
  ks_stopper st;
  ks_buf out = {0};
  ks_stop_init(&st, r.stop, r.nstop);
  size_t len = strlen(text), half = len / 2;
  if (ks_stop_push(&st, text, half, &out) == 0 &&
      ks_stop_push(&st, text + half, len - half, &out) == 0)
    ks_stop_finish(&st, &out);
  if (out.n > len || (out.n && memcmp(out.p, text, out.n))) abort();
  ks_buf_free(&out);
  ks_stop_free(&st);
  ks_request_free(&r);
  return 0;
}
