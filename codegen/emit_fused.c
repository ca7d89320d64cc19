/* emit_fused.c — emitters of the fused op family (see codegen/emit.h). */
#include "codegen/emit.h"

void cg_register_fused(kiln_emit_fn *table) { (void)table; }
