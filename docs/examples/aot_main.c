/* aot_main.c — a program that uses a model compiled ahead of time by
 *   kiln compile model.onnx -o libmodel.so --header model.h --prefix model
 * It links only that library (no kiln, no LLVM):
 *   cc aot_main.c -I. -L. -lmodel -Wl,-rpath,'$ORIGIN' -o aot_main
 * usage: aot_main [INPUT0.bin [OUTPUT_PREFIX]]
 *   reads input 0 as raw bytes (other inputs are zero), runs the model, prints a
 *   summary of each output and, with OUTPUT_PREFIX, writes output i to PREFIXi.bin. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

static const size_t in_bytes[] = {
#if MODEL_NUM_INPUTS > 0
    MODEL_INPUT0_BYTES,
#endif
#if MODEL_NUM_INPUTS > 1
    MODEL_INPUT1_BYTES,
#endif
};
static const size_t out_bytes[] = {
    MODEL_OUTPUT0_BYTES,
#if MODEL_NUM_OUTPUTS > 1
    MODEL_OUTPUT1_BYTES,
#endif
};

int main(int argc, char **argv) {
  char err[256];
  model *m = model_create(NULL, err, sizeof err);
  if (!m) {
    fprintf(stderr, "model_create: %s\n", err);
    return 1;
  }
  void *in[MODEL_NUM_INPUTS > 0 ? MODEL_NUM_INPUTS : 1], *out[MODEL_NUM_OUTPUTS];
  for (int i = 0; i < MODEL_NUM_INPUTS; i++) in[i] = calloc(1, in_bytes[i]);
  for (int i = 0; i < MODEL_NUM_OUTPUTS; i++) out[i] = calloc(1, out_bytes[i]);
  if (argc > 1 && MODEL_NUM_INPUTS > 0) {
    FILE *f = fopen(argv[1], "rb");
    if (!f || fread(in[0], 1, in_bytes[0], f) != in_bytes[0]) {
      fprintf(stderr, "cannot read %zu bytes from %s\n", in_bytes[0], argv[1]);
      return 1;
    }
    fclose(f);
  }
  if (model_run(m, (const void *const *)in, out)) {
    fprintf(stderr, "model_run failed\n");
    return 1;
  }
  for (int i = 0; i < MODEL_NUM_OUTPUTS; i++) {
    const float *y = out[i];
    printf("output %d: first values %g %g %g\n", i, y[0], y[1], y[2]);
    if (argc > 2) {
      char path[1024];
      snprintf(path, sizeof path, "%s%d.bin", argv[2], i);
      FILE *f = fopen(path, "wb");
      if (!f || fwrite(out[i], 1, out_bytes[i], f) != out_bytes[i]) return 1;
      fclose(f);
    }
  }
  for (int i = 0; i < MODEL_NUM_INPUTS; i++) free(in[i]);
  for (int i = 0; i < MODEL_NUM_OUTPUTS; i++) free(out[i]);
  model_destroy(m);
  return 0;
}
