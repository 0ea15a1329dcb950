/* test_api.c — `kiln serve`'s request parser, answer builders and stop-string matcher
 * (src/serve/api.c): valid requests land in the right fields, every kind of bad input is a
 * 400 naming its field, answers parse back as the JSON OpenAI clients expect, and stop strings
 * are cut across token boundaries. */
#include <cjson/cJSON.h>
#include <stdlib.h>

#include "serve/serve.h"
#include "test.h"

static kiln_sampler_params defaults(void) {
  kiln_sampler_params sp;
  kiln_sampler_defaults(&sp);
  sp.seed = 1234;
  return sp;
}

static int parse(const char *body, ks_kind kind, ks_request *r, ks_error *e) {
  kiln_sampler_params sp = defaults();
  return ks_parse_request(body, strlen(body), kind, &sp, r, e);
}

TEST(serve_api_parses_chat_request) {
  ks_request r;
  ks_error e;
  const char *body =
      "{\"model\":\"x\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
      "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi \"},"
      "{\"type\":\"text\",\"text\":\"there\"}]},{\"role\":\"assistant\",\"content\":\"Hello\"},"
      "{\"role\":\"user\",\"content\":\"caf\\u00e9 \xe2\x82\xac\"}],"
      "\"max_tokens\":17,\"temperature\":0.5,\"top_p\":0.9,\"seed\":42,\"stop\":[\"a\",\"bc\"],"
      "\"presence_penalty\":0.25,\"frequency_penalty\":-0.5,\"top_k\":7,\"min_p\":0.1,"
      "\"repeat_penalty\":1.1,\"stream\":true,\"stream_options\":{\"include_usage\":true},"
      "\"n\":1,\"user\":\"u\",\"logprobs\":false,\"tools\":[]}";
  REQUIRE(parse(body, KS_CHAT, &r, &e) == 0);
  CHECK_EQ_INT(r.nmsg, 4);
  CHECK(!strcmp(r.msgs[0].role, "system") && !strcmp(r.msgs[0].content, "Be brief."));
  CHECK(!strcmp(r.msgs[1].role, "user") && !strcmp(r.msgs[1].content, "Hi there"));
  CHECK(!strcmp(r.msgs[2].role, "assistant") && !strcmp(r.msgs[2].content, "Hello"));
  CHECK(!strcmp(r.msgs[3].content, "caf\xc3\xa9 \xe2\x82\xac"));
  CHECK_EQ_INT(r.max_tokens, 17);
  CHECK_NEAR(r.sp.temperature, 0.5, 0);
  CHECK_NEAR(r.sp.top_p, 0.9, 0);
  CHECK_EQ_INT(r.sp.seed, 42);
  CHECK_EQ_INT(r.nstop, 2);
  CHECK(r.nstop == 2 && !strcmp(r.stop[0], "a") && !strcmp(r.stop[1], "bc"));
  CHECK_NEAR(r.sp.presence_penalty, 0.25, 0);
  CHECK_NEAR(r.sp.frequency_penalty, -0.5, 0);
  CHECK_EQ_INT(r.sp.top_k, 7);
  CHECK_NEAR(r.sp.min_p, 0.1, 0);
  CHECK_NEAR(r.sp.repeat_penalty, 1.1, 0);
  CHECK(r.stream && r.include_usage);
  ks_request_free(&r);
}

TEST(serve_api_defaults_and_completions) {
  ks_request r;
  ks_error e;
  kiln_sampler_params sp = defaults();
  REQUIRE(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"stop\":\"END\","
                "\"max_completion_tokens\":3}",
                KS_CHAT, &r, &e) == 0);
  CHECK_EQ_INT(r.max_tokens, 3);
  CHECK(r.nstop == 1 && !strcmp(r.stop[0], "END"));
  CHECK_NEAR(r.sp.temperature, sp.temperature, 0); /* not given: the server's defaults */
  CHECK_EQ_INT(r.sp.top_k, sp.top_k);
  CHECK_EQ_INT(r.sp.seed, 1234);
  CHECK(!r.stream && !r.include_usage);
  ks_request_free(&r);
  REQUIRE(parse("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"max_tokens\":null}",
                KS_CHAT, &r, &e) == 0);
  CHECK_EQ_INT(r.max_tokens, -1);
  ks_request_free(&r);
  REQUIRE(parse("{\"model\":\"m\",\"prompt\":\"Once upon\",\"max_tokens\":5,\"temperature\":0}",
                KS_COMPLETION, &r, &e) == 0);
  CHECK(r.prompt && !strcmp(r.prompt, "Once upon"));
  CHECK_NEAR(r.sp.temperature, 0, 0);
  ks_request_free(&r);
  REQUIRE(parse("{\"prompt\":[\"one\"]}", KS_COMPLETION, &r, &e) == 0);
  CHECK(r.prompt && !strcmp(r.prompt, "one"));
  ks_request_free(&r);
}

/* Each body must be refused with status 400 and error.param == param ("" for none). */
static void expect_400(const char *body, size_t len, ks_kind kind, const char *param) {
  ks_request r;
  ks_error e;
  kiln_sampler_params sp = defaults();
  int rc = ks_parse_request(body, len, kind, &sp, &r, &e);
  CHECKF(rc < 0, "accepted: %.*s", (int)(len < 200 ? len : 200), body);
  if (rc == 0) {
    ks_request_free(&r);
    return;
  }
  CHECKF(e.status == 400, "status %d for %s", e.status, body);
  CHECKF(!strcmp(e.param, param), "param '%s' (want '%s') for %s: %s", e.param, param, body,
         e.message);
  CHECKF(e.message[0] != '\0', "no message for %s", body);
  /* and the error answer is the OpenAI shape, naming the same field */
  char *json = ks_error_json(e.status, e.message, e.param);
  cJSON *o = json ? cJSON_Parse(json) : NULL, *err = cJSON_GetObjectItem(o, "error");
  CHECK(cJSON_IsString(cJSON_GetObjectItem(err, "message")));
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(err, "type")), "invalid_request_error"));
  cJSON *p = cJSON_GetObjectItem(err, "param");
  CHECK(*param ? cJSON_IsString(p) && !strcmp(p->valuestring, param) : cJSON_IsNull(p));
  CHECK(cJSON_IsNull(cJSON_GetObjectItem(err, "code")));
  cJSON_Delete(o);
  free(json);
}
#define BAD(body, param) expect_400(body, strlen(body), KS_CHAT, param)
#define BADC(body, param) expect_400(body, strlen(body), KS_COMPLETION, param)
#define USER "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"

TEST(serve_api_rejects_bad_requests) {
  BAD("", "");
  BAD("{", "");
  BAD("{\"messages\":[}", "");
  BAD("[1,2]", "");
  BAD("\"text\"", "");
  BAD("{}", "messages");
  BAD("{\"messages\":{}}", "messages");
  BAD("{\"messages\":[]}", "messages");
  BAD("{\"messages\":[1]}", "messages[0]");
  BAD("{\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}", "messages[0].role");
  BAD("{\"messages\":[{\"content\":\"x\"}]}", "messages[0].role");
  BAD("{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":7,\"content\":\"x\"}]}",
      "messages[1].role");
  BAD("{\"messages\":[{\"role\":\"user\"}]}", "messages[0].content");
  BAD("{\"messages\":[{\"role\":\"user\",\"content\":5}]}", "messages[0].content");
  BAD("{\"messages\":[{\"role\":\"user\",\"content\":null}]}", "messages[0].content");
  BAD("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}",
      "messages[0].content");
  BAD("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":1}]}]}",
      "messages[0].content");
  BAD("{\"messages\":[{\"role\":\"assistant\",\"content\":\"\",\"tool_calls\":[{}]}]}",
      "messages[0].tool_calls");
  BAD("{" USER ",\"n\":2}", "n");
  BAD("{" USER ",\"n\":1.5}", "n");
  BAD("{" USER ",\"tools\":[{\"type\":\"function\"}]}", "tools");
  BAD("{" USER ",\"tool_choice\":\"required\"}", "tool_choice");
  BAD("{" USER ",\"logprobs\":true}", "logprobs");
  BAD("{" USER ",\"top_logprobs\":3}", "top_logprobs");
  BAD("{" USER ",\"logit_bias\":{\"1\":5}}", "logit_bias");
  BAD("{" USER ",\"response_format\":{\"type\":\"json_object\"}}", "response_format");
  BAD("{" USER ",\"frobnicate\":1}", "frobnicate");
  BAD("{" USER ",\"max_tokens\":\"5\"}", "max_tokens");
  BAD("{" USER ",\"max_tokens\":0}", "max_tokens");
  BAD("{" USER ",\"max_tokens\":2.5}", "max_tokens");
  BAD("{" USER ",\"max_completion_tokens\":-1}", "max_completion_tokens");
  BAD("{" USER ",\"temperature\":\"hot\"}", "temperature");
  BAD("{" USER ",\"temperature\":3}", "temperature");
  BAD("{" USER ",\"temperature\":-0.1}", "temperature");
  BAD("{" USER ",\"top_p\":1.5}", "top_p");
  BAD("{" USER ",\"top_k\":-2}", "top_k");
  BAD("{" USER ",\"min_p\":2}", "min_p");
  BAD("{" USER ",\"repeat_penalty\":0}", "repeat_penalty");
  BAD("{" USER ",\"presence_penalty\":5}", "presence_penalty");
  BAD("{" USER ",\"frequency_penalty\":true}", "frequency_penalty");
  BAD("{" USER ",\"seed\":0.5}", "seed");
  BAD("{" USER ",\"seed\":\"1\"}", "seed");
  BAD("{" USER ",\"stream\":1}", "stream");
  BAD("{" USER ",\"stream_options\":true}", "stream_options");
  BAD("{" USER ",\"stream_options\":{\"include_usage\":\"yes\"}}", "include_usage");
  BAD("{" USER ",\"stop\":5}", "stop");
  BAD("{" USER ",\"stop\":[\"a\",\"b\",\"c\",\"d\",\"e\"]}", "stop");
  BAD("{" USER ",\"stop\":[\"a\",3]}", "stop");
  BAD("{" USER ",\"stop\":\"\"}", "stop");
  BAD("{" USER ",\"model\":5}", "model");
  BAD("{" USER ",\"temperature\":1e999}", "temperature");
  /* invalid UTF-8: raw bytes anywhere, and escapes that decode to no character */
  BAD("{\"messages\":[{\"role\":\"user\",\"content\":\"\xff\xfe\"}]}", "");
  BAD("{\"messages\":[{\"role\":\"user\",\"content\":\"\xc0\xaf\"}]}", "");     /* overlong */
  BAD("{\"messages\":[{\"role\":\"user\",\"content\":\"\xed\xa0\x80\"}]}", ""); /* surrogate */
  BAD("{\"messages\":[{\"role\":\"user\",\"content\":\"\xe2\x82\"}]}", "");     /* cut short */
  BAD("{\"messages\":[{\"role\":\"user\",\"content\":\"\\ud800\"}]}", "");      /* lone half */
  /* a NUL inside the body */
  expect_400("{\"messages\":[{\"role\":\"user\",\"content\":\"a\0b\"}]}", 44, KS_CHAT, "");
  /* completions: their own fields */
  BADC("{}", "prompt");
  BADC("{\"prompt\":5}", "prompt");
  BADC("{\"prompt\":[\"a\",\"b\"]}", "prompt");
  BADC("{\"prompt\":\"a\",\"echo\":true}", "echo");
  BADC("{\"prompt\":\"a\",\"messages\":[]}", "messages");
  BADC("{\"prompt\":\"a\",\"suffix\":\"z\"}", "suffix");
  /* deep nesting is refused by the JSON parser, not by the stack */
  size_t depth = 20000;
  char *deep = malloc(2 * depth + 1);
  REQUIRE(deep);
  memset(deep, '[', depth);
  memset(deep + depth, ']', depth);
  expect_400(deep, 2 * depth, KS_CHAT, "");
  free(deep);
}

TEST(serve_api_utf8) {
  CHECK(ks_utf8_valid("", 0));
  CHECK(ks_utf8_valid("plain", 5));
  CHECK(ks_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
  CHECK(ks_utf8_valid("\xf4\x8f\xbf\xbf", 4));  /* U+10FFFF */
  CHECK(!ks_utf8_valid("\xf4\x90\x80\x80", 4)); /* above it */
  CHECK(!ks_utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
  CHECK(!ks_utf8_valid("\xed\xbf\xbf", 3));     /* surrogate */
  CHECK(!ks_utf8_valid("\x80", 1));             /* lone continuation */
  CHECK(!ks_utf8_valid("\xc3", 1));             /* cut short */
  CHECK(!ks_utf8_valid("\xc3\x28", 2));         /* bad continuation */
  CHECK(!ks_utf8_valid("\xf8\x88\x80\x80\x80", 5));
}

static cJSON *parsed(char *json) {
  cJSON *o = json ? cJSON_Parse(json) : NULL;
  free(json);
  return o;
}

static const char *str_at(const cJSON *o, const char *a, const char *b) {
  const cJSON *v = cJSON_GetObjectItem(o, a);
  if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
  if (b) v = cJSON_GetObjectItem(v, b);
  return cJSON_IsString(v) ? v->valuestring : NULL;
}

TEST(serve_api_builds_answers) {
  ks_resp_head h = {"chatcmpl-1", "m.gguf", 1700000000, KS_CHAT};
  /* text with a quote, a newline, a NUL cut and non-ASCII survives the round trip */
  cJSON *o = parsed(ks_response_json(&h, "a \"q\"\n\xc3\xa9", 9, "stop", 11, 4));
  REQUIRE(o);
  CHECK(!strcmp(str_at(o, "object", NULL), "chat.completion"));
  CHECK(!strcmp(str_at(o, "id", NULL), "chatcmpl-1"));
  CHECK(!strcmp(str_at(o, "model", NULL), "m.gguf"));
  CHECK_EQ_INT(cJSON_GetObjectItem(o, "created")->valuedouble, 1700000000);
  cJSON *c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(c, "finish_reason")), "stop"));
  cJSON *m = cJSON_GetObjectItem(c, "message");
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(m, "role")), "assistant"));
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(m, "content")), "a \"q\"\n\xc3\xa9"));
  cJSON *u = cJSON_GetObjectItem(o, "usage");
  CHECK_EQ_INT(cJSON_GetObjectItem(u, "prompt_tokens")->valuedouble, 11);
  CHECK_EQ_INT(cJSON_GetObjectItem(u, "completion_tokens")->valuedouble, 4);
  CHECK_EQ_INT(cJSON_GetObjectItem(u, "total_tokens")->valuedouble, 15);
  cJSON_Delete(o);

  o = parsed(ks_chunk_json(&h, "", 0, true, NULL));
  REQUIRE(o);
  CHECK(!strcmp(str_at(o, "object", NULL), "chat.completion.chunk"));
  c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(cJSON_GetObjectItem(c, "delta"), "role")),
                "assistant"));
  CHECK(cJSON_IsNull(cJSON_GetObjectItem(c, "finish_reason")));
  cJSON_Delete(o);
  o = parsed(ks_chunk_json(&h, NULL, 0, false, "length"));
  c = cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0);
  CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(c, "delta")) == 0);
  CHECK(!strcmp(cJSON_GetStringValue(cJSON_GetObjectItem(c, "finish_reason")), "length"));
  cJSON_Delete(o);
  o = parsed(ks_usage_chunk_json(&h, 3, 2));
  CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(o, "choices")) == 0);
  CHECK_EQ_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "usage"), "total_tokens")->valuedouble,
               5);
  cJSON_Delete(o);

  ks_resp_head hc = {"cmpl-1", "m.gguf", 1, KS_COMPLETION};
  o = parsed(ks_chunk_json(&hc, "xyz", 2, false, NULL));
  CHECK(!strcmp(str_at(o, "object", NULL), "text_completion"));
  CHECK(!strcmp(str_at(o, "choices", "text"), "xy"));
  cJSON_Delete(o);
  o = parsed(ks_response_json(&hc, "done", 4, "length", 1, 1));
  CHECK(!strcmp(str_at(o, "choices", "text"), "done"));
  cJSON_Delete(o);
  o = parsed(ks_models_json("m.gguf", 5));
  CHECK(!strcmp(str_at(o, "object", NULL), "list"));
  CHECK(!strcmp(str_at(o, "data", "id"), "m.gguf"));
  cJSON_Delete(o);
}

/* ---- stop strings ------------------------------------------------------------------------- */
/* Pushes the pieces in order; returns what came out (static) and whether a stop matched, and
 * checks that nothing released could still be the start of a stop string. */
static const char *run_stops(char *const *stops, int n, const char *const *pieces, bool *hit) {
  static char result[256];
  ks_stopper s;
  ks_buf out = {0};
  ks_stop_init(&s, stops, n);
  *hit = false;
  for (int i = 0; pieces[i] && !*hit; i++) {
    int rc = ks_stop_push(&s, pieces[i], strlen(pieces[i]), &out);
    CHECK(rc >= 0);
    *hit = rc == 1;
  }
  if (!*hit) CHECK(ks_stop_finish(&s, &out) == 0);
  snprintf(result, sizeof result, "%.*s", (int)out.n, out.p ? out.p : "");
  ks_buf_free(&out);
  ks_stop_free(&s);
  return result;
}

/* What is released after each push, to see text held back and let go. */
static void check_release(char *const *stops, int n, const char *const *pieces,
                          const char *const *want) {
  ks_stopper s;
  ks_buf out = {0};
  ks_stop_init(&s, stops, n);
  for (int i = 0; pieces[i]; i++) {
    ks_stop_push(&s, pieces[i], strlen(pieces[i]), &out);
    CHECKF(out.n == strlen(want[i]) && !memcmp(out.p ? out.p : "", want[i], out.n),
           "after piece %d ('%s'): released '%.*s', want '%s'", i, pieces[i], (int)out.n,
           out.p ? out.p : "", want[i]);
  }
  ks_buf_free(&out);
  ks_stop_free(&s);
}

TEST(serve_api_stop_strings) {
  bool hit;
  char *stops[] = {"END", "\n\nUser:"};
  /* a stop inside one piece: the text before it comes out, the rest is dropped */
  CHECK(!strcmp(run_stops(stops, 2, (const char *const[]){"abcENDxyz", NULL}, &hit), "abc"));
  CHECK(hit);
  /* split over several pieces */
  CHECK(
      !strcmp(run_stops(stops, 2, (const char *const[]){"ab", "E", "N", "Dzz", NULL}, &hit), "ab"));
  CHECK(hit);
  CHECK(!strcmp(run_stops(stops, 2, (const char *const[]){"Hi\n", "\nUs", "er:", "x", NULL}, &hit),
                "Hi"));
  CHECK(hit);
  /* empty pieces before any text (the sanitizer build checks nothing is copied from NULL) */
  CHECK(!strcmp(run_stops(stops, 2, (const char *const[]){"", "", "ok", "", NULL}, &hit), "ok"));
  CHECK(!hit);
  /* a partial match that turns out not to be one is released in full, in order */
  CHECK(!strcmp(run_stops(stops, 2, (const char *const[]){"x EN", "D?", NULL}, &hit), "x "));
  CHECK(hit);
  CHECK(!strcmp(run_stops(stops, 2, (const char *const[]){"x EN", "Dx", NULL}, &hit), "x "));
  CHECK(!strcmp(run_stops(stops, 2, (const char *const[]){"x EN", "d", NULL}, &hit), "x ENd"));
  CHECK(!hit);
  /* held back at the end of the text: released by finish */
  CHECK(!strcmp(run_stops(stops, 2, (const char *const[]){"tail E", NULL}, &hit), "tail E"));
  CHECK(!hit);
  /* no stop strings: everything passes at once */
  check_release(stops, 0, (const char *const[]){"a", "END", NULL},
                (const char *const[]){"a", "aEND"});
  /* what is released after each piece: held back while it could start a stop string */
  check_release(stops, 2, (const char *const[]){"ok E", "N", "x", "\n", "\nU", "z", NULL},
                (const char *const[]){"ok ", "ok ", "ok ENx", "ok ENx", "ok ENx", "ok ENx\n\nUz"});
  /* the earliest of several stops wins, even when a later one completes first */
  char *two[] = {"abcd", "bc"};
  CHECK(!strcmp(run_stops(two, 2, (const char *const[]){"xab", "c", "d", NULL}, &hit), "xa"));
  CHECK(hit);
  char *overlap[] = {"aab"};
  CHECK(!strcmp(run_stops(overlap, 1, (const char *const[]){"a", "a", "a", "b", NULL}, &hit), "a"));
  CHECK(hit);
  /* multi-byte characters: a stop string starting with one is held whole */
  char *euro[] = {"\xe2\x82\xac!"};
  CHECK(
      !strcmp(run_stops(euro, 1, (const char *const[]){"5 \xe2\x82\xac", "!", NULL}, &hit), "5 "));
  CHECK(hit);
}
