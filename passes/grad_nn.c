/* grad_nn.c — gradient rules of the nn op family (see passes/autodiff.h). */
#include "passes/autodiff.h"

void grad_register_nn(kiln_grad_fn *table) { (void)table; }
