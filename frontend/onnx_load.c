/* onnx_load.c — ONNX ModelProto -> kiln_graph.  Every field read comes from an
 * untrusted file: names, counts, dims and data sizes are checked, and each
 * error names the tensor, input or node it is about. */
#include <libgen.h>
#include <stdio.h>
#include <string.h>

#include "frontend/onnx.h"
#include "frontend/proto_tensor.h"

/* The newest default-domain opset whose semantics kiln implements. */
#define KILN_MAX_ONNX_OPSET 18

typedef struct loader {
  const Onnx__ModelProto *m;
  const Onnx__GraphProto *gp;
  const char *base_dir;
  kiln_graph *g;
  kiln_err *e;
} loader;

static const char *str_or_empty(const char *s) { return s ? s : ""; }

static bool is_default_domain(const char *d) { return !d || !*d || strcmp(d, "ai.onnx") == 0; }

static kiln_code dup_str(const char *s, char **out, kiln_err *e) {
  *out = NULL;
  if (!s) return KILN_OK;
  *out = kiln_strdup(s);
  return *out ? KILN_OK : kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
}

/* "node 'conv1'" or "node #12" for messages about a NodeProto. */
static const char *node_desc(const Onnx__NodeProto *np, size_t idx, char *buf, size_t n) {
  if (np->name && *np->name)
    snprintf(buf, n, "node '%s'", np->name);
  else
    snprintf(buf, n, "node #%zu", idx);
  return buf;
}

/* ---- model header: metadata and opset imports ---- */

static kiln_code load_header(loader *L) {
  const Onnx__ModelProto *m = L->m;
  kiln_graph *g = L->g;
  kiln_err *e = L->e;
  g->ir_version = m->has_ir_version ? m->ir_version : 0;
  KILN_TRY(dup_str(m->producer_name, &g->producer_name, e));
  KILN_TRY(dup_str(m->producer_version, &g->producer_version, e));
  KILN_TRY(dup_str(m->doc_string, &g->doc, e));
  KILN_TRY(dup_str(str_or_empty(L->gp->name), &g->name, e));
  for (size_t i = 0; i < m->n_metadata_props; i++) {
    const Onnx__StringStringEntryProto *kv = m->metadata_props[i];
    KILN_TRY(ir_set_meta(g, str_or_empty(kv->key), str_or_empty(kv->value), e));
  }
  for (size_t i = 0; i < m->n_opset_import; i++) {
    const Onnx__OperatorSetIdProto *os = m->opset_import[i];
    const char *dom = str_or_empty(os->domain);
    int64_t ver = os->has_version ? os->version : 0;
    if (ver < 1 || ver > INT32_MAX)
      return kiln_errf(e, KILN_ERR_INVALID, "opset import of domain '%s' has invalid version %lld",
                       dom, (long long)ver);
    if (is_default_domain(dom) && ver > KILN_MAX_ONNX_OPSET)
      return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                       "opset %lld of ai.onnx is newer than kiln supports (at most %d)",
                       (long long)ver, KILN_MAX_ONNX_OPSET);
    KILN_TRY(ir_set_opset(g, dom, ver, e));
  }
  /* IR versions before 3 had no opset imports: opset 1 is implied. */
  if (ir_get_opset(g, "") == 0 && g->ir_version < 3 && m->n_opset_import == 0)
    KILN_TRY(ir_set_opset(g, "", 1, e));
  return KILN_OK;
}

/* Checks every node's domain and op before any value is built, so the first
 * error a user sees for an unsupported model is the op kiln lacks. */
static kiln_code check_ops(loader *L) {
  char nd[300];
  for (size_t i = 0; i < L->gp->n_node; i++) {
    const Onnx__NodeProto *np = L->gp->node[i];
    const char *dom = str_or_empty(np->domain), *op = str_or_empty(np->op_type);
    node_desc(np, i, nd, sizeof nd);
    if (!*op) return kiln_errf(L->e, KILN_ERR_INVALID, "%s has no op_type", nd);
    bool kiln_dom = strcmp(dom, "kiln") == 0;
    if (!is_default_domain(dom) && !kiln_dom)
      return kiln_errf(L->e, KILN_ERR_UNSUPPORTED,
                       "unsupported op: %s.%s (%s); kiln supports the ai.onnx and kiln domains", dom,
                       op, nd);
    if (!kiln_dom && ir_get_opset(L->g, dom) == 0)
      return kiln_errf(L->e, KILN_ERR_INVALID,
                       "%s uses the ai.onnx domain, but the model imports no opset for it", nd);
    if (kiln_op_lookup(dom, op) == KILN_OP_INVALID) {
      if (kiln_dom)
        return kiln_errf(L->e, KILN_ERR_UNSUPPORTED, "unsupported op: kiln.%s (%s)", op, nd);
      return kiln_errf(L->e, KILN_ERR_UNSUPPORTED, "unsupported op: %s (%s)", op, nd);
    }
  }
  return KILN_OK;
}

/* ---- values: initializers, graph inputs, graph outputs ---- */

static kiln_code load_initializers(loader *L) {
  char what[300];
  if (L->gp->n_sparse_initializer)
    return kiln_errf(L->e, KILN_ERR_UNSUPPORTED, "sparse initializers are not supported");
  for (size_t i = 0; i < L->gp->n_initializer; i++) {
    const Onnx__TensorProto *tp = L->gp->initializer[i];
    if (!tp->name || !*tp->name)
      return kiln_errf(L->e, KILN_ERR_INVALID, "initializer #%zu has no name", i);
    snprintf(what, sizeof what, "initializer '%s'", tp->name);
    kiln_tensor *t;
    KILN_TRY(kiln_proto_to_tensor(tp, L->base_dir, what, &t, L->e));
    int id;
    KILN_TRY(ir_add_const(L->g, tp->name, t, true, &id, L->e));
    KILN_TRY(dup_str(tp->doc_string, &L->g->values[id].doc, L->e));
  }
  return KILN_OK;
}

/* Reads a ValueInfo's tensor type into v.  For graph inputs (`input` true) the
 * type must be complete: dtype, rank, and every dimension a size or a name.
 * A graph output's declared type is only recorded (v stays untyped: inference
 * decides) so that saving an uninferred graph still writes its type; a missing
 * part is left unknown there. */
static kiln_code value_type(loader *L, const Onnx__ValueInfoProto *vi, bool input, kiln_value *v) {
  kiln_err *e = L->e;
  const char *name = vi->name, *role = input ? "graph input" : "graph output";
  const Onnx__TypeProto *tp = vi->type;
  if (!tp) {
    if (!input) return KILN_OK;
    return kiln_errf(e, KILN_ERR_INVALID, "%s '%s' has no type", role, name);
  }
  if (tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type)
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "%s '%s' is not a tensor (sequence, map, optional and sparse types are not "
                     "supported)",
                     role, name);
  const Onnx__TypeProto__Tensor *tt = tp->tensor_type;
  int dt = tt->has_elem_type ? tt->elem_type : 0;
  if (dt == 0) {
    if (!input) return KILN_OK;
    return kiln_errf(e, KILN_ERR_INVALID, "%s '%s' has no element type", role, name);
  }
  if (!kiln_dtype_supported(dt))
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "%s '%s' has dtype %s, which kiln does not support",
                     role, name, kiln_dtype_name(dt));
  if (!tt->shape) {
    if (!input) return KILN_OK;
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "%s '%s' has no shape; kiln needs every input's rank and dimensions", role, name);
  }
  if (tt->shape->n_dim > KILN_MAX_RANK)
    return kiln_errf(e, KILN_ERR_LIMIT, "%s '%s' has rank %zu; kiln supports at most %d", role, name,
                     tt->shape->n_dim, KILN_MAX_RANK);
  kiln_shape shape = {.rank = (int)tt->shape->n_dim};
  char *sym[KILN_MAX_RANK] = {0};
  kiln_code rc = KILN_OK;
  for (int d = 0; d < shape.rank && !rc; d++) {
    const Onnx__TensorShapeProto__Dimension *dim = tt->shape->dim[d];
    shape.d[d] = -1;
    if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
      if (dim->dim_value < 0 || dim->dim_value > KILN_MAX_DIM)
        rc = kiln_errf(e, KILN_ERR_INVALID, "%s '%s' has an invalid dimension %d (%lld)", role, name,
                       d, (long long)dim->dim_value);
      shape.d[d] = dim->dim_value;
    } else if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
               dim->dim_param && *dim->dim_param) {
      rc = dup_str(dim->dim_param, &sym[d], e);
    } else if (input) {
      rc = kiln_errf(e, KILN_ERR_INVALID,
                     "%s '%s' dimension %d has neither a size nor a name; kiln needs static shapes",
                     role, name, d);
    }
  }
  if (rc) {
    for (int d = 0; d < KILN_MAX_RANK; d++) kiln_free(sym[d]);
    return rc;
  }
  v->dtype = (kiln_dtype)dt;
  v->shape = shape;
  memcpy(v->sym, sym, sizeof sym);
  v->typed = input;
  return KILN_OK;
}

static kiln_code load_inputs(loader *L) {
  for (size_t i = 0; i < L->gp->n_input; i++) {
    const Onnx__ValueInfoProto *vi = L->gp->input[i];
    if (!vi->name || !*vi->name)
      return kiln_errf(L->e, KILN_ERR_INVALID, "graph input #%zu has no name", i);
    int id = ir_find_value(L->g, vi->name);
    if (id >= 0) {
      kiln_value *v = &L->g->values[id];
      if (!v->is_initializer || v->listed_as_input)
        return kiln_errf(L->e, KILN_ERR_INVALID, "graph input '%s' is listed more than once",
                         vi->name);
      /* Old ONNX listed every weight as an input too: it stays a constant. */
      v->listed_as_input = true;
      continue;
    }
    KILN_TRY(ir_add_value(L->g, vi->name, &id, L->e));
    kiln_value *v = &L->g->values[id];
    KILN_TRY(dup_str(vi->doc_string, &v->doc, L->e));
    KILN_TRY(value_type(L, vi, true, v));
    KILN_TRY(ir_add_input(L->g, id, L->e));
  }
  return KILN_OK;
}

static kiln_code load_outputs(loader *L) {
  for (size_t i = 0; i < L->gp->n_output; i++) {
    const Onnx__ValueInfoProto *vi = L->gp->output[i];
    if (!vi->name || !*vi->name)
      return kiln_errf(L->e, KILN_ERR_INVALID, "graph output #%zu has no name", i);
    int id = ir_find_value(L->g, vi->name);
    if (id < 0)
      return kiln_errf(L->e, KILN_ERR_INVALID,
                       "graph output '%s' is not produced by any node, initializer or input",
                       vi->name);
    kiln_value *v = &L->g->values[id];
    if (v->typed || v->dtype) { /* an input or initializer, or listed twice: check only */
      kiln_value tmp = {0};
      kiln_code rc = value_type(L, vi, false, &tmp);
      for (int d = 0; d < KILN_MAX_RANK; d++) kiln_free(tmp.sym[d]);
      if (rc) return rc;
    } else {
      KILN_TRY(value_type(L, vi, false, v));
    }
    if (!v->doc) KILN_TRY(dup_str(vi->doc_string, &v->doc, L->e));
    KILN_TRY(ir_add_output(L->g, id, L->e));
  }
  return KILN_OK;
}

/* ---- attributes ---- */

/* Old models omit AttributeProto.type; the set field tells the kind. */
static kiln_attr_kind attr_kind(const Onnx__AttributeProto *ap, const kiln_op_def *def) {
  if (ap->has_type && ap->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED)
    return (kiln_attr_kind)ap->type;
  if (ap->has_f) return KILN_ATTR_FLOAT;
  if (ap->has_i) return KILN_ATTR_INT;
  if (ap->has_s) return KILN_ATTR_STRING;
  if (ap->t) return KILN_ATTR_TENSOR;
  if (ap->g) return KILN_ATTR_GRAPH;
  if (ap->sparse_tensor) return KILN_ATTR_SPARSE_TENSOR;
  if (ap->tp) return KILN_ATTR_TYPE_PROTO;
  if (ap->n_floats) return KILN_ATTR_FLOATS;
  if (ap->n_ints) return KILN_ATTR_INTS;
  if (ap->n_strings) return KILN_ATTR_STRINGS;
  if (ap->n_tensors) return KILN_ATTR_TENSORS;
  if (ap->n_graphs) return KILN_ATTR_GRAPHS;
  if (ap->n_sparse_tensors) return KILN_ATTR_SPARSE_TENSORS;
  if (ap->n_type_protos) return KILN_ATTR_TYPE_PROTOS;
  /* an empty list: take the kind the op's schema expects */
  const kiln_attr_spec *s = ap->name ? kiln_op_attr_spec(def, ap->name) : NULL;
  return s ? s->kind : KILN_ATTR_UNDEF;
}

static kiln_code load_attr(loader *L, const Onnx__AttributeProto *ap, const kiln_op_def *def,
                           const char *nd, kiln_attr *a) {
  kiln_err *e = L->e;
  memset(a, 0, sizeof *a);
  if (!ap->name || !*ap->name)
    return kiln_errf(e, KILN_ERR_INVALID, "%s has an attribute without a name", nd);
  if (ap->ref_attr_name && *ap->ref_attr_name)
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "%s attribute '%s' refers to a function attribute, which kiln does not support",
                     nd, ap->name);
  KILN_TRY(dup_str(ap->name, &a->name, e));
  a->kind = attr_kind(ap, def);
  switch (a->kind) {
  case KILN_ATTR_FLOAT: a->f = ap->f; break;
  case KILN_ATTR_INT: a->i = ap->i; break;
  case KILN_ATTR_STRING:
    a->s = kiln_malloc(ap->s.len + 1);
    if (!a->s) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    if (ap->s.len) memcpy(a->s, ap->s.data, ap->s.len);
    a->s[ap->s.len] = 0;
    a->s_len = ap->s.len;
    break;
  case KILN_ATTR_TENSOR: {
    if (!ap->t) return kiln_errf(e, KILN_ERR_INVALID, "%s attribute '%s' has no tensor", nd, ap->name);
    char what[400];
    snprintf(what, sizeof what, "%s attribute '%s'", nd, ap->name);
    KILN_TRY(kiln_proto_to_tensor(ap->t, L->base_dir, what, &a->t, e));
    break;
  }
  case KILN_ATTR_FLOATS:
    a->floats = kiln_malloc(sizeof(double) * (ap->n_floats ? ap->n_floats : 1));
    if (!a->floats) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    for (size_t k = 0; k < ap->n_floats; k++) a->floats[k] = ap->floats[k];
    a->n = (int64_t)ap->n_floats;
    break;
  case KILN_ATTR_INTS:
    a->ints = kiln_malloc(sizeof(int64_t) * (ap->n_ints ? ap->n_ints : 1));
    if (!a->ints) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    if (ap->n_ints) memcpy(a->ints, ap->ints, sizeof(int64_t) * ap->n_ints);
    a->n = (int64_t)ap->n_ints;
    break;
  case KILN_ATTR_STRINGS:
    a->strings = kiln_calloc(ap->n_strings ? ap->n_strings : 1, sizeof(char *));
    if (!a->strings) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    a->n = (int64_t)ap->n_strings; /* set first so ir_attr_free frees what was copied */
    for (size_t k = 0; k < ap->n_strings; k++) {
      char *s = kiln_malloc(ap->strings[k].len + 1);
      if (!s) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      if (ap->strings[k].len) memcpy(s, ap->strings[k].data, ap->strings[k].len);
      s[ap->strings[k].len] = 0;
      a->strings[k] = s;
    }
    break;
  case KILN_ATTR_GRAPH: case KILN_ATTR_GRAPHS: case KILN_ATTR_TENSORS:
  case KILN_ATTR_SPARSE_TENSOR: case KILN_ATTR_SPARSE_TENSORS:
  case KILN_ATTR_TYPE_PROTO: case KILN_ATTR_TYPE_PROTOS: {
    /* kept serialized so that saving writes it back unchanged */
    Onnx__AttributeProto copy = *ap;
    copy.has_type = 1;
    copy.type = (Onnx__AttributeProto__AttributeType)a->kind;
    KILN_TRY(kiln_pb_pack(&copy.base, &a->opaque, &a->opaque_len, e));
    break;
  }
  default:
    return kiln_errf(e, KILN_ERR_INVALID, "%s attribute '%s' has an unknown type (%d)", nd,
                     ap->name, (int)a->kind);
  }
  return KILN_OK;
}

/* ---- nodes ---- */

/* Pass 1: every node output becomes a value, so that pass 2 can resolve inputs
 * regardless of the order nodes appear in the file. */
static kiln_code declare_node_outputs(loader *L) {
  char nd[300];
  for (size_t i = 0; i < L->gp->n_node; i++) {
    const Onnx__NodeProto *np = L->gp->node[i];
    for (size_t k = 0; k < np->n_output; k++) {
      const char *nm = np->output[k];
      if (!nm || !*nm) continue;
      int id;
      if (ir_add_value(L->g, nm, &id, L->e)) {
        kiln_err_prefix(L->e, "%s", node_desc(np, i, nd, sizeof nd));
        return L->e->code;
      }
    }
  }
  return KILN_OK;
}

static kiln_code resolve_names(loader *L, const Onnx__NodeProto *np, const char *nd,
                               char *const *names, size_t n, int *ids) {
  for (size_t k = 0; k < n; k++) {
    const char *nm = names[k];
    if (!nm || !*nm) {
      ids[k] = -1; /* an omitted optional input or output */
      continue;
    }
    ids[k] = ir_find_value(L->g, nm);
    if (ids[k] < 0) /* outputs were all declared in pass 1 */
      return kiln_errf(L->e, KILN_ERR_INVALID,
                       "%s (%s) reads '%s', which no node, graph input or initializer defines", nd,
                       np->op_type, nm);
  }
  return KILN_OK;
}

static kiln_code add_node(loader *L, size_t idx) {
  const Onnx__NodeProto *np = L->gp->node[idx];
  kiln_err *e = L->e;
  char nd[300];
  node_desc(np, idx, nd, sizeof nd);
  kiln_op op = kiln_op_lookup(str_or_empty(np->domain), np->op_type);
  const kiln_op_def *def = kiln_op_get(op);
  /* Trailing empty names past the op's arity are padding some exporters write. */
  size_t n_in = np->n_input, n_out = np->n_output;
  while (n_in > (size_t)def->max_in && !*str_or_empty(np->input[n_in - 1])) n_in--;
  while (n_out > (size_t)def->max_out && !*str_or_empty(np->output[n_out - 1])) n_out--;
  if (n_in > 100000 || n_out > 100000)
    return kiln_errf(e, KILN_ERR_LIMIT, "%s has too many inputs or outputs", nd);
  int *in = kiln_malloc(sizeof(int) * (n_in ? n_in : 1));
  int *out = kiln_malloc(sizeof(int) * (n_out ? n_out : 1));
  kiln_code rc = KILN_OK;
  int id = -1;
  if (!in || !out) rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  if (!rc) rc = resolve_names(L, np, nd, np->input, n_in, in);
  if (!rc) rc = resolve_names(L, np, nd, np->output, n_out, out);
  if (!rc && ir_add_node(L->g, op, np->name, in, (int)n_in, out, (int)n_out, &id, e)) {
    kiln_err_prefix(e, "%s", nd);
    rc = e->code;
  }
  kiln_free(in);
  kiln_free(out);
  if (rc) return rc;
  kiln_node *n = &L->g->nodes[id];
  KILN_TRY(dup_str(np->doc_string, &n->doc, e));
  for (size_t k = 0; k < np->n_attribute; k++) {
    kiln_attr a;
    if (load_attr(L, np->attribute[k], def, nd, &a)) {
      ir_attr_free(&a);
      return e->code;
    }
    if (ir_attr_find(n, a.name)) {
      ir_attr_free(&a);
      return kiln_errf(e, KILN_ERR_INVALID, "%s has attribute '%s' more than once", nd,
                       np->attribute[k]->name);
    }
    KILN_TRY(ir_push_attr(L->g, id, &a, e));
  }
  return KILN_OK;
}

/* ---- entry points ---- */

static kiln_code build_graph(loader *L) {
  KILN_TRY(load_header(L));
  KILN_TRY(check_ops(L));
  if (L->gp->n_node > KILN_MAX_NODES)
    return kiln_errf(L->e, KILN_ERR_LIMIT, "graph has %zu nodes; the limit is %d", L->gp->n_node,
                     KILN_MAX_NODES);
  KILN_TRY(load_initializers(L));
  KILN_TRY(load_inputs(L));
  KILN_TRY(declare_node_outputs(L));
  for (size_t i = 0; i < L->gp->n_node; i++) KILN_TRY(add_node(L, i));
  KILN_TRY(load_outputs(L));
  KILN_TRY(ir_toposort(L->g, L->e));
  KILN_TRY(ir_verify(L->g, L->e));
  return KILN_OK;
}

kiln_code kiln_onnx_load_buffer(const void *buf, size_t len, const char *base_dir, const char *label,
                                kiln_graph **out, kiln_err *e) {
  *out = NULL;
  if ((int64_t)len > KILN_MAX_MODEL_BYTES)
    return kiln_errf(e, KILN_ERR_LIMIT, "%s: model is %zu bytes; the limit is %lld",
                     label ? label : "model", len, (long long)KILN_MAX_MODEL_BYTES);
  kiln_pb_alloc pa;
  kiln_pb_alloc_init(&pa, len);
  ProtobufCMessage *msg;
  KILN_TRY(kiln_pb_unpack(&onnx__model_proto__descriptor, buf, len, label ? label : "model",
                          "ONNX model", &pa, &msg, e));
  loader L = {.m = (const Onnx__ModelProto *)msg, .base_dir = base_dir, .e = e};
  kiln_code rc = KILN_OK;
  L.gp = L.m->graph;
  if (!L.gp) {
    rc = kiln_errf(e, KILN_ERR_INVALID, "the model has no graph");
  } else if (!(L.g = ir_graph_new())) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  } else {
    rc = build_graph(&L);
    if (!rc && label) rc = dup_str(label, &L.g->source_path, e);
  }
  protobuf_c_message_free_unpacked(msg, &pa.base);
  if (rc) {
    if (label) kiln_err_prefix(e, "%s", label);
    ir_graph_free(L.g);
    return rc;
  }
  *out = L.g;
  return KILN_OK;
}

kiln_code kiln_onnx_load(const char *path, kiln_graph **out, kiln_err *e) {
  uint8_t *buf;
  size_t len;
  *out = NULL;
  KILN_TRY(kiln_read_file(path, KILN_MAX_MODEL_BYTES, &buf, &len, e));
  char *dir = kiln_strdup(path);
  if (!dir) {
    kiln_free(buf);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  }
  kiln_code rc = kiln_onnx_load_buffer(buf, len, dirname(dir), path, out, e);
  kiln_free(dir);
  kiln_free(buf);
  return rc;
}
