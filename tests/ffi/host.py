"""host.py - the FFI scenario (tests/ffi/README.md) through ctypes
(lorakit.py). Prints exactly what host.c prints.

    LORAKIT_LIB=build/liblorakit.so.2 python3 host.py CPU_PLUGIN REGISTRY_DIR
"""
import ctypes
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lorakit  # noqa: E402

M, IN, OUT, RANK = 3, 16, 8, 4
TARGET = "model.layers.0.self_attn.q_proj"


def bits(v):
    return struct.unpack("<I", struct.pack("<f", v))[0]


def fmt_f32(v):
    return "%.9g/0x%08x" % (v, bits(v))


def fnv1a64(arr):
    h = 0xCBF29CE484222325
    for b in bytes(arr):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def print_elems(label, p, idx):
    print(label + "".join(" [%d]=%s" % (i, fmt_f32(p[i])) for i in idx))


def print_json(label, js):
    """js with every "created" timestamp replaced by "*" (see host.c)."""
    key = '"created":"'
    out, rest = [], js
    while True:
        q = rest.find(key)
        if q < 0:
            break
        q += len(key)
        out.append(rest[:q] + "*")
        e = rest.find('"', q)
        if e < 0:
            rest = ""
            break
        rest = rest[e:]
    print("%s %s" % (label, "".join(out) + rest))


def registry_scenario(ctx, ad, B, registry_dir):
    if not lorakit.HAS_REGISTRY:
        print("registry: not in this build")
        return
    with ctx.open_registry(os.path.join(registry_dir, "registry.db")) as reg:
        ref1 = reg.add("ffi-demo", ad)
        print("registry add %s" % ref1)
        B[0] += 1.0 / 32.0
        ref2 = reg.add("ffi-demo", ad, lorakit.LK_REL_TRAINED_FROM, [ref1], '{"steps":1}', "train")
        print("registry add %s parent %s relation %s"
              % (ref2, ref1, lorakit.relation_name(lorakit.LK_REL_TRAINED_FROM)))
        print("registry resolve ffi-demo %s" % reg.resolve("ffi-demo"))
        print_json("registry lineage", reg.lineage_json(ref2))
        print_json("registry show", reg.show_json(ref1))
        with reg.get(ref1) as got:
            gA, gB, _, _ = got.weights(0)
            print("registry get %s A fnv1a64 %016x B fnv1a64 %016x" % (ref1, fnv1a64(gA), fnv1a64(gB)))


def scenario(cpu_plugin, registry_dir):
    maj, mnr = lorakit.plugin_abi_version()
    print("lorakit %s plugin-abi %d.%d" % (lorakit.version_string(), maj, mnr))
    with lorakit.Context(no_default_plugins=True, n_threads=1) as ctx:
        ctx.load_plugin(cpu_plugin)
        comps = ctx.components()
        for p in ctx.plugins():
            if p["id"] != "org.lorakit.cpu":
                continue
            print("plugin %s status %d abi %d.%d version %s components %d"
                  % (p["id"], p["status"], p["abi"][0], p["abi"][1], p["version"],
                     p["n_components"]))
            for c in comps:
                if c["plugin_index"] == p["index"]:
                    print("component kind %d name %s" % (c["kind"], c["name"]))

        with ctx.create_adapter(RANK, 8.0, lorakit.LK_SCALING_STANDARD, 1234) as ad:
            ad.add_target(TARGET, IN, OUT)
            t = ad.find(TARGET)
            ti = ad.target(t)
            print("target %d %s in %d out %d rank %d alpha %s scale %s"
                  % (t, ti["name"], ti["in_features"], ti["out_features"], ti["rank"],
                     fmt_f32(ti["alpha"]), fmt_f32(ti["scale"])))
            A, B, sa, sb = ad.weights(t)
            print("A shape %d %d B shape %d %d" % (sa[0], sa[1], sb[0], sb[1]))
            print_elems("A[0][0..3]", A, range(4))
            print("A fnv1a64 %016x" % fnv1a64(A))
            for i in range(len(B)):
                B[i] = ((i * 3) % 11 - 5) / 32.0

            with ctx.open_backend("cpu") as be:
                print("backend %s devices %d" % (be.name(), be.device_count()))
                x, w, y = lorakit.Tensor(M, IN), lorakit.Tensor(OUT, IN), lorakit.Tensor(M, OUT)
                for i in range(M * IN):
                    x.data[i] = ((i * 7) % 17 - 8) / 8.0
                for i in range(OUT * IN):
                    w.data[i] = ((i * 5) % 13 - 6) / 16.0
                be.forward(ad, t, x, w, y)
                print_elems("forward y", y.data, (0, 11, 23))
                print("forward fnv1a64 %016x" % fnv1a64(y.data))

                w0 = bytes(w.data)
                be.merge(ad, t, w)
                print_elems("merge W", w.data, (0, 77, 127))
                print("merge fnv1a64 %016x" % fnv1a64(w.data))
                be.unmerge(ad, t, w)
                print_elems("unmerge W", w.data, (0, 77, 127))
                w1 = bytes(w.data)
                same = sum(w1[4 * i:4 * i + 4] == w0[4 * i:4 * i + 4] for i in range(OUT * IN))
                print("unmerge fnv1a64 %016x bit-identical %d/%d" % (fnv1a64(w.data), same, OUT * IN))

                di = be.info()
                print("device type %d unified_memory %d offset_align %d"
                      % (di.type, di.unified_memory, di.offset_align))
                with be.alloc(ctypes.sizeof(x.data), lorakit.LK_BUFFER_HOST_VISIBLE) as buf:
                    buf.upload(0, x.data)
                    back = (ctypes.c_float * (M * IN - 4))()
                    buf.download(16, back)
                    mapped = buf.read_mapped(0, M * IN)
                    print("buffer bytes %d download[4..] fnv1a64 %016x map fnv1a64 %016x"
                          % (buf.size(), fnv1a64(back), fnv1a64(mapped)))

            try:
                ctx.open_backend("nosuch").close()
                print("error backend nosuch: no error")
            except lorakit.Error as e:
                print("error backend nosuch: status %d (%s): %s"
                      % (e.status, lorakit.strerror(e.status), e.message))
            registry_scenario(ctx, ad, B, registry_dir)
    print("done")


def main():
    if len(sys.argv) < 3:
        sys.stderr.write("usage: host.py CPU_PLUGIN REGISTRY_DIR\n")
        return 2
    try:
        scenario(sys.argv[1], sys.argv[2])
    except lorakit.Error as e:
        sys.stdout.flush()
        sys.stderr.write("host.py: %s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
