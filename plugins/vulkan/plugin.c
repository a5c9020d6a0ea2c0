/* plugin.c - the Vulkan backend plugin: entry, reference-counted init (one
 * VkInstance, the physical devices listed and sorted discrete-first), the
 * backend vtable, instances (a VkDevice with one compute queue and the
 * compute pipelines of the embedded SPIR-V), buffers sub-allocated from
 * large memory blocks, and submission: one command buffer and one fence
 * per batch. Where no loader, driver or device exists, init still succeeds
 * with zero devices and the reason is logged and returned by device_info. */
#include "vk.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

vk_global vk_g;
plug_refs vk_refs = PLUG_REFS_INITIALIZER;

int32_t vk_fail(lk_error_t *err, int32_t code, const char *fmt, ...) {
  if (err && err->struct_size >= offsetof(lk_error_t, message) + LK_ERROR_MAX) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    err->code = code;
  } else if (err && err->struct_size >= offsetof(lk_error_t, code) + sizeof err->code) {
    err->code = code;
  }
  return code;
}

const char *vk_result_name(VkResult r) {
  switch (r) {
  case VK_SUCCESS: return "VK_SUCCESS";
  case VK_NOT_READY: return "VK_NOT_READY";
  case VK_TIMEOUT: return "VK_TIMEOUT";
  case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
  case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
  case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED";
  case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
  case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
  case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
  case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT";
  case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
  case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER (no Vulkan driver found)";
  case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
  case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
  default: return "VkResult error";
  }
}

static void vk_log(int32_t level, const char *msg) {
  const lk_host_api_t *h = vk_refs.host;
  if (h && h->log) h->log(level, VK_PLUGIN_ID, msg);
}

/* ---- process-wide: instance and device list ------------------------------------ */

static int vk_type_rank(VkPhysicalDeviceType t) {
  switch (t) {
  case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return 0;
  case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return 1;
  case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return 2;
  case VK_PHYSICAL_DEVICE_TYPE_CPU: return 3;
  default: return 4;
  }
}

static void vk_global_init(void) {
  memset(&vk_g, 0, sizeof vk_g);
  VkApplicationInfo app = {VK_STRUCTURE_TYPE_APPLICATION_INFO, NULL, "lorakit", 2, "lorakit", 2, VK_API_VERSION_1_2};
  VkInstanceCreateInfo ci = {VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO, NULL, 0, &app, 0, NULL, 0, NULL};
  VkResult r = vkCreateInstance(&ci, NULL, &vk_g.inst);
  if (r != VK_SUCCESS) {
    vk_g.inst = VK_NULL_HANDLE;
    snprintf(vk_g.why, sizeof vk_g.why, "vkCreateInstance failed: %s", vk_result_name(r));
    return;
  }
  uint32_t n = 0;
  r = vkEnumeratePhysicalDevices(vk_g.inst, &n, NULL);
  if (r != VK_SUCCESS || n == 0) {
    snprintf(vk_g.why, sizeof vk_g.why, "no Vulkan physical device (%s)",
             r != VK_SUCCESS ? vk_result_name(r) : "the loader found drivers but no device");
    return;
  }
  VkPhysicalDevice pds[64];
  if (n > 64) n = 64;
  if (vkEnumeratePhysicalDevices(vk_g.inst, &n, pds) < 0) n = 0;
  for (uint32_t i = 0; i < n && vk_g.n_dev < VK_MAX_DEV; i++) {
    vk_phys ph;
    memset(&ph, 0, sizeof ph);
    ph.pd = pds[i];
    vkGetPhysicalDeviceProperties(pds[i], &ph.props);
    if (ph.props.apiVersion < VK_API_VERSION_1_2) continue; /* compute of Vulkan 1.2 */
    VkPhysicalDeviceMaintenance3Properties m3 = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES, NULL, 0, 0};
    VkPhysicalDeviceProperties2 p2 = {VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2, &m3, {0}};
    vkGetPhysicalDeviceProperties2(pds[i], &p2);
    ph.max_alloc = m3.maxMemoryAllocationSize;
    uint32_t nx = 0;
    if (vkEnumerateDeviceExtensionProperties(pds[i], NULL, &nx, NULL) == VK_SUCCESS && nx) {
      VkExtensionProperties *xs = calloc(nx, sizeof *xs);
      int has = 0;
      if (xs && vkEnumerateDeviceExtensionProperties(pds[i], NULL, &nx, xs) >= 0)
        for (uint32_t x = 0; x < nx; x++) has |= !strcmp(xs[x].extensionName, VK_EXT_SHADER_ATOMIC_FLOAT_EXTENSION_NAME);
      free(xs);
      if (has) {
        VkPhysicalDeviceShaderAtomicFloatFeaturesEXT af;
        memset(&af, 0, sizeof af);
        af.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_ATOMIC_FLOAT_FEATURES_EXT;
        VkPhysicalDeviceFeatures2 f2;
        memset(&f2, 0, sizeof f2);
        f2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
        f2.pNext = &af;
        vkGetPhysicalDeviceFeatures2(pds[i], &f2);
        ph.atomic_f32_add = af.shaderBufferFloat32AtomicAdd == VK_TRUE;
      }
    }
    vkGetPhysicalDeviceMemoryProperties(pds[i], &ph.mem);
    uint32_t nq = 0;
    VkQueueFamilyProperties qf[32];
    vkGetPhysicalDeviceQueueFamilyProperties(pds[i], &nq, NULL);
    if (nq > 32) nq = 32;
    vkGetPhysicalDeviceQueueFamilyProperties(pds[i], &nq, qf);
    ph.queue_family = UINT32_MAX;
    for (uint32_t q = 0; q < nq; q++)
      if (qf[q].queueFlags & VK_QUEUE_COMPUTE_BIT) {
        ph.queue_family = q;
        break;
      }
    if (ph.queue_family == UINT32_MAX) continue;
    /* insertion, stable: discrete, integrated, virtual, CPU, other */
    uint32_t k = vk_g.n_dev;
    while (k > 0 && vk_type_rank(vk_g.dev[k - 1].props.deviceType) > vk_type_rank(ph.props.deviceType)) {
      vk_g.dev[k] = vk_g.dev[k - 1];
      k--;
    }
    vk_g.dev[k] = ph;
    vk_g.n_dev++;
  }
  if (vk_g.n_dev == 0)
    snprintf(vk_g.why, sizeof vk_g.why, "no Vulkan 1.2 device with a compute queue among %u listed", n);
}

static uint32_t vk_device_count(void) { return vk_g.n_dev; }

static uint64_t vk_heap_total(const vk_phys *ph, int device_local) {
  uint64_t t = 0;
  for (uint32_t h = 0; h < ph->mem.memoryHeapCount; h++)
    if (!device_local || (ph->mem.memoryHeaps[h].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT)) t += ph->mem.memoryHeaps[h].size;
  return t;
}

/* A device-local memory type that is also host-visible and coherent. */
static int vk_unified(const vk_phys *ph) {
  const VkMemoryPropertyFlags want = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT | VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                                     VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  for (uint32_t i = 0; i < ph->mem.memoryTypeCount; i++)
    if ((ph->mem.memoryTypes[i].propertyFlags & want) == want) return 1;
  return 0;
}

static const char *vk_type_name(VkPhysicalDeviceType t) {
  switch (t) {
  case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete GPU";
  case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated GPU";
  case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual GPU";
  case VK_PHYSICAL_DEVICE_TYPE_CPU: return "CPU";
  default: return "other";
  }
}

static int32_t vk_device_info(uint32_t index, lk_device_info_t *out, lk_error_t *err) {
  if (!out) return vk_fail(err, LK_ERR_INVALID_ARG, "vulkan device_info: NULL argument");
  if (vk_g.n_dev == 0) return vk_fail(err, LK_ERR_NOT_FOUND, "vulkan device_info: no device: %s", vk_g.why);
  if (index >= vk_g.n_dev)
    return vk_fail(err, LK_ERR_NOT_FOUND, "vulkan device_info: device %u does not exist (%u devices)", index, vk_g.n_dev);
  if (out->struct_size < LK_MIN_SIZE_DEVICE_INFO)
    return vk_fail(err, LK_ERR_ABI, "vulkan device_info: lk_device_info_t struct_size %u is smaller than its minimum %zu",
                   out->struct_size, (size_t)LK_MIN_SIZE_DEVICE_INFO);
  const vk_phys *ph = &vk_g.dev[index];
  lk_device_info_t d;
  memset(&d, 0, sizeof d);
  VkPhysicalDeviceType t = ph->props.deviceType;
  d.type = t == VK_PHYSICAL_DEVICE_TYPE_CPU ? LK_DEVICE_CPU
           : (t == VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU || t == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU ||
              t == VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU)
               ? LK_DEVICE_GPU
               : LK_DEVICE_OTHER;
  snprintf(d.name, sizeof d.name, "%s", ph->props.deviceName);
  d.memory_total = vk_heap_total(ph, 1);
  if (!d.memory_total) d.memory_total = vk_heap_total(ph, 0);
  d.memory_free = 0; /* unknown without VK_EXT_memory_budget */
  d.compute_units = 0;
  d.unified_memory = (uint32_t)vk_unified(ph);
  d.max_alloc = ph->max_alloc;
  d.offset_align = 4; /* views are bound at minStorageBufferOffsetAlignment below them */
  d.can_wrap = 0;
  const VkPhysicalDeviceLimits *l = &ph->props.limits;
  snprintf(d.driver, sizeof d.driver, "Vulkan %u.%u.%u, %s, %u heap%s, maxStorageBufferRange %u, minStorageBufferOffsetAlignment %llu",
           VK_API_VERSION_MAJOR(ph->props.apiVersion), VK_API_VERSION_MINOR(ph->props.apiVersion),
           VK_API_VERSION_PATCH(ph->props.apiVersion), vk_type_name(t), ph->mem.memoryHeapCount,
           ph->mem.memoryHeapCount == 1 ? "" : "s", l->maxStorageBufferRange,
           (unsigned long long)l->minStorageBufferOffsetAlignment);
  uint32_t size = out->struct_size;
  memcpy((char *)out + sizeof size, (const char *)&d + sizeof size, (size < sizeof d ? size : sizeof d) - sizeof size);
  return LK_OK;
}

/* A discrete GPU first; a backend with no device still loads (score 0). */
static int32_t vk_score(void) {
  int32_t best = 0;
  for (uint32_t i = 0; i < vk_g.n_dev; i++) {
    int32_t s = 40 - 10 * vk_type_rank(vk_g.dev[i].props.deviceType);
    if (s > best) best = s;
  }
  return best;
}

/* ---- memory blocks ----------------------------------------------------------------- */

static int vk_find_type(const vk_phys *ph, uint32_t bits, VkMemoryPropertyFlags want, VkMemoryPropertyFlags prefer) {
  int fallback = -1;
  for (uint32_t i = 0; i < ph->mem.memoryTypeCount; i++) {
    if (!(bits & (1u << i))) continue;
    VkMemoryPropertyFlags f = ph->mem.memoryTypes[i].propertyFlags;
    if ((f & want) != want) continue;
    if ((f & prefer) == prefer) return (int)i;
    if (fallback < 0) fallback = (int)i;
  }
  return fallback;
}

static void vk_block_free(vk_backend *be, vk_block *b) {
  if (b->map) vkUnmapMemory(be->dev, b->mem);
  vkFreeMemory(be->dev, b->mem, NULL);
  free(b->free);
  free(b);
}

static int vk_range_insert(vk_block *b, uint32_t at, uint64_t off, uint64_t size) {
  if (b->n_free == b->cap_free) {
    uint32_t cap = b->cap_free ? b->cap_free * 2 : 8;
    vk_range *r = realloc(b->free, cap * sizeof *r);
    if (!r) return -1;
    b->free = r;
    b->cap_free = cap;
  }
  memmove(&b->free[at + 1], &b->free[at], (b->n_free - at) * sizeof *b->free);
  b->free[at].off = off;
  b->free[at].size = size;
  b->n_free++;
  return 0;
}

/* First fit at alignment; returns the offset or UINT64_MAX. */
static uint64_t vk_block_take(vk_block *b, uint64_t size, uint64_t align) {
  for (uint32_t i = 0; i < b->n_free; i++) {
    vk_range *r = &b->free[i];
    uint64_t start = (r->off + align - 1) / align * align;
    if (start + size > r->off + r->size) continue;
    uint64_t head = start - r->off, tail = r->off + r->size - (start + size);
    if (head && tail) {
      if (vk_range_insert(b, i + 1, start + size, tail)) return UINT64_MAX;
      b->free[i].size = head;
    } else if (head) {
      r->size = head;
    } else if (tail) {
      r->off = start + size;
      r->size = tail;
    } else {
      memmove(r, r + 1, (b->n_free - i - 1) * sizeof *r);
      b->n_free--;
    }
    b->live++;
    return start;
  }
  return UINT64_MAX;
}

static void vk_block_give(vk_block *b, uint64_t off, uint64_t size) {
  uint32_t i = 0;
  while (i < b->n_free && b->free[i].off < off) i++;
  int merged = 0;
  if (i > 0 && b->free[i - 1].off + b->free[i - 1].size == off) {
    b->free[i - 1].size += size;
    merged = 1;
    if (i < b->n_free && off + size == b->free[i].off) {
      b->free[i - 1].size += b->free[i].size;
      memmove(&b->free[i], &b->free[i + 1], (b->n_free - i - 1) * sizeof *b->free);
      b->n_free--;
    }
  } else if (i < b->n_free && off + size == b->free[i].off) {
    b->free[i].off = off;
    b->free[i].size += size;
    merged = 1;
  }
  if (!merged) (void)vk_range_insert(b, i, off, size); /* on failure the range is lost, not corrupted */
  b->live--;
}

/* ---- buffers ------------------------------------------------------------------------- */

int vk_buffer_known(vk_backend *be, const lk_buffer_t *b) {
  for (const lk_buffer_t *p = be->bufs; p; p = p->next)
    if (p == b) return 1;
  return 0;
}

static void vk_wait_all(vk_backend *be);

/* The device is lost (VK_ERROR_DEVICE_LOST, real or simulated): the instance
 * runs nothing any more; the error names the device. */
static int32_t vk_lost_fail(vk_backend *be, lk_error_t *err, const char *what) {
  be->lost = 1;
  return vk_fail(err, LK_ERR_BACKEND, "vulkan %s: device lost (VK_ERROR_DEVICE_LOST) on device %u (%s); this backend instance "
                 "can run nothing more: close it and create a new one", what, be->index, be->ph->props.deviceName);
}

static int32_t vk_alloc_internal(vk_backend *be, uint64_t nbytes, uint32_t flags, lk_buffer_t **out, lk_error_t *err) {
  const vk_phys *ph = be->ph;
  const VkPhysicalDeviceLimits *l = &ph->props.limits;
  if (ph->max_alloc && nbytes > ph->max_alloc)
    return vk_fail(err, LK_ERR_NOMEM,
                   "vulkan buffer_alloc: %llu bytes is more than the device's maxMemoryAllocationSize of %llu bytes (%s)",
                   (unsigned long long)nbytes, (unsigned long long)ph->max_alloc, ph->props.deviceName);
  uint64_t size = (nbytes + 255) / 256 * 256;
  VkBufferCreateInfo bi = {VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO, NULL, 0, size,
                           VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                               VK_BUFFER_USAGE_TRANSFER_DST_BIT,
                           VK_SHARING_MODE_EXCLUSIVE, 0, NULL};
  VkBuffer vb;
  VkResult r = vkCreateBuffer(be->dev, &bi, NULL, &vb);
  if (r != VK_SUCCESS)
    return vk_fail(err, LK_ERR_NOMEM, "vulkan buffer_alloc: vkCreateBuffer of %llu bytes failed: %s",
                   (unsigned long long)nbytes, vk_result_name(r));
  VkMemoryRequirements req;
  vkGetBufferMemoryRequirements(be->dev, vb, &req);
  uint64_t align = req.alignment > l->minStorageBufferOffsetAlignment ? req.alignment : l->minStorageBufferOffsetAlignment;
  if (align < 256) align = 256;
  const VkMemoryPropertyFlags hv = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
  int type;
  if (flags & LK_BUFFER_HOST_VISIBLE)
    type = vk_find_type(ph, req.memoryTypeBits, hv, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
  else if (be->force_staging)
    type = vk_find_type(ph, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0);
  else
    type = vk_find_type(ph, req.memoryTypeBits, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, hv);
  if (type < 0) type = vk_find_type(ph, req.memoryTypeBits, 0, 0);
  if (type < 0) {
    vkDestroyBuffer(be->dev, vb, NULL);
    return vk_fail(err, LK_ERR_UNSUPPORTED, "vulkan buffer_alloc: no memory type fits flags 0x%x", flags);
  }
  int host = (ph->mem.memoryTypes[type].propertyFlags & hv) == hv && !(be->force_staging && !(flags & LK_BUFFER_HOST_VISIBLE));
  uint64_t off = UINT64_MAX;
  vk_block *blk = NULL;
  for (blk = be->blocks; blk; blk = blk->next) {
    if (blk->type != (uint32_t)type || (uint32_t)host != blk->host) continue;
    off = vk_block_take(blk, req.size, align);
    if (off != UINT64_MAX) break;
  }
  if (!blk) {
    uint64_t bsize = req.size > VK_BLOCK_MIN ? req.size : VK_BLOCK_MIN;
    if (ph->max_alloc && bsize > ph->max_alloc) bsize = req.size;
    blk = calloc(1, sizeof *blk);
    VkMemoryAllocateInfo ai = {VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO, NULL, bsize, (uint32_t)type};
    r = blk ? vkAllocateMemory(be->dev, &ai, NULL, &blk->mem) : VK_ERROR_OUT_OF_HOST_MEMORY;
    if (r != VK_SUCCESS && blk && bsize > req.size) { /* a smaller block for this buffer alone */
      ai.allocationSize = bsize = req.size;
      r = vkAllocateMemory(be->dev, &ai, NULL, &blk->mem);
    }
    if (r != VK_SUCCESS) {
      free(blk);
      vkDestroyBuffer(be->dev, vb, NULL);
      return vk_fail(err, LK_ERR_NOMEM, "vulkan buffer_alloc: out of device memory for %llu bytes on %s (%s)",
                     (unsigned long long)nbytes, ph->props.deviceName, vk_result_name(r));
    }
    blk->size = bsize;
    blk->type = (uint32_t)type;
    blk->host = (uint32_t)host;
    if (host && (r = vkMapMemory(be->dev, blk->mem, 0, VK_WHOLE_SIZE, 0, &blk->map)) != VK_SUCCESS) {
      vkFreeMemory(be->dev, blk->mem, NULL);
      free(blk);
      vkDestroyBuffer(be->dev, vb, NULL);
      return vk_fail(err, LK_ERR_NOMEM, "vulkan buffer_alloc: vkMapMemory failed: %s", vk_result_name(r));
    }
    if (vk_range_insert(blk, 0, 0, bsize) != 0 || (off = vk_block_take(blk, req.size, align)) == UINT64_MAX) {
      vk_block_free(be, blk);
      vkDestroyBuffer(be->dev, vb, NULL);
      return vk_fail(err, LK_ERR_NOMEM, "vulkan buffer_alloc: out of host memory");
    }
    blk->next = be->blocks;
    be->blocks = blk;
  }
  lk_buffer_t *b = calloc(1, sizeof *b);
  if (!b || (r = vkBindBufferMemory(be->dev, vb, blk->mem, off)) != VK_SUCCESS) {
    free(b);
    vk_block_give(blk, off, req.size);
    vkDestroyBuffer(be->dev, vb, NULL);
    return vk_fail(err, LK_ERR_NOMEM, "vulkan buffer_alloc: cannot bind %llu bytes", (unsigned long long)nbytes);
  }
  b->magic = VK_BUF_MAGIC;
  b->flags = host ? (LK_BUFFER_HOST_VISIBLE | (flags & LK_BUFFER_HOST_VISIBLE ? 0 : LK_BUFFER_DEVICE_LOCAL)) : LK_BUFFER_DEVICE_LOCAL;
  if (ph->mem.memoryTypes[type].propertyFlags & VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT) b->flags |= LK_BUFFER_DEVICE_LOCAL;
  b->buf = vb;
  b->blk = blk;
  b->off = off;
  b->size = req.size;
  b->nbytes = nbytes;
  b->next = be->bufs;
  if (be->bufs) be->bufs->prev = b;
  be->bufs = b;
  *out = b;
  return LK_OK;
}

static void vk_free_internal(vk_backend *be, lk_buffer_t *b) {
  if (b->prev) b->prev->next = b->next;
  else be->bufs = b->next;
  if (b->next) b->next->prev = b->prev;
  vkDestroyBuffer(be->dev, b->buf, NULL);
  vk_block *blk = b->blk;
  vk_block_give(blk, b->off, b->size);
  if (blk->live == 0) { /* give an empty block back */
    vk_block **pp = &be->blocks;
    while (*pp && *pp != blk) pp = &(*pp)->next;
    if (*pp) *pp = blk->next;
    vk_block_free(be, blk);
  }
  b->magic = 0;
  free(b);
}

static int32_t vk_buffer_alloc(void *self, uint64_t nbytes, uint32_t flags, lk_buffer_t **out, lk_error_t *err) {
  vk_backend *be = self;
  if (!be || !out) return vk_fail(err, LK_ERR_INVALID_ARG, "vulkan buffer_alloc: NULL argument");
  *out = NULL;
  if (nbytes == 0) return vk_fail(err, LK_ERR_INVALID_ARG, "vulkan buffer_alloc: size 0");
  if (flags & ~(uint32_t)(LK_BUFFER_DEVICE_LOCAL | LK_BUFFER_HOST_VISIBLE))
    return vk_fail(err, LK_ERR_INVALID_ARG, "vulkan buffer_alloc: unknown flags 0x%x", flags);
  return vk_alloc_internal(be, nbytes, flags, out, err);
}

static void vk_buffer_free(void *self, lk_buffer_t *buf) {
  vk_backend *be = self;
  if (!be || !buf) return;
  if (!vk_buffer_known(be, buf) || buf == be->dummy || buf == be->staging) {
    vk_log(LK_LOG_WARN, "buffer_free: unknown buffer ignored (freed twice?)");
    return;
  }
  vk_wait_all(be);
  vk_free_internal(be, buf);
}

static int32_t vk_check_range(vk_backend *be, lk_buffer_t *buf, uint64_t offset, const void *p, uint64_t nbytes,
                              const char *what, lk_error_t *err) {
  if (!be || !buf) return vk_fail(err, LK_ERR_INVALID_ARG, "vulkan %s: NULL argument", what);
  if (!vk_buffer_known(be, buf))
    return vk_fail(err, LK_ERR_INVALID_ARG, "vulkan %s: buffer %p was not made by this backend or was freed", what,
                   (void *)buf);
  if (nbytes && !p) return vk_fail(err, LK_ERR_INVALID_ARG, "vulkan %s: NULL host pointer", what);
  if (offset > buf->nbytes || nbytes > buf->nbytes - offset)
    return vk_fail(err, LK_ERR_INVALID_ARG, "vulkan %s: bytes [%llu, %llu) are outside the buffer of %llu bytes", what,
                   (unsigned long long)offset, (unsigned long long)(offset + nbytes), (unsigned long long)buf->nbytes);
  return LK_OK;
}

static int32_t vk_buffer_map(void *self, lk_buffer_t *buf, uint64_t offset, uint64_t nbytes, void **out, lk_error_t *err) {
  vk_backend *be = self;
  if (!out) return vk_fail(err, LK_ERR_INVALID_ARG, "vulkan buffer_map: NULL out");
  *out = NULL;
  int32_t rc = vk_check_range(be, buf, offset, buf, nbytes, "buffer_map", err);
  if (rc != LK_OK) return rc;
  if (!buf->blk->map)
    return vk_fail(err, LK_ERR_UNSUPPORTED, "vulkan buffer_map: the buffer is not HOST_VISIBLE (allocate it with LK_BUFFER_HOST_VISIBLE)");
  vk_wait_all(be);
  *out = (char *)buf->blk->map + buf->off + offset;
  return LK_OK;
}

static void vk_buffer_unmap(void *self, lk_buffer_t *buf) {
  (void)self;
  (void)buf; /* coherent, persistently mapped */
}

/* One-shot transfer through the staging buffer: copy [off, off + n) of buf
 * to (to_dev 0) or from (1) the staging buffer, and wait. */
static int32_t vk_staged_copy(vk_backend *be, lk_buffer_t *buf, uint64_t off, uint64_t n, int to_dev, lk_error_t *err) {
  VkCommandBufferAllocateInfo ai = {VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, NULL, be->cmd_pool,
                                    VK_COMMAND_BUFFER_LEVEL_PRIMARY, 1};
  VkCommandBuffer cmd;
  VkResult r = vkAllocateCommandBuffers(be->dev, &ai, &cmd);
  if (r != VK_SUCCESS) return vk_fail(err, LK_ERR_NOMEM, "vulkan transfer: %s", vk_result_name(r));
  VkCommandBufferBeginInfo bi = {VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, NULL,
                                 VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT, NULL};
  vkBeginCommandBuffer(cmd, &bi);
  VkBufferCopy c = {to_dev ? 0 : off, to_dev ? off : 0, n};
  if (to_dev) vkCmdCopyBuffer(cmd, be->staging->buf, buf->buf, 1, &c);
  else vkCmdCopyBuffer(cmd, buf->buf, be->staging->buf, 1, &c);
  vkEndCommandBuffer(cmd);
  VkSubmitInfo si = {VK_STRUCTURE_TYPE_SUBMIT_INFO, NULL, 0, NULL, NULL, 1, &cmd, 0, NULL};
  r = vkQueueSubmit(be->queue, 1, &si, VK_NULL_HANDLE);
  if (r == VK_SUCCESS) r = vkQueueWaitIdle(be->queue);
  vkFreeCommandBuffers(be->dev, be->cmd_pool, 1, &cmd);
  if (r == VK_ERROR_DEVICE_LOST) return vk_lost_fail(be, err, "transfer");
  if (r != VK_SUCCESS) return vk_fail(err, LK_ERR_NOMEM, "vulkan transfer: %s", vk_result_name(r));
  return LK_OK;
}

static int32_t vk_staging_reserve(vk_backend *be, uint64_t n, lk_error_t *err) {
  if (be->staging && be->staging->nbytes >= n) return LK_OK;
  if (be->staging) vk_free_internal(be, be->staging);
  be->staging = NULL;
  uint64_t want = n < (16u << 20) ? (16u << 20) : n;
  return vk_alloc_internal(be, want, LK_BUFFER_HOST_VISIBLE, &be->staging, err);
}

static int32_t vk_transfer(vk_backend *be, lk_buffer_t *buf, uint64_t offset, void *host, uint64_t nbytes, int up,
                           lk_error_t *err) {
  vk_wait_all(be);
  if (be->lost) return vk_lost_fail(be, err, up ? "upload" : "download");
  if (!nbytes) return LK_OK;
  if (buf->blk->map) {
    char *p = (char *)buf->blk->map + buf->off + offset;
    if (up) memmove(p, host, nbytes);
    else memmove(host, p, nbytes);
    return LK_OK;
  }
  uint64_t chunk = 16u << 20;
  int32_t rc = vk_staging_reserve(be, nbytes < chunk ? nbytes : chunk, err);
  for (uint64_t done = 0; rc == LK_OK && done < nbytes;) {
    uint64_t n = nbytes - done < be->staging->nbytes ? nbytes - done : be->staging->nbytes;
    char *st = (char *)be->staging->blk->map + be->staging->off;
    if (up) memcpy(st, (char *)host + done, n);
    rc = vk_staged_copy(be, buf, offset + done, n, up, err);
    if (rc == LK_OK && !up) memcpy((char *)host + done, st, n);
    done += n;
  }
  return rc;
}

static int32_t vk_upload(void *self, lk_buffer_t *buf, uint64_t offset, const void *src, uint64_t nbytes, lk_error_t *err) {
  int32_t rc = vk_check_range(self, buf, offset, src, nbytes, "upload", err);
  return rc == LK_OK ? vk_transfer(self, buf, offset, (void *)(uintptr_t)src, nbytes, 1, err) : rc;
}

static int32_t vk_download(void *self, lk_buffer_t *buf, uint64_t offset, void *dst, uint64_t nbytes, lk_error_t *err) {
  int32_t rc = vk_check_range(self, buf, offset, dst, nbytes, "download", err);
  return rc == LK_OK ? vk_transfer(self, buf, offset, dst, nbytes, 0, err) : rc;
}

/* ---- submissions ------------------------------------------------------------------------ */

static void vk_free_internal(vk_backend *be, lk_buffer_t *b);

static void vk_sub_destroy(vk_backend *be, vk_sub *s) {
  if (s->flag) vk_free_internal(be, s->flag);
  if (s->scratch) vk_free_internal(be, s->scratch);
  free(s->op_ids);
  vkDestroyFence(be->dev, s->fence, NULL);
  vkFreeCommandBuffers(be->dev, be->cmd_pool, 1, &s->cmd);
  if (s->pool) vkDestroyDescriptorPool(be->dev, s->pool, NULL);
  free(s);
}

/* Wait for s; record its status once. */
static int32_t vk_sub_wait(vk_backend *be, vk_sub *s, uint64_t timeout_ns) {
  if (s->done) return LK_OK;
  VkResult r = vkWaitForFences(be->dev, 1, &s->fence, VK_TRUE, timeout_ns);
  if (r == VK_TIMEOUT) return LK_ERR_TIMEOUT;
  s->done = 1;
  if (r == VK_ERROR_DEVICE_LOST) {
    be->lost = 1;
    s->status = LK_ERR_BACKEND;
    snprintf(s->msg, sizeof s->msg, "vulkan: device lost (VK_ERROR_DEVICE_LOST) on device %u (%.64s) while the batch ran; "
             "this backend instance can run nothing more", be->index, be->ph->props.deviceName);
  } else if (r != VK_SUCCESS) {
    s->status = LK_ERR_BACKEND;
    snprintf(s->msg, sizeof s->msg, "vulkan: the batch failed: %s", vk_result_name(r));
  } else if (s->flag) {
    uint32_t tag = *(const volatile uint32_t *)((char *)s->flag->blk->map + s->flag->off);
    if (tag) {
      s->status = LK_ERR_INVALID_ARG;
      int32_t id = tag <= s->n_ops ? s->op_ids[tag - 1] : 0;
      snprintf(s->msg, sizeof s->msg, "vulkan op %u (%s): %s outside its range; the batch failed", tag - 1, vk_op_label(id),
               id == LK_OP_CROSS_ENTROPY || id == LK_OP_CROSS_ENTROPY_BACKWARD ? "a label (not ignore_index) is" : "an id is");
    }
  }
  if (s->status != LK_OK && be->async_status == LK_OK) {
    be->async_status = s->status;
    snprintf(be->async_msg, sizeof be->async_msg, "%s", s->msg);
  }
  return LK_OK;
}

/* Wait for every submission; free those no fence refers to. */
static void vk_wait_all(vk_backend *be) {
  vk_sub **pp = &be->subs;
  while (*pp) {
    vk_sub *s = *pp;
    (void)vk_sub_wait(be, s, UINT64_MAX);
    if (!s->user) {
      *pp = s->next;
      vk_sub_destroy(be, s);
    } else {
      pp = &s->next;
    }
  }
}

/* Free finished submissions that no fence refers to, without waiting. */
static void vk_reap(vk_backend *be) {
  vk_sub **pp = &be->subs;
  while (*pp) {
    vk_sub *s = *pp;
    if (!s->done && vkGetFenceStatus(be->dev, s->fence) == VK_SUCCESS) s->done = 1;
    if (s->done && !s->user) {
      *pp = s->next;
      vk_sub_destroy(be, s);
    } else {
      pp = &s->next;
    }
  }
}

static int32_t vk_submit(void *self, const lk_op_t *ops, uint32_t n_ops, lk_fence_t **out_fence, lk_error_t *err) {
  vk_backend *be = self;
  if (out_fence) *out_fence = NULL;
  if (!be) return vk_fail(err, LK_ERR_INVALID_ARG, "vulkan submit: NULL backend");
  if (n_ops && !ops) return vk_fail(err, LK_ERR_INVALID_ARG, "vulkan submit: NULL ops with n_ops %u", n_ops);
  if (be->lost) return vk_lost_fail(be, err, "submit");
  vk_reap(be);
  size_t cap = (size_t)n_ops * 2 + VK_MAX_DISP;
  vk_disp *d = malloc(cap * sizeof *d);
  if (!d) return vk_fail(err, LK_ERR_NOMEM, "vulkan submit: out of memory for %u ops", n_ops);
  uint32_t nd = 0, need_flag = 0;
  uint64_t scratch = 0, salign = be->ph->props.limits.minStorageBufferOffsetAlignment;
  if (salign < 256) salign = 256;
  for (uint32_t i = 0; i < n_ops; i++) {
    uint32_t k = 0;
    if (nd + VK_MAX_DISP > cap) {
      vk_disp *nd2 = realloc(d, (cap * 2) * sizeof *d);
      if (!nd2) {
        free(d);
        return vk_fail(err, LK_ERR_NOMEM, "vulkan submit: out of memory for %u ops", n_ops);
      }
      d = nd2;
      cap *= 2;
    }
    memset(&d[nd], 0, VK_MAX_DISP * sizeof *d);
    int32_t rc = vk_op_plan(be, &ops[i], i, &d[nd], &k, err);
    for (uint32_t q = 0; rc == LK_OK && q < k; q++)
      if (!be->pipe[d[nd + q].shader])
        rc = vk_fail(err, LK_ERR_UNSUPPORTED, "vulkan op %u (%s): its shader %s.comp is missing from this build (no SPIR-V "
                     "for it: %s); the batch was refused", i, vk_op_label(ops[i].id), vk_shaders[d[nd + q].shader].name,
                     vk_shaders[d[nd + q].shader].size ? "left out by LORAKIT_VULKAN_FAULT" : "not compiled");
    if (rc != LK_OK) {
      free(d);
      return rc;
    }
    uint64_t need = k ? d[nd].scratch : 0;
    for (uint32_t q = 0; q < k; q++) {
      need_flag |= (uint32_t)d[nd + q].flag;
      for (int b = 0; b < VK_NBIND; b++)
        if (d[nd + q].bind[b].buf == VK_SCRATCH) d[nd + q].bind[b].base += scratch; /* made absolute below */
    }
    scratch += (need + salign - 1) / salign * salign;
    nd += k;
  }
  vk_sub *s = calloc(1, sizeof *s);
  if (s && scratch) {
    int32_t src = vk_alloc_internal(be, scratch, 0, &s->scratch, err);
    if (src != LK_OK) {
      free(s);
      free(d);
      return src;
    }
  }
  if (s && need_flag) {
    s->op_ids = malloc((size_t)n_ops * sizeof *s->op_ids);
    int32_t frc = s->op_ids ? vk_alloc_internal(be, 256, LK_BUFFER_HOST_VISIBLE, &s->flag, err)
                            : vk_fail(err, LK_ERR_NOMEM, "vulkan submit: out of memory");
    if (frc != LK_OK) {
      free(s->op_ids);
      if (s->scratch) vk_free_internal(be, s->scratch);
      free(s);
      free(d);
      return frc;
    }
    memset((char *)s->flag->blk->map + s->flag->off, 0, 256);
    for (uint32_t i = 0; i < n_ops; i++) s->op_ids[i] = ops[i].id;
    s->n_ops = n_ops;
  }
  lk_fence_t *f = out_fence ? calloc(1, sizeof *f) : NULL;
  if (!s || (out_fence && !f)) {
    if (s) {
      if (s->flag) vk_free_internal(be, s->flag);
      if (s->scratch) vk_free_internal(be, s->scratch);
      free(s->op_ids);
    }
    free(s);
    free(f);
    free(d);
    return vk_fail(err, LK_ERR_NOMEM, "vulkan submit: out of memory");
  }
  VkResult r = VK_SUCCESS;
  if (nd) {
    VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, VK_NBIND * nd};
    VkDescriptorPoolCreateInfo pi = {VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO, NULL, 0, nd, 1, &ps};
    r = vkCreateDescriptorPool(be->dev, &pi, NULL, &s->pool);
  }
  VkCommandBufferAllocateInfo ai = {VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO, NULL, be->cmd_pool,
                                    VK_COMMAND_BUFFER_LEVEL_PRIMARY, 1};
  if (r == VK_SUCCESS) r = vkAllocateCommandBuffers(be->dev, &ai, &s->cmd);
  VkFenceCreateInfo fi = {VK_STRUCTURE_TYPE_FENCE_CREATE_INFO, NULL, 0};
  if (r == VK_SUCCESS) r = vkCreateFence(be->dev, &fi, NULL, &s->fence);
  if (r != VK_SUCCESS) {
    if (s->fence) vkDestroyFence(be->dev, s->fence, NULL);
    if (s->cmd) vkFreeCommandBuffers(be->dev, be->cmd_pool, 1, &s->cmd);
    if (s->pool) vkDestroyDescriptorPool(be->dev, s->pool, NULL);
    if (s->flag) vk_free_internal(be, s->flag);
    if (s->scratch) vk_free_internal(be, s->scratch);
    free(s->op_ids);
    free(s);
    free(f);
    free(d);
    return vk_fail(err, LK_ERR_NOMEM, "vulkan submit: cannot create the command buffer: %s", vk_result_name(r));
  }
  VkCommandBufferBeginInfo bi = {VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO, NULL,
                                 VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT, NULL};
  vkBeginCommandBuffer(s->cmd, &bi);
  VkMemoryBarrier mb = {VK_STRUCTURE_TYPE_MEMORY_BARRIER, NULL, VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT |
                        VK_ACCESS_HOST_WRITE_BIT, VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT};
  vkCmdPipelineBarrier(s->cmd, VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                       VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT, 0, 1, &mb, 0, NULL, 0, NULL);
  for (uint32_t i = 0; i < nd && r == VK_SUCCESS; i++) {
    VkDescriptorSetAllocateInfo dai = {VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO, NULL, s->pool, 1, &be->dsl};
    VkDescriptorSet set;
    r = vkAllocateDescriptorSets(be->dev, &dai, &set);
    if (r != VK_SUCCESS) break;
    VkDescriptorBufferInfo bis[VK_NBIND];
    VkWriteDescriptorSet w[VK_NBIND];
    uint32_t max_range = be->ph->props.limits.maxStorageBufferRange;
    if (d[i].flag) {
      d[i].bind[5].buf = s->flag;
      d[i].bind[5].base = 0;
    }
    for (int k = 0; k < VK_NBIND; k++)
      if (d[i].bind[k].buf == VK_SCRATCH) d[i].bind[k].buf = s->scratch;
    for (int k = 0; k < VK_NBIND; k++) {
      lk_buffer_t *b = d[i].bind[k].buf ? d[i].bind[k].buf : be->dummy;
      uint64_t base = d[i].bind[k].buf ? d[i].bind[k].base : 0;
      uint64_t range = b->size - base;
      if (range > max_range) range = max_range & ~3ull;
      bis[k].buffer = b->buf;
      bis[k].offset = base;
      bis[k].range = range;
      w[k] = (VkWriteDescriptorSet){VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET, NULL, set, (uint32_t)k, 0, 1,
                                    VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, NULL, &bis[k], NULL};
    }
    vkUpdateDescriptorSets(be->dev, VK_NBIND, w, 0, NULL);
    vkCmdBindPipeline(s->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, be->pipe[d[i].shader]);
    vkCmdBindDescriptorSets(s->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, be->layout, 0, 1, &set, 0, NULL);
    vkCmdPushConstants(s->cmd, be->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, d[i].pc_size, d[i].pc);
    vkCmdDispatch(s->cmd, d[i].groups[0], d[i].groups[1], d[i].groups[2]);
    VkMemoryBarrier b2 = {VK_STRUCTURE_TYPE_MEMORY_BARRIER, NULL, VK_ACCESS_SHADER_WRITE_BIT,
                          VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_HOST_READ_BIT |
                              VK_ACCESS_TRANSFER_READ_BIT};
    vkCmdPipelineBarrier(s->cmd, VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT,
                         VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_HOST_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT,
                         0, 1, &b2, 0, NULL, 0, NULL);
  }
  free(d);
  vkEndCommandBuffer(s->cmd);
  if (r == VK_SUCCESS) {
    VkSubmitInfo si = {VK_STRUCTURE_TYPE_SUBMIT_INFO, NULL, 0, NULL, NULL, 1, &s->cmd, 0, NULL};
    if (++be->n_submits == be->fault_lost_at) r = VK_ERROR_DEVICE_LOST; /* simulated: nothing is queued */
    else r = vkQueueSubmit(be->queue, 1, &si, s->fence);
  }
  if (r != VK_SUCCESS) {
    vk_sub_destroy(be, s);
    free(f);
    if (r == VK_ERROR_DEVICE_LOST) return vk_lost_fail(be, err, "submit");
    return vk_fail(err, LK_ERR_NOMEM, "vulkan submit: %s", vk_result_name(r));
  }
  s->next = be->subs;
  be->subs = s;
  if (f) {
    f->magic = VK_FENCE_MAGIC;
    f->sub = s;
    f->owner = be;
    s->user = 1;
    *out_fence = f;
  }
  return LK_OK;
}

static int32_t vk_fence_wait(void *self, lk_fence_t *f, uint64_t timeout_ns, lk_error_t *err) {
  vk_backend *be = self;
  if (!be || !f || f->magic != VK_FENCE_MAGIC || f->owner != be)
    return vk_fail(err, LK_ERR_INVALID_ARG, "vulkan fence_wait: NULL or unknown fence (or another backend's)");
  int32_t rc = vk_sub_wait(be, f->sub, timeout_ns);
  if (rc == LK_ERR_TIMEOUT)
    return vk_fail(err, LK_ERR_TIMEOUT, "vulkan fence_wait: the batch has not completed within %llu ns",
                   (unsigned long long)timeout_ns);
  if (f->sub->status != LK_OK) {
    if (be->async_status == f->sub->status) be->async_status = LK_OK; /* reported here */
    return vk_fail(err, f->sub->status, "%s", f->sub->msg);
  }
  return LK_OK;
}

static void vk_fence_free(void *self, lk_fence_t *f) {
  vk_backend *be = self;
  if (!be || !f || f->magic != VK_FENCE_MAGIC || f->owner != be) return;
  f->sub->user = 0;
  f->magic = 0;
  free(f);
  vk_reap(be);
}

static int32_t vk_synchronize(void *self, lk_error_t *err) {
  vk_backend *be = self;
  if (!be) return vk_fail(err, LK_ERR_INVALID_ARG, "vulkan synchronize: NULL backend");
  vk_wait_all(be);
  int32_t rc = be->async_status;
  be->async_status = LK_OK;
  return rc == LK_OK ? LK_OK : vk_fail(err, rc, "%s", be->async_msg);
}

/* ---- instances ------------------------------------------------------------------------------ */

static void vk_destroy(void *self) {
  vk_backend *be = self;
  if (!be) return;
  if (be->dev) {
    vkDeviceWaitIdle(be->dev);
    vk_wait_all(be);
    while (be->subs) { /* fences the caller never freed */
      vk_sub *s = be->subs;
      be->subs = s->next;
      vk_sub_destroy(be, s);
    }
    while (be->bufs) vk_free_internal(be, be->bufs);
    while (be->blocks) {
      vk_block *b = be->blocks;
      be->blocks = b->next;
      vk_block_free(be, b);
    }
    for (int i = 0; i < VK_SH_COUNT; i++)
      if (be->pipe[i]) vkDestroyPipeline(be->dev, be->pipe[i], NULL);
    if (be->layout) vkDestroyPipelineLayout(be->dev, be->layout, NULL);
    if (be->dsl) vkDestroyDescriptorSetLayout(be->dev, be->dsl, NULL);
    if (be->cmd_pool) vkDestroyCommandPool(be->dev, be->cmd_pool, NULL);
    vkDestroyDevice(be->dev, NULL);
  }
  free(be);
}

static VkResult vk_pipeline(vk_backend *be, const uint32_t *code, size_t size, VkPipeline *out) {
  VkShaderModuleCreateInfo mi = {VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO, NULL, 0, size, code};
  VkShaderModule mod;
  VkResult r = vkCreateShaderModule(be->dev, &mi, NULL, &mod);
  if (r != VK_SUCCESS) return r;
  VkComputePipelineCreateInfo pci = {VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO, NULL, 0,
                                     {VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO, NULL, 0,
                                      VK_SHADER_STAGE_COMPUTE_BIT, mod, "main", NULL},
                                     be->layout, VK_NULL_HANDLE, -1};
  r = vkCreateComputePipelines(be->dev, VK_NULL_HANDLE, 1, &pci, NULL, out);
  vkDestroyShaderModule(be->dev, mod, NULL);
  return r;
}

/* LORAKIT_VULKAN_FAULT: comma-separated lost:N (N >= 1) and noshader:NAME
 * (NAME of shaders/NAME.comp); for tests of the fault paths. */
static int32_t vk_fault_parse(vk_backend *be, const char *v, lk_error_t *err) {
  if (!v || !*v) return LK_OK;
  const char *p = v;
  while (*p) {
    size_t len = strcspn(p, ",");
    int ok = 0;
    if (len > 5 && !strncmp(p, "lost:", 5)) {
      char *end = NULL;
      unsigned long long n = strtoull(p + 5, &end, 10);
      ok = end == p + len && n >= 1 && p[5] != '-' && p[5] != '+';
      if (ok) be->fault_lost_at = n;
    } else if (len > 9 && !strncmp(p, "noshader:", 9)) {
      for (int i = 0; i < VK_SH_COUNT; i++)
        if (strlen(vk_shaders[i].name) == len - 9 && !strncmp(p + 9, vk_shaders[i].name, len - 9)) {
          be->noshader |= 1u << i;
          ok = 1;
        }
    }
    if (!ok)
      return vk_fail(err, LK_ERR_INVALID_ARG, "vulkan create: LORAKIT_VULKAN_FAULT '%s': '%.*s' is not lost:N (N >= 1) or "
                     "noshader:NAME (elem, reduce, matmul, nn, rope, attn, emb_atomic)", v, (int)len, p);
    p += len;
    if (*p == ',') p++;
  }
  return LK_OK;
}

static int32_t vk_create(const lk_backend_config_t *cfg, void **out_self, lk_error_t *err) {
  if (!out_self) return vk_fail(err, LK_ERR_INVALID_ARG, "vulkan create: NULL out_self");
  *out_self = NULL;
  if (!vk_refs.host) return vk_fail(err, LK_ERR_STATE, "vulkan create: the plugin %s is not initialised", VK_PLUGIN_ID);
  uint32_t device = 0;
  if (cfg) {
    if (cfg->struct_size < LK_MIN_SIZE_BACKEND_CONFIG)
      return vk_fail(err, LK_ERR_ABI, "vulkan create: lk_backend_config_t struct_size %u is below its minimum %zu",
                     cfg->struct_size, (size_t)LK_MIN_SIZE_BACKEND_CONFIG);
    for (size_t i = sizeof *cfg; i < cfg->struct_size; i++)
      if (((const unsigned char *)cfg)[i])
        return vk_fail(err, LK_ERR_ABI, "vulkan create: lk_backend_config_t has a non-zero unknown tail");
    device = cfg->device;
  }
  if (vk_g.n_dev == 0) return vk_fail(err, LK_ERR_NOT_FOUND, "vulkan create: no Vulkan device: %s", vk_g.why);
  if (device >= vk_g.n_dev)
    return vk_fail(err, LK_ERR_NOT_FOUND, "vulkan create: device %u does not exist (%u Vulkan device%s)", device,
                   vk_g.n_dev, vk_g.n_dev == 1 ? "" : "s");
  if (vk_g.dev[device].props.limits.maxPerStageDescriptorStorageBuffers < VK_NBIND)
    return vk_fail(err, LK_ERR_UNSUPPORTED, "vulkan create: %s allows %u storage buffers per shader stage; the backend needs %d",
                   vk_g.dev[device].props.deviceName, vk_g.dev[device].props.limits.maxPerStageDescriptorStorageBuffers, VK_NBIND);
  vk_backend *be = calloc(1, sizeof *be);
  if (!be) return vk_fail(err, LK_ERR_NOMEM, "vulkan create: out of memory");
  be->index = device;
  be->ph = &vk_g.dev[device];
  const char *fs = secure_getenv("LORAKIT_VULKAN_STAGING");
  be->force_staging = fs && fs[0] == '1';
  int32_t frc = vk_fault_parse(be, secure_getenv("LORAKIT_VULKAN_FAULT"), err);
  if (frc != LK_OK) {
    free(be);
    return frc;
  }
  float prio = 1.0f;
  VkDeviceQueueCreateInfo qi = {VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO, NULL, 0, be->ph->queue_family, 1, &prio};
  /* float atomics for EMBEDDING_BACKWARD where the device has them (and the shader is not left out) */
  int atomics = be->ph->atomic_f32_add && !(be->noshader & (1u << VK_SH_EMB_ATOMIC));
  VkPhysicalDeviceShaderAtomicFloatFeaturesEXT af;
  memset(&af, 0, sizeof af);
  af.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_ATOMIC_FLOAT_FEATURES_EXT;
  af.shaderBufferFloat32AtomicAdd = VK_TRUE;
  const char *xname = VK_EXT_SHADER_ATOMIC_FLOAT_EXTENSION_NAME;
  VkDeviceCreateInfo di = {VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO, atomics ? &af : NULL, 0, 1, &qi, 0, NULL,
                           atomics ? 1u : 0u, atomics ? &xname : NULL, NULL};
  VkResult r = vkCreateDevice(be->ph->pd, &di, NULL, &be->dev);
  if (r != VK_SUCCESS) {
    be->dev = VK_NULL_HANDLE;
    vk_destroy(be);
    return vk_fail(err, LK_ERR_UNSUPPORTED, "vulkan create: vkCreateDevice on %s failed: %s", vk_g.dev[device].props.deviceName,
                   vk_result_name(r));
  }
  vkGetDeviceQueue(be->dev, be->ph->queue_family, 0, &be->queue);
  VkCommandPoolCreateInfo cpi = {VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO, NULL,
                                 VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT, be->ph->queue_family};
  r = vkCreateCommandPool(be->dev, &cpi, NULL, &be->cmd_pool);
  VkDescriptorSetLayoutBinding lb[VK_NBIND];
  for (uint32_t i = 0; i < VK_NBIND; i++)
    lb[i] = (VkDescriptorSetLayoutBinding){i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1, VK_SHADER_STAGE_COMPUTE_BIT, NULL};
  VkDescriptorSetLayoutCreateInfo li = {VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO, NULL, 0, VK_NBIND, lb};
  if (r == VK_SUCCESS) r = vkCreateDescriptorSetLayout(be->dev, &li, NULL, &be->dsl);
  VkPushConstantRange pr = {VK_SHADER_STAGE_COMPUTE_BIT, 0, 128};
  VkPipelineLayoutCreateInfo pli = {VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO, NULL, 0, 1, &be->dsl, 1, &pr};
  if (r == VK_SUCCESS) r = vkCreatePipelineLayout(be->dev, &pli, NULL, &be->layout);
  for (int i = 0; i < VK_SH_COUNT && r == VK_SUCCESS; i++) {
    if (i == VK_SH_EMB_ATOMIC && !atomics) continue; /* optional: the device lacks float atomics */
    if (vk_shaders[i].size && !(be->noshader & (1u << i))) {
      r = vk_pipeline(be, vk_shaders[i].code, vk_shaders[i].size, &be->pipe[i]);
      continue;
    }
    /* a shader absent from the build: its ops are refused (supports() 0, submit names the shader) */
    char msg[256];
    snprintf(msg, sizeof msg, "device %u (%s): shader %s.comp is missing from this build (%s); the ops that need it are "
             "unsupported", device, vk_g.dev[device].props.deviceName, vk_shaders[i].name,
             vk_shaders[i].size ? "LORAKIT_VULKAN_FAULT=noshader" : "no SPIR-V");
    vk_log(LK_LOG_WARN, msg);
  }
  if (r != VK_SUCCESS) {
    vk_destroy(be);
    return vk_fail(err, LK_ERR_UNSUPPORTED, "vulkan create: cannot build the compute pipelines on %s: %s",
                   vk_g.dev[device].props.deviceName, vk_result_name(r));
  }
  int32_t rc = vk_alloc_internal(be, 256, 0, &be->dummy, err);
  if (rc != LK_OK) {
    vk_destroy(be);
    return rc;
  }
  *out_self = be;
  return LK_OK;
}

static int32_t vk_supports(void *self, const lk_op_t *op) {
  const vk_backend *be = self;
  if (!op) return 0;
  vk_disp d[VK_MAX_DISP];
  uint32_t n = 0;
  lk_error_t e = {sizeof e, 0, {0}};
  if (vk_op_plan(NULL, op, 0, d, &n, &e) != LK_OK) return 0;
  for (uint32_t i = 0; be && i < n; i++)
    if (!be->pipe[d[i].shader]) return 0; /* its shader is missing from the build */
  return 1;
}

/* ---- plugin descriptor, factory, entry ----------------------------------------------------------- */

static const lk_backend_vt_t vk_backend_vt = {
    .struct_size = sizeof(lk_backend_vt_t),
    .name = "vulkan",
    .description = "Vulkan 1.2 compute backend (first stage: every core op; W f32/f16/bf16/q8_0/q4_0)",
    .score = vk_score,
    .device_count = vk_device_count,
    .device_info = vk_device_info,
    .create = vk_create,
    .destroy = vk_destroy,
    .supports = vk_supports,
    .buffer_alloc = vk_buffer_alloc,
    .buffer_wrap = NULL,
    .buffer_free = vk_buffer_free,
    .buffer_map = vk_buffer_map,
    .buffer_unmap = vk_buffer_unmap,
    .upload = vk_upload,
    .download = vk_download,
    .submit = vk_submit,
    .fence_wait = vk_fence_wait,
    .fence_free = vk_fence_free,
    .synchronize = vk_synchronize,
    .get_extension = NULL,
};

static uint32_t vk_factory_count(void) { return 1; }
static const lk_backend_vt_t *vk_factory_get(uint32_t index) { return index == 0 ? &vk_backend_vt : NULL; }
static const lk_backend_factory_t vk_factory = {sizeof(lk_backend_factory_t), vk_factory_count, vk_factory_get};

/* The VkInstance lives until the process ends (plugins are never unloaded):
 * destroying it at the last fini makes the loader unload the driver, and a
 * later init would load it again, each time leaving the driver's own
 * process-wide allocations behind (lavapipe's show under LeakSanitizer). */
static int vk_global_done;

static int32_t vk_init(const lk_host_api_t *host, lk_error_t *err) {
  if (!host) return vk_fail(err, LK_ERR_INVALID_ARG, "%s init: NULL host table", VK_PLUGIN_ID);
  if (vk_refs.n == 0) {
    plug_refs_acquire(&vk_refs, host);
    if (!vk_global_done) vk_global_init();
    vk_global_done = 1;
    if (vk_g.n_dev == 0) {
      char msg[640];
      snprintf(msg, sizeof msg, "vulkan: no device, the backend lists none: %s", vk_g.why);
      vk_log(LK_LOG_WARN, msg);
    }
    return LK_OK;
  }
  plug_refs_acquire(&vk_refs, host);
  return LK_OK;
}

static void vk_fini(void) {
  plug_refs_release(&vk_refs);
}

static const void *vk_get_factory(const char *factory_id) {
  return factory_id && !strcmp(factory_id, LK_FACTORY_BACKEND) ? &vk_factory : NULL;
}

static const lk_plugin_t vk_plugin = {
    sizeof(lk_plugin_t),
    LK_PLUGIN_ABI_VERSION,
    VK_PLUGIN_ID,
    "lorakit Vulkan backend",
    "0.1.0",
    "Ops of lorakit_ops.h as Vulkan compute shaders (SPIR-V embedded at build time)",
    vk_init,
    vk_fini,
    vk_get_factory,
};

LK_PLUGIN_EXPORT int32_t lk_plugin_entry(uint32_t *abi_in_out, const lk_host_api_t *host, const lk_plugin_t **out) {
  (void)host;
  int32_t rc = lk_plugin_negotiate(abi_in_out);
  if (rc != LK_OK) return rc;
  if (!out) return LK_ERR_INVALID_ARG;
  *out = &vk_plugin;
  return LK_OK;
}
