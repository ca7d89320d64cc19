/* cache.h — the on-disk cache of compiled kernel objects.
 *
 * One file per kernel, `<dir>/<kernel-name>.o.kc`, where the kernel name is the
 * hash of its IR.  The file starts with a header: magic, format version, the
 * LLVM version, CPU name and feature string the object was built for, the
 * payload length and a BLAKE3 checksum of the payload.  An entry that is
 * truncated, corrupt, or built for another CPU/LLVM is ignored (with a warning)
 * and rebuilt; an unwritable directory disables the cache with a warning.
 * Entries are written to a temporary name and renamed, so readers never see a
 * half-written file. */
#ifndef KILN_CODEGEN_CACHE_H
#define KILN_CODEGEN_CACHE_H

#include <llvm-c/Core.h>

#include "ir/base.h"

typedef struct kiln_cache {
  char *dir;      /* NULL when disabled */
  char *cpu, *features;
  char warning[KILN_ERR_MSG];
} kiln_cache;

/* dir NULL: $KILN_CACHE_DIR, else $HOME/.cache/kiln; "" disables. Never fails:
 * problems leave the cache disabled and set `warning`. */
void kiln_cache_open(kiln_cache *c, const char *dir, const char *cpu, const char *features);
void kiln_cache_close(kiln_cache *c);
/* True and *obj set when a valid entry exists; a bad entry sets `warn`. */
bool kiln_cache_get(kiln_cache *c, const char *key, LLVMMemoryBufferRef *obj, char *warn, size_t wlen);
void kiln_cache_put(kiln_cache *c, const char *key, const void *data, size_t len, char *warn, size_t wlen);
/* Path of an entry (for tests that corrupt entries on purpose). */
void kiln_cache_path(const kiln_cache *c, const char *key, char *out, size_t len);

#endif
