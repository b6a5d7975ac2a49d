/* backend_cuda.cuh: what the files of the student's CUDA backend share, and nothing else
 * includes: the backend's state (stream, cuBLAS and cuDNN handles, the conv plan cache, a small
 * reduction buffer of its own), the error helpers for cuDNN, and the entry points each file
 * defines for backend_cuda.cu to put into the struct lt_backend.
 *
 * Why it exists: lt_backend_cuda (nn/backend.h) is implemented in four files by concern
 * (backend_cuda.cu: memory, elementwise ops, pooling, linear, the input, the struct itself;
 * cnn_cuda.cu: conv2d through cuDNN and batch norm; kd_cuda.cu: L2 norm, queue and loss;
 * optim_cuda.cu: the optimizer's elementwise work). They need one definition of the state and of
 * the error conventions, which are those of the teacher's CUDA code (nn/ops_cuda_internal.cuh:
 * every CUDA/cuBLAS/cuDNN call is checked and a failure names the call; kernels are checked at
 * launch, their faults surface at the next synchronisation).
 *
 * Every entry enqueues its work on the backend's one stream and returns; the entries that return
 * a host value (sumsq, kd_loss_forward) and download synchronise. Every kernel here is
 * deterministic: no float atomics, every reduction in a fixed order. It also says how the
 * kernels that touch activations serve both storage types (fp32, and bf16 at LT_PREC_BF16). */
#ifndef LT_NN_BACKEND_CUDA_CUH
#define LT_NN_BACKEND_CUDA_CUH

#include "nn/ops_cuda_internal.cuh"

extern "C" {
#include "nn/backend.h"
}

#include <cublas_v2.h>
#include <cudnn.h>

/* The backend's own device buffer for reductions whose results go to the host or feed a later
 * kernel of the same entry (sum of squares chunks, per-row KL values, batch norm eval's
 * per-channel factors): LT_CUDA_RED doubles, plus one for a running total and one for a result
 * on its way to the host (the loss). Allocated with the
 * backend; the entries run one after another on one stream, so they share it. */
#define LT_CUDA_RED 65536

/* ---- conv plans (cnn_cuda.cu) ---- */

/* The cuDNN side of one conv2d geometry at one batch size: descriptors (NHWC activations, KRSC
 * filter), the three algorithms chosen (deterministic, FMA math) and their workspace sizes. */
typedef struct {
    lt_conv2d_dims d;
    cudnnTensorDescriptor_t xd, yd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    cudnnConvolutionFwdAlgo_t fwd;
    cudnnConvolutionBwdDataAlgo_t bwd_data;
    cudnnConvolutionBwdFilterAlgo_t bwd_filter;
    size_t ws_fwd, ws_bwd_data, ws_bwd_filter; /* cuDNN's workspace of each algorithm */
    cudnnMathType_t m_fwd, m_bwd_data, m_bwd_filter; /* the math type each algorithm runs with */
    int used;
} cuda_conv_plan;

/* The largest scratch conv2d_ws_bytes reported for a geometry (the dims without the batch): a
 * plan made later for a smaller batch must fit its algorithms into it ("a scratch sized for a
 * batch B serves every smaller batch", nn/cnn.h). */
typedef struct {
    lt_conv2d_dims d; /* B unused */
    size_t bytes;
} cuda_conv_limit;

/* cuBLAS's workspace: 32 MiB, what NVIDIA's cuBLAS documentation recommends for Hopper */
#define LT_CUDA_BLAS_WS (32 << 20)

#define LT_CUDA_CONV_PLANS 128
#define LT_CUDA_CONV_LIMITS 256

typedef struct {
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    cudnnHandle_t dnn;
    double *red; /* (LT_CUDA_RED + 2) doubles on the device */
    cuda_conv_plan plans[LT_CUDA_CONV_PLANS];
    int nplans, next_evict;
    cuda_conv_limit limits[LT_CUDA_CONV_LIMITS];
    int nlimits;
    int tf32; /* LT_PREC_TF32: convolutions and GEMMs may round operands to TF32 (tensor cores) */
    int bf16; /* LT_PREC_BF16: activations are bf16 (in the first half of their float-sized
                 buffers; nn/backend.h says which arguments), convolutions cuDNN's bf16 ones */
    int nondet;     /* LT_CUDA_DETERMINISTIC=0: cuDNN's non-deterministic algorithms allowed */
    void *blas_ws;  /* (LT_CUDA_BLAS_WS bytes) cuBLAS's workspace (cublasSetWorkspace) */
    double *totals; /* (cap_totals) device: sumsq_many's results before their one copy back */
    int cap_totals;
} cuda_be;

static inline cuda_be *cbe(lt_backend *be) { return (cuda_be *)be->impl; }

/* ---- activation storage ----
 * The kernels that read or write activations are templates on their storage type T (float, or
 * bf16 when c->bf16), loading through ldf and storing through stf (ops_cuda_internal.cuh: a bf16
 * store rounds to nearest even once); the arithmetic in between is fp32 (or double) as in the
 * fp32 path, whose instantiation (T = float) is that path unchanged. An entry launches the bf16
 * instantiation on the same pointers reinterpreted: element i of a bf16 activation is at byte
 * 2·i of its buffer (strides stay in elements). */
static inline bf16 *as_bf16(float *p) { return (bf16 *)p; }
static inline const bf16 *as_bf16(const float *p) { return (const bf16 *)p; }

/* lt_err_set("<what>: <cuDNN status string>"); returns -1. */
int cudnn_fail(cudnnStatus_t s, const char *fmt, ...) LT_PRINTF(2, 3);

#define CUDNN_TRY(call, ...)                                                                      \
    do {                                                                                          \
        cudnnStatus_t s_ = (call);                                                                \
        if (s_ != CUDNN_STATUS_SUCCESS) return cudnn_fail(s_, __VA_ARGS__);                       \
    } while (0)

/* Elementwise grids: 256 threads, at most 65535·16 blocks, grid-stride loops cover the rest
 * (grid_1d of ops_cuda_internal.cuh). */
#define LT_CUDA_THREADS 256

/* Row-major GEMM with lt_op_gemm's meaning (nn/ops.h) through cublasSgemm on the backend's
 * stream, fp32 operands and accumulation (CUBLAS_DEFAULT_MATH: no TF32). backend_cuda.cu. */
int cuda_gemm_rm(cuda_be *c, int trans_a, int trans_b, int M, int N, int K, float alpha,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* ---- the entries each file defines (same signatures as struct lt_backend's members) ---- */

/* cnn_cuda.cu */
size_t cuda_conv_ws(lt_backend *be, const lt_conv2d_dims *d);
int cuda_conv_fwd(lt_backend *be, const lt_conv2d_dims *d, float *y, const float *x,
                  const float *w, void *ws);
int cuda_conv_bwd(lt_backend *be, const lt_conv2d_dims *d, float *dx, float *dw, const float *dy,
                  const float *x, const float *w, void *ws, int acc, int acc_dx);
void cuda_conv_plans_free(cuda_be *c);
size_t cuda_bn_ws(lt_backend *be, int C);
int cuda_bn_fwd_train(lt_backend *be, float *y, const float *x, const float *res,
                      const float *gamma, const float *beta, float *mean, float *invstd,
                      float *rm, float *rv, int M, int C, float eps, float momentum, int relu,
                      void *ws);
int cuda_bn_fwd_eval(lt_backend *be, float *y, const float *x, const float *res,
                     const float *gamma, const float *beta, const float *rm, const float *rv,
                     int M, int C, float eps, int relu);
int cuda_bn_bwd(lt_backend *be, float *dx, float *dgamma, float *dbeta, const float *dy,
                const float *x, const float *y, const float *gamma, const float *mean,
                const float *invstd, int M, int C, int relu, int acc, void *ws);

/* kd_cuda.cu */
int cuda_l2_fwd(lt_backend *be, float *y, float *norm, const float *x, int B, int D);
int cuda_l2_bwd(lt_backend *be, float *dx, const float *dy, const float *y, const float *norm,
                int B, int D);
int cuda_queue_push(lt_backend *be, float *queue, int Q, int D, const float *x, int B);
int cuda_kd_fwd(lt_backend *be, double *loss, const float *t, const float *s, const float *queue,
                int B, int Qn, int D, float tau, float *probs);
int cuda_kd_fwd_dev(lt_backend *be, double *loss, const float *t, const float *s,
                    const float *queue, int B, int Qn, int D, float tau, float *probs);
int cuda_kd_bwd(lt_backend *be, float *ds, const float *probs, const float *queue, int B, int Qn,
                int D, float tau);

/* optim_cuda.cu */
int cuda_sumsq(lt_backend *be, const float *x, int64_t n, double *host_out);
int cuda_sumsq_many(lt_backend *be, const float *const *xs, const int64_t *ns, int k,
                    double *host_out);
int cuda_scale(lt_backend *be, float *x, int64_t n, float s);
int cuda_momentum(lt_backend *be, float *w, const float *g, float *buf, int64_t n, float scale,
                  float wd, float mu, float lr, int first);
int cuda_adamw(lt_backend *be, float *w, const float *g, float *m, float *v, int64_t n,
               const lt_adamw_scalars *k);

/* Sums vals[0..n) (doubles on the device) in index order into *total (device), or adds them to
 * it when add: one thread, a fixed order. optim_cuda.cu; kd_cuda.cu uses it too. */
int cuda_sum_in_order(cuda_be *c, const double *vals, int n, double *total, int add);

#endif
