/* cmd_train.c — `kiln train`: trains a model on a dataset with the compiled
 * forward+backward+optimizer step; checkpoints at each epoch end and on Ctrl-C. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/data.h"
#include "tools/cli.h"
#include "train/loop.h"

static volatile sig_atomic_t stop_requested = 0; /* the CLI's signal flag (not library state) */
static void on_sigint(int sig) {
  (void)sig;
  stop_requested = 1;
}

static void set_epoch(void *view, int epoch) { kiln_data_view_set_epoch(view, epoch); }

static void usage(FILE *f) {
  fprintf(f,
          "usage: kiln train MODEL.onnx --data DIR [options]\n"
          "       kiln train --resume CHECKPOINT.onnx --data DIR [options]\n\n"
          "Trains the model (outputs `logits`, and `saliency` for the localization loss) with one\n"
          "compiled program per step: forward (BatchNorm with batch statistics), the losses,\n"
          "the backward pass derived by kiln, and the optimizer update.\n\n"
          "data:\n"
          "  --data SPEC          synthetic:shapes | synthetic:ultrasound | a CUB-200-2011 folder |\n"
          "                       a BUSI folder | a .csv list | a folder of .npy tensors (see\n"
          "                       docs/data.md); training uses the training split (80%%), with\n"
          "                       augmentation; images without a mask train only the class loss\n"
          "  --classes LIST       class subset in label order (CUB ids, folder or label names)\n"
          "  --loc-ratio R        keep the masks of a seeded fraction R of training images (default 1)\n"
          "  --data-seed N        what synthetic images look like (default 1)\n"
          "  --count N            synthetic: images per class (default 60)\n"
          "  --no-augment         no random crop/flip\n"
          "  --skip-bad           skip (and count) unreadable or inconsistent files\n"
          "training:\n"
          "  --epochs N           (default 40)\n"
          "  --batch B            batch size, for a model with a symbolic batch (default: the model's)\n"
          "  --max-steps N        stop after N steps of this run\n"
          "  --loc-loss bce|l1|l2|none   localization loss on the saliency (default bce)\n"
          "  --lambda X           weight of the localization loss (default 1)\n"
          "  --optim adam|adamw|sgd      (default adam)\n"
          "  --lr X               learning rate (default 1e-3)\n"
          "  --weight-decay X     (default 0)\n"
          "  --momentum X         SGD momentum (default 0.9)\n"
          "  --seed N             data order (default 1); same seed and threads give the same weights\n"
          "output:\n"
          "  -o, --checkpoint F   checkpoint written at each epoch end and on Ctrl-C (default\n"
          "                       checkpoint.onnx); an ONNX model any tool loads; `kiln export`\n"
          "                       strips the optimizer state\n"
          "  --resume F           continue from checkpoint F (writes back to F unless -o is given)\n"
          "  --log F.csv          append per-step losses, accuracy and speed\n"
          "  --stats              print the planned training memory before starting\n"
          "  --profile[=N]        time every kernel of each step after the first and print the N\n"
          "                       slowest nodes (default 30) and the time per op type at the end\n"
          "  --threads N          (default: all cores)\n"
          "  --passes LIST        pass pipeline for the training graph (default: the training\n"
          "                       pipeline, with fusion; `kiln opt --list-passes` shows both;\n"
          "                       eliminate-identity,fold,dce trains without fusion)\n"
          "  --allow-fallback     run ops without compiled kernels on reference kernels\n");
}

static int cmp_prof(const void *a, const void *b) {
  double x = ((const kiln_trainer_prof *)a)->seconds, y = ((const kiln_trainer_prof *)b)->seconds;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* The slowest nodes of the training step, then the time per op type; times per step.  CPU
 * time (all threads) is printed beside wall time: on a machine shared with other work it is
 * the steadier of the two. */
static kiln_code print_profile(const kiln_trainer *t, int top, kiln_err *e) {
  kiln_trainer_prof *rows = NULL;
  int64_t n = 0, steps = 0;
  KILN_TRY(kiln_trainer_profile(t, &rows, &n, &steps, e));
  if (steps < 1) {
    printf("profile: no step after the first was run (use --max-steps 2 or more)\n");
    kiln_free(rows);
    return KILN_OK;
  }
  double total = 0, total_cpu = 0;
  for (int64_t i = 0; i < n; i++) total += rows[i].seconds, total_cpu += rows[i].cpu_seconds;
  qsort(rows, (size_t)n, sizeof *rows, cmp_prof);
  double ns = (double)steps;
  printf("\nprofile: %lld steps; kernels per step: %.2f ms wall, %.2f ms CPU (%lld nodes)\n",
         (long long)steps, 1e3 * total / ns, 1e3 * total_cpu / ns, (long long)n);
  printf("%-40s %-16s %-34s %9s %9s %8s %6s %4s\n", "node", "op", "shape", "ms/step", "cpu ms",
         "GFLOP/s", "share", "kern");
  for (int64_t i = 0; i < n && i < top; i++) {
    double sec = rows[i].seconds / ns;
    double gf = rows[i].macs && sec > 0 ? 2.0 * (double)rows[i].macs / sec / 1e9 : 0.0;
    printf("%-40.40s %-16.16s %-34.34s %9.3f %9.3f %8.1f %5.1f%% %3d%s\n", rows[i].label,
           rows[i].op, rows[i].shape, 1e3 * sec, 1e3 * rows[i].cpu_seconds / ns, gf,
           total > 0 ? 100.0 * rows[i].seconds / total : 0.0, rows[i].kernels,
           rows[i].fallback ? " ref" : "");
  }
  if (n > top) printf("(%lld more)\n", (long long)(n - top));
  /* per op type */
  typedef struct {
    const char *op;
    double sec, cpu;
    int64_t macs;
    int nodes;
  } op_sum;
  op_sum *ops = calloc(n > 0 ? (size_t)n : 1, sizeof *ops);
  int n_ops = 0;
  for (int64_t i = 0; ops && i < n; i++) {
    int k = 0;
    while (k < n_ops && strcmp(ops[k].op, rows[i].op)) k++;
    if (k == n_ops) ops[n_ops++].op = rows[i].op;
    ops[k].sec += rows[i].seconds;
    ops[k].cpu += rows[i].cpu_seconds;
    ops[k].macs += rows[i].macs;
    ops[k].nodes++;
  }
  for (int a = 1; ops && a < n_ops; a++) /* few op types: insertion sort by time */
    for (int b = a; b > 0 && ops[b].sec > ops[b - 1].sec; b--) {
      op_sum tmp = ops[b];
      ops[b] = ops[b - 1];
      ops[b - 1] = tmp;
    }
  printf("\n%-24s %6s %9s %9s %8s %6s\n", "op", "nodes", "ms/step", "cpu ms", "GFLOP/s", "share");
  for (int k = 0; ops && k < n_ops; k++) {
    double sec = ops[k].sec / ns;
    double gf = ops[k].macs && sec > 0 ? 2.0 * (double)ops[k].macs / sec / 1e9 : 0.0;
    printf("%-24s %6d %9.3f %9.3f %8.1f %5.1f%%\n", ops[k].op, ops[k].nodes, 1e3 * sec,
           1e3 * ops[k].cpu / ns, gf, total > 0 ? 100.0 * ops[k].sec / total : 0.0);
  }
  free(ops);
  kiln_free(rows);
  return KILN_OK;
}

int cmd_train(int argc, char **argv) {
  const char *model = NULL, *data = NULL, *ckpt = NULL, *resume = NULL, *logf = NULL, *val;
  kiln_trainer_opts to = {.cfg = kiln_train_config_default()};
  kiln_fit_opts fo = {.epochs = 40, .seed = 1, .loader_threads = 1};
  int64_t batch = 0;
  bool bad = false, stats = false;
  int profile_top = 0;
  kiln_data_opts dopts = kiln_data_opts_default();
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      usage(stdout);
      return 0;
    } else if (cli_opt(argc, argv, &i, "--data", &val, &bad)) {
      data = val;
    } else if (cli_opt(argc, argv, &i, "--classes", &val, &bad)) {
      dopts.classes = val;
    } else if (cli_opt(argc, argv, &i, "--loc-ratio", &val, &bad)) {
      dopts.loc_ratio = cli_real("--loc-ratio", val, 0, 1, &bad);
    } else if (cli_opt(argc, argv, &i, "--data-seed", &val, &bad)) {
      dopts.data_seed = cli_u64("--data-seed", val, &bad);
    } else if (cli_opt(argc, argv, &i, "--count", &val, &bad)) {
      dopts.count = cli_int("--count", val, 0, 1000000000000, &bad);
    } else if (!strcmp(argv[i], "--no-augment")) {
      dopts.augment = false;
    } else if (!strcmp(argv[i], "--skip-bad")) {
      dopts.skip_bad = true;
    } else if (cli_opt(argc, argv, &i, "--epochs", &val, &bad)) {
      fo.epochs = (int)cli_int("--epochs", val, 0, 1000000000, &bad);
    } else if (cli_opt(argc, argv, &i, "--batch", &val, &bad)) {
      batch = cli_int("--batch", val, 1, 1000000000, &bad);
    } else if (cli_opt(argc, argv, &i, "--max-steps", &val, &bad)) {
      fo.max_steps = cli_int("--max-steps", val, 0, 1000000000000, &bad);
    } else if (cli_opt(argc, argv, &i, "--loc-loss", &val, &bad)) {
      if (!strcmp(val, "bce") || !strcmp(val, "ce")) to.cfg.loc_loss = KILN_LOC_BCE;
      else if (!strcmp(val, "l1")) to.cfg.loc_loss = KILN_LOC_L1;
      else if (!strcmp(val, "l2")) to.cfg.loc_loss = KILN_LOC_L2;
      else if (!strcmp(val, "none")) to.cfg.loc_loss = KILN_LOC_NONE;
      else return cli_usage_error("train", "--loc-loss must be bce, l1, l2 or none");
    } else if (cli_opt(argc, argv, &i, "--lambda", &val, &bad)) {
      to.cfg.lambda = cli_real("--lambda", val, 0, 1e6, &bad);
    } else if (cli_opt(argc, argv, &i, "--optim", &val, &bad)) {
      if (!strcmp(val, "adam")) to.cfg.optim = KILN_OPTIM_ADAM;
      else if (!strcmp(val, "adamw")) to.cfg.optim = KILN_OPTIM_ADAMW;
      else if (!strcmp(val, "sgd")) to.cfg.optim = KILN_OPTIM_SGD;
      else return cli_usage_error("train", "--optim must be adam, adamw or sgd");
    } else if (cli_opt(argc, argv, &i, "--lr", &val, &bad)) {
      to.cfg.lr = cli_real("--lr", val, 0, 1e6, &bad);
    } else if (cli_opt(argc, argv, &i, "--weight-decay", &val, &bad)) {
      to.cfg.weight_decay = cli_real("--weight-decay", val, 0, 1e6, &bad);
    } else if (cli_opt(argc, argv, &i, "--momentum", &val, &bad)) {
      to.cfg.momentum = cli_real("--momentum", val, 0, 1, &bad);
    } else if (cli_opt(argc, argv, &i, "--seed", &val, &bad)) {
      fo.seed = cli_u64("--seed", val, &bad);
    } else if (cli_opt(argc, argv, &i, "-o", &val, &bad) || cli_opt(argc, argv, &i, "--checkpoint", &val, &bad)) {
      ckpt = val;
    } else if (cli_opt(argc, argv, &i, "--resume", &val, &bad)) {
      resume = val;
    } else if (cli_opt(argc, argv, &i, "--log", &val, &bad)) {
      logf = val;
    } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad)) {
      to.threads = (int)cli_int("--threads", val, 0, 4096, &bad);
    } else if (cli_opt(argc, argv, &i, "--passes", &val, &bad)) {
      to.passes = val;
    } else if (!strcmp(argv[i], "--stats")) {
      stats = true;
    } else if (!strcmp(argv[i], "--profile")) {
      profile_top = 30;
    } else if (!strncmp(argv[i], "--profile=", 10)) {
      profile_top = (int)cli_int("--profile", argv[i] + 10, 1, 1000000, &bad);
    } else if (!strcmp(argv[i], "--allow-fallback")) {
      to.allow_fallback = true;
    } else if (argv[i][0] == '-') {
      return cli_usage_error("train", "unknown option '%s'", argv[i]);
    } else if (!model) {
      model = argv[i];
    } else {
      return cli_usage_error("train", "more than one model given");
    }
    if (bad) return 2;
  }
  if (resume && model) return cli_usage_error("train", "give either a model or --resume, not both");
  if (!resume && !model) return cli_usage_error("train", "no model given");
  if (!data) return cli_usage_error("train", "--data is required");
  if (fo.epochs < 1) return cli_usage_error("train", "--epochs must be at least 1");
  if (!ckpt) ckpt = resume ? resume : "checkpoint.onnx";
  to.profile = profile_top > 0;
  kiln_err e = {0};
  kiln_dataset *base = NULL, *ds = NULL, *val_ds = NULL, *test_ds = NULL;
  kiln_trainer *t = NULL;
  int rc = 1;
  if (kiln_trainer_create(resume ? resume : model, batch, &to, &t, &e)) goto out;
  /* examples at the model's input size; the split and loc-ratio drawn from --seed */
  dopts.height = kiln_trainer_image_shape(t)->d[2];
  dopts.width = kiln_trainer_image_shape(t)->d[3];
  dopts.seed = fo.seed;
  if (kiln_data_open_splits(data, &dopts, &base, &ds, &val_ds, &test_ds, &e)) goto out;
  {
    char summary[2048];
    kiln_data_summary(base, summary, sizeof summary);
    fprintf(stderr, "%s", summary);
  }
  fo.on_epoch_start = set_epoch;
  fo.epoch_ctx = ds;
  if (stats || isatty(2)) {
    int64_t arena, state;
    kiln_trainer_memory(t, &arena, &state);
    fprintf(stderr, "training %s: batch %lld, %lld classes; planned memory %.1f MiB arena + %.1f MiB state\n",
            resume ? resume : model, (long long)kiln_trainer_batch(t), (long long)kiln_trainer_num_classes(t),
            (double)arena / 1048576.0, (double)state / 1048576.0);
  }
  if (resume)
    fprintf(stderr, "resuming from %s at step %lld (epoch %s, step %s of it)\n", resume,
            (long long)kiln_trainer_steps_done(t), kiln_trainer_meta(t, "kiln.epoch") ? kiln_trainer_meta(t, "kiln.epoch") : "0",
            kiln_trainer_meta(t, "kiln.epoch_step") ? kiln_trainer_meta(t, "kiln.epoch_step") : "0");
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  fo.checkpoint = ckpt;
  fo.log_csv = logf;
  fo.stop = &stop_requested;
  fo.progress = stderr;
  fo.tty = isatty(2);
  kiln_fit_result fr;
  if (kiln_fit(t, ds, &fo, &fr, &e)) goto out;
  if (fr.stopped)
    fprintf(stderr, "stopped after %lld steps; checkpoint written to %s (continue with --resume %s)\n",
            (long long)fr.steps_done, ckpt, ckpt);
  else
    printf("trained %d epochs (%lld steps, %.1f images/s); last epoch: loss %.4f (cls %.4f, loc %.4f), "
           "accuracy %.3f; checkpoint %s\n",
           fr.epochs_done, (long long)fr.steps_done, fr.images_per_second, fr.last_loss, fr.last_cls, fr.last_loc,
           fr.last_acc, ckpt);
  if (profile_top > 0 && print_profile(t, profile_top, &e)) goto out;
  rc = fr.stopped ? 130 : 0;
out:
  if (rc == 1) cli_fail(&e);
  kiln_trainer_free(t);
  kiln_dataset_free(ds);
  kiln_dataset_free(val_ds);
  kiln_dataset_free(test_ds);
  kiln_dataset_free(base);
  return rc;
}
