/* print.c — the IR's text form: one line per node, with shapes.
 *
 *   %y[1,64,56,56]:f32 = Conv(%x, %w, %b) {pads=[1,1,1,1], strides=[1,1]}  # conv1
 *
 * The format is stable: pass tests compare it with golden text. */
#include <stdio.h>
#include <string.h>

#include "ir/graph.h"

static const char *dt_short(kiln_dtype t) {
  switch (t) {
  case KILN_F32: return "f32";
  case KILN_I32: return "i32";
  case KILN_I64: return "i64";
  case KILN_BOOL: return "bool";
  default: return "?";
  }
}

static void print_value_type(const kiln_value *v, FILE *f) {
  char buf[200];
  if (!v->typed) {
    fputs(":?", f);
    return;
  }
  fprintf(f, "%s:%s", kiln_shape_str(&v->shape, buf, sizeof buf), dt_short(v->dtype));
}

static void print_attr(const kiln_attr *a, FILE *f) {
  fprintf(f, "%s=", a->name);
  switch (a->kind) {
  case KILN_ATTR_FLOAT: fprintf(f, "%g", a->f); break;
  case KILN_ATTR_INT: fprintf(f, "%lld", (long long)a->i); break;
  case KILN_ATTR_STRING: fprintf(f, "\"%s\"", a->s ? a->s : ""); break;
  case KILN_ATTR_INTS:
    fputc('[', f);
    for (int64_t i = 0; i < a->n; i++) fprintf(f, i ? ",%lld" : "%lld", (long long)a->ints[i]);
    fputc(']', f);
    break;
  case KILN_ATTR_FLOATS:
    fputc('[', f);
    for (int64_t i = 0; i < a->n; i++) fprintf(f, i ? ",%g" : "%g", a->floats[i]);
    fputc(']', f);
    break;
  case KILN_ATTR_STRINGS:
    fputc('[', f);
    for (int64_t i = 0; i < a->n; i++) fprintf(f, i ? ",\"%s\"" : "\"%s\"", a->strings[i]);
    fputc(']', f);
    break;
  case KILN_ATTR_TENSOR: {
    char buf[200];
    fprintf(f, "tensor%s:%s", a->t ? kiln_shape_str(&a->t->shape, buf, sizeof buf) : "[]",
            a->t ? dt_short(a->t->dtype) : "?");
    break;
  }
  default: fprintf(f, "<kind %d>", a->kind); break;
  }
}

void ir_print_node(const kiln_graph *g, const kiln_node *n, FILE *f) {
  for (int o = 0; o < n->n_out; o++) {
    if (o) fputs(", ", f);
    const kiln_value *v = ir_out(g, n, o);
    if (!v) {
      fputs("_", f);
      continue;
    }
    fprintf(f, "%%%s", v->name);
    print_value_type(v, f);
  }
  fprintf(f, " = %s%s%s(", n->def->domain[0] ? n->def->domain : "",
          n->def->domain[0] ? "." : "", n->def->name);
  for (int i = 0; i < n->n_in; i++) {
    const kiln_value *v = ir_in(g, n, i);
    fprintf(f, i ? ", %s%s" : "%s%s", v ? "%" : "_", v ? v->name : "");
  }
  fputc(')', f);
  if (n->n_attrs) {
    /* attributes sorted by name so the text does not depend on file order */
    int order[64], k = n->n_attrs < 64 ? n->n_attrs : 64;
    for (int i = 0; i < k; i++) order[i] = i;
    for (int i = 1; i < k; i++)
      for (int j = i; j > 0 && strcmp(n->attrs[order[j - 1]].name, n->attrs[order[j]].name) > 0; j--) {
        int t = order[j];
        order[j] = order[j - 1];
        order[j - 1] = t;
      }
    fputs(" {", f);
    for (int i = 0; i < k; i++) {
      if (i) fputs(", ", f);
      print_attr(&n->attrs[order[i]], f);
    }
    fputc('}', f);
  }
  if (n->name && n->name[0]) fprintf(f, "  # %s", n->name);
  fputc('\n', f);
}

void ir_print(const kiln_graph *g, FILE *f) {
  fprintf(f, "graph %s(", g->name ? g->name : "");
  for (int i = 0; i < g->n_inputs; i++) {
    const kiln_value *v = &g->values[g->inputs[i]];
    fprintf(f, i ? ", %%%s" : "%%%s", v->name);
    print_value_type(v, f);
  }
  fputs(") {\n", f);
  int64_t n_const = 0, const_elems = 0;
  for (int64_t i = 0; i < g->n_values; i++)
    if (g->values[i].data && g->values[i].producer < 0) {
      n_const++;
      const_elems += g->values[i].data->numel;
    }
  if (n_const) fprintf(f, "  # %lld constants, %lld elements\n", (long long)n_const, (long long)const_elems);
  for (int64_t i = 0; i < g->n_nodes; i++) {
    if (g->nodes[i].dead) continue;
    fputs("  ", f);
    ir_print_node(g, &g->nodes[i], f);
  }
  fputs("  return ", f);
  for (int i = 0; i < g->n_outputs; i++) {
    const kiln_value *v = &g->values[g->outputs[i]];
    fprintf(f, i ? ", %%%s" : "%%%s", v->name);
    print_value_type(v, f);
  }
  fputs("\n}\n", f);
}
