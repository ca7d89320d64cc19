/* cmd_bench.c — `kiln bench`: whole-model latency (min, median) and a
 * per-kernel table (time, GFLOP/s, share of total), or one op configuration
 * timed in isolation (--op).  Numbers are for comparison within one run. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "frontend/onnx.h"
#include "ir/ops/common.h"
#include "runtime/ref.h"
#include "tools/cli.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: kiln bench MODEL.onnx [--iters N] [--warmup N] [--threads N] [--json]\n"
          "       kiln bench --op Conv --shape 1x64x56x56 --out-channels 64\n"
          "                  [--attrs kernel=3x3,stride=1,pad=1,group=1,dilation=1]\n\n"
          "Times the model with the JIT: latency min and median over --iters runs (default 20,\n"
          "after --warmup 3) and the process's CPU time per run (median; robust to other load\n"
          "for one thread), then one profiled run, a row per node (its kernels summed: time,\n"
          "GFLOP/s = 2*MACs/time, share of the total, kernel count).  MACs are the model's:\n"
          "a fused upsample-conv counts the convolution over the upsampled input, of which its\n"
          "phase kernels do 4/9 (2x, 3x3), so it can show more than 100%% of peak.\n"
          "--op builds a one-node Conv graph and times it alone.\n"
          "  --backend jit|ref   what to time (default jit)\n"
          "  --top N             rows of the per-node table (default 25; 0 = all)\n"
          "  --kernels           also a table by kernel kind (its emitter's label: e.g. the\n"
          "                      convolutions' padded-input copies '*_prep', GEMM packing\n"
          "                      '*_pack', the phase weight folds '*_wfold'), summed over nodes\n"
          "  --bind NAME=SIZE    give a symbolic input dimension a size\n"
          "  --passes LIST       graph passes before compiling: 'default' (folding and fusion,\n"
          "                      docs/passes.md) or a pipeline; default none (the model as given)\n"
          "  --no-fuse           the default pipeline without its fusion passes\n"
          CLI_LAYOUT_HELP
          "  --micro-batch N     samples per pass when the graph keeps its samples apart\n"
          "                      (default 1: a batch runs one sample at a time, in the cache;\n"
          "                      0: the whole batch at once)\n"
          "  --peak GFLOPS|measure  the machine's fp32 FMA peak at these threads (measure: run\n"
          "                      kiln_peak from beside this binary); adds each kernel's share of it\n"
          "  --compare           run bench/compare.sh instead: kiln, ONNX Runtime and PyTorch on the\n"
          "                      same model in one run, with ratios (passes --iters, --warmup,\n"
          "                      --threads, and --bind's size as --batch)\n");
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* CPU time of the whole process (all threads): unlike wall time, it barely moves when other
 * processes share the machine, so single-thread comparisons stay meaningful under load. */
static double cpu_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* One node's kernels: their time summed, the node's MACs once. */
typedef struct prof_row {
  const kiln_step_profile *p; /* the node's first step */
  double seconds;
  int kernels;
} prof_row;

static int cmp_prof(const void *a, const void *b) {
  double x = ((const prof_row *)a)->seconds, y = ((const prof_row *)b)->seconds;
  return x < y ? 1 : x > y ? -1 : 0;
}

/* Time by kernel kind (the step's kernel label), summed over the nodes: where a run spends
 * its time apart from the convolutions' own loops (copies, packing, folds).  One row per
 * kind: its first step, the time summed, the step count. */
static void print_kernel_kinds(const kiln_step_profile *prof, int64_t n, double total, int top) {
  prof_row *k = calloc((size_t)(n > 0 ? n : 1), sizeof *k);
  int64_t nk = 0;
  if (!k) return;
  for (int64_t i = 0; i < n; i++) {
    int64_t j = 0;
    while (j < nk && strcmp(k[j].p->kernel, prof[i].kernel)) j++;
    if (j == nk) k[nk++] = (prof_row){.p = &prof[i]};
    k[j].seconds += prof[i].seconds;
    k[j].kernels++;
  }
  qsort(k, (size_t)nk, sizeof *k, cmp_prof);
  printf("\n%-48s %10s %7s %6s\n", "kernel kind (profiled run)", "ms", "share", "steps");
  for (int64_t j = 0; j < nk && (top <= 0 || j < top); j++)
    printf("%-48.48s %10.3f %6.1f%% %6d\n", k[j].p->kernel[0] ? k[j].p->kernel : "(reference kernel)",
           k[j].seconds * 1e3, total > 0 ? 100.0 * k[j].seconds / total : 0.0, k[j].kernels);
  if (top > 0 && nk > top) printf("(%lld more)\n", (long long)(nk - top));
  free(k);
}

/* Builds a one-node Conv graph from --shape/--out-channels/--attrs. */
static kiln_code build_conv(const char *shape, int64_t oc, const char *attrs, kiln_graph **out, kiln_err *e) {
  int64_t d[4];
  if (sscanf(shape, "%ldx%ldx%ldx%ld", &d[0], &d[1], &d[2], &d[3]) != 4)
    return kiln_errf(e, KILN_ERR_INVALID, "--shape must be NxCxHxW, got '%s'", shape);
  int64_t kh = 3, kw = 3, stride = 1, pad = -1, group = 1, dil = 1;
  char buf[256];
  snprintf(buf, sizeof buf, "%s", attrs ? attrs : "");
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
    if (sscanf(tok, "kernel=%ldx%ld", &kh, &kw) == 2) continue;
    if (sscanf(tok, "kernel=%ld", &kh) == 1) {
      kw = kh;
      continue;
    }
    if (sscanf(tok, "stride=%ld", &stride) == 1 || sscanf(tok, "pad=%ld", &pad) == 1 ||
        sscanf(tok, "group=%ld", &group) == 1 || sscanf(tok, "dilation=%ld", &dil) == 1)
      continue;
    return kiln_errf(e, KILN_ERR_INVALID, "unknown --attrs entry '%s'", tok);
  }
  if (pad < 0) pad = (kh - 1) * dil / 2;
  if (group < 1 || d[1] % group || oc % group)
    return kiln_errf(e, KILN_ERR_INVALID, "channels must divide by group");
  kiln_graph *g = ir_graph_new();
  if (!g) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  int x, w, y, nid;
  kiln_tensor *wt = NULL;
  kiln_code rc = ir_add_value(g, "x", &x, e);
  if (!rc) {
    g->values[x].dtype = KILN_F32;
    g->values[x].shape = kiln_shape_make(4, d);
    g->values[x].typed = true;
    rc = ir_add_input(g, x, e);
  }
  kiln_shape ws = kiln_shape_make(4, (int64_t[]){oc, d[1] / group, kh, kw});
  if (!rc) rc = kiln_tensor_new(KILN_F32, &ws, &wt, e);
  if (!rc) {
    for (int64_t i = 0; i < wt->numel; i++) ((float *)wt->data)[i] = (float)((i * 37) % 17 - 8) * 0.01f;
    rc = ir_add_const(g, "w", wt, true, &w, e);
  }
  if (!rc) rc = ir_add_value(g, "y", &y, e);
  if (!rc) rc = ir_add_node(g, KILN_OP_Conv, "conv", (int[]){x, w}, 2, (int[]){y}, 1, &nid, e);
  if (!rc) rc = ir_set_attr_ints(g, nid, "kernel_shape", (int64_t[]){kh, kw}, 2, e);
  if (!rc) rc = ir_set_attr_ints(g, nid, "strides", (int64_t[]){stride, stride}, 2, e);
  if (!rc) rc = ir_set_attr_ints(g, nid, "pads", (int64_t[]){pad, pad, pad, pad}, 4, e);
  if (!rc) rc = ir_set_attr_ints(g, nid, "dilations", (int64_t[]){dil, dil}, 2, e);
  if (!rc) rc = ir_set_attr_int(g, nid, "group", group, e);
  if (!rc) rc = ir_add_output(g, y, e);
  if (!rc) rc = ir_set_opset(g, "", 13, e);
  kiln_evaluator ev = kiln_ref_evaluator();
  if (!rc) rc = ir_infer(g, &ev, e);
  if (rc) {
    ir_graph_free(g);
    return rc;
  }
  *out = g;
  return KILN_OK;
}

/* The directory holding this executable (for kiln_peak and bench/compare.sh), or "". */
static void exe_dir(char *buf, size_t n) {
  ssize_t len = readlink("/proc/self/exe", buf, n - 1);
  buf[len > 0 ? len : 0] = 0;
  char *slash = strrchr(buf, '/');
  if (slash) *slash = 0;
  else buf[0] = 0;
}

/* Runs kiln_peak (beside this binary) at `threads` threads; returns GFLOP/s or 0. */
static double measure_peak(int threads) {
  char dir[4096], cmd[4300];
  exe_dir(dir, sizeof dir);
  snprintf(cmd, sizeof cmd, "'%s/kiln_peak' --runs 5 --json --threads %d", dir, threads > 0 ? threads : 1);
  FILE *p = popen(cmd, "r");
  if (!p) return 0;
  char line[512] = {0};
  double g = 0;
  if (fgets(line, sizeof line, p)) {
    char *at = strstr(line, "\"gflops_n\": ");
    if (at) g = atof(at + strlen("\"gflops_n\": "));
  }
  pclose(p);
  return g;
}

/* `kiln bench --compare`: replaces this process with bench/compare.sh (found from
 * $KILN_BENCH_DIR, beside the build directory, or in ./bench), with KILN set to this binary. */
static int run_compare(const char *model, int iters, int warmup, int threads, const char *const *binds,
                       int n_binds) {
  char dir[4096], script[4200] = "", self[4096], num[4][32];
  exe_dir(dir, sizeof dir);
  const char *env = getenv("KILN_BENCH_DIR");
  const char *cands[3][2] = {{env, ""}, {dir, "/../bench"}, {".", "/bench"}};
  for (int i = 0; i < 3 && !script[0]; i++) {
    if (!cands[i][0]) continue;
    snprintf(script, sizeof script, "%s%s/compare.sh", cands[i][0], cands[i][1]);
    if (access(script, R_OK)) script[0] = 0;
  }
  if (!script[0]) {
    fprintf(stderr, "kiln bench: bench/compare.sh not found "
                    "(set KILN_BENCH_DIR to the repository's bench/)\n");
    return 1;
  }
  ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  self[len > 0 ? len : 0] = 0;
  if (len > 0) setenv("KILN", self, 1);
  const char *args[16];
  int n = 0;
  args[n++] = "bash";
  args[n++] = script;
  args[n++] = model;
  snprintf(num[0], sizeof num[0], "%d", iters);
  snprintf(num[1], sizeof num[1], "%d", warmup);
  args[n++] = "--iters";
  args[n++] = num[0];
  args[n++] = "--warmup";
  args[n++] = num[1];
  if (threads > 0) {
    snprintf(num[2], sizeof num[2], "%d", threads);
    args[n++] = "--threads";
    args[n++] = num[2];
  }
  if (n_binds > 0) { /* compare.sh binds the leading symbolic dimension to --batch */
    const char *eq = strchr(binds[0], '=');
    if (eq) {
      snprintf(num[3], sizeof num[3], "%s", eq + 1);
      args[n++] = "--batch";
      args[n++] = num[3];
    }
  }
  args[n] = NULL;
  fflush(stdout);
  execvp("bash", (char *const *)args);
  perror("kiln bench: cannot run bash");
  return 1;
}

static uint64_t mix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

int cmd_bench(int argc, char **argv) {
  const char *model = NULL, *val, *op = NULL, *shape = NULL, *attrs = NULL, *backend = "jit";
  const char *binds[32], *passes = NULL;
  int n_binds = 0, iters = 20, warmup = 3, threads = 0, top = 25, micro = 1;
  kiln_layout_choice layout = KILN_LAYOUT_AUTO;
  int64_t oc = 0;
  bool json = false, bad = false, compare = false, by_kernel = false;
  double peak = 0;
  bool peak_measure = false;
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      usage(stdout);
      return 0;
    } else if (cli_opt(argc, argv, &i, "--bind", &val, &bad)) {
      if (n_binds < 32) binds[n_binds++] = val;
    } else if (cli_opt(argc, argv, &i, "--iters", &val, &bad)) {
      iters = (int)cli_int("--iters", val, 1, 1000000000, &bad);
    } else if (cli_opt(argc, argv, &i, "--warmup", &val, &bad)) {
      warmup = (int)cli_int("--warmup", val, 0, 1000000000, &bad);
    } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad)) {
      threads = (int)cli_int("--threads", val, 0, 4096, &bad);
    } else if (cli_opt(argc, argv, &i, "--top", &val, &bad)) {
      top = (int)cli_int("--top", val, 0, 1000000000, &bad);
    } else if (cli_opt(argc, argv, &i, "--op", &val, &bad)) {
      op = val;
    } else if (cli_opt(argc, argv, &i, "--shape", &val, &bad)) {
      shape = val;
    } else if (cli_opt(argc, argv, &i, "--attrs", &val, &bad)) {
      attrs = val;
    } else if (cli_opt(argc, argv, &i, "--out-channels", &val, &bad)) {
      oc = cli_int("--out-channels", val, 1, 1073741824, &bad);
    } else if (cli_opt(argc, argv, &i, "--backend", &val, &bad)) {
      backend = val;
    } else if (cli_opt(argc, argv, &i, "--peak", &val, &bad)) {
      if (!strcmp(val, "measure")) peak_measure = true;
      else peak = cli_real("--peak", val, 1e-6, 1e9, &bad);
    } else if (cli_opt(argc, argv, &i, "--passes", &val, &bad)) {
      passes = val;
    } else if (!strcmp(argv[i], "--no-fuse")) {
      passes = KILN_PIPELINE_NO_FUSE;
    } else if (cli_opt(argc, argv, &i, "--micro-batch", &val, &bad)) {
      micro = cli_int("--micro-batch", val, 0, 1 << 30, &bad);
    } else if (cli_opt(argc, argv, &i, "--layout", &val, &bad)) {
      layout = cli_layout(val, &bad);
    } else if (!strcmp(argv[i], "--compare")) {
      compare = true;
    } else if (!strcmp(argv[i], "--json")) {
      json = true;
    } else if (!strcmp(argv[i], "--kernels")) {
      by_kernel = true;
    } else if (argv[i][0] == '-') {
      return cli_usage_error("bench", "unknown option '%s'", argv[i]);
    } else if (!model) {
      model = argv[i];
    } else {
      return cli_usage_error("bench", "more than one model given");
    }
    if (bad) return 2;
  }
  if (iters < 1) iters = 1;
  if (compare) {
    if (!model || op) return cli_usage_error("bench", "--compare needs a model file");
    return run_compare(model, iters, warmup, threads, binds, n_binds);
  }
  if (strcmp(backend, "jit") && strcmp(backend, "ref")) return cli_usage_error("bench", "unknown backend '%s'", backend);
  kiln_err e = {0};
  kiln_model *m = NULL;
  if (op) {
    if (strcmp(op, "Conv")) return cli_usage_error("bench", "--op supports Conv");
    if (!shape || oc <= 0) return cli_usage_error("bench", "--op Conv needs --shape and --out-channels");
    kiln_graph *g = NULL;
    if (build_conv(shape, oc, attrs, &g, &e)) return cli_fail(&e);
    m = kiln_model_from_graph(g);
    model = "(one Conv)";
  } else {
    if (!model) return cli_usage_error("bench", "no model given");
    kiln_load_options lo = {.binds = binds, .n_binds = n_binds};
    if (kiln_model_load(model, &lo, &m, &e)) return cli_fail(&e);
  }
  kiln_options o = kiln_options_default();
  o.threads = threads;
  o.passes = passes;
  o.micro_batch = micro;
  o.layout = layout;
  o.backend = strcmp(backend, "ref") ? KILN_BACKEND_JIT : KILN_BACKEND_REF;
  kiln_session *s = NULL;
  int n_in = kiln_model_num_inputs(m), n_out = kiln_model_num_outputs(m);
  kiln_tensor **in = calloc((size_t)n_in + 1, sizeof *in), **out = calloc((size_t)n_out + 1, sizeof *out);
  double *times = calloc((size_t)iters, sizeof(double)), *cpu = calloc((size_t)iters, sizeof(double));
  int rc = 1;
  if (!in || !out || !times || !cpu) {
    kiln_errf(&e, KILN_ERR_NOMEM, "out of memory");
    goto done;
  }
  if (kiln_session_create(m, &o, &s, &e)) goto done;
  uint64_t seed = 7;
  for (int i = 0; i < n_in; i++) {
    if (kiln_tensor_new(kiln_model_input_dtype(m, i), kiln_model_input_shape(m, i), &in[i], &e)) goto done;
    for (int64_t k = 0; k < in[i]->numel; k++)
      kiln_tensor_set_f(in[i], k, in[i]->dtype == KILN_F32 ? (double)(mix(&seed) >> 11) / 9007199254740992.0 * 2 - 1
                                                          : 0.0);
  }
  for (int w = 0; w < warmup + iters; w++) {
    double t0 = now_s(), c0 = cpu_s();
    if (kiln_session_run(s, in, out, &e)) goto done;
    double t = now_s() - t0, c = cpu_s() - c0;
    if (w >= warmup) {
      times[w - warmup] = t;
      cpu[w - warmup] = c;
    }
    for (int k = 0; k < n_out; k++) {
      kiln_tensor_free(out[k]);
      out[k] = NULL;
    }
  }
  qsort(times, (size_t)iters, sizeof(double), cmp_double);
  qsort(cpu, (size_t)iters, sizeof(double), cmp_double);
  double tmin = times[0], tmed = times[iters / 2], cmed = cpu[iters / 2];
  int64_t macs = kiln_model_macs(m);
  kiln_session_stats st;
  kiln_session_get_stats(s, &st);
  char micro_note[96];
  snprintf(micro_note, sizeof micro_note, " (%lld passes of a %lld-sample slice)",
           (long long)st.passes, (long long)micro);
  if (peak_measure && (peak = measure_peak(st.threads)) <= 0)
    fprintf(stderr, "kiln bench: could not run kiln_peak beside this binary (make kiln_peak); "
                    "no share of peak\n");
  const kiln_step_profile *prof = NULL;
  int64_t n_prof = 0;
  if (o.backend == KILN_BACKEND_JIT) {
    if (kiln_session_profile(s, in, out, &prof, &n_prof, &e)) goto done;
    for (int k = 0; k < n_out; k++) {
      kiln_tensor_free(out[k]);
      out[k] = NULL;
    }
  }
  double total = 0;
  for (int64_t i = 0; i < n_prof; i++) total += prof[i].seconds;
  prof_row *rows = calloc(n_prof > 0 ? (size_t)n_prof : 1, sizeof *rows);
  int64_t n_rows = 0;
  for (int64_t i = 0; rows && i < n_prof; i++) {
    if (n_rows && prof[i].node >= 0 && prof[i].node == rows[n_rows - 1].p->node) {
      rows[n_rows - 1].seconds += prof[i].seconds;
      rows[n_rows - 1].kernels++;
      continue;
    }
    rows[n_rows++] = (prof_row){.p = &prof[i], .seconds = prof[i].seconds, .kernels = 1};
  }
  if (rows) qsort(rows, (size_t)n_rows, sizeof *rows, cmp_prof);
  if (json) {
    printf("{\"model\": \"%s\", \"backend\": \"%s\", \"threads\": %d, \"iters\": %d, \"min_ms\": %.4f, "
           "\"median_ms\": %.4f, \"cpu_median_ms\": %.4f, \"macs\": %lld, \"gflops_at_min\": %.3f, "
           "\"planned_peak_bytes\": %lld, \"passes\": \"%s\", \"micro_passes\": %lld, ",
           model, backend, st.threads, iters, tmin * 1e3, tmed * 1e3, cmed * 1e3, (long long)macs,
           2.0 * (double)macs / tmin / 1e9, (long long)st.planned_peak_bytes, passes ? passes : "",
           (long long)st.passes);
    if (peak > 0) printf("\"peak_gflops\": %.2f, ", peak);
    printf("\"nodes\": [");
    for (int64_t i = 0; rows && i < n_rows; i++)
      printf("%s{\"label\": \"%s\", \"op\": \"%s\", \"ms\": %.4f, \"macs\": %lld, \"kernels\": %d}",
             i ? ", " : "", rows[i].p->label, rows[i].p->op, rows[i].seconds * 1e3,
             (long long)rows[i].p->macs, rows[i].kernels);
    printf("]}\n");
  } else {
    printf("%s: %s backend, %d threads, %d iterations%s%s\n", model, backend, st.threads, iters,
           passes ? ", passes " : "", passes ? passes : "");
    printf("latency: min %.3f ms, median %.3f ms;  %.3f GMAC -> %.1f GFLOP/s at min\n", tmin * 1e3, tmed * 1e3,
           (double)macs / 1e9, 2.0 * (double)macs / tmin / 1e9);
    printf("cpu time per run (all threads, median): %.3f ms\n", cmed * 1e3);
    if (peak > 0)
      printf("peak: %.1f GFLOP/s at %d threads; the model at min runs at %.1f%% of it\n", peak, st.threads,
             100.0 * 2.0 * (double)macs / tmin / 1e9 / peak);
    if (o.backend == KILN_BACKEND_JIT)
      printf("planned arena: %.2f MiB; %lld kernel calls, %d on reference kernels%s\n",
             (double)st.planned_peak_bytes / 1048576.0, (long long)(st.steps * st.passes),
             st.fallback_steps, st.passes > 1 ? micro_note : "");
    /* a batch that could have run in slices, and why it did not */
    const kiln_shape *s0 = n_in ? kiln_model_input_shape(m, 0) : NULL;
    if (o.backend == KILN_BACKEND_JIT && micro > 0 && st.passes == 1 && st.micro_why &&
        st.micro_why[0] && s0 && s0->rank >= 1 && s0->d[0] > micro)
      printf("micro-batching: off, the whole batch at once (%s)\n", st.micro_why);
    if (n_prof) {
      printf("\n%-48s %-18s %10s %10s %7s%s %4s\n", "node (profiled run)", "op", "ms", "GFLOP/s",
             "share", peak > 0 ? "   %peak" : "", "kern");
      for (int64_t i = 0; rows && i < n_rows && (top <= 0 || i < top); i++) {
        double sec = rows[i].seconds;
        double gf = rows[i].p->macs && sec > 0 ? 2.0 * (double)rows[i].p->macs / sec / 1e9 : 0.0;
        printf("%-48.48s %-18s %10.3f %10.1f %6.1f%%", rows[i].p->label, rows[i].p->op, sec * 1e3, gf,
               total > 0 ? 100.0 * sec / total : 0.0);
        if (peak > 0) gf > 0 ? printf(" %7.1f%%", 100.0 * gf / peak) : printf(" %8s", "");
        printf(" %4d\n", rows[i].kernels);
      }
      if (top > 0 && n_rows > top) printf("(%lld more)\n", (long long)(n_rows - top));
    }
    if (n_prof && by_kernel) print_kernel_kinds(prof, n_prof, total, top);
  }
  free(rows);
  rc = 0;
done:
  if (rc) cli_fail(&e);
  for (int i = 0; in && i < n_in; i++) kiln_tensor_free(in[i]);
  for (int i = 0; out && i < n_out; i++) kiln_tensor_free(out[i]);
  free(in);
  free(out);
  free(times);
  free(cpu);
  kiln_session_free(s);
  kiln_model_free(m);
  return rc;
}
