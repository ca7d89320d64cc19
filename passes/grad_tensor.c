/* grad_tensor.c — gradient rules of the tensor op family (see passes/autodiff.h). */
#include "passes/autodiff.h"

void grad_register_tensor(kiln_grad_fn *table) { (void)table; }
