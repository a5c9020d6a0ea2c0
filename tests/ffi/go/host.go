// host.go - the FFI scenario (tests/ffi/README.md) through the cgo wrapper
// of lorakit.go. Prints exactly what host.c prints.
//
//	host_go CPU_PLUGIN REGISTRY_DIR
package main

import (
	"fmt"
	"math"
	"os"
	"strings"
)

const (
	M      = 3
	IN     = 16
	OUT    = 8
	RANK   = 4
	TARGET = "model.layers.0.self_attn.q_proj"
)

func fmtF32(v float32) string {
	return fmt.Sprintf("%.9g/0x%08x", float64(v), math.Float32bits(v))
}

func fnv1a64(p []float32) uint64 {
	h := uint64(0xcbf29ce484222325)
	for _, v := range p {
		u := math.Float32bits(v)
		for k := 0; k < 4; k++ { // little-endian, as the floats lie in memory on x86_64
			h = (h ^ uint64(byte(u>>(8*k)))) * 0x100000001b3
		}
	}
	return h
}

func printElems(label string, p []float32, idx ...int) {
	var sb strings.Builder
	sb.WriteString(label)
	for _, i := range idx {
		fmt.Fprintf(&sb, " [%d]=%s", i, fmtF32(p[i]))
	}
	fmt.Println(sb.String())
}

func scenario(cpuPlugin, registryDir string) error {
	maj, min := PluginABIVersion()
	fmt.Printf("lorakit %s plugin-abi %d.%d\n", VersionString(), maj, min)

	ctx, err := NewContext(true, 1)
	if err != nil {
		return err
	}
	defer ctx.Close()
	if err := ctx.LoadPlugin(cpuPlugin); err != nil {
		return err
	}
	plugins, err := ctx.Plugins()
	if err != nil {
		return err
	}
	comps, err := ctx.Components()
	if err != nil {
		return err
	}
	for _, p := range plugins {
		if !p.HasID || p.ID != "org.lorakit.cpu" {
			continue
		}
		fmt.Printf("plugin %s status %d abi %d.%d version %s components %d\n", p.ID, p.Status,
			p.ABIMajor, p.ABIMinor, p.Version, p.NComponents)
		for _, c := range comps {
			if c.PluginIndex == p.Index {
				fmt.Printf("component kind %d name %s\n", c.Kind, c.Name)
			}
		}
	}

	ad, err := ctx.CreateAdapter(RANK, 8, 0, 1234)
	if err != nil {
		return err
	}
	defer ad.Close()
	if err := ad.AddTarget(TARGET, IN, OUT, 0, 0); err != nil {
		return err
	}
	t := ad.Find(TARGET)
	ti, err := ad.Target(uint32(t))
	if err != nil {
		return err
	}
	fmt.Printf("target %d %s in %d out %d rank %d alpha %s scale %s\n", t, ti.Name, ti.InFeatures,
		ti.OutFeatures, ti.Rank, fmtF32(ti.Alpha), fmtF32(ti.Scale))
	A, B, sa, sb, err := ad.Weights(uint32(t))
	if err != nil {
		return err
	}
	fmt.Printf("A shape %d %d B shape %d %d\n", sa[0], sa[1], sb[0], sb[1])
	printElems("A[0][0..3]", A, 0, 1, 2, 3)
	fmt.Printf("A fnv1a64 %016x\n", fnv1a64(A))
	for i := range B {
		B[i] = float32((i*3)%11-5) / 32
	}

	be, err := ctx.OpenBackend("cpu")
	if err != nil {
		return err
	}
	defer be.Close()
	fmt.Printf("backend %s devices %d\n", be.Name(), be.DeviceCount())
	tx, err := NewTensorF32(M, IN)
	if err != nil {
		return err
	}
	defer tx.Close()
	tw, err := NewTensorF32(OUT, IN)
	if err != nil {
		return err
	}
	defer tw.Close()
	ty, err := NewTensorF32(M, OUT)
	if err != nil {
		return err
	}
	defer ty.Close()
	x, w, y := tx.Data(), tw.Data(), ty.Data()
	for i := range x {
		x[i] = float32((i*7)%17-8) / 8
	}
	for i := range w {
		w[i] = float32((i*5)%13-6) / 16
	}
	if err := be.Forward(ad, uint32(t), tx, tw, ty); err != nil {
		return err
	}
	printElems("forward y", y, 0, 11, 23)
	fmt.Printf("forward fnv1a64 %016x\n", fnv1a64(y))

	w0 := append([]float32(nil), w...)
	if err := be.Merge(ad, uint32(t), tw, 1); err != nil {
		return err
	}
	printElems("merge W", w, 0, 77, 127)
	fmt.Printf("merge fnv1a64 %016x\n", fnv1a64(w))
	if err := be.Unmerge(ad, uint32(t), tw, 1); err != nil {
		return err
	}
	printElems("unmerge W", w, 0, 77, 127)
	same := 0
	for i := range w {
		if math.Float32bits(w[i]) == math.Float32bits(w0[i]) {
			same++
		}
	}
	fmt.Printf("unmerge fnv1a64 %016x bit-identical %d/%d\n", fnv1a64(w), same, OUT*IN)

	di, err := be.Info()
	if err != nil {
		return err
	}
	fmt.Printf("device type %d unified_memory %d offset_align %d\n", di.Type, di.UnifiedMemory, di.OffsetAlign)
	xs := append([]float32(nil), x...)
	buf, err := be.Alloc(uint64(4*len(xs)), BufferHostVisible)
	if err != nil {
		return err
	}
	if err := buf.Upload(0, xs); err != nil {
		return err
	}
	back := make([]float32, len(xs)-4)
	if err := buf.Download(16, back); err != nil {
		return err
	}
	mapped, err := buf.ReadMapped(0, len(xs))
	if err != nil {
		return err
	}
	fmt.Printf("buffer bytes %d download[4..] fnv1a64 %016x map fnv1a64 %016x\n", buf.Size(), fnv1a64(back),
		fnv1a64(mapped))
	buf.Close()

	if none, err := ctx.OpenBackend("nosuch"); err != nil {
		e := err.(*Error)
		fmt.Printf("error backend nosuch: status %d (%s): %s\n", e.Status, Strerror(e.Status), e.Message)
	} else {
		none.Close()
		fmt.Println("error backend nosuch: no error")
	}
	if err := registryScenario(ctx, ad, B, registryDir); err != nil {
		return err
	}
	fmt.Println("done")
	return nil
}

func main() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: host_go CPU_PLUGIN REGISTRY_DIR")
		os.Exit(2)
	}
	if err := scenario(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "host_go:", err)
		os.Exit(1)
	}
}
