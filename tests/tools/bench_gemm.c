/* bench_gemm: the machine's fp32 GEMM rate through lt's GEMM (OpenBLAS underneath), the yardstick
 * of the arithmetic bounds `make bench` prints.
 *
 *   bench_gemm N REPEATS [--threads T]    prints {"n": N, "gflops": [per repeat...]} */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/threads.h"
#include "nn/blas_select.h"
#include "nn/simd.h"
#include "nn/ops.h"

int main(int argc, char **argv) {
    lt_blas_ensure(argv); /* the kernels lt-embed and lt-train would use */
    if (argc != 3 && !(argc == 5 && !strcmp(argv[3], "--threads"))) {
        fprintf(stderr, "usage: bench_gemm N REPEATS [--threads T]\n");
        return 2;
    }
    int n = atoi(argv[1]), r = atoi(argv[2]);
    lt_threads_set(argc == 5 ? atoi(argv[4]) : 0);
    if (n <= 0 || r <= 0) return 2;
    float *a = malloc((size_t)n * n * sizeof *a), *b = malloc((size_t)n * n * sizeof *b),
          *c = malloc((size_t)n * n * sizeof *c);
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = b[i] = (float)(i % 17) * 0.01f;
    lt_op_gemm(0, 1, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    char blas[512];
    lt_blas_describe(blas, sizeof blas);
    for (char *q = blas; *q; q++)
        if (*q == '"' || *q == '\\') *q = '\'';
    printf("{\"n\": %d, \"blas\": \"%s\", \"kernels\": \"%s\", \"gflops\": [", n, blas,
           lt_simd_name());
    for (int i = 0; i < r; i++) {
        double t0 = lt_now();
        lt_op_gemm(0, 1, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        printf("%s%.2f", i ? ", " : "", 2.0 * n * n * (double)n / (lt_now() - t0) / 1e9);
    }
    printf("]}\n");
    free(a);
    free(b);
    free(c);
    return 0;
}
