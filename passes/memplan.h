/* memplan.h — static memory planning of a compiled program's arena. */
#ifndef KILN_MEMPLAN_H
#define KILN_MEMPLAN_H

#include "runtime/program.h"

/* Assigns arena offsets to every KILN_BUF_ARENA buffer from the step lifetimes;
 * with `inplace`, elementwise steps may write over a dying input.  Sets
 * p->arena_bytes (the planned peak) and p->unplanned_bytes (sum of all). */
kiln_code kiln_memplan(kiln_program *p, bool inplace, kiln_err *e);

#endif
