/* cache.c — on-disk kernel object cache with checksummed, atomically written entries. */
#include "codegen/cache.h"

#include <errno.h>
#include <fcntl.h>
#include <llvm-c/Core.h>
#include <llvm-c/blake3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CACHE_MAGIC "KILNKC01"
#define CACHE_MAX_ENTRY ((size_t)256 << 20)

typedef struct cache_header {
  char magic[8];
  uint32_t llvm_major, llvm_minor;
  char cpu[64];
  uint8_t features_hash[16];
  uint64_t payload_len;
  uint8_t checksum[32];
} cache_header;

static void hash_bytes(const void *p, size_t n, uint8_t *out, size_t outlen) {
  llvm_blake3_hasher h;
  llvm_blake3_hasher_init(&h);
  llvm_blake3_hasher_update(&h, p, n);
  llvm_blake3_hasher_finalize(&h, out, outlen);
}

static int mkdirs(const char *path) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s", path);
  for (char *p = tmp + 1; *p; p++)
    if (*p == '/') {
      *p = 0;
      if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
      *p = '/';
    }
  if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
  return 0;
}

void kiln_cache_open(kiln_cache *c, const char *dir, const char *cpu, const char *features) {
  memset(c, 0, sizeof *c);
  c->cpu = kiln_strdup(cpu);
  c->features = kiln_strdup(features);
  char buf[4096];
  if (!dir) {
    const char *env = getenv("KILN_CACHE_DIR");
    const char *home = getenv("HOME");
    if (env)
      dir = env;
    else if (home && *home) {
      snprintf(buf, sizeof buf, "%s/.cache/kiln", home);
      dir = buf;
    } else
      return;
  }
  if (!*dir) return; /* disabled on purpose */
  if (mkdirs(dir) || access(dir, W_OK | X_OK)) {
    snprintf(c->warning, sizeof c->warning,
             "kernel cache directory '%s' is not writable (%s); compiling without a cache", dir,
             strerror(errno ? errno : EACCES));
    return;
  }
  c->dir = kiln_strdup(dir);
}

void kiln_cache_close(kiln_cache *c) {
  kiln_free(c->dir);
  kiln_free(c->cpu);
  kiln_free(c->features);
  memset(c, 0, sizeof *c);
}

void kiln_cache_path(const kiln_cache *c, const char *key, char *out, size_t len) {
  snprintf(out, len, "%s/%s.o.kc", c->dir ? c->dir : ".", key);
}

static void fill_header(const kiln_cache *c, cache_header *h, const void *data, size_t len) {
  memset(h, 0, sizeof *h);
  memcpy(h->magic, CACHE_MAGIC, 8);
  unsigned maj, min, patch;
  LLVMGetVersion(&maj, &min, &patch);
  h->llvm_major = maj;
  h->llvm_minor = min;
  snprintf(h->cpu, sizeof h->cpu, "%s", c->cpu ? c->cpu : "");
  hash_bytes(c->features ? c->features : "", c->features ? strlen(c->features) : 0, h->features_hash, 16);
  h->payload_len = len;
  hash_bytes(data, len, h->checksum, 32);
}

bool kiln_cache_get(kiln_cache *c, const char *key, LLVMMemoryBufferRef *obj, char *warn, size_t wlen) {
  if (!c->dir) return false;
  char path[4096];
  kiln_cache_path(c, key, path, sizeof path);
  FILE *f = fopen(path, "rb");
  if (!f) return false; /* a miss */
  cache_header h, want;
  uint8_t *data = NULL;
  bool ok = false;
  const char *why = NULL;
  struct stat st;
  if (fstat(fileno(f), &st) || fread(&h, sizeof h, 1, f) != 1) {
    why = "truncated header";
    goto out;
  }
  if (memcmp(h.magic, CACHE_MAGIC, 8)) {
    why = "bad magic";
    goto out;
  }
  if (h.payload_len > CACHE_MAX_ENTRY || (uint64_t)st.st_size != sizeof h + h.payload_len) {
    why = "truncated or oversized entry";
    goto out;
  }
  data = kiln_malloc(h.payload_len ? (size_t)h.payload_len : 1);
  if (!data || fread(data, 1, (size_t)h.payload_len, f) != h.payload_len) {
    why = "short read";
    goto out;
  }
  fill_header(c, &want, data, (size_t)h.payload_len);
  if (h.llvm_major != want.llvm_major || h.llvm_minor != want.llvm_minor ||
      strcmp(h.cpu, want.cpu) || memcmp(h.features_hash, want.features_hash, 16)) {
    why = "built for another CPU or LLVM version";
    goto out;
  }
  if (memcmp(h.checksum, want.checksum, 32)) {
    why = "checksum mismatch";
    goto out;
  }
  *obj = LLVMCreateMemoryBufferWithMemoryRangeCopy((const char *)data, (size_t)h.payload_len, key);
  ok = *obj != NULL;
out:
  fclose(f);
  kiln_free(data);
  if (why) snprintf(warn, wlen, "kernel cache entry %s is unusable (%s); rebuilding it", path, why);
  return ok;
}

void kiln_cache_put(kiln_cache *c, const char *key, const void *data, size_t len, char *warn, size_t wlen) {
  if (!c->dir) return;
  char path[4096], tmp[4200];
  kiln_cache_path(c, key, path, sizeof path);
  snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
  cache_header h;
  fill_header(c, &h, data, len);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) {
    snprintf(warn, wlen, "cannot write kernel cache entry %s (%s)", tmp, strerror(errno));
    return;
  }
  bool ok = write(fd, &h, sizeof h) == (ssize_t)sizeof h && write(fd, data, len) == (ssize_t)len;
  ok = close(fd) == 0 && ok;
  if (!ok || rename(tmp, path)) {
    snprintf(warn, wlen, "cannot write kernel cache entry %s (%s)", path, strerror(errno));
    unlink(tmp);
  }
}
