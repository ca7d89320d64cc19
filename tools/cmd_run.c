/* cmd_run.c — `kiln run`: runs a model on inputs from .pb/.npy files or random
 * data and prints (and optionally writes) its outputs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "frontend/onnx.h"
#include "runtime/ref.h"
#include "tools/cli.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: kiln run MODEL.onnx [--input NAME=FILE.pb|FILE.npy|random]... [options]\n\n"
          "Runs the model and prints a summary of each output.\n"
          "  --input NAME=SRC     feed input NAME from a TensorProto .pb, a NumPy .npy, or\n"
          "                       'random' (uniform in [-1,1) for floats, seeded); inputs not\n"
          "                       given are random\n"
          "  --out DIR            write each output to DIR/<name>.pb (or .npy with --format npy)\n"
          "  --format pb|npy      output file format (default pb)\n"
          "  --bind NAME=SIZE     give a symbolic input dimension a size\n"
          "  --seed N             seed for random inputs (default 1)\n"
          "  --backend jit|ref    compiled kernels (default) or the reference interpreter\n"
          "  --threads N          threads for the jit backend (default: all cores)\n"
          "  --micro-batch N      jit: samples per pass when the graph keeps its samples apart\n"
          "                       (default 1; 0: the whole batch at once)\n"
          "  --print N            print the first N values of each output (default 8)\n");
}

/* splitmix64: a small, well-mixed generator; state is local to the run. */
static uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static kiln_code random_tensor(const kiln_value *v, uint64_t *seed, kiln_tensor **out, kiln_err *e) {
  KILN_TRY(kiln_tensor_new(v->dtype, &v->shape, out, e));
  kiln_tensor *t = *out;
  for (int64_t i = 0; i < t->numel; i++) {
    double u = (double)(rng_next(seed) >> 11) / 9007199254740992.0;
    if (t->dtype == KILN_F32)
      kiln_tensor_set_f(t, i, 2.0 * u - 1.0);
    else if (t->dtype == KILN_BOOL)
      kiln_tensor_set_f(t, i, u < 0.5);
    else
      kiln_tensor_set_f(t, i, (double)(int)(u * 10)); /* small non-negative ints: valid indices */
  }
  return KILN_OK;
}

static void summarize(const char *name, const kiln_tensor *t, int show) {
  char buf[200];
  double mn = 0, mx = 0, sum = 0;
  for (int64_t i = 0; i < t->numel; i++) {
    double x = kiln_tensor_get_f(t, i);
    if (i == 0 || x < mn) mn = x;
    if (i == 0 || x > mx) mx = x;
    sum += x;
  }
  printf("%s: %s %s  min %.6g  max %.6g  mean %.6g\n", name, kiln_dtype_name(t->dtype),
         kiln_shape_str(&t->shape, buf, sizeof buf), mn, mx, t->numel ? sum / (double)t->numel : 0.0);
  if (show > 0 && t->numel) {
    printf("  [");
    for (int64_t i = 0; i < t->numel && i < show; i++)
      printf(i ? ", %.6g" : "%.6g", kiln_tensor_get_f(t, i));
    printf(t->numel > show ? ", ...]\n" : "]\n");
  }
}

int cmd_run(int argc, char **argv) {
  const char *model = NULL, *outdir = NULL, *format = "pb", *backend = "jit", *val;
  int threads = 0, micro = 1;
  const char *binds[32], *feeds[64];
  int n_binds = 0, n_feeds = 0, show = 8;
  uint64_t seed = 1;
  bool bad = false;
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      usage(stdout);
      return 0;
    } else if (cli_opt(argc, argv, &i, "--bind", &val, &bad)) {
      if (n_binds < 32) binds[n_binds++] = val;
    } else if (cli_opt(argc, argv, &i, "--input", &val, &bad)) {
      if (n_feeds < 64) feeds[n_feeds++] = val;
    } else if (cli_opt(argc, argv, &i, "--out", &val, &bad)) {
      outdir = val;
    } else if (cli_opt(argc, argv, &i, "--format", &val, &bad)) {
      format = val;
    } else if (cli_opt(argc, argv, &i, "--backend", &val, &bad)) {
      backend = val;
    } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad)) {
      threads = (int)cli_int("--threads", val, 0, 4096, &bad);
    } else if (cli_opt(argc, argv, &i, "--micro-batch", &val, &bad)) {
      micro = (int)cli_int("--micro-batch", val, 0, 1 << 30, &bad);
    } else if (cli_opt(argc, argv, &i, "--seed", &val, &bad)) {
      seed = cli_u64("--seed", val, &bad);
    } else if (cli_opt(argc, argv, &i, "--print", &val, &bad)) {
      show = (int)cli_int("--print", val, 0, 1000000000, &bad);
    } else if (argv[i][0] == '-') {
      return cli_usage_error("run", "unknown option '%s'", argv[i]);
    } else if (!model) {
      model = argv[i];
    } else {
      return cli_usage_error("run", "more than one model given");
    }
    if (bad) return 2;
  }
  if (!model) return cli_usage_error("run", "no model given");
  if (strcmp(format, "pb") && strcmp(format, "npy"))
    return cli_usage_error("run", "--format must be pb or npy");
  if (strcmp(backend, "ref") && strcmp(backend, "jit"))
    return cli_usage_error("run", "unknown backend '%s'", backend);

  kiln_err e = {0};
  kiln_graph *g = NULL;
  kiln_tensor *inputs[64] = {0}, *outputs[64] = {0};
  int rc = 1;
  if (cli_load_model(model, binds, n_binds, &g, &e)) return cli_fail(&e);
  if (g->n_inputs > 64 || g->n_outputs > 64) {
    kiln_errf(&e, KILN_ERR_LIMIT, "%s: too many inputs or outputs", model);
    goto fail;
  }
  for (int f = 0; f < n_feeds; f++) {
    const char *eq = strchr(feeds[f], '=');
    if (!eq) {
      ir_graph_free(g);
      return cli_usage_error("run", "--input expects NAME=SOURCE, got '%s'", feeds[f]);
    }
    int k;
    for (k = 0; k < g->n_inputs; k++) {
      const char *nm = g->values[g->inputs[k]].name;
      if (strlen(nm) == (size_t)(eq - feeds[f]) && !strncmp(nm, feeds[f], (size_t)(eq - feeds[f]))) break;
    }
    if (k == g->n_inputs) {
      kiln_errf(&e, KILN_ERR_INVALID, "%s has no input named '%.*s'", model, (int)(eq - feeds[f]), feeds[f]);
      goto fail;
    }
    kiln_tensor_free(inputs[k]);
    inputs[k] = NULL;
    const kiln_value *v = &g->values[g->inputs[k]];
    if (!strcmp(eq + 1, "random")) {
      if (random_tensor(v, &seed, &inputs[k], &e)) goto fail;
    } else {
      if (kiln_tensor_load_file(eq + 1, &inputs[k], &e)) goto fail;
      char a[160], b[160];
      if (inputs[k]->dtype != v->dtype || !kiln_shape_eq(&inputs[k]->shape, &v->shape)) {
        kiln_errf(&e, KILN_ERR_SHAPE, "%s: input '%s' is %s %s; the model expects %s %s", eq + 1,
                  v->name, kiln_dtype_name(inputs[k]->dtype),
                  kiln_shape_str(&inputs[k]->shape, a, sizeof a), kiln_dtype_name(v->dtype),
                  kiln_shape_str(&v->shape, b, sizeof b));
        goto fail;
      }
    }
  }
  for (int k = 0; k < g->n_inputs; k++)
    if (!inputs[k] && random_tensor(&g->values[g->inputs[k]], &seed, &inputs[k], &e)) goto fail;

  {
    kiln_options opt = kiln_options_default();
    opt.backend = strcmp(backend, "ref") ? KILN_BACKEND_JIT : KILN_BACKEND_REF;
    opt.threads = threads;
    opt.micro_batch = micro;
    opt.allow_fallback = 1; /* reported below, never silent */
    kiln_model *m = kiln_model_from_graph(g);
    if (!m) {
      kiln_errf(&e, KILN_ERR_NOMEM, "out of memory");
      goto fail;
    }
    kiln_session *s = NULL;
    kiln_code rc2 = kiln_session_create(m, &opt, &s, &e);
    if (!rc2) {
      kiln_session_stats st;
      kiln_session_get_stats(s, &st);
      for (int w = 0; w < st.n_warnings; w++) fprintf(stderr, "kiln: warning: %s\n", st.warnings[w]);
      if (st.fallback_steps)
        fprintf(stderr, "kiln: warning: %d of %lld steps run on reference kernels (no compiled kernel yet; "
                        "'kiln info --backend jit' lists them)\n", st.fallback_steps, (long long)st.steps);
      rc2 = kiln_session_run(s, inputs, outputs, &e);
    }
    kiln_session_free(s);
    g = (kiln_graph *)kiln_model_graph(m); /* still owned by m; freed below */
    if (rc2) {
      kiln_err_prefix(&e, "%s", model);
      kiln_model_free(m);
      g = NULL;
      goto fail;
    }
    /* keep m alive for output names: transfer back */
    kiln_free(m);
  }
  if (outdir) mkdir(outdir, 0777);
  for (int i = 0; i < g->n_outputs; i++) {
    const char *nm = g->values[g->outputs[i]].name;
    summarize(nm, outputs[i], show);
    if (outdir) {
      char path[4096], safe[1024];
      snprintf(safe, sizeof safe, "%s", nm);
      for (char *c = safe; *c; c++)
        if (*c == '/' || *c == '\\' || *c == ':') *c = '_';
      snprintf(path, sizeof path, "%s/%s.%s", outdir, safe, format);
      kiln_code w = !strcmp(format, "npy") ? kiln_tensor_save_npy(outputs[i], path, &e)
                                           : kiln_tensor_save_pb(outputs[i], nm, path, &e);
      if (w) goto fail;
      printf("  wrote %s\n", path);
    }
  }
  rc = 0;
fail:
  if (rc) cli_fail(&e);
  for (int i = 0; i < 64; i++) {
    kiln_tensor_free(inputs[i]);
    kiln_tensor_free(outputs[i]);
  }
  ir_graph_free(g);
  return rc;
}
