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
    pub struct lk_buffer_t {
        _opaque: [u8; 0],
    }
    pub const LK_BUFFER_DEVICE_LOCAL: u32 = 1;
    pub const LK_BUFFER_HOST_VISIBLE: u32 = 2;
    pub const LK_NAME_MAX: usize = 128;

    /// An output struct: lorakit writes it up to struct_size.
    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct lk_device_info_t {
        pub struct_size: u32,
        pub type_: i32,
        pub name: [c_char; LK_NAME_MAX],
        pub memory_total: u64,
        pub memory_free: u64,
        pub compute_units: u32,
        pub unified_memory: u32,
        pub max_alloc: u64,
        pub offset_align: u64,
        pub can_wrap: u32,
        pub reserved0: u32,
        pub driver: [c_char; LK_NAME_MAX],
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
    pub use super::registry::rsys::*;

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

        pub fn lk_backend_device_count(ctx: *mut lk_context_t, name: *const c_char) -> u32;
        pub fn lk_backend_open(
            ctx: *mut lk_context_t,
            name: *const c_char,
            device: u32,
            out: *mut *mut lk_backend_t,
        ) -> lk_status;
        pub fn lk_backend_close(be: *mut lk_backend_t);
        pub fn lk_backend_name(be: *const lk_backend_t) -> *const c_char;
        pub fn lk_backend_info(be: *mut lk_backend_t, out: *mut lk_device_info_t) -> lk_status;
        pub fn lk_buffer_alloc(
            be: *mut lk_backend_t,
            nbytes: u64,
            flags: u32,
            out: *mut *mut lk_buffer_t,
        ) -> lk_status;
        pub fn lk_buffer_free(be: *mut lk_backend_t, buf: *mut lk_buffer_t);
        pub fn lk_buffer_size(be: *mut lk_backend_t, buf: *const lk_buffer_t) -> u64;
        pub fn lk_buffer_upload(
            be: *mut lk_backend_t,
            buf: *mut lk_buffer_t,
            offset: u64,
            src: *const c_void,
            nbytes: u64,
        ) -> lk_status;
        pub fn lk_buffer_download(
            be: *mut lk_backend_t,
            buf: *mut lk_buffer_t,
            offset: u64,
            dst: *mut c_void,
            nbytes: u64,
        ) -> lk_status;
        pub fn lk_buffer_map(
            be: *mut lk_backend_t,
            buf: *mut lk_buffer_t,
            offset: u64,
            nbytes: u64,
            out: *mut *mut c_void,
        ) -> lk_status;
        pub fn lk_buffer_unmap(be: *mut lk_backend_t, buf: *mut lk_buffer_t) -> lk_status;
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

    /// Device 0 of the backend `name` (None: the best scored backend).
    pub fn open_backend(&self, name: Option<&str>) -> Result<Backend<'_>> {
        self.open_backend_device(name, 0)
    }

    /// Device `device` of the backend `name` (None: the best scored backend).
    pub fn open_backend_device(&self, name: Option<&str>, device: u32) -> Result<Backend<'_>> {
        let z = match name {
            Some(s) => Some(cstring(s)?),
            None => None,
        };
        let mut p = ptr::null_mut();
        let zp = z.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        self.check(unsafe { sys::lk_backend_open(self.ptr, zp, device, &mut p) })?;
        Ok(Backend { ptr: p, ctx: self })
    }

    /// Devices of the backend component `name` (None: the best scored), without opening it.
    pub fn backend_device_count(&self, name: Option<&str>) -> Result<u32> {
        let z = match name {
            Some(s) => Some(cstring(s)?),
            None => None,
        };
        let zp = z.as_ref().map_or(ptr::null(), |c| c.as_ptr());
        Ok(unsafe { sys::lk_backend_device_count(self.ptr, zp) })
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
    /// Devices of this backend's component (the open backend is one of them).
    pub fn device_count(&self) -> u32 {
        unsafe { sys::lk_backend_device_count(self.ctx.ptr, sys::lk_backend_name(self.ptr)) }
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
    /// The open device (type, limits, driver).
    pub fn info(&mut self) -> Result<sys::lk_device_info_t> {
        // SAFETY: a plain C struct of integers and char arrays: all zeros is valid.
        let mut d: sys::lk_device_info_t = unsafe { std::mem::zeroed() };
        d.struct_size = std::mem::size_of::<sys::lk_device_info_t>() as u32;
        self.ctx.check(unsafe { sys::lk_backend_info(self.ptr, &mut d) })?;
        Ok(d)
    }
    /// A buffer of `nbytes` with `flags` (sys::LK_BUFFER_*), freed on drop.
    pub fn alloc(&mut self, nbytes: u64, flags: u32) -> Result<Buffer<'_, 'c>> {
        let mut p = ptr::null_mut();
        self.ctx.check(unsafe { sys::lk_buffer_alloc(self.ptr, nbytes, flags, &mut p) })?;
        Ok(Buffer { ptr: p, be: self })
    }
}

// ---- buffer ---------------------------------------------------------------------

/// A backend buffer; it borrows its backend, so it is dropped (freed) first.
pub struct Buffer<'b, 'c> {
    ptr: *mut sys::lk_buffer_t,
    be: &'b Backend<'c>,
}

impl Drop for Buffer<'_, '_> {
    fn drop(&mut self) {
        unsafe { sys::lk_buffer_free(self.be.ptr, self.ptr) }
    }
}

impl Buffer<'_, '_> {
    pub fn size(&self) -> u64 {
        unsafe { sys::lk_buffer_size(self.be.ptr, self.ptr) }
    }
    pub fn upload(&mut self, offset: u64, src: &[f32]) -> Result<()> {
        let n = std::mem::size_of_val(src) as u64;
        self.be.ctx.check(unsafe {
            sys::lk_buffer_upload(self.be.ptr, self.ptr, offset, src.as_ptr() as *const c_void, n)
        })
    }
    pub fn download(&mut self, offset: u64, dst: &mut [f32]) -> Result<()> {
        let n = std::mem::size_of_val(dst) as u64;
        self.be.ctx.check(unsafe {
            sys::lk_buffer_download(self.be.ptr, self.ptr, offset, dst.as_mut_ptr() as *mut c_void, n)
        })
    }
    /// Map `n` floats from byte `offset` of a HOST_VISIBLE buffer, copy them
    /// out, and unmap.
    pub fn read_mapped(&mut self, offset: u64, n: usize) -> Result<Vec<f32>> {
        let mut p = ptr::null_mut();
        let bytes = (n * std::mem::size_of::<f32>()) as u64;
        self.be.ctx.check(unsafe { sys::lk_buffer_map(self.be.ptr, self.ptr, offset, bytes, &mut p) })?;
        // SAFETY: lorakit maps `bytes` readable bytes at p until unmap; f32 has no invalid bit patterns.
        let v = unsafe { std::slice::from_raw_parts(p as *const f32, n) }.to_vec();
        self.be.ctx.check(unsafe { sys::lk_buffer_unmap(self.be.ptr, self.ptr) })?;
        Ok(v)
    }
}

// ---- registry (abi/lorakit_registry.h; built with --cfg lk_registry) ---------------
// In lorakit_registry.rs, a child module: it sees this module's private
// fields (Context's pointer) as the rest of the safe layer does.
#[cfg(lk_registry)]
#[path = "lorakit_registry.rs"]
mod registry;
#[cfg(lk_registry)]
pub use registry::*;

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
