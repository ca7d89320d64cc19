/* emit_train.c — emitters of the train op family (see codegen/emit.h). */
#include "codegen/emit.h"

void cg_register_train(kiln_emit_fn *table) { (void)table; }
