/* aot_rt.h — the runtime linked into every ahead-of-time compiled model library.
 *
 * An AOT library holds the model's kernels (object code emitted by LLVM), a plan
 * (which kernel runs over which buffers, the arena layout, the inputs and
 * outputs) and the weights, and links this small runtime statically with its
 * symbols hidden.  Generated wrappers <prefix>_create/_run/_destroy call these
 * functions with the library's own plan.  No LLVM is needed at run time.
 *
 * Plan layout (int64 words): see codegen/aot.c, which writes it. */
#ifndef KILN_AOT_RT_H
#define KILN_AOT_RT_H

#include <stddef.h>
#include <stdint.h>

#define KILN_AOT_MAGIC 0x31544f414e4c494bll /* "KILNAOT1" */
#define KILN_AOT_VERSION 2

typedef void (*kiln_aot_kernel)(void **args, int64_t lo, int64_t hi);

enum { KILN_AOT_BUF_NONE = 0, KILN_AOT_BUF_ARENA = 1, KILN_AOT_BUF_CONST = 2, KILN_AOT_BUF_INPUT = 3 };

/* Creates an instance: allocates the arena; weights come from `weights` (embedded)
 * or, when NULL, from the file `weights_path`.  Returns 0, or non-zero with a
 * message in err. */
int kiln_aot_create(const int64_t *plan, const kiln_aot_kernel *kernels, const uint8_t *weights,
                    const char *weights_path, void **out, char *err, size_t errlen);
/* inputs[i]/outputs[i] in the model's order, each holding the tensor's bytes.
 * Returns 0, or 2 when a kernel found invalid input data (an index or label out
 * of range): the outputs are then not meaningful. */
int kiln_aot_run(void *m, const void *const *inputs, void *const *outputs);
void kiln_aot_set_threads(void *m, int threads);
void kiln_aot_destroy(void *m);

#endif
