/* onnx_save.c — kiln_graph -> ONNX ModelProto.  The protobuf-c structures are
 * built over the graph's own strings and tensor memory (no copies of weights);
 * every block the saver allocates is recorded and freed after packing. */
#include <string.h>

#include "frontend/onnx.h"
#include "frontend/proto_tensor.h"

typedef struct saver {
  const kiln_graph *g;
  kiln_err *e;
  void **blocks; /* kiln_calloc'd blocks, freed at the end */
  int64_t n_blocks, cap_blocks;
  ProtobufCMessage **unpacked; /* opaque attributes parsed back, freed with pa */
  int64_t n_unpacked, cap_unpacked;
  kiln_pb_alloc pa;
} saver;

static void *sv_alloc(saver *s, size_t count, size_t size) {
  if (kiln_grow((void **)&s->blocks, &s->cap_blocks, s->n_blocks + 1, sizeof(void *), s->e))
    return NULL;
  void *p = kiln_calloc(count ? count : 1, size);
  if (!p) {
    kiln_errf(s->e, KILN_ERR_NOMEM, "out of memory writing the model");
    return NULL;
  }
  s->blocks[s->n_blocks++] = p;
  return p;
}

static void sv_free(saver *s) {
  for (int64_t i = 0; i < s->n_blocks; i++) kiln_free(s->blocks[i]);
  kiln_free(s->blocks);
  for (int64_t i = 0; i < s->n_unpacked; i++)
    protobuf_c_message_free_unpacked(s->unpacked[i], &s->pa.base);
  kiln_free(s->unpacked);
}

/* NULL for an empty string, so absent optional fields stay absent. */
static char *opt_str(const char *s) { return s && *s ? (char *)s : NULL; }

/* ---- types ---- */

static Onnx__TypeProto *value_type(saver *s, const kiln_value *v) {
  Onnx__TypeProto *tp = sv_alloc(s, 1, sizeof *tp);
  Onnx__TypeProto__Tensor *tt = sv_alloc(s, 1, sizeof *tt);
  Onnx__TensorShapeProto *sh = sv_alloc(s, 1, sizeof *sh);
  Onnx__TensorShapeProto__Dimension *dims = sv_alloc(s, KILN_MAX_RANK, sizeof *dims);
  Onnx__TensorShapeProto__Dimension **dimp = sv_alloc(s, KILN_MAX_RANK, sizeof *dimp);
  if (!tp || !tt || !sh || !dims || !dimp) return NULL;
  onnx__type_proto__init(tp);
  onnx__type_proto__tensor__init(tt);
  onnx__tensor_shape_proto__init(sh);
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  tt->has_elem_type = 1;
  tt->elem_type = (int32_t)v->dtype;
  tt->shape = sh;
  sh->n_dim = (size_t)v->shape.rank;
  sh->dim = dimp;
  for (int d = 0; d < v->shape.rank; d++) {
    onnx__tensor_shape_proto__dimension__init(&dims[d]);
    /* symbolic names stay on graph inputs (the model's interface); elsewhere
     * they are only a declaration that inference has replaced */
    if (v->sym[d] && (v->is_input || !v->typed)) {
      dims[d].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      dims[d].dim_param = v->sym[d];
    } else if (v->shape.d[d] >= 0) {
      dims[d].value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      dims[d].dim_value = v->shape.d[d];
    }
    dimp[d] = &dims[d];
  }
  return tp;
}

static Onnx__ValueInfoProto *value_info(saver *s, const kiln_value *v) {
  Onnx__ValueInfoProto *vi = sv_alloc(s, 1, sizeof *vi);
  if (!vi) return NULL;
  onnx__value_info_proto__init(vi);
  vi->name = v->name;
  vi->doc_string = opt_str(v->doc);
  /* untyped with a dtype: a graph output's declared type, not inferred yet */
  if (kiln_dtype_supported(v->dtype)) {
    vi->type = value_type(s, v);
    if (!vi->type) return NULL;
  }
  return vi;
}

/* ---- attributes ---- */

static kiln_code save_attr(saver *s, const kiln_attr *a, Onnx__AttributeProto **out) {
  Onnx__AttributeProto *ap;
  kiln_err *e = s->e;
  if (a->opaque) {
    ProtobufCMessage *m;
    KILN_TRY(kiln_grow((void **)&s->unpacked, &s->cap_unpacked, s->n_unpacked + 1,
                       sizeof(ProtobufCMessage *), e));
    /* each attribute gets the headroom a model of its size would get at load */
    kiln_pb_alloc fresh;
    kiln_pb_alloc_init(&fresh, a->opaque_len);
    s->pa.limit = s->pa.live + fresh.limit;
    KILN_TRY(kiln_pb_unpack(&onnx__attribute_proto__descriptor, a->opaque, a->opaque_len,
                            "attribute", "saved attribute", &s->pa, &m, e));
    s->unpacked[s->n_unpacked++] = m;
    *out = (Onnx__AttributeProto *)m;
    return KILN_OK;
  }
  ap = sv_alloc(s, 1, sizeof *ap);
  if (!ap) return e->code;
  onnx__attribute_proto__init(ap);
  ap->name = a->name;
  ap->has_type = 1;
  ap->type = (Onnx__AttributeProto__AttributeType)a->kind;
  switch (a->kind) {
  case KILN_ATTR_FLOAT:
    ap->has_f = 1;
    ap->f = (float)a->f;
    break;
  case KILN_ATTR_INT:
    ap->has_i = 1;
    ap->i = a->i;
    break;
  case KILN_ATTR_STRING:
    ap->has_s = 1;
    ap->s.data = (uint8_t *)a->s;
    ap->s.len = a->s ? a->s_len : 0;
    break;
  case KILN_ATTR_TENSOR: {
    if (!a->t) return kiln_errf(e, KILN_ERR_INVALID, "attribute '%s' has no tensor", a->name);
    kiln_pb_tensor *pt = sv_alloc(s, 1, sizeof *pt);
    if (!pt) return e->code;
    kiln_tensor_to_proto(a->t, NULL, pt);
    pt->tp.dims = pt->dims;
    ap->t = &pt->tp;
    break;
  }
  case KILN_ATTR_FLOATS: {
    float *f = sv_alloc(s, (size_t)a->n, sizeof(float));
    if (!f) return e->code;
    for (int64_t k = 0; k < a->n; k++) f[k] = (float)a->floats[k];
    ap->n_floats = (size_t)a->n;
    ap->floats = f;
    break;
  }
  case KILN_ATTR_INTS:
    ap->n_ints = (size_t)a->n;
    ap->ints = a->ints;
    break;
  case KILN_ATTR_STRINGS: {
    ProtobufCBinaryData *b = sv_alloc(s, (size_t)a->n, sizeof *b);
    if (!b) return e->code;
    for (int64_t k = 0; k < a->n; k++) {
      b[k].data = (uint8_t *)a->strings[k];
      b[k].len = strlen(a->strings[k]);
    }
    ap->n_strings = (size_t)a->n;
    ap->strings = b;
    break;
  }
  default:
    return kiln_errf(e, KILN_ERR_INTERNAL, "attribute '%s' of kind %d has no data to write",
                     a->name, (int)a->kind);
  }
  *out = ap;
  return KILN_OK;
}

static kiln_code save_node(saver *s, const kiln_node *n, Onnx__NodeProto *np) {
  const kiln_graph *g = s->g;
  onnx__node_proto__init(np);
  char **in = sv_alloc(s, (size_t)n->n_in, sizeof(char *));
  char **out = sv_alloc(s, (size_t)n->n_out, sizeof(char *));
  Onnx__AttributeProto **attrs = sv_alloc(s, (size_t)n->n_attrs, sizeof(*attrs));
  if (!in || !out || !attrs) return s->e->code;
  for (int k = 0; k < n->n_in; k++) in[k] = n->in[k] >= 0 ? g->values[n->in[k]].name : "";
  for (int k = 0; k < n->n_out; k++) out[k] = n->out[k] >= 0 ? g->values[n->out[k]].name : "";
  np->n_input = (size_t)n->n_in;
  np->input = in;
  np->n_output = (size_t)n->n_out;
  np->output = out;
  np->name = opt_str(n->name);
  np->op_type = (char *)n->def->name;
  np->domain = opt_str(n->def->domain);
  np->doc_string = opt_str(n->doc);
  for (int k = 0; k < n->n_attrs; k++) {
    if (save_attr(s, &n->attrs[k], &attrs[k])) {
      char lbl[256];
      kiln_err_prefix(s->e, "%s", ir_node_label(n, lbl, sizeof lbl));
      return s->e->code;
    }
  }
  np->n_attribute = (size_t)n->n_attrs;
  np->attribute = attrs;
  return KILN_OK;
}

/* ---- model ---- */

static bool is_default_domain(const char *d) { return !d || !*d || strcmp(d, "ai.onnx") == 0; }

static kiln_code save_opsets(saver *s, Onnx__ModelProto *m) {
  const kiln_graph *g = s->g;
  bool need_kiln = false, have_kiln = false, have_default = false;
  for (int64_t i = 0; i < g->n_nodes; i++)
    if (!g->nodes[i].dead && strcmp(g->nodes[i].def->domain, "kiln") == 0) need_kiln = true;
  for (int i = 0; i < g->n_opsets; i++) {
    if (strcmp(g->opsets[i].domain, "kiln") == 0) have_kiln = true;
    if (is_default_domain(g->opsets[i].domain)) have_default = true;
  }
  int n = g->n_opsets + (need_kiln && !have_kiln) + !have_default;
  Onnx__OperatorSetIdProto *os = sv_alloc(s, (size_t)n, sizeof *os);
  Onnx__OperatorSetIdProto **osp = sv_alloc(s, (size_t)n, sizeof *osp);
  if (!os || !osp) return s->e->code;
  int k = 0;
  for (int i = 0; i < g->n_opsets; i++, k++) {
    onnx__operator_set_id_proto__init(&os[k]);
    os[k].domain = g->opsets[i].domain;
    os[k].has_version = 1;
    os[k].version = g->opsets[i].version;
  }
  if (!have_default) { /* ir_add_node assumes opset 17 for graphs built without imports */
    onnx__operator_set_id_proto__init(&os[k]);
    os[k].domain = "";
    os[k].has_version = 1;
    os[k++].version = 17;
  }
  if (need_kiln && !have_kiln) {
    onnx__operator_set_id_proto__init(&os[k]);
    os[k].domain = "kiln";
    os[k].has_version = 1;
    os[k++].version = 1;
  }
  for (int i = 0; i < n; i++) osp[i] = &os[i];
  m->n_opset_import = (size_t)n;
  m->opset_import = osp;
  return KILN_OK;
}

static kiln_code build_model(saver *s, Onnx__ModelProto *m, Onnx__GraphProto *gp) {
  const kiln_graph *g = s->g;
  kiln_err *e = s->e;
  m->has_ir_version = 1;
  m->ir_version = g->ir_version > 0 ? g->ir_version : 8;
  m->producer_name = opt_str(g->producer_name) ? g->producer_name : "kiln";
  m->producer_version = opt_str(g->producer_version);
  m->doc_string = opt_str(g->doc);
  m->graph = gp;
  if (g->n_meta) {
    Onnx__StringStringEntryProto *kv = sv_alloc(s, (size_t)g->n_meta, sizeof *kv);
    Onnx__StringStringEntryProto **kvp = sv_alloc(s, (size_t)g->n_meta, sizeof *kvp);
    if (!kv || !kvp) return e->code;
    for (int i = 0; i < g->n_meta; i++) {
      onnx__string_string_entry_proto__init(&kv[i]);
      kv[i].key = g->meta_keys[i];
      kv[i].value = g->meta_vals[i];
      kvp[i] = &kv[i];
    }
    m->n_metadata_props = (size_t)g->n_meta;
    m->metadata_props = kvp;
  }
  KILN_TRY(save_opsets(s, m));
  gp->name = opt_str(g->name) ? g->name : "kiln_graph";

  /* nodes */
  int64_t nn = 0;
  for (int64_t i = 0; i < g->n_nodes; i++) nn += !g->nodes[i].dead;
  Onnx__NodeProto *nodes = sv_alloc(s, (size_t)nn, sizeof *nodes);
  Onnx__NodeProto **nodep = sv_alloc(s, (size_t)nn, sizeof *nodep);
  if (!nodes || !nodep) return e->code;
  int64_t k = 0;
  for (int64_t i = 0; i < g->n_nodes; i++) {
    if (g->nodes[i].dead) continue;
    KILN_TRY(save_node(s, &g->nodes[i], &nodes[k]));
    nodep[k] = &nodes[k];
    k++;
  }
  gp->n_node = (size_t)nn;
  gp->node = nodep;

  /* Initializers are the constants no node produces; constants folded by
   * inference keep their producer and stay computed. */
  int64_t n_init = 0, n_listed = 0, n_vi = 0;
  for (int64_t v = 0; v < g->n_values; v++) {
    const kiln_value *val = &g->values[v];
    if (val->data && val->producer < 0 && !val->is_input) {
      n_init++;
      n_listed += val->listed_as_input;
    } else if (val->producer >= 0 && val->typed && !val->is_output) {
      n_vi++;
    }
  }
  Onnx__TensorProto **inits = sv_alloc(s, (size_t)n_init, sizeof *inits);
  kiln_pb_tensor *pts = sv_alloc(s, (size_t)n_init, sizeof *pts);
  Onnx__ValueInfoProto **ins = sv_alloc(s, (size_t)(g->n_inputs + n_listed), sizeof *ins);
  Onnx__ValueInfoProto **outs = sv_alloc(s, (size_t)g->n_outputs, sizeof *outs);
  Onnx__ValueInfoProto **vis = sv_alloc(s, (size_t)n_vi, sizeof *vis);
  if (!inits || !pts || !ins || !outs || !vis) return e->code;
  int64_t ki = 0, kin = 0, kvi = 0;
  for (int i = 0; i < g->n_inputs; i++)
    if (!(ins[kin++] = value_info(s, &g->values[g->inputs[i]]))) return e->code;
  for (int64_t v = 0; v < g->n_values; v++) {
    const kiln_value *val = &g->values[v];
    if (val->data && val->producer < 0 && !val->is_input) {
      kiln_tensor_to_proto(val->data, val->name, &pts[ki]);
      pts[ki].tp.dims = pts[ki].dims;
      pts[ki].tp.doc_string = opt_str(val->doc);
      inits[ki] = &pts[ki].tp;
      ki++;
      /* old-style models list their weights as inputs too; keep that */
      if (val->listed_as_input && !(ins[kin++] = value_info(s, val))) return e->code;
    } else if (val->producer >= 0 && val->typed && !val->is_output) {
      if (!(vis[kvi++] = value_info(s, val))) return e->code;
    }
  }
  for (int i = 0; i < g->n_outputs; i++)
    if (!(outs[i] = value_info(s, &g->values[g->outputs[i]]))) return e->code;
  gp->n_initializer = (size_t)n_init;
  gp->initializer = inits;
  gp->n_input = (size_t)kin;
  gp->input = ins;
  gp->n_output = (size_t)g->n_outputs;
  gp->output = outs;
  gp->n_value_info = (size_t)n_vi;
  gp->value_info = vis;
  return KILN_OK;
}

kiln_code kiln_onnx_save_buffer(const kiln_graph *g, uint8_t **buf, size_t *len, kiln_err *e) {
  *buf = NULL;
  *len = 0;
  saver s = {.g = g, .e = e};
  kiln_pb_alloc_init(&s.pa, 0);
  Onnx__ModelProto m;
  Onnx__GraphProto gp;
  onnx__model_proto__init(&m);
  onnx__graph_proto__init(&gp);
  kiln_code rc = build_model(&s, &m, &gp);
  if (!rc) rc = kiln_pb_pack(&m.base, buf, len, e);
  sv_free(&s);
  return rc;
}

kiln_code kiln_onnx_save(const kiln_graph *g, const char *path, kiln_err *e) {
  uint8_t *buf;
  size_t len;
  KILN_TRY(kiln_onnx_save_buffer(g, &buf, &len, e));
  kiln_code rc = kiln_write_file_atomic(path, buf, len, e);
  kiln_free(buf);
  if (rc) kiln_err_prefix(e, "saving the model");
  return rc;
}
