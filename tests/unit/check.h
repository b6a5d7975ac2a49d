/* check.h: the tiny assertion kit of the C unit tests. A failed CHECK prints file:line and the
 * expression and makes the test binary exit non-zero at the end (all checks still run). */
#ifndef LT_CHECK_H
#define LT_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int check_failures = 0;

#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);              \
            check_failures++;                                                                    \
        }                                                                                        \
    } while (0)

#define CHECK_MSG(cond, ...)                                                                     \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);              \
            fprintf(stderr, __VA_ARGS__);                                                        \
            fputc('\n', stderr);                                                                 \
            check_failures++;                                                                    \
        }                                                                                        \
    } while (0)

#define CHECK_DONE()                                                                             \
    do {                                                                                         \
        if (check_failures) fprintf(stderr, "%d check(s) failed\n", check_failures);             \
        else printf("ok\n");                                                                     \
        return check_failures ? 1 : 0;                                                           \
    } while (0)

#endif
