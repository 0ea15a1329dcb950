/* gguf_write.h — a small GGUF writer for tests only: little-endian fields appended to a growing
 * buffer, written from the format's description (independent of src/nn/gguf.c), so tests can
 * build valid files and files broken in exactly one place. */
#ifndef KILN_TEST_GGUF_WRITE_H
#define KILN_TEST_GGUF_WRITE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  unsigned char *p;
  size_t n, cap;
} gw_buf;

void gw_free(gw_buf *b);
void gw_bytes(gw_buf *b, const void *data, size_t n);
void gw_u8(gw_buf *b, uint8_t v);
void gw_u16(gw_buf *b, uint16_t v);
void gw_u32(gw_buf *b, uint32_t v);
void gw_u64(gw_buf *b, uint64_t v);
void gw_f32(gw_buf *b, float v);
void gw_f64(gw_buf *b, double v);
void gw_strn(gw_buf *b, const char *s, size_t n); /* u64 length, then the bytes */
void gw_str(gw_buf *b, const char *s);
/* magic "GGUF", version, tensor count, kv count */
void gw_header(gw_buf *b, uint32_t version, uint64_t n_tensors, uint64_t n_kv);
/* a kv's key and value type; the value follows (gw_u32, gw_str, gw_array ...) */
void gw_key(gw_buf *b, const char *key, uint32_t type);
void gw_array(gw_buf *b, uint32_t elem_type, uint64_t n); /* then n elements */
void gw_tensor_info(gw_buf *b, const char *name, uint32_t ndim, const uint64_t *dims, uint32_t type,
                    uint64_t offset);
void gw_pad(gw_buf *b, size_t align); /* zero bytes up to a multiple of align */

bool gw_write_file(const char *path, const void *data, size_t n);
unsigned char *gw_read_file(const char *path, size_t *n); /* caller frees */

#endif
