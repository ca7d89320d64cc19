/* ref_table.c — reference kernels indexed by op, generated from ir/ops.def. */
#include "runtime/ref.h"

static const kiln_ref_fn ref_table[KILN_OP_COUNT] = {
#define OP(name, domain) [KILN_OP_##name] = ref_##name,
#include "ir/ops.def"
#undef OP
};

kiln_ref_fn kiln_ref_kernel(kiln_op op) { return (unsigned)op < KILN_OP_COUNT ? ref_table[op] : NULL; }
