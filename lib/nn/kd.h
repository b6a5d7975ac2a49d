/* kd.h: the distillation method of docs/architecture.md §1 from the projection head's output on: L2
 * normalisation, the queue of teacher embeddings (the "pseudo classifier"), and the KL loss with
 * its exact gradient.
 *
 * Why it exists: lt-train's step is "student → head → normalise → push the teacher batch into the
 * queue → loss → backward", and everything after the head is method-specific, tiny in FLOPs and
 * easy to get subtly wrong (push order, the B >= Q rule, the zero queue, batchmean). Keeping it in
 * one module with explicit forward/backward functions over caller-owned buffers (llm.c style) lets
 * the tests compare each piece with PyTorch and lets a CUDA twin follow the same contract.
 *
 * One training step, with t_raw the teacher embeddings (from the cache) and h the head output:
 *
 *   lt_op_l2norm(t, tn, t_raw, B, D)        (optional: cached embeddings are normalised
 *                                                 already, up to float16 rounding)
 *   lt_op_l2norm(s, sn, h, B, D)
 *   lt_queue_push(&queue, t, B)                  push BEFORE the loss, as LightlyTrain does
 *   lt_kd_loss_forward(&loss, t, s, queue.data, B, queue.Q, D, tau, probs)
 *   lt_kd_loss_backward(ds, probs, queue.data, B, queue.Q, D, tau)
 *   lt_op_l2norm_backward(dh, ds, s, sn, B, D)      → into the head's backward
 *
 * All matrices are row-major float32. Results are bitwise reproducible for a fixed thread count
 * (GEMMs via cblas_sgemm, row loops with static OpenMP schedules, per-row sums in double in a
 * fixed order, the batch sum in a fixed order). */
#ifndef LT_NN_KD_H
#define LT_NN_KD_H

#include <stdint.h>

#include "nn/ops.h" /* lt_op_l2norm, the L2 normalisation of the method */

/* ---- The input: uint8 views and λ to the network's input ---- */

/* x (B, HW, 3) = normalise(λ_i · a/255 + (1 − λ_i) · b/255) per sample i, channel c:
 * (v − mean[c]) / std[c]; a, b (B, HW, 3) uint8, b NULL = no partner (λ ignored), lambda (B).
 * The arithmetic of lt_mix_normalize (image/render.h), sample by sample. */
int lt_mix_normalize_batch(float *x, const uint8_t *a, const uint8_t *b, const float *lambda,
                           int B, int HW, const float mean[3], const float std[3]);

/* ---- The queue of teacher embeddings ---- */

typedef struct {
    float *data; /* (Q, D): row 0 is the newest embedding; starts all zero; owned */
    int Q, D;
} lt_queue;

/* Allocates a zero (Q, D) queue. Returns 0, or -1 with lt_err_set. */
int lt_queue_init(lt_queue *q, int Q, int D);
void lt_queue_free(lt_queue *q);

/* Pushes a batch x (B, D) to the front (LightlyTrain's Distillation._update_queue):
 *   B <  Q: rows 0..Q−B−1 move to B..Q−1 (the last B rows, the oldest, fall off), then
 *           rows 0..B−1 = x (x's row order kept: queue row i = x row i);
 *   B >= Q: the queue becomes x's first Q rows (all old entries are dropped).
 * Returns 0, or -1 (B <= 0, or the queue is not initialised). */
int lt_queue_push(lt_queue *q, const float *x, int B);
/* The same push on a bare (Q, D) array (what a backend's queue_push entry does). */
int lt_queue_push_rows(float *queue, int Q, int D, const float *x, int B);

/* `--queue-size auto`: Q for a dataset of N images, the first row of docs/architecture.md §1's table whose
 * bound N is strictly below (N < bound), as LightlyTrain's bucket lookup does:
 *   N < 50 → 16,  N < 100 → 32,  N < 250 → 64,  N < 500 → 128,  N < 1000 → 256,
 *   N < 2000 → 512,  N < 4000 → 1024,  N < 10000 → 2048,  N < 20000 → 4096,  else 8192.
 * So N = 49 gives 16 and N = 50 gives 32; "1k" means 1000, "10k" 10000. The auto size is not
 * checked against N (a 20-image dataset gets 16; LightlyTrain does the same). */
int lt_queue_size_auto(int64_t N);

/* An explicit `--queue-size Q` must satisfy 1 <= Q < N (LightlyTrain rejects Q >= N). Returns 0,
 * or -1 with a message naming both numbers and the fix. */
int lt_queue_size_check(int64_t Q, int64_t N);

/* ---- The loss ---- */

/* KL(softmax(t·Qᵀ/τ) ‖ softmax(s·Qᵀ/τ)) summed over the queue entries, mean over the batch:
 *   logits_t = t · queueᵀ / τ,  logits_s = s · queueᵀ / τ                  (B, Q)
 *   p_t = softmax(logits_t),  log p_s = log_softmax(logits_s)              (rows, max-subtracted)
 *   loss = (1/B) Σ_b Σ_q p_t[b,q] · (log p_t[b,q] − log p_s[b,q])
 * = torch.nn.KLDivLoss(reduction="batchmean")(log_softmax(logits_s), softmax(logits_t)).
 * t, s (B, D) are the L2-normalised teacher and student embeddings, queue (Qn, D) the queue after
 * the push. probs (2, B, Qn) receives p_t, then p_s − p_t (formed in double before rounding, so a
 * small gradient keeps its relative precision when p_s ≈ p_t); the backward reads it. log p is
 * formed as logit − logsumexp, so entries whose probability underflows to 0 add exactly 0. An
 * all-zero queue gives uniform softmaxes, loss 0 and gradient 0 exactly. *loss gets the value
 * (per-row sums in double). Returns 0, or -1 with lt_err_set on bad sizes / τ <= 0. */
int lt_kd_loss_forward(double *loss, const float *t, const float *s, const float *queue, int B,
                       int Qn, int D, float tau, float *probs);

/* dL/ds (B, D) = (p_s − p_t) · queue / (τ · B), one GEMM from the probs the forward left. */
int lt_kd_loss_backward(float *ds, const float *probs, const float *queue, int B, int Qn, int D,
                         float tau);

#endif
