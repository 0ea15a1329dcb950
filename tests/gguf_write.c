/* gguf_write.c — the test-only GGUF writer of gguf_write.h and its file read/write helpers. */
#include "gguf_write.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gw_free(gw_buf *b) {
  free(b->p);
  b->p = NULL;
  b->n = b->cap = 0;
}

void gw_bytes(gw_buf *b, const void *data, size_t n) {
  if (b->n + n > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->n + n)
      cap *= 2;
    unsigned char *p = realloc(b->p, cap);
    if (!p) abort(); /* tests only */
    b->p = p, b->cap = cap;
  }
  if (n) memcpy(b->p + b->n, data, n);
  b->n += n;
}

static void put_le(gw_buf *b, uint64_t v, int n) {
  unsigned char t[8];
  for (int i = 0; i < n; i++)
    t[i] = (unsigned char)(v >> (8 * i));
  gw_bytes(b, t, (size_t)n);
}

void gw_u8(gw_buf *b, uint8_t v) { put_le(b, v, 1); }
void gw_u16(gw_buf *b, uint16_t v) { put_le(b, v, 2); }
void gw_u32(gw_buf *b, uint32_t v) { put_le(b, v, 4); }
void gw_u64(gw_buf *b, uint64_t v) { put_le(b, v, 8); }
void gw_f32(gw_buf *b, float v) {
  uint32_t u;
  memcpy(&u, &v, 4);
  put_le(b, u, 4);
}
void gw_f64(gw_buf *b, double v) {
  uint64_t u;
  memcpy(&u, &v, 8);
  put_le(b, u, 8);
}

void gw_strn(gw_buf *b, const char *s, size_t n) {
  gw_u64(b, n);
  gw_bytes(b, s, n);
}
void gw_str(gw_buf *b, const char *s) { gw_strn(b, s, strlen(s)); }

void gw_header(gw_buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv) {
  gw_bytes(b, "GGUF", 4);
  gw_u32(b, version);
  gw_u64(b, n_tensors);
  gw_u64(b, n_kv);
}

void gw_key(gw_buf *b, const char *key, uint32_t type) {
  gw_str(b, key);
  gw_u32(b, type);
}

void gw_array(gw_buf *b, uint32_t elem_type, uint64_t n) {
  gw_u32(b, elem_type);
  gw_u64(b, n);
}

void gw_tensor_info(gw_buf *b, const char *name, uint32_t ndim, const uint64_t *dims, uint32_t type,
                    uint64_t offset) {
  gw_str(b, name);
  gw_u32(b, ndim);
  for (uint32_t d = 0; d < ndim; d++)
    gw_u64(b, dims[d]);
  gw_u32(b, type);
  gw_u64(b, offset);
}

void gw_pad(gw_buf *b, size_t align) {
  static const unsigned char zero[64];
  while (b->n % align) {
    size_t k = align - b->n % align;
    gw_bytes(b, zero, k < sizeof zero ? k : sizeof zero);
  }
}

bool gw_write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) return false;
  bool ok = n == 0 || fwrite(data, 1, n, f) == n; /* an empty buffer may have no storage */
  return fclose(f) == 0 && ok;
}

unsigned char *gw_read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 4096, len = 0, got;
  unsigned char *b = malloc(cap);
  while (b && (got = fread(b + len, 1, cap - len, f)) > 0) {
    len += got;
    if (len == cap) {
      unsigned char *nb = realloc(b, cap *= 2);
      if (!nb) free(b);
      b = nb;
    }
  }
  fclose(f);
  *n = len;
  return b;
}
