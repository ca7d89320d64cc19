/* emit_linalg.c — emitters of the linalg op family (see codegen/emit.h). */
#include "codegen/emit.h"

void cg_register_linalg(kiln_emit_fn *table) { (void)table; }
