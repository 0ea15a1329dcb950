/* test_safetensors.c — safetensors files: exact round trips of every dtype and odd shapes, names
 * that need JSON escapes, loading into an existing set, malformed files (each rejected with a
 * message naming the file and the problem), and a cross-check with an independent Python reader
 * and writer (tests/nn/safetensors_check.py, skipped when python3 or numpy is missing). */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "util.h"

/* ---- temp files ---------------------------------------------------------------------------- */
static const char *tmp_path(char *buf, size_t n, const char *dir, const char *name) {
  snprintf(buf, n, "%s/%s", dir, name);
  return buf;
}

static bool write_bytes(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return false;
  bool ok = fwrite(data, 1, n, f) == n;
  return fclose(f) == 0 && ok;
}

/* A file of: header length (little-endian), the header text as given, data_len bytes 0..255. */
static bool write_st(const char *path, const char *header, size_t hlen, size_t data_len) {
  size_t n = 8 + hlen + data_len;
  unsigned char *b = malloc(n ? n : 1);
  if (!b) return false;
  for (int i = 0; i < 8; i++)
    b[i] = (unsigned char)((uint64_t)hlen >> (8 * i));
  memcpy(b + 8, header, hlen);
  for (size_t i = 0; i < data_len; i++)
    b[8 + hlen + i] = (unsigned char)i;
  bool ok = write_bytes(path, b, n);
  free(b);
  return ok;
}

/* n bytes of b as a NUL-terminated string (caller frees). */
static char *text_of(const unsigned char *b, size_t n) {
  char *s = malloc(n + 1);
  if (s) {
    memcpy(s, b, n);
    s[n] = 0;
  }
  return s;
}

static unsigned char *read_bytes(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, len = 0;
  unsigned char *b = malloc(cap);
  size_t got;
  while (b && (got = fread(b + len, 1, cap - len, f)) > 0) {
    len += got;
    if (len == cap) b = realloc(b, cap *= 2);
  }
  fclose(f);
  *n = len;
  return b;
}

/* ---- tensors -------------------------------------------------------------------------------- */
static size_t dt_size(kiln_dtype dt) { return kiln_dtype_size(dt); }

static int64_t numel_of(int ndim, const int64_t *shape) {
  int64_t n = 1;
  for (int i = 0; i < ndim; i++)
    n *= shape[i];
  return n;
}

/* t's bytes (malloc'd, at least 1 byte) or NULL with a recorded failure. */
static unsigned char *host_bytes(kiln_tensor *t, size_t *n) {
  *n = (size_t)kiln_numel(t) * dt_size(kiln_dtype_of(t));
  unsigned char *b = malloc(*n ? *n : 1);
  if (kiln_to_host(t, b, *n) < 0) {
    test_fail(__FILE__, __LINE__, "to_host failed: %s", test_errmsg());
    free(b);
    return NULL;
  }
  return b;
}

/* Checks that t has this dtype, shape and exactly these bytes. */
static void check_tensor_at(int line, const char *what, kiln_tensor *t, kiln_dtype dt, int ndim,
                            const int64_t *shape, const void *data) {
  if (!t) {
    test_fail(__FILE__, line, "%s: tensor missing", what);
    return;
  }
  if (kiln_dtype_of(t) != dt || kiln_ndim(t) != ndim ||
      (ndim && memcmp(kiln_shape(t), shape, sizeof(int64_t) * (size_t)ndim))) {
    test_fail(__FILE__, line, "%s: got %s ndim %d, expected %s ndim %d", what,
              kiln_dtype_name(kiln_dtype_of(t)), kiln_ndim(t), kiln_dtype_name(dt), ndim);
    return;
  }
  size_t n;
  unsigned char *got = host_bytes(t, &n);
  if (got && n != (size_t)numel_of(ndim, shape) * dt_size(dt))
    test_fail(__FILE__, line, "%s: %zu bytes", what, n);
  else if (got && n && memcmp(got, data, n))
    test_fail(__FILE__, line, "%s: data differs", what);
  free(got);
}
#define CHECK_TENSOR(what, t, dt, ndim, shape, data)                                               \
  check_tensor_at(__LINE__, (what), (t), (dt), (ndim), (shape), (data))

/* Deterministic bytes: every pattern (NaN payloads, -0, denormals) for floats, 0/1 for bool. */
static void fill_bytes(unsigned char *b, size_t n, kiln_dtype dt, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; i++) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    b[i] = (unsigned char)(s >> 56);
    if (dt == KILN_BOOL) b[i] &= 1;
  }
}

/* ---- round trips ---------------------------------------------------------------------------- */
typedef struct {
  const char *name;
  kiln_dtype dt;
  int ndim;
  int64_t shape[KILN_MAX_DIMS];
} spec;

static const spec roundtrip_specs[] = {
    {"f32", KILN_F32, 2, {2, 3}},
    {"f16", KILN_F16, 1, {5}},
    {"bf16", KILN_BF16, 2, {2, 2}},
    {"i64", KILN_I64, 1, {3}},
    {"u8", KILN_U8, 1, {7}},
    {"bool", KILN_BOOL, 2, {3, 3}},
    {"f64_scalar", KILN_F64, 0, {0}},
    {"empty", KILN_F32, 3, {2, 0, 3}},
    {"i32_4d", KILN_I32, 4, {2, 1, 3, 2}},
    {"i8", KILN_I8, 1, {3}},
    {"u16", KILN_U16, 1, {3}},
    {"i16", KILN_I16, 2, {1, 3}},
    {"u32", KILN_U32, 1, {2}},
    {"u64", KILN_U64, 1, {2}},
    {"u8_scalar", KILN_U8, 0, {0}},
    {"empty_1d", KILN_I64, 1, {0}},
    {"f32_8d", KILN_F32, 8, {1, 2, 1, 1, 2, 1, 1, 2}},
};
#define NSPECS ((int)(sizeof roundtrip_specs / sizeof roundtrip_specs[0]))

TEST_DEVICES(safetensors_roundtrip) {
  (void)device;
  char dir[512], path[1024];
  REQUIRE(test_tmp_dir(dir, sizeof dir));
  tmp_path(path, sizeof path, dir, "rt.safetensors");

  unsigned char *data[NSPECS];
  size_t nbytes[NSPECS], total = 0;
  kiln_params *p = kiln_params_new();
  for (int i = 0; i < NSPECS; i++) {
    const spec *s = &roundtrip_specs[i];
    nbytes[i] = (size_t)numel_of(s->ndim, s->shape) * dt_size(s->dt);
    total += nbytes[i];
    data[i] = malloc(nbytes[i] ? nbytes[i] : 1);
    fill_bytes(data[i], nbytes[i], s->dt, (uint64_t)i + 1);
    CHECK(kiln_params_add(p, s->name, kiln_from_data(s->dt, s->ndim, s->shape, data[i])) == 0);
  }
  /* A lazy tensor: saving must realize it. 0, 2, 4, ... */
  float lazy_expect[6] = {0, 2, 4, 6, 8, 10};
  kiln_tensor *lazy = kiln_binary_s(KILN_MUL, kiln_arange(0, 6, 1, KILN_F32), 2.0);
  CHECK(kiln_params_add(p, "lazy", lazy) == 0);
  CHECK(kiln_save_safetensors(p, path) == 0);
  CHECK(!test_has_error());

  /* The layout, read byte by byte: length, a header padded with spaces, data in set order. */
  size_t fn = 0;
  unsigned char *file = read_bytes(path, &fn);
  REQUIRE(file);
  uint64_t hlen = 0;
  for (int i = 7; i >= 0 && fn >= 8; i--)
    hlen = hlen << 8 | file[i];
  CHECK_EQ_INT(hlen % 8, 0);
  CHECK_EQ_INT(fn, 8 + hlen + total + sizeof lazy_expect);
  if (fn == 8 + hlen + total + sizeof lazy_expect) {
    size_t end = 8 + hlen;
    while (end > 8 && file[end - 1] == ' ')
      end--;
    CHECK(end > 8 && file[8] == '{' && file[end - 1] == '}');
    CHECK(8 + hlen - end < 8);
    size_t off = 8 + hlen;
    for (int i = 0; i < NSPECS; i++) {
      CHECKF(!nbytes[i] || !memcmp(file + off, data[i], nbytes[i]), "data of '%s' in the file",
             roundtrip_specs[i].name);
      off += nbytes[i];
    }
    CHECK(!memcmp(file + off, lazy_expect, sizeof lazy_expect));
    /* the format's dtype names and offsets, as text */
    char *h = text_of(file + 8, hlen);
    CHECK(strstr(h, "\"f32\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}"));
    CHECK(strstr(h, "\"bf16\":{\"dtype\":\"BF16\""));
    CHECK(strstr(h, "\"bool\":{\"dtype\":\"BOOL\""));
    CHECK(strstr(h, "\"f64_scalar\":{\"dtype\":\"F64\",\"shape\":[],"));
    CHECK(strstr(h, "\"empty\":{\"dtype\":\"F32\",\"shape\":[2,0,3],"));
    free(h);
  }
  free(file);

  kiln_params *q = kiln_load_safetensors(path);
  REQUIRE(q);
  CHECK_EQ_INT(kiln_params_count(q), NSPECS + 1);
  for (int i = 0; i < NSPECS && i < kiln_params_count(q); i++) {
    const spec *s = &roundtrip_specs[i];
    CHECK(!strcmp(kiln_params_name(q, i), s->name)); /* the set's order is kept */
    CHECK_TENSOR(s->name, kiln_params_find(q, s->name), s->dt, s->ndim, s->shape, data[i]);
  }
  int64_t six = 6;
  CHECK_TENSOR("lazy", kiln_params_find(q, "lazy"), KILN_F32, 1, &six, lazy_expect);
  CHECK(!test_has_error());
  kiln_params_free(q);

  /* An empty set is a valid file too. */
  kiln_params *none = kiln_params_new();
  CHECK(kiln_save_safetensors(none, path) == 0);
  kiln_params_free(none);
  q = kiln_load_safetensors(path);
  CHECK(q && kiln_params_count(q) == 0);
  kiln_params_free(q);

  for (int i = 0; i < NSPECS; i++)
    free(data[i]);
  kiln_params_free(p);
  test_tmp_dir_remove(dir);
}

/* Tensors made by loading belong to the returned set: freeing it leaves nothing behind. */
TEST(safetensors_ownership) {
  char dir[512], path[1024];
  REQUIRE(test_tmp_dir(dir, sizeof dir));
  tmp_path(path, sizeof path, dir, "own.safetensors");
  kiln_params *p = kiln_params_new();
  int64_t shape[2] = {4, 4};
  kiln_params_add(p, "a", kiln_rand(2, shape, 1));
  kiln_params_add(p, "b", kiln_zeros(KILN_I32, 2, shape));
  REQUIRE(kiln_save_safetensors(p, path) == 0);
  kiln_stats before, after;
  kiln_get_stats(&before);
  for (int rep = 0; rep < 3; rep++) {
    kiln_scope_begin();
    kiln_params *q = kiln_load_safetensors(path);
    kiln_scope_end(); /* the loaded tensors must survive the caller's scope */
    REQUIRE(q);
    CHECK_EQ_INT(kiln_numel(kiln_params_find(q, "a")), 16);
    CHECK(kiln_item(kiln_sum(kiln_params_find(q, "b"), 0, NULL, false)) == 0);
    kiln_params_free(q);
  }
  kiln_get_stats(&after);
  CHECK_EQ_INT(after.tensors_live, before.tensors_live + 3); /* the three sums */
  kiln_params_free(p);
  test_tmp_dir_remove(dir);
}

/* ---- names ---------------------------------------------------------------------------------- */
TEST(safetensors_escaped_names) {
  char dir[512], path[1024];
  REQUIRE(test_tmp_dir(dir, sizeof dir));
  tmp_path(path, sizeof path, dir, "names.safetensors");
  static const char *const names[] = {
      "quote\"d",
      "back\\slash",
      "tab\tnew\nline\rcr\bbs\fff",
      "ctl\x01\x1f\x7f",
      "slash/and.dots",
      "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80", /* café, 日本, U+1F600 */
      "",
  };
  int nn = (int)(sizeof names / sizeof names[0]);
  kiln_params *p = kiln_params_new();
  for (int i = 0; i < nn; i++) {
    uint8_t v = (uint8_t)(10 + i);
    int64_t one = 1;
    CHECK(kiln_params_add(p, names[i], kiln_from_data(KILN_U8, 1, &one, &v)) == 0);
  }
  REQUIRE(kiln_save_safetensors(p, path) == 0);

  size_t fn;
  unsigned char *file = read_bytes(path, &fn);
  REQUIRE(file && fn > 8);
  char *h = text_of(file + 8, fn - 8);
  CHECK(strstr(h, "\"quote\\\"d\""));
  CHECK(strstr(h, "\"back\\\\slash\""));
  CHECK(strstr(h, "\"tab\\tnew\\nline\\rcr\\bbs\\fff\""));
  CHECK(strstr(h, "\"ctl\\u0001\\u001f\x7f\""));
  CHECK(strstr(h, "\"caf\xc3\xa9 ")); /* UTF-8 is written as it is */
  free(h);
  free(file);

  kiln_params *q = kiln_load_safetensors(path);
  REQUIRE(q);
  CHECK_EQ_INT(kiln_params_count(q), nn);
  for (int i = 0; i < nn && i < kiln_params_count(q); i++) {
    CHECKF(!strcmp(kiln_params_name(q, i), names[i]), "name %d: '%s'", i, kiln_params_name(q, i));
    uint8_t v = (uint8_t)(10 + i);
    int64_t one = 1;
    CHECK_TENSOR(names[i], kiln_params_find(q, names[i]), KILN_U8, 1, &one, &v);
  }
  kiln_params_free(q);
  kiln_params_free(p);

  /* Escapes another writer may use: \u in both cases, a surrogate pair, \/, spaces. */
  static const char hdr[] =
      " {\n  \"__metadata__\" : {\"format\": \"pt\", \"w\\u00e9\": \"\\\"\"},\n"
      "  \"\\u00E9\\ud83d\\uDE00\\/x\" : {\"shape\": [ 1 ], \"dtype\": \"U8\","
      " \"data_offsets\": [0, 1]}\t}\r\n   ";
  tmp_path(path, sizeof path, dir, "escapes.safetensors");
  REQUIRE(write_st(path, hdr, sizeof hdr - 1, 1));
  q = kiln_load_safetensors(path);
  REQUIRE(q);
  CHECK_EQ_INT(kiln_params_count(q), 1);
  CHECK(kiln_params_count(q) == 1 && !strcmp(kiln_params_name(q, 0), "\xc3\xa9\xf0\x9f\x98\x80/x"));
  kiln_params_free(q);

  /* Names the writer refuses: not UTF-8, or the format's reserved key. */
  static const char *const bad[][2] = {{"bad\xff", "UTF-8"}, {"__metadata__", "reserved"}};
  for (int i = 0; i < 2; i++) {
    kiln_params *b = kiln_params_new();
    kiln_params_add(b, bad[i][0], kiln_zeros(KILN_F32, 0, NULL));
    tmp_path(path, sizeof path, dir, "refused.safetensors");
    kiln_clear_error();
    CHECK(kiln_save_safetensors(b, path) < 0);
    CHECK_CONTAINS(kiln_error(), bad[i][1]);
    CHECK(access(path, F_OK) != 0);
    kiln_params_free(b);
  }
  kiln_clear_error();
  test_tmp_dir_remove(dir);
}

/* ---- kiln_params_load ------------------------------------------------------------------------ */
static const float W0[6] = {1, 2, 3, 4, 5, 6}, W1[6] = {-1, -2, -3, -4, -5, -6};
static const float B0[3] = {0.5f, 0.25f, 0.125f}, B1[3] = {9, 8, 7};
static const int64_t S0 = 3, S1 = 70000;

/* A set with w (2,3) f32, b (3) f32, steps () i64, plus an optional extra tensor. */
static kiln_params *model_set(const float *w, const float *b, const int64_t *steps,
                              kiln_tensor *extra, const char *extra_name) {
  int64_t ws[2] = {2, 3}, bs = 3;
  kiln_params *p = kiln_params_new();
  kiln_params_add(p, "w", kiln_from_data(KILN_F32, 2, ws, w));
  if (b) kiln_params_add(p, "b", kiln_from_data(KILN_F32, 1, &bs, b));
  kiln_params_add(p, "steps", kiln_from_data(KILN_I64, 0, NULL, steps));
  if (extra) kiln_params_add(p, extra_name, extra);
  return p;
}

static void check_model_at(int line, kiln_params *p, const float *w, const float *b,
                           const int64_t *steps) {
  int64_t ws[2] = {2, 3}, bs = 3;
  check_tensor_at(line, "w", kiln_params_find(p, "w"), KILN_F32, 2, ws, w);
  check_tensor_at(line, "b", kiln_params_find(p, "b"), KILN_F32, 1, &bs, b);
  check_tensor_at(line, "steps", kiln_params_find(p, "steps"), KILN_I64, 0, NULL, steps);
}

TEST(safetensors_params_load) {
  char dir[512], path[1024];
  REQUIRE(test_tmp_dir(dir, sizeof dir));
  kiln_params *p = model_set(W0, B0, &S0, NULL, NULL);
  kiln_tensor *w = kiln_params_find(p, "w");
  REQUIRE(kiln_set_requires_grad(w, true) == 0);

  /* A good file: every value replaced, the handles and the requires-grad flag kept. */
  kiln_params *src = model_set(W1, B1, &S1, NULL, NULL);
  tmp_path(path, sizeof path, dir, "good.safetensors");
  REQUIRE(kiln_save_safetensors(src, path) == 0);
  kiln_params_free(src);
  CHECK(kiln_params_load(p, path) == 0);
  CHECK(!test_has_error());
  check_model_at(__LINE__, p, W1, B1, &S1);
  CHECK(kiln_params_find(p, "w") == w && kiln_requires_grad(w));
  /* the loaded values are usable in ops */
  CHECK_NEAR(kiln_item(kiln_sum(w, 0, NULL, false)), -21, 0);

  /* Back to the first values, then every error case leaves them untouched. */
  src = model_set(W0, B0, &S0, NULL, NULL);
  REQUIRE(kiln_save_safetensors(src, path) == 0);
  kiln_params_free(src);
  CHECK(kiln_params_load(p, path) == 0);
  check_model_at(__LINE__, p, W0, B0, &S0);

  int64_t four = 4, three = 3;
  struct {
    const char *file;
    kiln_params *set; /* saved to file; NULL: the file is written raw below */
    const char *key1, *key2;
  } cases[] = {
      {"missing.safetensors", model_set(W1, NULL, &S1, NULL, NULL), "missing", "'b'"},
      {"extra.safetensors", model_set(W1, B1, &S1, kiln_zeros(KILN_U8, 1, &four), "extra_one"),
       "extra", "extra_one"},
      {"shape.safetensors", model_set(W1, NULL, &S1, kiln_zeros(KILN_F32, 1, &four), "b"), "shape",
       "(4)"},
      {"dtype.safetensors", model_set(W1, NULL, &S1, kiln_zeros(KILN_F64, 1, &three), "b"), "dtype",
       "f64"},
      {"corrupt.safetensors", NULL, "json", "corrupt"},
      {"absent.safetensors", NULL, "cannot open", "absent"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    test_set_context("%s", cases[i].file);
    tmp_path(path, sizeof path, dir, cases[i].file);
    if (cases[i].set) {
      CHECK(kiln_save_safetensors(cases[i].set, path) == 0);
      kiln_params_free(cases[i].set);
    } else if (!strcmp(cases[i].file, "corrupt.safetensors")) {
      CHECK(write_st(path, "{\"w\":", 5, 0));
    }
    kiln_clear_error();
    CHECK(kiln_params_load(p, path) < 0);
    CHECK_CONTAINS(kiln_error(), cases[i].key1);
    CHECK_CONTAINS(kiln_error(), cases[i].key2);
    kiln_clear_error();
    check_model_at(__LINE__, p, W0, B0, &S0);
    CHECK(kiln_params_find(p, "w") == w && kiln_requires_grad(w));
  }
  test_set_context("%s", "");
  kiln_clear_error();
  CHECK(kiln_params_load(NULL, path) < 0);
  CHECK(kiln_load_safetensors(NULL) == NULL);
  CHECK(kiln_save_safetensors(NULL, path) < 0);
  kiln_clear_error();
  kiln_params_free(p);
  test_tmp_dir_remove(dir);
}

/* ---- malformed files --------------------------------------------------------------------------
 */
typedef struct {
  const char *what;   /* the violation */
  const char *header; /* the header text, written as given */
  size_t data_len;    /* bytes after the header */
  const char *key;    /* a word the message must hold */
} bad_header;

static const bad_header bad_headers[] = {
    {"not JSON", "{\"a\":", 0, "not valid JSON"},
    {"empty header", "", 0, "unexpected end"},
    {"not an object", "[1,2]", 0, "not a JSON object"},
    {"trailing garbage", "{} x", 0, "trailing"},
    {"entry not an object", "{\"a\":5}", 0, "entry is a number"},
    {"missing dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing field 'dtype'"},
    {"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4,
     "missing field 'shape'"},
    {"missing offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4,
     "missing field 'data_offsets'"},
    {"dtype not a string", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     "dtype is a number"},
    {"unknown dtype", "{\"a\":{\"dtype\":\"F8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
     "unknown dtype 'F8'"},
    {"lowercase dtype", "{\"a\":{\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
     "unknown dtype"},
    {"shape not an array", "{\"a\":{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}}", 4,
     "shape is a string"},
    {"negative dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
     "negative"},
    {"fractional dim", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8,
     "not an integer"},
    {"dim not a number", "{\"a\":{\"dtype\":\"F32\",\"shape\":[true],\"data_offsets\":[0,4]}}", 4,
     "a boolean, not an integer"},
    {"too many dims",
     "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
     "more than the 8"},
    {"element count overflow",
     "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4],\"data_offsets\":[0,1]}}", 1,
     "overflows"},
    {"byte size overflow",
     "{\"a\":{\"dtype\":\"F64\",\"shape\":[4611686018427387904],\"data_offsets\":[0,1]}}", 1,
     "byte size"},
    {"huge dim",
     "{\"a\":{\"dtype\":\"U8\",\"shape\":[99999999999999999999],\"data_offsets\":[0,1]}}", 1,
     "too large"},
    {"end before begin", "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4,
     "before begin"},
    {"outside the data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
     "outside the data section"},
    {"span mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
     "needs 8 bytes"},
    {"fractional offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4.0]}}", 4,
     "fraction"},
    {"exponent offset", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4e0]}}", 4,
     "fraction or exponent"},
    {"negative offset", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 1,
     "data_offsets[0] is negative"},
    {"three offsets", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,1]}}", 1,
     "two integers"},
    {"offsets not an array", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":{}}}", 1,
     "two integers"},
    {"overlap",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, "overlap"},
    {"same span twice",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}",
     4, "overlap"},
    {"duplicate name",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
     8, "duplicate tensor name 'a'"},
    {"hole",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}",
     12, "[4, 8) are not covered"},
    {"hole at the start", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8,
     "[0, 4) are not covered"},
    {"trailing data", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8,
     "at the end are not covered"},
    {"data but no tensors", "{}", 8, "not covered"},
    {"metadata value not a string",
     "{\"__metadata__\":{\"k\":1},\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
     1, "value of 'k' is a number"},
    {"metadata not an object", "{\"__metadata__\":[\"x\"]}", 0, "__metadata__ is an array"},
    {"metadata duplicate key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0,
     "has the key 'k' twice"},
    {"unknown field",
     "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"stride\":[1]}}", 1,
     "unknown field 'stride'"},
    {"duplicate field",
     "{\"a\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
     "duplicate field 'dtype'"},
    {"bad escape", "{\"a\\q\":{}}", 0, "invalid escape"},
    {"short \\u escape", "{\"a\\u12\":{}}", 0, "4 hex digits"},
    {"lone high surrogate", "{\"\\ud800x\":{}}", 0, "unpaired high surrogate"},
    {"lone low surrogate", "{\"\\udc00\":{}}", 0, "unpaired low surrogate"},
    {"invalid UTF-8", "{\"a\xff\":{}}", 0, "invalid UTF-8"},
    {"overlong UTF-8", "{\"\xc0\xaf\":{}}", 0, "invalid UTF-8"},
    {"UTF-8 surrogate", "{\"\xed\xa0\x80\":{}}", 0, "invalid UTF-8"},
    {"raw control character", "{\"a\x01\":{}}", 0, "control character"},
    {"NUL in a name", "{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
     "NUL"},
    {"unterminated string", "{\"abc", 0, "unterminated string"},
    {"leading zero", "{\"a\":{\"dtype\":\"U8\",\"shape\":[01],\"data_offsets\":[0,1]}}", 1,
     "leading zero"},
    {"trailing comma", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},}", 1,
     "expected a string key"},
    {"trailing comma in array", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,],\"data_offsets\":[0,1]}}",
     1, "unexpected ']'"},
    {"missing colon", "{\"a\" {}}", 0, "expected ':'"},
    {"single quotes", "{'a':{}}", 0, "expected a string key"},
    {"bare word", "{\"a\":nul}", 0, "unexpected 'n'"},
    {"minus alone", "{\"a\":-}", 0, "invalid number"},
    {"dot without digits", "{\"a\":1.}", 0, "digit expected after '.'"},
};

/* Files that are wrong before the header is parsed, or not files at all. */
typedef struct {
  const char *what;
  unsigned char bytes[24];
  size_t n;
  const char *key;
} bad_raw;

static const bad_raw bad_raws[] = {
    {"empty file", {0}, 0, "too short"},
    {"5-byte file", {1, 0, 0, 0, 0}, 5, "too short"},
    {"header longer than the file",
     {16, 0, 0, 0, 0, 0, 0, 0, '{', '}'},
     10,
     "larger than the file"},
    {"absurd header length", {0, 0, 0, 0, 0, 1, 0, 0, '{', '}'}, 10, "beyond the limit"},
    {"header length 2^64-1", {255, 255, 255, 255, 255, 255, 255, 255}, 8, "beyond the limit"},
    {"NUL padding", {8, 0, 0, 0, 0, 0, 0, 0, '{', '}', 0, 0, 0, 0, 0, 0}, 16, "trailing"},
};

static void expect_load_error(const char *path, const char *what, const char *key) {
  test_set_context("%s", what);
  kiln_clear_error();
  kiln_params *q = kiln_load_safetensors(path);
  CHECK(q == NULL);
  kiln_params_free(q);
  CHECK_CONTAINS(kiln_error(), key);
  CHECK_CONTAINS(kiln_error(), path); /* names the file */
  kiln_clear_error();
  test_set_context("%s", "");
}

TEST(safetensors_malformed) {
  char dir[512], path[1024];
  REQUIRE(test_tmp_dir(dir, sizeof dir));
  kiln_stats before, after;
  kiln_get_stats(&before);
  int n = 0;
  for (size_t i = 0; i < sizeof bad_headers / sizeof bad_headers[0]; i++, n++) {
    const bad_header *b = &bad_headers[i];
    snprintf(path, sizeof path, "%s/bad%02zu.safetensors", dir, i);
    REQUIRE(write_st(path, b->header, strlen(b->header), b->data_len));
    expect_load_error(path, b->what, b->key);
  }
  for (size_t i = 0; i < sizeof bad_raws / sizeof bad_raws[0]; i++, n++) {
    snprintf(path, sizeof path, "%s/raw%02zu.safetensors", dir, i);
    REQUIRE(write_bytes(path, bad_raws[i].bytes, bad_raws[i].n));
    expect_load_error(path, bad_raws[i].what, bad_raws[i].key);
  }

  /* Nesting deeper than any header needs is refused before it can exhaust the stack. */
  char deep[4096];
  snprintf(deep, sizeof deep, "{\"__metadata__\":");
  for (size_t k = strlen(deep); k < sizeof deep - 1; k++)
    deep[k] = '[';
  deep[sizeof deep - 1] = 0;
  tmp_path(path, sizeof path, dir, "deep.safetensors");
  REQUIRE(write_st(path, deep, strlen(deep), 0));
  expect_load_error(path, "deep nesting", "nested deeper");
  n++;

  tmp_path(path, sizeof path, dir, "does-not-exist.safetensors");
  expect_load_error(path, "no such file", "cannot open");
  tmp_path(path, sizeof path, dir, "subdir");
  REQUIRE(mkdir(path, 0700) == 0);
  expect_load_error(path, "a directory", "not a regular file");
  n += 2;
  CHECK(n >= 16);

  kiln_get_stats(&after);
  CHECK_EQ_INT(after.tensors_live, before.tensors_live); /* nothing half-made survives */
  test_tmp_dir_remove(dir);
}

/* Loads n bytes written to a file of their own (rewriting one file would wait on writeback). */
static kiln_params *load_from_bytes(const char *dir, const void *data, size_t n) {
  static int counter;
  char path[1024];
  snprintf(path, sizeof path, "%s/m%d.safetensors", dir, counter++);
  if (!write_bytes(path, data, n)) {
    test_fail(__FILE__, __LINE__, "cannot write %s", path);
    return NULL;
  }
  kiln_params *q = kiln_load_safetensors(path);
  remove(path);
  return q;
}

/* Every truncation and many single-byte corruptions of a valid file: an error or a set, never a
 * crash (ASan checks the reads). */
TEST(safetensors_corruptions) {
  char dir[512], path[1024];
  REQUIRE(test_tmp_dir(dir, sizeof dir));
  tmp_path(path, sizeof path, dir, "ok.safetensors");
  kiln_params *p = kiln_params_new();
  int64_t s23[2] = {2, 3}, s2 = 2;
  kiln_params_add(p, "w\"x", kiln_ones(KILN_F32, 2, s23));
  kiln_params_add(p, "b", kiln_zeros(KILN_I64, 1, &s2));
  kiln_params_add(p, "s", kiln_scalar(KILN_F16, 1.5));
  REQUIRE(kiln_save_safetensors(p, path) == 0);
  kiln_params_free(p);
  size_t fn;
  unsigned char *file = read_bytes(path, &fn);
  REQUIRE(file && fn > 8);
  kiln_stats before, after;
  kiln_get_stats(&before);

  for (size_t len = 0; len < fn; len++) {
    kiln_clear_error();
    kiln_params *q = load_from_bytes(dir, file, len);
    CHECKF(!q && test_has_error(), "truncated to %zu bytes: accepted", len);
    kiln_params_free(q);
  }
  static const unsigned char subst[] = {'"', '\\', '{', '}', '[', ']',  ',',  ':',
                                        '0', '9',  '-', ' ', 'e', 0x00, 0xff, 0x80};
  unsigned char *mut = malloc(fn);
  size_t hend = 8 + (size_t)file[0] + ((size_t)file[1] << 8);
  int rejected = 0;
  for (size_t pos = 0; pos < hend && pos < fn; pos++)
    for (size_t k = 0; k < sizeof subst; k++) {
      if (file[pos] == subst[k]) continue;
      memcpy(mut, file, fn);
      mut[pos] = subst[k];
      kiln_clear_error();
      kiln_params *q = load_from_bytes(dir, mut, fn);
      CHECK(!q == test_has_error()); /* a set and no error, or an error and no set */
      rejected += !q;
      kiln_params_free(q);
    }
  kiln_clear_error();
  CHECK(rejected > 0);
  free(mut);
  free(file);
  kiln_get_stats(&after);
  CHECK_EQ_INT(after.tensors_live, before.tensors_live);
  test_tmp_dir_remove(dir);
}

/* ---- an independent reader and writer (Python: json + struct + numpy) -------------------------
 */
static void hex_of(char *out, const char *s) {
  for (; *s; s++, out += 2)
    sprintf(out, "%02x", (unsigned char)*s);
  *out = 0;
}

TEST(safetensors_python_crosscheck) {
  char script_buf[1024];
  const char *script = test_path(script_buf, sizeof script_buf, "nn/safetensors_check.py");
  if (!script) {
    printf(
        "note: safetensors_python_crosscheck skipped: tests/nn/safetensors_check.py not found\n");
    return;
  }
  char dir[512], path[1024];
  REQUIRE(test_tmp_dir(dir, sizeof dir));
  tmp_path(path, sizeof path, dir, "cross.safetensors");

  /* Tensors whose sums are known from their encodings alone. */
  static const float w[6] = {0.5f, -1.25f, 3, 4, 0.001f, -7};
  static const uint16_t h[4] = {0x3c00, 0xc000, 0x3800, 0x7bff}; /* 1, -2, 0.5, 65504 */
  static const uint16_t bf[3] = {0x3f80, 0xc040, 0x3e80};        /* 1, -3, 0.25 */
  static const double d = 2.718281828;
  static const int64_t ids[3] = {-5, INT64_C(1) << 40, 3};
  static const uint8_t px[4] = {0, 255, 17, 3}, mask[5] = {1, 0, 1, 1, 0};
  static const int8_t q8[4] = {-128, 127, -1, 5};
  static const uint64_t big[2] = {UINT64_C(1) << 63, 1};
  int64_t s23[2] = {2, 3}, s4 = 4, s3 = 3, s22[2] = {2, 2}, s5 = 5, s04[2] = {0, 4},
          s1212[4] = {1, 2, 1, 2}, s2 = 2;
  const char *qname = "q\"uote\\ caf\xc3\xa9\n";
  struct {
    const char *name, *dtype, *shape, *sum; /* sum: exact text for integers */
    double fsum;
    kiln_tensor *t;
  } ts[] = {
      {"w", "F32", "[2,3]", NULL, 0.5 - 1.25 + 3 + 4 + (double)0.001f - 7,
       kiln_from_data(KILN_F32, 2, s23, w)},
      {"h", "F16", "[4]", NULL, 65503.5, kiln_from_data(KILN_F16, 1, &s4, h)},
      {"bf", "BF16", "[3]", NULL, -1.75, kiln_from_data(KILN_BF16, 1, &s3, bf)},
      {"d", "F64", "[]", NULL, d, kiln_from_data(KILN_F64, 0, NULL, &d)},
      {"ids", "I64", "[3]", "1099511627774", 0, kiln_from_data(KILN_I64, 1, &s3, ids)},
      {"px", "U8", "[2,2]", "275", 0, kiln_from_data(KILN_U8, 2, s22, px)},
      {"mask", "BOOL", "[5]", "3", 0, kiln_from_data(KILN_BOOL, 1, &s5, mask)},
      {"e", "F32", "[0,4]", NULL, 0, kiln_zeros(KILN_F32, 2, s04)},
      {qname, "I8", "[1,2,1,2]", "3", 0, kiln_from_data(KILN_I8, 4, s1212, q8)},
      {"big", "U64", "[2]", "9223372036854775809", 0, kiln_from_data(KILN_U64, 1, &s2, big)},
  };
  int nt = (int)(sizeof ts / sizeof ts[0]);
  kiln_params *p = kiln_params_new();
  for (int i = 0; i < nt; i++)
    CHECK(kiln_params_add(p, ts[i].name, ts[i].t) == 0);
  REQUIRE(kiln_save_safetensors(p, path) == 0);
  kiln_params_free(p);

  static char out[16384];
  int rc = test_run_python(script, "sums", path, out, sizeof out);
  if (rc == 77 || rc == 127) {
    printf("note: safetensors_python_crosscheck skipped: %s\n",
           rc == 77 ? "numpy is not available" : "python3 is not available");
    test_tmp_dir_remove(dir);
    return;
  }
  CHECKF(rc == 0, "safetensors_check.py sums failed (%d): %s", rc, out);
  /* One line per tensor, in the set's order: NAME_HEX DTYPE [SHAPE] SUM */
  char *save = NULL, *line = strtok_r(out, "\n", &save);
  for (int i = 0; i < nt && rc == 0; i++, line = strtok_r(NULL, "\n", &save)) {
    char hex[256], want_hex[256], dt[16], shape[64], sum[64];
    if (!line || sscanf(line, "%255s %15s %63s %63s", hex, dt, shape, sum) != 4) {
      test_fail(__FILE__, __LINE__, "tensor %d: bad line '%s'", i, line ? line : "(none)");
      break;
    }
    hex_of(want_hex, ts[i].name);
    CHECKF(!strcmp(hex, want_hex), "tensor %d: name hex %s, expected %s", i, hex, want_hex);
    CHECKF(!strcmp(dt, ts[i].dtype) && !strcmp(shape, ts[i].shape), "'%s': %s %s", ts[i].name, dt,
           shape);
    if (ts[i].sum)
      CHECKF(!strcmp(sum, ts[i].sum), "'%s': sum %s, expected %s", ts[i].name, sum, ts[i].sum);
    else
      CHECK_NEAR(strtod(sum, NULL), ts[i].fsum, 1e-9 * (1 + fabs(ts[i].fsum)));
  }

  /* The other way: a file written by the script (spaces, \u escapes and surrogate pairs,
   * metadata, data in reverse order) read by kiln. */
  tmp_path(path, sizeof path, dir, "from-python.safetensors");
  rc = test_run_python(script, "write", path, out, sizeof out);
  CHECKF(rc == 0, "safetensors_check.py write failed (%d): %s", rc, out);
  kiln_params *q = rc == 0 ? kiln_load_safetensors(path) : NULL;
  if (rc == 0) {
    REQUIRE(q);
    static const float alpha[4] = {0, 0.5f, 1, 1.5f};
    static const int64_t beta[3] = {-1, 0, INT64_C(1) << 40};
    static const uint8_t cafe[2] = {7, 9}, delta[2] = {1, 0};
    static const uint16_t gamma_[2] = {0x3e00, 0xc000}, bfv[2] = {0x3fc0, 0xc020};
    static const double eps = 3.25;
    const char *order[] = {"alpha", "beta", "caf\xc3\xa9 \xf0\x9f\x98\x80", "gamma", "delta",
                           "eps",   "bf"};
    CHECK_EQ_INT(kiln_params_count(q), 7);
    for (int i = 0; i < 7 && i < kiln_params_count(q); i++)
      CHECKF(!strcmp(kiln_params_name(q, i), order[i]), "tensor %d is '%s'", i,
             kiln_params_name(q, i));
    CHECK_TENSOR("alpha", kiln_params_find(q, "alpha"), KILN_F32, 2, s22, alpha);
    CHECK_TENSOR("beta", kiln_params_find(q, "beta"), KILN_I64, 1, &s3, beta);
    CHECK_TENSOR("cafe", kiln_params_find(q, order[2]), KILN_U8, 1, &s2, cafe);
    CHECK_TENSOR("gamma", kiln_params_find(q, "gamma"), KILN_F16, 1, &s2, gamma_);
    CHECK_TENSOR("delta", kiln_params_find(q, "delta"), KILN_BOOL, 1, &s2, delta);
    CHECK_TENSOR("eps", kiln_params_find(q, "eps"), KILN_F64, 0, NULL, &eps);
    CHECK_TENSOR("bf", kiln_params_find(q, "bf"), KILN_BF16, 1, &s2, bfv);
  }
  kiln_params_free(q);
  test_tmp_dir_remove(dir);
}
