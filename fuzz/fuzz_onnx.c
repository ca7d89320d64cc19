/* fuzz_onnx.c — libFuzzer target: ONNX ModelProto bytes -> kiln_onnx_load_buffer; what
 * loads must also serialize and load again. */
#include <stdint.h>

#include "frontend/onnx.h"
#include "fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_err e = {0};
  kiln_graph *g = NULL;
  kiln_code rc = kiln_onnx_load_buffer(data, size, NULL, "fuzz.onnx", &g, &e);
  fuzz_check_err(rc, &e, g);
  if (rc == KILN_OK) {
    uint8_t *buf = NULL;
    size_t len = 0;
    kiln_err e2 = {0};
    rc = kiln_onnx_save_buffer(g, &buf, &len, &e2);
    fuzz_check_err(rc, &e2, NULL);
    if (rc == KILN_OK) {
      kiln_graph *g2 = NULL;
      kiln_err e3 = {0};
      rc = kiln_onnx_load_buffer(buf, len, NULL, "saved.onnx", &g2, &e3);
      if (rc) { /* kiln must read back whatever it writes */
        fprintf(stderr, "fuzz: a loaded model did not reload after saving: %s\n", e3.msg);
        abort();
      }
      ir_graph_free(g2);
    }
    kiln_free(buf);
  }
  ir_graph_free(g);
  return 0;
}
