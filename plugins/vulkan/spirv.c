/* spirv.c - the compute shaders (shaders/NAME.comp), compiled to SPIR-V by
 * glslc at build time (`glslc -mfmt=c`, into the build folder) and embedded
 * here: nothing compiles shaders at run time. */
#include "vk.h"

const uint32_t vk_spv_elem[] =
#include "elem.spv.inc"
    ;
const size_t vk_spv_elem_size = sizeof vk_spv_elem;
const uint32_t vk_spv_reduce[] =
#include "reduce.spv.inc"
    ;
const size_t vk_spv_reduce_size = sizeof vk_spv_reduce;
const uint32_t vk_spv_matmul[] =
#include "matmul.spv.inc"
    ;
const size_t vk_spv_matmul_size = sizeof vk_spv_matmul;
const uint32_t vk_spv_nn[] =
#include "nn.spv.inc"
    ;
const size_t vk_spv_nn_size = sizeof vk_spv_nn;
const uint32_t vk_spv_rope[] =
#include "rope.spv.inc"
    ;
const size_t vk_spv_rope_size = sizeof vk_spv_rope;
const uint32_t vk_spv_attn[] =
#include "attn.spv.inc"
    ;
const size_t vk_spv_attn_size = sizeof vk_spv_attn;
const uint32_t vk_spv_emb_atomic[] =
#include "emb_atomic.spv.inc"
    ;
const size_t vk_spv_emb_atomic_size = sizeof vk_spv_emb_atomic;

const vk_shader_src vk_shaders[VK_SH_COUNT] = {
    [VK_SH_ELEM] = {"elem", vk_spv_elem, sizeof vk_spv_elem},
    [VK_SH_REDUCE] = {"reduce", vk_spv_reduce, sizeof vk_spv_reduce},
    [VK_SH_MATMUL] = {"matmul", vk_spv_matmul, sizeof vk_spv_matmul},
    [VK_SH_NN] = {"nn", vk_spv_nn, sizeof vk_spv_nn},
    [VK_SH_ROPE] = {"rope", vk_spv_rope, sizeof vk_spv_rope},
    [VK_SH_ATTN] = {"attn", vk_spv_attn, sizeof vk_spv_attn},
    [VK_SH_EMB_ATOMIC] = {"emb_atomic", vk_spv_emb_atomic, sizeof vk_spv_emb_atomic},
};
