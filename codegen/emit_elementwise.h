/* emit_elementwise.h — the scalar bodies of the elementwise emitters (codegen/emit_elementwise.c),
 * for kernels that evaluate several elementwise ops per element (kiln.FusedElementwise). */
#ifndef KILN_CODEGEN_EMIT_ELEMENTWISE_H
#define KILN_CODEGEN_EMIT_ELEMENTWISE_H

#include "codegen/emit.h"

/* The scalar body cg_emit_map runs for op (it reads the node's attributes, opset and input
 * count, and NULL for an omitted optional input), or NULL when op has none. */
cg_scalar_body cg_elementwise_body(kiln_op op);

#endif
