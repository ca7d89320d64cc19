/* emit_reduce.c — emitters of the reduce op family (see codegen/emit.h). */
#include "codegen/emit.h"

void cg_register_reduce(kiln_emit_fn *table) { (void)table; }
