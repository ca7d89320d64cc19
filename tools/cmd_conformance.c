/* cmd_conformance.c — `kiln conformance`: runs the ONNX backend test suite
 * (model.onnx + test_data_set_N/{input,output}_K.pb) and reports passed, failed
 * and unsupported counts.  A test outside kiln's scope gets a one-line reason;
 * nothing crashes.  With --expect, any listed test that does not pass fails the
 * run, so a regression breaks CI. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "codegen/compile.h"
#include "frontend/onnx.h"
#include "runtime/ref.h"
#include "tools/cli.h"

#define DEFAULT_SUITE_ROOT "/usr/share/libonnx-testdata/data"
static const char *const default_suites[] = {"node", "pytorch-converted", "pytorch-operator", "simple"};

typedef enum { RES_PASS, RES_FAIL, RES_UNSUPPORTED } test_result;

typedef struct str_list {
  char **v;
  int n, cap;
} str_list;

static int list_push(str_list *l, const char *s) {
  if (l->n == l->cap) {
    int nc = l->cap ? l->cap * 2 : 64;
    char **p = realloc(l->v, sizeof(char *) * (size_t)nc);
    if (!p) return -1;
    l->v = p;
    l->cap = nc;
  }
  l->v[l->n] = strdup(s);
  return l->v[l->n++] ? 0 : -1;
}

static void list_free(str_list *l) {
  for (int i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
  memset(l, 0, sizeof *l);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool list_has(const str_list *l, const char *s) {
  return l->n && bsearch(&s, l->v, (size_t)l->n, sizeof(char *), cmp_str) != NULL;
}

static int read_list_file(const char *path, str_list *l) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char line[1024];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = 0;
    char *s = line;
    while (*s == ' ' || *s == '\t') s++;
    if (!*s || *s == '#') continue;
    list_push(l, s);
  }
  fclose(f);
  qsort(l->v, (size_t)l->n, sizeof(char *), cmp_str);
  return 0;
}

static bool is_dir(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static bool file_exists(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

/* Sorted subdirectory names of `dir`. */
static void list_subdirs(const char *dir, const char *prefix, str_list *out) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *de;
  char path[4096];
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    if (prefix && strncmp(de->d_name, prefix, strlen(prefix)) != 0) continue;
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    if (is_dir(path)) list_push(out, de->d_name);
  }
  closedir(d);
  qsort(out->v, (size_t)out->n, sizeof(char *), cmp_str);
}

/* Compares one output; writes a reason on mismatch.  Tolerances are the suite's. */
static bool outputs_match(const kiln_tensor *got, const kiln_tensor *want, const char *name,
                          double rtol, double atol, char *why, size_t whylen) {
  char a[160], b[160];
  if (got->dtype != want->dtype) {
    snprintf(why, whylen, "output '%s' has dtype %s, expected %s", name, kiln_dtype_name(got->dtype),
             kiln_dtype_name(want->dtype));
    return false;
  }
  if (!kiln_shape_eq(&got->shape, &want->shape)) {
    snprintf(why, whylen, "output '%s' has shape %s, expected %s", name,
             kiln_shape_str(&got->shape, a, sizeof a), kiln_shape_str(&want->shape, b, sizeof b));
    return false;
  }
  int64_t bad = 0, first = -1;
  double worst = 0;
  for (int64_t i = 0; i < got->numel; i++) {
    double x = kiln_tensor_get_f(got, i), y = kiln_tensor_get_f(want, i);
    bool ok;
    if (got->dtype == KILN_F32) {
      if (isnan(x) || isnan(y))
        ok = isnan(x) && isnan(y);
      else if (isinf(x) || isinf(y))
        ok = x == y;
      else
        ok = fabs(x - y) <= atol + rtol * fabs(y);
    } else {
      ok = kiln_tensor_get_i(got, i) == kiln_tensor_get_i(want, i);
    }
    if (!ok) {
      if (first < 0) first = i;
      bad++;
      double d = fabs(x - y);
      if (d > worst || isnan(d)) worst = d;
    }
  }
  if (bad) {
    snprintf(why, whylen, "output '%s': %lld of %lld values differ (first at %lld: %.7g vs %.7g; max |diff| %.3g)",
             name, (long long)bad, (long long)got->numel, (long long)first,
             kiln_tensor_get_f(got, first), kiln_tensor_get_f(want, first), worst);
    return false;
  }
  return true;
}

typedef struct conf_opts {
  double rtol, atol;
  bool verbose;
  bool jit;       /* --backend jit: compile every node, no reference fallback */
  int threads;
  const char *cache_dir;
} conf_opts;

/* Runs one data set of one test.  Returns the result and fills `why`. */
static test_result run_data_set(const char *test_dir, const char *set_dir, const conf_opts *o,
                                char *why, size_t whylen) {
  kiln_err e = {0};
  kiln_graph *g = NULL;
  char path[4096];
  test_result res = RES_FAIL;
  kiln_tensor *inputs[64] = {0}, *want[64] = {0}, *got[64] = {0};
  char *in_names[64] = {0}, *out_names[64] = {0};
  int n_in = 0, n_want = 0;

  snprintf(path, sizeof path, "%s/model.onnx", test_dir);
  if (kiln_onnx_load(path, &g, &e)) goto kiln_error;

  /* Read the data set's inputs and expected outputs. */
  for (n_in = 0; n_in < 64; n_in++) {
    snprintf(path, sizeof path, "%s/input_%d.pb", set_dir, n_in);
    if (!file_exists(path)) break;
    if (kiln_tensor_load_pb(path, &inputs[n_in], &in_names[n_in], &e)) goto kiln_error;
  }
  for (n_want = 0; n_want < 64; n_want++) {
    snprintf(path, sizeof path, "%s/output_%d.pb", set_dir, n_want);
    if (!file_exists(path)) break;
    if (kiln_tensor_load_pb(path, &want[n_want], &out_names[n_want], &e)) goto kiln_error;
  }
  if (n_in != g->n_inputs) {
    snprintf(why, whylen, "data set has %d inputs, the model takes %d", n_in, g->n_inputs);
    goto done;
  }
  if (n_want != g->n_outputs) {
    snprintf(why, whylen, "data set has %d outputs, the model gives %d", n_want, g->n_outputs);
    goto done;
  }
  /* Give symbolic input dims the data's sizes; bind inputs that determine shapes
   * (e.g. Reshape's shape fed as an input) as constants: kiln compiles static shapes. */
  {
    int fed[64];
    int n_fed = g->n_inputs;
    if (n_fed) memcpy(fed, g->inputs, sizeof(int) * (size_t)n_fed);
    for (int i = 0; i < n_fed; i++) {
      kiln_value *v = &g->values[fed[i]];
      kiln_tensor *t = inputs[i];
      if (v->shape.rank == t->shape.rank)
        for (int d = 0; d < v->shape.rank; d++)
          if (v->shape.d[d] < 0) v->shape.d[d] = t->shape.d[d];
      if (ir_input_feeds_shape(g, fed[i])) {
        kiln_tensor *c = NULL;
        if (kiln_tensor_clone(t, &c, &e)) goto kiln_error;
        if (ir_bind_input_const(g, v->name, c, &e)) goto kiln_error;
      }
    }
    /* inputs[] follows the original order; keep only those still fed. */
    int k = 0;
    for (int i = 0; i < n_fed; i++) {
      if (g->values[fed[i]].is_input)
        inputs[k++] = inputs[i];
      else
        kiln_tensor_free(inputs[i]);
    }
    for (int i = k; i < n_fed; i++) inputs[i] = NULL;
    n_in = k;
  }
  kiln_evaluator ev = kiln_ref_evaluator();
  if (ir_infer(g, &ev, &e)) goto kiln_error;
  if (o->jit) {
    kiln_program *prog = NULL;
    kiln_compile_opts co = {.threads = o->threads, .cache_dir = o->cache_dir, .allow_fallback = false};
    int n_out = g->n_outputs;
    kiln_graph *owned = g;
    g = NULL; /* the program owns the graph now */
    if (kiln_compile(owned, &co, &prog, &e)) {
      /* a missing kernel is a failure of the JIT, not an unsupported model */
      snprintf(why, whylen, "%s", e.msg);
      res = RES_FAIL;
      goto done;
    }
    kiln_code rc = kiln_program_run(prog, inputs, got, false, &e);
    res = RES_PASS;
    for (int i = 0; !rc && i < n_want; i++)
      if (!outputs_match(got[i], want[i], prog->g->values[prog->g->outputs[i]].name, o->rtol, o->atol,
                         why, whylen)) {
        res = RES_FAIL;
        break;
      }
    for (int i = 0; i < n_out; i++) {
      kiln_tensor_free(got[i]);
      got[i] = NULL;
    }
    kiln_program_free(prog);
    if (rc) goto kiln_error;
    goto done;
  }
  kiln_ref_ctx ctx = {.g = g, .training = false, .seed = 0};
  if (kiln_ref_run(g, &ctx, inputs, got, &e)) goto kiln_error;
  res = RES_PASS;
  for (int i = 0; i < n_want; i++)
    if (!outputs_match(got[i], want[i], g->values[g->outputs[i]].name, o->rtol, o->atol, why, whylen)) {
      res = RES_FAIL;
      break;
    }
  goto done;

kiln_error:
  snprintf(why, whylen, "%s", e.msg);
  res = e.code == KILN_ERR_UNSUPPORTED ? RES_UNSUPPORTED : RES_FAIL;
done:
  for (int i = 0; i < 64; i++) {
    kiln_tensor_free(inputs[i]);
    kiln_tensor_free(want[i]);
    if (g && i < g->n_outputs) kiln_tensor_free(got[i]);
    kiln_free(in_names[i]);
    kiln_free(out_names[i]);
  }
  ir_graph_free(g);
  return res;
}

static test_result run_test(const char *test_dir, const conf_opts *o, char *why, size_t whylen) {
  str_list sets = {0};
  list_subdirs(test_dir, "test_data_set_", &sets);
  char model[4096];
  snprintf(model, sizeof model, "%s/model.onnx", test_dir);
  if (!file_exists(model)) {
    snprintf(why, whylen, "no model.onnx");
    list_free(&sets);
    return RES_FAIL;
  }
  if (sets.n == 0) {
    snprintf(why, whylen, "no test_data_set_* folders");
    list_free(&sets);
    return RES_FAIL;
  }
  test_result res = RES_PASS;
  for (int i = 0; i < sets.n && res == RES_PASS; i++) {
    char set_dir[4096];
    snprintf(set_dir, sizeof set_dir, "%s/%s", test_dir, sets.v[i]);
    res = run_data_set(test_dir, set_dir, o, why, whylen);
  }
  list_free(&sets);
  return res;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: kiln conformance [options] [DIR...]\n\n"
          "Runs ONNX backend tests. Each DIR is a suite folder of tests or a single test folder\n"
          "(model.onnx + test_data_set_*/). Default: %s/{node,pytorch-converted,\n"
          "pytorch-operator,simple}.\n\n"
          "options:\n"
          "  --filter SUBSTR      only tests whose SUITE/NAME contains SUBSTR\n"
          "  --scope FILE         also count the tests listed in FILE (SUITE/NAME per line)\n"
          "  --only-scope         run only the tests listed in the --scope file\n"
          "  --expect FILE        fail (exit 1) if a test listed in FILE does not pass\n"
          "  --write-passing FILE write the sorted list of passing tests to FILE\n"
          "  --rtol X --atol Y    tolerances (default: the suite's, 1e-3 and 1e-7)\n"
          "  --backend ref|jit    reference interpreter (default) or compiled kernels\n"
          "  --threads N          threads for the jit backend (default: all cores)\n"
          "  --verbose            print passing tests too\n",
          DEFAULT_SUITE_ROOT);
}

int cmd_conformance(int argc, char **argv) {
  conf_opts o = {.rtol = 1e-3, .atol = 1e-7};
  const char *filter = NULL, *scope_file = NULL, *expect_file = NULL, *write_file = NULL, *val;
  bool only_scope = false, bad = false;
  str_list dirs = {0}, scope = {0}, expect = {0}, passing = {0};
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      usage(stdout);
      return 0;
    } else if (cli_opt(argc, argv, &i, "--filter", &val, &bad)) {
      filter = val;
    } else if (cli_opt(argc, argv, &i, "--scope", &val, &bad)) {
      scope_file = val;
    } else if (cli_opt(argc, argv, &i, "--expect", &val, &bad)) {
      expect_file = val;
    } else if (cli_opt(argc, argv, &i, "--write-passing", &val, &bad)) {
      write_file = val;
    } else if (cli_opt(argc, argv, &i, "--rtol", &val, &bad)) {
      o.rtol = cli_real("--rtol", val, 0, 1e30, &bad);
    } else if (cli_opt(argc, argv, &i, "--atol", &val, &bad)) {
      o.atol = cli_real("--atol", val, 0, 1e30, &bad);
    } else if (cli_opt(argc, argv, &i, "--backend", &val, &bad)) {
      if (strcmp(val, "ref") && strcmp(val, "jit"))
        return cli_usage_error("conformance", "unknown backend '%s'", val);
      o.jit = !strcmp(val, "jit");
    } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad)) {
      o.threads = (int)cli_int("--threads", val, 0, 4096, &bad);
    } else if (!strcmp(argv[i], "--only-scope")) {
      only_scope = true;
    } else if (!strcmp(argv[i], "--verbose")) {
      o.verbose = true;
    } else if (argv[i][0] == '-') {
      return cli_usage_error("conformance", "unknown option '%s'", argv[i]);
    } else {
      list_push(&dirs, argv[i]);
    }
    if (bad) return 2;
  }
  if (scope_file && read_list_file(scope_file, &scope)) {
    fprintf(stderr, "kiln conformance: cannot read scope list '%s'\n", scope_file);
    return 2;
  }
  if (expect_file && read_list_file(expect_file, &expect)) {
    fprintf(stderr, "kiln conformance: cannot read expected-pass list '%s'\n", expect_file);
    return 2;
  }
  if (only_scope && !scope_file) return cli_usage_error("conformance", "--only-scope needs --scope");
  if (dirs.n == 0)
    for (size_t i = 0; i < sizeof default_suites / sizeof default_suites[0]; i++) {
      char p[4096];
      snprintf(p, sizeof p, "%s/%s", DEFAULT_SUITE_ROOT, default_suites[i]);
      list_push(&dirs, p);
    }

  int counts[3] = {0}, scope_counts[3] = {0}, regressions = 0;
  for (int d = 0; d < dirs.n; d++) {
    char model[4096];
    str_list tests = {0};
    const char *dir = dirs.v[d];
    snprintf(model, sizeof model, "%s/model.onnx", dir);
    char suite[1024];
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", dir);
    size_t pl = strlen(parent);
    while (pl > 1 && parent[pl - 1] == '/') parent[--pl] = 0;
    if (file_exists(model)) { /* a single test folder: SUITE is its parent's name */
      char *slash = strrchr(parent, '/');
      list_push(&tests, slash ? slash + 1 : parent);
      if (slash) *slash = 0; else snprintf(parent, sizeof parent, ".");
    } else if (is_dir(parent)) {
      list_subdirs(parent, NULL, &tests);
    } else {
      fprintf(stderr, "kiln conformance: '%s' is not a folder\n", dir);
      list_free(&dirs);
      return 2;
    }
    const char *sl = strrchr(parent, '/');
    snprintf(suite, sizeof suite, "%s", sl ? sl + 1 : parent);
    for (int t = 0; t < tests.n; t++) {
      char id[2048], tdir[8192], why[1024] = "";
      snprintf(id, sizeof id, "%s/%s", suite, tests.v[t]);
      if (filter && !strstr(id, filter)) continue;
      bool in_scope = scope.n && list_has(&scope, id);
      if (only_scope && !in_scope) continue;
      snprintf(tdir, sizeof tdir, "%s/%s", parent, tests.v[t]);
      test_result r = run_test(tdir, &o, why, sizeof why);
      counts[r]++;
      if (in_scope) scope_counts[r]++;
      if (r == RES_PASS) list_push(&passing, id);
      bool expected = expect.n && list_has(&expect, id);
      if (expected && r != RES_PASS) regressions++;
      if (r == RES_PASS && o.verbose)
        printf("pass         %s\n", id);
      else if (r != RES_PASS)
        printf("%-12s %s: %s%s\n", r == RES_FAIL ? "FAIL" : "unsupported", id, why,
               expected ? "  [REGRESSION: expected to pass]" : "");
    }
    list_free(&tests);
  }
  printf("conformance: %d passed, %d failed, %d unsupported\n", counts[RES_PASS], counts[RES_FAIL],
         counts[RES_UNSUPPORTED]);
  if (scope.n)
    printf("in scope (%s, %d tests): %d passed, %d failed, %d unsupported\n", scope_file, scope.n,
           scope_counts[RES_PASS], scope_counts[RES_FAIL], scope_counts[RES_UNSUPPORTED]);
  if (expect.n) printf("expected to pass: %d, regressions: %d\n", expect.n, regressions);
  if (write_file) {
    qsort(passing.v, (size_t)passing.n, sizeof(char *), cmp_str);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (int i = 0; buf && i < passing.n; i++) {
      size_t need = strlen(passing.v[i]) + 2;
      if (len + need > cap) {
        char *nb = realloc(buf, cap *= 2);
        if (!nb) break;
        buf = nb;
      }
      len += (size_t)sprintf(buf + len, "%s\n", passing.v[i]);
    }
    kiln_err e = {0};
    if (!buf || kiln_write_file_atomic(write_file, buf, len, &e)) {
      free(buf);
      fprintf(stderr, "kiln conformance: cannot write '%s': %s\n", write_file, e.msg);
      return 1;
    }
    free(buf);
  }
  list_free(&dirs);
  list_free(&scope);
  list_free(&expect);
  list_free(&passing);
  return regressions ? 1 : 0;
}
