/* test_abi.c - freezes plugin ABI 2.0 / liblorakit.so.2 for x86_64 LP64:
 * the size and every field offset of every struct in abi/ (staging
 * included), every published enum value, the frozen minimum sizes
 * (LK_MIN_SIZE_*) and version packing.
 *
 * The offsets and sizes were worked out by hand from the field lists
 * (natural alignment: 4-byte int32/uint32/float, 8-byte int64/uint64/
 * double/pointers, arrays of LK_MAX_DIMS = 8 and LK_NAME_MAX = 128, the
 * struct padded to its largest member), not printed by a compiler. A
 * failure means a struct changed shape or an enum was renumbered, which
 * breaks every plugin and host already built (DESIGN.md section 3 rule 2).
 * A growable struct may gain fields at its end in a later minor: add their
 * offsets and the new size here, and leave its LK_MIN_SIZE_ value alone.
 * The array structs (lk_tensor_t, lk_view_t, lk_view_part_t, lk_op_t,
 * lk_quant_part_t, lk_adapter_target_t) never change at all. */
#define LORAKIT_STAGING 1
#include <stddef.h>

#include "lorakit_staging.h"
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
OFF(lk_device_info_t, unified_memory, 156);
OFF(lk_device_info_t, max_alloc, 160);
OFF(lk_device_info_t, offset_align, 168);
OFF(lk_device_info_t, can_wrap, 176);
OFF(lk_device_info_t, reserved0, 180);
OFF(lk_device_info_t, driver, 184);
SIZE(lk_device_info_t, 312);

/* ---- lorakit_ops.h ---- */
OFF(lk_view_part_t, struct_size, 0);
OFF(lk_view_part_t, reserved0, 4);
OFF(lk_view_part_t, name, 8);
OFF(lk_view_part_t, buffer, 16);
OFF(lk_view_part_t, offset, 24);
OFF(lk_view_part_t, nbytes, 32);
SIZE(lk_view_part_t, 40);
OFF(lk_view_t, struct_size, 0);
OFF(lk_view_t, dtype, 4);
OFF(lk_view_t, ndim, 8);
OFF(lk_view_t, n_parts, 12);
OFF(lk_view_t, shape, 16);
OFF(lk_view_t, stride, 80);
OFF(lk_view_t, buffer, 144);
OFF(lk_view_t, offset, 152);
OFF(lk_view_t, qformat, 160);
OFF(lk_view_t, qopts, 168);
OFF(lk_view_t, parts, 176);
SIZE(lk_view_t, 184);
OFF(lk_op_t, struct_size, 0);
OFF(lk_op_t, id, 4);
OFF(lk_op_t, ext_id, 8);
OFF(lk_op_t, n_src, 16);
OFF(lk_op_t, n_dst, 20);
OFF(lk_op_t, src, 24);
OFF(lk_op_t, dst, 32);
OFF(lk_op_t, params, 40);
SIZE(lk_op_t, 48);
OFF(lk_op_fill_t, struct_size, 0);
OFF(lk_op_fill_t, value, 4);
SIZE(lk_op_fill_t, 8);
OFF(lk_op_add_t, struct_size, 0);
OFF(lk_op_add_t, alpha, 4);
OFF(lk_op_add_t, beta, 8);
SIZE(lk_op_add_t, 12);
OFF(lk_op_scale_t, struct_size, 0);
OFF(lk_op_scale_t, alpha, 4);
OFF(lk_op_scale_t, accumulate, 8);
SIZE(lk_op_scale_t, 12);
OFF(lk_op_accumulate_t, struct_size, 0);
OFF(lk_op_accumulate_t, accumulate, 4);
SIZE(lk_op_accumulate_t, 8);
OFF(lk_op_matmul_t, struct_size, 0);
OFF(lk_op_matmul_t, trans_w, 4);
OFF(lk_op_matmul_t, accumulate, 8);
OFF(lk_op_matmul_t, alpha, 12);
OFF(lk_op_matmul_t, compute, 16);
SIZE(lk_op_matmul_t, 20);
OFF(lk_op_lora_t, struct_size, 0);
OFF(lk_op_lora_t, scale, 4);
OFF(lk_op_lora_t, accumulate, 8);
OFF(lk_op_lora_t, dropout, 12);
OFF(lk_op_lora_t, seed, 16);
OFF(lk_op_lora_t, compute, 24);
OFF(lk_op_lora_t, reserved0, 28);
SIZE(lk_op_lora_t, 32);
OFF(lk_op_merge_t, struct_size, 0);
OFF(lk_op_merge_t, scale, 4);
SIZE(lk_op_merge_t, 8);
OFF(lk_op_rmsnorm_t, struct_size, 0);
OFF(lk_op_rmsnorm_t, eps, 4);
OFF(lk_op_rmsnorm_t, accumulate, 8);
SIZE(lk_op_rmsnorm_t, 12);
OFF(lk_op_rope_t, struct_size, 0);
OFF(lk_op_rope_t, theta, 4);
OFF(lk_op_rope_t, n_rot, 8);
OFF(lk_op_rope_t, scaling, 12);
OFF(lk_op_rope_t, factor, 16);
OFF(lk_op_rope_t, low_freq_factor, 20);
OFF(lk_op_rope_t, high_freq_factor, 24);
OFF(lk_op_rope_t, original_max_pos, 28);
OFF(lk_op_rope_t, inverse, 32);
SIZE(lk_op_rope_t, 36);
OFF(lk_op_attention_t, struct_size, 0);
OFF(lk_op_attention_t, scale, 4);
OFF(lk_op_attention_t, causal, 8);
OFF(lk_op_attention_t, accumulate, 12);
SIZE(lk_op_attention_t, 16);
OFF(lk_op_cross_entropy_t, struct_size, 0);
OFF(lk_op_cross_entropy_t, ignore_index, 4);
OFF(lk_op_cross_entropy_t, denominator, 8);
OFF(lk_op_cross_entropy_t, accumulate, 12);
SIZE(lk_op_cross_entropy_t, 16);
OFF(lk_op_adamw_t, struct_size, 0);
OFF(lk_op_adamw_t, lr, 4);
OFF(lk_op_adamw_t, beta1, 8);
OFF(lk_op_adamw_t, beta2, 12);
OFF(lk_op_adamw_t, eps, 16);
OFF(lk_op_adamw_t, weight_decay, 20);
OFF(lk_op_adamw_t, grad_scale, 24);
OFF(lk_op_adamw_t, max_grad_norm, 28);
OFF(lk_op_adamw_t, step, 32);
SIZE(lk_op_adamw_t, 40);

/* ---- lorakit_plugin.h ---- */
OFF(lk_host_api_t, struct_size, 0);
OFF(lk_host_api_t, abi_version, 4);
OFF(lk_host_api_t, log, 8);
OFF(lk_host_api_t, alloc_aligned, 16);
OFF(lk_host_api_t, free_aligned, 24);
OFF(lk_host_api_t, strerror, 32);
OFF(lk_host_api_t, convert, 40);
OFF(lk_host_api_t, get_proc, 48);
OFF(lk_host_api_t, find_quantiser, 56);
OFF(lk_host_api_t, find_quantiser_gguf, 64);
SIZE(lk_host_api_t, 72);
OFF(lk_backend_config_t, struct_size, 0);
OFF(lk_backend_config_t, device, 4);
OFF(lk_backend_config_t, n_threads, 8);
OFF(lk_backend_config_t, reserved0, 12);
SIZE(lk_backend_config_t, 16);
OFF(lk_backend_vt_t, struct_size, 0);
OFF(lk_backend_vt_t, reserved0, 4);
OFF(lk_backend_vt_t, name, 8);
OFF(lk_backend_vt_t, description, 16);
OFF(lk_backend_vt_t, score, 24);
OFF(lk_backend_vt_t, device_count, 32);
OFF(lk_backend_vt_t, device_info, 40);
OFF(lk_backend_vt_t, create, 48);
OFF(lk_backend_vt_t, destroy, 56);
OFF(lk_backend_vt_t, supports, 64);
OFF(lk_backend_vt_t, buffer_alloc, 72);
OFF(lk_backend_vt_t, buffer_wrap, 80);
OFF(lk_backend_vt_t, buffer_free, 88);
OFF(lk_backend_vt_t, buffer_map, 96);
OFF(lk_backend_vt_t, buffer_unmap, 104);
OFF(lk_backend_vt_t, upload, 112);
OFF(lk_backend_vt_t, download, 120);
OFF(lk_backend_vt_t, submit, 128);
OFF(lk_backend_vt_t, fence_wait, 136);
OFF(lk_backend_vt_t, fence_free, 144);
OFF(lk_backend_vt_t, synchronize, 152);
OFF(lk_backend_vt_t, get_extension, 160);
SIZE(lk_backend_vt_t, 168);
OFF(lk_backend_ext_record_t, struct_size, 0);
OFF(lk_backend_ext_record_t, reserved0, 4);
OFF(lk_backend_ext_record_t, record, 8);
OFF(lk_backend_ext_record_t, replay, 16);
OFF(lk_backend_ext_record_t, free, 24);
SIZE(lk_backend_ext_record_t, 32);
OFF(lk_quant_opts_t, struct_size, 0);
OFF(lk_quant_opts_t, block_size, 4);
OFF(lk_quant_opts_t, double_quant, 8);
OFF(lk_quant_opts_t, dq_block_size, 12);
SIZE(lk_quant_opts_t, 16);
OFF(lk_quant_part_t, struct_size, 0);
OFF(lk_quant_part_t, dtype, 4);
OFF(lk_quant_part_t, name, 8);
OFF(lk_quant_part_t, nbytes, 16);
SIZE(lk_quant_part_t, 24);
OFF(lk_quantiser_vt_t, struct_size, 0);
OFF(lk_quantiser_vt_t, reserved0, 4);
OFF(lk_quantiser_vt_t, name, 8);
OFF(lk_quantiser_vt_t, description, 16);
OFF(lk_quantiser_vt_t, gguf_type, 24);
OFF(lk_quantiser_vt_t, block_elems, 28);
OFF(lk_quantiser_vt_t, block_bytes, 32);
OFF(lk_quantiser_vt_t, reserved1, 36);
OFF(lk_quantiser_vt_t, bnb_name, 40);
OFF(lk_quantiser_vt_t, create, 48);
OFF(lk_quantiser_vt_t, destroy, 56);
OFF(lk_quantiser_vt_t, part_count, 64);
OFF(lk_quantiser_vt_t, part_info, 72);
OFF(lk_quantiser_vt_t, row_bytes, 80);
OFF(lk_quantiser_vt_t, quantize, 88);
OFF(lk_quantiser_vt_t, dequantize, 96);
OFF(lk_quantiser_vt_t, get_extension, 104);
SIZE(lk_quantiser_vt_t, 112);
OFF(lk_tensor_info_t, struct_size, 0);
OFF(lk_tensor_info_t, dtype, 4);
OFF(lk_tensor_info_t, ndim, 8);
OFF(lk_tensor_info_t, reserved0, 12);
OFF(lk_tensor_info_t, shape, 16);
OFF(lk_tensor_info_t, nbytes, 80);
OFF(lk_tensor_info_t, name, 88);
OFF(lk_tensor_info_t, qformat, 96);
SIZE(lk_tensor_info_t, 104);
OFF(lk_adapter_header_t, struct_size, 0);
OFF(lk_adapter_header_t, kind, 4);
OFF(lk_adapter_header_t, scaling, 8);
OFF(lk_adapter_header_t, rank, 12);
OFF(lk_adapter_header_t, alpha, 16);
OFF(lk_adapter_header_t, n_targets, 20);
OFF(lk_adapter_header_t, base_model, 24);
SIZE(lk_adapter_header_t, 32);
OFF(lk_adapter_target_t, struct_size, 0);
OFF(lk_adapter_target_t, rank, 4);
OFF(lk_adapter_target_t, name, 8);
OFF(lk_adapter_target_t, alpha, 16);
OFF(lk_adapter_target_t, scale, 20);
OFF(lk_adapter_target_t, in_features, 24);
OFF(lk_adapter_target_t, out_features, 32);
OFF(lk_adapter_target_t, tensor_a, 40);
OFF(lk_adapter_target_t, tensor_b, 48);
OFF(lk_adapter_target_t, tensor_m, 56);
OFF(lk_adapter_target_t, A, 64);
OFF(lk_adapter_target_t, B, 72);
OFF(lk_adapter_target_t, magnitude, 80);
SIZE(lk_adapter_target_t, 88);
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
OFF(lk_loader_vt_t, adapter_header, 104);
OFF(lk_loader_vt_t, adapter_target, 112);
OFF(lk_loader_vt_t, write_adapter, 120);
SIZE(lk_loader_vt_t, 128);
OFF(lk_loader_ext_base_config_t, struct_size, 0);
OFF(lk_loader_ext_base_config_t, set, 8);
SIZE(lk_loader_ext_base_config_t, 16);
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
OFF(lk_quantiser_info_t, struct_size, 0);
OFF(lk_quantiser_info_t, gguf_type, 4);
OFF(lk_quantiser_info_t, name, 8);
OFF(lk_quantiser_info_t, description, 16);
OFF(lk_quantiser_info_t, bnb_name, 24);
OFF(lk_quantiser_info_t, block_elems, 32);
OFF(lk_quantiser_info_t, block_bytes, 36);
OFF(lk_quantiser_info_t, can_quantize, 40);
OFF(lk_quantiser_info_t, plugin_index, 44);
SIZE(lk_quantiser_info_t, 48);
OFF(lk_convert_opts_t, struct_size, 0);
OFF(lk_convert_opts_t, outtype, 4);
OFF(lk_convert_opts_t, format, 8);
OFF(lk_convert_opts_t, base, 16);
OFF(lk_convert_opts_t, force, 24);
OFF(lk_convert_opts_t, reserved0, 28);
OFF(lk_convert_opts_t, no_tokenizer, 32);
OFF(lk_convert_opts_t, reserved1, 36);
SIZE(lk_convert_opts_t, 40);
OFF(lk_merge_opts_t, struct_size, 0);
OFF(lk_merge_opts_t, scale, 4);
OFF(lk_merge_opts_t, backend, 8);
OFF(lk_merge_opts_t, device, 16);
OFF(lk_merge_opts_t, force, 20);
OFF(lk_merge_opts_t, report, 24); /* appended in 2.x; minimum size stays 24 */
OFF(lk_merge_opts_t, report_user, 32);
SIZE(lk_merge_opts_t, 40);
_Static_assert(LK_MIN_SIZE_MERGE_OPTS == 24, "lk_merge_opts_t minimum");
OFF(lk_quant_report_t, struct_size, 0);
OFF(lk_quant_report_t, kept, 4);
OFF(lk_quant_report_t, name, 8);
OFF(lk_quant_report_t, from, 16);
OFF(lk_quant_report_t, to, 24);
OFF(lk_quant_report_t, numel, 32);
OFF(lk_quant_report_t, bytes_before, 40);
OFF(lk_quant_report_t, bytes_after, 48);
OFF(lk_quant_report_t, rmse, 56);
OFF(lk_quant_report_t, max_abs, 64);
OFF(lk_quant_report_t, snr_db, 72);
SIZE(lk_quant_report_t, 80);
OFF(lk_quantize_opts_t, struct_size, 0);
OFF(lk_quantize_opts_t, force, 4);
OFF(lk_quantize_opts_t, to, 8);
OFF(lk_quantize_opts_t, keep, 16);
OFF(lk_quantize_opts_t, block_size, 24);
OFF(lk_quantize_opts_t, double_quant, 28);
OFF(lk_quantize_opts_t, dry_run, 32);
OFF(lk_quantize_opts_t, reserved0, 36);
OFF(lk_quantize_opts_t, report, 40);
OFF(lk_quantize_opts_t, report_user, 48);
SIZE(lk_quantize_opts_t, 56);

/* ---- lorakit_registry.h ---- */
OFF(lk_registry_opts_t, struct_size, 0);
OFF(lk_registry_opts_t, read_only, 4);
OFF(lk_registry_opts_t, busy_timeout_ms, 8);
OFF(lk_registry_opts_t, reserved0, 12);
SIZE(lk_registry_opts_t, 16);
OFF(lk_registry_add_opts_t, struct_size, 0);
OFF(lk_registry_add_opts_t, relation, 4);
OFF(lk_registry_add_opts_t, parents, 8);
OFF(lk_registry_add_opts_t, n_parents, 16);
OFF(lk_registry_add_opts_t, reuse_existing, 20);
OFF(lk_registry_add_opts_t, params_json, 24);
OFF(lk_registry_add_opts_t, base, 32);
OFF(lk_registry_add_opts_t, operation, 40);
OFF(lk_registry_add_opts_t, notes, 48);
OFF(lk_registry_add_opts_t, loader, 56);
OFF(lk_registry_add_opts_t, format, 64);
OFF(lk_registry_add_opts_t, force, 72);
OFF(lk_registry_add_opts_t, new_version, 76);
OFF(lk_registry_add_opts_t, progress, 80);
OFF(lk_registry_add_opts_t, progress_user, 88);
SIZE(lk_registry_add_opts_t, 96);
OFF(lk_registry_model_opts_t, struct_size, 0);
OFF(lk_registry_model_opts_t, relation, 4);
OFF(lk_registry_model_opts_t, parents, 8);
OFF(lk_registry_model_opts_t, n_parents, 16);
OFF(lk_registry_model_opts_t, reserved0, 20);
OFF(lk_registry_model_opts_t, base, 24);
OFF(lk_registry_model_opts_t, params_json, 32);
OFF(lk_registry_model_opts_t, operation, 40);
OFF(lk_registry_model_opts_t, notes, 48);
OFF(lk_registry_model_opts_t, loader, 56);
SIZE(lk_registry_model_opts_t, 64);
OFF(lk_registry_list_opts_t, struct_size, 0);
OFF(lk_registry_list_opts_t, newest_first, 4);
OFF(lk_registry_list_opts_t, name, 8);
OFF(lk_registry_list_opts_t, base, 16);
OFF(lk_registry_list_opts_t, tag, 24);
OFF(lk_registry_list_opts_t, limit, 32);
OFF(lk_registry_list_opts_t, reserved0, 36);
SIZE(lk_registry_list_opts_t, 40);
OFF(lk_registry_lineage_opts_t, struct_size, 0);
OFF(lk_registry_lineage_opts_t, direction, 4);
OFF(lk_registry_lineage_opts_t, max_depth, 8);
OFF(lk_registry_lineage_opts_t, reserved0, 12);
SIZE(lk_registry_lineage_opts_t, 16);

/* ---- lorakit_staging.h ---- */
OFF(lk_x_session_opts_t, struct_size, 0);
OFF(lk_x_session_opts_t, compute, 4);
OFF(lk_x_session_opts_t, beta1, 8);
OFF(lk_x_session_opts_t, beta2, 12);
OFF(lk_x_session_opts_t, eps, 16);
OFF(lk_x_session_opts_t, weight_decay, 20);
OFF(lk_x_session_opts_t, max_grad_norm, 24);
OFF(lk_x_session_opts_t, no_replay, 28);
OFF(lk_x_session_opts_t, recompute, 32);
SIZE(lk_x_session_opts_t, 36);
OFF(lk_x_session_stats_t, struct_size, 0);
OFF(lk_x_session_stats_t, n_ops_step, 4);
OFF(lk_x_session_stats_t, peak_bytes, 8);
OFF(lk_x_session_stats_t, naive_bytes, 16);
OFF(lk_x_session_stats_t, uploads_frozen, 24);
OFF(lk_x_session_stats_t, steps, 32);
OFF(lk_x_session_stats_t, core_seconds, 40);
OFF(lk_x_session_stats_t, wait_seconds, 48);
OFF(lk_x_session_stats_t, n_buffers, 56);
OFF(lk_x_session_stats_t, replayed, 60);
SIZE(lk_x_session_stats_t, 64);

/* ---- frozen minimum sizes: the 2.0 size through the last 2.0 field ---- */
_Static_assert(LK_MIN_SIZE_ERROR == 520, "LK_MIN_SIZE_ERROR");
_Static_assert(LK_MIN_SIZE_DEVICE_INFO == 312, "LK_MIN_SIZE_DEVICE_INFO");
_Static_assert(LK_MIN_SIZE_OP_FILL == 8, "LK_MIN_SIZE_OP_FILL");
_Static_assert(LK_MIN_SIZE_OP_ADD == 12, "LK_MIN_SIZE_OP_ADD");
_Static_assert(LK_MIN_SIZE_OP_SCALE == 12, "LK_MIN_SIZE_OP_SCALE");
_Static_assert(LK_MIN_SIZE_OP_ACCUMULATE == 8, "LK_MIN_SIZE_OP_ACCUMULATE");
_Static_assert(LK_MIN_SIZE_OP_MATMUL == 20, "LK_MIN_SIZE_OP_MATMUL");
_Static_assert(LK_MIN_SIZE_OP_LORA == 32, "LK_MIN_SIZE_OP_LORA");
_Static_assert(LK_MIN_SIZE_OP_MERGE == 8, "LK_MIN_SIZE_OP_MERGE");
_Static_assert(LK_MIN_SIZE_OP_RMSNORM == 12, "LK_MIN_SIZE_OP_RMSNORM");
_Static_assert(LK_MIN_SIZE_OP_ROPE == 36, "LK_MIN_SIZE_OP_ROPE");
_Static_assert(LK_MIN_SIZE_OP_ATTENTION == 16, "LK_MIN_SIZE_OP_ATTENTION");
_Static_assert(LK_MIN_SIZE_OP_CROSS_ENTROPY == 16, "LK_MIN_SIZE_OP_CROSS_ENTROPY");
_Static_assert(LK_MIN_SIZE_OP_ADAMW == 40, "LK_MIN_SIZE_OP_ADAMW");
_Static_assert(LK_MIN_SIZE_HOST_API == 72, "LK_MIN_SIZE_HOST_API");
_Static_assert(LK_MIN_SIZE_BACKEND_CONFIG == 16, "LK_MIN_SIZE_BACKEND_CONFIG");
_Static_assert(LK_MIN_SIZE_BACKEND_VT == 168, "LK_MIN_SIZE_BACKEND_VT");
_Static_assert(LK_MIN_SIZE_BACKEND_EXT_RECORD == 32, "LK_MIN_SIZE_BACKEND_EXT_RECORD");
_Static_assert(LK_MIN_SIZE_QUANT_OPTS == 16, "LK_MIN_SIZE_QUANT_OPTS");
_Static_assert(LK_MIN_SIZE_QUANTISER_VT == 112, "LK_MIN_SIZE_QUANTISER_VT");
_Static_assert(LK_MIN_SIZE_TENSOR_INFO == 104, "LK_MIN_SIZE_TENSOR_INFO");
_Static_assert(LK_MIN_SIZE_ADAPTER_HEADER == 32, "LK_MIN_SIZE_ADAPTER_HEADER");
_Static_assert(LK_MIN_SIZE_LOADER_VT == 128, "LK_MIN_SIZE_LOADER_VT");
_Static_assert(LK_MIN_SIZE_LOADER_EXT_BASE_CONFIG == 16, "LK_MIN_SIZE_LOADER_EXT_BASE_CONFIG");
_Static_assert(LK_MIN_SIZE_BACKEND_FACTORY == 24, "LK_MIN_SIZE_BACKEND_FACTORY");
_Static_assert(LK_MIN_SIZE_QUANTISER_FACTORY == 24, "LK_MIN_SIZE_QUANTISER_FACTORY");
_Static_assert(LK_MIN_SIZE_FACTORY == 24, "LK_MIN_SIZE_FACTORY");
_Static_assert(LK_MIN_SIZE_PLUGIN == 64, "LK_MIN_SIZE_PLUGIN");
_Static_assert(LK_MIN_SIZE_CONTEXT_OPTS == 16, "LK_MIN_SIZE_CONTEXT_OPTS");
_Static_assert(LK_MIN_SIZE_PLUGIN_INFO == 64, "LK_MIN_SIZE_PLUGIN_INFO");
_Static_assert(LK_MIN_SIZE_COMPONENT_INFO == 32, "LK_MIN_SIZE_COMPONENT_INFO");
_Static_assert(LK_MIN_SIZE_LORA_CONFIG == 24, "LK_MIN_SIZE_LORA_CONFIG");
_Static_assert(LK_MIN_SIZE_TARGET_INFO == 40, "LK_MIN_SIZE_TARGET_INFO");
_Static_assert(LK_MIN_SIZE_QUANTISER_INFO == 48, "LK_MIN_SIZE_QUANTISER_INFO");
_Static_assert(LK_MIN_SIZE_CONVERT_OPTS == 32, "LK_MIN_SIZE_CONVERT_OPTS");
_Static_assert(LK_MIN_SIZE_MERGE_OPTS == 24, "LK_MIN_SIZE_MERGE_OPTS");
_Static_assert(LK_MIN_SIZE_REGISTRY_OPTS == 16, "LK_MIN_SIZE_REGISTRY_OPTS");
_Static_assert(LK_MIN_SIZE_REGISTRY_ADD_OPTS == 96, "LK_MIN_SIZE_REGISTRY_ADD_OPTS");
_Static_assert(LK_MIN_SIZE_REGISTRY_MODEL_OPTS == 64, "LK_MIN_SIZE_REGISTRY_MODEL_OPTS");
_Static_assert(LK_MIN_SIZE_REGISTRY_LIST_OPTS == 40, "LK_MIN_SIZE_REGISTRY_LIST_OPTS");
_Static_assert(LK_MIN_SIZE_REGISTRY_LINEAGE_OPTS == 16, "LK_MIN_SIZE_REGISTRY_LINEAGE_OPTS");
_Static_assert(LK_MIN_SIZE_X_SESSION_OPTS == 36, "LK_MIN_SIZE_X_SESSION_OPTS");
_Static_assert(LK_MIN_SIZE_X_SESSION_STATS == 56, "LK_MIN_SIZE_X_SESSION_STATS");
#endif /* x86_64 LP64 */

/* ---- enum values (every value published in abi/) ---- */
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
_Static_assert(LK_ERR_TIMEOUT == -18, "LK_ERR_TIMEOUT");
_Static_assert(LK_ERR_SECURITY == -19, "LK_ERR_SECURITY");
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
_Static_assert(LK_KIND_QUANTISER == 1, "LK_KIND_QUANTISER");
_Static_assert(LK_KIND_BACKEND == 2, "LK_KIND_BACKEND");
_Static_assert(LK_KIND_LOADER == 3, "LK_KIND_LOADER");
_Static_assert(LK_SCALING_STANDARD == 0, "LK_SCALING_STANDARD");
_Static_assert(LK_SCALING_RSLORA == 1, "LK_SCALING_RSLORA");
_Static_assert(LK_DEVICE_CPU == 1, "LK_DEVICE_CPU");
_Static_assert(LK_DEVICE_GPU == 2, "LK_DEVICE_GPU");
_Static_assert(LK_DEVICE_OTHER == 3, "LK_DEVICE_OTHER");
_Static_assert(LK_COMPUTE_F32 == 0, "LK_COMPUTE_F32");
_Static_assert(LK_COMPUTE_BF16 == 1, "LK_COMPUTE_BF16");
_Static_assert(LK_OP_INVALID == 0, "LK_OP_INVALID");
_Static_assert(LK_OP_EXTENSION == 1, "LK_OP_EXTENSION");
_Static_assert(LK_OP_COPY == 2, "LK_OP_COPY");
_Static_assert(LK_OP_FILL == 3, "LK_OP_FILL");
_Static_assert(LK_OP_ADD == 4, "LK_OP_ADD");
_Static_assert(LK_OP_MUL == 5, "LK_OP_MUL");
_Static_assert(LK_OP_SCALE == 6, "LK_OP_SCALE");
_Static_assert(LK_OP_SUM == 7, "LK_OP_SUM");
_Static_assert(LK_OP_SUMSQ == 8, "LK_OP_SUMSQ");
_Static_assert(LK_OP_MATMUL == 9, "LK_OP_MATMUL");
_Static_assert(LK_OP_LORA_FORWARD == 10, "LK_OP_LORA_FORWARD");
_Static_assert(LK_OP_LORA_BACKWARD == 11, "LK_OP_LORA_BACKWARD");
_Static_assert(LK_OP_MERGE == 12, "LK_OP_MERGE");
_Static_assert(LK_OP_UNMERGE == 13, "LK_OP_UNMERGE");
_Static_assert(LK_OP_EMBEDDING == 14, "LK_OP_EMBEDDING");
_Static_assert(LK_OP_EMBEDDING_BACKWARD == 15, "LK_OP_EMBEDDING_BACKWARD");
_Static_assert(LK_OP_RMSNORM == 16, "LK_OP_RMSNORM");
_Static_assert(LK_OP_RMSNORM_BACKWARD == 17, "LK_OP_RMSNORM_BACKWARD");
_Static_assert(LK_OP_ROPE == 18, "LK_OP_ROPE");
_Static_assert(LK_OP_ATTENTION == 19, "LK_OP_ATTENTION");
_Static_assert(LK_OP_ATTENTION_BACKWARD == 20, "LK_OP_ATTENTION_BACKWARD");
_Static_assert(LK_OP_SWIGLU == 21, "LK_OP_SWIGLU");
_Static_assert(LK_OP_SWIGLU_BACKWARD == 22, "LK_OP_SWIGLU_BACKWARD");
_Static_assert(LK_OP_SILU == 23, "LK_OP_SILU");
_Static_assert(LK_OP_SILU_BACKWARD == 24, "LK_OP_SILU_BACKWARD");
_Static_assert(LK_OP_CROSS_ENTROPY == 25, "LK_OP_CROSS_ENTROPY");
_Static_assert(LK_OP_CROSS_ENTROPY_BACKWARD == 26, "LK_OP_CROSS_ENTROPY_BACKWARD");
_Static_assert(LK_OP_ADAMW == 27, "LK_OP_ADAMW");
_Static_assert(LK_OP_CORE_COUNT == 28, "LK_OP_CORE_COUNT");
_Static_assert(LK_ROPE_SCALING_NONE == 0, "LK_ROPE_SCALING_NONE");
_Static_assert(LK_ROPE_SCALING_LINEAR == 1, "LK_ROPE_SCALING_LINEAR");
_Static_assert(LK_ROPE_SCALING_LLAMA3 == 2, "LK_ROPE_SCALING_LLAMA3");
_Static_assert(LK_LOG_ERROR == 0, "LK_LOG_ERROR");
_Static_assert(LK_LOG_WARN == 1, "LK_LOG_WARN");
_Static_assert(LK_LOG_INFO == 2, "LK_LOG_INFO");
_Static_assert(LK_LOG_DEBUG == 3, "LK_LOG_DEBUG");
_Static_assert(LK_BUFFER_DEVICE_LOCAL == 1, "LK_BUFFER_DEVICE_LOCAL");
_Static_assert(LK_BUFFER_HOST_VISIBLE == 2, "LK_BUFFER_HOST_VISIBLE");
_Static_assert(LK_ADAPTER_LORA == 0, "LK_ADAPTER_LORA");
_Static_assert(LK_ADAPTER_DORA == 1, "LK_ADAPTER_DORA");
_Static_assert(LK_PLUGIN_LOADED == 0, "LK_PLUGIN_LOADED");
_Static_assert(LK_PLUGIN_REFUSED == 1, "LK_PLUGIN_REFUSED");
_Static_assert(LK_REL_NONE == 0, "LK_REL_NONE");
_Static_assert(LK_REL_TRAINED_FROM == 1, "LK_REL_TRAINED_FROM");
_Static_assert(LK_REL_MERGED_FROM == 2, "LK_REL_MERGED_FROM");
_Static_assert(LK_REL_QUANTIZED_FROM == 3, "LK_REL_QUANTIZED_FROM");
_Static_assert(LK_REL_EXTRACTED_FROM == 4, "LK_REL_EXTRACTED_FROM");
_Static_assert(LK_REL_COMBINED_FROM == 5, "LK_REL_COMBINED_FROM");
_Static_assert(LK_REL_IMPORTED == 6, "LK_REL_IMPORTED");
_Static_assert(LK_LINEAGE_UP == 1, "LK_LINEAGE_UP");
_Static_assert(LK_LINEAGE_DOWN == 2, "LK_LINEAGE_DOWN");
_Static_assert(LK_LINEAGE_BOTH == 3, "LK_LINEAGE_BOTH");
_Static_assert(LK_X_INPUT == 0, "LK_X_INPUT");
_Static_assert(LK_X_FROZEN == 1, "LK_X_FROZEN");
_Static_assert(LK_X_PARAM == 2, "LK_X_PARAM");
_Static_assert(LK_X_ACTIVATION == 3, "LK_X_ACTIVATION");

/* ---- version packing ---- */
_Static_assert(LK_MAKE_ABI(1, 0) == 0x00010000u, "LK_MAKE_ABI packs major << 16 | minor");
_Static_assert(LK_MAKE_ABI(2, 7) == 0x00020007u, "LK_MAKE_ABI(2, 7)");
_Static_assert(LK_MAKE_ABI(2, 65535) == 0x0002FFFFu, "the minor has 16 bits");
_Static_assert(LK_ABI_MAJOR_OF(0x00030005u) == 3, "LK_ABI_MAJOR_OF");
_Static_assert(LK_ABI_MINOR_OF(0x00030005u) == 5, "LK_ABI_MINOR_OF");
_Static_assert(LK_PLUGIN_ABI_VERSION == 0x00020000u, "plugin ABI is 2.0");
_Static_assert(LK_PLUGIN_ABI_MIN == 0x00020000u, "oldest plugin ABI loaded is 2.0");
_Static_assert(LK_VERSION_NUMBER == 20000, "2.0.0 is 20000");
_Static_assert(LK_MAX_DIMS == 8 && LK_NAME_MAX == 128 && LK_ERROR_MAX == 512, "array bounds");

/* Ids and names that are part of the ABI too: they never change. */
START_TEST(ids_are_frozen) {
  ck_assert_str_eq(LK_FACTORY_QUANTISER, "lk.factory.quantiser/2");
  ck_assert_str_eq(LK_FACTORY_BACKEND, "lk.factory.backend/2");
  ck_assert_str_eq(LK_FACTORY_LOADER, "lk.factory.loader/2");
  ck_assert_str_eq(LK_BACKEND_EXT_RECORD, "lk.backend.record/1");
  ck_assert_str_eq(LK_LOADER_EXT_BASE_CONFIG, "lk.loader.base_config/1");
  ck_assert_str_eq(LK_PLUGIN_ENTRY_SYMBOL, "lk_plugin_entry");
  ck_assert_str_eq(LK_VERSION_STRING, "2.0.0");
}
END_TEST

/* Every status code has its own text, and the two added in 2.0 are named. */
START_TEST(status_codes_are_named) {
  for (int32_t c = LK_ERR_SECURITY; c <= LK_OK; c++) {
    const char *z = lk_strerror(c);
    ck_assert_msg(z && z[0], "no text for %d", c);
    for (int32_t d = c + 1; d <= LK_OK; d++) ck_assert_msg(strcmp(z, lk_strerror(d)) != 0, "%d and %d share a text", c, d);
  }
  ck_assert_str_ne(lk_strerror(LK_ERR_TIMEOUT), lk_strerror(-20));
}
END_TEST

/* Op names are part of the ABI (graphs and messages name ops by them). */
START_TEST(op_names_are_frozen) {
  static const char *const names[LK_OP_CORE_COUNT] = {
      NULL, NULL, "copy", "fill", "add", "mul", "scale", "sum", "sumsq", "matmul",
      "lora_forward", "lora_backward", "merge", "unmerge", "embedding", "embedding_backward",
      "rmsnorm", "rmsnorm_backward", "rope", "attention", "attention_backward", "swiglu",
      "swiglu_backward", "silu", "silu_backward", "cross_entropy", "cross_entropy_backward",
      "adamw"};
  for (int32_t id = LK_OP_COPY; id < LK_OP_CORE_COUNT; id++) {
    const char *n = lk_op_name(id);
    ck_assert_msg(n && strcmp(n, names[id]) == 0, "op %d is named %s, not %s", id, n ? n : "NULL", names[id]);
  }
  ck_assert_ptr_null(lk_op_name(LK_OP_CORE_COUNT));
  ck_assert_ptr_null(lk_op_name(-1));
}
END_TEST

/* LK_HAS_FIELD: a reader sees a field only when the filler's struct_size
 * reaches its end. Hand-picked sizes around lk_plugin_t.init (offset 40,
 * 8 bytes). */
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
  tcase_add_test(tc, ids_are_frozen);
  tcase_add_test(tc, status_codes_are_named);
  tcase_add_test(tc, op_names_are_frozen);
  tcase_add_test(tc, has_field_needs_the_whole_field);
  tcase_add_test(tc, library_matches_headers);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return tu_run(abi_suite()); }
