/* test_quant_nf4_files.h - bitsandbytes 4-bit tensors in safetensors (part of
 * test_quant_nf4.c). */
static void nf_files_tests(TCase *tc) { (void)tc; }
