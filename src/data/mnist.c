/* mnist.c — reads Fashion-MNIST from its four gzip-compressed IDX files into a kiln_image_set.
 * Every header field is checked before it sizes anything: magic, dims, counts that must agree
 * between images and labels, label range, truncation and trailing bytes. */
#include "internal.h"
#include <errno.h>
#include <sys/stat.h>
#include <zlib.h>

#define MNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define MNIST_HINT "get it with scripts/fetch-data or apt-get install dataset-fashion-mnist"
#define MNIST_CLASSES 10

/* IDX magic: two zero bytes, the element type (0x08 = u8), the number of dims. */
#define IDX_MAGIC_IMAGES 0x00000803u
#define IDX_MAGIC_LABELS 0x00000801u

/* Far beyond any image set kiln trains on, small enough that a corrupt header cannot make us
 * allocate gigabytes before the data runs out. */
#define IDX_MAX_ITEMS (INT64_C(1) << 24)
#define IDX_MAX_SIDE INT64_C(1024)
#define IDX_MAX_BYTES (INT64_C(1) << 31)

/* ---- one IDX file, inflated as it is read ---------------------------------------------------
 * zlib's inflate rather than gzread: gzread passes a plain file through unchanged and, when a
 * file ends inside the gzip trailer, reports no error, so it could not check a file's CRC. */
#define IDX_INBUF (1u << 16)

typedef struct {
  FILE *f;
  z_stream z;
  bool z_live, ended; /* inflateInit2 done; Z_STREAM_END seen (the trailer checked) */
  uint8_t *in;        /* IDX_INBUF compressed bytes */
  char path[4096];
  int64_t dims[3]; /* dims[0] = items; images also rows, cols */
} idx_file;

static void idx_close(idx_file *x) {
  if (x->z_live) inflateEnd(&x->z);
  if (x->f) fclose(x->f);
  free(x->in);
  x->z_live = false, x->f = NULL, x->in = NULL;
}

/* Inflates into the avail_out bytes at z.next_out, or up to the end of the stream. 0 when the
 * output is full or the stream ended, -1 (with the error recorded) otherwise. */
static int idx_inflate(idx_file *x, const char *what) {
  while (x->z.avail_out > 0 && !x->ended) {
    if (x->z.avail_in == 0) {
      size_t k = fread(x->in, 1, IDX_INBUF, x->f);
      if (k == 0) {
        if (ferror(x->f))
          kn_err("fashion-mnist: %s: read error: %s", x->path, strerror(errno));
        else
          kn_err("fashion-mnist: %s: truncated: the file ends inside the %s", x->path, what);
        return -1;
      }
      x->z.next_in = x->in, x->z.avail_in = (uInt)k;
    }
    int rc = inflate(&x->z, Z_NO_FLUSH);
    if (rc == Z_STREAM_END)
      x->ended = true;
    else if (rc != Z_OK && rc != Z_BUF_ERROR) {
      kn_err("fashion-mnist: %s: corrupt gzip stream (reading the %s): %s", x->path, what,
             x->z.msg ? x->z.msg : zError(rc));
      return -1;
    }
  }
  return 0;
}

/* Reads exactly n bytes; "what" names the part for the truncation message. */
static int idx_read(idx_file *x, void *dst, size_t n, const char *what) {
  size_t done = 0;
  while (done < n) {
    uInt chunk = n - done > (1u << 30) ? (1u << 30) : (uInt)(n - done);
    x->z.next_out = (uint8_t *)dst + done, x->z.avail_out = chunk;
    if (idx_inflate(x, what) != 0) return -1;
    done += chunk - x->z.avail_out;
    if (x->z.avail_out > 0) { /* the stream ended early */
      kn_err("fashion-mnist: %s: truncated: the %s needs %zu bytes, the stream ends after %zu",
             x->path, what, n, done);
      return -1;
    }
  }
  return 0;
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Opens dir/name and reads its header: magic, then ndim big-endian u32 dims. */
static int idx_open(idx_file *x, const char *dir, const char *name, uint32_t magic, int ndim) {
  memset(x, 0, sizeof *x);
  int len = snprintf(x->path, sizeof x->path, "%s/%s", dir, name);
  if (len < 0 || (size_t)len >= sizeof x->path) {
    kn_err("fashion-mnist: path too long: %s/%s", dir, name);
    return -1;
  }
  struct stat st;
  if (stat(x->path, &st) != 0) {
    kn_err("fashion-mnist: %s not found (%s); %s", x->path, strerror(errno), MNIST_HINT);
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    kn_err("fashion-mnist: %s is not a regular file", x->path);
    return -1;
  }
  if (!(x->f = fopen(x->path, "rb"))) {
    kn_err("fashion-mnist: cannot open %s: %s", x->path, strerror(errno));
    return -1;
  }
  x->in = kn_xmalloc(IDX_INBUF);
  size_t k = fread(x->in, 1, IDX_INBUF, x->f);
  if (k < 2 || x->in[0] != 0x1f || x->in[1] != 0x8b) {
    kn_err("fashion-mnist: %s is not a gzip file (expected gzip-compressed IDX)", x->path);
    return -1;
  }
  x->z.next_in = x->in, x->z.avail_in = (uInt)k;
  if (inflateInit2(&x->z, 16 + MAX_WBITS) != Z_OK) { /* 16: gzip wrapper only */
    kn_err("fashion-mnist: %s: zlib could not start: %s", x->path, x->z.msg ? x->z.msg : "");
    return -1;
  }
  x->z_live = true;
  uint8_t hdr[16];
  if (idx_read(x, hdr, 4 + 4 * (size_t)ndim, "IDX header") != 0) return -1;
  uint32_t m = be32(hdr);
  if (m != magic) {
    kn_err("fashion-mnist: %s: bad IDX magic 0x%08x, expected 0x%08x (u8 data, %d dim%s)", x->path,
           m, magic, ndim, ndim == 1 ? "" : "s");
    return -1;
  }
  for (int i = 0; i < ndim; i++)
    x->dims[i] = be32(hdr + 4 + 4 * i);
  return 0;
}

/* Reads the payload of n bytes, then insists that the gzip stream ends there, its CRC and
 * length checked, and that nothing follows it in the file. */
static int idx_read_payload(idx_file *x, uint8_t *dst, size_t n) {
  if (idx_read(x, dst, n, "data") != 0) return -1;
  uint8_t extra;
  x->z.next_out = &extra, x->z.avail_out = 1;
  if (idx_inflate(x, "gzip trailer") != 0) return -1;
  if (!x->ended) {
    kn_err("fashion-mnist: %s: extra bytes after the %zu bytes its header declares", x->path, n);
    return -1;
  }
  if (x->z.avail_in > 0 || fread(&extra, 1, 1, x->f) > 0) {
    kn_err("fashion-mnist: %s: unexpected bytes after the end of the gzip stream", x->path);
    return -1;
  }
  return 0;
}

/* ---- the data set ------------------------------------------------------------------------ */
static int check_header(const idx_file *img, const idx_file *lab) {
  int64_t n = img->dims[0], rows = img->dims[1], cols = img->dims[2];
  if (n < 1 || n > IDX_MAX_ITEMS) {
    kn_err("fashion-mnist: %s: %lld images is not a plausible count (1..%lld)", img->path,
           (long long)n, (long long)IDX_MAX_ITEMS);
    return -1;
  }
  if (rows < 1 || rows > IDX_MAX_SIDE || cols < 1 || cols > IDX_MAX_SIDE) {
    kn_err("fashion-mnist: %s: image size %lldx%lld is not plausible (each side 1..%lld)",
           img->path, (long long)rows, (long long)cols, (long long)IDX_MAX_SIDE);
    return -1;
  }
  /* Each factor is bounded above, so the product fits in int64 before the size check. */
  if (n * rows * cols > IDX_MAX_BYTES) {
    kn_err("fashion-mnist: %s: %lld images of %lldx%lld is too large (over %lld bytes)", img->path,
           (long long)n, (long long)rows, (long long)cols, (long long)IDX_MAX_BYTES);
    return -1;
  }
  if (lab->dims[0] != n) {
    kn_err("fashion-mnist: counts differ: %s has %lld images, %s has %lld labels", img->path,
           (long long)n, lab->path, (long long)lab->dims[0]);
    return -1;
  }
  return 0;
}

static int check_labels(const idx_file *lab, const uint8_t *labels, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if (labels[i] >= MNIST_CLASSES) {
      kn_err("fashion-mnist: %s: label %d at index %lld is out of range 0..%d", lab->path,
             labels[i], (long long)i, MNIST_CLASSES - 1);
      return -1;
    }
  return 0;
}

/* dir, or $KILN_DATA, or the Debian package's directory; *from says which, for messages. */
static const char *data_dir(const char *dir, const char **from) {
  if (dir && dir[0]) {
    *from = "the dir argument";
    return dir;
  }
  const char *env = getenv("KILN_DATA");
  if (env && env[0]) {
    *from = "from $KILN_DATA";
    return env;
  }
  *from = "default";
  return MNIST_DEFAULT_DIR;
}

static int load(const char *dir, bool train, kiln_image_set *out) {
  const char *from, *d = data_dir(dir, &from);
  struct stat st;
  if (stat(d, &st) != 0 || !S_ISDIR(st.st_mode)) {
    kn_err("fashion-mnist: data directory %s (%s) not found; %s", d, from, MNIST_HINT);
    return -1;
  }
  const char *img_name = train ? "train-images-idx3-ubyte.gz" : "t10k-images-idx3-ubyte.gz";
  const char *lab_name = train ? "train-labels-idx1-ubyte.gz" : "t10k-labels-idx1-ubyte.gz";
  idx_file img, lab;
  memset(&lab, 0, sizeof lab);
  int rc = -1;
  if (idx_open(&img, d, img_name, IDX_MAGIC_IMAGES, 3) != 0) goto done;
  if (idx_open(&lab, d, lab_name, IDX_MAGIC_LABELS, 1) != 0) goto done;
  if (check_header(&img, &lab) != 0) goto done;

  int64_t n = img.dims[0], rows = img.dims[1], cols = img.dims[2];
  size_t npix = (size_t)(n * rows * cols);
  out->images = malloc(npix);
  out->labels = malloc((size_t)n);
  if (!out->images || !out->labels) {
    kn_err("fashion-mnist: out of memory for %lld images of %lldx%lld", (long long)n,
           (long long)rows, (long long)cols);
    goto done;
  }
  if (idx_read_payload(&img, out->images, npix) != 0) goto done;
  if (idx_read_payload(&lab, out->labels, (size_t)n) != 0) goto done;
  if (check_labels(&lab, out->labels, n) != 0) goto done;
  out->n = n, out->rows = rows, out->cols = cols;
  rc = 0;
done:
  idx_close(&img);
  idx_close(&lab);
  if (rc != 0) kiln_image_set_free(out);
  return rc;
}

int kiln_fashion_mnist_load(const char *dir, bool train, kiln_image_set *out) {
  if (!out) {
    kn_err("fashion-mnist: out is NULL");
    return -1;
  }
  memset(out, 0, sizeof *out);
  return load(dir, train, out);
}

void kiln_image_set_free(kiln_image_set *s) {
  if (!s) return;
  free(s->images);
  free(s->labels);
  memset(s, 0, sizeof *s);
}
