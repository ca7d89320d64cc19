/* fuzz_tensor_pb.c — libFuzzer target: TensorProto bytes -> kiln_tensor_load_pb_buffer. */
#include <stdint.h>
#include <string.h>

#include "frontend/onnx.h"
#include "fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_err e = {0};
  kiln_tensor *t = NULL;
  char *name = NULL;
  kiln_code rc = kiln_tensor_load_pb_buffer(data, size, "fuzz.pb", &t, &name, &e);
  fuzz_check_err(rc, &e, t);
  if (rc == KILN_OK) {
    int64_t numel;
    if (!name || !kiln_shape_numel(&t->shape, &numel) || numel != t->numel) abort();
    /* touch every byte so ASan sees a short buffer */
    size_t nb = kiln_tensor_nbytes(t);
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < nb; i++) sink ^= ((const uint8_t *)t->data)[i];
    (void)sink;
  }
  kiln_tensor_free(t);
  kiln_free(name);
  return 0;
}
