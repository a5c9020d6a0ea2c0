/* isa.c - CPUID/XGETBV detection of the CPU backend's ISA path (isa.h). */
#include "isa.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define CPU_ARCH_GET_XCOMP_PERM 0x1022
#define CPU_ARCH_REQ_XCOMP_PERM 0x1023
#define CPU_XFEATURE_XTILEDATA 18
#endif
#endif

static const char *const isa_names[CPU_ISA_COUNT] = {"portable", "avx2", "avx512", "avx512bf16",
                                                     "amx"};

const char *cpu_isa_name(cpu_isa_t isa) {
  return (unsigned)isa < CPU_ISA_COUNT ? isa_names[isa] : "unknown";
}

int cpu_isa_parse(const char *name) {
  if (!name) return -1;
  for (int i = 0; i < CPU_ISA_COUNT; i++)
    if (!strcmp(name, isa_names[i])) return i;
  return -1;
}

/* Every path has its own kernels now (AMX: the tile kernel gemm_amx.c for
 * bf16 GEMMs; fp32 GEMMs and the vector loops run AVX-512 code there). */
cpu_isa_t cpu_isa_kernel(cpu_isa_t isa) { return isa; }

#if defined(__x86_64__) || defined(__i386__)
static uint64_t isa_xgetbv(void) {
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return ((uint64_t)hi << 32) | lo;
}

#if defined(__linux__)
/* Linux gates the AMX tile data state per process. */
static int isa_amx_permitted(void) {
  uint64_t mask = 0;
  if (syscall(SYS_arch_prctl, CPU_ARCH_GET_XCOMP_PERM, &mask) == 0 &&
      (mask & (1ull << CPU_XFEATURE_XTILEDATA)))
    return 1;
  if (syscall(SYS_arch_prctl, CPU_ARCH_REQ_XCOMP_PERM, CPU_XFEATURE_XTILEDATA) != 0) return 0;
  return syscall(SYS_arch_prctl, CPU_ARCH_GET_XCOMP_PERM, &mask) == 0 &&
         (mask & (1ull << CPU_XFEATURE_XTILEDATA));
}
#else
static int isa_amx_permitted(void) { return 0; }
#endif

static cpu_isa_t isa_detect(void) {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return CPU_ISA_PORTABLE;
  int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, fma = (c >> 12) & 1;
  if (!osxsave || !avx || !fma) return CPU_ISA_PORTABLE;
  uint64_t xcr0 = isa_xgetbv();
  if ((xcr0 & 0x6) != 0x6) return CPU_ISA_PORTABLE; /* XMM and YMM state */
  if (__get_cpuid_max(0, NULL) < 7) return CPU_ISA_PORTABLE;
  __cpuid_count(7, 0, a, b, c, d);
  unsigned b7 = b, d7 = d;
  if (!((b7 >> 5) & 1)) return CPU_ISA_PORTABLE; /* AVX2 */
  cpu_isa_t best = CPU_ISA_AVX2;
  /* AVX-512 F(16) DQ(17) BW(30) VL(31), and opmask/ZMM_Hi256/Hi16_ZMM state. */
  int avx512 = ((b7 >> 16) & 1) && ((b7 >> 17) & 1) && ((b7 >> 30) & 1) && ((b7 >> 31) & 1);
  if (!avx512 || (xcr0 & 0xe0) != 0xe0) return best;
  best = CPU_ISA_AVX512;
  __cpuid_count(7, 1, a, b, c, d);
  if (!((a >> 5) & 1)) return best; /* AVX512_BF16 */
  best = CPU_ISA_AVX512BF16;
  /* AMX-BF16 (EDX 22) and AMX-TILE (EDX 24), XTILECFG|XTILEDATA (bits 17, 18). */
  if (((d7 >> 22) & 1) && ((d7 >> 24) & 1) && (xcr0 & 0x60000) == 0x60000 && isa_amx_permitted())
    best = CPU_ISA_AMX;
  return best;
}
#else
static cpu_isa_t isa_detect(void) { return CPU_ISA_PORTABLE; }
#endif

static pthread_once_t isa_once = PTHREAD_ONCE_INIT;
static cpu_isa_t isa_best_v, isa_used_v;
static char isa_desc[96];

static void isa_init(void) {
  isa_best_v = isa_detect();
  isa_used_v = isa_best_v;
  const char *want = secure_getenv("LORAKIT_CPU_ISA");
  if (want && want[0]) {
    int w = cpu_isa_parse(want);
    if (w < 0)
      fprintf(stderr, "lorakit cpu: LORAKIT_CPU_ISA=%s is not one of portable, avx2, avx512, "
                      "avx512bf16, amx; using %s\n", want, cpu_isa_name(isa_best_v));
    else if ((cpu_isa_t)w > isa_best_v)
      fprintf(stderr, "lorakit cpu: LORAKIT_CPU_ISA=%s: this CPU lacks it; using %s, the best "
                      "it has\n", want, cpu_isa_name(isa_best_v));
    else
      isa_used_v = (cpu_isa_t)w;
  }
  if (cpu_isa_kernel(isa_used_v) != isa_used_v)
    snprintf(isa_desc, sizeof isa_desc, "%s (kernels: %s; best: %s)", cpu_isa_name(isa_used_v),
             cpu_isa_name(cpu_isa_kernel(isa_used_v)), cpu_isa_name(isa_best_v));
  else
    snprintf(isa_desc, sizeof isa_desc, "%s (best: %s)", cpu_isa_name(isa_used_v),
             cpu_isa_name(isa_best_v));
}

cpu_isa_t cpu_isa_best(void) {
  pthread_once(&isa_once, isa_init);
  return isa_best_v;
}

cpu_isa_t cpu_isa(void) {
  pthread_once(&isa_once, isa_init);
  return isa_used_v;
}

const char *cpu_isa_describe(void) {
  pthread_once(&isa_once, isa_init);
  return isa_desc;
}

int cpu_isa_default_bf16(void) {
  const char *comp = secure_getenv("LORAKIT_CPU_COMPUTE");
  return comp && !strcmp(comp, "bf16");
}
