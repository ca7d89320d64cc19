/* emit_kiln.c — emitters of the kiln op family (see codegen/emit.h). */
#include "codegen/emit.h"

void cg_register_kiln(kiln_emit_fn *table) { (void)table; }
