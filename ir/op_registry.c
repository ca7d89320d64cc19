/* op_registry.c — the registry of op descriptors, generated from ir/ops.def. */
#include <string.h>

#include "ir/op.h"

static const kiln_op_def *const op_table[KILN_OP_COUNT] = {
    [KILN_OP_INVALID] = NULL,
#define OP(name, domain) [KILN_OP_##name] = &kiln_opdef_##name,
#include "ir/ops.def"
#undef OP
};

const kiln_op_def *kiln_op_get(kiln_op op) {
  return (unsigned)op < KILN_OP_COUNT ? op_table[op] : NULL;
}

const char *kiln_op_name(kiln_op op) {
  const kiln_op_def *d = kiln_op_get(op);
  return d ? d->name : "?";
}

static bool domain_eq(const char *a, const char *b) {
  bool da = !a || !*a || strcmp(a, "ai.onnx") == 0;
  bool db = !b || !*b || strcmp(b, "ai.onnx") == 0;
  if (da || db) return da && db;
  return strcmp(a, b) == 0;
}

kiln_op kiln_op_lookup(const char *domain, const char *name) {
  for (int op = 1; op < KILN_OP_COUNT; op++) {
    const kiln_op_def *d = op_table[op];
    if (strcmp(d->name, name) == 0 && domain_eq(d->domain, domain)) return (kiln_op)op;
  }
  return KILN_OP_INVALID;
}

const kiln_attr_spec *kiln_op_attr_spec(const kiln_op_def *def, const char *name) {
  for (int i = 0; i < def->n_attrs; i++)
    if (strcmp(def->attrs[i].name, name) == 0) return &def->attrs[i];
  return NULL;
}
