/* cmd_info.c — `kiln info`: a model's inputs and outputs, op histogram,
 * parameters and MACs, per layer and totalled by sub-network.
 *
 * Sub-networks are named by the prefix of node names before the first '/'
 * (kiln's model builder names nodes fnet/..., cnet/..., spn/...); models from
 * elsewhere are reported as one group. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codegen/compile.h"
#include "tools/cli.h"

static void usage(FILE *f) {
  fprintf(f, "usage: kiln info MODEL.onnx [--layers] [--backend jit] [--bind NAME=SIZE]...\n\n"
             "Prints the model's inputs and outputs with shapes, an op histogram, parameter\n"
             "count and multiply-accumulates (MACs) per image batch, with totals by sub-network.\n"
             "  --layers           one line per node: output shape, parameters, MACs\n"
             "  --bind NAME=SIZE   give a symbolic input dimension (e.g. batch) a size\n"
             "  --backend jit      also list the ops that have no compiled kernel (they would\n"
             "                     run on reference kernels); the goal is none\n");
}

typedef struct group_total {
  char name[64];
  int64_t params, macs;
  int nodes;
} group_total;

static void group_of(const kiln_node *n, char *out, size_t len) {
  const char *slash = n->name ? strchr(n->name, '/') : NULL;
  if (!slash || (size_t)(slash - n->name) >= len) {
    snprintf(out, len, "%s", "(model)");
    return;
  }
  memcpy(out, n->name, (size_t)(slash - n->name));
  out[slash - n->name] = 0;
}

/* Parameters a node owns: elements of initializer inputs it reads.  Each initializer
 * is credited to its first reader so shared weights count once. */
static int64_t node_params(const kiln_graph *g, const kiln_node *n, char *credited) {
  int64_t p = 0;
  for (int k = 0; k < n->n_in; k++) {
    int v = n->in[k];
    if (v < 0 || credited[v]) continue;
    const kiln_value *val = &g->values[v];
    /* Parameters in torchvision's sense: float initializers read in a differentiable
     * slot (BatchNormalization's running statistics are buffers, not parameters). */
    bool nondiff = k < 32 && ((n->def->nondiff_inputs | n->def->shape_inputs) & (1u << k));
    if (val->is_initializer && val->data && val->dtype == KILN_F32 && !nondiff) {
      credited[v] = 1;
      p += val->data->numel;
    }
  }
  return p;
}

static void human(double x, char *buf, size_t n) {
  if (x >= 1e9)
    snprintf(buf, n, "%.3f G", x / 1e9);
  else if (x >= 1e6)
    snprintf(buf, n, "%.3f M", x / 1e6);
  else if (x >= 1e3)
    snprintf(buf, n, "%.3f K", x / 1e3);
  else
    snprintf(buf, n, "%.0f", x);
}

int cmd_info(int argc, char **argv) {
  const char *model = NULL, *val;
  const char *binds[32];
  int n_binds = 0;
  bool layers = false, bad = false, jit = false;
  for (int i = 1; i < argc; i++) {
    if (cli_is_help(argv[i])) {
      usage(stdout);
      return 0;
    } else if (cli_opt(argc, argv, &i, "--bind", &val, &bad)) {
      if (n_binds < 32) binds[n_binds++] = val;
    } else if (cli_opt(argc, argv, &i, "--backend", &val, &bad)) {
      if (strcmp(val, "jit") && strcmp(val, "ref")) return cli_usage_error("info", "unknown backend '%s'", val);
      jit = !strcmp(val, "jit");
    } else if (!strcmp(argv[i], "--layers")) {
      layers = true;
    } else if (argv[i][0] == '-') {
      return cli_usage_error("info", "unknown option '%s'", argv[i]);
    } else if (!model) {
      model = argv[i];
    } else {
      return cli_usage_error("info", "more than one model given");
    }
    if (bad) return 2;
  }
  if (!model) return cli_usage_error("info", "no model given");
  kiln_err e = {0};
  kiln_graph *g = NULL;
  if (cli_load_model(model, binds, n_binds, &g, &e)) return cli_fail(&e);

  char buf[256], sbuf[64];
  printf("model: %s\n", model);
  if (g->producer_name && g->producer_name[0])
    printf("producer: %s %s\n", g->producer_name, g->producer_version ? g->producer_version : "");
  printf("opset:");
  for (int i = 0; i < g->n_opsets; i++)
    printf(" %s=%lld", g->opsets[i].domain[0] ? g->opsets[i].domain : "ai.onnx",
           (long long)g->opsets[i].version);
  printf("\ninputs:\n");
  for (int i = 0; i < g->n_inputs; i++) {
    const kiln_value *v = &g->values[g->inputs[i]];
    printf("  %-24s %-8s %s\n", v->name, kiln_dtype_name(v->dtype), kiln_shape_str(&v->shape, buf, sizeof buf));
  }
  printf("outputs:\n");
  for (int i = 0; i < g->n_outputs; i++) {
    const kiln_value *v = &g->values[g->outputs[i]];
    printf("  %-24s %-8s %s\n", v->name, kiln_dtype_name(v->dtype), kiln_shape_str(&v->shape, buf, sizeof buf));
  }

  int hist[KILN_OP_COUNT] = {0};
  group_total groups[32];
  int n_groups = 0;
  int64_t total_params = 0, total_macs = 0;
  char *credited = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
  if (!credited) {
    ir_graph_free(g);
    fprintf(stderr, "kiln: out of memory\n");
    return 1;
  }
  if (layers) printf("\nlayers:\n  %-40s %-20s %-22s %12s %14s\n", "node", "op", "output", "params", "MACs");
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    hist[n->op]++;
    int64_t p = node_params(g, n, credited);
    int64_t m = n->def->macs ? n->def->macs(g, n) : 0;
    total_params += p;
    total_macs += m;
    char grp[64];
    group_of(n, grp, sizeof grp);
    int gi;
    for (gi = 0; gi < n_groups; gi++)
      if (!strcmp(groups[gi].name, grp)) break;
    if (gi == n_groups && n_groups < 32) {
      memset(&groups[gi], 0, sizeof groups[gi]);
      snprintf(groups[gi].name, sizeof groups[gi].name, "%s", grp);
      n_groups++;
    }
    if (gi < n_groups) {
      groups[gi].params += p;
      groups[gi].macs += m;
      groups[gi].nodes++;
    }
    if (layers) {
      const kiln_value *o = ir_out(g, n, 0);
      printf("  %-40.40s %-20s %-22s %12lld %14lld\n", n->name && n->name[0] ? n->name : "(unnamed)",
             n->def->name, o ? kiln_shape_str(&o->shape, buf, sizeof buf) : "-", (long long)p,
             (long long)m);
    }
  }
  free(credited);
  printf("\nops (%lld nodes):\n", (long long)g->n_nodes);
  for (int op = 1; op < KILN_OP_COUNT; op++)
    if (hist[op]) printf("  %-28s %d\n", kiln_op_name((kiln_op)op), hist[op]);
  int64_t batch = g->n_inputs && g->values[g->inputs[0]].shape.rank ? g->values[g->inputs[0]].shape.d[0] : 1;
  if (batch < 1) batch = 1;
  human((double)total_params, sbuf, sizeof sbuf);
  printf("\nparameters: %lld (%s)\n", (long long)total_params, sbuf);
  human((double)total_macs, sbuf, sizeof sbuf);
  printf("MACs: %lld (%sMAC per run", (long long)total_macs, sbuf);
  human((double)total_macs / (double)batch, sbuf, sizeof sbuf);
  printf(", %sMAC per image at batch %lld)\n", sbuf, (long long)batch);
  if (n_groups > 1) {
    printf("\nby sub-network:\n  %-10s %8s %16s %14s %8s\n", "name", "nodes", "parameters", "GMAC/image", "share");
    for (int i = 0; i < n_groups; i++)
      printf("  %-10s %8d %16lld %14.3f %7.1f%%\n", groups[i].name, groups[i].nodes,
             (long long)groups[i].params, (double)groups[i].macs / (double)batch / 1e9,
             total_macs ? 100.0 * (double)groups[i].macs / (double)total_macs : 0.0);
  }
  if (jit) {
    int per_op[KILN_OP_COUNT];
    int total = kiln_list_fallbacks(g, per_op);
    if (!total)
      printf("\njit: every node has a compiled kernel (no reference fallback)\n");
    else {
      printf("\njit: %d nodes have no compiled kernel and would run on reference kernels:\n", total);
      for (int op = 1; op < KILN_OP_COUNT; op++)
        if (per_op[op]) printf("  %-28s %d\n", kiln_op_name((kiln_op)op), per_op[op]);
    }
  }
  ir_graph_free(g);
  return 0;
}
