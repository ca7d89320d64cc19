/* aot.h — ahead-of-time compilation of a program into a shared library. */
#ifndef KILN_AOT_H
#define KILN_AOT_H

#include "codegen/jit.h"
#include "runtime/program.h"

typedef struct kiln_aot_opts {
  const char *so_path;      /* the shared library to write */
  const char *header_path;  /* its C header (NULL: none) */
  const char *prefix;       /* C identifier prefixing every entry point */
  const char *weights_path; /* NULL: weights embedded; else written to this side file */
  const char *runtime_lib;  /* libkiln_aot_rt.a */
  const char *cc;           /* linker driver (default "cc") */
} kiln_aot_opts;

/* p must come from kiln_compile with .aot = true; jit is the program's JIT
 * (p->jit). Writes the object, header and library (each atomically). */
kiln_code kiln_aot_write(kiln_program *p, kiln_jit *jit, const kiln_aot_opts *o, kiln_err *e);

#endif
