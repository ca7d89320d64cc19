/* base.c — diagnostics, dtype tables, checked arithmetic, the allocation hooks. */
#include "ir/base.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kiln_code kiln_errf(kiln_err *e, kiln_code code, const char *fmt, ...) {
  if (!e || e->code != KILN_OK) return code;
  e->code = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return code;
}

void kiln_err_prefix(kiln_err *e, const char *fmt, ...) {
  if (!e || e->code == KILN_OK) return;
  char pre[KILN_ERR_MSG], old[KILN_ERR_MSG];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(pre, sizeof pre, fmt, ap);
  va_end(ap);
  memcpy(old, e->msg, sizeof old);
  snprintf(e->msg, sizeof e->msg, "%s: %s", pre, old);
}

void kiln_err_clear(kiln_err *e) {
  if (!e) return;
  e->code = KILN_OK;
  e->msg[0] = 0;
}

const char *kiln_code_name(kiln_code c) {
  static const char *const names[] = {"ok",    "io error",        "parse error",
                                      "unsupported", "invalid", "shape error",
                                      "out of memory", "limit exceeded", "internal error"};
  return (unsigned)c < sizeof names / sizeof names[0] ? names[c] : "unknown error";
}

bool kiln_dtype_supported(int t) {
  return t == KILN_F32 || t == KILN_I32 || t == KILN_I64 || t == KILN_BOOL;
}

size_t kiln_dtype_size(kiln_dtype t) {
  switch (t) {
  case KILN_F32: return 4;
  case KILN_I32: return 4;
  case KILN_I64: return 8;
  case KILN_BOOL: return 1;
  default: return 0;
  }
}

const char *kiln_dtype_name(int t) {
  static const char *const names[] = {"undefined", "float32", "uint8",  "int8",     "uint16",
                                      "int16",     "int32",   "int64",  "string",   "bool",
                                      "float16",   "float64", "uint32", "uint64",   "complex64",
                                      "complex128", "bfloat16"};
  return t >= 0 && (size_t)t < sizeof names / sizeof names[0] ? names[t] : "unknown-dtype";
}

bool kiln_mul_ok(int64_t a, int64_t b, int64_t *out) {
  if (a < 0 || b < 0) return false;
  if (__builtin_mul_overflow(a, b, out)) return false;
  return true;
}

bool kiln_add_ok(int64_t a, int64_t b, int64_t *out) {
  if (a < 0 || b < 0) return false;
  if (__builtin_add_overflow(a, b, out)) return false;
  return true;
}

bool kiln_shape_numel(const kiln_shape *s, int64_t *numel) {
  /* The product of the non-zero dims is bounded too: an empty tensor such as
   * [0, 2^40, 2^40] would otherwise be valid, and code that multiplies some of
   * its dims (Flatten, strides) would overflow. */
  int64_t n = 1, nonzero = 1;
  if (s->rank < 0 || s->rank > KILN_MAX_RANK) return false;
  for (int i = 0; i < s->rank; i++) {
    if (s->d[i] < 0 || s->d[i] > KILN_MAX_DIM) return false;
    if (s->d[i] == 0) {
      n = 0;
      continue;
    }
    if (!kiln_mul_ok(nonzero, s->d[i], &nonzero)) return false;
    if (nonzero > KILN_MAX_ELEMS) return false;
  }
  *numel = n ? nonzero : 0;
  return true;
}

bool kiln_shape_eq(const kiln_shape *a, const kiln_shape *b) {
  if (a->rank != b->rank) return false;
  for (int i = 0; i < a->rank; i++)
    if (a->d[i] != b->d[i]) return false;
  return true;
}

char *kiln_shape_str(const kiln_shape *s, char *buf, size_t n) {
  size_t k = 0;
  if (n == 0) return buf;
  buf[0] = 0;
  k += (size_t)snprintf(buf + k, n - k, "[");
  for (int i = 0; i < s->rank && i < KILN_MAX_RANK && k < n; i++)
    k += (size_t)snprintf(buf + k, n - k, i ? ",%lld" : "%lld", (long long)s->d[i]);
  if (k < n) snprintf(buf + k, n - k, "]");
  return buf;
}

kiln_shape kiln_shape_make(int rank, const int64_t *d) {
  kiln_shape s;
  memset(&s, 0, sizeof s);
  s.rank = rank;
  for (int i = 0; i < rank && i < KILN_MAX_RANK; i++) s.d[i] = d[i];
  return s;
}

/* The failing-allocator hook.  Thread-local so parallel test threads do not
 * interfere; -1 (never fail) by default. */
static _Thread_local long alloc_fail_countdown = -1;

void kiln_alloc_fail_after(long n) { alloc_fail_countdown = n; }

static bool alloc_should_fail(void) {
  if (alloc_fail_countdown < 0) return false;
  if (alloc_fail_countdown == 0) return true;
  alloc_fail_countdown--;
  return false;
}

void *kiln_malloc(size_t n) {
  if (alloc_should_fail()) return NULL;
  return malloc(n ? n : 1);
}

void *kiln_calloc(size_t n, size_t sz) {
  if (alloc_should_fail()) return NULL;
  return calloc(n ? n : 1, sz ? sz : 1);
}

void *kiln_realloc(void *p, size_t n) {
  if (alloc_should_fail()) return NULL;
  return realloc(p, n ? n : 1);
}

void kiln_free(void *p) { free(p); }

char *kiln_strdup(const char *s) {
  if (!s) s = "";
  size_t n = strlen(s) + 1;
  char *d = kiln_malloc(n);
  if (d) memcpy(d, s, n);
  return d;
}

kiln_code kiln_grow(void **arr, int64_t *cap, int64_t need, size_t esz, kiln_err *e) {
  if (need <= *cap) return KILN_OK;
  int64_t nc = *cap ? *cap : 8;
  while (nc < need) {
    if (nc > INT64_MAX / 2) return kiln_errf(e, KILN_ERR_LIMIT, "array too large");
    nc *= 2;
  }
  int64_t bytes;
  if (!kiln_mul_ok(nc, (int64_t)esz, &bytes)) return kiln_errf(e, KILN_ERR_LIMIT, "array too large");
  void *p = kiln_realloc(*arr, (size_t)bytes);
  if (!p) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory growing an array to %lld bytes",
                           (long long)bytes);
  memset((char *)p + (size_t)(*cap) * esz, 0, (size_t)(nc - *cap) * esz);
  *arr = p;
  *cap = nc;
  return KILN_OK;
}
