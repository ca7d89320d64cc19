/* test_experiment.c — the experiment runner (study/experiment.h) and its report
 * (study/report.h): configuration keys and files, the grid plan, the tables on fixed
 * results (Markdown and CSV, mean ± 95% t-interval), base64, result files, kiln_fit's
 * epoch callback, and a tiny grid end to end (2 runs, 1 epoch, 32x32 images) with the
 * reuse of its finished runs. */
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data/data.h"
#include "frontend/onnx.h"
#include "study/experiment.h"
#include "study/report.h"
#include "tests/test.h"
#include "train/loop.h"

static char tmpdir[256];

static bool exists(const char *dir, const char *name) {
  char p[1024];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  struct stat st;
  return stat(p, &st) == 0 && st.st_size > 0;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *s = malloc((size_t)n + 1);
  if (s && fread(s, 1, (size_t)n, f) != (size_t)n) n = 0;
  if (s) s[n] = 0;
  fclose(f);
  return s;
}

static void test_config_keys(void) {
  kiln_exp_config c;
  kiln_exp_config_default(&c);
  kiln_err e = {0};
  CHECK(!strcmp(c.data, "synthetic:shapes") && c.n_ratios == 2 && c.ratios[1] == 0.25 && c.epochs == 40);
  CHECK(c.batch == 32 && c.lr == 1e-3 && c.n_spn_scales == 4 && c.spn_scales[3] == 4 && c.baseline_hidden == 0);
  CHECK_OK(kiln_exp_config_set(&c, "backbones", "resnet18, resnet50", &e), &e);
  CHECK(c.n_backbones == 2 && c.backbones[1] == KILN_RESNET50);
  CHECK_OK(kiln_exp_config_set(&c, "losses", "ce,l1,L2", &e), &e);
  CHECK(c.n_losses == 3 && c.losses[0] == KILN_LOC_BCE && c.losses[2] == KILN_LOC_L2);
  CHECK_OK(kiln_exp_config_set(&c, "repeats", "3", &e), &e);
  CHECK(c.n_seeds == 3 && c.seeds[0] == 1 && c.seeds[2] == 3);
  CHECK_OK(kiln_exp_config_set(&c, "ratios", "none", &e), &e);
  CHECK(c.n_ratios == 0);
  CHECK_OK(kiln_exp_config_set(&c, "spn-scales", "auto", &e), &e);
  CHECK(c.n_spn_scales == 0);
  /* bad values name the key */
  e = (kiln_err){0};
  CHECK(kiln_exp_config_set(&c, "ratios", "0.5,1.5", &e) == KILN_ERR_INVALID && strstr(e.msg, "ratios"));
  e = (kiln_err){0};
  CHECK(kiln_exp_config_set(&c, "losses", "hinge", &e) == KILN_ERR_INVALID && strstr(e.msg, "hinge"));
  e = (kiln_err){0};
  CHECK(kiln_exp_config_set(&c, "backbones", "vgg16", &e) == KILN_ERR_INVALID && strstr(e.msg, "vgg16"));
  e = (kiln_err){0};
  CHECK(kiln_exp_config_set(&c, "epochs", "ten", &e) == KILN_ERR_INVALID && strstr(e.msg, "epochs"));
  e = (kiln_err){0};
  CHECK(kiln_exp_config_set(&c, "epochz", "1", &e) == KILN_ERR_INVALID && strstr(e.msg, "epochz"));
  e = (kiln_err){0};
  CHECK(kiln_exp_config_set(&c, "augment", "maybe", &e) == KILN_ERR_INVALID);
  /* an empty grid and an impossible model are refused by the check */
  kiln_exp_config_default(&c);
  CHECK_OK(kiln_exp_config_set(&c, "ratios", "none", &e), &e);
  CHECK_OK(kiln_exp_config_set(&c, "baseline", "no", &e), &e);
  e = (kiln_err){0};
  CHECK(kiln_exp_config_check(&c, &e) == KILN_ERR_INVALID && strstr(e.msg, "empty"));
  kiln_exp_config_default(&c);
  CHECK_OK(kiln_exp_config_set(&c, "image-size", "100", &e), &e); /* 4x4 features: 2,2,2,4 gives 128 */
  e = (kiln_err){0};
  CHECK(kiln_exp_config_check(&c, &e) == KILN_ERR_INVALID);
}

static void test_config_file(void) {
  char path[512];
  snprintf(path, sizeof path, "%s/grid.conf", tmpdir);
  FILE *f = fopen(path, "w");
  fprintf(f, "# the study's bird grid\n\ndata = /data/CUB_200_2011   # a comment\nclasses = 3,14,67\n"
             "backbones = resnet18,resnet34\nlosses = ce, l1\n--seeds = 4,5\nimage_size = 96\n"
             "spn-scales = 2,2,2,4\n");
  fclose(f);
  kiln_exp_config c;
  kiln_exp_config_default(&c);
  kiln_err e = {0};
  CHECK_OK(kiln_exp_config_load(&c, path, &e), &e);
  CHECK(!strcmp(c.data, "/data/CUB_200_2011") && !strcmp(c.classes, "3,14,67"));
  CHECK(c.n_backbones == 2 && c.n_losses == 2 && c.n_seeds == 2 && c.seeds[1] == 5 && c.image_size == 96);
  /* written back and read again: the same configuration */
  char path2[512];
  snprintf(path2, sizeof path2, "%s/grid2.conf", tmpdir);
  f = fopen(path2, "w");
  kiln_exp_config_write(&c, f);
  fclose(f);
  kiln_exp_config d;
  kiln_exp_config_default(&d);
  CHECK_OK(kiln_exp_config_load(&d, path2, &e), &e);
  CHECK(!memcmp(&c, &d, sizeof c));
  /* errors name the file and line */
  f = fopen(path, "w");
  fprintf(f, "epochs = 3\nratios 0.5\n");
  fclose(f);
  e = (kiln_err){0};
  CHECK(kiln_exp_config_load(&c, path, &e) == KILN_ERR_INVALID && strstr(e.msg, "grid.conf:2"));
  f = fopen(path, "w");
  fprintf(f, "epochs = 3\n\nbatch = -4\n");
  fclose(f);
  e = (kiln_err){0};
  CHECK(kiln_exp_config_load(&c, path, &e) == KILN_ERR_INVALID && strstr(e.msg, "grid.conf:3") &&
        strstr(e.msg, "batch"));
  e = (kiln_err){0};
  CHECK(kiln_exp_config_load(&c, "/nonexistent/x.conf", &e) == KILN_ERR_IO && strstr(e.msg, "x.conf"));
}

static void test_plan(void) {
  kiln_exp_config c;
  kiln_exp_config_default(&c);
  kiln_err e = {0};
  CHECK_OK(kiln_exp_config_set(&c, "backbones", "resnet18,resnet34", &e), &e);
  CHECK_OK(kiln_exp_config_set(&c, "losses", "ce,l1,l2", &e), &e);
  CHECK_OK(kiln_exp_config_set(&c, "seeds", "1,2", &e), &e);
  kiln_exp_run *r = NULL;
  int n = 0;
  CHECK_OK(kiln_exp_plan(&c, &r, &n, &e), &e);
  CHECK(n == 2 * 2 * (1 + 2 * 3));
  CHECK(!strcmp(r[0].id, "resnet18-baseline-s1") && !r[0].spn && r[0].loss == KILN_LOC_NONE);
  CHECK(!strcmp(r[1].id, "resnet18-spn-r1.00-bce-s1") && r[1].spn && r[1].ratio == 1.0);
  CHECK(!strcmp(r[6].id, "resnet18-spn-r0.25-l2-s1") && r[6].loss == KILN_LOC_L2);
  CHECK(!strcmp(r[7].id, "resnet18-baseline-s2") && r[7].seed == 2);
  CHECK(!strcmp(r[n - 1].id, "resnet34-spn-r0.25-l2-s2") && r[n - 1].backbone == KILN_RESNET34);
  kiln_free(r);
}

static void test_grid_examples(void) {
  const int64_t labels[] = {0, 0, 1, 1, 2, 0, 2, 1};
  const bool mask[] = {true, true, false, true, true, true, true, true};
  int64_t out[8];
  int n = kiln_exp_grid_examples(labels, mask, 8, 3, 5, out);
  /* round robin over classes, masked examples only: 0,3,4 then 1,7 */
  CHECK(n == 5 && out[0] == 0 && out[1] == 3 && out[2] == 4 && out[3] == 1 && out[4] == 7);
  n = kiln_exp_grid_examples(labels, mask, 8, 3, 8, out);
  CHECK(n == 7 && out[5] == 6 && out[6] == 5);
}

static void test_t_interval(void) {
  /* three runs at 90, 92, 94 %: mean 92, sd 2, t(0.975, 2) = 4.302653 -> ±4.97 */
  const double x[] = {0.90, 0.92, 0.94};
  kiln_mean_ci ci = kiln_mean_ci95(x, 3);
  CHECK_CLOSE(ci.mean, 0.92, 0, 1e-12);
  CHECK_CLOSE(ci.sd, 0.02, 0, 1e-12);
  CHECK_CLOSE(ci.half, 4.302652729911275 * 0.02 / sqrt(3.0), 1e-9, 0);
  kiln_table_cell cell = {.ci = ci};
  char buf[64];
  kiln_table_cell_str(&cell, buf, sizeof buf);
  CHECK_MSG(!strcmp(buf, "92.0±5.0"), "got '%s'", buf);
  cell.ci = kiln_mean_ci95(x, 1);
  kiln_table_cell_str(&cell, buf, sizeof buf);
  CHECK_MSG(!strcmp(buf, "90.0"), "got '%s'", buf);
  cell.ci = (kiln_mean_ci){.n = 1, .mean = NAN};
  kiln_table_cell_str(&cell, buf, sizeof buf);
  CHECK(!strcmp(buf, "–"));
}

/* A fake finished run. */
static kiln_exp_result fake(kiln_backbone b, bool spn, double ratio, kiln_loc_loss loss, uint64_t seed, double p,
                            double s, double sp, double f1) {
  kiln_exp_result r;
  memset(&r, 0, sizeof r);
  r.run = (kiln_exp_run){.backbone = b, .spn = spn, .ratio = spn ? ratio : 0, .loss = spn ? loss : KILN_LOC_NONE,
                         .seed = seed};
  snprintf(r.run.id, sizeof r.run.id, "%s-%s-%g-%d-s%llu", kiln_backbone_name(b), spn ? "spn" : "base", ratio,
           (int)loss, (unsigned long long)seed);
  r.precision = p;
  r.sensitivity = s;
  r.specificity = sp;
  r.f1 = f1;
  r.accuracy = s;
  r.cam_energy = 0.5;
  r.cam_pointing = spn ? 1.0 : 0.5;
  r.spn_iou = spn ? 0.6 : NAN;
  r.spn_dice = spn ? 0.75 : NAN;
  r.grad_energy = r.spnmap_energy = NAN;
  return r;
}

static char *table_text(const kiln_table *t, bool csv) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (csv) kiln_table_csv(t, f);
  else kiln_table_markdown(t, f);
  fclose(f);
  return buf;
}

static void test_tables(void) {
  kiln_exp_result r[8];
  int n = 0;
  r[n++] = fake(KILN_RESNET18, false, 0, KILN_LOC_NONE, 1, 0.90, 0.91, 0.98, 0.90);
  r[n++] = fake(KILN_RESNET18, true, 1.0, KILN_LOC_BCE, 1, 0.95, 0.96, 0.99, 0.953);
  r[n++] = fake(KILN_RESNET18, true, 0.25, KILN_LOC_BCE, 1, 0.975, 0.986, 0.997, 0.978);
  r[n++] = fake(KILN_RESNET18, true, 1.0, KILN_LOC_L1, 1, 0.931, 0.922, 0.988, 0.912);
  r[n++] = fake(KILN_RESNET18, false, 0, KILN_LOC_NONE, 2, 0.92, 0.93, 0.99, 0.92);
  r[n++] = fake(KILN_RESNET18, false, 0, KILN_LOC_NONE, 3, 0.94, 0.95, 1.00, 0.94);
  kiln_err e = {0};
  kiln_table t;
  CHECK_OK(kiln_table_methods(r, n, &t, &e), &e);
  char *md = table_text(&t, false);
  const char *want1 =
      "| Network | Method | Loc label ratio | avg Precision (%) | avg Sensitivity (%) | avg Specificity (%) | avg "
      "F1-score (%) | runs |\n"
      "|---|---|---|---:|---:|---:|---:|---|\n"
      "| Res18 | Ours | 1 | 95.0 | 96.0 | 99.0 | 95.3 | 1 |\n"
      "| Res18 | Ours | 0.25 | 97.5 | 98.6 | 99.7 | 97.8 | 1 |\n"
      "| Res18 | Baseline | 0 | 92.0±5.0 | 93.0±5.0 | 99.0±2.5 | 92.0±5.0 | 3 |\n";
  CHECK_MSG(!strcmp(md, want1), "got\n%s", md);
  free(md);
  char *csv = table_text(&t, true);
  CHECK_MSG(strstr(csv, "Network,Method,Loc label ratio,precision_mean,precision_ci95,sensitivity_mean,") == csv,
            "got\n%s", csv);
  CHECK_MSG(strstr(csv, "\nRes18,Ours,0.25,97.5000,,98.6000,,99.7000,,97.8000,,1\n"), "got\n%s", csv);
  CHECK_MSG(strstr(csv, "\nRes18,Baseline,0,92.0000,4.9683,93.0000,4.9683,99.0000,2.4841,92.0000,4.9683,3\n"),
            "got\n%s", csv);
  free(csv);
  kiln_table_free(&t);
  CHECK_OK(kiln_table_losses(r, n, &t, &e), &e);
  md = table_text(&t, false);
  const char *want2 =
      "| Network | Loc loss | Annotate ratio | avg Precision (%) | avg Sensitivity (%) | avg Specificity (%) | avg "
      "F1-score (%) | runs |\n"
      "|---|---|---|---:|---:|---:|---:|---|\n"
      "| Res18 | CE | 1 | 95.0 | 96.0 | 99.0 | 95.3 | 1 |\n"
      "| Res18 | CE | 0.25 | 97.5 | 98.6 | 99.7 | 97.8 | 1 |\n"
      "| Res18 | L1 | 1 | 93.1 | 92.2 | 98.8 | 91.2 | 1 |\n"
      "| Res18 | Baseline | 0 | 92.0±5.0 | 93.0±5.0 | 99.0±2.5 | 92.0±5.0 | 3 |\n";
  CHECK_MSG(!strcmp(md, want2), "got\n%s", md);
  free(md);
  kiln_table_free(&t);
  /* the saliency table: the baseline has no SPN scores */
  CHECK_OK(kiln_table_saliency(r, n, &t, &e), &e);
  CHECK(t.n_rows == 4);
  char cell[64];
  kiln_table_cell_str(&t.cells[0 * t.n_cols + 9], cell, sizeof cell);
  CHECK(!strcmp(cell, "–"));
  kiln_table_cell_str(&t.cells[1 * t.n_cols + 9], cell, sizeof cell);
  CHECK(!strcmp(cell, "60.0"));
  kiln_table_cell_str(&t.cells[0 * t.n_cols + 6], cell, sizeof cell);
  CHECK(!strcmp(cell, "50.0±0.0"));
  kiln_table_free(&t);
  /* without CE in the grid, Table 1 uses the first loss */
  CHECK_OK(kiln_table_methods(r + 3, 1, &t, &e), &e);
  CHECK(t.n_rows == 1 && !strcmp(t.cells[1].text, "Ours") && !strcmp(t.cells[2].text, "1"));
  kiln_table_free(&t);
}

static void test_base64(void) {
  char out[32];
  const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
  const char *want[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
  for (int i = 0; i < 7; i++) {
    kiln_base64((const uint8_t *)in[i], strlen(in[i]), out);
    CHECK_MSG(!strcmp(out, want[i]), "base64('%s') = '%s'", in[i], out);
  }
  const uint8_t bin[] = {0xff, 0xfe, 0x00};
  kiln_base64(bin, 3, out);
  CHECK(!strcmp(out, "//4A"));
}

static void test_result_file(void) {
  kiln_exp_result r = fake(KILN_RESNET34, true, 0.25, KILN_LOC_L1, 7, 0.5, 0.25, 0.75, 1.0 / 3.0);
  snprintf(r.key, sizeof r.key, "v1 \"quoted\" \\ key");
  r.k = 2;
  r.best_epoch = 3;
  r.epochs = 4;
  double p[2] = {0.1, NAN}, f1[2] = {0.3, 0.4}, curve[2] = {1.5, 0.75};
  int64_t sup[2] = {5, 6};
  char *names[2] = {"disk", "a \"b\""};
  r.cls_precision = p;
  r.cls_sensitivity = p;
  r.cls_specificity = p;
  r.cls_f1 = f1;
  r.cls_support = sup;
  r.class_names = names;
  r.n_curve = 2;
  r.train_loss = r.val_f1 = curve;
  char path[512];
  snprintf(path, sizeof path, "%s/result.json", tmpdir);
  kiln_err e = {0};
  CHECK_OK(kiln_exp_result_save(&r, path, &e), &e);
  kiln_exp_result q;
  CHECK_OK(kiln_exp_result_load(path, &q, &e), &e);
  CHECK(!strcmp(q.run.id, r.run.id) && !strcmp(q.key, r.key) && q.run.backbone == KILN_RESNET34);
  CHECK(q.run.spn && q.run.ratio == 0.25 && q.run.loss == KILN_LOC_L1 && q.run.seed == 7);
  CHECK(q.best_epoch == 3 && q.epochs == 4 && q.k == 2 && q.f1 == 1.0 / 3.0 && isnan(q.grad_energy));
  CHECK(q.cls_precision[0] == 0.1 && isnan(q.cls_precision[1]) && q.cls_f1[1] == 0.4 && q.cls_support[1] == 6);
  CHECK(!strcmp(q.class_names[1], "a \"b\""));
  CHECK(q.n_curve == 2 && q.train_loss[1] == 0.75 && isnan(q.val_iou[0]));
  kiln_exp_result_free(&q);
  /* damaged files are errors naming the file */
  FILE *f = fopen(path, "w");
  fprintf(f, "{\"id\": \"x\", \"key\": 3");
  fclose(f);
  e = (kiln_err){0};
  CHECK(kiln_exp_result_load(path, &q, &e) != KILN_OK && strstr(e.msg, "result.json"));
}

/* kiln_fit calls on_epoch after each epoch; an error from it stops training. */
typedef struct epoch_log {
  int calls, last, fail_at;
} epoch_log;

static kiln_code count_epochs(void *ctx, kiln_trainer *t, const kiln_epoch_info *info, kiln_err *e) {
  epoch_log *l = ctx;
  l->calls++;
  l->last = info->epoch;
  if (info->epochs != 2 || info->global_step != (int64_t)info->epoch * 2 || !(info->loss > 0))
    return kiln_errf(e, KILN_ERR_INVALID, "bad epoch info");
  if (info->epoch == l->fail_at) return kiln_errf(e, KILN_ERR_INVALID, "stop at epoch %d", info->epoch);
  return KILN_OK;
}

static void test_epoch_callback(void) {
  kiln_err e = {0};
  kiln_model_opts mo;
  kiln_model_defaults(&mo);
  mo.width = 4;
  mo.classes = 2;
  mo.cnet_hidden = 0;
  mo.spn = false;
  mo.image_size = 32;
  mo.batch = 4;
  kiln_graph *g = NULL;
  char model[512];
  snprintf(model, sizeof model, "%s/cb.onnx", tmpdir);
  CHECK_OK(kiln_model_build(&mo, &g, &e), &e);
  CHECK_OK(kiln_onnx_save(g, model, &e), &e);
  ir_graph_free(g);
  kiln_data_opts o = kiln_data_opts_default();
  o.height = o.width = 32;
  o.count = 6; /* per class 4 train, 1 val, 1 test: 2 steps of 4 per epoch */
  o.synth_classes = 2;
  kiln_dataset *base = NULL, *train = NULL, *val = NULL, *test = NULL;
  CHECK_OK(kiln_data_open_splits("synthetic:shapes", &o, &base, &train, &val, &test, &e), &e);
  for (int fail_at = 0; fail_at <= 1 && train; fail_at++) {
    kiln_trainer_opts to = {.cfg = kiln_train_config_default(), .threads = 1};
    to.cfg.loc_loss = KILN_LOC_NONE;
    kiln_trainer *t = NULL;
    CHECK_OK(kiln_trainer_create(model, 4, &to, &t, &e), &e);
    if (!t) break;
    epoch_log l = {.fail_at = fail_at};
    kiln_fit_opts fo = {.epochs = 2, .seed = 1, .on_epoch = count_epochs, .on_epoch_ctx = &l};
    kiln_fit_result fr;
    e = (kiln_err){0};
    kiln_code rc = kiln_fit(t, train, &fo, &fr, &e);
    if (fail_at == 0) {
      CHECK_MSG(rc == KILN_OK, "%s", e.msg);
      CHECK(l.calls == 2 && l.last == 2 && fr.epochs_done == 2);
    } else {
      CHECK(rc == KILN_ERR_INVALID && strstr(e.msg, "stop at epoch 1") && l.calls == 1);
    }
    kiln_trainer_free(t);
  }
  kiln_dataset_free(train);
  kiln_dataset_free(val);
  kiln_dataset_free(test);
  kiln_dataset_free(base);
}

static void tiny_config(kiln_exp_config *c, const char *out) {
  kiln_err e = {0};
  kiln_exp_config_default(c);
  snprintf(c->out, sizeof c->out, "%s", out);
  const char *kv[][2] = {{"synth-classes", "2"}, {"count", "10"},    {"image-size", "32"}, {"width", "4"},
                         {"cnet-hidden", "8"},   {"epochs", "1"},    {"batch", "4"},       {"ratios", "0.5"},
                         {"threads", "2"},       {"grid-rows", "2"}, {"title", "tiny grid"}};
  for (size_t i = 0; i < sizeof kv / sizeof *kv; i++) CHECK_OK(kiln_exp_config_set(c, kv[i][0], kv[i][1], &e), &e);
}

static void test_tiny_grid(void) {
  char out[512];
  snprintf(out, sizeof out, "%s/grid", tmpdir);
  kiln_exp_config c;
  tiny_config(&c, out);
  kiln_err e = {0};
  kiln_exp_outcome o;
  CHECK_OK(kiln_experiment_run(&c, NULL, &o, &e), &e);
  CHECK(o.n == 2 && o.n_reused == 0);
  if (o.n != 2) return;
  const kiln_exp_result *b = &o.results[0], *s = &o.results[1];
  CHECK(!b->run.spn && s->run.spn && s->run.ratio == 0.5 && s->run.loss == KILN_LOC_BCE);
  CHECK(b->best_epoch == 1 && b->n_curve == 1 && b->k == 2 && b->n_test == 2);
  CHECK(b->f1 >= 0 && b->f1 <= 1 && b->accuracy >= 0 && b->accuracy <= 1);
  CHECK(isnan(b->spn_iou) && s->spn_iou >= 0 && s->spn_iou <= 1);
  CHECK(b->cam_energy >= 0 && b->cam_energy <= 1 && isfinite(s->spnmap_energy));
  CHECK(!strcmp(b->class_names[0], "disk") && !strcmp(b->class_names[1], "square"));
  const char *files[] = {"report.html", "table1.md", "table1.csv", "table2.md", "table2.csv", "saliency.md",
                         "saliency.csv", "runs.csv", "config.txt", "compare-resnet18.png",
                         "runs/resnet18-baseline-s1/result.json", "runs/resnet18-baseline-s1/epochs.csv",
                         "runs/resnet18-baseline-s1/steps.csv", "runs/resnet18-baseline-s1/saliency.png",
                         "runs/resnet18-spn-r0.50-bce-s1/maps.npy", "runs/resnet18-spn-r0.50-bce-s1/best.onnx",
                         "runs/resnet18-spn-r0.50-bce-s1/test_classes.csv"};
  for (size_t i = 0; i < sizeof files / sizeof *files; i++) CHECK_MSG(exists(out, files[i]), "%s missing", files[i]);
  CHECK(!exists(out, "runs/resnet18-baseline-s1/last.onnx") && !exists(out, "runs/resnet18-baseline-s1/init.onnx"));
  char path[1024];
  snprintf(path, sizeof path, "%s/report.html", out);
  char *html = slurp(path);
  CHECK(html && strstr(html, "<title>tiny grid</title>") && strstr(html, "<table>") &&
        strstr(html, "data:image/png;base64,iVBORw0KGgo") && strstr(html, "<svg") && strstr(html, "</html>"));
  CHECK(html && !strstr(html, "src=\"http") && !strstr(html, "nan%"));
  free(html);
  double f1 = s->f1;
  kiln_exp_outcome_free(&o);
  /* again: both runs are reused (their checkpoints are not written again), the report is
   * rewritten */
  struct stat before[2], after[2];
  const char *best[2] = {"runs/resnet18-baseline-s1/best.onnx",
                         "runs/resnet18-spn-r0.50-bce-s1/best.onnx"};
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s/%s", out, best[i]);
    CHECK(stat(path, &before[i]) == 0);
  }
  CHECK_OK(kiln_experiment_run(&c, NULL, &o, &e), &e);
  CHECK(o.n == 2 && o.n_reused == 2);
  for (int i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s/%s", out, best[i]);
    CHECK_MSG(stat(path, &after[i]) == 0 && after[i].st_ino == before[i].st_ino &&
                  after[i].st_mtim.tv_sec == before[i].st_mtim.tv_sec &&
                  after[i].st_mtim.tv_nsec == before[i].st_mtim.tv_nsec,
              "%s was written again by a reused run", best[i]);
  }
  if (o.n == 2) CHECK(o.results[1].f1 == f1 && o.results[1].n_curve == 1);
  kiln_exp_outcome_free(&o);
  /* a changed setting is not reused */
  CHECK_OK(kiln_exp_config_set(&c, "lr", "0.002", &e), &e);
  CHECK_OK(kiln_exp_config_set(&c, "baseline", "no", &e), &e);
  CHECK_OK(kiln_exp_config_set(&c, "keep-models", "no", &e), &e);
  CHECK_OK(kiln_experiment_run(&c, NULL, &o, &e), &e);
  CHECK(o.n == 1 && o.n_reused == 0);
  CHECK(!exists(out, "runs/resnet18-spn-r0.50-bce-s1/best.onnx"));
  kiln_exp_outcome_free(&o);
  /* a bad dataset is an error naming it, not a crash */
  snprintf(c.data, sizeof c.data, "%s/no-such-dataset", tmpdir);
  e = (kiln_err){0};
  CHECK(kiln_experiment_run(&c, NULL, &o, &e) != KILN_OK && strstr(e.msg, "no-such-dataset"));
  kiln_exp_outcome_free(&o);
}

int main(void) {
  snprintf(tmpdir, sizeof tmpdir, "/tmp/kiln_test_experiment_%d", (int)getpid());
  mkdir(tmpdir, 0777);
  RUN(test_config_keys);
  RUN(test_config_file);
  RUN(test_plan);
  RUN(test_grid_examples);
  RUN(test_t_interval);
  RUN(test_tables);
  RUN(test_base64);
  RUN(test_result_file);
  RUN(test_epoch_callback);
  RUN(test_tiny_grid);
  if (!tests_failed_) {
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
  }
  TEST_MAIN_END();
}
