/* resnet.h: the ResNet student backbones (resnet18, resnet34, resnet50) as torchvision builds
 * them, without the fc layer: images in, globally average-pooled features out.
 *
 * Why it exists: lt-train distils into these (docs/architecture.md §1). They are fixed graphs
 * with an explicit forward and backward over buffers preallocated once for a maximum batch size
 * and one input size (the llm.c way); nothing is allocated in forward/backward. This file is the
 * one place the forward and backward walk is written; every op and every allocation goes through
 * a backend (nn/backend.h), so the same walk runs on the CPU or a GPU. The description (graph,
 * tensor names, shapes, offsets) is computed apart from the storage: lt_resnet_plan gives it
 * without allocating anything.
 *
 * Architecture (torchvision.models.resnet, v1.5): conv1 7×7/2 (pad 3) → bn1 → relu → maxpool
 * 3×3/2 (pad 1) → layer1..4 → global average pool. resnet18/34 use BasicBlock ([2,2,2,2] /
 * [3,4,6,3]), resnet50 Bottleneck ([3,4,6,3], expansion 4, the stride on the 3×3 conv). The first
 * block of a layer whose stride or width changes has a downsample: 1×1 conv with that stride + BN.
 * Convs have no bias; BN eps 1e-5, momentum 0.1. Features: C = 512 (18/34) or 2048 (50).
 *
 * Every parameter and buffer is listed in `tensors`, in torchvision's state_dict order and with
 * its key ("conv1.weight", "bn1.running_mean", "layer1.0.downsample.1.weight", …), so that
 * checkpoint / export / optimizer code can iterate over (name, shape, data, grad). Weights are in
 * PyTorch's layout (conv (Cout, Cin, kh, kw)). Trainable tensors live contiguously in `params`
 * (their gradients at the same offsets in `grads`), running statistics in `buffers`; the int64
 * `num_batches_tracked` counters in `nbt`. */
#ifndef LT_MODELS_RESNET_H
#define LT_MODELS_RESNET_H

#include <stdint.h>

#include "nn/backend.h"

typedef struct {
    char name[64];       /* torchvision state_dict key */
    int ndim;            /* 4 (conv weight), 1 (BN vectors) or 0 (num_batches_tracked) */
    int64_t shape[4];
    int64_t numel;
    float *data;         /* numel floats; NULL for num_batches_tracked */
    float *grad;         /* numel floats for parameters; NULL for buffers */
    int64_t *data_i64;   /* num_batches_tracked only (one int64), else NULL */
    int is_buffer;       /* running_mean, running_var, num_batches_tracked */
    int weight_decay;    /* 1 for conv weights, 0 for every 1-D parameter (BN weight and bias) */
    lt_mem mem;          /* where data/grad live: the backend's memory (host for the CPU) */
    lt_dtype dtype;      /* of data: LT_DT_F32 (LT_DT_I64 for num_batches_tracked); checkpoints
                            and exports always carry float32 in PyTorch's layout */
} lt_resnet_tensor;

struct lt_resnet_net; /* the layer graph and its activations (resnet.c) */

typedef struct {
    char arch[16];       /* "resnet18", "resnet34", "resnet50" */
    int max_B, H, W;     /* input (B <= max_B, H, W, 3) NHWC float */
    int C;               /* feature width: 512 or 2048 */
    int n_tensors;
    lt_resnet_tensor *tensors;
    int64_t n_params;    /* floats in params / grads */
    float *params;       /* every trainable tensor, in tensor order */
    float *grads;        /* their gradients, same layout */
    int64_t n_buffers;
    float *buffers;      /* running means and variances */
    int n_bn;
    int64_t *nbt;        /* (n_bn) num_batches_tracked of each BN, in host memory on every
                            backend (the walk counts the steps itself) */
    float *features;     /* (max_B, C): the output of the last forward */
    int last_B;          /* batch of the last forward (0 before any) */
    int last_train;      /* whether it ran in training mode */
    lt_backend *be;      /* runs every op; owns every buffer above */
    struct lt_resnet_net *net;
} lt_resnet;

/* The description of a model without storage (lt_resnet_plan). */
typedef struct {
    int n_tensors;
    int64_t n_params, n_buffers; /* floats */
    int n_bn;
    int C;                       /* feature width */
    int64_t max_activation;      /* floats of the largest activation at max_B */
    int max_bn_C;                /* widest batch norm */
} lt_resnet_sizes;

/* Builds the model for inputs (B <= max_B, H, W, 3) and allocates everything on the backend
 * (weights, grads, activations, scratch). arch: "resnet18", "resnet34" or "resnet50". Weights
 * start as lt_resnet_init_weights(m, 0) leaves them. NULL + lt_err_set on failure. Tensor data
 * is in the backend's memory (lt_resnet_tensor.mem; the int64 counters always on the host):
 * code that reads or writes it on the host goes through be->download / be->upload when it is
 * not host memory, as train/checkpoint.c and lt_resnet_set do. */
lt_resnet *lt_resnet_create(lt_backend *be, const char *arch, int max_B, int H, int W);
/* The description alone: tensor count, parameter and buffer floats, feature width, the largest
 * activation; nothing is allocated but the description itself. -1 + lt_err on bad arguments. */
int lt_resnet_plan(const char *arch, int max_B, int H, int W, lt_resnet_sizes *out);
void lt_resnet_free(lt_resnet *m);

/* torchvision's initialisation: convs kaiming_normal_(mode="fan_out", nonlinearity="relu"),
 * i.e. N(0, 2 / (Cout·kh·kw)), drawn with Box–Muller from the lt_rng stream
 * (seed, tensor index, 'RSNT', 0); BN weight 1, bias 0, running mean 0, var 1, counters 0.
 * Drawn on the host, tensor by tensor, and uploaded when the backend keeps them on a device.
 * Returns 0, or -1 + lt_err (out of memory, a failed upload). */
int lt_resnet_init_weights(lt_resnet *m, uint64_t seed);

/* The tensor with this torchvision key, or NULL. */
lt_resnet_tensor *lt_resnet_find(lt_resnet *m, const char *name);
/* Copies numel floats (host memory) into the tensor named `name`, uploading when it lives on a
 * device (for num_batches_tracked: numel 1, the value converted to int64). -1 + lt_err_set when the name is unknown or numel does not match. */
int lt_resnet_set(lt_resnet *m, const char *name, const float *data, int64_t numel);

/* Forward of x (B, H, W, 3) NHWC. train: BN with batch statistics, running stats updated,
 * counters incremented, everything the backward needs kept; otherwise BN with the running stats.
 * The features (B, C) land in m->features. x (host memory, or lt_resnet_input(m)) is copied into
 * the model, so it need not outlive the call. On a backend whose activations are bf16
 * (be->act_bf16, nn/backend.h) x must be lt_resnet_input(m), filled by the backend's
 * mix_normalize: a host array of floats is refused. */
int lt_resnet_forward(lt_resnet *m, const float *x, int B, int train);

/* The model's own input buffer (max_B, H, W, 3), in the backend's memory: a caller that fills it
 * (e.g. with the backend's mix_normalize) and passes it as x saves the copy. */
float *lt_resnet_input(lt_resnet *m);

/* What a training-mode forward does on the host besides the backend's work: one more batch in
 * every batch norm's num_batches_tracked. For a forward that ran without the walk (the training
 * step replayed from a recorded CUDA graph, lib/train/step.c). */
void lt_resnet_count_train_batch(lt_resnet *m);

/* Backward of the last (training-mode) forward: given dfeat (B, C) = ∂L/∂features, writes the
 * gradient of every parameter into m->grads (added to what is there when accumulate), and
 * ∂L/∂x (B, H, W, 3) into dinput unless it is NULL (an activation buffer of the backend: bf16 in
 * its first half when be->act_bf16). */
int lt_resnet_backward(lt_resnet *m, const float *dfeat, float *dinput, int accumulate);


/* Introspection for tests and debugging: the i-th ReLU output of the last forward, in the order
 * torchvision applies its ReLUs (the stem's, then per block after bn1, [after bn2,] after the
 * residual add), NHWC with its shape (B, h, w, c); NULL when i is out of range. In the backend's
 * memory, bf16 values in the buffer's first half when be->act_bf16. */
const float *lt_resnet_relu_output(const lt_resnet *m, int i, int64_t shape[4]);
/* The max pool's argmax of the last forward (see lt_maxpool_forward), shape (B, h, w, 64). */
const int32_t *lt_resnet_maxpool_argmax(const lt_resnet *m, int64_t shape[4]);

#endif
