/* fuzz_npy.c — libFuzzer target: .npy bytes -> kiln_tensor_load_npy_buffer. */
#include <stdint.h>

#include "frontend/onnx.h"
#include "fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  kiln_code rc = kiln_tensor_load_npy_buffer(data, size, "fuzz.npy", &t, &e);
  fuzz_check_err(rc, &e, t);
  if (rc == KILN_OK) {
    int64_t numel;
    if (!kiln_shape_numel(&t->shape, &numel) || numel != t->numel) abort();
    size_t nb = kiln_tensor_nbytes(t);
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < nb; i++) sink ^= ((const uint8_t *)t->data)[i];
    (void)sink;
  }
  kiln_tensor_free(t);
  return 0;
}
