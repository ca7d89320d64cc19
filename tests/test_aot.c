/* test_aot.c — an ahead-of-time library of a kiln-built model, used by the
 * example program in docs/examples (compiled here with the system compiler and
 * linked only against the library), gives the JIT's outputs. */
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "frontend/onnx.h"
#include "kiln.h"
#include "models/models.h"
#include "test.h"

static void test_library_matches_jit(void) {
  char dir[] = "/tmp/kiln-test-aot-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char path[512], cmd[2048];
  kiln_err e = {0};
  kiln_model_opts o;
  kiln_model_defaults(&o);
  o.width = 4;
  o.classes = 5;
  o.cnet_hidden = 8;
  o.spn = true;
  o.image_size = 32;
  o.batch = 2;
  kiln_graph *g = NULL;
  CHECK_OK(kiln_model_build(&o, &g, &e), &e);
  snprintf(path, sizeof path, "%s/m.onnx", dir);
  CHECK_OK(kiln_onnx_save(g, path, &e), &e);
  ir_graph_free(g);
  kiln_model *m = NULL;
  CHECK_OK(kiln_model_load(path, NULL, &m, &e), &e);
  if (!m) return;
  char so[512], hdr[512];
  snprintf(so, sizeof so, "%s/libmodel.so", dir);
  snprintf(hdr, sizeof hdr, "%s/model.h", dir);
  /* one sample per pass (micro-batching): the library's arena holds one, its header the batch */
  kiln_library_options lo = {.so_path = so, .header_path = hdr, .prefix = "model",
                             .micro_batch = 1};
  kiln_code rc = kiln_compile_library(m, &lo, &e);
  CHECK_OK(rc, &e);
  if (rc) {
    kiln_model_free(m);
    return;
  }
  /* the JIT's outputs on a deterministic input */
  kiln_tensor *x, *out[2] = {0};
  kiln_tensor_new(KILN_F32, kiln_model_input_shape(m, 0), &x, &e);
  for (int64_t i = 0; i < x->numel; i++) ((float *)x->data)[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
  kiln_session *s = NULL;
  kiln_options opt = kiln_options_default();
  opt.cache_dir = "";
  opt.micro_batch = 0; /* the JIT runs the whole batch at once */
  CHECK_OK(kiln_session_create(m, &opt, &s, &e), &e);
  if (s) CHECK_OK(kiln_session_run(s, &x, out, &e), &e);
  snprintf(path, sizeof path, "%s/in.bin", dir);
  FILE *f = fopen(path, "wb");
  fwrite(x->data, 1, kiln_tensor_nbytes(x), f);
  fclose(f);
  snprintf(cmd, sizeof cmd,
           "cc -O1 '%s/docs/examples/aot_main.c' -I'%s' -L'%s' -lmodel -Wl,-rpath,'%s' -o '%s/aot_main' && "
           "'%s/aot_main' '%s/in.bin' '%s/out' > /dev/null",
           KILN_SOURCE_DIR, dir, dir, dir, dir, dir, dir, dir);
  CHECK_MSG(system(cmd) == 0, "%s", cmd);
  for (int i = 0; i < 2 && out[i]; i++) {
    snprintf(path, sizeof path, "%s/out%d.bin", dir, i);
    f = fopen(path, "rb");
    CHECK(f != NULL);
    if (!f) continue;
    float *buf = malloc(kiln_tensor_nbytes(out[i]));
    CHECK(fread(buf, 1, kiln_tensor_nbytes(out[i]), f) == kiln_tensor_nbytes(out[i]));
    fclose(f);
    int bad = 0;
    for (int64_t k = 0; k < out[i]->numel; k++) {
      float a = buf[k], b = ((float *)out[i]->data)[k];
      if (!(fabsf(a - b) <= 1e-5f + 1e-5f * fabsf(b))) bad++;
    }
    CHECK_MSG(bad == 0, "output %d: %d values differ between the AOT library and the JIT", i, bad);
    free(buf);
  }
  /* a side weights file */
  char wts[512];
  snprintf(wts, sizeof wts, "%s/weights.bin", dir);
  snprintf(so, sizeof so, "%s/libside.so", dir);
  kiln_library_options lo2 = {.so_path = so, .prefix = "side", .weights_path = wts};
  CHECK_OK(kiln_compile_library(m, &lo2, &e), &e);
  struct stat st;
  CHECK(stat(wts, &st) == 0 && st.st_size > 0);
  for (int i = 0; i < 2; i++) kiln_tensor_free(out[i]);
  kiln_tensor_free(x);
  kiln_session_free(s);
  kiln_model_free(m);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd)) {
  }
}

int main(void) {
  RUN(test_library_matches_jit);
  TEST_MAIN_END();
}
