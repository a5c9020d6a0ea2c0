//go:build !lk_registry

// registry_none.go - the scenario's registry step where the library has no
// registry (built without -tags lk_registry).
package main

import "fmt"

func registryScenario(ctx *Context, ad *Adapter, B []float32, dir string) error {
	fmt.Println("registry: not in this build")
	return nil
}
