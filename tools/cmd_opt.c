/* cmd_opt.c — `kiln opt`: runs a pass pipeline over a model and writes the optimized
 * graph as .onnx (fused ops in the "kiln" domain), with per-pass statistics and an
 * optional check that the result computes what the input did.  With --train, the graph
 * optimized is the model's training step (forward, losses, backward, optimizer), built as
 * `kiln train` builds it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/jit.h"
#include "frontend/onnx.h"
#include "passes/pass.h"
#include "runtime/ref.h"
#include "tools/cli.h"
#include "train/train_graph.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: kiln opt MODEL.onnx [-o OUT.onnx] [options]\n\n"
          "Optimizes a model with kiln's graph passes and writes it as .onnx.  Fused ops\n"
          "belong to the \"kiln\" domain: the file loads back into kiln (docs/passes.md).\n"
          "  -o, --output FILE      where to write the optimized model (nothing is written\n"
          "                         without it)\n"
          "  --passes LIST          comma-separated pipeline, e.g. fold,dce,fold-bn (default:\n"
          "                         the mode's default pipeline)\n"
          "  --layout L             the layout-blocked pass: auto (default: channels blocked\n"
          "                         by 16 on AVX-512 hosts, plain with AVX2), plain, blocked\n"
          "  --mode MODE            inference (default) | training: training keeps\n"
          "                         BatchNormalization and Dropout and does not fold parameters\n"
          "  --stats                print each pass's changes, time and what it did\n"
          "  --print-after NAME     print the IR after pass NAME (or 'all') to stdout\n"
          "  --print-before         print the IR before the first pass\n"
          "  --check                run the input model and the optimized one (reloaded from\n"
          "                         OUT when -o is given) on the same seeded random inputs\n"
          "                         with the reference kernels and compare (tolerance 1e-4)\n"
          "  --bind NAME=SIZE       give a symbolic input dimension a size; the optimized\n"
          "                         model is specialized to it (its inputs have fixed dims)\n"
          "  --verify               run the verifier after every pass (always in debug builds)\n"
          "  --print                print the IR of the result to stdout\n"
          "  --list-passes          list the passes and the default pipelines\n"
          "  -q, --quiet            print nothing but errors and requested output\n\n"
          "training step (--train): the graph is the model's whole training step as `kiln\n"
          "train` compiles it: forward with BatchNorm on batch statistics, the losses, the\n"
          "backward pass, the optimizer update; the training pipeline runs over it (default:\n"
          "the training pipeline, with the fusions valid after autodiff).  OUT holds it with\n"
          "the parameters, running statistics and optimizer moments as initializers that are\n"
          "also graph inputs, and their updated values as extra outputs (NAME.new ...); the\n"
          "learning rate is not part of the graph (the fed input optim.hyper carries it)\n"
          "  --train                build and optimize the training step (implies --mode training)\n"
          "  --batch B              batch size for a model with a symbolic batch (default 1)\n"
          "  --loc-loss bce|l1|l2|none   localization loss on the saliency (default bce)\n"
          "  --lambda X             weight of the localization loss (default 1)\n"
          "  --optim adam|adamw|sgd (default adam)\n"
          "  --weight-decay X       (default 0)\n"
          "  --momentum X           SGD momentum (default 0.9)\n");
}

static void list_passes(void) {
  int n;
  const kiln_pass_info *p = kiln_pass_list(&n);
  printf("passes:\n");
  for (int i = 0; i < n; i++) printf("  %-22s %s\n", p[i].name, p[i].summary);
  printf("\ndefault pipelines (passes not built into this kiln are skipped):\n");
  printf("  inference: %s\n", kiln_default_pipeline(KILN_MODE_INFERENCE));
  printf("  training:  %s\n", kiln_default_pipeline(KILN_MODE_TRAINING));
}

static int64_t live_nodes(const kiln_graph *g) {
  int64_t k = 0;
  for (int64_t i = 0; i < g->n_nodes; i++) k += !g->nodes[i].dead;
  return k;
}

static int64_t const_elems(const kiln_graph *g) {
  int64_t k = 0;
  for (int64_t v = 0; v < g->n_values; v++)
    if (g->values[v].data && g->values[v].producer < 0) k += g->values[v].data->numel;
  return k;
}

static uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Seeded inputs: floats uniform in [-1,1), ints small and non-negative, bools random. */
static kiln_code random_inputs(const kiln_graph *g, kiln_tensor **in, kiln_err *e) {
  uint64_t seed = 1;
  for (int i = 0; i < g->n_inputs; i++) {
    const kiln_value *v = &g->values[g->inputs[i]];
    KILN_TRY(kiln_tensor_new(v->dtype, &v->shape, &in[i], e));
    for (int64_t k = 0; k < in[i]->numel; k++) {
      double u = (double)(rng_next(&seed) >> 11) / 9007199254740992.0;
      kiln_tensor_set_f(in[i], k,
                        v->dtype == KILN_F32    ? 2 * u - 1
                        : v->dtype == KILN_BOOL ? (double)(u < 0.5)
                                                : (double)(int)(u * 4));
    }
  }
  return KILN_OK;
}

/* Runs `a` and `b` on the same inputs (matched by name) and reports the largest
 * difference per output.  Returns 0 when every output agrees within 1e-4. */
static int check_same(const kiln_graph *a, const kiln_graph *b, bool quiet) {
  kiln_err e = {0};
  kiln_tensor *in_a[64] = {0}, *in_b[64] = {0}, *out_a[64] = {0}, *out_b[64] = {0};
  int rc = 1;
  if (a->n_inputs > 64 || a->n_outputs > 64 || b->n_inputs != a->n_inputs ||
      b->n_outputs != a->n_outputs) {
    fprintf(stderr, "kiln opt: check: the optimized model has %d inputs and %d outputs; the input "
                    "model %d and %d\n",
            b->n_inputs, b->n_outputs, a->n_inputs, a->n_outputs);
    return 1;
  }
  if (random_inputs(a, in_a, &e)) goto fail;
  for (int i = 0; i < b->n_inputs; i++) {
    const char *name = b->values[b->inputs[i]].name;
    for (int j = 0; j < a->n_inputs; j++)
      if (!strcmp(a->values[a->inputs[j]].name, name)) in_b[i] = in_a[j];
    if (!in_b[i]) {
      fprintf(stderr, "kiln opt: check: input '%s' of the optimized model is not an input of the "
                      "original\n", name);
      goto done;
    }
  }
  kiln_ref_ctx ca = {.g = a}, cb = {.g = b};
  if (kiln_ref_run(a, &ca, in_a, out_a, &e)) {
    fprintf(stderr, "kiln opt: check: the input model does not run on random inputs: %s\n", e.msg);
    goto done;
  }
  if (kiln_ref_run(b, &cb, in_b, out_b, &e)) goto fail;
  rc = 0;
  for (int i = 0; i < a->n_outputs; i++) {
    const char *name = a->values[a->outputs[i]].name;
    const kiln_tensor *x = out_a[i], *y = NULL;
    for (int j = 0; j < b->n_outputs; j++)
      if (!strcmp(b->values[b->outputs[j]].name, name)) y = out_b[j];
    if (!y || y->dtype != x->dtype || !kiln_shape_eq(&x->shape, &y->shape)) {
      fprintf(stderr, "kiln opt: check: output '%s' is missing or has another type after "
                      "optimization\n", name);
      rc = 1;
      continue;
    }
    double worst = 0, scale = 0;
    for (int64_t k = 0; k < x->numel; k++) {
      double u = kiln_tensor_get_f(x, k), w = kiln_tensor_get_f(y, k);
      if (isnan(u) && isnan(w)) continue;
      double d = fabs(u - w);
      if (!(d <= worst)) worst = d; /* a NaN on one side only counts as the worst */
      scale = fmax(scale, fabs(kiln_tensor_get_f(x, k)));
    }
    bool ok = worst <= 1e-4 * fmax(1.0, scale);
    if (!ok) rc = 1;
    if (!quiet || !ok)
      printf("check %s: max |difference| %.3g (largest |value| %.3g) %s\n", name, worst, scale,
             ok ? "ok" : "MISMATCH");
  }
  goto done;
fail:
  fprintf(stderr, "kiln opt: check: the optimized model fails: %s\n", e.msg);
  rc = 1;
done:
  for (int i = 0; i < 64; i++) {
    kiln_tensor_free(in_a[i]);
    kiln_tensor_free(out_a[i]);
    kiln_tensor_free(out_b[i]);
  }
  return rc;
}

static void print_stats(const kiln_pipeline_result *res, int64_t nodes_before,
                        int64_t consts_before, const kiln_graph *g) {
  double total = 0;
  printf("%-22s %8s %10s  %s\n", "pass", "changes", "time (ms)", "detail");
  for (int i = 0; i < res->n; i++) {
    printf("%-22s %8lld %10.3f  %s\n", res->pass[i]->name, (long long)res->stats[i].changes,
           1e3 * res->stats[i].seconds, res->stats[i].detail);
    total += res->stats[i].seconds;
  }
  printf("%-22s %8s %10.3f\n", "total", "", 1e3 * total);
  printf("nodes: %lld -> %lld; constant elements: %lld -> %lld\n", (long long)nodes_before,
         (long long)live_nodes(g), (long long)consts_before, (long long)const_elems(g));
}

/* The training step as a file: the state (parameters, running statistics, moments) becomes
 * initializers also listed as graph inputs — the file runs as it is, and a caller may feed
 * other weights — and the state updates become graph outputs. */
static kiln_code train_graph_for_file(kiln_train_graph *tg, kiln_err *e) {
  kiln_graph *g = tg->g;
  for (int i = 0; i < tg->n_state; i++)
    if (!g->values[tg->state[i].out].is_output) KILN_TRY(ir_add_output(g, tg->state[i].out, e));
  for (int i = 0; i < tg->n_state; i++) {
    kiln_value *v = &g->values[tg->state[i].in];
    if (!tg->state[i].init) continue;
    v->data = tg->state[i].init;
    tg->state[i].init = NULL;
    v->is_input = false;
    v->is_initializer = true;
    v->listed_as_input = true;
  }
  int k = 0;
  for (int i = 0; i < g->n_inputs; i++)
    if (g->values[g->inputs[i]].is_input) g->inputs[k++] = g->inputs[i];
  g->n_inputs = k;
  return KILN_OK;
}

typedef struct train_opts {
  kiln_train_config cfg;
  int64_t batch;
} train_opts;

/* Parses the training-graph options; returns whether argv[*i] was one (*bad on an error). */
static bool train_opt(int argc, char **argv, int *i, train_opts *t, bool *bad) {
  const char *val;
  if (cli_opt(argc, argv, i, "--batch", &val, bad)) {
    t->batch = cli_int("--batch", val, 1, 1000000000, bad);
    if (!*bad && t->batch < 1) *bad = cli_usage_error("opt", "--batch must be at least 1") != 0;
  } else if (cli_opt(argc, argv, i, "--loc-loss", &val, bad)) {
    if (*bad) return true;
    if (!strcmp(val, "bce") || !strcmp(val, "ce")) t->cfg.loc_loss = KILN_LOC_BCE;
    else if (!strcmp(val, "l1")) t->cfg.loc_loss = KILN_LOC_L1;
    else if (!strcmp(val, "l2")) t->cfg.loc_loss = KILN_LOC_L2;
    else if (!strcmp(val, "none")) t->cfg.loc_loss = KILN_LOC_NONE;
    else *bad = cli_usage_error("opt", "--loc-loss must be bce, l1, l2 or none") != 0;
  } else if (cli_opt(argc, argv, i, "--lambda", &val, bad)) {
    t->cfg.lambda = cli_real("--lambda", val, 0, 1e6, bad);
  } else if (cli_opt(argc, argv, i, "--optim", &val, bad)) {
    if (*bad) return true;
    if (!strcmp(val, "adam")) t->cfg.optim = KILN_OPTIM_ADAM;
    else if (!strcmp(val, "adamw")) t->cfg.optim = KILN_OPTIM_ADAMW;
    else if (!strcmp(val, "sgd")) t->cfg.optim = KILN_OPTIM_SGD;
    else *bad = cli_usage_error("opt", "--optim must be adam, adamw or sgd") != 0;
  } else if (cli_opt(argc, argv, i, "--weight-decay", &val, bad)) {
    t->cfg.weight_decay = cli_real("--weight-decay", val, 0, 1e6, bad);
  } else if (cli_opt(argc, argv, i, "--momentum", &val, bad)) {
    t->cfg.momentum = cli_real("--momentum", val, 0, 1, bad);
  } else {
    return false;
  }
  return true;
}

/* Loads the model for --train: its image's symbolic batch bound to --batch (default 1), as
 * `kiln train` does, unless a --bind names it. */
static kiln_code load_train_model(const char *path, const char *const *binds, int n_binds,
                                  int64_t batch, kiln_graph **out, kiln_err *e) {
  kiln_graph *raw = NULL;
  KILN_TRY(kiln_onnx_load(path, &raw, e));
  char bind[300] = "";
  if (raw->n_inputs >= 1) {
    const kiln_value *in = &raw->values[raw->inputs[0]];
    if (in->shape.rank >= 1 && in->sym[0] && in->shape.d[0] < 0 && strlen(in->sym[0]) < 256) {
      snprintf(bind, sizeof bind, "%s=%lld", in->sym[0], (long long)(batch > 0 ? batch : 1));
      for (int i = 0; i < n_binds; i++)
        if (!strncmp(binds[i], in->sym[0], strlen(in->sym[0])) &&
            binds[i][strlen(in->sym[0])] == '=')
          bind[0] = 0; /* the user's --bind wins */
    } else if (batch > 0 && in->shape.rank >= 1 && in->shape.d[0] != batch) {
      kiln_errf(e, KILN_ERR_SHAPE, "%s has a fixed batch of %lld; --batch %lld asks for another",
                path, (long long)in->shape.d[0], (long long)batch);
      ir_graph_free(raw);
      return e->code;
    }
  }
  ir_graph_free(raw);
  const char *all[33];
  int n = 0;
  for (int i = 0; i < n_binds && n < 32; i++) all[n++] = binds[i];
  if (bind[0]) all[n++] = bind;
  return cli_load_model(path, all, n, out, e);
}

int cmd_opt(int argc, char **argv) {
  const char *model = NULL, *out = NULL, *passes = NULL, *mode_s = "inference", *print_after = NULL;
  kiln_layout_choice layout = KILN_LAYOUT_AUTO;
  const char *binds[32], *val;
  int n_binds = 0;
  bool bad = false, stats = false, check = false, verify = false, quiet = false, list = false;
  bool print_before = false, train = false, print = false, mode_given = false, topt_given = false;
  train_opts topt = {.cfg = kiln_train_config_default()};
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      usage(stdout);
      return 0;
    } else if (train_opt(argc, argv, &i, &topt, &bad)) {
      if (bad) return 2;
      topt_given = true;
      continue;
    } else if (!strcmp(argv[i], "--train")) {
      train = true;
    } else if (!strcmp(argv[i], "--print")) {
      print = true;
    } else if (cli_opt(argc, argv, &i, "-o", &val, &bad) ||
               cli_opt(argc, argv, &i, "--output", &val, &bad)) {
      out = val;
    } else if (cli_opt(argc, argv, &i, "--passes", &val, &bad)) {
      passes = val;
    } else if (cli_opt(argc, argv, &i, "--layout", &val, &bad)) {
      layout = cli_layout(val, &bad);
    } else if (cli_opt(argc, argv, &i, "--mode", &val, &bad)) {
      mode_s = val;
      mode_given = true;
    } else if (cli_opt(argc, argv, &i, "--print-after", &val, &bad)) {
      print_after = val;
    } else if (cli_opt(argc, argv, &i, "--bind", &val, &bad)) {
      if (n_binds == 32) return cli_usage_error("opt", "at most 32 --bind options");
      binds[n_binds++] = val;
    } else if (!strcmp(argv[i], "--stats")) {
      stats = true;
    } else if (!strcmp(argv[i], "--check")) {
      check = true;
    } else if (!strcmp(argv[i], "--verify")) {
      verify = true;
    } else if (!strcmp(argv[i], "--print-before")) {
      print_before = true;
    } else if (!strcmp(argv[i], "--list-passes")) {
      list = true;
    } else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
      quiet = true;
    } else if (argv[i][0] == '-' && argv[i][1]) {
      return cli_usage_error("opt", "unknown option '%s'", argv[i]);
    } else if (!model) {
      model = argv[i];
    } else {
      return cli_usage_error("opt", "more than one model given");
    }
    if (bad) return 2;
  }
  if (list) {
    list_passes();
    return 0;
  }
  if (!model) return cli_usage_error("opt", "no model given");
  kiln_pass_mode mode;
  if (!strcmp(mode_s, "inference"))
    mode = KILN_MODE_INFERENCE;
  else if (!strcmp(mode_s, "training"))
    mode = KILN_MODE_TRAINING;
  else
    return cli_usage_error("opt", "--mode must be inference or training, not '%s'", mode_s);
  if (print_after && strcmp(print_after, "all") && !kiln_pass_find(print_after))
    return cli_usage_error("opt", "--print-after: no pass named '%s' (see --list-passes)",
                           print_after);
  if (train && mode_given && mode != KILN_MODE_TRAINING)
    return cli_usage_error("opt", "--train optimizes a training graph: --mode must be training");
  if (topt_given && !train)
    return cli_usage_error("opt", "--batch, --loc-loss, --lambda, --optim, --weight-decay and "
                                  "--momentum describe the training step: they need --train");
  if (train && check)
    return cli_usage_error("opt", "--check compares inference models; with --train the tests "
                                  "compare fused and unfused training steps (docs/training.md)");

  kiln_err e = {0};
  kiln_graph *g = NULL, *orig = NULL, *back = NULL;
  kiln_train_graph *tg = NULL;
  int rc = 0;
  if (train) mode = KILN_MODE_TRAINING;
  if (train ? load_train_model(model, binds, n_binds, topt.batch, &g, &e)
            : cli_load_model(model, binds, n_binds, &g, &e))
    return cli_fail(&e);
  if (check && cli_load_model(model, binds, n_binds, &orig, &e)) {
    ir_graph_free(g);
    return cli_fail(&e);
  }
  if (train) {
    kiln_code brc = kiln_train_graph_build(g, &topt.cfg, &tg, &e); /* consumes g */
    g = NULL;
    if (brc) {
      kiln_err_prefix(&e, "%s", model);
      return cli_fail(&e);
    }
    g = tg->g;
  }
  /* Folding bakes the bound sizes into the graph (shape chains become constants), so
   * the optimized model has fixed dims: drop the inputs' symbolic names. */
  for (int i = 0; i < g->n_inputs; i++)
    for (int d = 0; d < KILN_MAX_RANK; d++) {
      kiln_free(g->values[g->inputs[i]].sym[d]);
      g->values[g->inputs[i]].sym[d] = NULL;
    }
  int64_t nodes_before = live_nodes(g), consts_before = const_elems(g);
  if (print_before) {
    printf("; before\n");
    ir_print(g, stdout);
  }
  kiln_evaluator ev = kiln_ref_evaluator();
  kiln_pass_ctx cx = {.mode = mode, .ev = &ev, .verify = verify,
                      .vector_floats = kiln_host_vector_floats(), .layout = (int)layout,
                      .print_after = print_after,
                      .print_to = stdout};
  kiln_pipeline_result *res = kiln_calloc(1, sizeof *res);
  if (!res) {
    kiln_errf(&e, KILN_ERR_NOMEM, "out of memory");
    rc = cli_fail(&e);
    goto done;
  }
  kiln_code prc = train ? kiln_train_graph_optimize_ex(tg, passes, &cx, res, &e)
                        : kiln_run_pipeline(g, passes, &cx, res, &e);
  if (train) g = tg->g; /* the passes may have moved nothing but ids; the graph is the same */
  if (prc) {
    rc = cli_fail(&e);
    goto done;
  }
  if (stats) print_stats(res, nodes_before, consts_before, g);
  if (print) {
    printf("; result\n");
    ir_print(g, stdout);
  }
  if (out) {
    if ((train && train_graph_for_file(tg, &e)) || kiln_onnx_save(g, out, &e)) {
      rc = cli_fail(&e);
      goto done;
    }
    if (!quiet) printf("wrote %s (%lld nodes)\n", out, (long long)live_nodes(g));
  }
  if (check) {
    const kiln_graph *opt = g;
    if (out) { /* what a user gets is the file: check that, loaded back */
      if (cli_load_model(out, NULL, 0, &back, &e)) {
        kiln_err_prefix(&e, "loading the optimized model back");
        rc = cli_fail(&e);
        goto done;
      }
      opt = back;
    }
    rc = check_same(orig, opt, quiet);
    if (rc) fprintf(stderr, "kiln opt: check failed\n");
  }
done:
  kiln_free(res);
  if (tg)
    kiln_train_graph_free(tg); /* owns g */
  else
    ir_graph_free(g);
  ir_graph_free(orig);
  ir_graph_free(back);
  return rc;
}
