/* layout.h — the blocked activation layout NCHW<b>c and the ops that use it.
 *
 * A blocked tensor holds an NCHW tensor (N, C, H, W) as (N, C/b, H, W, b): channel
 * c = cb * b + ci lives at [n][cb][h][w][ci], so the b channels of one pixel are adjacent and
 * one vector load or store moves them.  b is the target's vector width in floats (8 with
 * AVX2, 16 with AVX-512) and divides C (the layout pass blocks only such tensors).
 *
 *   kiln.ToBlocked(X)   {block}: (N, C, H, W) -> (N, C/b, H, W, b)
 *   kiln.FromBlocked(X) {block}: (N, C/b, H, W, b) -> (N, C, H, W)
 *   kiln.BlockedConv(X, W, B?, Z?) {Conv's attributes (group 1), activation, has_residual,
 *       block}: FusedConv on blocked tensors.  X (N, IC/b, H, W, b); W the Conv weights
 *       (OC, IC, KH, KW) blocked as (OC/b, IC/b, KH, KW, b_ic, b_oc), so the b output
 *       channels of one (input channel, tap) are one vector; B (OC) plain; Z and Y
 *       (N, OC/b, OH, OW, b).
 *
 * The helpers below move data between the layouts; the pass (weights), the reference kernels
 * and the tests share them. */
#ifndef KILN_OPS_LAYOUT_H
#define KILN_OPS_LAYOUT_H

#include "ir/graph.h"

#define KILN_BLOCK_MAX 64

/* Reads the `block` attribute (1..KILN_BLOCK_MAX); errors name it. */
kiln_code kiln_block_get(const kiln_node *n, int64_t *b, kiln_err *e);

/* (N, C, HW) plain <-> (N, C/b, HW, b) blocked; C % b == 0. */
void kiln_block_act(const float *x, float *y, int64_t N, int64_t C, int64_t HW, int64_t b);
void kiln_unblock_act(const float *x, float *y, int64_t N, int64_t C, int64_t HW, int64_t b);

/* Conv weights (OC, IC, K) <-> (OC/b, IC/b, K, b_ic, b_oc); OC and IC divisible by b. */
void kiln_block_weights(const float *w, float *wb, int64_t OC, int64_t IC, int64_t K, int64_t b);
void kiln_unblock_weights(const float *wb, float *w, int64_t OC, int64_t IC, int64_t K, int64_t b);

#endif
