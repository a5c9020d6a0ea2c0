/* gq.h - internal interface of the quant-ggml plugin (org.lorakit.quant-ggml).
 *
 * The GGML block formats, bit-exact with llama.cpp (ggml-common.h block
 * layouts, ggml-quants.c dequantize_row_* and quantize_row_*_ref) and with
 * gguf-py's gguf.quants. Two parts, prefix gq_:
 *   gq_blocks.c  f16 conversion, one block's dequantise and quantise per format
 *                (the K-quants' quantisers apart);
 *   gq_kquants.c the K-quants' reference quantisers (quantize_row_qN_K_ref);
 *   plugin.c     the format table as data, the quantiser vtables, the entry.
 * Nothing here is exported: the plugin exports only lk_plugin_entry. */
#ifndef LORAKIT_GQ_H
#define LORAKIT_GQ_H

#include "lorakit_plugin.h"

#include <stdint.h>

#define GQ_PLUGIN_ID "org.lorakit.quant-ggml"
#define GQ_QK 32   /* QK4_0 = QK4_1 = QK5_0 = QK5_1 = QK8_0 */
#define GQ_QK_K 256 /* super-block of the K-quants */

/* IEEE binary16 <-> binary32; to_f16 rounds to nearest even (as ggml's
 * GGML_FP32_TO_FP16 and numpy's astype(float16) do), NaN -> 0x7E00. */
float gq_f16_to_f32(uint16_t h);
uint16_t gq_f32_to_f16(float f);

/* One block: `in` holds block_bytes bytes, `out` block_elems floats. */
typedef void (*gq_deq_fn)(const uint8_t *in, float *out);
/* One block of block_elems floats -> block_bytes bytes (the reference
 * quantiser, no importance matrix). */
typedef void (*gq_q_fn)(const float *in, uint8_t *out);

void gq_deq_q4_0(const uint8_t *in, float *out);
void gq_deq_q4_1(const uint8_t *in, float *out);
void gq_deq_q5_0(const uint8_t *in, float *out);
void gq_deq_q5_1(const uint8_t *in, float *out);
void gq_deq_q8_0(const uint8_t *in, float *out);
void gq_deq_q2_k(const uint8_t *in, float *out);
void gq_deq_q3_k(const uint8_t *in, float *out);
void gq_deq_q4_k(const uint8_t *in, float *out);
void gq_deq_q5_k(const uint8_t *in, float *out);
void gq_deq_q6_k(const uint8_t *in, float *out);

void gq_q_q4_0(const float *in, uint8_t *out);
void gq_q_q4_1(const float *in, uint8_t *out);
void gq_q_q5_0(const float *in, uint8_t *out);
void gq_q_q5_1(const float *in, uint8_t *out);
void gq_q_q8_0(const float *in, uint8_t *out);
/* gq_kquants.c: one 256-element super-block, llama.cpp's quantize_row_*_ref.
 * The input must be finite (gq_quantize checks). */
void gq_q_q2_k(const float *in, uint8_t *out);
void gq_q_q3_k(const float *in, uint8_t *out);
void gq_q_q4_k(const float *in, uint8_t *out);
void gq_q_q5_k(const float *in, uint8_t *out);
void gq_q_q6_k(const float *in, uint8_t *out);

#endif /* LORAKIT_GQ_H */
