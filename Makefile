# lorakit - the one build entry.
#
#   make              build liblorakit, the plugins and the CLI into build/
#   make test         unit tests, then the same suites under ASan+UBSan, a
#                     clang build, and the SDK example built from an install
#   make bench        benchmarks (figures with their ratio to a peer)
#   make demo         the mission: QLoRA of examples/tiny-llama on bofh-excuses (examples/demo.sh)
#   make install PREFIX=/usr/local
#   make clean
#
# Missing Debian packages are installed by `make bootstrap` (run automatically).

CC       ?= gcc
B        ?= build
PREFIX   ?= /usr/local
SAN      ?=
OPT      ?= -O2

VERSION  := 2.0.0
SOMAJOR  := 2

BLAS_INC := /usr/include/x86_64-linux-gnu/openblas-pthread
WARN     := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS_BASE := -std=c11 $(OPT) -g -fPIC -D_GNU_SOURCE $(WARN) -Iabi
ifeq ($(SAN),1)
  CFLAGS_BASE += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
  LDSAN := -fsanitize=address,undefined
endif
CFLAGS   := $(CFLAGS_BASE) $(EXTRA_CFLAGS)
LDFLAGS  := $(LDSAN) $(EXTRA_LDFLAGS)

# Debian packages the build and tests need (the GEMM library: OpenBLAS, see README).
DEB_PKGS := libsqlite3-dev zlib1g-dev check libjansson-dev liblapacke-dev libssl-dev \
            pkg-config libopenblas-dev abigail-tools clang libclang-rt-dev golang-go
# The demo's and test_train_data's corpus (/usr/share/games/fortunes/bofh-excuses).
DEB_PKGS += fortunes-bofh-excuses
# The Vulkan backend (plugins/vulkan): loader and headers, the shader compiler, lavapipe for its tests.
DEB_PKGS += libvulkan-dev glslc mesa-vulkan-drivers

CORE_SRC := $(wildcard core/*.c) $(wildcard registry/*.c)
CORE_OBJ := $(CORE_SRC:%.c=$(B)/obj/%.o)
CLI_SRC  := $(wildcard cli/*.c)
CLI_OBJ  := $(CLI_SRC:%.c=$(B)/obj/%.o)
# Every folder plugins/NAME/ (but plugins/common/, shared sources) is one
# plugin, build/plugins/lorakit-NAME.so; PLUGIN_LIBS_NAME are its link flags.
PLUGINS  := $(filter-out common,$(notdir $(patsubst %/,%,$(wildcard plugins/*/))))
# The cpu plugin runs its own GEMM kernels (plugins/cpu/gemm*.c): no BLAS.
PLUGIN_LIBS_cpu := -ldl -lpthread -lm
PLUGIN_LIBS_load-gguf := -ljansson
PLUGIN_LIBS_load-safetensors := -ljansson -lm
PLUGIN_LIBS_quant-ggml := -lm
PLUGIN_LIBS_quant-basic := -lm
PLUGIN_LIBS_quant-nf4 := -lm -lpthread
HEADERS  := $(wildcard abi/*.h) $(wildcard core/*.h) $(wildcard plugins/*/*.h)

LIB      := $(B)/liblorakit.so.$(VERSION)
LIBSO    := $(B)/liblorakit.so.$(SOMAJOR)
CPU_PLUG := $(B)/plugins/lorakit-cpu.so
PLUGIN_SOS := $(PLUGINS:%=$(B)/plugins/lorakit-%.so)
CLI      := $(B)/lorakit

.PHONY: all bootstrap test unit-tests sanitize clang-build sdk-test bench demo install clean fuzz
all: $(B)/.bootstrap $(LIB) $(PLUGIN_SOS) $(CLI)

# ---- bootstrap: install missing Debian packages ---------------------------
# $(call deb_install,PACKAGES,WHAT): install those of PACKAGES not yet installed.
define deb_install
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "bootstrap: installing Debian packages for $(2):$$missing"; \
	  SUDO=; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
	    || { echo "bootstrap: apt-get failed; install by hand:$$missing" >&2; exit 1; }; \
	else echo "bootstrap: all packages for $(2) present"; fi
endef
$(B)/.bootstrap:
	@mkdir -p $(B)
	$(call deb_install,$(DEB_PKGS),the build and tests)
	@touch $@
bootstrap: $(B)/.bootstrap

# ---- objects ----------------------------------------------------------------
$(B)/obj/core/%.o: core/%.c $(HEADERS) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fvisibility=hidden -DLK_BUILDING_LIB -c $< -o $@
$(B)/obj/registry/%.o: registry/%.c $(HEADERS) $(wildcard registry/*.h) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fvisibility=hidden -DLK_BUILDING_LIB -Icore -c $< -o $@
$(B)/obj/cli/%.o: cli/%.c $(HEADERS) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@
$(B)/obj/plugins/%.o: plugins/%.c $(HEADERS) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fvisibility=hidden -Iplugins/common -c $< -o $@

# The CPU backend's ISA kernels: only these files get ISA flags; isa.c picks
# one at run time, so the plugin still runs on AVX2-only and older CPUs.
CPU_ISA_FLAGS_gemm_avx2   := -mavx2 -mfma
CPU_ISA_FLAGS_gemm_avx512 := -mavx2 -mfma -mavx512f -mavx512bw -mavx512vl -mavx512dq
CPU_ISA_FLAGS_gemm_bf16   := $(CPU_ISA_FLAGS_gemm_avx512) -mavx512bf16
CPU_ISA_FLAGS_gemm_amx    := $(CPU_ISA_FLAGS_gemm_bf16) -mamx-tile -mamx-bf16
CPU_ISA_KERNELS := gemm_avx2 gemm_avx512 gemm_bf16 gemm_amx
$(foreach f,$(CPU_ISA_KERNELS),$(eval $(B)/obj/plugins/cpu/$(f).o: CFLAGS += $(CPU_ISA_FLAGS_$(f))))
# ISA kernel files of the quantiser plugins (fused kernels, lk.quant.cpu/1):
# NAME_avx2.c and NAME_avx512.c get their path's flags, as the cpu plugin's do,
# and F16C (the f16 block scales; every AVX2 CPU has it, and the paths check).
QUANT_ISA_SRC := $(wildcard plugins/quant-*/*_avx2.c plugins/quant-*/*_avx512.c)
$(foreach f,$(QUANT_ISA_SRC),$(eval $(B)/obj/$(f:%.c=%.o): CFLAGS += \
  $(if $(filter %_avx512.c,$(f)),$(CPU_ISA_FLAGS_gemm_avx512) -mf16c,$(CPU_ISA_FLAGS_gemm_avx2) -mf16c)))
# The K-quant reference quantisers choose scales by comparing f32 sums: no
# FMA contraction, as in llama.cpp's ggml-base (-march=native via
# EXTRA_CFLAGS would otherwise fuse them in gcc's default mode).
$(B)/obj/plugins/quant-ggml/gq_kquants.o: CFLAGS += -ffp-contract=off
# The kernel layer alone (tests/test_isa.c and bench/gemm_libs.c link it directly).
CPU_KERNEL_SRC := plugins/cpu/isa.c plugins/cpu/gemm.c plugins/cpu/cvt.c plugins/cpu/gemm_portable.c \
                  $(CPU_ISA_KERNELS:%=plugins/cpu/%.c)
CPU_KERNEL_OBJ := $(CPU_KERNEL_SRC:%.c=$(B)/obj/%.o)

# ---- liblorakit: soname, only lk_ symbols exported ----------------------------
$(LIB): $(CORE_OBJ) core/liblorakit.map
	$(CC) -shared -Wl,-soname,liblorakit.so.$(SOMAJOR) -Wl,--version-script=core/liblorakit.map \
	  -Wl,--no-undefined $(LDFLAGS) -o $@ $(CORE_OBJ) -ljansson -lsqlite3 -lz -lcrypto -ldl -lpthread -lm
	ln -sf liblorakit.so.$(VERSION) $(LIBSO)
	ln -sf liblorakit.so.$(VERSION) $(B)/liblorakit.so

# ---- plugins: one .so each, one exported symbol -------------------------------
define plugin_rule
$(B)/plugins/lorakit-$(1).so: $(patsubst %.c,$(B)/obj/%.o,$(wildcard plugins/$(1)/*.c)) plugins/plugin.map
	@mkdir -p $$(dir $$@)
	$$(CC) -shared -Wl,--version-script=plugins/plugin.map -Wl,--no-undefined $$(LDFLAGS) \
	  -o $$@ $$(filter %.o,$$^) $$(PLUGIN_LIBS_$(1))
endef
$(foreach p,$(filter-out vulkan,$(PLUGINS)),$(eval $(call plugin_rule,$(p))))
-include plugins/vulkan/vulkan.mk

# ---- CLI ------------------------------------------------------------------------
# `lorakit rank` opens liblapacke (liblapacke-dev) with dlopen when it runs:
# linked, its OpenBLAS would start threads in every command (cli/cmd_rank.c).
$(CLI): $(CLI_OBJ) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) -L$(B) -llorakit -Wl,-rpath,'$$ORIGIN:$$ORIGIN/../lib' -ljansson -ldl -lm

# ---- tests --------------------------------------------------------------------------
include tests/tests.mk

# ---- benchmarks ------------------------------------------------------------------------
include bench/bench.mk

DEMO := $(B)/examples/demo
$(DEMO): examples/demo/demo.c $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< -L$(B) -llorakit -Wl,-rpath,'$$ORIGIN/..' -lm

demo: all $(DEMO)
	@echo "== lorakit plugins"; $(CLI) plugins
	@echo; echo "== LoRA forward and merge/unmerge round trip (random tensors)"; LORAKIT_PLUGIN_PATH=$(abspath $(B))/plugins $(DEMO)
	@sh examples/demo.sh $(B)

install: all
	install -d $(DESTDIR)$(PREFIX)/include/lorakit $(DESTDIR)$(PREFIX)/lib/lorakit/plugins \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/bin
	install -m 644 abi/*.h $(DESTDIR)$(PREFIX)/include/lorakit/
	install -m 644 abi/lorakit.hpp $(DESTDIR)$(PREFIX)/include/lorakit/
	install -d $(DESTDIR)$(PREFIX)/share/lorakit/examples/plugin-skeleton
	install -m 644 examples/plugin-skeleton/Makefile examples/plugin-skeleton/skeleton.c \
	  $(DESTDIR)$(PREFIX)/share/lorakit/examples/plugin-skeleton/
	install -m 755 $(LIB) $(DESTDIR)$(PREFIX)/lib/
	ln -sf liblorakit.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/liblorakit.so.$(SOMAJOR)
	ln -sf liblorakit.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/liblorakit.so
	install -m 755 $(B)/plugins/*.so $(DESTDIR)$(PREFIX)/lib/lorakit/plugins/
	install -m 755 $(CLI) $(DESTDIR)$(PREFIX)/bin/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' lorakit.pc.in \
	  > $(DESTDIR)$(PREFIX)/lib/pkgconfig/lorakit.pc

clean:
	rm -rf build build-asan build-clang
