/* cmd_compile.c — `kiln compile`: compiles a model with the JIT and reports
 * compile statistics (cold vs warm kernel-cache times, planned memory). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/cli.h"

static void usage(FILE *f) {
  fprintf(f, "usage: kiln compile MODEL.onnx [--stats] [--threads N] [--bind NAME=SIZE]...\n"
             "       kiln compile MODEL.onnx -o libmodel.so [--header model.h] [--prefix NAME]\n"
             "                    [--weights weights.bin]\n\n"
             "Compiles every kernel of the model to native code with LLVM.  With -o, writes a\n"
             "self-contained shared library (kernels, plan, weights) with a plain C API\n"
             "(NAME_create/_run/_destroy, default NAME 'model') described by --header; it\n"
             "needs no LLVM at run time.  --weights keeps the weights in a side file.\n"
             "  --stats            compile twice, cold (empty kernel cache) and warm (cached), and\n"
             "                     print both times, the kernel counts and the planned peak memory\n"
             "                     beside the sum of all intermediate tensors\n"
             "  --cache-dir DIR    kernel cache (default $KILN_CACHE_DIR or ~/.cache/kiln)\n"
             "  --allow-fallback   run ops without a compiled kernel on the reference kernels\n"
             "  --passes LIST      graph passes before compiling (not with -o): 'default'\n"
             "                     (folding and fusion) or a pipeline; default none\n"
             "  --no-fuse          the default pipeline without its fusion passes\n"
             "  --threads N        thread count the program is planned for\n"
             CLI_LAYOUT_HELP
             "  --micro-batch N    samples per pass when the graph keeps its samples apart\n"
             "                     (default 1: a batch runs one sample at a time, the library's\n"
             "                     arena sized for one; 0: the whole batch at once)\n");
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void mib(int64_t b, char *buf, size_t n) { snprintf(buf, n, "%.2f MiB", (double)b / 1048576.0); }

static int compile_once(const kiln_model *m, const kiln_options *o, double *secs, kiln_session_stats *st,
                        kiln_err *e) {
  kiln_session *s = NULL;
  double t0 = now_s();
  if (kiln_session_create(m, o, &s, e)) return 1;
  *secs = now_s() - t0;
  kiln_session_get_stats(s, st);
  for (int w = 0; w < st->n_warnings; w++) fprintf(stderr, "kiln: warning: %s\n", st->warnings[w]);
  /* stats hold pointers into the session for warnings/cpu: copy what we print */
  static _Thread_local char cpu[64];
  snprintf(cpu, sizeof cpu, "%s", st->cpu ? st->cpu : "?");
  st->cpu = cpu;
  st->n_warnings = 0;
  kiln_session_free(s);
  return 0;
}

int cmd_compile(int argc, char **argv) {
  const char *model = NULL, *val, *cache_dir = NULL, *so = NULL, *header = NULL, *prefix = "model",
             *weights = NULL;
  const char *binds[32], *passes = NULL;
  int n_binds = 0, threads = 0, micro = 1;
  kiln_layout_choice layout = KILN_LAYOUT_AUTO;
  bool stats = false, bad = false, fallback = false;
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      usage(stdout);
      return 0;
    } else if (cli_opt(argc, argv, &i, "--bind", &val, &bad)) {
      if (n_binds < 32) binds[n_binds++] = val;
    } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad)) {
      threads = (int)cli_int("--threads", val, 0, 4096, &bad);
    } else if (cli_opt(argc, argv, &i, "--micro-batch", &val, &bad)) {
      micro = (int)cli_int("--micro-batch", val, 0, 1 << 30, &bad);
    } else if (cli_opt(argc, argv, &i, "--layout", &val, &bad)) {
      layout = cli_layout(val, &bad);
    } else if (cli_opt(argc, argv, &i, "--cache-dir", &val, &bad)) {
      cache_dir = val;
    } else if (cli_opt(argc, argv, &i, "-o", &val, &bad)) {
      so = val;
    } else if (cli_opt(argc, argv, &i, "--header", &val, &bad)) {
      header = val;
    } else if (cli_opt(argc, argv, &i, "--prefix", &val, &bad)) {
      prefix = val;
    } else if (cli_opt(argc, argv, &i, "--weights", &val, &bad)) {
      weights = val;
    } else if (cli_opt(argc, argv, &i, "--passes", &val, &bad)) {
      passes = val;
    } else if (!strcmp(argv[i], "--no-fuse")) {
      passes = KILN_PIPELINE_NO_FUSE;
    } else if (!strcmp(argv[i], "--stats")) {
      stats = true;
    } else if (!strcmp(argv[i], "--allow-fallback")) {
      fallback = true;
    } else if (argv[i][0] == '-') {
      return cli_usage_error("compile", "unknown option '%s'", argv[i]);
    } else if (!model) {
      model = argv[i];
    } else {
      return cli_usage_error("compile", "more than one model given");
    }
    if (bad) return 2;
  }
  if (!model) return cli_usage_error("compile", "no model given");
  kiln_err e = {0};
  kiln_model *m = NULL;
  kiln_load_options lo = {.binds = binds, .n_binds = n_binds};
  if (kiln_model_load(model, &lo, &m, &e)) return cli_fail(&e);
  if (so) {
    kiln_library_options lo2 = {.so_path = so, .header_path = header, .prefix = prefix,
                                .weights_path = weights, .micro_batch = micro};
    double t0 = now_s();
    kiln_code rc2 = kiln_compile_library(m, &lo2, &e);
    kiln_model_free(m);
    if (rc2) return cli_fail(&e);
    printf("wrote %s%s%s%s%s in %.2f s (entry points %s_create, %s_run, %s_destroy)\n", so, header ? " and " : "",
           header ? header : "", weights ? " and " : "", weights ? weights : "", now_s() - t0, prefix, prefix, prefix);
    return 0;
  }
  kiln_options o = kiln_options_default();
  o.threads = threads;
  o.allow_fallback = fallback;
  o.cache_dir = cache_dir;
  o.passes = passes;
  o.micro_batch = micro;
  o.layout = layout;
  char tmpdir[] = "/tmp/kiln-cold-cache-XXXXXX";
  kiln_session_stats cold, warm;
  double tc = 0, tw = 0;
  int rc = 0;
  if (stats) {
    /* cold: a fresh empty cache; warm: the same cache again */
    if (!mkdtemp(tmpdir)) {
      kiln_model_free(m);
      fprintf(stderr, "kiln: cannot create a temporary directory\n");
      return 1;
    }
    o.cache_dir = tmpdir;
    rc = compile_once(m, &o, &tc, &cold, &e) || compile_once(m, &o, &tw, &warm, &e);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd)) { /* best effort */
    }
  } else {
    rc = compile_once(m, &o, &tc, &cold, &e);
  }
  if (rc) {
    kiln_model_free(m);
    return cli_fail(&e);
  }
  char a[64], b[64];
  printf("compiled %s for %s, %d threads: %lld kernel calls per run, %d on reference kernels\n", model,
         cold.cpu, cold.threads, (long long)cold.steps, cold.fallback_steps);
  printf("cold compile: %.3f s (%d kernels compiled, %d identical reused)\n", tc, cold.kernels_compiled,
         cold.kernels_reused);
  if (stats) {
    printf("warm compile: %.3f s (%d kernels from the cache) — %.1fx faster\n", tw, warm.kernels_cached,
           tw > 0 ? tc / tw : 0.0);
    mib(cold.planned_peak_bytes, a, sizeof a);
    mib(cold.unplanned_bytes, b, sizeof b);
    printf("memory: planned peak %s (%lld bytes) vs %s (%lld bytes) for all intermediate tensors\n", a,
           (long long)cold.planned_peak_bytes, b, (long long)cold.unplanned_bytes);
  }
  kiln_model_free(m);
  return 0;
}
