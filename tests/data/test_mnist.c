/* test_mnist.c — the Fashion-MNIST reader: small gzip IDX files written here load exactly;
 * malformed ones (bad magic, truncation, count mismatch, absurd dims, not gzip, bad CRC, extra
 * bytes, bad labels) fail with a message and an empty set; a missing dataset names the
 * install command; the real dataset, when installed, has the published counts and statistics. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "test.h"

#define HINT_SCRIPT "scripts/fetch-data"
#define HINT_APT "apt-get install dataset-fashion-mnist"
#define REAL_DIR "/usr/share/datasets/fashion-mnist"

static const char *const g_names[] = {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                      "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"};

/* ---- writing IDX files ------------------------------------------------------------------- */
/* Independent of the reader: pixel i of a synthetic set, label i. */
static uint8_t pixel_at(int64_t i) { return (uint8_t)((i * 37 + 11) & 255); }
static uint8_t label_at(int64_t i) { return (uint8_t)((i * 3 + 1) % 10); }
static uint8_t label_bad_at_3(int64_t i) { return i == 3 ? 10 : label_at(i); }

static void put_be32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

static void path_of(char *buf, size_t n, const char *dir, const char *name) {
  snprintf(buf, n, "%s/%s", dir, name);
}

/* Writes bytes to dir/name, gzip-compressed or plain. */
static bool write_file(const char *dir, const char *name, const uint8_t *p, size_t n, bool gz) {
  char path[512];
  path_of(path, sizeof path, dir, name);
  if (gz) {
    gzFile f = gzopen(path, "wb");
    if (!f) return false;
    bool ok = n == 0 || gzwrite(f, p, (unsigned)n) == (int)n;
    return gzclose(f) == Z_OK && ok;
  }
  FILE *f = fopen(path, "wb");
  if (!f) return false;
  bool ok = fwrite(p, 1, n, f) == n;
  return fclose(f) == 0 && ok;
}

/* An IDX file: magic, ndim dims, then payload_len bytes from fill (pixels or labels). */
static bool write_idx(const char *dir, const char *name, uint32_t magic, int ndim,
                      const uint32_t *dims, size_t payload_len, uint8_t (*fill)(int64_t), bool gz) {
  size_t hdr = 4 + 4 * (size_t)ndim, n = hdr + payload_len;
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) return false;
  put_be32(buf, magic);
  for (int i = 0; i < ndim; i++)
    put_be32(buf + 4 + 4 * i, dims[i]);
  for (size_t i = 0; i < payload_len; i++)
    buf[hdr + i] = fill((int64_t)i);
  bool ok = write_file(dir, name, buf, n, gz);
  free(buf);
  return ok;
}

typedef struct {
  uint32_t img_magic, lab_magic;
  uint32_t n_img, rows, cols, n_lab;
  int64_t img_bytes, lab_bytes; /* payload written; -1: what the header says */
  bool plain_images;            /* write the image file without gzip */
  uint8_t (*label)(int64_t);    /* label_at unless set */
} idx_spec;

static idx_spec valid_spec(uint32_t n, uint32_t rows, uint32_t cols) {
  return (idx_spec){0x803, 0x801, n, rows, cols, n, -1, -1, false, label_at};
}

/* Writes the image and label files of one split (train or t10k) into dir. */
static bool write_split(const char *dir, bool train, idx_spec s) {
  uint32_t idims[3] = {s.n_img, s.rows, s.cols}, ldims[1] = {s.n_lab};
  size_t ib = s.img_bytes >= 0 ? (size_t)s.img_bytes : (size_t)s.n_img * s.rows * s.cols;
  size_t lb = s.lab_bytes >= 0 ? (size_t)s.lab_bytes : (size_t)s.n_lab;
  const char *in = g_names[train ? 0 : 2], *ln = g_names[train ? 1 : 3];
  return write_idx(dir, in, s.img_magic, 3, idims, ib, pixel_at, !s.plain_images) &&
         write_idx(dir, ln, s.lab_magic, 1, ldims, lb, s.label, true);
}

static bool make_tmpdir(char *buf, size_t n) {
  const char *base = getenv("TMPDIR");
  snprintf(buf, n, "%s/kiln-mnist-XXXXXX", base && base[0] ? base : "/tmp");
  return mkdtemp(buf) != NULL;
}

static void remove_tmpdir(const char *dir) {
  char path[512];
  for (size_t i = 0; i < sizeof g_names / sizeof g_names[0]; i++) {
    path_of(path, sizeof path, dir, g_names[i]);
    unlink(path);
  }
  rmdir(dir);
}

/* ---- checks ------------------------------------------------------------------------------ */
static void check_synthetic(const kiln_image_set *s, int64_t n, int64_t rows, int64_t cols) {
  CHECK_EQ_INT(s->n, n);
  CHECK_EQ_INT(s->rows, rows);
  CHECK_EQ_INT(s->cols, cols);
  if (s->n != n || s->rows != rows || s->cols != cols || !s->images || !s->labels) return;
  int64_t bad = 0;
  for (int64_t i = 0; i < n * rows * cols; i++)
    bad += s->images[i] != pixel_at(i);
  for (int64_t i = 0; i < n; i++)
    bad += s->labels[i] != label_at(i);
  CHECKF(bad == 0, "%lld bytes differ from what was written", (long long)bad);
}

static bool set_is_empty(const kiln_image_set *s) {
  return !s->images && !s->labels && s->n == 0 && s->rows == 0 && s->cols == 0;
}

/* Loads from dir and expects failure: -1, an empty set, and each substring in the message. */
static void expect_fail_at(int line, const char *what, const char *dir, bool train,
                           const char *const *subs) {
  kiln_clear_error();
  kiln_image_set s;
  memset(&s, 0x5a, sizeof s); /* garbage in: the loader must not trust or free it */
  int rc = kiln_fashion_mnist_load(dir, train, &s);
  const char *m = kiln_error();
  if (rc != -1) test_fail(__FILE__, line, "%s: expected -1, got %d", what, rc);
  if (rc == 0)
    kiln_image_set_free(&s);
  else if (!set_is_empty(&s))
    test_fail(__FILE__, line, "%s: set not emptied on error", what);
  if (!m[0]) test_fail(__FILE__, line, "%s: no error message", what);
  for (int i = 0; subs[i]; i++)
    if (!test_contains(m, subs[i]))
      test_fail(__FILE__, line, "%s: message \"%s\" lacks \"%s\"", what, m, subs[i]);
  kiln_clear_error();
}
#define EXPECT_LOAD_FAIL(what, dir, train, ...)                                                    \
  do {                                                                                             \
    const char *const elf_s_[] = {__VA_ARGS__, NULL};                                              \
    expect_fail_at(__LINE__, (what), (dir), (train), elf_s_);                                      \
  } while (0)

/* Sets or unsets $KILN_DATA, returning the old value (malloc'd, or NULL) for restore_env. */
static char *swap_env(const char *value) {
  const char *old = getenv("KILN_DATA");
  char *saved = old ? strdup(old) : NULL;
  if (value)
    setenv("KILN_DATA", value, 1);
  else
    unsetenv("KILN_DATA");
  return saved;
}
static void restore_env(char *saved) {
  if (saved)
    setenv("KILN_DATA", saved, 1);
  else
    unsetenv("KILN_DATA");
  free(saved);
}

/* ---- tests ------------------------------------------------------------------------------- */
TEST(mnist_synthetic) {
  char dir[256];
  REQUIRE(make_tmpdir(dir, sizeof dir));
  bool ok =
      write_split(dir, true, valid_spec(3, 2, 5)) && write_split(dir, false, valid_spec(1, 4, 3));
  CHECK(ok);
  if (ok) {
    kiln_image_set s;
    kiln_clear_error();
    CHECK_EQ_INT(kiln_fashion_mnist_load(dir, true, &s), 0);
    CHECKF(!test_has_error(), "unexpected error: %s", test_errmsg());
    check_synthetic(&s, 3, 2, 5);
    kiln_image_set_free(&s);
    CHECK(set_is_empty(&s));
    kiln_image_set_free(&s); /* twice is harmless */
    kiln_image_set_free(NULL);

    CHECK_EQ_INT(kiln_fashion_mnist_load(dir, false, &s), 0);
    check_synthetic(&s, 1, 4, 3);
    kiln_image_set_free(&s);

    /* dir NULL reads $KILN_DATA */
    char *saved = swap_env(dir);
    CHECK_EQ_INT(kiln_fashion_mnist_load(NULL, true, &s), 0);
    check_synthetic(&s, 3, 2, 5);
    kiln_image_set_free(&s);
    restore_env(saved);
  }
  kiln_clear_error();
  CHECK_EQ_INT(kiln_fashion_mnist_load(dir, true, NULL), -1);
  CHECK(test_has_error());
  kiln_clear_error();
  remove_tmpdir(dir);
}

TEST(mnist_malformed) {
  char dir[256];
  REQUIRE(make_tmpdir(dir, sizeof dir));
  idx_spec s;

  s = valid_spec(3, 2, 2), s.img_magic = 0x903;
  REQUIRE(write_split(dir, true, s));
  EXPECT_LOAD_FAIL("image magic", dir, true, "magic", "0x00000903", "train-images");
  s = valid_spec(3, 2, 2), s.lab_magic = 0x803;
  REQUIRE(write_split(dir, true, s));
  EXPECT_LOAD_FAIL("label magic", dir, true, "magic", "0x00000803", "train-labels");

  s = valid_spec(3, 4, 4), s.img_bytes = 3 * 16 - 7;
  REQUIRE(write_split(dir, true, s));
  EXPECT_LOAD_FAIL("truncated images", dir, true, "truncated", "train-images", "48", "41");
  s = valid_spec(3, 4, 4), s.lab_bytes = 2;
  REQUIRE(write_split(dir, true, s));
  EXPECT_LOAD_FAIL("truncated labels", dir, true, "truncated", "train-labels");
  REQUIRE(write_file(dir, g_names[0], (const uint8_t *)"\0\0\x08\x03\0\0", 6, true));
  EXPECT_LOAD_FAIL("truncated header", dir, true, "truncated", "header");
  REQUIRE(write_file(dir, g_names[0], (const uint8_t *)"", 0, true));
  EXPECT_LOAD_FAIL("empty gzip", dir, true, "truncated", "header");

  s = valid_spec(3, 2, 2), s.n_lab = 4;
  REQUIRE(write_split(dir, true, s));
  EXPECT_LOAD_FAIL("count mismatch", dir, true, "3 images", "4 labels");

  /* Absurd headers followed by no data: rejected before anything is allocated for them. */
  s = valid_spec(0xffffffffu, 28, 28), s.img_bytes = 0, s.lab_bytes = 0;
  REQUIRE(write_split(dir, true, s));
  EXPECT_LOAD_FAIL("huge count", dir, true, "4294967295 images", "plausible");
  s = valid_spec(10, 100000, 28), s.img_bytes = 0, s.lab_bytes = 0;
  REQUIRE(write_split(dir, true, s));
  EXPECT_LOAD_FAIL("huge rows", dir, true, "100000x28", "plausible");
  s = valid_spec(1u << 24, 1024, 1024), s.img_bytes = 0, s.lab_bytes = 0;
  REQUIRE(write_split(dir, true, s));
  EXPECT_LOAD_FAIL("huge total", dir, true, "too large");
  s = valid_spec(0, 28, 28);
  REQUIRE(write_split(dir, true, s));
  EXPECT_LOAD_FAIL("no images", dir, true, "0 images");
  s = valid_spec(2, 0, 28);
  REQUIRE(write_split(dir, true, s));
  EXPECT_LOAD_FAIL("zero rows", dir, true, "0x28");

  s = valid_spec(3, 2, 2), s.plain_images = true;
  REQUIRE(write_split(dir, true, s));
  EXPECT_LOAD_FAIL("not gzip", dir, true, "not a gzip file", "train-images");
  REQUIRE(write_file(dir, g_names[0], (const uint8_t *)"hello, not an IDX file\n", 23, false));
  EXPECT_LOAD_FAIL("text file", dir, true, "not a gzip file");

  /* A gzip stream cut short: in its data, or only its trailer missing. */
  for (int cut = 4; cut <= 12; cut += 8) {
    s = valid_spec(40, 8, 8);
    REQUIRE(write_split(dir, true, s));
    char path[512];
    path_of(path, sizeof path, dir, g_names[0]);
    struct stat st;
    REQUIRE(stat(path, &st) == 0 && truncate(path, st.st_size - cut) == 0);
    EXPECT_LOAD_FAIL(cut == 4 ? "gzip trailer cut" : "gzip data cut", dir, true, "truncated",
                     "train-images");
  }

  /* A damaged gzip trailer (CRC) is reported once the data has been read to the end. */
  s = valid_spec(3, 2, 2);
  REQUIRE(write_split(dir, true, s));
  {
    char path[512];
    path_of(path, sizeof path, dir, g_names[0]);
    FILE *f = fopen(path, "r+b");
    REQUIRE(f);
    int c = fseek(f, -8, SEEK_END) == 0 ? fgetc(f) : EOF;
    bool ok = c != EOF && fseek(f, -8, SEEK_END) == 0 && fputc(c ^ 0xff, f) != EOF;
    CHECK(fclose(f) == 0 && ok);
  }
  EXPECT_LOAD_FAIL("bad crc", dir, true, "corrupt", "train-images");

  s = valid_spec(3, 2, 2);
  REQUIRE(write_split(dir, true, s));
  {
    char path[512];
    path_of(path, sizeof path, dir, g_names[1]);
    FILE *f = fopen(path, "ab");
    REQUIRE(f);
    bool ok = fputs("junk", f) >= 0;
    CHECK(fclose(f) == 0 && ok);
  }
  EXPECT_LOAD_FAIL("junk after gzip", dir, true, "after the end of the gzip stream",
                   "train-labels");

  s = valid_spec(3, 2, 2), s.img_bytes = 3 * 4 + 5;
  REQUIRE(write_split(dir, true, s));
  EXPECT_LOAD_FAIL("extra bytes", dir, true, "extra bytes", "train-images");

  s = valid_spec(12, 1, 1), s.label = label_bad_at_3;
  REQUIRE(write_split(dir, true, s));
  EXPECT_LOAD_FAIL("label range", dir, true, "label 10", "index 3", "0..9");

  /* One file of the pair missing: the message names it and how to get the data set. */
  s = valid_spec(2, 2, 2);
  REQUIRE(write_split(dir, false, s));
  char path[512];
  path_of(path, sizeof path, dir, g_names[3]);
  REQUIRE(unlink(path) == 0);
  EXPECT_LOAD_FAIL("labels missing", dir, false, "t10k-labels-idx1-ubyte.gz", "not found",
                   HINT_SCRIPT, HINT_APT);
  remove_tmpdir(dir);
}

TEST(mnist_missing_names_install) {
  const char *dir = "/nonexistent/kiln-no-such-dir";
  EXPECT_LOAD_FAIL("missing dir", dir, true, dir, HINT_SCRIPT, HINT_APT);
  char *saved = swap_env(dir);
  EXPECT_LOAD_FAIL("missing $KILN_DATA", NULL, false, dir, "KILN_DATA", HINT_SCRIPT, HINT_APT);
  restore_env(saved);
}

/* The published facts about Fashion-MNIST: 60000 train and 10000 test images of 28x28, ten
 * balanced classes, pixel mean 0.2860 and std 0.3530 on the [0,1] scale (train). */
TEST(mnist_real_dataset) {
  char path[512];
  path_of(path, sizeof path, REAL_DIR, g_names[0]);
  if (access(path, R_OK) != 0) return; /* not installed: the synthetic tests cover the reader */
  for (int train = 1; train >= 0; train--) {
    kiln_image_set s;
    kiln_clear_error();
    REQUIRE(kiln_fashion_mnist_load(REAL_DIR, train, &s) == 0);
    int64_t n = train ? 60000 : 10000;
    CHECK_EQ_INT(s.n, n);
    CHECK_EQ_INT(s.rows, 28);
    CHECK_EQ_INT(s.cols, 28);
    if (s.n == n && s.rows == 28 && s.cols == 28) {
      int64_t hist[256] = {0};
      for (int64_t i = 0; i < n; i++)
        hist[s.labels[i]]++;
      for (int c = 0; c < 10; c++)
        CHECK_EQ_INT(hist[c], n / 10);
      int64_t above = 0;
      for (int c = 10; c < 256; c++)
        above += hist[c];
      CHECK_EQ_INT(above, 0);
      if (train) {
        double sum = 0, sq = 0, npix = (double)n * 28 * 28;
        for (int64_t i = 0; i < n * 28 * 28; i++) {
          double v = s.images[i] / 255.0;
          sum += v, sq += v * v;
        }
        double mean = sum / npix;
        CHECK_NEAR(mean, 0.2860, 5e-4);
        CHECK_NEAR(sqrt(sq / npix - mean * mean), 0.3530, 5e-4);
      }
    }
    kiln_image_set_free(&s);
  }
}
