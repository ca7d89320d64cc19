/* emit_resize.c — emitters of the resize op family (see codegen/emit.h). */
#include "codegen/emit.h"

void cg_register_resize(kiln_emit_fn *table) { (void)table; }
