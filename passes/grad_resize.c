/* grad_resize.c — gradient rules of the resize op family (see passes/autodiff.h). */
#include "passes/autodiff.h"

void grad_register_resize(kiln_grad_fn *table) { (void)table; }
