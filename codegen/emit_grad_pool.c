/* emit_grad_pool.c — emitters of the grad_pool op family (see codegen/emit.h). */
#include "codegen/emit.h"

void cg_register_grad_pool(kiln_emit_fn *table) { (void)table; }
