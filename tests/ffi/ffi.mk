# ffi.mk - included by tests/tests.mk: the FFI hosts (tests/ffi/README.md).
#
#   make ffi-tests   build every host whose toolchain is present into
#                    $(B)/ffi (built once, rebuilt only when a source or
#                    liblorakit changes), run each on the scenario and check
#                    that all print exactly what the C reference prints
#
# Toolchains are looked up once: RUSTC, GO, PYTHON3 (override with e.g.
# GO= to skip one). C and C++ are always built; warnings are errors.

FFI_DIR     := $(B)/ffi
ifeq ($(origin RUSTC),undefined)
  RUSTC     := $(shell command -v rustc 2>/dev/null)
endif
ifeq ($(origin GO),undefined)
  GO        := $(shell command -v go 2>/dev/null)
endif
ifeq ($(origin PYTHON3),undefined)
  PYTHON3   := $(shell command -v python3 2>/dev/null)
endif
FFI_CXX     := $(if $(filter clang%,$(notdir $(CC))),clang++,g++)
FFI_RPATH    = -Wl,-rpath,$(LK_BUILD_ABS)
# The scenario's registry step is built where the registry is: C and C++ test
# LK_REGISTRY_SCHEMA, Python looks for lk_registry_open, Rust and Go are told.
FFI_REGISTRY := $(if $(wildcard abi/lorakit_registry.h),1)
FFI_HOSTS   := $(FFI_DIR)/host_c $(FFI_DIR)/host_cpp $(if $(RUSTC),$(FFI_DIR)/host_rs) \
               $(if $(GO),$(FFI_DIR)/host_go)

$(FFI_DIR)/host_c: tests/ffi/host.c $(wildcard abi/*.h) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS) -L$(B) -llorakit $(FFI_RPATH)

$(FFI_DIR)/host_cpp: tests/ffi/host.cpp abi/lorakit.hpp $(wildcard abi/*.h) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(FFI_CXX) -std=c++17 $(OPT) -g -Wall -Wextra -Werror -pedantic -Wshadow -Iabi -o $@ $< \
	  $(LDFLAGS) -L$(B) -llorakit $(FFI_RPATH)

# rustc alone, no cargo and no crates; -D warnings as -Werror. (MAKEFLAGS
# unset: rustc would try make's jobserver, which is not passed to it.)
$(FFI_DIR)/host_rs: tests/ffi/host.rs tests/ffi/lorakit.rs tests/ffi/lorakit_registry.rs $(wildcard abi/*.h) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	env -u MAKEFLAGS -u MFLAGS $(RUSTC) --edition 2021 -D warnings -C opt-level=1 \
	  --check-cfg 'cfg(lk_registry)' $(if $(FFI_REGISTRY),--cfg lk_registry) \
	  -L native=$(LK_BUILD_ABS) -l dylib=lorakit -C link-arg=$(FFI_RPATH) -o $@ $<

# cgo; the build cache and GOPATH stay in $(B), the module has no
# dependencies and GOPROXY=off keeps it off the network.
$(FFI_DIR)/host_go: $(wildcard tests/ffi/go/*.go) tests/ffi/go/go.mod $(wildcard abi/*.h) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	cd tests/ffi/go && GOCACHE=$(abspath $(FFI_DIR))/gocache GOPATH=$(abspath $(FFI_DIR))/gopath \
	  GOPROXY=off GOFLAGS= CGO_ENABLED=1 CC="$(CC)" CGO_CFLAGS="-I$(abspath abi) -O2 -g" \
	  CGO_LDFLAGS="-L$(LK_BUILD_ABS) -llorakit $(FFI_RPATH)" $(GO) build $(if $(FFI_REGISTRY),-tags lk_registry) -o $(abspath $@) .

ffi-hosts: $(FFI_HOSTS)

# The clang build (tests.mk's test-build) compiles the C and C++ hosts too,
# so lorakit.hpp stays warning-free under clang++.
test-build: $(FFI_DIR)/host_c $(FFI_DIR)/host_cpp

ffi-tests: all $(FFI_HOSTS)
	@bash tests/ffi/run.sh $(B) "$(RUSTC)" "$(GO)" "$(PYTHON3)"

.PHONY: ffi-hosts ffi-tests
