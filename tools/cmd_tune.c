/* cmd_tune.c — `kiln tune`: measures each distinct convolution of a model with the cost
 * model's block and with candidate blocks, and saves the blocks that beat the model's by a
 * margin in the tuning table of this CPU in the kernel cache directory (codegen/tune.h), where
 * every later compile (kiln bench, run, train, the C API) finds them.
 *
 * How one convolution is timed: its node is copied into a one-node graph (constant weights
 * stay constant, so they are repacked as in the model; other inputs are random), compiled with
 * the candidate forced for its key only, and run repeatedly with the per-step profile; its
 * time is the minimum over the runs after a warm-up of the steps its kernels take (its input
 * copy and the convolution: a node's other kernels, such as the other phases of an upsampling
 * convolution, would only dilute the difference).  Candidates compile into a private kernel
 * cache, removed at the end, so the node's other kernels compile once and the user's cache
 * never fills with losing kernels.  A candidate whose outputs differ in any bit from the
 * model's block would be a generator bug: it is reported and skipped.  A winner is timed
 * again against the model's block, alternating, before it is kept. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "codegen/cache.h"
#include "codegen/compile.h"
#include "codegen/tune.h"
#include "passes/pass.h"
#include "runtime/ref.h"
#include "tools/cli.h"

#define MAX_IO 32 /* operands of a node we isolate (convolutions have a handful) */

static void usage(FILE *f) {
  fprintf(f,
          "usage: kiln tune MODEL.onnx [--threads N] [--passes LIST] [--layout L]\n"
          "                 [--bind NAME=SIZE]\n"
          "                 [--budget SECONDS] [--margin PCT] [--candidates N] [--dry-run]\n\n"
          "Measures every distinct convolution the direct-convolution generator plans for the\n"
          "model (Conv, ConvTranspose, FusedConv, UpsampleConv phases, blocked-layout\n"
          "convolutions: OCV channel vectors x 1 x P pixels, ...) with the cost\n"
          "model's register block and with candidate blocks (the model's next best and\n"
          "neighbours of its choice), each compiled alone and timed by its own kernels (the\n"
          "minimum over runs after a warm-up; CPU time at one thread, where waiting on a busy\n"
          "machine would count in wall time), heaviest convolutions first.  A block that beats\n"
          "the model's by the margin, confirmed by alternating measurements, is saved in this\n"
          "CPU's tuning table in the kernel cache directory ($KILN_CACHE_DIR, else\n"
          "~/.cache/kiln); kiln bench, run, train and the C API then use it for convolutions\n"
          "of the same geometry.  $KILN_TUNE=0 ignores the table.  Tuned blocks never change\n"
          "results: every output is computed by the same instructions, only grouped\n"
          "differently.\n"
          "  --threads N         threads the kernels run on while timed (default 1); the table\n"
          "                      is used at any thread count\n"
          "  --passes LIST       graph passes before compiling, as in kiln bench: 'default'\n"
          "                      (folding and fusion) or a pipeline; default none.  Tune with\n"
          "                      the passes you run with: fusion changes some convolutions\n"
          CLI_LAYOUT_HELP
          "  --bind NAME=SIZE    give a symbolic input dimension a size (e.g. the batch)\n"
          "  --budget SECONDS    time for all measurements (default 120); shared among the\n"
          "                      convolutions, heaviest first, unused time passed on\n"
          "  --margin PCT        how much faster a block must be to be kept (default 3)\n"
          "  --candidates N      blocks tried per convolution at most, the model's included\n"
          "                      (default 16)\n"
          "  --dry-run           list the convolutions, their blocks and candidates; time and\n"
          "                      save nothing\n");
}

static double now_s(int clock) {
  struct timespec t;
  clock_gettime(clock, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static uint64_t mix(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Deep copy of an attribute through the setters (the kinds convolution ops use). */
static kiln_code copy_attr(kiln_graph *g, int nid, const kiln_attr *a, kiln_err *e) {
  switch (a->kind) {
  case KILN_ATTR_INT: return ir_set_attr_int(g, nid, a->name, a->i, e);
  case KILN_ATTR_FLOAT: return ir_set_attr_float(g, nid, a->name, a->f, e);
  case KILN_ATTR_STRING: return ir_set_attr_str(g, nid, a->name, a->s ? a->s : "", e);
  case KILN_ATTR_INTS: return ir_set_attr_ints(g, nid, a->name, a->ints, a->n, e);
  case KILN_ATTR_FLOATS: return ir_set_attr_floats(g, nid, a->name, a->floats, a->n, e);
  case KILN_ATTR_TENSOR: {
    kiln_tensor *t = NULL;
    KILN_TRY(kiln_tensor_clone(a->t, &t, e));
    return ir_set_attr_tensor(g, nid, a->name, t, e);
  }
  default:
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "attribute '%s' of kind %d cannot be copied",
                     a->name, (int)a->kind);
  }
}

/* A graph of node `n` of `src` alone: constant inputs stay constants, the others become graph
 * inputs; every output is a graph output. */
static kiln_code isolate(const kiln_graph *src, const kiln_node *n, kiln_graph **out,
                         kiln_err *e) {
  kiln_graph *g = ir_graph_new();
  *out = NULL;
  if (!g) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  kiln_code rc = KILN_OK;
  int in[MAX_IO], outs[MAX_IO], nid = -1;
  if (n->n_in > MAX_IO || n->n_out > MAX_IO)
    rc = kiln_errf(e, KILN_ERR_LIMIT, "node '%s' has too many operands", n->name ? n->name : "?");
  for (int i = 0; i < src->n_opsets && !rc; i++)
    rc = ir_set_opset(g, src->opsets[i].domain, src->opsets[i].version, e);
  for (int i = 0; i < n->n_in && !rc; i++) {
    in[i] = -1;
    if (n->in[i] < 0) continue;
    const kiln_value *v = &src->values[n->in[i]];
    if ((in[i] = ir_find_value(g, v->name)) >= 0) continue; /* read twice */
    if (v->data) {
      kiln_tensor *t = NULL;
      rc = kiln_tensor_clone(v->data, &t, e);
      if (!rc) rc = ir_add_const(g, v->name, t, v->is_initializer, &in[i], e);
    } else {
      rc = ir_add_value(g, v->name, &in[i], e);
      if (!rc) {
        g->values[in[i]].dtype = v->dtype;
        g->values[in[i]].shape = v->shape;
        g->values[in[i]].typed = true;
        rc = ir_add_input(g, in[i], e);
      }
    }
  }
  for (int o = 0; o < n->n_out && !rc; o++) {
    outs[o] = -1;
    if (n->out[o] >= 0) rc = ir_add_value(g, src->values[n->out[o]].name, &outs[o], e);
  }
  if (!rc) rc = ir_add_node(g, n->op, n->name, in, n->n_in, outs, n->n_out, &nid, e);
  if (!rc) g->nodes[nid].opset = n->opset;
  for (int a = 0; a < n->n_attrs && !rc; a++) rc = copy_attr(g, nid, &n->attrs[a], e);
  for (int o = 0; o < n->n_out && !rc; o++)
    if (outs[o] >= 0) rc = ir_add_output(g, outs[o], e);
  kiln_evaluator ev = kiln_ref_evaluator();
  if (!rc) rc = ir_infer(g, &ev, e);
  if (rc) {
    ir_graph_free(g);
    return rc;
  }
  *out = g;
  return KILN_OK;
}

typedef struct tuner {
  const kiln_graph *src; /* the model's graph (owned by the recording program) */
  int threads;
  double target_s;       /* measuring time per candidate */
  const char *node_label;
  const char *cache_dir; /* the private kernel cache of candidates */
} tuner;

/* One convolution's node alone, compiled with `blk` forced for `key`; *used: the block the
 * generator took (it refuses blocks that do not fit). */
typedef struct candidate {
  kiln_program *p;
  bool *mask; /* the steps of the tuned convolution */
  kiln_tensor *in[MAX_IO];
  int n_in;
  kiln_tensor *out[MAX_IO];
  int n_out;
} candidate;

static void cand_free(candidate *c) {
  kiln_program_free(c->p);
  free(c->mask);
  for (int i = 0; i < c->n_in; i++) kiln_tensor_free(c->in[i]);
  for (int i = 0; i < c->n_out; i++) kiln_tensor_free(c->out[i]);
  memset(c, 0, sizeof *c);
}

static kiln_code cand_build(const tuner *tn, const kiln_tune_record *r, kiln_tune_block blk,
                            candidate *c, kiln_tune_block *used, kiln_err *e) {
  memset(c, 0, sizeof *c);
  kiln_graph *g = NULL;
  KILN_TRY(isolate(tn->src, &tn->src->nodes[r->node], &g, e));
  kiln_tune_table *t = kiln_tune_new();
  if (!t) {
    ir_graph_free(g);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  kiln_code rc = kiln_tune_set(t, r->key, blk, 0, 0, e);
  t->record = true;
  /* no kernel cache: candidates that lose would only fill it */
  kiln_compile_opts o = {.threads = tn->threads, .cache_dir = tn->cache_dir,
                         .allow_fallback = true, .tune = t};
  if (!rc) rc = kiln_compile(g, &o, &c->p, e);
  else ir_graph_free(g);
  *used = r->model;
  for (int64_t i = 0; !rc && i < t->n_recs; i++)
    if (!strcmp(t->recs[i].key, r->key)) *used = t->recs[i].used;
  if (!rc && !t->record_oom) {
    c->mask = calloc((size_t)c->p->n_steps + 1, sizeof *c->mask);
    if (c->mask && !kiln_tune_steps_of(t, r->key, c->p->n_steps, c->mask))
      rc = kiln_errf(e, KILN_ERR_INTERNAL, "%s alone plans no convolution %s", tn->node_label,
                     r->key);
  }
  if (!rc && (!c->mask || t->record_oom)) rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  kiln_tune_free(t);
  if (rc) {
    cand_free(c);
    return rc;
  }
  const kiln_graph *pg = c->p->g;
  uint64_t seed = 11;
  c->n_in = pg->n_inputs;
  c->n_out = pg->n_outputs;
  for (int i = 0; i < pg->n_inputs && !rc; i++) {
    const kiln_value *v = &pg->values[pg->inputs[i]];
    rc = kiln_tensor_new(v->dtype, &v->shape, &c->in[i], e);
    for (int64_t k = 0; !rc && k < c->in[i]->numel; k++)
      kiln_tensor_set_f(c->in[i], k,
                        v->dtype == KILN_F32 ? (double)(mix(&seed) >> 11) * 0x1p-53 * 2 - 1 : 0);
  }
  if (rc) cand_free(c);
  return rc;
}

/* Runs the candidate: the minimum over runs after one warm-up of its convolution's steps in
 * ms (the minimum: interruptions by other load only ever add time).  At one thread the steps'
 * CPU time: wall time also counts the time a loaded or CPU-quota-throttled machine keeps the
 * process waiting, which measured the same kernel 2x apart; with more threads, wall time
 * (waiting threads would count as CPU time).  Keeps the last outputs. */
static kiln_code cand_time(const tuner *tn, candidate *c, double *ms, kiln_err *e) {
  double best = -1, spent = 0;
  kiln_program *p = c->p;
  for (int run = 0; run < 200; run++) {
    for (int o = 0; o < c->n_out; o++) {
      kiln_tensor_free(c->out[o]);
      c->out[o] = NULL;
    }
    if (p->step_seconds) memset(p->step_seconds, 0, sizeof(double) * (size_t)p->n_steps);
    if (p->step_cpu_seconds) memset(p->step_cpu_seconds, 0, sizeof(double) * (size_t)p->n_steps);
    double w0 = now_s(CLOCK_MONOTONIC);
    KILN_TRY(kiln_program_run(p, c->in, c->out, true, e));
    spent += now_s(CLOCK_MONOTONIC) - w0;
    const double *st = tn->threads == 1 ? p->step_cpu_seconds : p->step_seconds;
    double t = 0;
    for (int64_t s = 0; s < p->n_steps; s++)
      if (c->mask[s]) t += st[s];
    if (run > 0 && (best < 0 || t < best)) best = t;
    if (run >= 5 && spent >= tn->target_s) break;
  }
  *ms = best * 1e3;
  return KILN_OK;
}

/* Removes the private cache directory and the kernel objects in it. */
static void remove_dir(const char *dir) {
  DIR *d = opendir(dir);
  struct dirent *de;
  char path[4400];
  while (d && (de = readdir(d))) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
    unlink(path);
  }
  if (d) closedir(d);
  rmdir(dir);
}

static bool same_outputs(const candidate *a, const candidate *b) {
  if (a->n_out != b->n_out) return false;
  for (int o = 0; o < a->n_out; o++) {
    if (!a->out[o] || !b->out[o]) return false;
    size_t na = kiln_tensor_nbytes(a->out[o]), nb = kiln_tensor_nbytes(b->out[o]);
    if (na != nb || (na && memcmp(a->out[o]->data, b->out[o]->data, na))) return false;
  }
  return true;
}

static void blk_str(kiln_tune_block b, char *s, size_t n) {
  snprintf(s, n, "%dx%dx%d", b.ocb, b.rb, b.nv);
}

static bool blk_eq(kiln_tune_block a, kiln_tune_block b) {
  return a.ocb == b.ocb && a.rb == b.rb && a.nv == b.nv;
}

/* Order of records: heaviest (MACs x count) first. */
typedef struct weighted {
  int i;
  double w;
} weighted;
static int cmp_weight(const void *a, const void *b) {
  const weighted *x = a, *y = b;
  return x->w > y->w ? -1 : x->w < y->w ? 1 : x->i - y->i;
}

typedef struct result {
  kiln_tune_block best;
  double ms_model, ms_best;
  int tried;
  bool tuned, kept;
  const char *note;
} result;

/* Times the model's block and candidates of record r within `budget` seconds. */
static kiln_code tune_one(const tuner *tn, const kiln_tune_record *r, int max_cands, double margin,
                          double budget, result *res, kiln_err *e) {
  memset(res, 0, sizeof *res);
  res->best = r->model;
  double t_start = now_s(CLOCK_MONOTONIC);
  candidate def, best = {0};
  kiln_tune_block used;
  KILN_TRY(cand_build(tn, r, r->model, &def, &used, e));
  kiln_code rc = cand_time(tn, &def, &res->ms_model, e);
  res->ms_best = res->ms_model;
  res->tuned = true;
  res->tried = 1;
  for (int i = 1; !rc && i < r->n_cands && i < max_cands; i++) {
    if (now_s(CLOCK_MONOTONIC) - t_start >= budget) {
      res->note = "budget";
      break;
    }
    candidate c;
    double ms;
    rc = cand_build(tn, r, r->cands[i], &c, &used, e);
    if (rc) break;
    if (!blk_eq(used, r->cands[i])) { /* refused by the generator: does not fit */
      cand_free(&c);
      continue;
    }
    res->tried++;
    rc = cand_time(tn, &c, &ms, e);
    if (!rc && !same_outputs(&c, &def)) {
      char b[32];
      blk_str(r->cands[i], b, sizeof b);
      fprintf(stderr, "kiln tune: warning: block %s changes the outputs of %s (a generator "
                      "bug); skipped\n", b, tn->node_label);
    } else if (!rc && ms < res->ms_best) {
      res->ms_best = ms;
      res->best = r->cands[i];
      cand_free(&best);
      best = c;
      continue;
    }
    cand_free(&c);
  }
  /* confirm a winner: both again, alternating, minimum of each */
  if (!rc && best.p && res->ms_best < res->ms_model * (1 - margin)) {
    double md = res->ms_model, mb = res->ms_best, ms;
    for (int round = 0; round < 3 && !rc; round++) {
      rc = cand_time(tn, &def, &ms, e);
      if (!rc && ms < md) md = ms;
      if (!rc) rc = cand_time(tn, &best, &ms, e);
      if (!rc && ms < mb) mb = ms;
    }
    res->ms_model = md;
    res->ms_best = mb;
    res->kept = mb < md * (1 - margin);
  }
  if (!res->kept) {
    res->best = r->model;
    if (res->ms_best > res->ms_model) res->ms_best = res->ms_model;
  }
  cand_free(&def);
  cand_free(&best);
  return rc;
}

int cmd_tune(int argc, char **argv) {
  const char *model = NULL, *val, *passes = NULL, *binds[32];
  kiln_layout_choice layout = KILN_LAYOUT_AUTO;
  int n_binds = 0, threads = 1, max_cands = 16;
  double budget = 120, margin = 3;
  bool dry = false, bad = false;
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      usage(stdout);
      return 0;
    } else if (cli_opt(argc, argv, &i, "--bind", &val, &bad)) {
      if (n_binds < 32) binds[n_binds++] = val;
    } else if (cli_opt(argc, argv, &i, "--threads", &val, &bad)) {
      threads = (int)cli_int("--threads", val, 1, 4096, &bad);
    } else if (cli_opt(argc, argv, &i, "--passes", &val, &bad)) {
      passes = val;
    } else if (cli_opt(argc, argv, &i, "--layout", &val, &bad)) {
      layout = cli_layout(val, &bad);
    } else if (cli_opt(argc, argv, &i, "--budget", &val, &bad)) {
      budget = cli_real("--budget", val, 1e-3, 1e9, &bad);
    } else if (cli_opt(argc, argv, &i, "--margin", &val, &bad)) {
      margin = cli_real("--margin", val, 0, 99, &bad);
    } else if (cli_opt(argc, argv, &i, "--candidates", &val, &bad)) {
      max_cands = (int)cli_int("--candidates", val, 1, KILN_TUNE_MAX_CANDS, &bad);
    } else if (!strcmp(argv[i], "--dry-run")) {
      dry = true;
    } else if (argv[i][0] == '-') {
      return cli_usage_error("tune", "unknown option '%s'", argv[i]);
    } else if (!model) {
      model = argv[i];
    } else {
      return cli_usage_error("tune", "more than one model given");
    }
    if (bad) return 2;
  }
  if (!model) return cli_usage_error("tune", "no model given");
  margin /= 100;

  kiln_err e = {0};
  kiln_graph *g = NULL;
  if (cli_load_model(model, binds, n_binds, &g, &e)) return cli_fail(&e);
  if (passes && *passes) {
    kiln_evaluator ev = kiln_ref_evaluator();
    kiln_pass_ctx pcx = {.mode = KILN_MODE_INFERENCE, .ev = &ev,
                         .vector_floats = kiln_host_vector_floats(), .layout = (int)layout};
    if (kiln_run_pipeline(g, strcmp(passes, "default") ? passes : NULL, &pcx, NULL, &e)) {
      ir_graph_free(g);
      return cli_fail(&e);
    }
  }
  /* Compile the whole model once, recording every convolution the generator plans (the
   * model's own blocks: the recording table holds no entries). */
  kiln_tune_table *rec = kiln_tune_new(), *table = NULL;
  kiln_program *prog = NULL;
  weighted *order = NULL;
  char tmp_cache[4096] = "";
  result *res = NULL;
  int rc = 1;
  if (!rec) {
    ir_graph_free(g);
    kiln_errf(&e, KILN_ERR_NOMEM, "out of memory");
    return cli_fail(&e);
  }
  rec->record = true;
  kiln_compile_opts co = {.threads = threads, .allow_fallback = true, .tune = rec};
  if (kiln_compile(g, &co, &prog, &e)) goto done; /* takes g */
  if (rec->record_oom) {
    kiln_errf(&e, KILN_ERR_NOMEM, "out of memory");
    goto done;
  }
  const char *cpu = kiln_jit_cpu(prog->jit), *features = kiln_jit_features(prog->jit);
  kiln_cache cache;
  kiln_cache_open(&cache, NULL, cpu, features);
  char path[4300] = "";
  if (cache.dir) kiln_tune_path(cache.dir, cpu, features, path, sizeof path);
  kiln_cache_close(&cache);
  int64_t n = rec->n_recs;
  printf("%s: %lld distinct convolution%s, %d thread%s%s%s\n", model, (long long)n,
         n == 1 ? "" : "s", threads, threads == 1 ? "" : "s", passes ? ", passes " : "",
         passes ? passes : "");
  if (!path[0] && !dry) {
    kiln_errf(&e, KILN_ERR_IO, "no kernel cache directory to keep the tuning table in "
                               "($KILN_CACHE_DIR is empty, or the directory is not writable)");
    goto done;
  }
  order = calloc((size_t)(n ? n : 1), sizeof *order);
  res = calloc((size_t)(n ? n : 1), sizeof *res);
  if (!order || !res) {
    kiln_errf(&e, KILN_ERR_NOMEM, "out of memory");
    goto done;
  }
  for (int i = 0; i < n; i++)
    order[i] = (weighted){i, (double)rec->recs[i].macs * rec->recs[i].count};
  qsort(order, (size_t)n, sizeof *order, cmp_weight);
  char lbl[160], b1[32], b2[32];
  if (dry) {
    printf("\n%-32s %-28s %3s %8s  %s\n", "node", "convolution (C>OC HxW k s)", "n", "model",
           "candidates (cost model's ranking, then neighbours)");
    for (int64_t j = 0; j < n; j++) {
      const kiln_tune_record *r = &rec->recs[order[j].i];
      blk_str(r->model, b1, sizeof b1);
      printf("%-32.32s %-28.28s %3d %8s ", prog->g->nodes[r->node].name, r->shape, r->count, b1);
      for (int c = 1; c < r->n_cands && c < max_cands; c++) {
        blk_str(r->cands[c], b2, sizeof b2);
        printf(" %s", b2);
      }
      printf("\n");
    }
    printf("\ntable: %s (dry run: nothing timed or saved)\n", path[0] ? path : "(none)");
    rc = 0;
    goto done;
  }
  printf("budget %.0f s, margin %.0f%%, up to %d blocks per convolution; table %s\n\n", budget,
         margin * 100, max_cands, path);
  printf("%-32s %-28s %3s %8s %9s %8s %9s %8s %5s\n", "node", "convolution (C>OC HxW k s)", "n",
         "model", "ms", "tuned", "ms", "speedup", "tried");
  fflush(stdout);
  const char *tmp = getenv("TMPDIR");
  snprintf(tmp_cache, sizeof tmp_cache, "%s/kiln-tune-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(tmp_cache)) {
    kiln_errf(&e, KILN_ERR_IO, "cannot make a temporary directory %s", tmp_cache);
    tmp_cache[0] = 0;
    goto done;
  }
  tuner tn = {.src = prog->g, .threads = threads, .target_s = 0.05, .cache_dir = tmp_cache};
  double t0 = now_s(CLOCK_MONOTONIC), sum_model = 0, sum_best = 0;
  int kept = 0, tuned = 0;
  for (int64_t j = 0; j < n; j++) {
    const kiln_tune_record *r = &rec->recs[order[j].i];
    const kiln_node *nd = &prog->g->nodes[r->node];
    ir_node_label(nd, lbl, sizeof lbl);
    tn.node_label = lbl;
    double left = budget - (now_s(CLOCK_MONOTONIC) - t0);
    result *s = &res[order[j].i];
    blk_str(r->model, b1, sizeof b1);
    if (left <= 0) {
      printf("%-32.32s %-28.28s %3d %8s  (not tuned: budget spent)\n", nd->name, r->shape,
             r->count, b1);
      continue;
    }
    if (tune_one(&tn, r, max_cands, margin, left / (double)(n - j), s, &e)) {
      kiln_err_prefix(&e, "tuning %s", lbl);
      goto done;
    }
    tuned++;
    kept += s->kept;
    sum_model += s->ms_model * r->count;
    sum_best += s->ms_best * r->count;
    blk_str(s->best, b2, sizeof b2);
    printf("%-32.32s %-28.28s %3d %8s %9.3f %8s %9.3f %7.3fx %5d%s\n", nd->name, r->shape,
           r->count, b1, s->ms_model, s->kept ? b2 : "-", s->ms_best,
           s->ms_best > 0 ? s->ms_model / s->ms_best : 1.0, s->tried,
           s->note ? " (budget)" : "");
    fflush(stdout);
  }
  printf("\n%d of %lld convolutions tuned in %.1f s; %d faster than the cost model's block by "
         "%.0f%% or more\n",
         tuned, (long long)n, now_s(CLOCK_MONOTONIC) - t0, kept, margin * 100);
  if (tuned)
    printf("their kernels, times their count: %.3f ms with the model's blocks, %.3f ms tuned "
           "(%.3fx)\n",
           sum_model, sum_best, sum_best > 0 ? sum_model / sum_best : 1.0);
  /* merge into the table on disk: other models' entries stay */
  if (kiln_tune_load(path, cpu, features, &table, &e)) goto done;
  if (table->warning[0]) fprintf(stderr, "kiln tune: warning: %s\n", table->warning);
  int64_t before = table->n_entries;
  for (int64_t j = 0; j < n; j++) {
    const kiln_tune_record *r = &rec->recs[j];
    if (!res[j].tuned) continue;
    if (!res[j].kept) kiln_tune_remove(table, r->key);
    else if (kiln_tune_set(table, r->key, res[j].best, res[j].ms_model, res[j].ms_best, &e))
      goto done;
  }
  if (kiln_tune_save(table, path, cpu, features, &e)) goto done;
  printf("saved %s: %lld entries (%lld before)\n", path, (long long)table->n_entries,
         (long long)before);
  rc = 0;
done:
  if (rc) cli_fail(&e);
  if (tmp_cache[0]) remove_dir(tmp_cache);
  free(order);
  free(res);
  kiln_tune_free(table);
  kiln_tune_free(rec);
  kiln_program_free(prog);
  return rc;
}
