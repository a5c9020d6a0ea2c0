//go:build lk_registry

// registry.go - the registry part of the cgo wrapper and of the scenario,
// built with -tags lk_registry when abi/lorakit_registry.h exists.
package main

/*
#include <stdlib.h>
#include <lorakit.h>
*/
import "C"

import (
	"fmt"
	"runtime"
	"strings"
	"unsafe"
)

type Registry struct {
	p   *C.lk_registry_t
	ctx *Context
}

// OpenRegistry opens (creating it) the registry file at path.
func (c *Context) OpenRegistry(path string) (*Registry, error) {
	z := C.CString(path)
	defer C.free(unsafe.Pointer(z))
	var opts C.lk_registry_opts_t
	opts.struct_size = C.uint32_t(unsafe.Sizeof(opts))
	var p *C.lk_registry_t
	if err := c.check(C.lk_registry_open(c.p, z, &opts, &p)); err != nil {
		return nil, err
	}
	r := &Registry{p, c}
	runtime.SetFinalizer(r, (*Registry).Close)
	return r, nil
}

func (r *Registry) Close() {
	if r.p != nil {
		C.lk_registry_close(r.p)
		r.p = nil
	}
}

// take copies a string lorakit handed over and frees it with lk_free.
func take(z *C.char) string {
	s := goString(z)
	C.lk_free(unsafe.Pointer(z))
	return s
}

func RelationName(rel int32) string { return goString(C.lk_registry_relation_name(C.int32_t(rel))) }

// AddOptions: parents, relation and parameters of a new version.
type AddOptions struct {
	Relation   int32
	Parents    []string
	ParamsJSON string // "" = none
	Operation  string // "" = "add"
}

// cstr is a C copy of s (nil for ""), added to a list freed by the caller.
func cstr(s string, keep *[]unsafe.Pointer) *C.char {
	if s == "" {
		return nil
	}
	z := C.CString(s)
	*keep = append(*keep, unsafe.Pointer(z))
	return z
}

// Add adds ad as the next version of name and returns its "NAME@N".
func (r *Registry) Add(name string, ad *Adapter, o AddOptions) (string, error) {
	var keep []unsafe.Pointer
	defer func() {
		for _, p := range keep {
			C.free(p)
		}
	}()
	var opts C.lk_registry_add_opts_t
	opts.struct_size = C.uint32_t(unsafe.Sizeof(opts))
	opts.relation = C.int32_t(o.Relation)
	if len(o.Parents) > 0 { // the array itself in C memory: it holds C pointers only
		arr := (**C.char)(C.calloc(C.size_t(len(o.Parents)), C.size_t(unsafe.Sizeof((*C.char)(nil)))))
		keep = append(keep, unsafe.Pointer(arr))
		ps := unsafe.Slice(arr, len(o.Parents))
		for i, p := range o.Parents {
			ps[i] = cstr(p, &keep)
		}
		opts.parents = arr
		opts.n_parents = C.uint32_t(len(o.Parents))
	}
	opts.params_json = cstr(o.ParamsJSON, &keep)
	opts.operation = cstr(o.Operation, &keep)
	zn := cstr(name, &keep)
	var ref *C.char
	err := r.ctx.check(C.lk_registry_add_adapter(r.p, zn, ad.p, &opts, &ref))
	runtime.KeepAlive(ad)
	if err != nil {
		return "", err
	}
	return take(ref), nil
}

func (r *Registry) Resolve(ref string) (string, error) {
	z := C.CString(ref)
	defer C.free(unsafe.Pointer(z))
	var out *C.char
	if err := r.ctx.check(C.lk_registry_resolve(r.p, z, &out)); err != nil {
		return "", err
	}
	return take(out), nil
}

// Get returns the version as a new adapter of the registry's context.
func (r *Registry) Get(ref string) (*Adapter, error) {
	z := C.CString(ref)
	defer C.free(unsafe.Pointer(z))
	var p *C.lk_adapter_t
	if err := r.ctx.check(C.lk_registry_get(r.p, z, &p)); err != nil {
		return nil, err
	}
	a := &Adapter{p, r.ctx}
	runtime.SetFinalizer(a, (*Adapter).Close)
	return a, nil
}

func (r *Registry) ShowJSON(ref string) (string, error) {
	z := C.CString(ref)
	defer C.free(unsafe.Pointer(z))
	var out *C.char
	if err := r.ctx.check(C.lk_registry_show(r.p, z, &out)); err != nil {
		return "", err
	}
	return take(out), nil
}

func (r *Registry) LineageJSON(ref string, direction int32, maxDepth uint32) (string, error) {
	z := C.CString(ref)
	defer C.free(unsafe.Pointer(z))
	var opts C.lk_registry_lineage_opts_t
	opts.struct_size = C.uint32_t(unsafe.Sizeof(opts))
	opts.direction = C.int32_t(direction)
	opts.max_depth = C.uint32_t(maxDepth)
	var out *C.char
	if err := r.ctx.check(C.lk_registry_lineage(r.p, z, &opts, &out)); err != nil {
		return "", err
	}
	return take(out), nil
}

// printJSON prints json with every "created" timestamp replaced by "*" (see host.c).
func printJSON(label, json string) {
	const key = `"created":"`
	var sb strings.Builder
	rest := json
	for {
		q := strings.Index(rest, key)
		if q < 0 {
			break
		}
		q += len(key)
		sb.WriteString(rest[:q])
		sb.WriteString("*")
		e := strings.IndexByte(rest[q:], '"')
		if e < 0 {
			rest = ""
			break
		}
		rest = rest[q+e:]
	}
	sb.WriteString(rest)
	fmt.Printf("%s %s\n", label, sb.String())
}

func registryScenario(ctx *Context, ad *Adapter, B []float32, dir string) error {
	reg, err := ctx.OpenRegistry(dir + "/registry.db")
	if err != nil {
		return err
	}
	defer reg.Close()
	ref1, err := reg.Add("ffi-demo", ad, AddOptions{})
	if err != nil {
		return err
	}
	fmt.Printf("registry add %s\n", ref1)
	B[0] += 1.0 / 32
	ref2, err := reg.Add("ffi-demo", ad, AddOptions{C.LK_REL_TRAINED_FROM, []string{ref1}, `{"steps":1}`, "train"})
	if err != nil {
		return err
	}
	fmt.Printf("registry add %s parent %s relation %s\n", ref2, ref1, RelationName(C.LK_REL_TRAINED_FROM))
	res, err := reg.Resolve("ffi-demo")
	if err != nil {
		return err
	}
	fmt.Printf("registry resolve ffi-demo %s\n", res)
	js, err := reg.LineageJSON(ref2, C.LK_LINEAGE_BOTH, 0)
	if err != nil {
		return err
	}
	printJSON("registry lineage", js)
	if js, err = reg.ShowJSON(ref1); err != nil {
		return err
	}
	printJSON("registry show", js)
	got, err := reg.Get(ref1)
	if err != nil {
		return err
	}
	defer got.Close()
	gA, gB, _, _, err := got.Weights(0)
	if err != nil {
		return err
	}
	fmt.Printf("registry get %s A fnv1a64 %016x B fnv1a64 %016x\n", ref1, fnv1a64(gA), fnv1a64(gB))
	return nil
}
