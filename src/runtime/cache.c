/* cache.c — the disk cache every device shares for compiled programs (and the search for
 * its verdicts): files under $KILN_CACHE (default ~/.cache/kiln), named by a content key, each
 * with a checksum file beside it so that a torn or corrupt entry is rebuilt, never loaded. */
#include "internal.h"
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

static char cache_dir[1024];
const char *kn_cache_dir(void) {
  const char *e = getenv("KILN_CACHE"), *home = getenv("HOME");
  if (e && *e)
    snprintf(cache_dir, sizeof cache_dir, "%s", e);
  else
    snprintf(cache_dir, sizeof cache_dir, "%s/.cache/kiln", home && *home ? home : "/tmp");
  return cache_dir;
}
void kn_cache_path(char *out, size_t n, const char *dir, uint64_t key, const char *ext) {
  snprintf(out, n, "%s/%s/%016llx%s", kn_cache_dir(), dir, (unsigned long long)key, ext);
}
int kn_cache_mkdir(const char *dir) {
  char tmp[1200];
  snprintf(tmp, sizeof tmp, "%s/%s", kn_cache_dir(), dir);
  for (char *p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      mkdir(tmp, 0755);
      *p = '/';
    }
  return mkdir(tmp, 0755) == 0 || errno == EEXIST ? 0 : -1;
}

static uint64_t file_sum(const char *path, bool *ok) {
  FILE *f = fopen(path, "rb");
  *ok = false;
  if (!f) return 0;
  uint64_t h = 0;
  char buf[65536];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, f)) > 0)
    h = kn_hash_bytes(h, buf, n);
  *ok = !ferror(f);
  fclose(f);
  return h;
}
static void sum_path(char *out, size_t n, const char *path) { snprintf(out, n, "%s.sum", path); }

bool kn_cache_valid(const char *path) {
  bool ok;
  uint64_t have = file_sum(path, &ok);
  char sp[1300];
  sum_path(sp, sizeof sp, path);
  FILE *f = ok ? fopen(sp, "r") : NULL;
  if (!f) return false;
  unsigned long long want = 0;
  ok = fscanf(f, "%llx", &want) == 1 && want == have;
  fclose(f);
  return ok;
}
int kn_cache_commit(const char *tmp, const char *path) {
  bool ok;
  uint64_t have = file_sum(tmp, &ok);
  if (!ok || rename(tmp, path) != 0) {
    unlink(tmp);
    return -1;
  }
  char sp[1300], st[1400];
  sum_path(sp, sizeof sp, path);
  snprintf(st, sizeof st, "%s.%d", sp, (int)getpid());
  FILE *f = fopen(st, "w");
  if (!f) return -1;
  fprintf(f, "%016llx\n", (unsigned long long)have);
  if (fclose(f) != 0 || rename(st, sp) != 0) return unlink(st), -1;
  return 0;
}
void *kn_cache_load(const char *path, size_t *n) {
  if (!kn_cache_valid(path)) return NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *p = NULL;
  size_t len = 0, cap = 0, got;
  do {
    if (len == cap) p = kn_xrealloc(p, cap = cap ? 2 * cap : 65536);
    got = fread(p + len, 1, cap - len, f);
    len += got;
  } while (got > 0);
  bool bad = ferror(f);
  fclose(f);
  if (bad) return free(p), NULL;
  *n = len;
  return p;
}
int kn_cache_store(const char *path, const void *p, size_t n) {
  char tmp[1300];
  snprintf(tmp, sizeof tmp, "%s.tmp-%d", path, (int)getpid());
  FILE *f = fopen(tmp, "wb");
  if (!f) return -1;
  bool ok = fwrite(p, 1, n, f) == n;
  if (fclose(f) != 0 || !ok) return unlink(tmp), -1;
  return kn_cache_commit(tmp, path);
}
