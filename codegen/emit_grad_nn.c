/* emit_grad_nn.c — emitters of the grad_nn op family (see codegen/emit.h). */
#include "codegen/emit.h"

void cg_register_grad_nn(kiln_emit_fn *table) { (void)table; }
