/* grad_kiln.c — gradient rules of the kiln op family (see passes/autodiff.h). */
#include "passes/autodiff.h"

void grad_register_kiln(kiln_grad_fn *table) { (void)table; }
