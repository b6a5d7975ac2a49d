/* cnn_cuda.cu: the CUDA backend's conv2d (through cuDNN) and batch norm (our own kernels), with
 * the contracts of nn/cnn.h.
 *
 * Why it exists: these are nearly all of the student's FLOPs and memory traffic, and the two
 * places where the GPU could silently differ from the CPU reference (layouts, algorithm choice,
 * reduction order); keeping them apart from the small ops keeps both reviewable.
 *
 * conv2d. cuDNN's legacy API (cudnnConvolutionForward / BackwardData / BackwardFilter), fp32
 * data and compute, CUDNN_FMA_MATH (no TF32 tensor cores: CUDNN_DEFAULT_MATH would allow them on
 * Ampere and later). Activations are NHWC (CUDNN_TENSOR_NHWC). The filter is stored in PyTorch's
 * (Cout, Cin, kh, kw) = KCRS layout; cuDNN's support for an NCHW filter with NHWC activations is
 * limited to some algorithms, so each call transposes the filter into the KRSC ("NHWC filter")
 * layout in its scratch (w_t) and the weight gradient comes back in KRSC (dw_t) and is
 * transposed (and accumulated when asked) into dw. The scratch of a call is
 *   [ w_t: Cout·kh·kw·Cin floats | dw_t: the same | cuDNN workspace ]   (each part 256-aligned).
 * Algorithms: cudnnGet*Algorithm_v7 (cuDNN's heuristics: no timing, so the same choice on every
 * run), the first result that succeeded, is CUDNN_DETERMINISTIC, does not use tensor-op math
 * and whose workspace fits (LT_CUDA_DETERMINISTIC=0 drops the determinism condition: a switch
 * for a shape with no deterministic algorithm, and to measure what determinism costs). The choice is cached per dims (batch included). conv2d_ws_bytes
 * records the largest scratch it reported per geometry; a plan made later for a smaller batch of
 * that geometry only takes algorithms whose workspace fits that scratch.
 * (With two models of one geometry, the smallest such scratch bounds them.)
 * accumulate_dx: cuDNN's β = 1 on dx. accumulate (dw): dw += the transposed dw_t (one rounding,
 * as the CPU's β = 1 GEMM).
 * bf16 (c->bf16): cuDNN's PSEUDO_BFLOAT16 configuration: x, y, dx, dy and the filter bf16
 * (CUDNN_DATA_BFLOAT16), the convolution's compute type fp32 (CUDNN_DATA_FLOAT: fp32
 * accumulation), CUDNN_TENSOR_OP_MATH (tensor cores; each algorithm then runs with the math type
 * cuDNN reported for it), still deterministic algorithms only. The fp32 master filter is never
 * stored in bf16: w_t is its transpose converted to bf16 in the scratch, and the weight gradient
 * comes back as bf16 dw_t, converted to fp32 while it is transposed into dw (+= when
 * accumulating). w_t and dw_t keep their fp32 sizes in the scratch (a bf16 copy takes half).
 *
 * batch norm. Per-channel statistics of x (M, C) with a fixed-order reduction: a grid of
 * (ceil(C/32), R) blocks of 32×8 threads; block (cb, j) takes the rows [M·j/R, M·(j+1)/R), its
 * thread (tx, ty) channel cb·32 + tx and every 8th row from ty, summing in double; the 8 row
 * lanes are added in order in shared memory, and a second kernel folds the R partials of each
 * channel in order. No atomics: the same bytes on every run. The shift by the first row, the
 * double sums, the biased variance, invstd = 1/sqrt(var + eps) and the running statistics
 * (unbiased: var·M/(M−1)) are lt_bn_forward_train's formulas; only the summation differs (double
 * sums of ≤ 2³¹ terms here, relative error ≲ 1e-12; the CPU adds blocks of 32 rows in float
 * first, so the statistics agree with the CPU's to a few float ulps). The normalisation
 * y = act((x − μ)·(γ·invstd) + β [+ res]) rounds each operation as the CPU does.
 * bf16 (c->bf16): x, res, y, dy and dx are bf16 activations (the kernels are templates on their
 * storage, backend_cuda.cuh); every statistic, factor and parameter gradient is computed from
 * the loaded values exactly as in fp32 (double sums, fp32 steps), and y or dx rounded once to
 * bf16 at the store.
 * Data-parallel (be->bn_sync, nn/cnn.h lt_bn_forward_train_sync / lt_bn_backward_sync): the
 * same per-chunk sums, folded per channel into this process's C or 2C doubles, which go to the
 * host for the processes' sum (sync->sum, the communicator's host collective) and back; the
 * formulas that combine them are the CPU's, in double on the device. Two small round trips per
 * batch norm layer and direction. */
#include "nn/backend_cuda.cuh"

#include <stdlib.h>
#include <string.h>

/* ---- conv2d ---------------------------------------------------------------------------------------- */

#define ALIGN256(b) (((b) + 255) & ~(size_t)255)
/* the most cuDNN workspace a plan made for conv2d_ws_bytes may take (algorithms needing more,
 * such as some FFT ones, are skipped) */
#define LT_CUDA_CONV_WS_CAP ((size_t)512 << 20)

static size_t w_bytes(const lt_conv2d_dims *d) {
    return ALIGN256((size_t)d->Cout * d->Cin * d->kh * d->kw * sizeof(float));
}

static int same_geometry(const lt_conv2d_dims *a, const lt_conv2d_dims *b) {
    return a->H == b->H && a->W == b->W && a->Cin == b->Cin && a->Cout == b->Cout &&
           a->kh == b->kh && a->kw == b->kw && a->stride == b->stride && a->pad == b->pad;
}

static void plan_destroy(cuda_conv_plan *p) {
    if (p->xd) cudnnDestroyTensorDescriptor(p->xd);
    if (p->yd) cudnnDestroyTensorDescriptor(p->yd);
    if (p->wd) cudnnDestroyFilterDescriptor(p->wd);
    if (p->cd) cudnnDestroyConvolutionDescriptor(p->cd);
    memset(p, 0, sizeof *p);
}

void cuda_conv_plans_free(cuda_be *c) {
    for (int i = 0; i < c->nplans; i++) plan_destroy(&c->plans[i]);
    c->nplans = 0;
}

/* Tensor cores allowed: tf32 (TF32 operands, fp32 accumulation) and bf16 (bf16 operands, fp32
 * accumulation); each chosen algorithm then runs with the math type cuDNN reported for it. */
static int tensor_ops(const cuda_be *c) { return c->tf32 || c->bf16; }

/* fp32: deterministic FMA algorithms only. tf32, bf16: deterministic, tensor cores allowed, never
 * a conversion to fp16. With LT_CUDA_DETERMINISTIC=0 (c->nondet) non-deterministic algorithms are
 * taken too: cuDNN's heuristic order then decides alone. */
static int det_math_ok(const cuda_be *c, cudnnDeterminism_t det, cudnnMathType_t m) {
    if ((det != CUDNN_DETERMINISTIC && !c->nondet) || m == CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION)
        return 0;
    return tensor_ops(c) || m != CUDNN_TENSOR_OP_MATH;
}

/* what a "no algorithm" error adds */
static const char *det_hint(const cuda_be *c) {
    return c->nondet ? "" : "; LT_CUDA_DETERMINISTIC=0 lets cuDNN's non-deterministic algorithms "
                            "be chosen too (a resumed run is then no longer bit-identical)";
}

static const char *prec_name(const cuda_be *c) {
    return c->bf16 ? "bf16" : c->tf32 ? "tf32" : "fp32";
}

/* Descriptors and algorithms for d; cudnn_limit: the most cuDNN workspace the algorithms may
 * take. */
static int plan_make(cuda_be *c, cuda_conv_plan *p, const lt_conv2d_dims *d, size_t cudnn_limit) {
    memset(p, 0, sizeof *p);
    p->d = *d;
    CUDNN_TRY(cudnnCreateTensorDescriptor(&p->xd), "cudnnCreateTensorDescriptor");
    CUDNN_TRY(cudnnCreateTensorDescriptor(&p->yd), "cudnnCreateTensorDescriptor");
    CUDNN_TRY(cudnnCreateFilterDescriptor(&p->wd), "cudnnCreateFilterDescriptor");
    CUDNN_TRY(cudnnCreateConvolutionDescriptor(&p->cd), "cudnnCreateConvolutionDescriptor");
    /* x (B, H, W, Cin) and y (B, OH, OW, Cout) NHWC; the filter KRSC (Cout, kh, kw, Cin); all
     * three bf16 in bf16 mode (PSEUDO_BFLOAT16: the compute type below stays fp32) */
    const cudnnDataType_t dt = c->bf16 ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
    CUDNN_TRY(cudnnSetTensor4dDescriptor(p->xd, CUDNN_TENSOR_NHWC, dt, d->B, d->Cin, d->H, d->W),
              "cudnnSetTensor4dDescriptor(x %dx%dx%dx%d, %s)", d->B, d->H, d->W, d->Cin,
              prec_name(c));
    CUDNN_TRY(cudnnSetTensor4dDescriptor(p->yd, CUDNN_TENSOR_NHWC, dt, d->B, d->Cout, d->OH,
                                         d->OW),
              "cudnnSetTensor4dDescriptor(y %dx%dx%dx%d, %s)", d->B, d->OH, d->OW, d->Cout,
              prec_name(c));
    CUDNN_TRY(cudnnSetFilter4dDescriptor(p->wd, dt, CUDNN_TENSOR_NHWC, d->Cout, d->Cin, d->kh,
                                         d->kw),
              "cudnnSetFilter4dDescriptor(%dx%dx%dx%d, %s)", d->Cout, d->Cin, d->kh, d->kw,
              prec_name(c));
    /* PyTorch's conv2d is a cross-correlation; fp32 compute (accumulation) in every mode */
    CUDNN_TRY(cudnnSetConvolution2dDescriptor(p->cd, d->pad, d->pad, d->stride, d->stride, 1, 1,
                                              CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
              "cudnnSetConvolution2dDescriptor");
    /* tf32: cuDNN's default math lets fp32 convolutions use TF32 tensor cores; bf16: tensor-op
     * math; each chosen algorithm then runs with the math type cuDNN reported for it (set
     * before each call) */
    CUDNN_TRY(cudnnSetConvolutionMathType(p->cd, c->bf16   ? CUDNN_TENSOR_OP_MATH
                                                 : c->tf32 ? CUDNN_DEFAULT_MATH
                                                           : CUDNN_FMA_MATH),
              "cudnnSetConvolutionMathType");
    int n, cc, oh, ow;
    CUDNN_TRY(cudnnGetConvolution2dForwardOutputDim(p->cd, p->xd, p->wd, &n, &cc, &oh, &ow),
              "cudnnGetConvolution2dForwardOutputDim");
    if (n != d->B || cc != d->Cout || oh != d->OH || ow != d->OW)
        return lt_err_set("conv2d: cuDNN's output %dx%dx%dx%d differs from %dx%dx%dx%d", n, oh,
                          ow, cc, d->B, d->OH, d->OW, d->Cout);
    char shape[160];
    snprintf(shape, sizeof shape, "x %dx%dx%dx%d, w %dx%dx%dx%d, stride %d, pad %d", d->B, d->H,
             d->W, d->Cin, d->Cout, d->Cin, d->kh, d->kw, d->stride, d->pad);
    int got = 0, found = 0;

    cudnnConvolutionFwdAlgoPerf_t fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    CUDNN_TRY(cudnnGetConvolutionForwardAlgorithm_v7(c->dnn, p->xd, p->wd, p->cd, p->yd,
                                                     CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, fp),
              "cudnnGetConvolutionForwardAlgorithm_v7 (%s)", shape);
    for (int i = 0; i < got && !found; i++) {
        size_t ws = 0;
        if (fp[i].status != CUDNN_STATUS_SUCCESS || !det_math_ok(c, fp[i].determinism, fp[i].mathType))
            continue;
        if (cudnnGetConvolutionForwardWorkspaceSize(c->dnn, p->xd, p->wd, p->cd, p->yd, fp[i].algo,
                                                    &ws) != CUDNN_STATUS_SUCCESS)
            continue;
        if (fp[i].memory > ws) ws = fp[i].memory;
        if (ws > cudnn_limit) continue;
        p->fwd = fp[i].algo, p->ws_fwd = ws, p->m_fwd = fp[i].mathType, found = 1;
    }
    if (!found)
        return lt_err_set("conv2d: cuDNN offers no %s%s forward algorithm within %zu bytes of "
                          "workspace (%s)%s", c->nondet ? "" : "deterministic ", prec_name(c),
                          cudnn_limit, shape, det_hint(c));

    cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    found = 0;
    CUDNN_TRY(cudnnGetConvolutionBackwardDataAlgorithm_v7(
                  c->dnn, p->wd, p->yd, p->cd, p->xd, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got,
                  dp),
              "cudnnGetConvolutionBackwardDataAlgorithm_v7 (%s)", shape);
    for (int i = 0; i < got && !found; i++) {
        size_t ws = 0;
        if (dp[i].status != CUDNN_STATUS_SUCCESS || !det_math_ok(c, dp[i].determinism, dp[i].mathType))
            continue;
        if (cudnnGetConvolutionBackwardDataWorkspaceSize(c->dnn, p->wd, p->yd, p->cd, p->xd,
                                                         dp[i].algo, &ws) != CUDNN_STATUS_SUCCESS)
            continue;
        if (dp[i].memory > ws) ws = dp[i].memory;
        if (ws > cudnn_limit) continue;
        p->bwd_data = dp[i].algo, p->ws_bwd_data = ws, p->m_bwd_data = dp[i].mathType, found = 1;
    }
    if (!found)
        return lt_err_set("conv2d: cuDNN offers no %s%s backward-data algorithm within %zu "
                          "bytes of workspace (%s)%s", c->nondet ? "" : "deterministic ",
                          prec_name(c), cudnn_limit, shape, det_hint(c));

    cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    found = 0;
    CUDNN_TRY(cudnnGetConvolutionBackwardFilterAlgorithm_v7(
                  c->dnn, p->xd, p->yd, p->cd, p->wd, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT,
                  &got, wp),
              "cudnnGetConvolutionBackwardFilterAlgorithm_v7 (%s)", shape);
    for (int i = 0; i < got && !found; i++) {
        size_t ws = 0;
        if (wp[i].status != CUDNN_STATUS_SUCCESS || !det_math_ok(c, wp[i].determinism, wp[i].mathType))
            continue;
        if (cudnnGetConvolutionBackwardFilterWorkspaceSize(c->dnn, p->xd, p->yd, p->cd, p->wd,
                                                           wp[i].algo, &ws) != CUDNN_STATUS_SUCCESS)
            continue;
        if (wp[i].memory > ws) ws = wp[i].memory;
        if (ws > cudnn_limit) continue;
        p->bwd_filter = wp[i].algo, p->ws_bwd_filter = ws, p->m_bwd_filter = wp[i].mathType,
        found = 1;
    }
    if (!found)
        return lt_err_set("conv2d: cuDNN offers no %s%s backward-filter algorithm within %zu "
                          "bytes of workspace (%s)%s", c->nondet ? "" : "deterministic ",
                          prec_name(c), cudnn_limit, shape, det_hint(c));
    p->used = 1;
    return 0;
}

static size_t plan_ws(const cuda_conv_plan *p) {
    size_t m = p->ws_fwd;
    if (p->ws_bwd_data > m) m = p->ws_bwd_data;
    if (p->ws_bwd_filter > m) m = p->ws_bwd_filter;
    return 2 * w_bytes(&p->d) + ALIGN256(m);
}

/* The scratch a call with dims d was given is at least the one conv2d_ws_bytes reported for d's
 * geometry at some batch B' >= d->B (the caller sized it for its largest batch); with several
 * such records (two models of the same geometry), the smallest is the safe bound. 0: none. */
static size_t limit_of(const cuda_be *c, const lt_conv2d_dims *d) {
    size_t lim = 0;
    for (int i = 0; i < c->nlimits; i++) {
        const cuda_conv_limit *l = &c->limits[i];
        if (same_geometry(&l->d, d) && l->d.B >= d->B && (!lim || l->bytes < lim)) lim = l->bytes;
    }
    return lim;
}

static void record_limit(cuda_be *c, const lt_conv2d_dims *d, size_t bytes) {
    for (int i = 0; i < c->nlimits; i++)
        if (same_geometry(&c->limits[i].d, d) && c->limits[i].d.B == d->B) {
            c->limits[i].bytes = bytes; /* the same plan: the same size */
            return;
        }
    if (c->nlimits < LT_CUDA_CONV_LIMITS)
        c->limits[c->nlimits++] = (cuda_conv_limit){*d, bytes};
}

/* The cached plan of d, made on first use. for_op: the plan is for a call given a scratch, which
 * bounds its workspace (limit_of); a cached plan that needs more is made again within it. */
static cuda_conv_plan *plan_get(cuda_be *c, const lt_conv2d_dims *d, int for_op) {
    /* a scratch already sized for this geometry bounds the algorithms' workspace */
    const size_t lim = limit_of(c, d);
    size_t cudnn_limit = LT_CUDA_CONV_WS_CAP;
    if (lim) cudnn_limit = lim > 2 * w_bytes(d) ? lim - 2 * w_bytes(d) : 0;
    cuda_conv_plan *p = NULL;
    for (int i = 0; i < c->nplans && !p; i++) {
        const lt_conv2d_dims *e = &c->plans[i].d;
        if (c->plans[i].used && e->B == d->B && same_geometry(e, d)) p = &c->plans[i];
    }
    if (p && (!for_op || !lim || plan_ws(p) <= lim)) return p;
    if (p) { /* too big for this caller's scratch: choose again within it */
        plan_destroy(p);
    } else if (c->nplans < LT_CUDA_CONV_PLANS) {
        p = &c->plans[c->nplans++];
    } else { /* round robin over a full table */
        p = &c->plans[c->next_evict];
        c->next_evict = (c->next_evict + 1) % LT_CUDA_CONV_PLANS;
        plan_destroy(p);
    }
    if (plan_make(c, p, d, cudnn_limit) != 0) {
        plan_destroy(p); /* stays in the table as an unused slot */
        return NULL;
    }
    return p;
}

size_t cuda_conv_ws(lt_backend *be, const lt_conv2d_dims *d) {
    cuda_be *c = cbe(be);
    cuda_conv_plan *p = plan_get(c, d, 0);
    if (!p) return 0; /* the error surfaces again at the op */
    size_t bytes = plan_ws(p);
    record_limit(c, d, bytes);
    return bytes;
}

/* w_t (Cout, kh, kw, Cin) = w (Cout, Cin, kh, kw): one thread per element, indexed in w_t's
 * order (coalesced writes); T = bf16: each value rounded once to bf16 (the master w stays fp32) */
template <typename T>
__global__ void filter_to_krsc(T *wt, const float *w, int Cout, int Cin, int kh, int kw) {
    const int64_t n = (int64_t)Cout * Cin * kh * kw;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int ci = (int)(i % Cin);
        int64_t r = i / Cin;
        const int kx = (int)(r % kw);
        r /= kw;
        const int ky = (int)(r % kh);
        const int64_t co = r / kh;
        stf(wt, i, w[((co * Cin + ci) * kh + ky) * kw + kx]);
    }
}

/* dw (Cout, Cin, kh, kw) (+)= dw_t (Cout, kh, kw, Cin): one thread per element of dw; dw fp32 in
 * every mode, dw_t cuDNN's output (T: bf16 in bf16 mode, widened exactly) */
template <typename T>
__global__ void filter_from_krsc(float *dw, const T *dwt, int Cout, int Cin, int kh, int kw,
                                 int acc) {
    const int64_t n = (int64_t)Cout * Cin * kh * kw;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int kx = (int)(i % kw);
        int64_t r = i / kw;
        const int ky = (int)(r % kh);
        r /= kh;
        const int ci = (int)(r % Cin);
        const int64_t co = r / Cin;
        const float g = ldf(dwt, ((co * kh + ky) * kw + kx) * Cin + ci);
        dw[i] = acc ? __fadd_rn(dw[i], g) : g;
    }
}

/* w_t (scratch, KRSC) = w (PyTorch's layout), converted to bf16 in bf16 mode */
static int filter_krsc(cuda_be *c, const lt_conv2d_dims *d, float *wt, const float *w) {
    const int64_t nw = (int64_t)d->Cout * d->Cin * d->kh * d->kw;
    const int g = grid_1d(nw, LT_CUDA_THREADS);
    if (c->bf16)
        filter_to_krsc<<<g, LT_CUDA_THREADS, 0, c->stream>>>(as_bf16(wt), w, d->Cout, d->Cin,
                                                             d->kh, d->kw);
    else
        filter_to_krsc<<<g, LT_CUDA_THREADS, 0, c->stream>>>(wt, w, d->Cout, d->Cin, d->kh,
                                                             d->kw);
    return launch_check("conv2d filter transpose");
}

static int check_ws(const cuda_conv_plan *p, void *ws, const char *op) {
    if (!ws) return lt_err_set("%s: no scratch given (%zu bytes needed)", op, plan_ws(p));
    return 0;
}

int cuda_conv_fwd(lt_backend *be, const lt_conv2d_dims *d, float *y, const float *x,
                  const float *w, void *ws) {
    cuda_be *c = cbe(be);
    cuda_conv_plan *p = plan_get(c, d, 1);
    if (!p || check_ws(p, ws, "conv2d")) return -1;
    float *wt = (float *)ws; /* bf16 mode: bf16 values in its first half */
    char *cws = (char *)ws + 2 * w_bytes(d);
    if (filter_krsc(c, d, wt, w)) return -1;
    const float one = 1.0f, zero = 0.0f;
    if (tensor_ops(c))
        CUDNN_TRY(cudnnSetConvolutionMathType(p->cd, p->m_fwd), "cudnnSetConvolutionMathType");
    CUDNN_TRY(cudnnConvolutionForward(c->dnn, &one, p->xd, x, p->wd, wt, p->cd, p->fwd, cws,
                                      p->ws_fwd, &zero, p->yd, y),
              "cudnnConvolutionForward (algorithm %d)", (int)p->fwd);
    return 0;
}

int cuda_conv_bwd(lt_backend *be, const lt_conv2d_dims *d, float *dx, float *dw, const float *dy,
                  const float *x, const float *w, void *ws, int acc, int acc_dx) {
    cuda_be *c = cbe(be);
    cuda_conv_plan *p = plan_get(c, d, 1);
    if (!p || check_ws(p, ws, "conv2d backward")) return -1;
    /* bf16 mode: w_t and dw_t hold bf16 values in their first halves */
    float *wt = (float *)ws, *dwt = (float *)((char *)ws + w_bytes(d));
    char *cws = (char *)ws + 2 * w_bytes(d);
    const int64_t nw = (int64_t)d->Cout * d->Cin * d->kh * d->kw;
    const float one = 1.0f, zero = 0.0f;
    if (dw) { /* dw_t (KRSC) = ∂L/∂w, then into PyTorch's layout (+= when accumulating) */
        if (tensor_ops(c))
            CUDNN_TRY(cudnnSetConvolutionMathType(p->cd, p->m_bwd_filter), "cudnnSetConvolutionMathType");
        CUDNN_TRY(cudnnConvolutionBackwardFilter(c->dnn, &one, p->xd, x, p->yd, dy, p->cd,
                                                 p->bwd_filter, cws, p->ws_bwd_filter, &zero,
                                                 p->wd, dwt),
                  "cudnnConvolutionBackwardFilter (algorithm %d)", (int)p->bwd_filter);
        const int g = grid_1d(nw, LT_CUDA_THREADS);
        if (c->bf16)
            filter_from_krsc<<<g, LT_CUDA_THREADS, 0, c->stream>>>(dw, as_bf16((const float *)dwt),
                                                                   d->Cout, d->Cin, d->kh, d->kw,
                                                                   acc);
        else
            filter_from_krsc<<<g, LT_CUDA_THREADS, 0, c->stream>>>(dw, (const float *)dwt, d->Cout,
                                                                   d->Cin, d->kh, d->kw, acc);
        if (launch_check("conv2d filter gradient transpose")) return -1;
    }
    if (dx) { /* dx (=/+=) ∂L/∂x: β = 1 accumulates (cuDNN reads dx in its own type) */
        if (filter_krsc(c, d, wt, w)) return -1;
        if (tensor_ops(c))
            CUDNN_TRY(cudnnSetConvolutionMathType(p->cd, p->m_bwd_data), "cudnnSetConvolutionMathType");
        CUDNN_TRY(cudnnConvolutionBackwardData(c->dnn, &one, p->wd, wt, p->yd, dy, p->cd,
                                               p->bwd_data, cws, p->ws_bwd_data,
                                               acc_dx ? &one : &zero, p->xd, dx),
                  "cudnnConvolutionBackwardData (algorithm %d)", (int)p->bwd_data);
    }
    return 0;
}

/* ---- batch norm ---------------------------------------------------------------------------------- */

/* Row chunks of the statistics (R <= BN_RMAX): the partial sums take BN_RMAX·2·C doubles of the
 * scratch, then 4·C floats of per-channel factors follow. */
#define BN_RMAX 256
#define BN_TX 32 /* channels per block */
#define BN_TY 8  /* row lanes per block */

size_t cuda_bn_ws(lt_backend *be, int C) {
    (void)be;
    const size_t c = C > 0 ? (size_t)C : 0;
    return ALIGN256((size_t)BN_RMAX * 2 * c * sizeof(double)) + ALIGN256(4 * c * sizeof(float)) +
           2 * c * sizeof(double);
}

/* R for M rows: about 64 rows per lane-block at least, at most BN_RMAX chunks */
static int bn_chunks(int M) {
    int64_t r = ((int64_t)M + 8 * BN_TY - 1) / (8 * BN_TY);
    return (int)(r < 1 ? 1 : r > BN_RMAX ? BN_RMAX : r);
}

static double *bn_part(void *ws) { return (double *)ws; }
static float *bn_fac(void *ws, int C) {
    return (float *)((char *)ws + ALIGN256((size_t)BN_RMAX * 2 * (size_t)C * sizeof(double)));
}
/* (2, C) doubles: a process's per-channel values on their way to and from the other processes */
static double *bn_xfer(void *ws, int C) {
    return (double *)((char *)bn_fac(ws, C) + ALIGN256(4 * (size_t)C * sizeof(float)));
}

/* x (n, device) = the sum over the processes of x: down to the host, sync->sum, back up. */
static int bn_sync_sum(cuda_be *c, const lt_bn_sync *sync, double *x, int n) {
    double *h = (double *)malloc((size_t)n * sizeof *h);
    if (!h) return lt_err_set("batch norm: out of memory");
    int rc = 0;
    cudaError_t e = cudaMemcpyAsync(h, x, (size_t)n * sizeof *h, cudaMemcpyDeviceToHost, c->stream);
    if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) rc = lt_err_set("batch norm: copying statistics to the host: %s",
                                          cudaGetErrorString(e));
    if (rc == 0 && sync->sum(sync->ctx, h, n) != 0) rc = -1;
    if (rc == 0) {
        e = cudaMemcpyAsync(x, h, (size_t)n * sizeof *h, cudaMemcpyHostToDevice, c->stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(c->stream); /* h is freed next */
        if (e != cudaSuccess) rc = lt_err_set("batch norm: copying statistics to the device: %s",
                                              cudaGetErrorString(e));
    }
    free(h);
    return rc;
}

/* Data parallel, step 1: this process's mean (xf[c]) and Σ (x − mean)² (xf[C + c]) per channel,
 * from the chunk partials, as lt_bn_forward_train_sync forms them. */
template <typename T>
__global__ void bn_sync_local(const double *part, int R, const T *x, int64_t M, int C,
                              double *xf) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double sv = 0.0, qv = 0.0;
    for (int j = 0; j < R; j++) sv += part[((int64_t)j * 2) * C + c],
                                qv += part[((int64_t)j * 2 + 1) * C + c];
    const double d = sv / M, q = qv - sv * d;
    xf[c] = (double)ldf(x, c) + d;
    xf[C + c] = q > 0 ? q : 0;
}

/* Step 2, after the sum of the means (xf[0..C)): mean = Σ / P; this process's m2 gains
 * M·(mean_p − mean)² (xf[C..2C) becomes its part of the total m2); mu_p: this process's means. */
__global__ void bn_sync_m2(double *xf, const double *mu_p, int64_t M, int C, int P) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const double mu = xf[c] / P, dm = mu_p[c] - mu;
    xf[c] = mu;
    xf[C + c] += (double)M * dm * dm;
}

/* Step 3, after the sum of m2: the statistics of all P·M rows, lt_bn_forward_train_sync's
 * formulas; fac as bn_stats_final. */
__global__ void bn_sync_final(const double *xf, double Mt, int C, float eps, float momentum,
                              const float *gamma, const float *beta, float *mean, float *invstd,
                              float *rm, float *rv, float *fac) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const double mu = xf[c], var = xf[C + c] / Mt; /* biased */
    const double is = 1.0 / sqrt(var + (double)eps);
    mean[c] = (float)mu;
    invstd[c] = (float)is;
    if (rm) rm[c] = (float)((1.0 - momentum) * rm[c] + momentum * mu);
    if (rv) rv[c] = (float)((1.0 - momentum) * rv[c] + momentum * var * Mt / (Mt - 1));
    fac[c] = (float)mu;
    fac[C + c] = (float)(gamma[c] * is);
    fac[2 * C + c] = beta[c];
}

/* part (R, 2, C): for chunk j = blockIdx.y, channel c: Σ (x − k) and Σ (x − k)² over the chunk's
 * rows, k = x[0, c] (the first row: the CPU's shift), x − k rounded to float as the CPU does,
 * then summed in double. Thread (tx, ty) sums the rows r0 + ty, r0 + ty + 8, ...; the 8 lanes are
 * added in lane order. x: T, the activations' storage (backend_cuda.cuh). */
template <typename T>
__global__ void bn_stats_partial(double *part, const T *x, int64_t M, int C, int R) {
    __shared__ double ss[BN_TY][BN_TX], sq[BN_TY][BN_TX];
    const int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * BN_TX + tx, j = blockIdx.y;
    const int64_t r0 = M * j / R, r1 = M * (j + 1) / R;
    double s = 0.0, q = 0.0;
    if (c < C) {
        const float k = ldf(x, c);
        for (int64_t r = r0 + ty; r < r1; r += BN_TY) {
            const double v = (double)__fsub_rn(ldf(x, r * C + c), k);
            s += v;
            q += v * v;
        }
    }
    ss[ty][tx] = s;
    sq[ty][tx] = q;
    __syncthreads();
    if (ty == 0 && c < C) {
        double a = 0.0, b = 0.0;
        for (int t = 0; t < BN_TY; t++) a += ss[t][tx], b += sq[t][tx];
        part[((int64_t)j * 2) * C + c] = a;
        part[((int64_t)j * 2 + 1) * C + c] = b;
    }
}

/* Per channel: the R partials folded in order, then lt_bn_forward_train's formulas. fac (4, C):
 * mean as float, γ·invstd, β. */
template <typename T>
__global__ void bn_stats_final(const double *part, int R, const T *x, int64_t M, int C,
                               float eps, float momentum, const float *gamma, const float *beta,
                               float *mean, float *invstd, float *rm, float *rv, float *fac) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double sv = 0.0, qv = 0.0;
    for (int j = 0; j < R; j++) sv += part[((int64_t)j * 2) * C + c],
                                qv += part[((int64_t)j * 2 + 1) * C + c];
    const double d = sv / M;           /* mean − k */
    double var = qv / M - d * d;       /* biased */
    if (var < 0) var = 0;
    const double mu = (double)ldf(x, c) + d;
    const double is = 1.0 / sqrt(var + (double)eps);
    mean[c] = (float)mu;
    invstd[c] = (float)is;
    if (rm) rm[c] = (float)((1.0 - momentum) * rm[c] + momentum * mu);
    if (rv) rv[c] = (float)((1.0 - momentum) * rv[c] + momentum * var * M / (M - 1));
    fac[c] = (float)mu;
    fac[C + c] = (float)(gamma[c] * is);
    fac[2 * C + c] = beta[c];
}

/* Eval: fac from the running statistics (lt_bn_forward_eval's formulas). */
__global__ void bn_eval_factors(int C, float eps, const float *gamma, const float *beta,
                                const float *rm, const float *rv, float *fac) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const double is = 1.0 / sqrt((double)rv[c] + (double)eps);
    fac[c] = rm[c];
    fac[C + c] = (float)(gamma[c] * is);
    fac[2 * C + c] = beta[c];
}

/* y (M, C) = act((x − m)·sc + sh [+ res]), (m, sc, sh) = fac; y may equal x or res. x, res, y:
 * T (a bf16 y is the fp32 result rounded once) */
template <typename T>
__global__ void bn_apply(T *y, const T *x, const T *res, const float *fac, int64_t n, int C,
                         int relu) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int c = (int)(i % C);
        float v = __fadd_rn(__fmul_rn(__fsub_rn(ldf(x, i), fac[c]), fac[C + c]), fac[2 * C + c]);
        if (res) v = __fadd_rn(v, ldf(res, i));
        if (relu) v = v > 0.0f ? v : 0.0f;
        stf(y, i, v);
    }
}

/* bn_apply on the backend's stream in its activations' storage (launch_check follows) */
static void bn_apply_launch(cuda_be *c, float *y, const float *x, const float *res,
                           const float *fac, int64_t n, int C, int relu) {
    const int g = grid_1d(n, LT_CUDA_THREADS);
    if (c->bf16)
        bn_apply<<<g, LT_CUDA_THREADS, 0, c->stream>>>(as_bf16(y), as_bf16(x), as_bf16(res), fac,
                                                       n, C, relu);
    else
        bn_apply<<<g, LT_CUDA_THREADS, 0, c->stream>>>(y, x, res, fac, n, C, relu);
}


int cuda_bn_fwd_train(lt_backend *be, float *y, const float *x, const float *res,
                      const float *gamma, const float *beta, float *mean, float *invstd,
                      float *rm, float *rv, int M, int C, float eps, float momentum, int relu,
                      void *ws) {
    cuda_be *c = cbe(be);
    const lt_bn_sync *sync = be->bn_sync;
    const int P = sync ? sync->processes : 1;
    if ((double)M * P < 2)
        return lt_err_set("batch norm: expected more than 1 value per channel in training "
                          "(got %d)", M);
    if (M < 1) return lt_err_set("batch norm: %d rows", M);
    if (C < 1) return lt_err_set("batch norm: %d channels", C);
    if (!ws) return lt_err_set("batch norm: no scratch given");
    const int R = bn_chunks(M);
    double *part = bn_part(ws);
    float *fac = bn_fac(ws, C);
    const dim3 grid((C + BN_TX - 1) / BN_TX, R), block(BN_TX, BN_TY);
    if (c->bf16) bn_stats_partial<<<grid, block, 0, c->stream>>>(part, as_bf16(x), M, C, R);
    else bn_stats_partial<<<grid, block, 0, c->stream>>>(part, x, M, C, R);
    if (launch_check("batch norm statistics")) return -1;
    const int gc = (C + 255) / 256;
    if (!sync) {
        if (c->bf16)
            bn_stats_final<<<gc, 256, 0, c->stream>>>(part, R, as_bf16(x), M, C, eps, momentum,
                                                      gamma, beta, mean, invstd, rm, rv, fac);
        else
            bn_stats_final<<<gc, 256, 0, c->stream>>>(part, R, x, M, C, eps, momentum, gamma,
                                                      beta, mean, invstd, rm, rv, fac);
        if (launch_check("batch norm statistics (fold)")) return -1;
    } else {
        /* this process's means go to part's first C doubles (the partials are folded by then) */
        double *xf = bn_xfer(ws, C), *mu_p = part;
        if (c->bf16) bn_sync_local<<<gc, 256, 0, c->stream>>>(part, R, as_bf16(x), M, C, xf);
        else bn_sync_local<<<gc, 256, 0, c->stream>>>(part, R, x, M, C, xf);
        if (launch_check("batch norm statistics (this process)")) return -1;
        if (cudaMemcpyAsync(mu_p, xf, (size_t)C * sizeof(double), cudaMemcpyDeviceToDevice,
                            c->stream) != cudaSuccess)
            return lt_err_set("batch norm: copying the means");
        if (bn_sync_sum(c, sync, xf, C)) return -1;
        bn_sync_m2<<<(C + 255) / 256, 256, 0, c->stream>>>(xf, mu_p, M, C, P);
        if (launch_check("batch norm statistics (deviations)")) return -1;
        if (bn_sync_sum(c, sync, xf + C, C)) return -1;
        bn_sync_final<<<(C + 255) / 256, 256, 0, c->stream>>>(xf, (double)M * P, C, eps, momentum,
                                                              gamma, beta, mean, invstd, rm, rv,
                                                              fac);
        if (launch_check("batch norm statistics (all processes)")) return -1;
    }
    bn_apply_launch(c, y, x, res, fac, (int64_t)M * C, C, relu);
    return launch_check("batch norm");
}

int cuda_bn_fwd_eval(lt_backend *be, float *y, const float *x, const float *res,
                     const float *gamma, const float *beta, const float *rm, const float *rv,
                     int M, int C, float eps, int relu) {
    cuda_be *c = cbe(be);
    if (C < 1) return lt_err_set("batch norm: %d channels", C);
    if ((size_t)3 * C * sizeof(float) > (size_t)LT_CUDA_RED * sizeof(double))
        return lt_err_set("batch norm (eval): %d channels is more than the CUDA backend's "
                          "%d", C, LT_CUDA_RED * 2 / 3);
    if (M <= 0) return 0;
    float *fac = (float *)c->red; /* the backend's own buffer: no scratch parameter here */
    bn_eval_factors<<<(C + 255) / 256, 256, 0, c->stream>>>(C, eps, gamma, beta, rm, rv, fac);
    if (launch_check("batch norm (eval factors)")) return -1;
    bn_apply_launch(c, y, x, res, fac, (int64_t)M * C, C, relu);
    return launch_check("batch norm (eval)");
}

/* part (R, 2, C): Σ g and Σ g·(x − μ) over chunk j's rows, g = dy masked by y > 0 when relu;
 * g·(x − μ) rounded to float as the CPU forms it, then summed in double. dy, x, y: T. */
template <typename T>
__global__ void bn_grad_partial(double *part, const T *dy, const T *x, const T *y,
                                const float *mean, int64_t M, int C, int R, int relu) {
    __shared__ double ss[BN_TY][BN_TX], sx[BN_TY][BN_TX];
    const int tx = threadIdx.x, ty = threadIdx.y, c = blockIdx.x * BN_TX + tx, j = blockIdx.y;
    const int64_t r0 = M * j / R, r1 = M * (j + 1) / R;
    double s = 0.0, q = 0.0;
    if (c < C) {
        const float m = mean[c];
        for (int64_t r = r0 + ty; r < r1; r += BN_TY) {
            const int64_t i = r * C + c;
            float g = ldf(dy, i);
            if (relu) g = ldf(y, i) > 0.0f ? g : 0.0f;
            s += (double)g;
            q += (double)__fmul_rn(g, __fsub_rn(ldf(x, i), m));
        }
    }
    ss[ty][tx] = s;
    sx[ty][tx] = q;
    __syncthreads();
    if (ty == 0 && c < C) {
        double a = 0.0, b = 0.0;
        for (int t = 0; t < BN_TY; t++) a += ss[t][tx], b += sx[t][tx];
        part[((int64_t)j * 2) * C + c] = a;
        part[((int64_t)j * 2 + 1) * C + c] = b;
    }
}

/* Per channel (lt_bn_backward's formulas): dgamma (+)= Σg·(x − μ)·is, dbeta (+)= Σg; fac (4, C):
 * μ, a = γ·is, b = Σg/M, k = Σg·(x − μ)·is²/M. */
__global__ void bn_grad_final(const double *part, int R, int64_t M, int C, const float *gamma,
                              const float *mean, const float *invstd, float *dgamma, float *dbeta,
                              int acc, float *fac) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double sgv = 0.0, sgxv = 0.0;
    for (int j = 0; j < R; j++) sgv += part[((int64_t)j * 2) * C + c],
                                sgxv += part[((int64_t)j * 2 + 1) * C + c];
    const double is = invstd[c], gm = gamma[c];
    const double dg = sgxv * is, dbv = sgv;
    if (dgamma) dgamma[c] = (float)(acc ? dgamma[c] + dg : dg);
    if (dbeta) dbeta[c] = (float)(acc ? dbeta[c] + dbv : dbv);
    fac[c] = mean[c];
    fac[C + c] = (float)(gm * is);
    fac[2 * C + c] = (float)(dbv / M);
    fac[3 * C + c] = (float)(dg * is / M);
}

/* Data parallel: this process's Σg (xf[c]) and Σg·(x − μ) (xf[C + c]), folded in order. */
__global__ void bn_grad_local(const double *part, int R, int C, double *xf) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    double sgv = 0.0, sgxv = 0.0;
    for (int j = 0; j < R; j++) sgv += part[((int64_t)j * 2) * C + c],
                                sgxv += part[((int64_t)j * 2 + 1) * C + c];
    xf[c] = sgv;
    xf[C + c] = sgxv;
}

/* After the sum over the processes: lt_bn_backward_sync's formulas (dgamma, dbeta (+)= the
 * processes' mean of their parts, formed from the double sums). */
__global__ void bn_grad_final_sync(const double *xf, double Mt, int P, int C, const float *gamma,
                                   const float *mean, const float *invstd, float *dgamma,
                                   float *dbeta, int acc, float *fac) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    const double is = invstd[c], dg = xf[C + c] * is;
    const double dgm = dg / P, dbm = xf[c] / P;
    if (dgamma) dgamma[c] = (float)(acc ? dgamma[c] + dgm : dgm);
    if (dbeta) dbeta[c] = (float)(acc ? dbeta[c] + dbm : dbm);
    fac[c] = mean[c];
    fac[C + c] = (float)(gamma[c] * is);
    fac[2 * C + c] = (float)(xf[c] / Mt);
    fac[3 * C + c] = (float)(dg * is / Mt);
}

/* dx = a·(g − b − (x − μ)·k) (fac of bn_grad_final), each operation rounded as the CPU's; dx
 * may equal dy. dx, dy, x, y: T (a bf16 dx is the fp32 result rounded once). */
template <typename T>
__global__ void bn_grad_apply(T *dx, const T *dy, const T *x, const T *y, const float *fac,
                              int64_t n, int C, int relu) {
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        const int c = (int)(i % C);
        float g = ldf(dy, i);
        if (relu) g = ldf(y, i) > 0.0f ? g : 0.0f;
        const float t = __fsub_rn(g, fac[2 * C + c]);
        const float u = __fmul_rn(__fsub_rn(ldf(x, i), fac[c]), fac[3 * C + c]);
        stf(dx, i, __fmul_rn(fac[C + c], __fsub_rn(t, u)));
    }
}

int cuda_bn_bwd(lt_backend *be, float *dx, float *dgamma, float *dbeta, const float *dy,
                const float *x, const float *y, const float *gamma, const float *mean,
                const float *invstd, int M, int C, int relu, int acc, void *ws) {
    cuda_be *c = cbe(be);
    const lt_bn_sync *sync = be->bn_sync;
    if (!ws) return lt_err_set("batch norm backward: no scratch given");
    if (C < 1) return lt_err_set("batch norm backward: %d channels", C);
    if (M < 1) return 0;
    if (relu && !y) return lt_err_set("batch norm backward: relu without the forward output");
    const int R = bn_chunks(M);
    double *part = bn_part(ws);
    float *fac = bn_fac(ws, C);
    const dim3 grid((C + BN_TX - 1) / BN_TX, R), block(BN_TX, BN_TY);
    if (c->bf16)
        bn_grad_partial<<<grid, block, 0, c->stream>>>(part, as_bf16(dy), as_bf16(x), as_bf16(y),
                                                       mean, M, C, R, relu);
    else
        bn_grad_partial<<<grid, block, 0, c->stream>>>(part, dy, x, y, mean, M, C, R, relu);
    if (launch_check("batch norm backward sums")) return -1;
    if (!sync) {
        bn_grad_final<<<(C + 255) / 256, 256, 0, c->stream>>>(part, R, M, C, gamma, mean, invstd,
                                                              dgamma, dbeta, acc, fac);
        if (launch_check("batch norm backward (fold)")) return -1;
    } else {
        double *xf = bn_xfer(ws, C);
        bn_grad_local<<<(C + 255) / 256, 256, 0, c->stream>>>(part, R, C, xf);
        if (launch_check("batch norm backward sums (this process)")) return -1;
        if (bn_sync_sum(c, sync, xf, 2 * C)) return -1;
        bn_grad_final_sync<<<(C + 255) / 256, 256, 0, c->stream>>>(
            xf, (double)M * sync->processes, sync->processes, C, gamma, mean, invstd, dgamma,
            dbeta, acc, fac);
        if (launch_check("batch norm backward (all processes)")) return -1;
    }
    const int64_t n = (int64_t)M * C;
    const int g = grid_1d(n, LT_CUDA_THREADS);
    if (c->bf16)
        bn_grad_apply<<<g, LT_CUDA_THREADS, 0, c->stream>>>(as_bf16(dx), as_bf16(dy), as_bf16(x),
                                                            as_bf16(y), fac, n, C, relu);
    else
        bn_grad_apply<<<g, LT_CUDA_THREADS, 0, c->stream>>>(dx, dy, x, y, fac, n, C, relu);
    return launch_check("batch norm backward");
}
