/* test.h — a tiny test harness: each test_*.c defines TEST functions and lists
 * them in main() with RUN(); failures print file:line and the condition. */
#ifndef KILN_TEST_H
#define KILN_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures_ = 0, test_checks_ = 0, tests_run_ = 0, tests_failed_ = 0;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    test_checks_++;                                                                                \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                     \
      test_failures_++;                                                                            \
    }                                                                                              \
  } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
  do {                                                                                             \
    test_checks_++;                                                                                \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);                     \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fputc('\n', stderr);                                                                         \
      test_failures_++;                                                                            \
    }                                                                                              \
  } while (0)

/* |a-b| <= atol + rtol*|b| */
#define CHECK_CLOSE(a, b, rtol, atol)                                                              \
  do {                                                                                             \
    double a_ = (a), b_ = (b);                                                                     \
    test_checks_++;                                                                                \
    if (!(fabs(a_ - b_) <= (atol) + (rtol)*fabs(b_))) {                                            \
      fprintf(stderr, "%s:%d: %s = %.9g, expected %s = %.9g\n", __FILE__, __LINE__, #a, a_, #b,    \
              b_);                                                                                 \
      test_failures_++;                                                                            \
    }                                                                                              \
  } while (0)

/* Asserts a kiln call succeeds, printing its message otherwise. */
#define CHECK_OK(call, err)                                                                        \
  do {                                                                                             \
    test_checks_++;                                                                                \
    if ((call) != KILN_OK) {                                                                       \
      fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #call, (err)->msg);            \
      test_failures_++;                                                                            \
    }                                                                                              \
  } while (0)

#define RUN(fn)                                                                                    \
  do {                                                                                             \
    int before_ = test_failures_;                                                                  \
    fn();                                                                                          \
    tests_run_++;                                                                                  \
    if (test_failures_ != before_) {                                                               \
      tests_failed_++;                                                                             \
      fprintf(stderr, "FAIL %s\n", #fn);                                                           \
    }                                                                                              \
  } while (0)

#define TEST_MAIN_END()                                                                            \
  do {                                                                                             \
    printf("%d passed, %d failed (%d checks)\n", tests_run_ - tests_failed_, tests_failed_,        \
           test_checks_);                                                                          \
    return tests_failed_ ? 1 : 0;                                                                  \
  } while (0)

#endif
