/* pool_window.h — the pooling window of the reference kernels, shared by the forward pools
 * (pool.c) and their gradients (grad_pool.c), which must visit exactly the same taps in the
 * same order (MaxPoolGrad's argmax is MaxPool's: the first maximum, padding never wins). */
#ifndef KILN_REF_POOL_WINDOW_H
#define KILN_REF_POOL_WINDOW_H

#include "ir/ops/nn_window.h"
#include "runtime/ref/ref_util.h"

/* The window of pooling node n (kernel_shape, strides, pads, dilations, ceil_mode) over an
 * input of shape x, viewed as 3-D. */
static inline kiln_code ref_pool_window(const kiln_node *n, const kiln_shape *x, nn_window *t,
                                        kiln_err *e) {
  const int64_t *ks;
  ir_attr_ints(n, "kernel_shape", &ks);
  nn_window w;
  KILN_TRY(nn_window_forward(n, x, "X", ks, ir_attr_int(n, "ceil_mode") != 0, &w, e));
  *t = nn_window_3d(&w);
  return KILN_OK;
}

/* The spatial offsets (within one input plane) of the taps of output position (od, oh, ow)
 * that fall inside the input, in (kd, kh, kw) order, into at[] (room for the kernel's volume);
 * returns how many. */
static inline int64_t ref_pool_taps(const nn_window *t, int64_t od, int64_t oh, int64_t ow,
                                    int64_t *at) {
  int64_t n = 0;
  for (int64_t kd = 0; kd < t->kernel[0]; kd++) {
    int64_t id = od * t->stride[0] - t->pad_begin[0] + kd * t->dilation[0];
    if (id < 0 || id >= t->in[0]) continue;
    for (int64_t kh = 0; kh < t->kernel[1]; kh++) {
      int64_t ih = oh * t->stride[1] - t->pad_begin[1] + kh * t->dilation[1];
      if (ih < 0 || ih >= t->in[1]) continue;
      for (int64_t kw = 0; kw < t->kernel[2]; kw++) {
        int64_t iw = ow * t->stride[2] - t->pad_begin[2] + kw * t->dilation[2];
        if (iw < 0 || iw >= t->in[2]) continue;
        at[n++] = (id * t->in[1] + ih) * t->in[2] + iw;
      }
    }
  }
  return n;
}

/* AveragePool's divisor at output position (od, oh, ow): the taps inside the input, or with
 * count_include_pad the taps inside the padded input (a ceil_mode window may reach past even
 * that), as a product over the dims. */
static inline int64_t ref_pool_divisor(const nn_window *t, int64_t od, int64_t oh, int64_t ow,
                                       bool include_pad) {
  const int64_t pos[3] = {od, oh, ow};
  int64_t count = 1;
  for (int dim = 0; dim < 3; dim++) {
    int64_t start = pos[dim] * t->stride[dim] - t->pad_begin[dim], n_in = 0, n_padded = 0;
    for (int64_t k = 0; k < t->kernel[dim]; k++) {
      int64_t p = start + k * t->dilation[dim];
      if (p >= 0 && p < t->in[dim]) ++n_in;
      if (p >= -t->pad_begin[dim] && p < t->in[dim] + t->pad_end[dim]) ++n_padded;
    }
    count *= include_pad ? n_padded : n_in;
  }
  return count;
}

/* Room for one window's taps (the kernel's volume), or NULL with an error. */
static inline int64_t *ref_pool_tap_buffer(const nn_window *t, kiln_err *e) {
  int64_t vol = t->kernel[0] * t->kernel[1] * t->kernel[2];
  int64_t *at = kiln_malloc(sizeof(int64_t) * (size_t)(vol > 0 ? vol : 1));
  if (!at) kiln_errf(e, KILN_ERR_NOMEM, "out of memory (pooling window of %lld taps)",
                     (long long)vol);
  return at;
}

#endif
