//! lorakit.rs - Rust bindings for liblorakit: plain `extern "C"` declarations
//! mirroring abi/lorakit.h (the `sys` module), and a safe wrapper over them.
//!
//! No crates: `rustc --edition 2021 host.rs -L native=BUILD -l dylib=lorakit`
//! compiles this file as a module of the host. The safe layer:
//!   - owns each handle in a struct whose `Drop` calls the matching
//!     lk_*_free/close, exactly once;
//!   - ties adapters and backends to their context with a lifetime, so a
//!     context cannot be dropped while objects made from it are alive;
//!   - turns a failing status into `Err(Error { status, message })`, the
//!     message being the context's lk_last_error text;
//!   - fills `struct_size` on every struct it passes in.
#![allow(dead_code)]

use std::ffi::{CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::os::raw::{c_char, c_void};
use std::ptr;

/// The C declarations, one for one with abi/lorakit.h and abi/lorakit_types.h.
#[allow(non_camel_case_types)]
pub mod sys {
    use std::os::raw::{c_char, c_void};

    pub type lk_status = i32;
    pub const LK_OK: lk_status = 0;
    pub const LK_ERR_INVALID_ARG: lk_status = -1;
    pub const LK_ERR_NOT_FOUND: lk_status = -8;
    pub const LK_DTYPE_F32: i32 = 1;
    pub const LK_SCALING_STANDARD: i32 = 0;
    pub const LK_SCALING_RSLORA: i32 = 1;
    pub const LK_MAX_DIMS: usize = 8;

    #[repr(C)]
    pub struct lk_context_t {
        _opaque: [u8; 0],
    }
    #[repr(C)]
    pub struct lk_adapter_t {
        _opaque: [u8; 0],
    }
    #[repr(C)]
    pub struct lk_backend_t {
        _opaque: [u8; 0],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct lk_tensor_t {
        pub struct_size: u32,
        pub dtype: i32,
        pub ndim: u32,
        pub reserved0: u32,
        pub shape: [i64; LK_MAX_DIMS],
        pub data: *mut c_void,
        pub nbytes: u64,
        pub qformat: *const c_char,
    }

    #[repr(C)]
    pub struct lk_context_opts_t {
        pub struct_size: u32,
        pub no_default_plugins: u32,
        pub n_threads: u32,
        pub reserved0: u32,
    }

    #[repr(C)]
    pub struct lk_plugin_info_t {
        pub struct_size: u32,
        pub status: i32,
        pub path: *const c_char,
        pub id: *const c_char,
        pub name: *const c_char,
        pub version: *const c_char,
        pub description: *const c_char,
        pub abi_version: u32,
        pub n_components: u32,
        pub reason: *const c_char,
    }

    #[repr(C)]
    pub struct lk_component_info_t {
        pub struct_size: u32,
        pub kind: i32,
        pub name: *const c_char,
        pub description: *const c_char,
        pub plugin_index: u32,
        pub reserved0: u32,
    }

    #[repr(C)]
    pub struct lk_lora_config_t {
        pub struct_size: u32,
        pub rank: u32,
        pub alpha: f32,
        pub scaling: i32,
        pub seed: u64,
    }

    #[repr(C)]
    pub struct lk_target_info_t {
        pub struct_size: u32,
        pub rank: u32,
        pub name: *const c_char,
        pub in_features: i64,
        pub out_features: i64,
        pub alpha: f32,
        pub scale: f32,
    }

    // Sizes as tests/test_abi.c pins them (x86_64 LP64): a mismatch fails the build.
    const _: () = assert!(std::mem::size_of::<lk_tensor_t>() == 104);
    const _: () = assert!(std::mem::size_of::<lk_context_opts_t>() == 16);
    const _: () = assert!(std::mem::size_of::<lk_plugin_info_t>() == 64);
    const _: () = assert!(std::mem::size_of::<lk_component_info_t>() == 32);
    const _: () = assert!(std::mem::size_of::<lk_lora_config_t>() == 24);
    const _: () = assert!(std::mem::size_of::<lk_target_info_t>() == 40);

    #[cfg(lk_registry)]
    pub const LK_REL_TRAINED_FROM: i32 = 1;
    #[cfg(lk_registry)]
    pub const LK_LINEAGE_BOTH: i32 = 3;

    #[cfg(lk_registry)]
    #[repr(C)]
    pub struct lk_registry_t {
        _opaque: [u8; 0],
    }

    #[cfg(lk_registry)]
    #[repr(C)]
    pub struct lk_registry_opts_t {
        pub struct_size: u32,
        pub read_only: u32,
        pub busy_timeout_ms: u32,
        pub reserved0: u32,
    }

    #[cfg(lk_registry)]
    #[repr(C)]
    pub struct lk_registry_add_opts_t {
        pub struct_size: u32,
        pub relation: i32,
        pub parents: *const *const c_char,
        pub n_parents: u32,
        pub reuse_existing: u32,
        pub params_json: *const c_char,
        pub base: *const c_char,
        pub operation: *const c_char,
        pub notes: *const c_char,
        pub loader: *const c_char,
        pub format: *const c_char,
        pub force: u32,
        pub new_version: u32,
        pub progress: Option<unsafe extern "C" fn(*mut c_void, u64, u64)>,
        pub progress_user: *mut c_void,
    }

    #[cfg(lk_registry)]
    #[repr(C)]
    pub struct lk_registry_lineage_opts_t {
        pub struct_size: u32,
        pub direction: i32,
        pub max_depth: u32,
        pub reserved0: u32,
    }

    #[cfg(lk_registry)]
    const _: () = assert!(std::mem::size_of::<lk_registry_add_opts_t>() == 96);

    #[cfg(lk_registry)]
    extern "C" {
        pub fn lk_free(p: *mut c_void);
        pub fn lk_registry_relation_name(relation: i32) -> *const c_char;
        pub fn lk_registry_open(
            ctx: *mut lk_context_t,
            path: *const c_char,
            opts: *const lk_registry_opts_t,
            out: *mut *mut lk_registry_t,
        ) -> lk_status;
        pub fn lk_registry_close(reg: *mut lk_registry_t);
        pub fn lk_registry_add_adapter(
            reg: *mut lk_registry_t,
            name: *const c_char,
            ad: *mut lk_adapter_t,
            opts: *const lk_registry_add_opts_t,
            out_ref: *mut *mut c_char,
        ) -> lk_status;
        pub fn lk_registry_resolve(reg: *mut lk_registry_t, r: *const c_char, out_ref: *mut *mut c_char) -> lk_status;
        pub fn lk_registry_get(reg: *mut lk_registry_t, r: *const c_char, out: *mut *mut lk_adapter_t) -> lk_status;
        pub fn lk_registry_show(reg: *mut lk_registry_t, r: *const c_char, out_json: *mut *mut c_char) -> lk_status;
        pub fn lk_registry_lineage(
            reg: *mut lk_registry_t,
            r: *const c_char,
            opts: *const lk_registry_lineage_opts_t,
            out_json: *mut *mut c_char,
        ) -> lk_status;
    }

    extern "C" {
        pub fn lk_version_string() -> *const c_char;
        pub fn lk_plugin_abi_version() -> u32;
        pub fn lk_strerror(code: lk_status) -> *const c_char;
        pub fn lk_tensor_init(
            t: *mut lk_tensor_t,
            dtype: i32,
            ndim: u32,
            shape: *const i64,
            data: *mut c_void,
        ) -> lk_status;

        pub fn lk_context_create(
            opts: *const lk_context_opts_t,
            out: *mut *mut lk_context_t,
        ) -> lk_status;
        pub fn lk_context_free(ctx: *mut lk_context_t);
        pub fn lk_last_error(ctx: *const lk_context_t) -> *const c_char;

        pub fn lk_plugin_load(ctx: *mut lk_context_t, path: *const c_char) -> lk_status;
        pub fn lk_plugin_count(ctx: *const lk_context_t) -> u32;
        pub fn lk_plugin_info(
            ctx: *const lk_context_t,
            index: u32,
            out: *mut lk_plugin_info_t,
        ) -> lk_status;
        pub fn lk_component_count(ctx: *const lk_context_t) -> u32;
        pub fn lk_component_info(
            ctx: *const lk_context_t,
            index: u32,
            out: *mut lk_component_info_t,
        ) -> lk_status;

        pub fn lk_adapter_create(
            ctx: *mut lk_context_t,
            cfg: *const lk_lora_config_t,
            out: *mut *mut lk_adapter_t,
        ) -> lk_status;
        pub fn lk_adapter_free(ad: *mut lk_adapter_t);
        pub fn lk_adapter_add_target(
            ad: *mut lk_adapter_t,
            name: *const c_char,
            in_features: i64,
            out_features: i64,
            rank: u32,
            alpha: f32,
        ) -> lk_status;
        pub fn lk_adapter_target_count(ad: *const lk_adapter_t) -> u32;
        pub fn lk_adapter_target_info(
            ad: *const lk_adapter_t,
            index: u32,
            out: *mut lk_target_info_t,
        ) -> lk_status;
        pub fn lk_adapter_find(ad: *const lk_adapter_t, name: *const c_char) -> i32;
        pub fn lk_adapter_weights(
            ad: *mut lk_adapter_t,
            index: u32,
            a: *mut lk_tensor_t,
            b: *mut lk_tensor_t,
        ) -> lk_status;

        pub fn lk_backend_open(
            ctx: *mut lk_context_t,
            name: *const c_char,
            out: *mut *mut lk_backend_t,
        ) -> lk_status;
        pub fn lk_backend_close(be: *mut lk_backend_t);
        pub fn lk_backend_name(be: *const lk_backend_t) -> *const c_char;
        pub fn lk_backend_device_count(be: *const lk_backend_t) -> u32;
        pub fn lk_lora_forward(
            be: *mut lk_backend_t,
            ad: *const lk_adapter_t,
            target: u32,
            x: *const lk_tensor_t,
            w: *const lk_tensor_t,
            y: *mut lk_tensor_t,
        ) -> lk_status;
        pub fn lk_merge(
            be: *mut lk_backend_t,
            ad: *const lk_adapter_t,
            target: u32,
            w: *mut lk_tensor_t,
            mult: f32,
        ) -> lk_status;
        pub fn lk_unmerge(
            be: *mut lk_backend_t,
            ad: *const lk_adapter_t,
            target: u32,
            w: *mut lk_tensor_t,
            mult: f32,
        ) -> lk_status;
    }
}

/// A failed call: the lk_status and the context's message.
#[derive(Debug, Clone)]
pub struct Error {
    pub status: i32,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "status {} ({}): {}", self.status, strerror(self.status), self.message)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

fn string(z: *const c_char) -> String {
    if z.is_null() {
        String::new()
    } else {
        unsafe { CStr::from_ptr(z) }.to_string_lossy().into_owned()
    }
}

fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error {
        status: sys::LK_ERR_INVALID_ARG,
        message: format!("string contains NUL: {:?}", s),
    })
}

pub fn strerror(status: i32) -> String {
    string(unsafe { sys::lk_strerror(status) })
}
pub fn version_string() -> String {
    string(unsafe { sys::lk_version_string() })
}
pub fn plugin_abi_version() -> (u32, u32) {
    let v = unsafe { sys::lk_plugin_abi_version() };
    (v >> 16, v & 0xffff)
}

pub struct PluginInfo {
    pub index: u32,
    pub status: i32,
    pub path: String,
    pub id: Option<String>,
    pub name: Option<String>,
    pub version: Option<String>,
    pub abi_version: (u32, u32),
    pub n_components: u32,
    pub reason: String,
}

pub struct ComponentInfo {
    pub kind: i32,
    pub name: String,
    pub description: String,
    pub plugin_index: u32,
}

pub struct TargetInfo {
    pub name: String,
    pub rank: u32,
    pub in_features: i64,
    pub out_features: i64,
    pub alpha: f32,
    pub scale: f32,
}

fn opt(z: *const c_char) -> Option<String> {
    if z.is_null() {
        None
    } else {
        Some(string(z))
    }
}

// ---- context ----------------------------------------------------------------

pub struct Context {
    ptr: *mut sys::lk_context_t,
}

impl Drop for Context {
    fn drop(&mut self) {
        unsafe { sys::lk_context_free(self.ptr) }
    }
}

impl Context {
    /// `no_default_plugins`: load plugins only with `load_plugin`;
    /// `n_threads`: backend threads (0 = all cores).
    pub fn new(no_default_plugins: bool, n_threads: u32) -> Result<Context> {
        let opts = sys::lk_context_opts_t {
            struct_size: std::mem::size_of::<sys::lk_context_opts_t>() as u32,
            no_default_plugins: no_default_plugins as u32,
            n_threads,
            reserved0: 0,
        };
        let mut p = ptr::null_mut();
        let st = unsafe { sys::lk_context_create(&opts, &mut p) };
        let ctx = Context { ptr: p }; // freed on the error path too (free(NULL) is a no-op)
        if st != sys::LK_OK {
            return Err(ctx.error(st));
        }
        Ok(ctx)
    }

    fn error(&self, status: i32) -> Error {
        let message = if self.ptr.is_null() {
            String::new()
        } else {
            string(unsafe { sys::lk_last_error(self.ptr) })
        };
        Error { status, message }
    }

    fn check(&self, status: i32) -> Result<()> {
        if status == sys::LK_OK {
            Ok(())
        } else {
            Err(self.error(status))
        }
    }

    pub fn load_plugin(&mut self, path: &str) -> Result<()> {
        let z = cstring(path)?;
        self.check(unsafe { sys::lk_plugin_load(self.ptr, z.as_ptr()) })
    }

    pub fn plugins(&self) -> Result<Vec<PluginInfo>> {
        let n = unsafe { sys::lk_plugin_count(self.ptr) };
        let mut v = Vec::new();
        for i in 0..n {
            let mut pi: sys::lk_plugin_info_t = unsafe { std::mem::zeroed() };
            pi.struct_size = std::mem::size_of::<sys::lk_plugin_info_t>() as u32;
            self.check(unsafe { sys::lk_plugin_info(self.ptr, i, &mut pi) })?;
            v.push(PluginInfo {
                index: i,
                status: pi.status,
                path: string(pi.path),
                id: opt(pi.id),
                name: opt(pi.name),
                version: opt(pi.version),
                abi_version: (pi.abi_version >> 16, pi.abi_version & 0xffff),
                n_components: pi.n_components,
                reason: string(pi.reason),
            });
        }
        Ok(v)
    }

    pub fn components(&self) -> Result<Vec<ComponentInfo>> {
        let n = unsafe { sys::lk_component_count(self.ptr) };
        let mut v = Vec::new();
        for i in 0..n {
            let mut ci: sys::lk_component_info_t = unsafe { std::mem::zeroed() };
            ci.struct_size = std::mem::size_of::<sys::lk_component_info_t>() as u32;
            self.check(unsafe { sys::lk_component_info(self.ptr, i, &mut ci) })?;
            v.push(ComponentInfo {
                kind: ci.kind,
                name: string(ci.name),
                description: string(ci.description),
                plugin_index: ci.plugin_index,
            });
        }
        Ok(v)
    }

    pub fn create_adapter(&self, rank: u32, alpha: f32, scaling: i32, seed: u64) -> Result<Adapter<'_>> {
        let cfg = sys::lk_lora_config_t {
            struct_size: std::mem::size_of::<sys::lk_lora_config_t>() as u32,
            rank,
            alpha,
            scaling,
            seed,
        };
        let mut p = ptr::null_mut();
        self.check(unsafe { sys::lk_adapter_create(self.ptr, &cfg, &mut p) })?;
        Ok(Adapter { ptr: p, ctx: self })
    }

    /// `name` None: the best scored backend.
    pub fn open_backend(&self, name: Option<&str>) -> Result<Backend<'_>> {
        let z = match name {
            Some(s) => Some(cstring(s)?),
            None => None,
        };
        let mut p = ptr::null_mut();
        let zp = z.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        self.check(unsafe { sys::lk_backend_open(self.ptr, zp, &mut p) })?;
        Ok(Backend { ptr: p, ctx: self })
    }
}

// ---- adapter ------------------------------------------------------------------

pub struct Adapter<'c> {
    ptr: *mut sys::lk_adapter_t,
    ctx: &'c Context,
}

impl Drop for Adapter<'_> {
    fn drop(&mut self) {
        unsafe { sys::lk_adapter_free(self.ptr) }
    }
}

impl<'c> Adapter<'c> {
    /// rank 0 and alpha 0 take the adapter's defaults.
    pub fn add_target(&mut self, name: &str, in_features: i64, out_features: i64, rank: u32, alpha: f32) -> Result<()> {
        let z = cstring(name)?;
        self.ctx.check(unsafe {
            sys::lk_adapter_add_target(self.ptr, z.as_ptr(), in_features, out_features, rank, alpha)
        })
    }

    pub fn find(&self, name: &str) -> Option<u32> {
        let z = cstring(name).ok()?;
        let i = unsafe { sys::lk_adapter_find(self.ptr, z.as_ptr()) };
        if i < 0 {
            None
        } else {
            Some(i as u32)
        }
    }

    pub fn target(&self, index: u32) -> Result<TargetInfo> {
        let mut ti: sys::lk_target_info_t = unsafe { std::mem::zeroed() };
        ti.struct_size = std::mem::size_of::<sys::lk_target_info_t>() as u32;
        self.ctx.check(unsafe { sys::lk_adapter_target_info(self.ptr, index, &mut ti) })?;
        Ok(TargetInfo {
            name: string(ti.name),
            rank: ti.rank,
            in_features: ti.in_features,
            out_features: ti.out_features,
            alpha: ti.alpha,
            scale: ti.scale,
        })
    }

    fn views(&self, index: u32) -> Result<(sys::lk_tensor_t, sys::lk_tensor_t)> {
        let mut a: sys::lk_tensor_t = unsafe { std::mem::zeroed() };
        let mut b: sys::lk_tensor_t = unsafe { std::mem::zeroed() };
        a.struct_size = std::mem::size_of::<sys::lk_tensor_t>() as u32;
        b.struct_size = a.struct_size;
        self.ctx.check(unsafe { sys::lk_adapter_weights(self.ptr, index, &mut a, &mut b) })?;
        Ok((a, b))
    }

    /// A (rank x in) as a slice borrowed from the adapter, and its shape.
    pub fn a(&self, index: u32) -> Result<(&[f32], [i64; 2])> {
        let (a, _) = self.views(index)?;
        let n = (a.shape[0] * a.shape[1]) as usize;
        Ok((unsafe { std::slice::from_raw_parts(a.data as *const f32, n) }, [a.shape[0], a.shape[1]]))
    }

    /// B (out x rank), writable, and its shape.
    pub fn b_mut(&mut self, index: u32) -> Result<(&mut [f32], [i64; 2])> {
        let (_, b) = self.views(index)?;
        let n = (b.shape[0] * b.shape[1]) as usize;
        Ok((unsafe { std::slice::from_raw_parts_mut(b.data as *mut f32, n) }, [b.shape[0], b.shape[1]]))
    }
}

// ---- tensors: views of Rust slices ----------------------------------------------

/// An lk_tensor_t viewing a slice for lifetime 'a.
pub struct Tensor<'a> {
    t: sys::lk_tensor_t,
    _data: PhantomData<&'a mut [f32]>,
}

impl<'a> Tensor<'a> {
    fn make(data: *mut f32, len: usize, shape: &[i64]) -> Result<Tensor<'a>> {
        let mut t: sys::lk_tensor_t = unsafe { std::mem::zeroed() };
        t.struct_size = std::mem::size_of::<sys::lk_tensor_t>() as u32;
        let st = unsafe {
            sys::lk_tensor_init(&mut t, sys::LK_DTYPE_F32, shape.len() as u32, shape.as_ptr(), data as *mut c_void)
        };
        if st != sys::LK_OK {
            return Err(Error { status: st, message: format!("lk_tensor_init: shape {:?}", shape) });
        }
        if t.nbytes != (len * 4) as u64 {
            return Err(Error {
                status: sys::LK_ERR_INVALID_ARG,
                message: format!("shape {:?} does not fit a slice of {} floats", shape, len),
            });
        }
        Ok(Tensor { t, _data: PhantomData })
    }
    /// Read-only input (lorakit does not write through inputs).
    pub fn input(data: &'a [f32], shape: &[i64]) -> Result<Tensor<'a>> {
        Tensor::make(data.as_ptr() as *mut f32, data.len(), shape)
    }
    /// Output or in-place operand.
    pub fn output(data: &'a mut [f32], shape: &[i64]) -> Result<Tensor<'a>> {
        Tensor::make(data.as_mut_ptr(), data.len(), shape)
    }
}

// ---- backend --------------------------------------------------------------------

pub struct Backend<'c> {
    ptr: *mut sys::lk_backend_t,
    ctx: &'c Context,
}

impl Drop for Backend<'_> {
    fn drop(&mut self) {
        unsafe { sys::lk_backend_close(self.ptr) }
    }
}

impl<'c> Backend<'c> {
    pub fn name(&self) -> String {
        string(unsafe { sys::lk_backend_name(self.ptr) })
    }
    pub fn device_count(&self) -> u32 {
        unsafe { sys::lk_backend_device_count(self.ptr) }
    }
    /// y = x W^T (when w is Some) + s (x A^T) B^T.
    pub fn forward(&mut self, ad: &Adapter, target: u32, x: &Tensor, w: Option<&Tensor>, y: &mut Tensor) -> Result<()> {
        let wp = w.map_or(ptr::null(), |w| &w.t as *const sys::lk_tensor_t);
        self.ctx.check(unsafe { sys::lk_lora_forward(self.ptr, ad.ptr, target, &x.t, wp, &mut y.t) })
    }
    pub fn merge(&mut self, ad: &Adapter, target: u32, w: &mut Tensor, mult: f32) -> Result<()> {
        self.ctx.check(unsafe { sys::lk_merge(self.ptr, ad.ptr, target, &mut w.t, mult) })
    }
    pub fn unmerge(&mut self, ad: &Adapter, target: u32, w: &mut Tensor, mult: f32) -> Result<()> {
        self.ctx.check(unsafe { sys::lk_unmerge(self.ptr, ad.ptr, target, &mut w.t, mult) })
    }
}

// ---- registry (abi/lorakit_registry.h; built with --cfg lk_registry) ---------------

/// A string lorakit handed over, copied and freed with lk_free.
#[cfg(lk_registry)]
fn take(z: *mut c_char) -> String {
    let s = string(z);
    unsafe { sys::lk_free(z as *mut c_void) };
    s
}

#[cfg(lk_registry)]
pub fn relation_name(relation: i32) -> String {
    string(unsafe { sys::lk_registry_relation_name(relation) })
}

#[cfg(lk_registry)]
pub struct Registry<'c> {
    ptr: *mut sys::lk_registry_t,
    ctx: &'c Context,
}

#[cfg(lk_registry)]
impl Drop for Registry<'_> {
    fn drop(&mut self) {
        unsafe { sys::lk_registry_close(self.ptr) }
    }
}

/// Parents, relation and parameters of a new version.
#[cfg(lk_registry)]
#[derive(Default)]
pub struct AddOptions<'a> {
    pub relation: i32,
    pub parents: &'a [&'a str],
    pub params_json: Option<&'a str>,
    pub operation: Option<&'a str>,
}

#[cfg(lk_registry)]
impl Context {
    /// Open (creating it) the registry file at path.
    pub fn open_registry(&self, path: &str) -> Result<Registry<'_>> {
        let z = cstring(path)?;
        let opts = sys::lk_registry_opts_t {
            struct_size: std::mem::size_of::<sys::lk_registry_opts_t>() as u32,
            read_only: 0,
            busy_timeout_ms: 0,
            reserved0: 0,
        };
        let mut p = ptr::null_mut();
        self.check(unsafe { sys::lk_registry_open(self.ptr, z.as_ptr(), &opts, &mut p) })?;
        Ok(Registry { ptr: p, ctx: self })
    }
}

#[cfg(lk_registry)]
impl<'c> Registry<'c> {
    /// Add ad as the next version of name; returns its "NAME@N".
    pub fn add(&mut self, name: &str, ad: &Adapter, o: &AddOptions) -> Result<String> {
        let zname = cstring(name)?;
        let parents = o.parents.iter().map(|p| cstring(p)).collect::<Result<Vec<_>>>()?;
        let pp: Vec<*const c_char> = parents.iter().map(|c| c.as_ptr()).collect();
        let params = o.params_json.map(cstring).transpose()?;
        let operation = o.operation.map(cstring).transpose()?;
        let mut opts: sys::lk_registry_add_opts_t = unsafe { std::mem::zeroed() };
        opts.struct_size = std::mem::size_of::<sys::lk_registry_add_opts_t>() as u32;
        opts.relation = o.relation;
        opts.parents = if pp.is_empty() { ptr::null() } else { pp.as_ptr() };
        opts.n_parents = pp.len() as u32;
        opts.params_json = params.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        opts.operation = operation.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        let mut r = ptr::null_mut();
        self.ctx.check(unsafe { sys::lk_registry_add_adapter(self.ptr, zname.as_ptr(), ad.ptr, &opts, &mut r) })?;
        Ok(take(r))
    }

    pub fn resolve(&mut self, r: &str) -> Result<String> {
        let z = cstring(r)?;
        let mut out = ptr::null_mut();
        self.ctx.check(unsafe { sys::lk_registry_resolve(self.ptr, z.as_ptr(), &mut out) })?;
        Ok(take(out))
    }

    /// The version as a new adapter of the registry's context.
    pub fn get(&mut self, r: &str) -> Result<Adapter<'c>> {
        let z = cstring(r)?;
        let mut p = ptr::null_mut();
        self.ctx.check(unsafe { sys::lk_registry_get(self.ptr, z.as_ptr(), &mut p) })?;
        Ok(Adapter { ptr: p, ctx: self.ctx })
    }

    pub fn show_json(&mut self, r: &str) -> Result<String> {
        let z = cstring(r)?;
        let mut out = ptr::null_mut();
        self.ctx.check(unsafe { sys::lk_registry_show(self.ptr, z.as_ptr(), &mut out) })?;
        Ok(take(out))
    }

    pub fn lineage_json(&mut self, r: &str, direction: i32, max_depth: u32) -> Result<String> {
        let z = cstring(r)?;
        let opts = sys::lk_registry_lineage_opts_t {
            struct_size: std::mem::size_of::<sys::lk_registry_lineage_opts_t>() as u32,
            direction,
            max_depth,
            reserved0: 0,
        };
        let mut out = ptr::null_mut();
        self.ctx.check(unsafe { sys::lk_registry_lineage(self.ptr, z.as_ptr(), &opts, &mut out) })?;
        Ok(take(out))
    }
}

/// C's printf("%.9g", v) for a finite value, so every host prints alike:
/// 9 significant digits, round-to-nearest (Rust's {:e} is exact), fixed
/// notation for exponents -4..8, else d.ddde[+-]XX; trailing zeros dropped.
pub fn fmt_g9(v: f64) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let e = format!("{:.8e}", v); // "-1.23456789e-3"
    let (mant, exp) = e.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    let neg = mant.starts_with('-');
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if exp < -4 || exp >= 9 {
        let d = digits.trim_end_matches('0');
        out.push_str(&d[..1]);
        if d.len() > 1 {
            out.push('.');
            out.push_str(&d[1..]);
        }
        out.push_str(&format!("e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs()));
    } else if exp >= 0 {
        let p = (exp + 1) as usize;
        let (int, frac) = digits.split_at(p);
        out.push_str(int);
        let frac = frac.trim_end_matches('0');
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
    } else {
        out.push_str("0.");
        out.push_str(&"0".repeat((-exp - 1) as usize));
        out.push_str(digits.trim_end_matches('0'));
    }
    out
}
