# bench.mk - included by the Makefile: `make bench` builds and runs the
# benchmarks. Each prints `bench: NAME VALUE UNIT ratio=R vs REFERENCE` lines,
# the reference measured in the same run.
#
#   gemm_libs   OpenBLAS vs BLIS vs oneDNN (sgemm and bf16 matmul) vs lorakit's
#               own kernels (fp32, bf16) on the benchmark shapes (the
#               measurement behind the choice of GEMM), all on every core
#   gemm_eff    lorakit's own kernels on one core against that core's peak for
#               the same instructions (FMA, vdpbf16ps, tdpbf16ps), both in
#               thread CPU time: kernel efficiency that a busy machine does
#               not hide (bench_lora's wall-clock figures swing with the load)
#   bench_lora  the widest ISA's FMA and BF16-dot peaks, memcpy bandwidth, and
#               the LoRA linear layer on the cpu backend through the public API
#               (abi/lorakit.h), fp32 and bf16, against the backend's own two
#               GEMMs and PyTorch (bench/torch_lora.py, Debian's python3-torch,
#               run with OPENBLAS_CORETYPE unset for that command only)
#   bench_formats  reading a whole fixture model through lk_model_open/
#               lk_model_tensor_read vs a plain read() of the file (GB/s)
#   bench_engine  the engine (staged API) on the cpu backend: the core's time
#               per training step against the ops' time, and the LoRA layer
#               forward through a session against direct submission
#   bench_quant  per format: quantise/dequantise GB/s vs memcpy; quantised
#               MATMUL (1, 16, 512 tokens) on the cpu backend vs its f32 MATMUL
#   bench_tokenizer  encode/decode MB/s of the SentencePiece, tokenizer.json
#               and GGUF tokenizers (staged API) on ~4 MB of the fixture's
#               strings, one encode per line, vs memcpy
#   bench_train  a random 62M-parameter Llama written by the bench: LoRA
#               training step time (lk_x_train; f32, nf4 and q4_0 base) and its
#               model FLOP/s vs the FMA peak, vs PyTorch (bench/torch_llama.py);
#               greedy decode tokens/s with the KV cache vs the memory-bound
#               limit (weight bytes per token / memcpy bandwidth)
#   bench_registry  add/get of a 20 MiB adapter vs file write/read, list and
#               lineage latency with 10,000 versions (lk_registry_*)
#   bench_vulkan  the LoRA layer forward+backward (8192 x 4096 -> 4096, r16,
#               fp32) on the vulkan backend through the public API vs PyTorch
#               fp32 (TF32 off; TF32 on as the moonshot) on the same GPU
#               (bench/torch_vulkan_peer.py, CUDA events), results checked
#               against a double reference; one line and a skip without a
#               device. Args: [PLUGIN_DIR [T,IN,OUT,R [DEVICE [PEER [N]]]]]

BENCH_DIR  := $(B)/bench
BENCH_BINS := $(BENCH_DIR)/gemm_libs $(BENCH_DIR)/gemm_eff $(BENCH_DIR)/bench_lora
BENCH_BINS += $(BENCH_DIR)/bench_registry
BENCH_BINS += $(BENCH_DIR)/bench_formats
BENCH_BINS += $(BENCH_DIR)/bench_engine
BENCH_BINS += $(BENCH_DIR)/bench_attention
BENCH_BINS += $(BENCH_DIR)/bench_quant
BENCH_BINS += $(BENCH_DIR)/bench_tokenizer
BENCH_BINS += $(BENCH_DIR)/bench_train
BENCH_BINS += $(BENCH_DIR)/bench_vulkan
BENCH_CORES = $(shell nproc 2>/dev/null || echo 1)

.PHONY: bench-build
bench-build: $(BENCH_BINS)

# gemm_libs links the CPU backend's kernel layer directly (CPU_KERNEL_OBJ).
$(BENCH_DIR)/gemm_libs: bench/gemm_libs.c $(CPU_KERNEL_OBJ) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iplugins/cpu $(LDFLAGS) -o $@ $< $(CPU_KERNEL_OBJ) -ldl -lpthread -lm

$(BENCH_DIR)/gemm_eff: bench/gemm_eff.c $(CPU_KERNEL_OBJ) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iplugins/cpu $(LDFLAGS) -o $@ $< $(CPU_KERNEL_OBJ) -lpthread -lm

$(BENCH_DIR)/bench_lora: bench/bench_lora.c bench/bench_peak.h plugins/cpu/isa.c $(HEADERS) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -I$(BLAS_INC) -Iplugins/cpu $(LDFLAGS) -o $@ $< plugins/cpu/isa.c -L$(B) -llorakit \
	  -Wl,-rpath,'$$ORIGIN/..' -lopenblas -lpthread -lm

# Quantisers and quantised MATMUL through the public API; isa.c names the path.
$(BENCH_DIR)/bench_quant: bench/bench_quant.c plugins/cpu/isa.c $(HEADERS) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iplugins/cpu $(LDFLAGS) -o $@ $< plugins/cpu/isa.c -L$(B) -llorakit \
	  -Wl,-rpath,'$$ORIGIN/..' -ldl -lm

$(BENCH_DIR)/bench_engine: bench/bench_engine.c $(HEADERS) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -L$(B) -llorakit -Wl,-rpath,'$$ORIGIN/..' -lm

# Tokenizer encode/decode MB/s on the fixture's strings vs memcpy (staged API).
$(BENCH_DIR)/bench_tokenizer: bench/bench_tokenizer.c $(HEADERS) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -L$(B) -llorakit -Wl,-rpath,'$$ORIGIN/..' -ljansson

$(BENCH_DIR)/bench_registry: bench/bench_registry.c $(HEADERS) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -L$(B) -llorakit -Wl,-rpath,'$$ORIGIN/..' -ljansson -lsqlite3

$(BENCH_DIR)/bench_formats: bench/bench_formats.c $(HEADERS) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -L$(B) -llorakit -Wl,-rpath,'$$ORIGIN/..'

# The cpu backend's fused attention, built from its sources (not the ABI).
$(BENCH_DIR)/bench_attention: bench/bench_attention.c $(wildcard plugins/cpu/nn*.c) plugins/cpu/pool.c \
    $(wildcard plugins/cpu/*.h) $(HEADERS) $(CPU_KERNEL_OBJ) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Iplugins/common -I$(BLAS_INC) $(LDFLAGS) -o $@ $< $(wildcard plugins/cpu/nn*.c) \
	  plugins/cpu/pool.c $(CPU_KERNEL_OBJ) -lopenblas -lpthread -lm

# Training and decode of a Llama: the core objects linked in (llm_kv_* has no
# public API yet), as tests/tests.mk does for test_llm; isa.c for the peak.
$(BENCH_DIR)/bench_train: bench/bench_train.c bench/bench_peak.h plugins/cpu/isa.c $(wildcard core/*.h) $(HEADERS) \
    $(CORE_OBJ) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DLORAKIT_STAGING -Icore -Iplugins/cpu $(LDFLAGS) -o $@ $< plugins/cpu/isa.c $(CORE_OBJ) \
	  -ljansson -lsqlite3 -lz -lcrypto -ldl -lpthread -lm

# The LoRA layer on the vulkan backend vs PyTorch CUDA (public API only).
$(BENCH_DIR)/bench_vulkan: bench/bench_vulkan.c $(HEADERS) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< -L$(B) -llorakit -Wl,-rpath,'$$ORIGIN/..' -lm

# BLIS's OpenMP build and oneDNN default to their own thread counts: give
# every library all cores so the comparison is like for like.
# The GEMM libraries gemm_libs compares with OpenBLAS (run-time libraries
# only: it dlopens them, and says so when one is missing).
BENCH_PKGS := libblis4-openmp libdnnl2 python3-torch
$(B)/.bench-bootstrap: | $(B)/.bootstrap
	$(call deb_install,$(BENCH_PKGS),the benchmarks)
	@touch $@

bench: all $(BENCH_BINS) $(B)/.bench-bootstrap
	BLIS_NUM_THREADS=$(BENCH_CORES) OMP_NUM_THREADS=$(BENCH_CORES) $(BENCH_DIR)/gemm_libs
	$(BENCH_DIR)/gemm_eff
	$(BENCH_DIR)/bench_lora $(CPU_PLUG) bench/torch_lora.py
	$(BENCH_DIR)/bench_formats $(B)/plugins
	$(BENCH_DIR)/bench_engine $(CPU_PLUG)
	$(BENCH_DIR)/bench_registry
	$(BENCH_DIR)/bench_attention
	$(BENCH_DIR)/bench_quant $(B)/plugins
	LK_FIXTURES=$(LK_FIXTURES) $(BENCH_DIR)/bench_tokenizer
	$(BENCH_DIR)/bench_train $(abspath $(B)/plugins) bench/torch_llama.py
	$(BENCH_DIR)/bench_vulkan $(abspath $(B)/plugins) $(or $(VK_BENCH_SHAPE),-) $(or $(VK_BENCH_DEVICE),-) bench/torch_vulkan_peer.py
