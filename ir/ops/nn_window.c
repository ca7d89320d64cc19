/* nn_window.c — output sizes and pads of sliding windows (see nn_window.h). */
#include "ir/ops/nn_window.h"

#include <string.h>

typedef enum { PAD_NOTSET, PAD_SAME_UPPER, PAD_SAME_LOWER, PAD_VALID } auto_pad_kind;

static kiln_code read_auto_pad(const kiln_node *n, auto_pad_kind *k, kiln_err *e) {
  const char *s = ir_attr_str(n, "auto_pad");
  if (!s[0] || !strcmp(s, "NOTSET"))
    *k = PAD_NOTSET;
  else if (!strcmp(s, "SAME_UPPER"))
    *k = PAD_SAME_UPPER;
  else if (!strcmp(s, "SAME_LOWER"))
    *k = PAD_SAME_LOWER;
  else if (!strcmp(s, "VALID"))
    *k = PAD_VALID;
  else
    return kiln_errf(e, KILN_ERR_INVALID,
                     "auto_pad '%s' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID", s);
  return KILN_OK;
}

/* Reads INTS attribute `name` of exactly `want` values in [lo, KILN_MAX_DIM] into v, or
 * fills v with `def` when absent. */
static kiln_code read_ints(const kiln_node *n, const char *name, int want, int64_t lo, int64_t def,
                           int64_t *v, kiln_err *e) {
  const int64_t *a;
  int64_t cnt = ir_attr_ints(n, name, &a);
  if (!a) {
    for (int i = 0; i < want; i++) v[i] = def;
    return KILN_OK;
  }
  if (cnt != want)
    return kiln_errf(e, KILN_ERR_SHAPE, "attribute '%s' has %lld values; expected %d", name,
                     (long long)cnt, want);
  for (int i = 0; i < want; i++) {
    if (a[i] < lo || a[i] > KILN_MAX_DIM)
      return kiln_errf(e, KILN_ERR_SHAPE, "attribute '%s' value %lld is out of range (min %lld)",
                       name, (long long)a[i], (long long)lo);
    v[i] = a[i];
  }
  return KILN_OK;
}

/* Common part: spatial rank, kernel, strides, dilations, explicit pads. */
static kiln_code read_common(const kiln_node *n, const kiln_shape *x, const char *x_name,
                             const int64_t *kernel, nn_window *w, kiln_err *e) {
  memset(w, 0, sizeof *w);
  int nsp = x->rank - 2;
  if (nsp < 1 || nsp > NN_WIN_MAX) {
    char buf[160];
    return kiln_errf(e, nsp < 1 ? KILN_ERR_SHAPE : KILN_ERR_UNSUPPORTED,
                     "input '%s' has shape %s; expected (N, C, D1[, D2[, D3]]) with 1 to %d "
                     "spatial dimensions",
                     x_name, kiln_shape_str(x, buf, sizeof buf), NN_WIN_MAX);
  }
  w->nsp = nsp;
  for (int i = 0; i < nsp; i++) {
    w->in[i] = x->d[2 + i];
    if (kernel[i] < 1 || kernel[i] > KILN_MAX_DIM)
      return kiln_errf(e, KILN_ERR_SHAPE, "kernel size %lld in spatial dimension %d is invalid",
                       (long long)kernel[i], i);
    w->kernel[i] = kernel[i];
  }
  int64_t pads[2 * NN_WIN_MAX];
  KILN_TRY(read_ints(n, "strides", nsp, 1, 1, w->stride, e));
  KILN_TRY(read_ints(n, "dilations", nsp, 1, 1, w->dilation, e));
  KILN_TRY(read_ints(n, "pads", 2 * nsp, 0, 0, pads, e));
  for (int i = 0; i < nsp; i++) {
    w->pad_begin[i] = pads[i];
    w->pad_end[i] = pads[nsp + i];
  }
  return KILN_OK;
}

/* Extent of a dilated kernel: (k-1)*d + 1. */
static kiln_code kernel_extent(const nn_window *w, int i, int64_t *ext, kiln_err *e) {
  if (!kiln_mul_ok(w->kernel[i] - 1, w->dilation[i], ext) || *ext >= KILN_MAX_DIM)
    return kiln_errf(e, KILN_ERR_LIMIT, "dilated kernel in spatial dimension %d is too large", i);
  *ext += 1;
  return KILN_OK;
}

static int64_t floor_div(int64_t a, int64_t b) { /* b > 0 */
  int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

static int64_t ceil_div(int64_t a, int64_t b) { return -floor_div(-a, b); }

kiln_code nn_window_forward(const kiln_node *n, const kiln_shape *x, const char *x_name,
                            const int64_t *kernel, bool ceil_mode, nn_window *w, kiln_err *e) {
  auto_pad_kind ap;
  KILN_TRY(read_auto_pad(n, &ap, e));
  KILN_TRY(read_common(n, x, x_name, kernel, w, e));
  for (int i = 0; i < w->nsp; i++) {
    int64_t ext, in = w->in[i], s = w->stride[i];
    KILN_TRY(kernel_extent(w, i, &ext, e));
    if (ap == PAD_SAME_UPPER || ap == PAD_SAME_LOWER) {
      /* out = ceil(in / stride); pad just enough for the last window, the odd unit at the
       * end (SAME_UPPER) or at the beginning (SAME_LOWER). */
      int64_t out = ceil_div(in, s);
      int64_t total = (out - 1) * s + ext - in;
      if (total < 0) total = 0;
      w->pad_begin[i] = ap == PAD_SAME_UPPER ? total / 2 : total - total / 2;
      w->pad_end[i] = total - w->pad_begin[i];
      w->out[i] = out;
      continue;
    }
    if (ap == PAD_VALID) w->pad_begin[i] = w->pad_end[i] = 0;
    int64_t padded = in + w->pad_begin[i] + w->pad_end[i];
    if (padded < ext)
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "input '%s' spatial dimension %d has size %lld (%lld with padding), smaller "
                       "than the kernel extent %lld (kernel %lld, dilation %lld)",
                       x_name, i, (long long)in, (long long)padded, (long long)ext,
                       (long long)w->kernel[i], (long long)w->dilation[i]);
    int64_t span = padded - ext;
    int64_t out = (ceil_mode ? ceil_div(span, s) : span / s) + 1;
    /* ceil_mode must not add a window that starts in the end padding. */
    if (ceil_mode && (out - 1) * s >= in + w->pad_begin[i]) out--;
    w->out[i] = out;
  }
  return KILN_OK;
}

kiln_code nn_window_transpose(const kiln_node *n, const kiln_shape *x, const char *x_name,
                              const int64_t *kernel, nn_window *w, kiln_err *e) {
  auto_pad_kind ap;
  KILN_TRY(read_auto_pad(n, &ap, e));
  KILN_TRY(read_common(n, x, x_name, kernel, w, e));
  int nsp = w->nsp;
  int64_t opad[NN_WIN_MAX];
  KILN_TRY(read_ints(n, "output_padding", nsp, 0, 0, opad, e));
  const int64_t *os;
  int64_t n_os = ir_attr_ints(n, "output_shape", &os);
  if (os) {
    /* Either the spatial sizes or the whole (N, C, ...) shape. */
    if (n_os == nsp + 2)
      os += 2;
    else if (n_os != nsp)
      return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'output_shape' has %lld values; expected %d",
                       (long long)n_os, nsp);
    for (int i = 0; i < nsp; i++)
      if (os[i] < 0 || os[i] > KILN_MAX_DIM)
        return kiln_errf(e, KILN_ERR_SHAPE, "attribute 'output_shape' value %lld is invalid",
                         (long long)os[i]);
  }
  for (int i = 0; i < nsp; i++) {
    int64_t ext, full, in = w->in[i];
    KILN_TRY(kernel_extent(w, i, &ext, e));
    /* The size of the un-cropped result: stride*(in-1) + output_padding + extent. */
    if (in < 1 || !kiln_mul_ok(w->stride[i], in - 1, &full) || full > KILN_MAX_DIM)
      return kiln_errf(e, KILN_ERR_SHAPE, "input '%s' spatial dimension %d (size %lld) is invalid",
                       x_name, i, (long long)in);
    full += opad[i] + ext;
    if (os || ap == PAD_SAME_UPPER || ap == PAD_SAME_LOWER) {
      /* The output size is given (or in*stride for SAME); the pads follow.  ONNX puts the
       * odd unit at the end for SAME_UPPER and at the beginning otherwise. */
      int64_t out = os ? os[i] : in * w->stride[i];
      int64_t total = full - out;
      int64_t half = floor_div(total, 2);
      w->pad_begin[i] = ap == PAD_SAME_UPPER ? half : total - half;
      w->pad_end[i] = total - w->pad_begin[i];
      w->out[i] = out;
      continue;
    }
    if (ap == PAD_VALID) w->pad_begin[i] = w->pad_end[i] = 0;
    int64_t out = full - w->pad_begin[i] - w->pad_end[i];
    if (out < 0)
      return kiln_errf(e, KILN_ERR_SHAPE,
                       "pads %lld+%lld in spatial dimension %d exceed the output size %lld of "
                       "input '%s'",
                       (long long)w->pad_begin[i], (long long)w->pad_end[i], i, (long long)full,
                       x_name);
    w->out[i] = out;
  }
  return KILN_OK;
}

nn_window nn_window_3d(const nn_window *w) {
  nn_window r;
  memset(&r, 0, sizeof r);
  r.nsp = NN_WIN_MAX;
  int off = NN_WIN_MAX - w->nsp;
  for (int i = 0; i < NN_WIN_MAX; i++) {
    int j = i - off;
    bool id = j < 0;
    r.in[i] = id ? 1 : w->in[j];
    r.kernel[i] = id ? 1 : w->kernel[j];
    r.stride[i] = id ? 1 : w->stride[j];
    r.dilation[i] = id ? 1 : w->dilation[j];
    r.pad_begin[i] = id ? 0 : w->pad_begin[j];
    r.pad_end[i] = id ? 0 : w->pad_end[j];
    r.out[i] = id ? 1 : w->out[j];
  }
  return r;
}

int64_t nn_window_kernel_volume(const nn_window *w) {
  int64_t v = 1;
  for (int i = 0; i < w->nsp; i++) v *= w->kernel[i];
  return v;
}

kiln_code nn_pool_kernel_check(const int64_t *kernel, int nsp, kiln_err *e) {
  int64_t taps = 1;
  for (int i = 0; i < nsp; i++)
    if (kernel[i] >= 1 && (!kiln_mul_ok(taps, kernel[i], &taps) || taps > NN_POOL_MAX_TAPS))
      return kiln_errf(e, KILN_ERR_LIMIT,
                       "attribute 'kernel_shape' asks for windows of more than %lld taps (kiln's "
                       "limit for pools)",
                       (long long)NN_POOL_MAX_TAPS);
  return KILN_OK;
}
