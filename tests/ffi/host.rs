// host.rs - the FFI scenario (tests/ffi/README.md) through the safe Rust
// wrapper of lorakit.rs. Prints exactly what host.c prints.
//
//   host_rs CPU_PLUGIN REGISTRY_DIR
mod lorakit;

use lorakit::{fmt_g9, Context, Error, Tensor};

const M: i64 = 3;
const IN: i64 = 16;
const OUT: i64 = 8;
const RANK: u32 = 4;
const TARGET: &str = "model.layers.0.self_attn.q_proj";

fn fmt_f32(v: f32) -> String {
    format!("{}/0x{:08x}", fmt_g9(v as f64), v.to_bits())
}

fn fnv1a64(p: &[f32]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for v in p {
        for b in v.to_ne_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
    }
    h
}

fn print_elems(label: &str, p: &[f32], idx: &[usize]) {
    let mut s = String::from(label);
    for &i in idx {
        s.push_str(&format!(" [{}]={}", i, fmt_f32(p[i])));
    }
    println!("{}", s);
}

/// The JSON with every "created" timestamp replaced by "*" (see host.c).
#[cfg(lk_registry)]
fn print_json(label: &str, json: &str) {
    const KEY: &str = "\"created\":\"";
    let mut out = String::new();
    let mut rest = json;
    while let Some(q) = rest.find(KEY) {
        let q = q + KEY.len();
        out.push_str(&rest[..q]);
        out.push('*');
        match rest[q..].find('"') {
            Some(e) => rest = &rest[q + e..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    println!("{} {}", label, out);
}

fn scenario(cpu_plugin: &str, registry_dir: &str) -> Result<(), Error> {
    let (maj, min) = lorakit::plugin_abi_version();
    println!("lorakit {} plugin-abi {}.{}", lorakit::version_string(), maj, min);

    let mut ctx = Context::new(true, 1)?;
    ctx.load_plugin(cpu_plugin)?;
    let comps = ctx.components()?;
    for p in ctx.plugins()? {
        if p.id.as_deref() != Some("org.lorakit.cpu") {
            continue;
        }
        println!(
            "plugin {} status {} abi {}.{} version {} components {}",
            p.id.as_deref().unwrap_or(""),
            p.status,
            p.abi_version.0,
            p.abi_version.1,
            p.version.as_deref().unwrap_or(""),
            p.n_components
        );
        for c in comps.iter().filter(|c| c.plugin_index == p.index) {
            println!("component kind {} name {}", c.kind, c.name);
        }
    }

    let mut ad = ctx.create_adapter(RANK, 8.0, lorakit::sys::LK_SCALING_STANDARD, 1234)?;
    ad.add_target(TARGET, IN, OUT, 0, 0.0)?;
    let t = ad.find(TARGET).expect("target just added");
    let ti = ad.target(t)?;
    println!(
        "target {} {} in {} out {} rank {} alpha {} scale {}",
        t,
        ti.name,
        ti.in_features,
        ti.out_features,
        ti.rank,
        fmt_f32(ti.alpha),
        fmt_f32(ti.scale)
    );
    {
        let (a, sa) = ad.a(t)?;
        let a = a.to_vec();
        let (b, sb) = ad.b_mut(t)?;
        println!("A shape {} {} B shape {} {}", sa[0], sa[1], sb[0], sb[1]);
        print_elems("A[0][0..3]", &a, &[0, 1, 2, 3]);
        println!("A fnv1a64 {:016x}", fnv1a64(&a));
        for (i, v) in b.iter_mut().enumerate() {
            *v = ((i as i32 * 3) % 11 - 5) as f32 / 32.0;
        }
    }

    let mut be = ctx.open_backend(Some("cpu"))?;
    println!("backend {} devices {}", be.name(), be.device_count());
    let x: Vec<f32> = (0..M * IN).map(|i| ((i * 7) % 17 - 8) as f32 / 8.0).collect();
    let mut w: Vec<f32> = (0..OUT * IN).map(|i| ((i * 5) % 13 - 6) as f32 / 16.0).collect();
    let mut y = vec![0.0f32; (M * OUT) as usize];
    {
        let tx = Tensor::input(&x, &[M, IN])?;
        let tw = Tensor::input(&w, &[OUT, IN])?;
        let mut ty = Tensor::output(&mut y, &[M, OUT])?;
        be.forward(&ad, t, &tx, Some(&tw), &mut ty)?;
    }
    print_elems("forward y", &y, &[0, 11, 23]);
    println!("forward fnv1a64 {:016x}", fnv1a64(&y));

    let w0 = w.clone();
    be.merge(&ad, t, &mut Tensor::output(&mut w, &[OUT, IN])?, 1.0)?;
    print_elems("merge W", &w, &[0, 77, 127]);
    println!("merge fnv1a64 {:016x}", fnv1a64(&w));
    be.unmerge(&ad, t, &mut Tensor::output(&mut w, &[OUT, IN])?, 1.0)?;
    print_elems("unmerge W", &w, &[0, 77, 127]);
    let same = w.iter().zip(&w0).filter(|(a, b)| a.to_bits() == b.to_bits()).count();
    println!("unmerge fnv1a64 {:016x} bit-identical {}/{}", fnv1a64(&w), same, OUT * IN);

    {
        let di = be.info()?;
        println!(
            "device type {} unified_memory {} offset_align {}",
            di.type_, di.unified_memory, di.offset_align
        );
        let nb = (x.len() * 4) as u64;
        let mut buf = be.alloc(nb, lorakit::sys::LK_BUFFER_HOST_VISIBLE)?;
        buf.upload(0, &x)?;
        let mut back = vec![0.0f32; x.len() - 4];
        buf.download(16, &mut back)?;
        let mapped = buf.read_mapped(0, x.len())?;
        println!(
            "buffer bytes {} download[4..] fnv1a64 {:016x} map fnv1a64 {:016x}",
            buf.size(),
            fnv1a64(&back),
            fnv1a64(&mapped)
        );
    }

    match ctx.open_backend(Some("nosuch")) {
        Ok(_) => println!("error backend nosuch: no error"),
        Err(e) => println!(
            "error backend nosuch: status {} ({}): {}",
            e.status,
            lorakit::strerror(e.status),
            e.message
        ),
    }

    #[cfg(lk_registry)]
    {
        let mut reg = ctx.open_registry(&format!("{}/registry.db", registry_dir))?;
        let ref1 = reg.add("ffi-demo", &ad, &lorakit::AddOptions::default())?;
        println!("registry add {}", ref1);
        ad.b_mut(t)?.0[0] += 1.0 / 32.0;
        let parents = [ref1.as_str()];
        let o = lorakit::AddOptions {
            relation: lorakit::sys::LK_REL_TRAINED_FROM,
            parents: &parents,
            params_json: Some("{\"steps\":1}"),
            operation: Some("train"),
        };
        let ref2 = reg.add("ffi-demo", &ad, &o)?;
        println!(
            "registry add {} parent {} relation {}",
            ref2,
            ref1,
            lorakit::relation_name(lorakit::sys::LK_REL_TRAINED_FROM)
        );
        println!("registry resolve ffi-demo {}", reg.resolve("ffi-demo")?);
        print_json("registry lineage", &reg.lineage_json(&ref2, lorakit::sys::LK_LINEAGE_BOTH, 0)?);
        print_json("registry show", &reg.show_json(&ref1)?);
        let mut got = reg.get(&ref1)?;
        let ga = got.a(0)?.0.to_vec();
        let gb = got.b_mut(0)?.0.to_vec();
        println!("registry get {} A fnv1a64 {:016x} B fnv1a64 {:016x}", ref1, fnv1a64(&ga), fnv1a64(&gb));
    }
    #[cfg(not(lk_registry))]
    {
        let _ = registry_dir;
        println!("registry: not in this build");
    }
    println!("done");
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: host_rs CPU_PLUGIN REGISTRY_DIR");
        std::process::exit(2);
    }
    if let Err(e) = scenario(&args[1], &args[2]) {
        eprintln!("host_rs: {}", e);
        std::process::exit(1);
    }
}
