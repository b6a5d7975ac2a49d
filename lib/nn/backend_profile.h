/* backend_profile.h: a backend that runs another one and times each of its entries by op class
 * (backend_profile.c), for the per-op profile of a training step. */
#ifndef LT_NN_BACKEND_PROFILE_H
#define LT_NN_BACKEND_PROFILE_H

#include <stdint.h>

#include "nn/backend.h"

/* The op classes, in the order of the report. */
enum {
    LT_PROF_CONV_FWD = 0, LT_PROF_CONV_BWD, LT_PROF_BN_FWD, LT_PROF_BN_BWD, LT_PROF_ELEMWISE,
    LT_PROF_POOL, LT_PROF_LINEAR, LT_PROF_INPUT, LT_PROF_L2, LT_PROF_KD, LT_PROF_OPTIM,
    LT_PROF_MEMORY, LT_PROF_CLASSES
};

/* A backend with inner's buffers, results and memory, whose every entry also adds its time (a
 * device backend waited for before and after each call) to its class. inner stays the caller's:
 * free the wrapper (destroy) first, then inner. It takes inner's act_bf16 as it is now: set
 * inner's precision before wrapping it. NULL + lt_err on OOM. */
lt_backend *lt_backend_profile(lt_backend *inner);
void lt_backend_profile_reset(lt_backend *be);
/* ms[c], calls[c]: the time (milliseconds) and calls of class c since the last reset. */
void lt_backend_profile_get(lt_backend *be, double ms[LT_PROF_CLASSES],
                            int64_t calls[LT_PROF_CLASSES]);
const char *lt_backend_profile_class(int cls); /* "conv forward", ... */

#endif
