/* graph.c — construction, attributes and queries of the IR graph. */
#include "ir/graph.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

kiln_graph *ir_graph_new(void) {
  kiln_graph *g = kiln_calloc(1, sizeof *g);
  return g;
}

void ir_attr_free(kiln_attr *a) {
  kiln_free(a->name);
  kiln_free(a->s);
  kiln_tensor_free(a->t);
  kiln_free(a->floats);
  kiln_free(a->ints);
  if (a->strings)
    for (int64_t i = 0; i < a->n; i++) kiln_free(a->strings[i]);
  kiln_free(a->strings);
  kiln_free(a->opaque);
  memset(a, 0, sizeof *a);
}

kiln_code ir_attr_clone(const kiln_attr *a, kiln_attr *o, kiln_err *e) {
  memset(o, 0, sizeof *o);
  *o = *a;
  o->name = NULL;
  o->s = NULL;
  o->t = NULL;
  o->floats = NULL;
  o->ints = NULL;
  o->strings = NULL;
  o->opaque = NULL;
  o->name = kiln_strdup(a->name);
  if (!o->name) goto oom;
  if (a->s) {
    o->s = kiln_malloc(a->s_len + 1);
    if (!o->s) goto oom;
    memcpy(o->s, a->s, a->s_len + 1);
  }
  if (a->t && kiln_tensor_clone(a->t, &o->t, e)) goto fail;
  if (a->floats) {
    o->floats = kiln_malloc(sizeof(double) * (size_t)(a->n ? a->n : 1));
    if (!o->floats) goto oom;
    memcpy(o->floats, a->floats, sizeof(double) * (size_t)a->n);
  }
  if (a->ints) {
    o->ints = kiln_malloc(sizeof(int64_t) * (size_t)(a->n ? a->n : 1));
    if (!o->ints) goto oom;
    memcpy(o->ints, a->ints, sizeof(int64_t) * (size_t)a->n);
  }
  if (a->strings) {
    o->strings = kiln_calloc((size_t)(a->n ? a->n : 1), sizeof(char *));
    if (!o->strings) goto oom;
    for (int64_t i = 0; i < a->n; i++)
      if (!(o->strings[i] = kiln_strdup(a->strings[i]))) goto oom;
  }
  if (a->opaque) {
    o->opaque = kiln_malloc(a->opaque_len ? a->opaque_len : 1);
    if (!o->opaque) goto oom;
    memcpy(o->opaque, a->opaque, a->opaque_len);
  }
  return KILN_OK;
oom:
  kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
fail:
  ir_attr_free(o);
  return e->code;
}

void ir_graph_free(kiln_graph *g) {
  if (!g) return;
  for (int64_t i = 0; i < g->n_values; i++) {
    kiln_value *v = &g->values[i];
    kiln_free(v->name);
    kiln_free(v->doc);
    for (int k = 0; k < KILN_MAX_RANK; k++) kiln_free(v->sym[k]);
    kiln_tensor_free(v->data);
  }
  for (int64_t i = 0; i < g->n_nodes; i++) {
    kiln_node *n = &g->nodes[i];
    kiln_free(n->name);
    kiln_free(n->domain);
    kiln_free(n->doc);
    kiln_free(n->in);
    kiln_free(n->out);
    for (int a = 0; a < n->n_attrs; a++) ir_attr_free(&n->attrs[a]);
    kiln_free(n->attrs);
  }
  for (int i = 0; i < g->n_meta; i++) {
    kiln_free(g->meta_keys[i]);
    kiln_free(g->meta_vals[i]);
  }
  kiln_free(g->meta_keys);
  kiln_free(g->meta_vals);
  for (int i = 0; i < g->n_opsets; i++) kiln_free(g->opsets[i].domain);
  kiln_free(g->opsets);
  kiln_free(g->values);
  kiln_free(g->nodes);
  kiln_free(g->inputs);
  kiln_free(g->outputs);
  kiln_free(g->name);
  kiln_free(g->producer_name);
  kiln_free(g->producer_version);
  kiln_free(g->doc);
  kiln_free(g->source_path);
  kiln_free(g->name_index);
  kiln_free(g);
}

/* ---- name index: open addressing over value ids (-1 = empty) ---- */
static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

static kiln_code index_rebuild(kiln_graph *g, int64_t cap, kiln_err *e) {
  int *idx = kiln_malloc((size_t)cap * sizeof *idx);
  if (!idx) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory (name index)");
  for (int64_t i = 0; i < cap; i++) idx[i] = -1;
  for (int64_t v = 0; v < g->n_values; v++) {
    uint64_t h = hash_str(g->values[v].name) & (uint64_t)(cap - 1);
    while (idx[h] >= 0) h = (h + 1) & (uint64_t)(cap - 1);
    idx[h] = (int)v;
  }
  kiln_free(g->name_index);
  g->name_index = idx;
  g->name_index_cap = cap;
  return KILN_OK;
}

int ir_find_value(const kiln_graph *g, const char *name) {
  if (!g->name_index || !name) return -1;
  uint64_t mask = (uint64_t)(g->name_index_cap - 1);
  for (uint64_t h = hash_str(name) & mask;; h = (h + 1) & mask) {
    int v = g->name_index[h];
    if (v < 0) return -1;
    if (strcmp(g->values[v].name, name) == 0) return v;
  }
}

kiln_code ir_unique_name(kiln_graph *g, const char *stem, char **out, kiln_err *e) {
  char buf[512];
  snprintf(buf, sizeof buf, "%s", stem && *stem ? stem : "v");
  for (long k = 1; ir_find_value(g, buf) >= 0; k++)
    snprintf(buf, sizeof buf, "%s_%ld", stem && *stem ? stem : "v", k);
  *out = kiln_strdup(buf);
  if (!*out) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  return KILN_OK;
}

kiln_code ir_add_value(kiln_graph *g, const char *name, int *id, kiln_err *e) {
  char *nm = NULL;
  if (name) {
    if (ir_find_value(g, name) >= 0)
      return kiln_errf(e, KILN_ERR_INVALID, "value '%s' is defined more than once", name);
    nm = kiln_strdup(name);
    if (!nm) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  } else {
    char stem[32];
    snprintf(stem, sizeof stem, "t%lld", (long long)g->n_values);
    KILN_TRY(ir_unique_name(g, stem, &nm, e));
  }
  if (g->n_values >= INT32_MAX - 1) {
    kiln_free(nm);
    return kiln_errf(e, KILN_ERR_LIMIT, "too many values");
  }
  kiln_code rc = kiln_grow((void **)&g->values, &g->cap_values, g->n_values + 1, sizeof(kiln_value), e);
  if (rc) {
    kiln_free(nm);
    return rc;
  }
  kiln_value *v = &g->values[g->n_values];
  memset(v, 0, sizeof *v);
  v->name = nm;
  v->producer = -1;
  *id = (int)g->n_values++;
  /* keep the load factor under 1/2 */
  if (g->n_values * 2 > g->name_index_cap) {
    int64_t cap = g->name_index_cap ? g->name_index_cap * 2 : 64;
    while (g->n_values * 2 > cap) cap *= 2;
    return index_rebuild(g, cap, e);
  }
  uint64_t mask = (uint64_t)(g->name_index_cap - 1);
  uint64_t h = hash_str(nm) & mask;
  while (g->name_index[h] >= 0) h = (h + 1) & mask;
  g->name_index[h] = *id;
  return KILN_OK;
}

kiln_code ir_add_node(kiln_graph *g, kiln_op op, const char *name, const int *in, int n_in,
                      const int *out, int n_out, int *node_id, kiln_err *e) {
  const kiln_op_def *def = kiln_op_get(op);
  assert(def);
  if (g->n_nodes >= KILN_MAX_NODES)
    return kiln_errf(e, KILN_ERR_LIMIT, "graph has more than %d nodes", KILN_MAX_NODES);
  for (int i = 0; i < n_out; i++)
    if (out[i] >= 0 && g->values[out[i]].producer >= 0)
      return kiln_errf(e, KILN_ERR_INVALID, "value '%s' is produced by more than one node",
                       g->values[out[i]].name);
  KILN_TRY(kiln_grow((void **)&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof(kiln_node), e));
  kiln_node *n = &g->nodes[g->n_nodes];
  memset(n, 0, sizeof *n);
  n->op = op;
  n->def = def;
  n->name = kiln_strdup(name ? name : "");
  n->domain = kiln_strdup(def->domain);
  n->in = kiln_malloc(sizeof(int) * (size_t)(n_in ? n_in : 1));
  n->out = kiln_malloc(sizeof(int) * (size_t)(n_out ? n_out : 1));
  if (!n->name || !n->domain || !n->in || !n->out) {
    kiln_free(n->name);
    kiln_free(n->domain);
    kiln_free(n->in);
    kiln_free(n->out);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  n->n_in = n_in;
  n->n_out = n_out;
  if (n_in) memcpy(n->in, in, sizeof(int) * (size_t)n_in);
  if (n_out) memcpy(n->out, out, sizeof(int) * (size_t)n_out);
  n->opset = (int)ir_get_opset(g, def->domain);
  if (n->opset == 0 && def->domain[0] == 0) n->opset = 17;
  int id = (int)g->n_nodes++;
  for (int i = 0; i < n_out; i++)
    if (out[i] >= 0) {
      g->values[out[i]].producer = id;
      g->values[out[i]].producer_slot = i;
    }
  if (node_id) *node_id = id;
  return KILN_OK;
}

kiln_code ir_add_const(kiln_graph *g, const char *name, kiln_tensor *t, bool initializer, int *id,
                       kiln_err *e) {
  kiln_code rc = ir_add_value(g, name, id, e);
  if (rc) {
    kiln_tensor_free(t);
    return rc;
  }
  kiln_value *v = &g->values[*id];
  v->data = t;
  v->dtype = t->dtype;
  v->shape = t->shape;
  v->typed = true;
  v->is_initializer = initializer;
  return KILN_OK;
}

kiln_code ir_add_input(kiln_graph *g, int value_id, kiln_err *e) {
  int *p = kiln_realloc(g->inputs, sizeof(int) * (size_t)(g->n_inputs + 1));
  if (!p) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  g->inputs = p;
  g->inputs[g->n_inputs++] = value_id;
  g->values[value_id].is_input = true;
  return KILN_OK;
}

kiln_code ir_add_output(kiln_graph *g, int value_id, kiln_err *e) {
  int *p = kiln_realloc(g->outputs, sizeof(int) * (size_t)(g->n_outputs + 1));
  if (!p) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  g->outputs = p;
  g->outputs[g->n_outputs++] = value_id;
  g->values[value_id].is_output = true;
  return KILN_OK;
}

static bool is_default_domain(const char *d) { return !d || !*d || strcmp(d, "ai.onnx") == 0; }

kiln_code ir_set_opset(kiln_graph *g, const char *domain, int64_t version, kiln_err *e) {
  for (int i = 0; i < g->n_opsets; i++)
    if ((is_default_domain(domain) && is_default_domain(g->opsets[i].domain)) ||
        strcmp(g->opsets[i].domain, domain ? domain : "") == 0) {
      g->opsets[i].version = version;
      return KILN_OK;
    }
  kiln_opset *p = kiln_realloc(g->opsets, sizeof *p * (size_t)(g->n_opsets + 1));
  if (!p) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  g->opsets = p;
  p[g->n_opsets].domain = kiln_strdup(domain ? domain : "");
  if (!p[g->n_opsets].domain) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  p[g->n_opsets].version = version;
  g->n_opsets++;
  return KILN_OK;
}

kiln_code ir_set_meta(kiln_graph *g, const char *key, const char *val, kiln_err *e) {
  char *v = kiln_strdup(val);
  if (!v) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  for (int i = 0; i < g->n_meta; i++)
    if (!strcmp(g->meta_keys[i], key)) {
      kiln_free(g->meta_vals[i]);
      g->meta_vals[i] = v;
      return KILN_OK;
    }
  char *k = kiln_strdup(key);
  char **nk = kiln_realloc(g->meta_keys, sizeof(char *) * (size_t)(g->n_meta + 1));
  if (nk) g->meta_keys = nk;
  char **nv = kiln_realloc(g->meta_vals, sizeof(char *) * (size_t)(g->n_meta + 1));
  if (nv) g->meta_vals = nv;
  if (!k || !nk || !nv) {
    kiln_free(k);
    kiln_free(v);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  g->meta_keys[g->n_meta] = k;
  g->meta_vals[g->n_meta++] = v;
  return KILN_OK;
}

const char *ir_get_meta(const kiln_graph *g, const char *key) {
  for (int i = 0; i < g->n_meta; i++)
    if (!strcmp(g->meta_keys[i], key)) return g->meta_vals[i];
  return NULL;
}

int64_t ir_get_opset(const kiln_graph *g, const char *domain) {
  for (int i = 0; i < g->n_opsets; i++)
    if ((is_default_domain(domain) && is_default_domain(g->opsets[i].domain)) ||
        strcmp(g->opsets[i].domain, domain ? domain : "") == 0)
      return g->opsets[i].version;
  return 0;
}

/* ---- attributes ---- */
kiln_code ir_push_attr(kiln_graph *g, int node, kiln_attr *a, kiln_err *e) {
  kiln_node *n = &g->nodes[node];
  for (int i = 0; i < n->n_attrs; i++)
    if (strcmp(n->attrs[i].name, a->name) == 0) {
      /* replace */
      ir_attr_free(&n->attrs[i]);
      n->attrs[i] = *a;
      return KILN_OK;
    }
  kiln_attr *p = kiln_realloc(n->attrs, sizeof *p * (size_t)(n->n_attrs + 1));
  if (!p) {
    ir_attr_free(a);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  n->attrs = p;
  n->attrs[n->n_attrs++] = *a;
  return KILN_OK;
}

static kiln_code attr_begin(kiln_attr *a, const char *name, kiln_attr_kind k, kiln_err *e) {
  memset(a, 0, sizeof *a);
  a->name = kiln_strdup(name);
  a->kind = k;
  if (!a->name) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  return KILN_OK;
}

kiln_code ir_set_attr_int(kiln_graph *g, int node, const char *name, int64_t v, kiln_err *e) {
  kiln_attr a;
  KILN_TRY(attr_begin(&a, name, KILN_ATTR_INT, e));
  a.i = v;
  return ir_push_attr(g, node, &a, e);
}

kiln_code ir_set_attr_float(kiln_graph *g, int node, const char *name, double v, kiln_err *e) {
  kiln_attr a;
  KILN_TRY(attr_begin(&a, name, KILN_ATTR_FLOAT, e));
  a.f = (float)v; /* ONNX floats are 32-bit: keep what a round trip would keep */
  return ir_push_attr(g, node, &a, e);
}

kiln_code ir_set_attr_str(kiln_graph *g, int node, const char *name, const char *v, kiln_err *e) {
  kiln_attr a;
  KILN_TRY(attr_begin(&a, name, KILN_ATTR_STRING, e));
  a.s = kiln_strdup(v);
  a.s_len = strlen(v);
  if (!a.s) {
    ir_attr_free(&a);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  return ir_push_attr(g, node, &a, e);
}

kiln_code ir_set_attr_ints(kiln_graph *g, int node, const char *name, const int64_t *v, int64_t n,
                           kiln_err *e) {
  kiln_attr a;
  KILN_TRY(attr_begin(&a, name, KILN_ATTR_INTS, e));
  a.ints = kiln_malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
  if (!a.ints) {
    ir_attr_free(&a);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  if (n) memcpy(a.ints, v, sizeof(int64_t) * (size_t)n);
  a.n = n;
  return ir_push_attr(g, node, &a, e);
}

kiln_code ir_set_attr_floats(kiln_graph *g, int node, const char *name, const double *v, int64_t n,
                             kiln_err *e) {
  kiln_attr a;
  KILN_TRY(attr_begin(&a, name, KILN_ATTR_FLOATS, e));
  a.floats = kiln_malloc(sizeof(double) * (size_t)(n ? n : 1));
  if (!a.floats) {
    ir_attr_free(&a);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  for (int64_t i = 0; i < n; i++) a.floats[i] = (float)v[i];
  a.n = n;
  return ir_push_attr(g, node, &a, e);
}

kiln_code ir_set_attr_tensor(kiln_graph *g, int node, const char *name, kiln_tensor *t, kiln_err *e) {
  kiln_attr a;
  kiln_code rc = attr_begin(&a, name, KILN_ATTR_TENSOR, e);
  if (rc) {
    kiln_tensor_free(t);
    return rc;
  }
  a.t = t;
  return ir_push_attr(g, node, &a, e);
}

const kiln_attr *ir_attr_find(const kiln_node *n, const char *name) {
  for (int i = 0; i < n->n_attrs; i++)
    if (strcmp(n->attrs[i].name, name) == 0) return &n->attrs[i];
  return NULL;
}

bool ir_attr_has(const kiln_node *n, const char *name) { return ir_attr_find(n, name) != NULL; }

static const kiln_attr_spec *spec_or_die(const kiln_node *n, const char *name) {
  const kiln_attr_spec *s = kiln_op_attr_spec(n->def, name);
  assert(s && "attribute read that is not in the op's schema");
  return s;
}

int64_t ir_attr_int(const kiln_node *n, const char *name) {
  const kiln_attr *a = ir_attr_find(n, name);
  if (a && a->kind == KILN_ATTR_INT) return a->i;
  return spec_or_die(n, name)->def_i;
}

double ir_attr_float(const kiln_node *n, const char *name) {
  const kiln_attr *a = ir_attr_find(n, name);
  if (a && a->kind == KILN_ATTR_FLOAT) return a->f;
  return spec_or_die(n, name)->def_f;
}

const char *ir_attr_str(const kiln_node *n, const char *name) {
  const kiln_attr *a = ir_attr_find(n, name);
  if (a && a->kind == KILN_ATTR_STRING) return a->s;
  const char *d = spec_or_die(n, name)->def_s;
  return d ? d : "";
}

int64_t ir_attr_ints(const kiln_node *n, const char *name, const int64_t **v) {
  const kiln_attr *a = ir_attr_find(n, name);
  if (a && a->kind == KILN_ATTR_INTS) {
    *v = a->ints;
    return a->n;
  }
  (void)spec_or_die(n, name);
  *v = NULL;
  return 0;
}

int64_t ir_attr_floats(const kiln_node *n, const char *name, const double **v) {
  const kiln_attr *a = ir_attr_find(n, name);
  if (a && a->kind == KILN_ATTR_FLOATS) {
    *v = a->floats;
    return a->n;
  }
  (void)spec_or_die(n, name);
  *v = NULL;
  return 0;
}

const kiln_tensor *ir_attr_tensor(const kiln_node *n, const char *name) {
  const kiln_attr *a = ir_attr_find(n, name);
  if (a && a->kind == KILN_ATTR_TENSOR) return a->t;
  (void)spec_or_die(n, name);
  return NULL;
}

/* ---- queries ---- */
kiln_value *ir_in(const kiln_graph *g, const kiln_node *n, int i) {
  if (i < 0 || i >= n->n_in || n->in[i] < 0) return NULL;
  return &g->values[n->in[i]];
}

kiln_value *ir_out(const kiln_graph *g, const kiln_node *n, int i) {
  if (i < 0 || i >= n->n_out || n->out[i] < 0) return NULL;
  return &g->values[n->out[i]];
}

const kiln_tensor *ir_in_const(const kiln_graph *g, const kiln_node *n, int i) {
  kiln_value *v = ir_in(g, n, i);
  return v ? v->data : NULL;
}

const char *ir_node_label(const kiln_node *n, char *buf, size_t len) {
  const char *op = n->def ? n->def->name : "?";
  if (n->name && n->name[0])
    snprintf(buf, len, "%s node '%s'", op, n->name);
  else
    snprintf(buf, len, "%s node (unnamed)", op);
  return buf;
}

int ir_use_count(const kiln_graph *g, int v) {
  int c = 0;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    const kiln_node *n = &g->nodes[i];
    if (n->dead) continue;
    for (int k = 0; k < n->n_in; k++) c += n->in[k] == v;
  }
  return c;
}

/* ---- shape inference helpers ---- */
kiln_code ir_set_output(kiln_graph *g, kiln_node *n, int slot, kiln_dtype dt, const kiln_shape *s,
                        kiln_err *e) {
  if (slot >= n->n_out || n->out[slot] < 0) return KILN_OK; /* omitted optional output */
  kiln_value *v = &g->values[n->out[slot]];
  int64_t bytes;
  for (int i = 0; i < s->rank; i++)
    if (s->d[i] < 0) {
      char buf[160];
      return kiln_errf(e, KILN_ERR_SHAPE, "output '%s' would have a negative dimension %s", v->name,
                       kiln_shape_str(s, buf, sizeof buf));
    }
  if (kiln_bytes_for(dt, s, &bytes, e)) {
    kiln_err_prefix(e, "output '%s'", v->name);
    return e->code;
  }
  v->dtype = dt;
  v->shape = *s;
  v->typed = true;
  return KILN_OK;
}

kiln_code ir_broadcast(const kiln_shape *a, const kiln_shape *b, kiln_shape *out, kiln_err *e) {
  int r = a->rank > b->rank ? a->rank : b->rank;
  kiln_shape o;
  memset(&o, 0, sizeof o);
  o.rank = r;
  for (int i = 0; i < r; i++) {
    int ia = i - (r - a->rank), ib = i - (r - b->rank);
    int64_t da = ia >= 0 ? a->d[ia] : 1, db = ib >= 0 ? b->d[ib] : 1;
    if (da == db || db == 1)
      o.d[i] = da;
    else if (da == 1)
      o.d[i] = db;
    else {
      char sa[160], sb[160];
      return kiln_errf(e, KILN_ERR_SHAPE, "shapes %s and %s do not broadcast",
                       kiln_shape_str(a, sa, sizeof sa), kiln_shape_str(b, sb, sizeof sb));
    }
  }
  *out = o;
  return KILN_OK;
}

kiln_code ir_check_input(const kiln_graph *g, const kiln_node *n, int i, uint32_t dtype_mask,
                         int min_rank, int max_rank, kiln_err *e) {
  const kiln_value *v = ir_in(g, n, i);
  if (!v) return kiln_errf(e, KILN_ERR_INVALID, "input %d is required", i);
  if (!v->typed) return kiln_errf(e, KILN_ERR_INVALID, "input '%s' has no known type", v->name);
  if (!(dtype_mask & KILN_DT(v->dtype)))
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "input '%s' has dtype %s, which this op does not take",
                     v->name, kiln_dtype_name(v->dtype));
  if (v->shape.rank < min_rank || v->shape.rank > max_rank) {
    char buf[160];
    return kiln_errf(e, KILN_ERR_SHAPE, "input '%s' has rank %d %s; expected rank %d..%d", v->name,
                     v->shape.rank, kiln_shape_str(&v->shape, buf, sizeof buf), min_rank, max_rank);
  }
  return KILN_OK;
}

kiln_code ir_axis(int64_t axis, int rank, int *out, kiln_err *e) {
  if (axis < -rank || axis >= (rank ? rank : 1))
    return kiln_errf(e, KILN_ERR_SHAPE, "axis %lld is out of range for rank %d", (long long)axis, rank);
  *out = (int)(axis < 0 ? axis + rank : axis);
  return KILN_OK;
}
