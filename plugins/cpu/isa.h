/* isa.h - run-time choice of the CPU backend's instruction-set path (isa.c).
 * Detected once per process from CPUID and XGETBV (the OS must save the YMM,
 * ZMM/opmask and, for AMX, the tile state; on Linux AMX also needs
 * arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)). LORAKIT_CPU_ISA
 * (read with secure_getenv) may force a lower path; a path the CPU lacks falls
 * back to the best available with one line on stderr. Internal to the
 * plugin: nothing here crosses the plugin boundary. */
#ifndef LK_CPU_ISA_H
#define LK_CPU_ISA_H

/* Ordered: each path needs everything the lower ones need. */
typedef enum cpu_isa {
  CPU_ISA_PORTABLE = 0,   /* plain C (SSE2 baseline), any x86-64 or other CPU */
  CPU_ISA_AVX2 = 1,       /* AVX2 + FMA (+ F16C) */
  CPU_ISA_AVX512 = 2,     /* AVX-512 F/BW/VL/DQ */
  CPU_ISA_AVX512BF16 = 3, /* + AVX512_BF16 (vdpbf16ps, vcvtne2ps2bf16) */
  CPU_ISA_AMX = 4,        /* + AMX-TILE/AMX-BF16, tile state permitted */
  CPU_ISA_COUNT = 5
} cpu_isa_t;

/* The best path this CPU and OS support (cached). */
cpu_isa_t cpu_isa_best(void);
/* The path in use: cpu_isa_best(), lowered by LORAKIT_CPU_ISA; chosen once. */
cpu_isa_t cpu_isa(void);
/* "portable", "avx2", "avx512", "avx512bf16", "amx". */
const char *cpu_isa_name(cpu_isa_t isa);
/* Parse a name as above; -1 when unknown. */
int cpu_isa_parse(const char *name);
/* The path the GEMM kernels actually run for isa: isa itself now that AMX
 * has its tile kernel (bf16 GEMMs on AMX tiles; fp32 GEMMs, conversions and
 * elementwise loops on the AMX path run the AVX-512 code, AMX having no fp32
 * or vector instructions of its own). Kept as the one place a path without
 * kernels of its own would be mapped to a lower one. */
cpu_isa_t cpu_isa_kernel(cpu_isa_t isa);
/* One line describing the path in use, e.g. "avx512bf16 (best: avx512bf16)". */
const char *cpu_isa_describe(void);
/* 1 when LORAKIT_CPU_COMPUTE=bf16 asks for bf16 compute (read at each call,
 * i.e. at each backend create: an interim switch until the session API
 * carries it). */
int cpu_isa_default_bf16(void);

#endif /* LK_CPU_ISA_H */
