/* test_abi.c - freezes the v1 ABI for x86_64 LP64: the size and every field
 * offset of every struct in abi/, and the values of every published enum.
 *
 * The numbers below were worked out by hand from the headers (natural
 * alignment, 8-byte pointers and 64-bit integers), not printed by a
 * compiler. A failure here means a struct changed shape or an enum was
 * renumbered: both break every plugin and host already built (DESIGN.md
 * section 3, rule 2). Fields may only be appended; when one is, add its
 * offset and the new size here. */
#include <stddef.h>

#include "test_util.h"

#if defined(__x86_64__) && defined(__LP64__)
#define OFF(type, field, n) _Static_assert(offsetof(type, field) == (n), #type "." #field)
#define SIZE(type, n) _Static_assert(sizeof(type) == (n), "sizeof " #type)

/* ---- lorakit_types.h ---- */
OFF(lk_tensor_t, struct_size, 0);
OFF(lk_tensor_t, dtype, 4);
OFF(lk_tensor_t, ndim, 8);
OFF(lk_tensor_t, reserved0, 12);
OFF(lk_tensor_t, shape, 16);
OFF(lk_tensor_t, data, 80);
OFF(lk_tensor_t, nbytes, 88);
OFF(lk_tensor_t, qformat, 96);
SIZE(lk_tensor_t, 104);

OFF(lk_error_t, struct_size, 0);
OFF(lk_error_t, code, 4);
OFF(lk_error_t, message, 8);
SIZE(lk_error_t, 520);

OFF(lk_device_info_t, struct_size, 0);
OFF(lk_device_info_t, type, 4);
OFF(lk_device_info_t, name, 8);
OFF(lk_device_info_t, memory_total, 136);
OFF(lk_device_info_t, memory_free, 144);
OFF(lk_device_info_t, compute_units, 152);
OFF(lk_device_info_t, reserved0, 156);
SIZE(lk_device_info_t, 160);

/* ---- lorakit_plugin.h ---- */
OFF(lk_host_api_t, struct_size, 0);
OFF(lk_host_api_t, abi_version, 4);
OFF(lk_host_api_t, log, 8);
OFF(lk_host_api_t, alloc_aligned, 16);
OFF(lk_host_api_t, free_aligned, 24);
OFF(lk_host_api_t, strerror, 32);
OFF(lk_host_api_t, convert, 40);
OFF(lk_host_api_t, get_proc, 48);
SIZE(lk_host_api_t, 56);

OFF(lk_op_tensor_t, struct_size, 0);
OFF(lk_op_tensor_t, dtype, 4);
OFF(lk_op_tensor_t, ndim, 8);
OFF(lk_op_tensor_t, reserved0, 12);
OFF(lk_op_tensor_t, shape, 16);
OFF(lk_op_tensor_t, buffer, 80);
OFF(lk_op_tensor_t, offset, 88);
OFF(lk_op_tensor_t, nbytes, 96);
OFF(lk_op_tensor_t, qformat, 104);
SIZE(lk_op_tensor_t, 112);

OFF(lk_op_t, struct_size, 0);
OFF(lk_op_t, code, 4);
OFF(lk_op_t, n_src, 8);
OFF(lk_op_t, n_dst, 12);
OFF(lk_op_t, src, 16);
OFF(lk_op_t, dst, 24);
OFF(lk_op_t, fparams, 32);
OFF(lk_op_t, iparams, 48);
SIZE(lk_op_t, 64);

OFF(lk_backend_config_t, struct_size, 0);
OFF(lk_backend_config_t, n_threads, 4);
OFF(lk_backend_config_t, device, 8);
OFF(lk_backend_config_t, reserved0, 12);
SIZE(lk_backend_config_t, 16);

OFF(lk_backend_vt_t, struct_size, 0);
OFF(lk_backend_vt_t, reserved0, 4);
OFF(lk_backend_vt_t, name, 8);
OFF(lk_backend_vt_t, description, 16);
OFF(lk_backend_vt_t, score, 24);
OFF(lk_backend_vt_t, create, 32);
OFF(lk_backend_vt_t, destroy, 40);
OFF(lk_backend_vt_t, device_count, 48);
OFF(lk_backend_vt_t, device_info, 56);
OFF(lk_backend_vt_t, supports, 64);
OFF(lk_backend_vt_t, buffer_alloc, 72);
OFF(lk_backend_vt_t, buffer_wrap, 80);
OFF(lk_backend_vt_t, buffer_free, 88);
OFF(lk_backend_vt_t, buffer_upload, 96);
OFF(lk_backend_vt_t, buffer_download, 104);
OFF(lk_backend_vt_t, submit, 112);
OFF(lk_backend_vt_t, synchronize, 120);
OFF(lk_backend_vt_t, get_extension, 128);
SIZE(lk_backend_vt_t, 136);

OFF(lk_quantiser_vt_t, struct_size, 0);
OFF(lk_quantiser_vt_t, reserved0, 4);
OFF(lk_quantiser_vt_t, name, 8);
OFF(lk_quantiser_vt_t, description, 16);
OFF(lk_quantiser_vt_t, block_elems, 24);
OFF(lk_quantiser_vt_t, block_bytes, 28);
OFF(lk_quantiser_vt_t, quantize, 32);
OFF(lk_quantiser_vt_t, dequantize, 40);
OFF(lk_quantiser_vt_t, get_extension, 48);
SIZE(lk_quantiser_vt_t, 56);

OFF(lk_tensor_info_t, struct_size, 0);
OFF(lk_tensor_info_t, dtype, 4);
OFF(lk_tensor_info_t, ndim, 8);
OFF(lk_tensor_info_t, reserved0, 12);
OFF(lk_tensor_info_t, shape, 16);
OFF(lk_tensor_info_t, nbytes, 80);
OFF(lk_tensor_info_t, name, 88);
OFF(lk_tensor_info_t, qformat, 96);
SIZE(lk_tensor_info_t, 104);

OFF(lk_loader_vt_t, struct_size, 0);
OFF(lk_loader_vt_t, reserved0, 4);
OFF(lk_loader_vt_t, name, 8);
OFF(lk_loader_vt_t, description, 16);
OFF(lk_loader_vt_t, probe, 24);
OFF(lk_loader_vt_t, open, 32);
OFF(lk_loader_vt_t, close, 40);
OFF(lk_loader_vt_t, tensor_count, 48);
OFF(lk_loader_vt_t, tensor_info, 56);
OFF(lk_loader_vt_t, tensor_read, 64);
OFF(lk_loader_vt_t, tensor_map, 72);
OFF(lk_loader_vt_t, metadata_json, 80);
OFF(lk_loader_vt_t, write, 88);
OFF(lk_loader_vt_t, get_extension, 96);
SIZE(lk_loader_vt_t, 104);

OFF(lk_backend_factory_t, struct_size, 0);
OFF(lk_backend_factory_t, count, 8);
OFF(lk_backend_factory_t, get, 16);
SIZE(lk_backend_factory_t, 24);

OFF(lk_quantiser_factory_t, struct_size, 0);
OFF(lk_quantiser_factory_t, count, 8);
OFF(lk_quantiser_factory_t, get, 16);
SIZE(lk_quantiser_factory_t, 24);

OFF(lk_loader_factory_t, struct_size, 0);
OFF(lk_loader_factory_t, count, 8);
OFF(lk_loader_factory_t, get, 16);
SIZE(lk_loader_factory_t, 24);

OFF(lk_plugin_t, struct_size, 0);
OFF(lk_plugin_t, abi_version, 4);
OFF(lk_plugin_t, id, 8);
OFF(lk_plugin_t, name, 16);
OFF(lk_plugin_t, version, 24);
OFF(lk_plugin_t, description, 32);
OFF(lk_plugin_t, init, 40);
OFF(lk_plugin_t, fini, 48);
OFF(lk_plugin_t, get_factory, 56);
SIZE(lk_plugin_t, 64);

/* ---- lorakit.h ---- */
OFF(lk_context_opts_t, struct_size, 0);
OFF(lk_context_opts_t, no_default_plugins, 4);
OFF(lk_context_opts_t, n_threads, 8);
OFF(lk_context_opts_t, reserved0, 12);
SIZE(lk_context_opts_t, 16);

OFF(lk_plugin_info_t, struct_size, 0);
OFF(lk_plugin_info_t, status, 4);
OFF(lk_plugin_info_t, path, 8);
OFF(lk_plugin_info_t, id, 16);
OFF(lk_plugin_info_t, name, 24);
OFF(lk_plugin_info_t, version, 32);
OFF(lk_plugin_info_t, description, 40);
OFF(lk_plugin_info_t, abi_version, 48);
OFF(lk_plugin_info_t, n_components, 52);
OFF(lk_plugin_info_t, reason, 56);
SIZE(lk_plugin_info_t, 64);

OFF(lk_component_info_t, struct_size, 0);
OFF(lk_component_info_t, kind, 4);
OFF(lk_component_info_t, name, 8);
OFF(lk_component_info_t, description, 16);
OFF(lk_component_info_t, plugin_index, 24);
OFF(lk_component_info_t, reserved0, 28);
SIZE(lk_component_info_t, 32);

OFF(lk_lora_config_t, struct_size, 0);
OFF(lk_lora_config_t, rank, 4);
OFF(lk_lora_config_t, alpha, 8);
OFF(lk_lora_config_t, scaling, 12);
OFF(lk_lora_config_t, seed, 16);
SIZE(lk_lora_config_t, 24);

OFF(lk_target_info_t, struct_size, 0);
OFF(lk_target_info_t, rank, 4);
OFF(lk_target_info_t, name, 8);
OFF(lk_target_info_t, in_features, 16);
OFF(lk_target_info_t, out_features, 24);
OFF(lk_target_info_t, alpha, 32);
OFF(lk_target_info_t, scale, 36);
SIZE(lk_target_info_t, 40);

/* Array extents that are part of the layout. */
_Static_assert(LK_MAX_DIMS == 8, "LK_MAX_DIMS");
_Static_assert(LK_ERROR_MAX == 512, "LK_ERROR_MAX");
_Static_assert(LK_NAME_MAX == 128, "LK_NAME_MAX");
#define ASIZE(type, field, n) _Static_assert(sizeof(((type *)0)->field) == (n), #type "." #field " size")
ASIZE(lk_tensor_t, shape, 64);
ASIZE(lk_op_tensor_t, shape, 64);
ASIZE(lk_tensor_info_t, shape, 64);
ASIZE(lk_error_t, message, 512);
ASIZE(lk_device_info_t, name, 128);
ASIZE(lk_op_t, fparams, 16);
ASIZE(lk_op_t, iparams, 16);
#endif /* x86_64 LP64 */

/* ---- enums: append-only, never renumbered ---- */
_Static_assert(sizeof(lk_status) == 4, "lk_status is int32_t");
_Static_assert(LK_OK == 0, "LK_OK");
_Static_assert(LK_ERR_INVALID_ARG == -1, "LK_ERR_INVALID_ARG");
_Static_assert(LK_ERR_NOMEM == -2, "LK_ERR_NOMEM");
_Static_assert(LK_ERR_IO == -3, "LK_ERR_IO");
_Static_assert(LK_ERR_FORMAT == -4, "LK_ERR_FORMAT");
_Static_assert(LK_ERR_UNSUPPORTED == -5, "LK_ERR_UNSUPPORTED");
_Static_assert(LK_ERR_SHAPE == -6, "LK_ERR_SHAPE");
_Static_assert(LK_ERR_DTYPE == -7, "LK_ERR_DTYPE");
_Static_assert(LK_ERR_NOT_FOUND == -8, "LK_ERR_NOT_FOUND");
_Static_assert(LK_ERR_ABI == -9, "LK_ERR_ABI");
_Static_assert(LK_ERR_PLUGIN == -10, "LK_ERR_PLUGIN");
_Static_assert(LK_ERR_STATE == -11, "LK_ERR_STATE");
_Static_assert(LK_ERR_BACKEND == -12, "LK_ERR_BACKEND");
_Static_assert(LK_ERR_EXISTS == -13, "LK_ERR_EXISTS");
_Static_assert(LK_ERR_MISMATCH == -14, "LK_ERR_MISMATCH");
_Static_assert(LK_ERR_CORRUPT == -15, "LK_ERR_CORRUPT");
_Static_assert(LK_ERR_BUSY == -16, "LK_ERR_BUSY");
_Static_assert(LK_ERR_INTERNAL == -17, "LK_ERR_INTERNAL");

_Static_assert(LK_DTYPE_INVALID == 0, "LK_DTYPE_INVALID");
_Static_assert(LK_DTYPE_F32 == 1, "LK_DTYPE_F32");
_Static_assert(LK_DTYPE_F16 == 2, "LK_DTYPE_F16");
_Static_assert(LK_DTYPE_BF16 == 3, "LK_DTYPE_BF16");
_Static_assert(LK_DTYPE_F64 == 4, "LK_DTYPE_F64");
_Static_assert(LK_DTYPE_I8 == 5, "LK_DTYPE_I8");
_Static_assert(LK_DTYPE_I16 == 6, "LK_DTYPE_I16");
_Static_assert(LK_DTYPE_I32 == 7, "LK_DTYPE_I32");
_Static_assert(LK_DTYPE_I64 == 8, "LK_DTYPE_I64");
_Static_assert(LK_DTYPE_U8 == 9, "LK_DTYPE_U8");
_Static_assert(LK_DTYPE_BOOL == 10, "LK_DTYPE_BOOL");
_Static_assert(LK_DTYPE_QUANT == 11, "LK_DTYPE_QUANT");
_Static_assert(LK_DTYPE_U16 == 12, "LK_DTYPE_U16");
_Static_assert(LK_DTYPE_U32 == 13, "LK_DTYPE_U32");
_Static_assert(LK_DTYPE_U64 == 14, "LK_DTYPE_U64");
_Static_assert(LK_DTYPE_F8_E4M3 == 15, "LK_DTYPE_F8_E4M3");
_Static_assert(LK_DTYPE_F8_E5M2 == 16, "LK_DTYPE_F8_E5M2");

_Static_assert(LK_OP_INVALID == 0, "LK_OP_INVALID");
_Static_assert(LK_OP_MATMUL == 1, "LK_OP_MATMUL");
_Static_assert(LK_OP_LORA_FORWARD == 2, "LK_OP_LORA_FORWARD");
_Static_assert(LK_OP_LORA_BACKWARD == 3, "LK_OP_LORA_BACKWARD");
_Static_assert(LK_OP_MERGE == 4, "LK_OP_MERGE");
_Static_assert(LK_OP_UNMERGE == 5, "LK_OP_UNMERGE");

_Static_assert(LK_KIND_QUANTISER == 1, "LK_KIND_QUANTISER");
_Static_assert(LK_KIND_BACKEND == 2, "LK_KIND_BACKEND");
_Static_assert(LK_KIND_LOADER == 3, "LK_KIND_LOADER");
_Static_assert(LK_SCALING_STANDARD == 0, "LK_SCALING_STANDARD");
_Static_assert(LK_SCALING_RSLORA == 1, "LK_SCALING_RSLORA");
_Static_assert(LK_DEVICE_CPU == 1, "LK_DEVICE_CPU");
_Static_assert(LK_DEVICE_GPU == 2, "LK_DEVICE_GPU");
_Static_assert(LK_DEVICE_OTHER == 3, "LK_DEVICE_OTHER");
_Static_assert(LK_LOG_ERROR == 0, "LK_LOG_ERROR");
_Static_assert(LK_LOG_WARN == 1, "LK_LOG_WARN");
_Static_assert(LK_LOG_INFO == 2, "LK_LOG_INFO");
_Static_assert(LK_LOG_DEBUG == 3, "LK_LOG_DEBUG");
_Static_assert(LK_PLUGIN_LOADED == 0, "LK_PLUGIN_LOADED");
_Static_assert(LK_PLUGIN_REFUSED == 1, "LK_PLUGIN_REFUSED");

/* ---- version packing ---- */
_Static_assert(LK_MAKE_ABI(1, 0) == 0x00010000u, "LK_MAKE_ABI packs major << 16 | minor");
_Static_assert(LK_MAKE_ABI(2, 7) == 0x00020007u, "LK_MAKE_ABI(2, 7)");
_Static_assert(LK_ABI_MAJOR_OF(0x00030005u) == 3, "LK_ABI_MAJOR_OF");
_Static_assert(LK_ABI_MINOR_OF(0x00030005u) == 5, "LK_ABI_MINOR_OF");
_Static_assert(LK_PLUGIN_ABI_VERSION == 0x00010000u, "plugin ABI is 1.0");
_Static_assert(LK_PLUGIN_ABI_MIN == 0x00010000u, "oldest plugin ABI loaded is 1.0");
_Static_assert(LK_VERSION_NUMBER == 10000, "1.0.0 is 10000");

/* The factory ids are part of the ABI too: an id never changes. */
START_TEST(factory_ids_are_frozen) {
  ck_assert_str_eq(LK_FACTORY_QUANTISER, "lk.factory.quantiser/1");
  ck_assert_str_eq(LK_FACTORY_BACKEND, "lk.factory.backend/1");
  ck_assert_str_eq(LK_FACTORY_LOADER, "lk.factory.loader/1");
  ck_assert_str_eq(LK_PLUGIN_ENTRY_SYMBOL, "lk_plugin_entry");
  ck_assert_str_eq(LK_VERSION_STRING, "1.0.0");
}
END_TEST

/* LK_HAS_FIELD: a reader sees a field only when the filler's struct_size
 * reaches its end. Checked on hand-picked sizes around lk_plugin_t.init
 * (offset 40, 8 bytes). */
START_TEST(has_field_needs_the_whole_field) {
  lk_plugin_t p;
  memset(&p, 0, sizeof p);
  p.struct_size = 40;
  ck_assert(!LK_HAS_FIELD(&p, lk_plugin_t, init));
  ck_assert(LK_HAS_FIELD(&p, lk_plugin_t, description));
  p.struct_size = 47;
  ck_assert(!LK_HAS_FIELD(&p, lk_plugin_t, init));
  p.struct_size = 48;
  ck_assert(LK_HAS_FIELD(&p, lk_plugin_t, init));
  ck_assert(!LK_HAS_FIELD(&p, lk_plugin_t, fini));
  p.struct_size = 64;
  ck_assert(LK_HAS_FIELD(&p, lk_plugin_t, get_factory));
}
END_TEST

/* The library built from these headers reports the same versions. */
START_TEST(library_matches_headers) {
  ck_assert_uint_eq(lk_version(), LK_VERSION_NUMBER);
  ck_assert_str_eq(lk_version_string(), LK_VERSION_STRING);
  ck_assert_uint_eq(lk_plugin_abi_version(), LK_PLUGIN_ABI_VERSION);
}
END_TEST

static Suite *abi_suite(void) {
  Suite *s = suite_create("abi");
  TCase *tc = tcase_create("frozen");
  tcase_add_test(tc, factory_ids_are_frozen);
  tcase_add_test(tc, has_field_needs_the_whole_field);
  tcase_add_test(tc, library_matches_headers);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(abi_suite()); }
