/* cmd_grad.c — `kiln grad`: gradients of a model output with respect to chosen
 * values (inputs, parameters or intermediate feature maps), computed by kiln's
 * autodiff and compiled like any graph.  The basis of gradient saliency and
 * Grad-CAM, and of parity checks against other frameworks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "codegen/compile.h"
#include "frontend/onnx.h"
#include "passes/autodiff.h"
#include "runtime/ref.h"
#include "tools/cli.h"
#include "train/train_graph.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: kiln grad MODEL.onnx --wrt NAME[,NAME...] [--input NAME=FILE|random]... [options]\n\n"
          "Writes d(output)/d(NAME) for each NAME (a graph input, an initializer or any\n"
          "intermediate value) as NAME_grad.pb in --out DIR.  The output is reduced with the\n"
          "output gradient: ones by default (the gradient of the sum), a one-hot of --class K\n"
          "along the last axis (the gradient of one class logit), or --seed-grad FILE.\n"
          "  --output NAME      which output to differentiate (default: the first)\n"
          "  --class K          seed with a one-hot of class K (e.g. for saliency / Grad-CAM)\n"
          "  --seed-grad FILE   the output gradient, same shape as the output (.pb or .npy)\n"
          "  --out DIR          where to write the gradients (default: print a summary only)\n"
          "  --format pb|npy    file format (default pb)\n"
          "  --backend jit|ref  (default jit)\n"
          "  --bind NAME=SIZE   give a symbolic input dimension a size\n");
}

int cmd_grad(int argc, char **argv) {
  const char *model = NULL, *wrt_list = NULL, *outname = NULL, *outdir = NULL, *seedf = NULL, *val;
  const char *format = "pb", *backend = "jit";
  const char *feeds[64], *binds[32];
  int n_feeds = 0, n_binds = 0;
  long cls = -1;
  bool bad = false;
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      usage(stdout);
      return 0;
    } else if (cli_opt(argc, argv, &i, "--wrt", &val, &bad)) {
      wrt_list = val;
    } else if (cli_opt(argc, argv, &i, "--input", &val, &bad)) {
      if (n_feeds < 64) feeds[n_feeds++] = val;
    } else if (cli_opt(argc, argv, &i, "--bind", &val, &bad)) {
      if (n_binds < 32) binds[n_binds++] = val;
    } else if (cli_opt(argc, argv, &i, "--output", &val, &bad)) {
      outname = val;
    } else if (cli_opt(argc, argv, &i, "--class", &val, &bad)) {
      cls = atol(val);
    } else if (cli_opt(argc, argv, &i, "--seed-grad", &val, &bad)) {
      seedf = val;
    } else if (cli_opt(argc, argv, &i, "--out", &val, &bad)) {
      outdir = val;
    } else if (cli_opt(argc, argv, &i, "--format", &val, &bad)) {
      format = val;
    } else if (cli_opt(argc, argv, &i, "--backend", &val, &bad)) {
      backend = val;
    } else if (argv[i][0] == '-') {
      return cli_usage_error("grad", "unknown option '%s'", argv[i]);
    } else if (!model) {
      model = argv[i];
    } else {
      return cli_usage_error("grad", "more than one model given");
    }
    if (bad) return 2;
  }
  if (!model) return cli_usage_error("grad", "no model given");
  if (!wrt_list) return cli_usage_error("grad", "--wrt is required");
  if (strcmp(backend, "jit") && strcmp(backend, "ref")) return cli_usage_error("grad", "unknown backend '%s'", backend);
  kiln_err e = {0};
  kiln_graph *g = NULL;
  kiln_tensor *inputs[128] = {0}, *outs[128] = {0}, *inits[64] = {0};
  int wrt[64], grads[64], init_v[64], n_wrt = 0, rc = 1;
  kiln_program *prog = NULL;
  if (cli_load_model(model, binds, n_binds, &g, &e)) return cli_fail(&e);
  int out_v = g->n_outputs ? g->outputs[0] : -1;
  if (outname) {
    out_v = ir_find_value(g, outname);
    if (out_v < 0) {
      kiln_errf(&e, KILN_ERR_INVALID, "%s has no value named '%s'", model, outname);
      goto fail;
    }
  }
  /* values to differentiate: constants become fed inputs so nothing folds them */
  char list[4096];
  snprintf(list, sizeof list, "%s", wrt_list);
  int n_init = 0;
  for (char *tok = strtok(list, ","); tok && n_wrt < 64; tok = strtok(NULL, ",")) {
    int v = ir_find_value(g, tok);
    if (v < 0) {
      kiln_errf(&e, KILN_ERR_INVALID, "%s has no value named '%s'", model, tok);
      goto fail;
    }
    if (g->values[v].data && g->values[v].producer < 0 && n_init < 64) {
      if (kiln_unfreeze(g, v, &inits[n_init], &e)) goto fail;
      init_v[n_init++] = v;
    }
    wrt[n_wrt++] = v;
  }
  /* the output gradient */
  int seed = -1;
  if (seedf || cls >= 0) {
    kiln_tensor *st = NULL;
    const kiln_value *ov = &g->values[out_v];
    if (seedf) {
      if (kiln_tensor_load_file(seedf, &st, &e)) goto fail;
      if (st->dtype != KILN_F32 || !kiln_shape_eq(&st->shape, &ov->shape)) {
        kiln_tensor_free(st);
        kiln_errf(&e, KILN_ERR_SHAPE, "%s: the output gradient must have the output's type and shape", seedf);
        goto fail;
      }
    } else {
      int64_t last = ov->shape.rank ? ov->shape.d[ov->shape.rank - 1] : 1;
      if (cls >= last) {
        kiln_errf(&e, KILN_ERR_INVALID, "--class %ld is out of range for output '%s' (%lld classes)", cls, ov->name,
                  (long long)last);
        goto fail;
      }
      if (kiln_tensor_new(KILN_F32, &ov->shape, &st, &e)) goto fail;
      for (int64_t i = cls; i < st->numel; i += last) ((float *)st->data)[i] = 1.0f;
    }
    if (ir_add_const(g, "grad_seed", st, false, &seed, &e)) goto fail;
  }
  kiln_autodiff_opts ao = {.loss = out_v, .wrt = wrt, .n_wrt = n_wrt, .seed = seed};
  if (kiln_autodiff(g, &ao, grads, &e)) goto fail;
  g->n_outputs = 0;
  for (int64_t v = 0; v < g->n_values; v++) g->values[v].is_output = false;
  for (int i = 0; i < n_wrt; i++)
    if (ir_add_output(g, grads[i], &e)) goto fail;
  kiln_evaluator ev = kiln_ref_evaluator();
  if (ir_toposort(g, &e) || ir_verify(g, &e) || ir_infer(g, &ev, &e)) goto fail;
  /* feed inputs: given files, initializer values, or random */
  uint64_t rs = 1;
  for (int k = 0; k < g->n_inputs && k < 128; k++) {
    const kiln_value *v = &g->values[g->inputs[k]];
    for (int f = 0; f < n_feeds && !inputs[k]; f++) {
      const char *eq = strchr(feeds[f], '=');
      if (!eq || strlen(v->name) != (size_t)(eq - feeds[f]) || strncmp(v->name, feeds[f], (size_t)(eq - feeds[f]))) continue;
      if (strcmp(eq + 1, "random") && kiln_tensor_load_file(eq + 1, &inputs[k], &e)) goto fail;
    }
    /* an initializer made an input: its own data */
    for (int q = 0; q < n_init && !inputs[k]; q++)
      if (init_v[q] == g->inputs[k] && kiln_tensor_clone(inits[q], &inputs[k], &e)) goto fail;
    if (!inputs[k]) {
      if (kiln_tensor_new(v->dtype, &v->shape, &inputs[k], &e)) goto fail;
      for (int64_t i = 0; i < inputs[k]->numel; i++) {
        rs += 0x9e3779b97f4a7c15ull;
        uint64_t z = rs;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        double u = (double)((z ^ (z >> 31)) >> 11) / 9007199254740992.0;
        kiln_tensor_set_f(inputs[k], i, v->dtype == KILN_F32 ? 2 * u - 1 : 0);
      }
    }
  }
  if (!strcmp(backend, "ref")) {
    kiln_ref_ctx ctx = {.g = g};
    if (kiln_ref_run(g, &ctx, inputs, outs, &e)) goto fail;
  } else {
    kiln_compile_opts co = {.allow_fallback = true};
    kiln_graph *owned = g;
    g = NULL;
    if (kiln_compile(owned, &co, &prog, &e)) goto fail;
    g = prog->g;
    if (kiln_program_run(prog, inputs, outs, false, &e)) goto fail;
  }
  if (outdir) mkdir(outdir, 0777);
  for (int i = 0; i < n_wrt; i++) {
    const char *nm = g->values[wrt[i]].name;
    double mx = 0, sum = 0;
    for (int64_t k = 0; k < outs[i]->numel; k++) {
      double x = kiln_tensor_get_f(outs[i], k);
      if (x > mx || -x > mx) mx = x < 0 ? -x : x;
      sum += x;
    }
    char shp[160];
    printf("d %s / d %s: %s  max |g| %.6g  sum %.6g\n", g->values[out_v].name, nm,
           kiln_shape_str(&outs[i]->shape, shp, sizeof shp), mx, sum);
    if (outdir) {
      char path[4096], safe[1024];
      snprintf(safe, sizeof safe, "%s_grad", nm);
      for (char *c = safe; *c; c++)
        if (*c == '/' || *c == ':') *c = '_';
      snprintf(path, sizeof path, "%s/%s.%s", outdir, safe, format);
      kiln_code w = !strcmp(format, "npy") ? kiln_tensor_save_npy(outs[i], path, &e)
                                           : kiln_tensor_save_pb(outs[i], safe, path, &e);
      if (w) goto fail;
    }
  }
  rc = 0;
fail:
  if (rc) cli_fail(&e);
  for (int i = 0; i < 128; i++) {
    kiln_tensor_free(inputs[i]);
    kiln_tensor_free(outs[i]);
  }
  for (int i = 0; i < 64; i++) kiln_tensor_free(inits[i]);
  if (prog)
    kiln_program_free(prog);
  else
    ir_graph_free(g);
  return rc;
}
