/* nn_window.h — sliding-window geometry shared by Conv, ConvTranspose and the pools:
 * kernel, strides, dilations, pads and auto_pad resolved into output sizes and explicit
 * pads.  Shape inference and the reference kernels both call these, so the two can never
 * disagree about where a window sits. */
#ifndef KILN_OPS_NN_WINDOW_H
#define KILN_OPS_NN_WINDOW_H

#include "ir/graph.h"

/* kiln handles 1-D, 2-D and 3-D windows (ONNX models use no others). */
#define NN_WIN_MAX 3

typedef struct nn_window {
  int nsp; /* number of spatial dims */
  int64_t in[NN_WIN_MAX];     /* input spatial sizes */
  int64_t kernel[NN_WIN_MAX];
  int64_t stride[NN_WIN_MAX];
  int64_t dilation[NN_WIN_MAX];
  /* Resolved pads.  Forward windows: >= 0.  ConvTranspose may have a negative pad when an
   * explicit output_shape is larger than the full result (the extra rows stay zero). */
  int64_t pad_begin[NN_WIN_MAX];
  int64_t pad_end[NN_WIN_MAX];
  int64_t out[NN_WIN_MAX];    /* output spatial sizes */
} nn_window;

/* Conv, MaxPool, AveragePool.  Reads the node's `strides`, `dilations`, `pads` and
 * `auto_pad` attributes (all must be in the op's schema); `kernel` holds x->rank-2 sizes.
 * ceil_mode rounds the output size up (pools), dropping a last window that would start
 * inside the end padding (as PyTorch and onnxruntime do).  Errors name input `x_name`. */
kiln_code nn_window_forward(const kiln_node *n, const kiln_shape *x, const char *x_name,
                            const int64_t *kernel, bool ceil_mode, nn_window *w, kiln_err *e);

/* ConvTranspose: additionally reads `output_padding` and `output_shape`. */
kiln_code nn_window_transpose(const kiln_node *n, const kiln_shape *x, const char *x_name,
                              const int64_t *kernel, nn_window *w, kiln_err *e);

/* The same window with its spatial dims right-aligned into 3 slots; the leading unused
 * slots become size-1 identity dims, so kernels can loop over (d, h, w) for any rank. */
nn_window nn_window_3d(const nn_window *w);

/* Product of the kernel sizes. */
int64_t nn_window_kernel_volume(const nn_window *w);

/* Pools take their kernel from an attribute, not from weights, so a tiny model could ask
 * for windows of billions of taps that kernels loop over (and the JIT unrolls): at most
 * NN_POOL_MAX_TAPS taps per window (a KILN_ERR_LIMIT naming the attribute). */
#define NN_POOL_MAX_TAPS ((int64_t)1 << 16)
kiln_code nn_pool_kernel_check(const int64_t *kernel, int nsp, kiln_err *e);

#endif
