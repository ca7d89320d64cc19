/* ref_util.h — helpers for the reference kernels: broadcasting index maps and
 * typed element access.  Clarity over speed. */
#ifndef KILN_REF_UTIL_H
#define KILN_REF_UTIL_H

#include "runtime/ref.h"

#define F32(t) ((float *)(t)->data)
#define I64(t) ((int64_t *)(t)->data)
#define I32(t) ((int32_t *)(t)->data)
#define BOOLS(t) ((uint8_t *)(t)->data)

/* Strides (in elements) to read `in` as if broadcast to `out`: 0 on broadcast axes. */
static inline void ref_bcast_strides(const kiln_shape *in, const kiln_shape *out, int64_t *st) {
  int64_t acc = 1;
  for (int i = out->rank - 1; i >= 0; i--) {
    int j = i - (out->rank - in->rank);
    if (j < 0 || in->d[j] == 1)
      st[i] = 0;
    else
      st[i] = acc;
    if (j >= 0) acc *= in->d[j];
  }
}

/* Flat index into a broadcast input for flat output index `o`. */
static inline int64_t ref_bcast_index(int64_t o, const kiln_shape *out, const int64_t *st) {
  int64_t idx = 0;
  for (int i = out->rank - 1; i >= 0; i--) {
    int64_t c = o % out->d[i];
    o /= out->d[i];
    idx += c * st[i];
  }
  return idx;
}

/* Multi-index of flat index `o` in `s`. */
static inline void ref_unflatten(int64_t o, const kiln_shape *s, int64_t *idx) {
  for (int i = s->rank - 1; i >= 0; i--) {
    idx[i] = s->d[i] ? o % s->d[i] : 0;
    o = s->d[i] ? o / s->d[i] : 0;
  }
}

#endif
