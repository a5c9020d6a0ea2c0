// lorakit.hpp - a header-only C++17 wrapper over the C API of lorakit.h.
//
// Nothing here is part of the binary ABI: it is inline code compiled into the
// host, calling only the extern "C" functions of liblorakit, so it can change
// without touching the library. What it adds:
//   - ownership: every object is a std::unique_ptr with a deleter calling the
//     matching lk_*_free/close, so it is freed exactly once, in scope order;
//   - errors: a failing call throws lorakit::error, carrying the lk_status,
//     the call's name and the context's message (lk_last_error);
//   - struct_size: the wrapper fills it on every struct it passes in.
//
// Lifetimes are those of the C API: a context must outlive the adapters,
// backends and models made from it (declare it first; locals are destroyed
// in reverse order). Thread rules are the C functions' ([one-thread-per-
// context] for almost everything): the wrappers add no locking.
//
//   lorakit::context ctx({/*no_default_plugins=*/true, /*n_threads=*/1});
//   ctx.load_plugin("build/plugins/lorakit-cpu.so");
//   lorakit::adapter ad = ctx.create_adapter(lorakit::lora_config(8, 16.0f));
//   ad.add_target("model.layers.0.self_attn.q_proj", 4096, 4096);
//   lorakit::backend be = ctx.open_backend("cpu");
//   be.forward(ad, 0, x, &W, y);   // x, W, y: lk_tensor_t from lorakit::view
#ifndef LORAKIT_HPP
#define LORAKIT_HPP

#include "lorakit.h"

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace lorakit {

// A failed lorakit call: status() is the lk_status (negative), detail() the
// context's message ("" when the call has no context), what() both with the
// call's name: "lk_backend_open: not found: no backend named 'x' (...)".
class error : public std::runtime_error {
 public:
  error(lk_status status, const std::string &call, const std::string &detail)
      : std::runtime_error(compose(status, call, detail)), status_(status), detail_(detail) {}
  lk_status status() const noexcept { return status_; }
  const std::string &detail() const noexcept { return detail_; }

 private:
  static std::string compose(lk_status status, const std::string &call,
                             const std::string &detail) {
    std::string m = call + ": " + lk_strerror(status);
    if (!detail.empty()) m += ": " + detail;
    return m;
  }
  lk_status status_;
  std::string detail_;
};

namespace detail {
inline std::string str(const char *z) { return z ? std::string(z) : std::string(); }
inline void check(lk_status st, const char *call, const lk_context_t *ctx) {
  if (st != LK_OK) throw error(st, call, ctx ? str(lk_last_error(ctx)) : std::string());
}
template <class T>
T sized() {
  T v;
  std::memset(&v, 0, sizeof v);
  v.struct_size = static_cast<uint32_t>(sizeof v);
  return v;
}
struct context_free {
  void operator()(lk_context_t *p) const noexcept { lk_context_free(p); }
};
struct adapter_free {
  void operator()(lk_adapter_t *p) const noexcept { lk_adapter_free(p); }
};
struct backend_close {
  void operator()(lk_backend_t *p) const noexcept { lk_backend_close(p); }
};
struct model_close {
  void operator()(lk_model_t *p) const noexcept { lk_model_close(p); }
};
}  // namespace detail

using context_ptr = std::unique_ptr<lk_context_t, detail::context_free>;
using adapter_ptr = std::unique_ptr<lk_adapter_t, detail::adapter_free>;
using backend_ptr = std::unique_ptr<lk_backend_t, detail::backend_close>;
using model_ptr = std::unique_ptr<lk_model_t, detail::model_close>;

// ---- plain values -----------------------------------------------------------

inline std::string version_string() { return lk_version_string(); }
inline uint32_t plugin_abi_version() noexcept { return lk_plugin_abi_version(); }

// A view of caller-owned memory (lk_tensor_init); the data must outlive it.
inline lk_tensor_t view(int32_t dtype, std::initializer_list<int64_t> shape, void *data) {
  lk_tensor_t t = detail::sized<lk_tensor_t>();
  std::vector<int64_t> s(shape);
  detail::check(lk_tensor_init(&t, dtype, static_cast<uint32_t>(s.size()), s.data(), data),
                "lk_tensor_init", nullptr);
  return t;
}
inline lk_tensor_t view(std::initializer_list<int64_t> shape, float *data) {
  return view(LK_DTYPE_F32, shape, data);
}

inline lk_lora_config_t lora_config(uint32_t rank, float alpha,
                                    int32_t scaling = LK_SCALING_STANDARD, uint64_t seed = 0) {
  lk_lora_config_t c = detail::sized<lk_lora_config_t>();
  c.rank = rank;
  c.alpha = alpha;
  c.scaling = scaling;
  c.seed = seed;
  return c;
}

struct plugin_info {
  uint32_t index;
  int32_t status;  // LK_PLUGIN_LOADED or LK_PLUGIN_REFUSED
  std::string path, id, name, version, description, reason;
  uint32_t abi_version;  // LK_MAKE_ABI(major, minor); 0 when refused early
  uint32_t n_components;
};

struct component_info {
  int32_t kind;  // LK_KIND_*
  std::string name, description;
  uint32_t plugin_index;
};

struct target_info {
  std::string name;
  uint32_t rank;
  int64_t in_features, out_features;
  float alpha, scale;
};

class adapter;
class backend;
class model;

// ---- context ------------------------------------------------------------------

class context {
 public:
  struct options {
    bool no_default_plugins = false;  // true: load plugins with load_plugin only
    uint32_t n_threads = 0;           // backend threads; 0 = all cores
  };
  // Default plugin discovery (LORAKIT_PLUGIN_PATH, the install, the build tree).
  context() { create(nullptr); }
  explicit context(const options &o) {
    lk_context_opts_t opts = detail::sized<lk_context_opts_t>();
    opts.no_default_plugins = o.no_default_plugins ? 1u : 0u;
    opts.n_threads = o.n_threads;
    create(&opts);
  }

  lk_context_t *get() const noexcept { return p_.get(); }
  std::string last_error() const { return detail::str(lk_last_error(p_.get())); }

  void load_plugin(const std::string &path) {
    detail::check(lk_plugin_load(get(), path.c_str()), "lk_plugin_load", get());
  }
  void load_plugin_dir(const std::string &dir) {
    detail::check(lk_plugin_load_dir(get(), dir.c_str()), "lk_plugin_load_dir", get());
  }
  uint32_t plugin_count() const noexcept { return lk_plugin_count(get()); }
  plugin_info plugin(uint32_t index) const {
    lk_plugin_info_t pi = detail::sized<lk_plugin_info_t>();
    detail::check(lk_plugin_info(get(), index, &pi), "lk_plugin_info", get());
    return plugin_info{index,
                       pi.status,
                       detail::str(pi.path),
                       detail::str(pi.id),
                       detail::str(pi.name),
                       detail::str(pi.version),
                       detail::str(pi.description),
                       detail::str(pi.reason),
                       pi.abi_version,
                       pi.n_components};
  }
  std::vector<plugin_info> plugins() const {
    std::vector<plugin_info> v;
    for (uint32_t i = 0; i < plugin_count(); i++) v.push_back(plugin(i));
    return v;
  }
  uint32_t component_count() const noexcept { return lk_component_count(get()); }
  component_info component(uint32_t index) const {
    lk_component_info_t ci = detail::sized<lk_component_info_t>();
    detail::check(lk_component_info(get(), index, &ci), "lk_component_info", get());
    return component_info{ci.kind, detail::str(ci.name), detail::str(ci.description),
                          ci.plugin_index};
  }

  inline adapter create_adapter(const lk_lora_config_t &cfg);
  // loader and base_config_json may be nullptr (see lk_adapter_load).
  inline adapter load_adapter(const std::string &path, const char *loader = nullptr,
                              const char *base_config_json = nullptr);
  // Device `device` of the backend called name (nullptr: the best scored).
  inline backend open_backend(const char *name = nullptr, uint32_t device = 0);
  // Devices of the backend component name (nullptr: the best), without opening it.
  uint32_t backend_device_count(const char *name = nullptr) {
    return lk_backend_device_count(get(), name);
  }
  lk_device_info_t backend_device_info(const char *name, uint32_t device) {
    lk_device_info_t d = detail::sized<lk_device_info_t>();
    detail::check(lk_backend_device_info(get(), name, device, &d), "lk_backend_device_info", get());
    return d;
  }
  // Whole models (lk_model_convert/merge/unmerge); opts may be nullptr for merges.
  void convert_model(const std::string &in, const std::string &out, const lk_convert_opts_t &opts) {
    detail::check(lk_model_convert(get(), in.c_str(), out.c_str(), &opts), "lk_model_convert",
                  get());
  }
  void merge_model(const std::string &model_path, const std::string &adapter_path,
                   const std::string &out, const lk_merge_opts_t *opts = nullptr) {
    detail::check(lk_model_merge(get(), model_path.c_str(), adapter_path.c_str(), out.c_str(), opts),
                  "lk_model_merge", get());
  }
  void unmerge_model(const std::string &model_path, const std::string &adapter_path,
                     const std::string &out, const lk_merge_opts_t *opts = nullptr) {
    detail::check(
        lk_model_unmerge(get(), model_path.c_str(), adapter_path.c_str(), out.c_str(), opts),
        "lk_model_unmerge", get());
  }
  inline model open_model(const std::string &path, const char *loader = nullptr);

  void write_tensors(const std::string &path, const std::string &format,
                     const std::vector<lk_tensor_t> &tensors,
                     const std::vector<std::string> &names, const char *metadata_json = nullptr) {
    if (tensors.size() != names.size())
      throw error(LK_ERR_INVALID_ARG, "lk_write_tensors", "tensors and names differ in length");
    std::vector<const char *> z;
    for (const std::string &n : names) z.push_back(n.c_str());
    detail::check(lk_write_tensors(get(), path.c_str(), format.c_str(), tensors.data(), z.data(),
                                   tensors.size(), metadata_json),
                  "lk_write_tensors", get());
  }

 private:
  void create(const lk_context_opts_t *opts) {
    lk_context_t *c = nullptr;
    lk_status st = lk_context_create(opts, &c);
    p_.reset(c);
    detail::check(st, "lk_context_create", c);
  }
  context_ptr p_;
};

// ---- adapter --------------------------------------------------------------------

class adapter {
 public:
  adapter(adapter_ptr p, lk_context_t *ctx) noexcept : p_(std::move(p)), ctx_(ctx) {}
  lk_adapter_t *get() const noexcept { return p_.get(); }

  // rank 0 and alpha 0 take the adapter's defaults. Returns the target's index.
  uint32_t add_target(const std::string &name, int64_t in_features, int64_t out_features,
                      uint32_t rank = 0, float alpha = 0.0f) {
    detail::check(lk_adapter_add_target(get(), name.c_str(), in_features, out_features, rank, alpha),
                  "lk_adapter_add_target", ctx_);
    return static_cast<uint32_t>(lk_adapter_find(get(), name.c_str()));
  }
  uint32_t target_count() const noexcept { return lk_adapter_target_count(get()); }
  // Index of the target called name, or -1.
  int32_t find(const std::string &name) const noexcept {
    return lk_adapter_find(get(), name.c_str());
  }
  target_info target(uint32_t index) const {
    lk_target_info_t ti = detail::sized<lk_target_info_t>();
    detail::check(lk_adapter_target_info(get(), index, &ti), "lk_adapter_target_info", ctx_);
    return target_info{detail::str(ti.name), ti.rank, ti.in_features, ti.out_features, ti.alpha,
                       ti.scale};
  }
  // Writable f32 views of A (r x in) and B (out x r), alive as long as the adapter.
  std::pair<lk_tensor_t, lk_tensor_t> weights(uint32_t index) {
    lk_tensor_t a = detail::sized<lk_tensor_t>(), b = detail::sized<lk_tensor_t>();
    detail::check(lk_adapter_weights(get(), index, &a, &b), "lk_adapter_weights", ctx_);
    return {a, b};
  }
  lk_lora_config_t config() const {
    lk_lora_config_t c = detail::sized<lk_lora_config_t>();
    detail::check(lk_adapter_config(get(), &c), "lk_adapter_config", ctx_);
    return c;
  }
  // Kind, scaling rule, default rank/alpha, target count, base named by the file.
  lk_adapter_header_t header() const {
    lk_adapter_header_t h = detail::sized<lk_adapter_header_t>();
    detail::check(lk_adapter_header(get(), &h), "lk_adapter_header", ctx_);
    return h;
  }
  void save(const std::string &path, const std::string &format,
            const char *base_config_json = nullptr) {
    detail::check(lk_adapter_save(get(), path.c_str(), format.c_str(), base_config_json),
                  "lk_adapter_save", ctx_);
  }

 private:
  adapter_ptr p_;
  lk_context_t *ctx_;  // borrowed, for error messages
};

// ---- backend buffer ---------------------------------------------------------------

// A buffer of a backend (lk_buffer_*), freed by this handle or, at the
// latest, by its backend's close: destroy it before the backend.
class buffer {
 public:
  buffer(lk_backend_t *be, lk_buffer_t *b, lk_context_t *ctx) noexcept : be_(be), b_(b), ctx_(ctx) {}
  buffer(buffer &&o) noexcept : be_(o.be_), b_(o.b_), ctx_(o.ctx_) { o.b_ = nullptr; }
  buffer &operator=(buffer &&o) noexcept {
    if (this != &o) {
      reset();
      be_ = o.be_;
      b_ = o.b_;
      ctx_ = o.ctx_;
      o.b_ = nullptr;
    }
    return *this;
  }
  buffer(const buffer &) = delete;
  buffer &operator=(const buffer &) = delete;
  ~buffer() { reset(); }

  lk_buffer_t *get() const noexcept { return b_; }
  uint64_t size() const noexcept { return lk_buffer_size(be_, b_); }
  void upload(uint64_t offset, const void *src, uint64_t nbytes) {
    detail::check(lk_buffer_upload(be_, b_, offset, src, nbytes), "lk_buffer_upload", ctx_);
  }
  void download(uint64_t offset, void *dst, uint64_t nbytes) {
    detail::check(lk_buffer_download(be_, b_, offset, dst, nbytes), "lk_buffer_download", ctx_);
  }
  // A HOST_VISIBLE buffer's bytes, valid until unmap().
  void *map(uint64_t offset, uint64_t nbytes) {
    void *p = nullptr;
    detail::check(lk_buffer_map(be_, b_, offset, nbytes, &p), "lk_buffer_map", ctx_);
    return p;
  }
  void unmap() { detail::check(lk_buffer_unmap(be_, b_), "lk_buffer_unmap", ctx_); }
  void reset() noexcept {
    if (b_) lk_buffer_free(be_, b_);
    b_ = nullptr;
  }

 private:
  lk_backend_t *be_;
  lk_buffer_t *b_;
  lk_context_t *ctx_;
};

// ---- backend --------------------------------------------------------------------

class backend {
 public:
  backend(backend_ptr p, lk_context_t *ctx) noexcept : p_(std::move(p)), ctx_(ctx) {}
  lk_backend_t *get() const noexcept { return p_.get(); }

  std::string name() const { return detail::str(lk_backend_name(get())); }
  // Devices of this backend's component (the open backend is one of them).
  uint32_t device_count() const noexcept {
    return lk_backend_device_count(ctx_, lk_backend_name(get()));
  }
  // Device `index` of this backend's component, without opening it.
  lk_device_info_t device(uint32_t index) {
    lk_device_info_t d = detail::sized<lk_device_info_t>();
    detail::check(lk_backend_device_info(ctx_, lk_backend_name(get()), index, &d),
                  "lk_backend_device_info", ctx_);
    return d;
  }
  // The open device: limits, driver.
  lk_device_info_t info() {
    lk_device_info_t d = detail::sized<lk_device_info_t>();
    detail::check(lk_backend_info(get(), &d), "lk_backend_info", ctx_);
    return d;
  }
  // 1 when the backend runs op as described (lorakit_ops.h).
  bool supports(const lk_op_t &op) { return lk_backend_supports(get(), &op) != 0; }
  // A buffer of nbytes (flags LK_BUFFER_*; 0 = device-local).
  buffer alloc(uint64_t nbytes, uint32_t flags = 0) {
    lk_buffer_t *b = nullptr;
    detail::check(lk_buffer_alloc(get(), nbytes, flags, &b), "lk_buffer_alloc", ctx_);
    return buffer(get(), b, ctx_);
  }
  // Check, then run a batch of ops in order and wait for it.
  void run(const std::vector<lk_op_t> &ops) {
    detail::check(lk_backend_submit(get(), ops.data(), static_cast<uint32_t>(ops.size()), nullptr),
                  "lk_backend_submit", ctx_);
    synchronize();
  }
  // y = x W^T (W may be nullptr: y is kept) + s (x A^T) B^T.
  void forward(const adapter &ad, uint32_t target, const lk_tensor_t &x, const lk_tensor_t *W,
               lk_tensor_t &y) {
    detail::check(lk_lora_forward(get(), ad.get(), target, &x, W, &y), "lk_lora_forward", ctx_);
  }
  // dx, dA, dB may be nullptr (not computed).
  void backward(const adapter &ad, uint32_t target, const lk_tensor_t &x, const lk_tensor_t *W,
                const lk_tensor_t &dy, lk_tensor_t *dx, lk_tensor_t *dA, lk_tensor_t *dB) {
    detail::check(lk_lora_backward(get(), ad.get(), target, &x, W, &dy, dx, dA, dB),
                  "lk_lora_backward", ctx_);
  }
  void merge(const adapter &ad, uint32_t target, lk_tensor_t &W, float mult = 1.0f) {
    detail::check(lk_merge(get(), ad.get(), target, &W, mult), "lk_merge", ctx_);
  }
  void unmerge(const adapter &ad, uint32_t target, lk_tensor_t &W, float mult = 1.0f) {
    detail::check(lk_unmerge(get(), ad.get(), target, &W, mult), "lk_unmerge", ctx_);
  }
  void synchronize() { detail::check(lk_backend_synchronize(get()), "lk_backend_synchronize", ctx_); }

 private:
  backend_ptr p_;
  lk_context_t *ctx_;
};

// ---- model (or adapter file) opened by a loader ----------------------------------

class model {
 public:
  model(model_ptr p, lk_context_t *ctx) noexcept : p_(std::move(p)), ctx_(ctx) {}
  lk_model_t *get() const noexcept { return p_.get(); }

  std::string loader() const { return detail::str(lk_model_loader(get())); }
  int64_t tensor_count() const noexcept { return lk_model_tensor_count(get()); }
  lk_tensor_info_t tensor_info(int64_t index) {
    lk_tensor_info_t ti = detail::sized<lk_tensor_info_t>();
    detail::check(lk_model_tensor_info(get(), index, &ti), "lk_model_tensor_info", ctx_);
    return ti;
  }
  int64_t find(const std::string &name) { return lk_model_find(get(), name.c_str()); }
  std::vector<float> read_f32(int64_t index) {
    lk_tensor_info_t ti = tensor_info(index);
    uint64_t n = 1;
    for (uint32_t d = 0; d < ti.ndim; d++) n *= static_cast<uint64_t>(ti.shape[d]);
    std::vector<float> v(static_cast<size_t>(n));
    detail::check(lk_model_tensor_read_f32(get(), index, v.data(), n), "lk_model_tensor_read_f32",
                  ctx_);
    return v;
  }
  std::string metadata_json() { return detail::str(lk_model_metadata_json(get())); }

 private:
  model_ptr p_;
  lk_context_t *ctx_;
};

// ---- context members that make objects ------------------------------------------

inline adapter context::create_adapter(const lk_lora_config_t &cfg) {
  lk_adapter_t *a = nullptr;
  detail::check(lk_adapter_create(get(), &cfg, &a), "lk_adapter_create", get());
  return adapter(adapter_ptr(a), get());
}
inline adapter context::load_adapter(const std::string &path, const char *loader,
                                     const char *base_config_json) {
  lk_adapter_t *a = nullptr;
  detail::check(lk_adapter_load(get(), path.c_str(), loader, base_config_json, &a),
                "lk_adapter_load", get());
  return adapter(adapter_ptr(a), get());
}
inline backend context::open_backend(const char *name, uint32_t device) {
  lk_backend_t *b = nullptr;
  detail::check(lk_backend_open(get(), name, device, &b), "lk_backend_open", get());
  return backend(backend_ptr(b), get());
}
inline model context::open_model(const std::string &path, const char *loader) {
  lk_model_t *m = nullptr;
  detail::check(lk_model_open(get(), path.c_str(), loader, &m), "lk_model_open", get());
  return model(model_ptr(m), get());
}

// ---- registry (abi/lorakit_registry.h) -------------------------------------------
#ifdef LK_REGISTRY_SCHEMA

namespace detail {
struct registry_close {
  void operator()(lk_registry_t *p) const noexcept { lk_registry_close(p); }
};
// A string lorakit handed over (lk_free), as a std::string.
inline std::string take(char *z) {
  std::string s = str(z);
  lk_free(z);
  return s;
}
}  // namespace detail

using registry_ptr = std::unique_ptr<lk_registry_t, detail::registry_close>;

// Parents, relation and parameters of a new version (lk_registry_add_opts_t).
struct add_options {
  int32_t relation = LK_REL_NONE;
  std::vector<std::string> parents;
  std::string params_json;  // "" = none
  std::string operation;    // "" = "add"
  std::string notes;
  std::string base;  // a registered model's name or a model path; "" = none
  bool reuse_existing = false;
};

class registry {
 public:
  // Open (creating it unless read_only) the registry file at path; "" = the
  // default location (lk_registry_default_path). ctx must outlive it.
  registry(context &ctx, const std::string &path, bool read_only = false) : ctx_(ctx.get()) {
    lk_registry_opts_t o = detail::sized<lk_registry_opts_t>();
    o.read_only = read_only ? 1u : 0u;
    lk_registry_t *r = nullptr;
    detail::check(lk_registry_open(ctx_, path.empty() ? nullptr : path.c_str(), &o, &r),
                  "lk_registry_open", ctx_);
    p_.reset(r);
  }
  lk_registry_t *get() const noexcept { return p_.get(); }
  std::string path() const { return detail::str(lk_registry_path(get())); }

  // Each returns the new version's "NAME@N".
  std::string add(const std::string &name, const adapter &ad, const add_options &o = {}) {
    char *ref = nullptr;
    std::vector<const char *> parents;
    lk_registry_add_opts_t opts = fill(o, parents);
    detail::check(lk_registry_add_adapter(get(), name.c_str(), ad.get(), &opts, &ref),
                  "lk_registry_add_adapter", ctx_);
    return detail::take(ref);
  }
  std::string add_path(const std::string &name, const std::string &path,
                       const add_options &o = {}) {
    char *ref = nullptr;
    std::vector<const char *> parents;
    lk_registry_add_opts_t opts = fill(o, parents);
    detail::check(lk_registry_add_path(get(), name.c_str(), path.c_str(), &opts, &ref),
                  "lk_registry_add_path", ctx_);
    return detail::take(ref);
  }
  std::string resolve(const std::string &ref) {
    char *z = nullptr;
    detail::check(lk_registry_resolve(get(), ref.c_str(), &z), "lk_registry_resolve", ctx_);
    return detail::take(z);
  }
  // The version as a new adapter of the registry's context.
  adapter get_adapter(const std::string &ref) {
    lk_adapter_t *a = nullptr;
    detail::check(lk_registry_get(get(), ref.c_str(), &a), "lk_registry_get", ctx_);
    return adapter(adapter_ptr(a), ctx_);
  }
  void export_to(const std::string &ref, const std::string &path, const std::string &format) {
    detail::check(lk_registry_export(get(), ref.c_str(), path.c_str(), format.c_str()),
                  "lk_registry_export", ctx_);
  }
  // JSON documents, as lorakit_registry.h describes them.
  std::string list_json() {
    char *z = nullptr;
    detail::check(lk_registry_list(get(), nullptr, &z), "lk_registry_list", ctx_);
    return detail::take(z);
  }
  std::string show_json(const std::string &ref) {
    char *z = nullptr;
    detail::check(lk_registry_show(get(), ref.c_str(), &z), "lk_registry_show", ctx_);
    return detail::take(z);
  }
  std::string lineage_json(const std::string &ref, int32_t direction = LK_LINEAGE_BOTH,
                           uint32_t max_depth = 0) {
    lk_registry_lineage_opts_t o = detail::sized<lk_registry_lineage_opts_t>();
    o.direction = direction;
    o.max_depth = max_depth;
    char *z = nullptr;
    detail::check(lk_registry_lineage(get(), ref.c_str(), &o, &z), "lk_registry_lineage", ctx_);
    return detail::take(z);
  }
  std::string diff_json(const std::string &a, const std::string &b) {
    char *z = nullptr;
    detail::check(lk_registry_diff(get(), a.c_str(), b.c_str(), &z), "lk_registry_diff", ctx_);
    return detail::take(z);
  }
  void link(const std::string &child, const std::string &parent, int32_t relation,
            const std::string &params_json = "") {
    detail::check(lk_registry_link(get(), child.c_str(), parent.c_str(), relation,
                                   params_json.empty() ? nullptr : params_json.c_str()),
                  "lk_registry_link", ctx_);
  }
  void tag(const std::string &ref, const std::string &tag_name) {
    detail::check(lk_registry_tag(get(), ref.c_str(), tag_name.c_str()), "lk_registry_tag", ctx_);
  }
  void untag(const std::string &name, const std::string &tag_name) {
    detail::check(lk_registry_untag(get(), name.c_str(), tag_name.c_str()), "lk_registry_untag",
                  ctx_);
  }
  void remove(const std::string &ref, bool force = false) {
    detail::check(lk_registry_remove(get(), ref.c_str(), force ? 1u : 0u), "lk_registry_remove",
                  ctx_);
  }

 private:
  static const char *opt(const std::string &s) { return s.empty() ? nullptr : s.c_str(); }
  static lk_registry_add_opts_t fill(const add_options &o, std::vector<const char *> &parents) {
    for (const std::string &p : o.parents) parents.push_back(p.c_str());
    lk_registry_add_opts_t opts = detail::sized<lk_registry_add_opts_t>();
    opts.relation = o.relation;
    opts.parents = parents.empty() ? nullptr : parents.data();
    opts.n_parents = static_cast<uint32_t>(parents.size());
    opts.reuse_existing = o.reuse_existing ? 1u : 0u;
    opts.params_json = opt(o.params_json);
    opts.base = opt(o.base);
    opts.operation = opt(o.operation);
    opts.notes = opt(o.notes);
    return opts;
  }
  registry_ptr p_;
  lk_context_t *ctx_;
};

#endif  // LK_REGISTRY_SCHEMA

}  // namespace lorakit

#endif  // LORAKIT_HPP
