/* ops_cuda_gemm.cu: the matrix products of the CUDA backend (nn/ops_cuda.h): lt_cuda_gemm and
 * lt_cuda_linear on cuBLASLt, with fused bias / GELU epilogues, a cache of GEMM plans per context
 * and the autotuning of their algorithms.
 *
 * Why it exists: the teacher is ~46 GFLOP per 224² view and on the GPU nearly all of it is the
 * four GEMMs per block (cuBLASLt, bf16 tensor cores); building a cuBLASLt plan (descriptors,
 * heuristic, timing the candidates) costs far more than running it, so plans are built once per
 * shape and kept in the context.
 *
 * Layout conventions (same as ops.h): row-major matrices, activations (rows, channels). cuBLASLt
 * is column-major: a row-major C (M,N) = op(A)·op(B) is computed as the column-major
 * Cᵀ (N,M) = op(B)ᵀ·op(A)ᵀ, i.e. the operands are swapped (see gemm_enqueue). */
#include "nn/ops_cuda_internal.cuh"

#include <stdio.h>
#include <string.h>

/* ---- matrix products ------------------------------------------------------------------------- */

/* The largest power of two (<= 256) dividing the address: what cuBLASLt may assume about it. */
static int ptr_align(const void *p) {
    uintptr_t a = (uintptr_t)p;
    int al = 1;
    while (al < 256 && !(a & (uintptr_t)al)) al <<= 1;
    return a == 0 ? 256 : al;
}

static cudaDataType_t cuda_type(lt_cuda_dtype t) {
    return t == LT_CUDA_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

static const char *epi_name(int epi) {
    return epi == CUBLASLT_EPILOGUE_BIAS        ? "bias"
           : epi == CUBLASLT_EPILOGUE_GELU_BIAS ? "bias+gelu"
                                                : "none";
}

static int key_eq(const gemm_key *a, const gemm_key *b) { return !memcmp(a, b, sizeof *a); }

static void plan_destroy(gemm_plan *p) {
    if (p->op) cublasLtMatmulDescDestroy(p->op);
    if (p->la) cublasLtMatrixLayoutDestroy(p->la);
    if (p->lb) cublasLtMatrixLayoutDestroy(p->lb);
    if (p->lc) cublasLtMatrixLayoutDestroy(p->lc);
    memset(p, 0, sizeof *p);
}

void lt_cuda_plans_free(lt_cuda_ctx *c) {
    for (int i = 0; i < c->nplans; i++) plan_destroy(&c->plans[i]);
    c->nplans = 0;
    c->next_evict = 0;
}

/* Autotuning (LT_CUDA_AUTOTUNE = N > 1): cuBLASLt's heuristic ranks its algorithms by a model,
 * not by a measurement, and its first choice is not always the fastest for our shapes (tall
 * M = B·T, short K = 768). Each of the N candidates is run once (warm-up) and then timed over
 * three runs with CUDA events, on the real A, B and bias of the first call (read only) and a
 * scratch C/D, so the in-place residual GEMMs (beta = 1) leave the real C alone; the fastest is
 * kept in the plan. Once per plan (shape, types, epilogue, alignments); the stream is synchronised
 * here, so the first forward of a new shape is slower. Any candidate cuBLASLt refuses is skipped;
 * when nothing can be timed (no memory for the scratch) the heuristic's first choice stays. */
static int plan_tune(lt_cuda_ctx *c, gemm_plan *p, const cublasLtMatmulHeuristicResult_t *res,
                     int nres, const void *A, const void *B, float beta) {
    const gemm_key *k = &p->key;
    const size_t csz = (size_t)k->ldc * (size_t)k->n * lt_cuda_dtype_size((lt_cuda_dtype)k->ctype);
    void *scratch = NULL;
    if (cudaMalloc(&scratch, csz ? csz : 1) != cudaSuccess) {
        cudaGetLastError(); /* not fatal: keep the heuristic's choice */
        return 0;
    }
    cudaEvent_t e0 = NULL, e1 = NULL;
    int rc = 0, best = -1;
    float best_ms = 0.0f, first_ms = -1.0f;
    const float alpha = 1.0f;
    const int reps = 3;
    cudaError_t e = cudaMemsetAsync(scratch, 0, csz, c->stream);
    if (e == cudaSuccess) e = cudaEventCreate(&e0);
    if (e == cudaSuccess) e = cudaEventCreate(&e1);
    if (e != cudaSuccess) rc = cuda_fail(e, "GEMM autotuning (events)");
    for (int i = 0; !rc && i < nres; i++) {
        if (res[i].state != CUBLAS_STATUS_SUCCESS || res[i].workspaceSize > LT_WORKSPACE_BYTES)
            continue;
        cublasStatus_t st = cublasLtMatmul(c->lt, p->op, &alpha, A, p->la, B, p->lb, &beta,
                                           scratch, p->lc, scratch, p->lc, &res[i].algo, c->ws,
                                           LT_WORKSPACE_BYTES, c->stream);
        if (st != CUBLAS_STATUS_SUCCESS) continue; /* this candidate refused: skip it */
        e = cudaEventRecord(e0, c->stream);
        for (int r = 0; r < reps && st == CUBLAS_STATUS_SUCCESS && e == cudaSuccess; r++)
            st = cublasLtMatmul(c->lt, p->op, &alpha, A, p->la, B, p->lb, &beta, scratch, p->lc,
                                scratch, p->lc, &res[i].algo, c->ws, LT_WORKSPACE_BYTES,
                                c->stream);
        if (e == cudaSuccess) e = cudaEventRecord(e1, c->stream);
        if (e == cudaSuccess) e = cudaEventSynchronize(e1);
        float ms = 0.0f;
        if (e == cudaSuccess) e = cudaEventElapsedTime(&ms, e0, e1);
        if (e != cudaSuccess) {
            rc = cuda_fail(e, "GEMM autotuning (m=%d n=%d k=%d, candidate %d)", k->m, k->n, k->k, i);
            break;
        }
        if (st != CUBLAS_STATUS_SUCCESS) continue;
        ms /= reps;
        if (i == 0) first_ms = ms;
        if (best < 0 || ms < best_ms) {
            best = i;
            best_ms = ms;
        }
    }
    if (!rc && best >= 0) {
        p->algo = res[best].algo;
        if (c->sw.tune_log) {
            const double fl = 2.0 * k->m * (double)k->n * k->k;
            fprintf(stderr,
                    "lt: gemm autotune m=%d n=%d k=%d %s %s out %s: %d candidates, heuristic's "
                    "first %.4f ms, best #%d %.4f ms (%.1f TFLOP/s, %+.1f%%)\n",
                    k->m, k->n, k->k, lt_precision_name((lt_precision)k->prec), epi_name(k->epi),
                    k->ctype == LT_CUDA_BF16 ? "bf16" : "fp32", nres, first_ms, best, best_ms,
                    fl / (best_ms * 1e9), first_ms > 0 ? 100.0 * (first_ms / best_ms - 1.0) : 0.0);
        }
    }
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaFree(scratch); /* synchronises: the timed runs are done */
    return rc;
}

/* Builds descriptors and asks cuBLASLt's heuristic for the best algorithm. Sets p->usable = 0
 * (and returns 0) when cuBLASLt supports the call but has no algorithm for it; -1 on errors. */
static int plan_build(lt_cuda_ctx *c, gemm_plan *p, const void *bias, const void *A,
                      const void *B, float beta) {
    const gemm_key *k = &p->key;
    const lt_precision prec = (lt_precision)k->prec;
    const cudaDataType_t ab = prec == LT_PREC_BF16 ? CUDA_R_16BF : CUDA_R_32F;
    const cudaDataType_t ct = cuda_type((lt_cuda_dtype)k->ctype);
    const cublasComputeType_t comp =
        prec == LT_PREC_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    const cublasOperation_t opa = k->ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t opb = k->tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasLtEpilogue_t epi = (cublasLtEpilogue_t)k->epi;
    CUBLAS_TRY(cublasLtMatmulDescCreate(&p->op, comp, CUDA_R_32F), "cublasLtMatmulDescCreate");
    CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa),
               "cublasLtMatmulDescSetAttribute(TRANSA)");
    CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb),
               "cublasLtMatmulDescSetAttribute(TRANSB)");
    CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi),
               "cublasLtMatmulDescSetAttribute(EPILOGUE %s)", epi_name(k->epi));
    if (k->epi != CUBLASLT_EPILOGUE_DEFAULT)
        CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                  sizeof bias),
                   "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
    /* stored (column-major) shapes: op N → (m×k) / (k×n); op T → (k×m) / (n×k) */
    CUBLAS_TRY(cublasLtMatrixLayoutCreate(&p->la, ab, k->ta ? k->k : k->m, k->ta ? k->m : k->k, k->lda),
               "cublasLtMatrixLayoutCreate(A)");
    CUBLAS_TRY(cublasLtMatrixLayoutCreate(&p->lb, ab, k->tb ? k->n : k->k, k->tb ? k->k : k->n, k->ldb),
               "cublasLtMatrixLayoutCreate(B)");
    CUBLAS_TRY(cublasLtMatrixLayoutCreate(&p->lc, ct, k->m, k->n, k->ldc),
               "cublasLtMatrixLayoutCreate(C)");
    cublasLtMatmulPreference_t pref;
    CUBLAS_TRY(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    size_t ws = LT_WORKSPACE_BYTES;
    uint32_t al[4] = {(uint32_t)k->al_a, (uint32_t)k->al_b, (uint32_t)k->al_c, (uint32_t)k->al_c};
    cublasStatus_t s = cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
    for (int i = 0; i < 4 && s == CUBLAS_STATUS_SUCCESS; i++)
        s = cublasLtMatmulPreferenceSetAttribute(
            pref, (cublasLtMatmulPreferenceAttributes_t)(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES + i),
            &al[i], sizeof al[i]);
    if (s != CUBLAS_STATUS_SUCCESS) {
        cublasLtMatmulPreferenceDestroy(pref);
        return cublas_fail(s, "cublasLtMatmulPreferenceSetAttribute");
    }
    cublasLtMatmulHeuristicResult_t res[LT_CUDA_AUTOTUNE_MAX];
    memset(res, 0, sizeof res);
    int nres = 0;
    const int want = c->sw.autotune > 1 ? c->sw.autotune : 1;
    s = cublasLtMatmulAlgoGetHeuristic(c->lt, p->op, p->la, p->lb, p->lc, p->lc, pref, want, res,
                                       &nres);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s == CUBLAS_STATUS_NOT_SUPPORTED || (s == CUBLAS_STATUS_SUCCESS && nres == 0)) {
        p->usable = 0;
        return 0;
    }
    if (s != CUBLAS_STATUS_SUCCESS)
        return cublas_fail(s, "cublasLtMatmulAlgoGetHeuristic(m=%d n=%d k=%d, %s, epilogue %s)",
                           k->m, k->n, k->k, lt_precision_name(prec), epi_name(k->epi));
    p->algo = res[0].algo;
    p->usable = 1;
    if (nres > 1) return plan_tune(c, p, res, nres, A, B, beta);
    return 0;
}

/* The cached plan for key (built on first use); NULL + lt_err on error. */
static gemm_plan *plan_get(lt_cuda_ctx *c, const gemm_key *key, const void *bias, const void *A,
                           const void *B, float beta) {
    for (int i = 0; i < c->nplans; i++)
        if (key_eq(&c->plans[i].key, key)) return &c->plans[i];
    gemm_plan *p;
    if (c->nplans < LT_PLAN_CACHE) {
        p = &c->plans[c->nplans++];
    } else {
        p = &c->plans[c->next_evict];
        c->next_evict = (c->next_evict + 1) % LT_PLAN_CACHE;
        plan_destroy(p);
    }
    memset(p, 0, sizeof *p);
    p->key = *key;
    if (plan_build(c, p, bias, A, B, beta)) {
        plan_destroy(p);
        p->key.m = -1; /* never matches a real key */
        return NULL;
    }
    return p;
}

/* Enqueues the column-major product D = alpha·op(A)·op(B) + beta·C (+ epilogue), C = D in place.
 * *done = 0 (and nothing enqueued) when cuBLASLt has no algorithm for the epilogue. */
static int gemm_enqueue(lt_cuda_ctx *c, const gemm_key *key, float alpha, const void *A,
                        const void *B, float beta, void *C, const void *bias, int *done) {
    gemm_plan *p = plan_get(c, key, bias, A, B, beta);
    if (!p) return -1;
    *done = p->usable;
    if (!p->usable) return 0;
    if (key->epi != CUBLASLT_EPILOGUE_DEFAULT)
        CUBLAS_TRY(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                                  sizeof bias),
                   "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
    CUBLAS_TRY(cublasLtMatmul(c->lt, p->op, &alpha, A, p->la, B, p->lb, &beta, C, p->lc, C, p->lc,
                              &p->algo, c->ws, LT_WORKSPACE_BYTES, c->stream),
               "cublasLtMatmul(m=%d n=%d k=%d, %s, epilogue %s)", key->m, key->n, key->k,
               lt_precision_name((lt_precision)key->prec), epi_name(key->epi));
    return 0;
}

/* Fills the key of row-major C (M,N) = op(A)·op(B): cuBLASLt's A is our B and vice versa. */
static gemm_key make_key(lt_precision prec, int trans_a, int trans_b, int M, int N, int K,
                         const void *A, int lda, const void *B, int ldb, void *C, int ldc,
                         lt_cuda_dtype ct, int epi, const void *bias) {
    gemm_key k;
    memset(&k, 0, sizeof k);
    k.prec = prec;
    k.ta = trans_b; /* cuBLASLt A = our B, stored column-major as (N,K) (op N) or (K,N) (op T) */
    k.tb = trans_a; /* cuBLASLt B = our A, stored as (K,M) (op N) or (M,K) (op T) */
    k.m = N;
    k.n = M;
    k.k = K;
    k.lda = ldb;
    k.ldb = lda;
    k.ldc = ldc;
    k.ctype = ct;
    k.epi = epi;
    k.al_a = ptr_align(B);
    k.al_b = ptr_align(A);
    k.al_c = ptr_align(C);
    k.al_bias = bias ? ptr_align(bias) : 0;
    return k;
}

static int check_gemm_types(lt_precision prec, lt_cuda_dtype ct) {
    if (prec != LT_PREC_BF16 && ct == LT_CUDA_BF16)
        return lt_err_set("cuda gemm: %s products need an fp32 output, not bf16",
                          lt_precision_name(prec));
    return 0;
}

extern "C" int lt_cuda_gemm(lt_cuda_ctx *c, lt_precision prec, int trans_a, int trans_b, int M,
                            int N, int K, float alpha, const void *A, int lda, const void *B,
                            int ldb, float beta, void *C, int ldc, lt_cuda_dtype c_type) {
    if (M <= 0 || N <= 0) return 0;
    if (K <= 0) return lt_err_set("cuda gemm: K = %d", K);
    if (check_gemm_types(prec, c_type)) return -1;
    gemm_key key = make_key(prec, trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, c_type,
                            CUBLASLT_EPILOGUE_DEFAULT, NULL);
    int done = 0;
    if (gemm_enqueue(c, &key, alpha, B, A, beta, C, NULL, &done)) return -1;
    if (!done)
        return lt_err_set("cuBLASLt has no algorithm for a %s GEMM m=%d n=%d k=%d (lda %d ldb %d "
                          "ldc %d, %s output)", lt_precision_name(prec), M, N, K, lda, ldb, ldc,
                          c_type == LT_CUDA_BF16 ? "bf16" : "fp32");
    return 0;
}

/* out (M,N) = act(out + bias): the epilogue when cuBLASLt has no fused one. */
template <typename T>
__global__ void bias_act_kernel(T *out, const T *bias, int64_t M, int N, int act) {
    const int64_t n = M * N;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        float v = ldf(out, i);
        if (bias) v += ldf(bias, i % N);
        if (act == LT_CUDA_ACT_GELU_TANH) v = gelu_tanh(v);
        else if (act == LT_CUDA_ACT_GELU_ERF) v = gelu_erf(v);
        stf(out, i, v);
    }
}

static int bias_act(lt_cuda_ctx *c, void *out, lt_cuda_dtype t, const void *bias, int M, int N,
                    int act) {
    const int64_t n = (int64_t)M * N;
    if (t == LT_CUDA_BF16)
        bias_act_kernel<bf16><<<grid_1d(n, 256), 256, 0, c->stream>>>((bf16 *)out,
                                                                     (const bf16 *)bias, M, N, act);
    else
        bias_act_kernel<float><<<grid_1d(n, 256), 256, 0, c->stream>>>((float *)out,
                                                                      (const float *)bias, M, N, act);
    return launch_check("bias_act");
}

extern "C" int lt_cuda_linear(lt_cuda_ctx *c, lt_precision prec, void *out,
                              lt_cuda_dtype out_type, const void *in, const void *w,
                              const void *bias, int M, int K, int N, lt_cuda_act act, float beta) {
    if (M <= 0) return 0;
    if (K <= 0 || N <= 0) return lt_err_set("cuda linear: K = %d, N = %d", K, N);
    if (check_gemm_types(prec, out_type)) return -1;
    if (act != LT_CUDA_ACT_NONE && beta != 0.0f)
        return lt_err_set("cuda linear: an activation needs beta = 0");
    /* exact GELU: the product with its bias, then the erf GELU kernel */
    const int fused_act = act == LT_CUDA_ACT_GELU_TANH;
    const int epi = fused_act ? (bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU)
                    : bias    ? CUBLASLT_EPILOGUE_BIAS
                              : CUBLASLT_EPILOGUE_DEFAULT;
    /* out (M,N) = in (M,K) · w (N,K)ᵀ: trans_b */
    gemm_key key = make_key(prec, 0, 1, M, N, K, in, K, w, K, out, N, out_type, epi, bias);
    int done = 0;
    if (gemm_enqueue(c, &key, 1.0f, w, in, beta, out, bias, &done)) return -1;
    if (!done && epi != CUBLASLT_EPILOGUE_DEFAULT) {
        if (!c->warned_fallback) {
            fprintf(stderr, "lt: note: cuBLASLt has no fused %s epilogue for %s m=%d n=%d k=%d; "
                            "using a separate kernel\n", epi_name(epi), lt_precision_name(prec), N,
                    M, K);
            c->warned_fallback = 1;
        }
        key = make_key(prec, 0, 1, M, N, K, in, K, w, K, out, N, out_type,
                       CUBLASLT_EPILOGUE_DEFAULT, NULL);
        if (gemm_enqueue(c, &key, 1.0f, w, in, beta, out, NULL, &done)) return -1;
        if (done && bias_act(c, out, out_type, bias, M, N, fused_act ? act : LT_CUDA_ACT_NONE))
            return -1;
    }
    if (!done)
        return lt_err_set("cuBLASLt has no algorithm for a %s linear M=%d K=%d N=%d (%s output)",
                          lt_precision_name(prec), M, K, N,
                          out_type == LT_CUDA_BF16 ? "bf16" : "fp32");
    if (act == LT_CUDA_ACT_GELU_ERF) return lt_cuda_gelu(c, out, out, out_type, (int64_t)M * N);
    return 0;
}
