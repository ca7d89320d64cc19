/* fuzz.h — shared checks for the libFuzzer targets: a failing call must leave a
 * message and no half-built result; anything else is a bug (trap). */
#ifndef KILN_FUZZ_H
#define KILN_FUZZ_H

#include <stdio.h>
#include <stdlib.h>

#include "ir/base.h"

/* Every error carries a code and a one-line message. */
static inline void fuzz_check_err(kiln_code rc, const kiln_err *e, const void *result) {
  if (rc == KILN_OK) return;
  if (e->code == KILN_OK || !e->msg[0] || result) {
    fprintf(stderr, "fuzz: call failed with code %d but left %s\n", (int)rc,
            result ? "a result" : "no message");
    abort();
  }
  /* An internal error on user input is a bug: the input should have been refused
   * with a user-facing code first. */
  if (rc == KILN_ERR_INTERNAL && !getenv("KILN_FUZZ_ALLOW_INTERNAL")) {
    fprintf(stderr, "fuzz: internal error on untrusted input: %s\n", e->msg);
    abort();
  }
}

#endif
