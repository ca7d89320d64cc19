/* emit_nn.c — emitters of the nn op family (see codegen/emit.h). */
#include "codegen/emit.h"

void cg_register_nn(kiln_emit_fn *table) { (void)table; }
