// lorakit.go - cgo bindings for liblorakit: a small safe layer over
// abi/lorakit.h.
//
// Ownership: each handle lives in a Go struct with an explicit, idempotent
// Close and a finalizer that calls it if the program forgets. Objects made
// from a Context keep a reference to it, so the garbage collector cannot
// finalize a Context before its adapters and backends (Go runs the
// finalizers of a chain of otherwise unreachable objects in dependency
// order). Explicit Close is still the rule: finalizers run late or never.
//
// cgo's pointer rules forbid handing C a Go struct that holds Go pointers,
// so tensors live in C memory (NewTensorF32) and Go sees them as slices.
//
// Errors: a failing call returns *Error with the lk_status and the context's
// lk_last_error message.
//
// Build: CGO_CFLAGS=-I<abi> CGO_LDFLAGS="-L<build> -llorakit" go build.
package main

/*
#include <stdlib.h>
#include <string.h>
#include <lorakit.h>
*/
import "C"

import (
	"fmt"
	"runtime"
	"unsafe"
)

// Error is a failed lorakit call.
type Error struct {
	Status  int32
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("status %d (%s): %s", e.Status, Strerror(e.Status), e.Message)
}

func Strerror(status int32) string { return C.GoString(C.lk_strerror(C.lk_status(status))) }
func VersionString() string        { return C.GoString(C.lk_version_string()) }

// PluginABIVersion is the newest plugin ABI of the library, as (major, minor).
func PluginABIVersion() (uint32, uint32) {
	v := uint32(C.lk_plugin_abi_version())
	return v >> 16, v & 0xffff
}

func goString(z *C.char) string {
	if z == nil {
		return ""
	}
	return C.GoString(z)
}

// ---- context -------------------------------------------------------------------

type Context struct {
	p *C.lk_context_t
}

// NewContext: noDefaultPlugins loads plugins only through LoadPlugin;
// nThreads is the backend thread count (0 = all cores).
func NewContext(noDefaultPlugins bool, nThreads uint32) (*Context, error) {
	var opts C.lk_context_opts_t
	opts.struct_size = C.uint32_t(unsafe.Sizeof(opts))
	if noDefaultPlugins {
		opts.no_default_plugins = 1
	}
	opts.n_threads = C.uint32_t(nThreads)
	var p *C.lk_context_t
	st := C.lk_context_create(&opts, &p)
	c := &Context{p}
	if st != C.LK_OK {
		err := c.fail(st)
		c.Close()
		return nil, err
	}
	runtime.SetFinalizer(c, (*Context).Close)
	return c, nil
}

// Close frees the context; every object made from it must be closed first.
func (c *Context) Close() {
	if c.p != nil {
		C.lk_context_free(c.p)
		c.p = nil
	}
}

func (c *Context) fail(st C.lk_status) error {
	msg := ""
	if c.p != nil {
		msg = goString(C.lk_last_error(c.p))
	}
	return &Error{int32(st), msg}
}

func (c *Context) check(st C.lk_status) error {
	if st == C.LK_OK {
		return nil
	}
	return c.fail(st)
}

func (c *Context) LoadPlugin(path string) error {
	z := C.CString(path)
	defer C.free(unsafe.Pointer(z))
	return c.check(C.lk_plugin_load(c.p, z))
}

type PluginInfo struct {
	Index, Status           int32
	Path, ID, Name, Version string
	Reason                  string
	ABIMajor, ABIMinor      uint32
	NComponents             uint32
	HasID                   bool
}

func (c *Context) Plugins() ([]PluginInfo, error) {
	n := uint32(C.lk_plugin_count(c.p))
	out := make([]PluginInfo, 0, n)
	for i := uint32(0); i < n; i++ {
		var pi C.lk_plugin_info_t
		pi.struct_size = C.uint32_t(unsafe.Sizeof(pi))
		if err := c.check(C.lk_plugin_info(c.p, C.uint32_t(i), &pi)); err != nil {
			return nil, err
		}
		out = append(out, PluginInfo{
			Index: int32(i), Status: int32(pi.status),
			Path: goString(pi.path), ID: goString(pi.id), Name: goString(pi.name),
			Version: goString(pi.version), Reason: goString(pi.reason),
			ABIMajor: uint32(pi.abi_version) >> 16, ABIMinor: uint32(pi.abi_version) & 0xffff,
			NComponents: uint32(pi.n_components), HasID: pi.id != nil,
		})
	}
	return out, nil
}

type ComponentInfo struct {
	Kind              int32
	Name, Description string
	PluginIndex       int32
}

func (c *Context) Components() ([]ComponentInfo, error) {
	n := uint32(C.lk_component_count(c.p))
	out := make([]ComponentInfo, 0, n)
	for i := uint32(0); i < n; i++ {
		var ci C.lk_component_info_t
		ci.struct_size = C.uint32_t(unsafe.Sizeof(ci))
		if err := c.check(C.lk_component_info(c.p, C.uint32_t(i), &ci)); err != nil {
			return nil, err
		}
		out = append(out, ComponentInfo{int32(ci.kind), goString(ci.name), goString(ci.description),
			int32(ci.plugin_index)})
	}
	return out, nil
}

// ---- adapter ---------------------------------------------------------------------

type Adapter struct {
	p   *C.lk_adapter_t
	ctx *Context // keeps the context alive
}

func (c *Context) CreateAdapter(rank uint32, alpha float32, scaling int32, seed uint64) (*Adapter, error) {
	var cfg C.lk_lora_config_t
	cfg.struct_size = C.uint32_t(unsafe.Sizeof(cfg))
	cfg.rank = C.uint32_t(rank)
	cfg.alpha = C.float(alpha)
	cfg.scaling = C.int32_t(scaling)
	cfg.seed = C.uint64_t(seed)
	var p *C.lk_adapter_t
	if err := c.check(C.lk_adapter_create(c.p, &cfg, &p)); err != nil {
		return nil, err
	}
	a := &Adapter{p, c}
	runtime.SetFinalizer(a, (*Adapter).Close)
	return a, nil
}

func (a *Adapter) Close() {
	if a.p != nil {
		C.lk_adapter_free(a.p)
		a.p = nil
	}
}

// AddTarget: rank 0 and alpha 0 take the adapter's defaults.
func (a *Adapter) AddTarget(name string, in, out int64, rank uint32, alpha float32) error {
	z := C.CString(name)
	defer C.free(unsafe.Pointer(z))
	return a.ctx.check(C.lk_adapter_add_target(a.p, z, C.int64_t(in), C.int64_t(out), C.uint32_t(rank), C.float(alpha)))
}

// Find returns the target's index, or -1.
func (a *Adapter) Find(name string) int32 {
	z := C.CString(name)
	defer C.free(unsafe.Pointer(z))
	return int32(C.lk_adapter_find(a.p, z))
}

type TargetInfo struct {
	Name                    string
	Rank                    uint32
	InFeatures, OutFeatures int64
	Alpha, Scale            float32
}

func (a *Adapter) Target(index uint32) (TargetInfo, error) {
	var ti C.lk_target_info_t
	ti.struct_size = C.uint32_t(unsafe.Sizeof(ti))
	if err := a.ctx.check(C.lk_adapter_target_info(a.p, C.uint32_t(index), &ti)); err != nil {
		return TargetInfo{}, err
	}
	return TargetInfo{goString(ti.name), uint32(ti.rank), int64(ti.in_features), int64(ti.out_features),
		float32(ti.alpha), float32(ti.scale)}, nil
}

// Weights returns A (rank x in) and B (out x rank) as writable slices over
// memory owned by the adapter: valid until Close, which must come after
// their last use (the adapter is kept alive with runtime.KeepAlive).
func (a *Adapter) Weights(index uint32) (A, B []float32, shapeA, shapeB [2]int64, err error) {
	var ta, tb C.lk_tensor_t
	ta.struct_size = C.uint32_t(unsafe.Sizeof(ta))
	tb.struct_size = ta.struct_size
	if err = a.ctx.check(C.lk_adapter_weights(a.p, C.uint32_t(index), &ta, &tb)); err != nil {
		return
	}
	shapeA = [2]int64{int64(ta.shape[0]), int64(ta.shape[1])}
	shapeB = [2]int64{int64(tb.shape[0]), int64(tb.shape[1])}
	A = unsafe.Slice((*float32)(ta.data), shapeA[0]*shapeA[1])
	B = unsafe.Slice((*float32)(tb.data), shapeB[0]*shapeB[1])
	return
}

// ---- tensors in C memory ------------------------------------------------------------

type Tensor struct {
	t *C.lk_tensor_t // C memory: header and data
}

// NewTensorF32 allocates a zeroed f32 tensor of the given shape in C memory.
func NewTensorF32(shape ...int64) (*Tensor, error) {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	t := (*C.lk_tensor_t)(C.calloc(1, C.size_t(unsafe.Sizeof(C.lk_tensor_t{}))))
	data := C.calloc(C.size_t(n), 4)
	if t == nil || (data == nil && n > 0) {
		C.free(unsafe.Pointer(t))
		C.free(data)
		return nil, &Error{C.LK_ERR_NOMEM, fmt.Sprintf("tensor of shape %v: out of memory", shape)}
	}
	cs := (*C.int64_t)(C.calloc(C.size_t(len(shape)+1), 8))
	for i, d := range shape {
		*(*C.int64_t)(unsafe.Add(unsafe.Pointer(cs), 8*i)) = C.int64_t(d)
	}
	t.struct_size = C.uint32_t(unsafe.Sizeof(*t))
	st := C.lk_tensor_init(t, C.LK_DTYPE_F32, C.uint32_t(len(shape)), cs, data)
	C.free(unsafe.Pointer(cs))
	x := &Tensor{t}
	runtime.SetFinalizer(x, (*Tensor).Close)
	if st != C.LK_OK {
		x.Close()
		return nil, &Error{int32(st), fmt.Sprintf("lk_tensor_init: shape %v", shape)}
	}
	return x, nil
}

// Data is the tensor's memory as a slice: valid until Close.
func (x *Tensor) Data() []float32 {
	return unsafe.Slice((*float32)(x.t.data), x.t.nbytes/4)
}

func (x *Tensor) Close() {
	if x.t != nil {
		C.free(x.t.data)
		C.free(unsafe.Pointer(x.t))
		x.t = nil
	}
}

// ---- backend ------------------------------------------------------------------------

type Backend struct {
	p   *C.lk_backend_t
	ctx *Context
}

// OpenBackend opens device 0 of a backend by name ("" = the best scored one).
func (c *Context) OpenBackend(name string) (*Backend, error) { return c.OpenBackendDevice(name, 0) }

// OpenBackendDevice opens device `device` of a backend by name ("" = the best scored one).
func (c *Context) OpenBackendDevice(name string, device uint32) (*Backend, error) {
	var z *C.char
	if name != "" {
		z = C.CString(name)
		defer C.free(unsafe.Pointer(z))
	}
	var p *C.lk_backend_t
	if err := c.check(C.lk_backend_open(c.p, z, C.uint32_t(device), &p)); err != nil {
		return nil, err
	}
	b := &Backend{p, c}
	runtime.SetFinalizer(b, (*Backend).Close)
	return b, nil
}

func (b *Backend) Close() {
	if b.p != nil {
		C.lk_backend_close(b.p)
		b.p = nil
	}
}

func (b *Backend) Name() string { return goString(C.lk_backend_name(b.p)) }

// DeviceCount: devices of this backend's component (the open backend is one).
func (b *Backend) DeviceCount() uint32 {
	return uint32(C.lk_backend_device_count(b.ctx.p, C.lk_backend_name(b.p)))
}

// Forward: y = x W^T (w may be nil) + s (x A^T) B^T.
func (b *Backend) Forward(a *Adapter, target uint32, x, w, y *Tensor) error {
	var wt *C.lk_tensor_t
	if w != nil {
		wt = w.t
	}
	err := b.ctx.check(C.lk_lora_forward(b.p, a.p, C.uint32_t(target), x.t, wt, y.t))
	runtime.KeepAlive(a)
	return err
}

// DeviceInfo is what lk_backend_info says of the open device.
type DeviceInfo struct {
	Type          int32
	Name, Driver  string
	UnifiedMemory uint32
	OffsetAlign   uint64
	MaxAlloc      uint64
}

// Info: the open device (type, limits, driver).
func (b *Backend) Info() (DeviceInfo, error) {
	var d C.lk_device_info_t
	d.struct_size = C.uint32_t(unsafe.Sizeof(d))
	if err := b.ctx.check(C.lk_backend_info(b.p, &d)); err != nil {
		return DeviceInfo{}, err
	}
	return DeviceInfo{int32(d._type), C.GoString(&d.name[0]), C.GoString(&d.driver[0]), uint32(d.unified_memory),
		uint64(d.offset_align), uint64(d.max_alloc)}, nil
}

// Buffer is a backend buffer (lk_buffer_*); Close frees it (the backend's
// Close frees what is left).
type Buffer struct {
	p  *C.lk_buffer_t
	be *Backend
}

// Alloc makes a buffer of nbytes with flags (BufferHostVisible, ...).
func (b *Backend) Alloc(nbytes uint64, flags uint32) (*Buffer, error) {
	var p *C.lk_buffer_t
	if err := b.ctx.check(C.lk_buffer_alloc(b.p, C.uint64_t(nbytes), C.uint32_t(flags), &p)); err != nil {
		return nil, err
	}
	return &Buffer{p, b}, nil
}

const BufferHostVisible = uint32(C.LK_BUFFER_HOST_VISIBLE)

func (u *Buffer) Close() {
	if u.p != nil && u.be.p != nil {
		C.lk_buffer_free(u.be.p, u.p)
	}
	u.p = nil
}

func (u *Buffer) Size() uint64 { return uint64(C.lk_buffer_size(u.be.p, u.p)) }

// Upload copies src (Go memory without Go pointers: allowed for the call) in.
func (u *Buffer) Upload(offset uint64, src []float32) error {
	return u.be.ctx.check(C.lk_buffer_upload(u.be.p, u.p, C.uint64_t(offset), unsafe.Pointer(&src[0]),
		C.uint64_t(4*len(src))))
}

func (u *Buffer) Download(offset uint64, dst []float32) error {
	return u.be.ctx.check(C.lk_buffer_download(u.be.p, u.p, C.uint64_t(offset), unsafe.Pointer(&dst[0]),
		C.uint64_t(4*len(dst))))
}

// ReadMapped maps n floats from byte offset, copies them out and unmaps.
func (u *Buffer) ReadMapped(offset uint64, n int) ([]float32, error) {
	var p unsafe.Pointer
	if err := u.be.ctx.check(C.lk_buffer_map(u.be.p, u.p, C.uint64_t(offset), C.uint64_t(4*n), &p)); err != nil {
		return nil, err
	}
	out := append([]float32(nil), unsafe.Slice((*float32)(p), n)...)
	return out, u.be.ctx.check(C.lk_buffer_unmap(u.be.p, u.p))
}

func (b *Backend) Merge(a *Adapter, target uint32, w *Tensor, mult float32) error {
	err := b.ctx.check(C.lk_merge(b.p, a.p, C.uint32_t(target), w.t, C.float(mult)))
	runtime.KeepAlive(a)
	return err
}

func (b *Backend) Unmerge(a *Adapter, target uint32, w *Tensor, mult float32) error {
	err := b.ctx.check(C.lk_unmerge(b.p, a.p, C.uint32_t(target), w.t, C.float(mult)))
	runtime.KeepAlive(a)
	return err
}
