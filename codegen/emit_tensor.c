/* emit_tensor.c — emitters of the tensor op family (see codegen/emit.h). */
#include "codegen/emit.h"

void cg_register_tensor(kiln_emit_fn *table) { (void)table; }
