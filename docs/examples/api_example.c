/* api_example.c — embedding kiln: load an ONNX model, compile it, run it.
 *   kiln_api_example MODEL.onnx
 * Feeds every input with a constant pattern and prints each output's first values. */
#include <stdio.h>

#include "kiln.h"

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s MODEL.onnx\n", argv[0]);
    return 2;
  }
  kiln_err err = {0};
  kiln_model *model = NULL;
  if (kiln_model_load(argv[1], NULL, &model, &err)) { /* every error names file/node/tensor */
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  kiln_options opt = kiln_options_default(); /* JIT, all cores, kernel cache in ~/.cache/kiln */
  kiln_session *session = NULL;
  if (kiln_session_create(model, &opt, &session, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    kiln_model_free(model);
    return 1;
  }
  int n_in = kiln_model_num_inputs(model), n_out = kiln_model_num_outputs(model);
  kiln_tensor *in[16] = {0}, *out[16] = {0};
  if (n_in > 16 || n_out > 16) return 1;
  for (int i = 0; i < n_in; i++) {
    /* inputs are the caller's: kiln only reads them */
    if (kiln_tensor_new(kiln_model_input_dtype(model, i), kiln_model_input_shape(model, i), &in[i], &err)) {
      fprintf(stderr, "%s\n", err.msg);
      return 1;
    }
    for (int64_t k = 0; k < in[i]->numel; k++) kiln_tensor_set_f(in[i], k, (double)(k % 7) * 0.1);
  }
  if (kiln_session_run(session, in, out, &err)) { /* outputs are new tensors: ours to free */
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  for (int i = 0; i < n_out; i++) {
    char shape[128];
    printf("%s %s:", kiln_model_output_name(model, i), kiln_shape_str(&out[i]->shape, shape, sizeof shape));
    for (int64_t k = 0; k < out[i]->numel && k < 4; k++) printf(" %g", kiln_tensor_get_f(out[i], k));
    printf("\n");
    kiln_tensor_free(out[i]);
  }
  kiln_session_stats st;
  kiln_session_get_stats(session, &st);
  printf("%lld kernel calls, %.1f MiB arena, %d threads\n", (long long)st.steps,
         (double)st.planned_peak_bytes / 1048576.0, st.threads);
  for (int i = 0; i < n_in; i++) kiln_tensor_free(in[i]);
  kiln_session_free(session); /* the model may be freed before or after */
  kiln_model_free(model);
  return 0;
}
