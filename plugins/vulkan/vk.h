/* vk.h - the Vulkan backend's internals: the process-wide device list,
 * instances (one VkDevice each), buffers sub-allocated from memory blocks,
 * submissions (one command buffer and one fence each) and the op layer. */
#ifndef LK_VK_H
#define LK_VK_H

#include "lorakit_plugin.h"
#include "plugin_refs.h"

#include <stddef.h>
#include <stdint.h>
#include <vulkan/vulkan.h>

#define VK_PLUGIN_ID "org.lorakit.vulkan"
#define VK_BUF_MAGIC 0x564b4246u   /* "VKBF" */
#define VK_FENCE_MAGIC 0x564b4645u /* "VKFE" */
#define VK_MAX_DEV 16
#define VK_BLOCK_MIN (64ull << 20) /* memory blocks are at least 64 MiB (or the size asked, if larger) */

/* One physical device, as enumerated at init (sorted: discrete first). */
typedef struct vk_phys {
  VkPhysicalDevice pd;
  VkPhysicalDeviceProperties props;
  VkPhysicalDeviceMemoryProperties mem;
  uint64_t max_alloc;  /* maxMemoryAllocationSize (Vulkan 1.1) */
  uint32_t queue_family; /* a compute queue family */
  uint32_t atomic_f32_add; /* VK_EXT_shader_atomic_float with shaderBufferFloat32AtomicAdd */
} vk_phys;

typedef struct vk_global {
  VkInstance inst;
  uint32_t n_dev;
  vk_phys dev[VK_MAX_DEV];
  char why[512]; /* why there is no device, when n_dev == 0 */
} vk_global;
extern vk_global vk_g;
extern plug_refs vk_refs;

/* A free range of a block. */
typedef struct vk_range {
  uint64_t off, size;
} vk_range;

typedef struct vk_block {
  struct vk_block *next;
  VkDeviceMemory mem;
  uint64_t size;
  uint32_t type;
  uint32_t host; /* mapped: HOST_VISIBLE | HOST_COHERENT */
  void *map;
  vk_range *free;
  uint32_t n_free, cap_free;
  uint32_t live;
} vk_block;

struct lk_buffer_t {
  uint32_t magic;
  uint32_t flags;
  VkBuffer buf;
  vk_block *blk;
  uint64_t off;    /* in the block */
  uint64_t size;   /* reserved bytes (rounded up) */
  uint64_t nbytes; /* asked */
  struct lk_buffer_t *next, *prev;
};

/* One submission: a command buffer, its descriptor pool, a fence. */
typedef struct vk_sub {
  struct vk_sub *next;
  VkCommandBuffer cmd;
  VkDescriptorPool pool;
  VkFence fence;
  int32_t status;
  uint32_t user; /* 1 while an lk_fence_t refers to it */
  uint32_t done;
  lk_buffer_t *scratch; /* intermediates of ops (LoRA's h and g), or NULL */
  lk_buffer_t *flag;  /* fault word of ops that can fail on data (ids, labels), or NULL */
  int32_t *op_ids;    /* the batch's op ids, for the fault's message */
  uint32_t n_ops;
  char msg[256];
} vk_sub;

struct lk_fence_t {
  uint32_t magic;
  vk_sub *sub;
  void *owner;
};

/* VK_SH_EMB_ATOMIC is optional: built only where the device has shaderBufferFloat32AtomicAdd */
enum { VK_SH_ELEM = 0, VK_SH_REDUCE, VK_SH_MATMUL, VK_SH_NN, VK_SH_ROPE, VK_SH_ATTN, VK_SH_EMB_ATOMIC, VK_SH_COUNT };
#define VK_NBIND 8 /* storage buffers per dispatch (the device must allow 8 per stage) */

typedef struct vk_backend {
  uint32_t index; /* into vk_g.dev */
  const vk_phys *ph;
  VkDevice dev;
  VkQueue queue;
  VkCommandPool cmd_pool;
  VkDescriptorSetLayout dsl;
  VkPipelineLayout layout;
  VkPipeline pipe[VK_SH_COUNT];
  vk_block *blocks;
  lk_buffer_t *bufs;
  vk_sub *subs;
  lk_buffer_t *dummy;   /* bound to unused bindings */
  lk_buffer_t *staging; /* for devices without host-visible device memory */
  int force_staging;
  int32_t async_status; /* a failure not yet reported by synchronize */
  char async_msg[256];
  /* faults (vk_fault_parse): LK_VULKAN_FAULT=lost:N makes the N-th submit of
   * the instance report VK_ERROR_DEVICE_LOST; noshader:NAME leaves out the
   * pipeline of shaders/NAME.comp, as if the build had no SPIR-V for it */
  uint64_t n_submits;
  uint64_t fault_lost_at; /* 0: none */
  uint32_t noshader;      /* bit per VK_SH_* */
  int lost;               /* the device reported VK_ERROR_DEVICE_LOST: nothing runs any more */
} vk_backend;

int32_t vk_fail(lk_error_t *err, int32_t code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
const char *vk_result_name(VkResult r);
int vk_buffer_known(vk_backend *be, const lk_buffer_t *b);

/* ops.c: validation (be NULL: judge the description only) and recording. */
typedef struct vk_bind {
  lk_buffer_t *buf;
  uint64_t base; /* aligned byte offset of the binding */
} vk_bind;
typedef struct vk_disp {
  int shader;
  vk_bind bind[VK_NBIND];
  int flag; /* 1: binding 5 is the batch's fault word */
  uint64_t scratch; /* (first dispatch of an op) scratch bytes the op needs */
  uint32_t pc[32];
  uint32_t pc_size;
  uint32_t groups[3];
} vk_disp;
#define VK_MAX_DISP 40 /* ROPE: 4 frequency pairs per dispatch, n_rot up to 320 */
/* A binding on the batch's scratch buffer: base is relative to the op's scratch. */
#define VK_SCRATCH ((lk_buffer_t *)(uintptr_t)1)
int32_t vk_op_plan(vk_backend *be, const lk_op_t *op, uint32_t index, vk_disp *out, uint32_t *n_out,
                   lk_error_t *err);

/* spirv.c: the shaders compiled at build time. */
extern const uint32_t vk_spv_elem[], vk_spv_reduce[], vk_spv_matmul[], vk_spv_nn[], vk_spv_rope[], vk_spv_attn[],
    vk_spv_emb_atomic[];
extern const size_t vk_spv_elem_size, vk_spv_reduce_size, vk_spv_matmul_size, vk_spv_nn_size, vk_spv_rope_size, vk_spv_attn_size,
    vk_spv_emb_atomic_size;
const char *vk_op_label(int32_t id);
/* The embedded SPIR-V of shader VK_SH_*: its source name (shaders/NAME.comp),
 * code and size (0: absent from the build). */
typedef struct vk_shader_src {
  const char *name;
  const uint32_t *code;
  size_t size;
} vk_shader_src;
extern const vk_shader_src vk_shaders[VK_SH_COUNT];

#endif
