/* fuzz_infer.c — libFuzzer target: load an ONNX model, bind its symbolic dims,
 * verify, run shape inference with constant folding through the reference kernels,
 * print the IR, run the default inference pass pipeline, and — when the graph is
 * small — run it on the reference interpreter with inputs drawn from the bytes. */
#include <stdint.h>
#include <string.h>

#include "frontend/onnx.h"
#include "fuzz/fuzz.h"
#include "passes/pass.h"
#include "runtime/ref.h"

/* Graphs whose values hold more elements than this are only inferred, not run, so
 * one input cannot stall the fuzzer in a naive kernel. */
#define FUZZ_RUN_MAX_ELEMS (1 << 14)

static FILE *devnull(void) {
  static FILE *f; /* the fuzzer process's sink for ir_print; not library state */
  if (!f) f = fopen("/dev/null", "w");
  return f;
}

static void bind_dims(kiln_graph *g) {
  for (int i = 0; i < g->n_inputs; i++) {
    kiln_value *v = &g->values[g->inputs[i]];
    for (int d = 0; d < v->shape.rank; d++)
      if (v->sym[d] && v->shape.d[d] < 0) {
        kiln_err e = {0};
        kiln_code rc = ir_bind_dim(g, v->sym[d], 2, &e);
        fuzz_check_err(rc, &e, NULL);
      }
  }
}

static int64_t total_elems(const kiln_graph *g) {
  int64_t sum = 0;
  for (int64_t v = 0; v < g->n_values; v++) {
    int64_t n;
    if (!g->values[v].typed || !kiln_shape_numel(&g->values[v].shape, &n)) return INT64_MAX;
    if (!kiln_add_ok(sum, n, &sum)) return INT64_MAX;
  }
  return sum;
}

/* Input contents cycle through the fuzz bytes: floats of all kinds (NaN, inf),
 * indices in and out of range. */
static void fill(kiln_tensor *t, const uint8_t *data, size_t size) {
  uint8_t *p = t->data;
  size_t nb = kiln_tensor_nbytes(t);
  for (size_t i = 0; i < nb; i++) p[i] = size ? data[(i * 7 + 3) % size] : 0;
  for (int64_t i = 0; i < t->numel; i++) {
    uint8_t b = size ? data[(size_t)i % size] : 0;
    switch (t->dtype) {
    case KILN_BOOL: p[i] &= 1; break;
    case KILN_I64: /* mostly small indices (negative ones too), some huge */
      if (b & 0x80) ((int64_t *)p)[i] = (int64_t)(b & 7) - 3;
      break;
    case KILN_I32:
      if (b & 0x80) ((int32_t *)p)[i] = (int32_t)(b & 7) - 3;
      break;
    default: break;
    }
  }
}

static void run_ref(const kiln_graph *g, const uint8_t *data, size_t size) {
  kiln_tensor *ins[64] = {0}, *outs[64] = {0};
  if (g->n_inputs > 64 || g->n_outputs > 64) return;
  kiln_err e = {0};
  kiln_code rc = KILN_OK;
  for (int i = 0; i < g->n_inputs && !rc; i++) {
    const kiln_value *v = &g->values[g->inputs[i]];
    rc = kiln_tensor_new(v->dtype, &v->shape, &ins[i], &e);
    if (!rc) fill(ins[i], data, size);
  }
  if (!rc) {
    kiln_ref_ctx ctx = {.g = g};
    rc = kiln_ref_run(g, &ctx, ins, outs, &e);
    fuzz_check_err(rc, &e, NULL);
    for (int i = 0; i < g->n_outputs; i++) kiln_tensor_free(outs[i]);
  }
  for (int i = 0; i < g->n_inputs; i++) kiln_tensor_free(ins[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  kiln_err e = {0};
  kiln_graph *g = NULL;
  kiln_code rc = kiln_onnx_load_buffer(data, size, NULL, "fuzz.onnx", &g, &e);
  fuzz_check_err(rc, &e, g);
  if (rc) return 0;
  bind_dims(g);
  kiln_evaluator ev = kiln_ref_evaluator();
  rc = ir_infer(g, &ev, &e);
  fuzz_check_err(rc, &e, NULL);
  ir_print(g, devnull());
  if (rc == KILN_OK) {
    kiln_pass_ctx cx = {.mode = KILN_MODE_INFERENCE, .ev = &ev, .verify = true};
    kiln_pipeline_result res;
    kiln_err e2 = {0};
    rc = kiln_run_pipeline(g, NULL, &cx, &res, &e2);
    fuzz_check_err(rc, &e2, NULL);
    if (rc == KILN_OK) {
      ir_print(g, devnull());
      if (total_elems(g) <= FUZZ_RUN_MAX_ELEMS) run_ref(g, data, size);
    }
  }
  ir_graph_free(g);
  return 0;
}
