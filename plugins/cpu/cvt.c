/* cvt.c - f32 <-> bf16 conversion on the path in use (gemm.h): the AVX-512
 * BF16 / AVX-512 vector loops where the path has them, else scalar. */
#include "gemm.h"
#include "gemm_kern.h"

#include <string.h>

void cpu_f32_to_bf16(const float *src, uint16_t *dst, int64_t n) {
#if defined(__x86_64__)
  if (cpu_isa_kernel(cpu_isa()) >= CPU_ISA_AVX512BF16) {
    cpu_cvt_f32_bf16_avx512bf16(src, dst, n);
    return;
  }
#endif
  for (int64_t i = 0; i < n; i++) {
    float r = cpu_round_bf16(src[i]);
    uint32_t u;
    memcpy(&u, &r, 4);
    dst[i] = (uint16_t)(u >> 16);
  }
}

void cpu_bf16_to_f32(const uint16_t *src, float *dst, int64_t n) {
#if defined(__x86_64__)
  if (cpu_isa() >= CPU_ISA_AVX512) {
    cpu_cvt_bf16_f32_avx512(src, dst, n);
    return;
  }
#endif
  for (int64_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)src[i] << 16;
    memcpy(&dst[i], &u, 4);
  }
}
