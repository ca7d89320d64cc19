/* grad_reduce.c — gradient rules of the reduce op family (see passes/autodiff.h). */
#include "passes/autodiff.h"

void grad_register_reduce(kiln_grad_fn *table) { (void)table; }
