/* test_train.c — training end to end on a tiny network and a synthetic dataset:
 * both losses go down, a checkpoint resumes to bitwise-identical weights, and the
 * exported model loads and runs.  (Gradient rules are checked one by one by the
 * finite-difference tests; PyTorch parity by tests/torch/.) */
#include <math.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "frontend/onnx.h"
#include "models/models.h"
#include "test.h"
#include "train/loop.h"

#define IMG 32
#define NCLS 3
#define NEX 24

static char tmpdir[64];

/* class k: a bright square in a class-specific place, on noise; the mask is the square */
static void make_dataset(const char *dir, bool with_masks, int every_nth_mask) {
  kiln_err e = {0};
  kiln_shape si = {.rank = 4, .d = {NEX, 3, IMG, IMG}}, sl = {.rank = 1, .d = {NEX}},
             sm = {.rank = 4, .d = {NEX, 1, IMG, IMG}};
  kiln_tensor *im, *lb, *mk, *pr;
  kiln_tensor_new(KILN_F32, &si, &im, &e);
  kiln_tensor_new(KILN_I64, &sl, &lb, &e);
  kiln_tensor_new(KILN_F32, &sm, &mk, &e);
  kiln_tensor_new(KILN_F32, &sl, &pr, &e);
  uint64_t s = 42;
  for (int n = 0; n < NEX; n++) {
    int k = n % NCLS;
    ((int64_t *)lb->data)[n] = k;
    ((float *)pr->data)[n] = (n % every_nth_mask) == 0 ? 1.0f : 0.0f;
    int y0 = 4 + 8 * k, x0 = 20 - 6 * k;
    for (int y = 0; y < IMG; y++)
      for (int x = 0; x < IMG; x++) {
        bool in = y >= y0 && y < y0 + 8 && x >= x0 && x < x0 + 8;
        ((float *)mk->data)[(n * IMG + y) * IMG + x] = in ? 1.0f : 0.0f;
        for (int c = 0; c < 3; c++) {
          s = s * 6364136223846793005ull + 1442695040888963407ull;
          float noise = (float)((s >> 40) & 0xffff) / 65536.0f - 0.5f;
          ((float *)im->data)[((n * 3 + c) * IMG + y) * IMG + x] = noise * 0.5f + (in ? 1.5f : 0.0f);
        }
      }
  }
  char p[256];
  mkdir(dir, 0777);
  snprintf(p, sizeof p, "%s/images.npy", dir);
  CHECK_OK(kiln_tensor_save_npy(im, p, &e), &e);
  snprintf(p, sizeof p, "%s/labels.npy", dir);
  CHECK_OK(kiln_tensor_save_npy(lb, p, &e), &e);
  if (with_masks) {
    snprintf(p, sizeof p, "%s/masks.npy", dir);
    CHECK_OK(kiln_tensor_save_npy(mk, p, &e), &e);
    snprintf(p, sizeof p, "%s/mask_present.npy", dir);
    CHECK_OK(kiln_tensor_save_npy(pr, p, &e), &e);
  }
  kiln_tensor_free(im);
  kiln_tensor_free(lb);
  kiln_tensor_free(mk);
  kiln_tensor_free(pr);
}

static void make_model(const char *path, bool spn) {
  kiln_err e = {0};
  kiln_model_opts o;
  kiln_model_defaults(&o);
  o.backbone = KILN_RESNET18;
  o.width = 4;
  o.classes = NCLS;
  o.cnet_hidden = 16;
  o.spn = spn;
  o.image_size = IMG;
  o.batch = 4;
  o.seed = 3;
  kiln_graph *g = NULL;
  CHECK_OK(kiln_model_build(&o, &g, &e), &e);
  if (g) CHECK_OK(kiln_onnx_save(g, path, &e), &e);
  ir_graph_free(g);
}

static kiln_fit_result fit(const char *model, const char *data, const char *ckpt, int epochs, int64_t max_steps,
                           int threads) {
  kiln_err e = {0};
  kiln_trainer_opts to = {.cfg = kiln_train_config_default(), .threads = threads, .allow_fallback = true};
  to.cfg.lr = 3e-3;
  kiln_trainer *t = NULL;
  kiln_dataset *d = NULL;
  kiln_fit_result r = {0};
  CHECK_OK(kiln_dataset_open_tensors(data, &d, &e), &e);
  CHECK_OK(kiln_trainer_create(model, 0, &to, &t, &e), &e);
  if (t && d) {
    kiln_fit_opts fo = {.epochs = epochs, .max_steps = max_steps, .seed = 7, .checkpoint = ckpt};
    CHECK_OK(kiln_fit(t, d, &fo, &r, &e), &e);
  }
  kiln_trainer_free(t);
  kiln_dataset_free(d);
  return r;
}

static void test_losses_go_down(void) {
  char model[128], data[128], ckpt[128];
  snprintf(model, sizeof model, "%s/spn.onnx", tmpdir);
  snprintf(data, sizeof data, "%s/data", tmpdir);
  snprintf(ckpt, sizeof ckpt, "%s/ck.onnx", tmpdir);
  make_model(model, true);
  make_dataset(data, true, 2); /* half the images have masks */
  kiln_fit_result first = fit(model, data, ckpt, 1, 0, 2);
  kiln_fit_result later = fit(ckpt, data, ckpt, 8, 0, 2); /* resumes at epoch 1 */
  fprintf(stderr, "epoch 1: cls %.4f loc %.4f; epoch 8: cls %.4f loc %.4f acc %.2f\n", first.last_cls,
          first.last_loc, later.last_cls, later.last_loc, later.last_acc);
  CHECK(later.last_cls < first.last_cls * 0.8);
  CHECK(later.last_loc < first.last_loc * 0.9);
}

static int same_file(const char *a, const char *b) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
  return system(cmd) == 0;
}

/* Stop mid-epoch, resume, and end with the same bytes as an uninterrupted run. */
static void test_resume_is_exact(void) {
  char model[128], data[128], a[128], b[128];
  snprintf(model, sizeof model, "%s/spn.onnx", tmpdir);
  snprintf(data, sizeof data, "%s/data", tmpdir);
  snprintf(a, sizeof a, "%s/a.onnx", tmpdir);
  snprintf(b, sizeof b, "%s/b.onnx", tmpdir);
  fit(model, data, a, 2, 0, 2);
  kiln_fit_result part = fit(model, data, b, 2, 4, 2); /* 4 of 12 steps */
  CHECK(part.steps_done == 4);
  fit(b, data, b, 2, 0, 2);
  CHECK(same_file(a, b));
}

static void test_export(void) {
  char ckpt[128], out[128];
  snprintf(ckpt, sizeof ckpt, "%s/a.onnx", tmpdir);
  snprintf(out, sizeof out, "%s/exported.onnx", tmpdir);
  kiln_err e = {0};
  CHECK_OK(kiln_export_checkpoint(ckpt, out, false, &e), &e);
  kiln_graph *g = NULL;
  CHECK_OK(kiln_onnx_load(out, &g, &e), &e);
  if (g) {
    CHECK(ir_find_value(g, "optim.adam_m.conv1.weight") < 0);
    CHECK(ir_get_meta(g, "kiln.step") == NULL);
  }
  ir_graph_free(g);
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/kiln-test-train-XXXXXX");
  if (!mkdtemp(tmpdir)) return 1;
  RUN(test_losses_go_down);
  RUN(test_resume_is_exact);
  RUN(test_export);
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
  if (system(cmd)) {
  }
  TEST_MAIN_END();
}
