// host.cpp - the FFI scenario (tests/ffi/README.md) through abi/lorakit.hpp:
// RAII objects, errors as lorakit::error. Prints exactly what host.c prints.
//
//   host_cpp CPU_PLUGIN REGISTRY_DIR
#include <lorakit.hpp>

#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

const int M = 3, IN = 16, OUT = 8, RANK = 4;
const char *const TARGET = "model.layers.0.self_attn.q_proj";

std::string fmt_f32(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  char z[64];
  std::snprintf(z, sizeof z, "%.9g/0x%08x", static_cast<double>(v), u);
  return z;
}

uint64_t fnv1a64(const float *p, size_t n) {
  const unsigned char *b = reinterpret_cast<const unsigned char *>(p);
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n * sizeof(float); i++) h = (h ^ b[i]) * 0x100000001b3ull;
  return h;
}

void print_elems(const char *label, const float *p, std::initializer_list<int> idx) {
  std::printf("%s", label);
  for (int i : idx) std::printf(" [%d]=%s", i, fmt_f32(p[i]).c_str());
  std::printf("\n");
}

// The JSON with every "created" timestamp replaced by "*" (see host.c).
void print_json(const char *label, const std::string &json) {
  static const std::string key = "\"created\":\"";
  std::string out;
  size_t p = 0;
  for (;;) {
    size_t q = json.find(key, p);
    if (q == std::string::npos) break;
    q += key.size();
    out += json.substr(p, q - p) + "*";
    p = json.find('"', q);
    if (p == std::string::npos) break;
  }
  if (p != std::string::npos) out += json.substr(p);
  std::printf("%s %s\n", label, out.c_str());
}

void scenario(const char *cpu_plugin, const std::string &registry_dir) {
  uint32_t abi = lorakit::plugin_abi_version();
  std::printf("lorakit %s plugin-abi %u.%u\n", lorakit::version_string().c_str(),
              LK_ABI_MAJOR_OF(abi), LK_ABI_MINOR_OF(abi));

  lorakit::context ctx({true, 1});
  ctx.load_plugin(cpu_plugin);
  for (const lorakit::plugin_info &p : ctx.plugins()) {
    if (p.id != "org.lorakit.cpu") continue;
    std::printf("plugin %s status %d abi %u.%u version %s components %u\n", p.id.c_str(), p.status,
                LK_ABI_MAJOR_OF(p.abi_version), LK_ABI_MINOR_OF(p.abi_version), p.version.c_str(),
                p.n_components);
    for (uint32_t c = 0; c < ctx.component_count(); c++) {
      lorakit::component_info ci = ctx.component(c);
      if (ci.plugin_index == p.index) std::printf("component kind %d name %s\n", ci.kind, ci.name.c_str());
    }
  }

  lorakit::adapter ad = ctx.create_adapter(lorakit::lora_config(RANK, 8.0f, LK_SCALING_STANDARD, 1234));
  ad.add_target(TARGET, IN, OUT);
  int32_t t = ad.find(TARGET);
  lorakit::target_info ti = ad.target(static_cast<uint32_t>(t));
  std::printf("target %d %s in %" PRId64 " out %" PRId64 " rank %u alpha %s scale %s\n", t,
              ti.name.c_str(), ti.in_features, ti.out_features, ti.rank, fmt_f32(ti.alpha).c_str(),
              fmt_f32(ti.scale).c_str());
  auto [A, B] = ad.weights(static_cast<uint32_t>(t));
  float *a = static_cast<float *>(A.data), *b = static_cast<float *>(B.data);
  std::printf("A shape %" PRId64 " %" PRId64 " B shape %" PRId64 " %" PRId64 "\n", A.shape[0],
              A.shape[1], B.shape[0], B.shape[1]);
  print_elems("A[0][0..3]", a, {0, 1, 2, 3});
  std::printf("A fnv1a64 %016" PRIx64 "\n", fnv1a64(a, RANK * IN));
  for (int i = 0; i < OUT * RANK; i++) b[i] = static_cast<float>((i * 3) % 11 - 5) / 32.0f;

  lorakit::backend be = ctx.open_backend("cpu");
  std::printf("backend %s devices %u\n", be.name().c_str(), be.device_count());
  std::vector<float> x(M * IN), w(OUT * IN), y(M * OUT, 0.0f);
  for (int i = 0; i < M * IN; i++) x[i] = static_cast<float>((i * 7) % 17 - 8) / 8.0f;
  for (int i = 0; i < OUT * IN; i++) w[i] = static_cast<float>((i * 5) % 13 - 6) / 16.0f;
  lk_tensor_t tx = lorakit::view({M, IN}, x.data());
  lk_tensor_t tw = lorakit::view({OUT, IN}, w.data());
  lk_tensor_t ty = lorakit::view({M, OUT}, y.data());
  be.forward(ad, static_cast<uint32_t>(t), tx, &tw, ty);
  print_elems("forward y", y.data(), {0, 11, 23});
  std::printf("forward fnv1a64 %016" PRIx64 "\n", fnv1a64(y.data(), y.size()));

  std::vector<float> w0 = w;
  be.merge(ad, static_cast<uint32_t>(t), tw);
  print_elems("merge W", w.data(), {0, 77, 127});
  std::printf("merge fnv1a64 %016" PRIx64 "\n", fnv1a64(w.data(), w.size()));
  be.unmerge(ad, static_cast<uint32_t>(t), tw);
  print_elems("unmerge W", w.data(), {0, 77, 127});
  int same = 0;
  for (size_t i = 0; i < w.size(); i++) same += std::memcmp(&w[i], &w0[i], 4) == 0;
  std::printf("unmerge fnv1a64 %016" PRIx64 " bit-identical %d/%d\n", fnv1a64(w.data(), w.size()),
              same, OUT * IN);

  {
    lk_device_info_t di = be.info();
    std::printf("device type %d unified_memory %u offset_align %" PRIu64 "\n", di.type,
                di.unified_memory, di.offset_align);
    const uint64_t nb = x.size() * sizeof(float);
    lorakit::buffer buf = be.alloc(nb, LK_BUFFER_HOST_VISIBLE);
    buf.upload(0, x.data(), nb);
    std::vector<float> back(x.size() - 4);
    buf.download(4 * sizeof(float), back.data(), nb - 4 * sizeof(float));
    const float *mapped = static_cast<const float *>(buf.map(0, nb));
    std::printf("buffer bytes %" PRIu64 " download[4..] fnv1a64 %016" PRIx64 " map fnv1a64 %016" PRIx64 "\n",
                buf.size(), fnv1a64(back.data(), back.size()), fnv1a64(mapped, x.size()));
    buf.unmap();
  }

  try {
    lorakit::backend none = ctx.open_backend("nosuch");
    std::printf("error backend nosuch: no error\n");
  } catch (const lorakit::error &e) {
    std::printf("error backend nosuch: status %d (%s): %s\n", e.status(), lk_strerror(e.status()),
                e.detail().c_str());
  }

#ifdef LK_REGISTRY_SCHEMA
  {
    lorakit::registry reg(ctx, registry_dir + "/registry.db");
    std::string ref1 = reg.add("ffi-demo", ad);
    std::printf("registry add %s\n", ref1.c_str());
    b[0] += 1.0f / 32.0f;
    lorakit::add_options o;
    o.relation = LK_REL_TRAINED_FROM;
    o.parents = {ref1};
    o.params_json = "{\"steps\":1}";
    o.operation = "train";
    std::string ref2 = reg.add("ffi-demo", ad, o);
    std::printf("registry add %s parent %s relation %s\n", ref2.c_str(), ref1.c_str(),
                lk_registry_relation_name(LK_REL_TRAINED_FROM));
    std::printf("registry resolve ffi-demo %s\n", reg.resolve("ffi-demo").c_str());
    print_json("registry lineage", reg.lineage_json(ref2));
    print_json("registry show", reg.show_json(ref1));
    lorakit::adapter got = reg.get_adapter(ref1);
    auto [gA, gB] = got.weights(0);
    std::printf("registry get %s A fnv1a64 %016" PRIx64 " B fnv1a64 %016" PRIx64 "\n", ref1.c_str(),
                fnv1a64(static_cast<float *>(gA.data), RANK * IN),
                fnv1a64(static_cast<float *>(gB.data), OUT * RANK));
  }
#else
  (void)registry_dir;
  std::printf("registry: not in this build\n");
#endif
  std::printf("done\n");
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: host_cpp CPU_PLUGIN REGISTRY_DIR\n");
    return 2;
  }
  try {
    scenario(argv[1], argv[2]);
  } catch (const lorakit::error &e) {
    std::fflush(stdout);
    std::fprintf(stderr, "host_cpp: %s (status %d)\n", e.what(), e.status());
    return 1;
  }
  return 0;
}
