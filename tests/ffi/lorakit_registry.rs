//! lorakit_registry.rs - the registry part of the Rust bindings
//! (abi/lorakit_registry.h), a child module of lorakit.rs compiled with
//! `--cfg lk_registry` where the library has a registry: the C declarations
//! (`rsys`, re-exported through `lorakit::sys`) and the safe `Registry`.
use super::{cstring, string, sys, Adapter, Context, Result};
use std::os::raw::{c_char, c_void};
use std::ptr;

#[allow(non_camel_case_types)]
pub mod rsys {
    use super::super::sys::{lk_adapter_t, lk_context_t, lk_status};
    use std::os::raw::{c_char, c_void};
    pub const LK_REL_TRAINED_FROM: i32 = 1;
    pub const LK_LINEAGE_BOTH: i32 = 3;

    #[repr(C)]
    pub struct lk_registry_t {
        _opaque: [u8; 0],
    }

    #[repr(C)]
    pub struct lk_registry_opts_t {
        pub struct_size: u32,
        pub read_only: u32,
        pub busy_timeout_ms: u32,
        pub reserved0: u32,
    }

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

    #[repr(C)]
    pub struct lk_registry_lineage_opts_t {
        pub struct_size: u32,
        pub direction: i32,
        pub max_depth: u32,
        pub reserved0: u32,
    }

    const _: () = assert!(std::mem::size_of::<lk_registry_add_opts_t>() == 96);

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
}

/// A string lorakit handed over, copied and freed with lk_free.
fn take(z: *mut c_char) -> String {
    let s = string(z);
    unsafe { sys::lk_free(z as *mut c_void) };
    s
}

pub fn relation_name(relation: i32) -> String {
    string(unsafe { sys::lk_registry_relation_name(relation) })
}

pub struct Registry<'c> {
    ptr: *mut sys::lk_registry_t,
    ctx: &'c Context,
}

impl Drop for Registry<'_> {
    fn drop(&mut self) {
        unsafe { sys::lk_registry_close(self.ptr) }
    }
}

/// Parents, relation and parameters of a new version.
#[derive(Default)]
pub struct AddOptions<'a> {
    pub relation: i32,
    pub parents: &'a [&'a str],
    pub params_json: Option<&'a str>,
    pub operation: Option<&'a str>,
}

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
