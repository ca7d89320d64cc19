/* pass.c — the pass registry, the pipeline runner and small rewrite helpers. */
#include "passes/pass.h"

#include <string.h>
#include <time.h>

static const kiln_pass_info pass_table[] = {
#define PASS(sym, name, summary) {name, pass_##sym, summary},
#include "passes/passes.def"
#undef PASS
};

const kiln_pass_info *kiln_pass_list(int *count) {
  *count = (int)(sizeof pass_table / sizeof pass_table[0]);
  return pass_table;
}

const kiln_pass_info *kiln_pass_find(const char *name) {
  for (size_t i = 0; i < sizeof pass_table / sizeof pass_table[0]; i++)
    if (!strcmp(pass_table[i].name, name)) return &pass_table[i];
  return NULL;
}

/* Passes named here but not (yet) registered are skipped by the default
 * pipelines, so the defaults grow as passes land. */
static const char *const default_inference =
    "eliminate-identity,fold,dce,fold-bn,fuse-conv-act,fuse-conv-add-relu,fuse-upsample-conv,"
    "fuse-gap-gemm,fuse-elementwise,dce,layout-blocked";
/* In training mode the fusions whose ops have no gradient rule (fuse-elementwise) run only on
 * graphs that already hold their backward pass (kiln_pass_ctx.differentiated). */
static const char *const default_training =
    "eliminate-identity,fold,dce,fuse-train-bn,fuse-train-upsample-conv,fuse-elementwise,dce";

const char *kiln_default_pipeline(kiln_pass_mode mode) {
  return mode == KILN_MODE_TRAINING ? default_training : default_inference;
}

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static kiln_code after_pass(kiln_graph *g, kiln_pass_ctx *cx, const char *name, kiln_err *e) {
  KILN_TRY(ir_toposort(g, e));
  KILN_TRY(ir_compact(g, e));
#ifndef NDEBUG
  bool verify = true;
#else
  bool verify = cx->verify;
#endif
  if (verify && ir_verify(g, e)) {
    kiln_err_prefix(e, "after pass %s (a compiler bug)", name);
    return e->code;
  }
  if (ir_infer(g, cx->ev, e)) {
    kiln_err_prefix(e, "after pass %s", name);
    return e->code;
  }
  return KILN_OK;
}

kiln_code kiln_run_pipeline(kiln_graph *g, const char *pipeline, kiln_pass_ctx *cx,
                            kiln_pipeline_result *res, kiln_err *e) {
  bool is_default = !pipeline || !*pipeline;
  if (is_default) pipeline = kiln_default_pipeline(cx->mode);
  char buf[1024];
  if (strlen(pipeline) >= sizeof buf) return kiln_errf(e, KILN_ERR_INVALID, "pipeline too long");
  strcpy(buf, pipeline);
  if (res) memset(res, 0, sizeof *res);
  char *save = NULL;
  for (char *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
    const kiln_pass_info *p = kiln_pass_find(tok);
    if (!p) {
      if (is_default) continue;
      char known[768] = "";
      int n;
      const kiln_pass_info *all = kiln_pass_list(&n);
      for (int i = 0; i < n; i++) {
        strncat(known, i ? ", " : "", sizeof known - strlen(known) - 1);
        strncat(known, all[i].name, sizeof known - strlen(known) - 1);
      }
      return kiln_errf(e, KILN_ERR_INVALID, "unknown pass '%s' (known: %s)", tok, known);
    }
    kiln_pass_stats st;
    memset(&st, 0, sizeof st);
    double t0 = now_s();
    kiln_code rc = p->fn(g, cx, &st, e);
    if (!rc) rc = after_pass(g, cx, p->name, e);
    st.seconds = now_s() - t0;
    if (rc) {
      kiln_err_prefix(e, "pass %s", p->name);
      return rc;
    }
    if (res && res->n < 64) {
      res->pass[res->n] = p;
      res->stats[res->n++] = st;
    }
    if (cx->print_after && cx->print_to && (!strcmp(cx->print_after, "all") || !strcmp(cx->print_after, p->name))) {
      fprintf(cx->print_to, "; after %s (%lld changes)\n", p->name, (long long)st.changes);
      ir_print(g, cx->print_to);
    }
  }
  return KILN_OK;
}

bool pass_is_output(const kiln_graph *g, int v) {
  for (int i = 0; i < g->n_outputs; i++)
    if (g->outputs[i] == v) return true;
  return false;
}

int pass_single_user(const kiln_graph *g, int v) {
  int user = -1;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] == v) {
        if (user >= 0 && user != (int)i) return -1;
        user = (int)i;
      }
  }
  return user;
}

void pass_replace_uses(kiln_graph *g, int from, int to) {
  for (int64_t i = 0; i < g->n_nodes; i++) {
    kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < n->n_in; k++)
      if (n->in[k] == from) n->in[k] = to;
  }
  for (int i = 0; i < g->n_outputs; i++)
    if (g->outputs[i] == from) {
      g->outputs[i] = to;
      g->values[from].is_output = false;
      g->values[to].is_output = true;
    }
}

kiln_node *pass_producer_of(const kiln_graph *g, int v, kiln_op op) {
  if (v < 0) return NULL;
  int p = g->values[v].producer;
  if (p < 0 || g->nodes[p].dead || g->nodes[p].op != op) return NULL;
  return &g->nodes[p];
}
