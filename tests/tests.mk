# tests.mk - included by the Makefile (owned by the tests work).
#
#   make unit-tests    build and run every Check suite in $(B) (and the
#                      header checks); non-zero exit on any failure
#   make test          all, unit-tests, the CLI cases, the suites again under
#                      ASan+UBSan (B=build-asan), a clang build
#                      (B=build-clang), then the SDK example from an install
#   make sanitize | clang-build | cli-tests | sdk-test   one step of `test`
#   make cli-formats-tests | fuzz-test   the CLI on the reference fixtures and
#                      the bounded fuzz runs (tests/fuzz/fuzz.mk), steps of `test`
#   make ffi-tests | abi-check | abi-gate-test | abi-compat
#                      the FFI hosts and the ABI gates (tests/ffi/ffi.mk,
#                      tests/abi/abi.mk), also steps of `test`
#
# Suites find the build through LK_BUILD_DIR (absolute). Test binaries live
# in $(B)/tests/bin, so that "plugins/ next to the executable" discovery does
# not pick up the deliberately broken plugins in $(B)/tests/plugins.

CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null) -include tests/check_fast.h
CHECK_LIBS   := $(shell pkg-config --libs check 2>/dev/null)
LK_BUILD_ABS  = $(abspath $(B))
# Suites run TEST_JOBS at a time (each one's output printed whole when it ends).
TEST_JOBS    ?= 2

TEST_SUITES  := abi core plugins hosts lora backend ops
TEST_SUITES  += registry registry_files registry_fidelity
TEST_SUITES  += formats badinput model_ops model_quant quant quant_k quant_basic quant_nf4 quant_fused dora
TEST_SUITES  += engine gpusim isa
TEST_SUITES  += train_data
TEST_SUITES  += tokenizer
TEST_SUITES  += llm
TEST_SUITES  += generate
TEST_SUITES  += vulkan
TEST_BINS    := $(TEST_SUITES:%=$(B)/tests/bin/test_%)
# The longest suites start first (two run at a time: the last to start should be short).
TEST_SLOW    := quant_fused llm quant ops_nn generate model_quant quant_nf4 quant_k isa engine
TEST_RUN_ORDER = $(filter $(TEST_SLOW:%=$(B)/tests/bin/test_%),$(TEST_BINS)) \
                 $(filter-out $(TEST_SLOW:%=$(B)/tests/bin/test_%),$(TEST_BINS))
TEST_HDRS    := tests/check_fast.h tests/test_util.h tests/test_tok_ref.h tests/plugins/tp_ext.h tests/plugins/tp_common.h

# Test plugins: lorakit-NAME.so from tests/plugins/SRC.c with extra flags.
TP_DIR       := $(B)/tests/plugins
TP_NAMES     := bad-nosym bad-abi3 bad-abi1 bad-size bad-duptwin bad-dupquant \
                bad-init bad-entry bad-nullout bad-dupcount test-count test-minor test-two \
                test-tail test-dupcpu test-variant5 test-variant9 test-variantneg
TP_SOS       := $(TP_NAMES:%=$(TP_DIR)/lorakit-%.so)
TP_SRC_bad-nosym    := bad_nosym
TP_SRC_bad-abi3     := bad_abi
TP_DEF_bad-abi3     := -DTP_ABI_MAJOR=3 -DTP_ABI_MINOR=0
TP_SRC_bad-abi1     := bad_abi
TP_DEF_bad-abi1     := -DTP_ABI_MAJOR=1 -DTP_ABI_MINOR=9
TP_SRC_bad-size     := bad_size
TP_SRC_test-tail    := test_tail
TP_SRC_test-dupcpu  := test_dupcpu
TP_SRC_bad-dupquant := bad_dupquant
TP_SRC_test-variant5   := test_variant
TP_DEF_test-variant5   := -DTP_VARIANT_SCORE=5 -DTP_VARIANT_ID='"org.lorakit.test.variant5"'
TP_SRC_test-variant9   := test_variant
TP_DEF_test-variant9   := -DTP_VARIANT_SCORE=9 -DTP_VARIANT_ID='"org.lorakit.test.variant9"'
TP_SRC_test-variantneg := test_variant
TP_DEF_test-variantneg := -DTP_VARIANT_SCORE=-1 -DTP_VARIANT_ID='"org.lorakit.test.variantneg"'
TP_SRC_bad-duptwin  := bad_duptwin
TP_SRC_bad-init     := bad_init
TP_SRC_bad-entry    := bad_entry
TP_DEF_bad-entry    := -DTP_ENTRY_MODE=1
TP_SRC_bad-nullout  := bad_entry
TP_DEF_bad-nullout  := -DTP_ENTRY_MODE=2
TP_SRC_bad-dupcount := test_count
TP_DEF_bad-dupcount := -DTP_COUNT_TWIN
TP_SRC_test-count   := test_count
TP_SRC_test-minor   := test_minor
TP_SRC_test-two     := test_two

# Plugins see only abi/ (CFLAGS carries -Iabi and nothing else) and export
# one symbol by visibility.
define tp_rule
$(TP_DIR)/lorakit-$(1).so: tests/plugins/$(TP_SRC_$(1)).c $(TEST_HDRS) $(wildcard abi/*.h) | $(B)/.bootstrap
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS) -fPIC -fvisibility=hidden $(TP_DEF_$(1)) -shared $$(LDFLAGS) -o $$@ $$<
endef
$(foreach n,$(TP_NAMES),$(eval $(call tp_rule,$(n))))

# gpusim: the GPU-like test backend (tests/plugins/gpusim.c), arithmetic
# from the double-precision references in tests/ref.
REF_SRC      := tests/ref/ref.c tests/ref/ref_linear.c tests/ref/ref_nn.c
GPUSIM_SO    := $(TP_DIR)/lorakit-gpusim.so
$(GPUSIM_SO): tests/plugins/gpusim.c tests/plugins/gpusim.h $(REF_SRC) tests/ref/ref.h $(wildcard abi/*.h) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -fvisibility=hidden -Iplugins/common -Itests/ref -shared $(LDFLAGS) \
	  -Wl,--no-undefined -o $@ tests/plugins/gpusim.c $(REF_SRC) -lpthread -lm
TP_SOS       += $(GPUSIM_SO)

# toyquant: a two-part test quantiser (tests/plugins/toyquant.c).
# exit-ctor: a backend plugin that exits(0) when mapped, in a folder of its
# own (lazy loading tests, test_hosts.c).
EXIT_SO      := $(B)/tests/exitplug/lorakit-test-exit.so
$(EXIT_SO): tests/plugins/exit_ctor.c | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -fvisibility=hidden -shared $(LDFLAGS) -o $@ $<
TP_SOS       += $(EXIT_SO)

TOYQ_SO      := $(TP_DIR)/lorakit-toyquant.so
$(TOYQ_SO): tests/plugins/toyquant.c $(wildcard abi/*.h) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fPIC -fvisibility=hidden -shared $(LDFLAGS) -Wl,--no-undefined -o $@ $< -lm
TP_SOS       += $(TOYQ_SO)

# The engine suite uses the staged API and gpusim's counters extension.
$(B)/tests/bin/test_engine: tests/test_engine.c tests/test_engine_more.h tests/test_engine_rec.h tests/plugins/gpusim.h $(TEST_HDRS) \
    $(wildcard abi/*.h) $(LIB) $(GPUSIM_SO) $(TOYQ_SO) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -DLORAKIT_STAGING -Itests/plugins -o $@ $< $(LDFLAGS) -L$(B) -llorakit \
	  -Wl,-rpath,$(LK_BUILD_ABS) $(CHECK_LIBS) -ldl -lm

# The trainer's data side (tests/test_train_data.c): its core objects are
# linked in directly (their symbols are hidden in liblorakit.so).
TD_CORE_OBJ := $(addprefix $(B)/obj/core/,train_st.o train_data.o train_batch.o train_sched.o train_ckpt.o \
                 train_signal.o sample.o)
$(B)/tests/bin/test_train_data: tests/test_train_data.c $(TD_CORE_OBJ) $(wildcard core/train_*.h) core/sample.h \
    | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -Icore -o $@ $< $(TD_CORE_OBJ) $(LDFLAGS) $(CHECK_LIBS) -ljansson -lcrypto -lm
# Generation and evaluation (core/generate.c, eval.c): links the core objects
# (the naive reference loop calls the internal llm_logits).
$(B)/tests/bin/test_generate: tests/test_generate.c tests/test_fmt_util.h $(TEST_HDRS) \
    $(wildcard abi/*.h) $(wildcard core/*.h) $(CORE_OBJ) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -DLORAKIT_STAGING -Icore -o $@ $< $(CORE_OBJ) $(LDFLAGS) \
	  $(CHECK_LIBS) -ljansson -lsqlite3 -lz -lcrypto -ldl -lpthread -lm
# The Llama model and trainer (core/llm*.c): internal llm_* symbols, so the
# suite links the core objects directly; reads the fixtures (LK_FIXTURES).
$(B)/tests/bin/test_llm: tests/test_llm.c tests/test_llm_train.h tests/test_llm_fd.h tests/test_llm_ref.h tests/test_fmt_util.h $(TEST_HDRS) \
    $(wildcard abi/*.h) $(wildcard core/*.h) $(CORE_OBJ) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -DLORAKIT_STAGING -Icore -o $@ $< $(CORE_OBJ) $(LDFLAGS) \
	  $(CHECK_LIBS) -ljansson -lsqlite3 -lz -lcrypto -ldl -lpthread -lm

# The references on hand-computed cases (linked in) and gpusim's contract.
$(B)/tests/bin/test_gpusim: tests/test_gpusim.c $(REF_SRC) tests/ref/ref.h tests/plugins/gpusim.h $(TEST_HDRS) \
    $(wildcard abi/*.h) $(LIB) $(GPUSIM_SO) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -Itests/ref -Itests/plugins -o $@ $< $(REF_SRC) $(LDFLAGS) -L$(B) -llorakit \
	  -Wl,-rpath,$(LK_BUILD_ABS) $(CHECK_LIBS) -ldl -lm

$(B)/tests/bin/test_%: tests/test_%.c $(TEST_HDRS) $(wildcard abi/*.h) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -o $@ $< $(LDFLAGS) -L$(B) -llorakit \
	  -Wl,-rpath,$(LK_BUILD_ABS) $(CHECK_LIBS) -ldl -lm

# The registry suites read the library's JSON (jansson) and build and damage
# registry files with SQLite directly.
$(B)/tests/bin/test_registry $(B)/tests/bin/test_registry_files $(B)/tests/bin/test_registry_fidelity: $(B)/tests/bin/test_%: tests/test_%.c \
    tests/test_registry.h $(TEST_HDRS) $(wildcard abi/*.h) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -o $@ $< $(LDFLAGS) -L$(B) -llorakit \
	  -Wl,-rpath,$(LK_BUILD_ABS) $(CHECK_LIBS) -ljansson -lsqlite3 -ldl -lm

# The CPU backend's kernel layer: test_isa links the kernel objects
# (CPU_KERNEL_OBJ, with their per-file ISA flags) directly, and liblorakit for
# the bf16 compute path through the public API.
$(B)/tests/bin/test_isa: tests/test_isa.c $(CPU_KERNEL_OBJ) $(TEST_HDRS) $(wildcard abi/*.h) \
    $(wildcard plugins/cpu/*.h) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -Iplugins/cpu -o $@ $< $(CPU_KERNEL_OBJ) $(LDFLAGS) -L$(B) -llorakit \
	  -Wl,-rpath,$(LK_BUILD_ABS) $(CHECK_LIBS) -lpthread -ldl -lm

# The file-format suites (test_formats.c, test_badinput.c) also need jansson
# and libcrypto, and read the reference fixtures from LK_FIXTURES
# (../shared/fixtures beside the repository; without it they print SKIP).
LK_FIXTURES ?= $(abspath ../shared/fixtures)
export LK_FIXTURES
FMT_SUITES   := formats badinput model_ops model_quant quant quant_k quant_basic quant_nf4 dora
FMT_SUITES   += tokenizer
$(B)/tests/bin/test_quant_nf4: tests/test_quant_nf4_more.h tests/test_quant_nf4_files.h
$(FMT_SUITES:%=$(B)/tests/bin/test_%): $(B)/tests/bin/test_%: tests/test_%.c tests/test_fmt_util.h $(TEST_HDRS) \
  $(wildcard abi/*.h) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -o $@ $< $(LDFLAGS) -L$(B) -llorakit \
	  -Wl,-rpath,$(LK_BUILD_ABS) $(CHECK_LIBS) -ljansson -lcrypto -ldl -lm

# The ops suite (tests/test_ops.c, test_ops_lora.c, helpers in test_ops.h)
# links the naive double-precision references of tests/ref.
OPS_REF_SRC  := $(wildcard tests/ref/*.c)
$(B)/tests/bin/test_ops: tests/test_ops.c tests/test_ops_lora.c tests/test_ops.h $(OPS_REF_SRC) tests/ref/ref.h \
  $(TEST_HDRS) $(wildcard abi/*.h) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -Itests -Itests/ref -o $@ tests/test_ops.c tests/test_ops_lora.c $(OPS_REF_SRC) \
	  $(LDFLAGS) -L$(B) -llorakit -Wl,-rpath,$(LK_BUILD_ABS) $(CHECK_LIBS) -ldl -lm

# The transformer ops of the cpu backend (test_ops_nn.c), built from their
# sources and the references, not through the plugin ABI. Until
# tests/ref/ref.c exists, test_nn_util.h stands in for its helpers.
NN_SRC := $(wildcard plugins/cpu/nn*.c) plugins/cpu/pool.c
NN_REF := $(if $(wildcard tests/ref/ref.c),$(wildcard tests/ref/*.c),tests/ref/ref_nn.c)
NN_DEF := $(if $(wildcard tests/ref/ref.c),,-DNN_REF_STANDIN)
$(B)/tests/bin/test_ops_nn: tests/test_ops_nn.c tests/test_nn_util.h $(NN_SRC) $(NN_REF) \
    tests/ref/ref.h $(wildcard plugins/cpu/*.h) $(wildcard abi/*.h) $(CPU_KERNEL_OBJ) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(CHECK_CFLAGS) -Iplugins/common $(NN_DEF) -o $@ $< $(NN_SRC) \
	  $(NN_REF) $(CPU_KERNEL_OBJ) $(LDFLAGS) $(CHECK_LIBS) -lpthread -lm
TEST_BINS += $(B)/tests/bin/test_ops_nn

# libFuzzer targets: make fuzz, make fuzz-test (a step of `test`).
include tests/fuzz/fuzz.mk

# ---- header checks: C11 and C++17, strict ------------------------------------
HDR_STRICT := -Wall -Wextra -Werror -pedantic -Iabi
$(B)/tests/header_check_c.o: tests/header_check.c $(wildcard abi/*.h) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) -std=c11 $(HDR_STRICT) -c $< -o $@
$(B)/tests/header_check_cpp.o: tests/header_check.cpp $(wildcard abi/*.h) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(if $(filter clang%,$(notdir $(CC))),clang++,g++) -std=c++17 $(HDR_STRICT) -c $< -o $@
.PHONY: header-check
header-check: $(B)/tests/header_check_c.o $(B)/tests/header_check_cpp.o

# ---- FFI hosts (C, C++, Rust, Go, Python) and the ABI gates ---------------------
include tests/ffi/ffi.mk
include tests/abi/abi.mk

# ---- unit-tests ------------------------------------------------------------------
# Every suite runs even when an earlier one fails; the exit status says
# whether all passed. Each public header must also compile on its own.
unit-tests: all header-check $(TEST_BINS) $(TP_SOS)
	@fail=0; \
	bash tests/header_alone.sh "$(CC)" || fail=1; \
	bash tests/check_exports.sh $(B) || fail=1; \
	bash tests/check_thread_tags.sh || fail=1; \
	bash tests/abi/staging_test.sh $(B) "$(CC)" || fail=1; \
	printf '%s\n' $(TEST_RUN_ORDER) | LK_BUILD_DIR=$(LK_BUILD_ABS) CK_DEFAULT_TIMEOUT=$${CK_DEFAULT_TIMEOUT:-60} \
	  xargs -P$(TEST_JOBS) -I{} sh -c '{} > {}.log 2>&1; rc=$$?; cat {}.log; \
	    [ $$rc = 0 ] || echo "FAILED: {}"; exit $$rc' || fail=1; \
	if [ $$fail = 0 ]; then echo "unit-tests: all passed ($(B))"; else echo "unit-tests: FAILURES ($(B))"; fi; \
	exit $$fail

# ---- the rest of `make test` ----------------------------------------------------------
cli-tests: all
	@bash tests/test_cli.sh $(B)

# inspect/convert/merge/unmerge on the reference fixtures, the CLI under
# memory limits and signals (test_safe_io.sh), then the hostile inputs of
# tests/hostile/ (refused within 2 s and 256 MB) (SKIP without fixtures).
cli-formats-tests: all
	@fail=0; bash tests/test_formats_cli.sh $(B) || fail=1; \
	bash tests/test_tok_cli.sh $(B) || fail=1; \
	bash tests/test_safe_io.sh $(B) || fail=1; \
	bash tests/hostile/run.sh $(B) || fail=1; exit $$fail

# `lorakit train` on the fixtures (SKIP without them), run with cli-formats-tests.
train-cli-tests: all
	@bash tests/test_train_cli.sh $(B)
	@bash tests/test_train_data_cli.sh $(B)
cli-formats-tests: train-cli-tests
.PHONY: train-cli-tests

sanitize:
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 LK_TEST_QUICK=1 \
	  $(MAKE) --no-print-directory -j2 B=build-asan SAN=1 unit-tests

# The suites and test plugins are compiled by clang too (not run; -O0: warnings
# and compile errors are what it checks, and it is quicker).
test-build: all header-check $(TEST_BINS) $(TP_SOS)

clang-build:
	$(MAKE) --no-print-directory -j2 B=build-clang CC=clang OPT=-O0 all test-build

sdk-test: all
	@bash tests/test_sdk.sh $(B) "$(MAKE)"

test: all
	@fail=""; t0=$$(date +%s); \
	for s in unit-tests cli-tests sanitize clang-build sdk-test ffi-tests abi-check abi-gate-test abi-compat cli-formats-tests fuzz-test; do \
	  t=$$(date +%s); j=; [ $$s = unit-tests ] && j=-j2; \
	  $(MAKE) --no-print-directory $$j $$s || fail="$$fail $$s"; \
	  echo "make test: step $$s took $$(( $$(date +%s) - t )) s"; \
	done; \
	echo "make test: $$(( $$(date +%s) - t0 )) s in all"; \
	if [ -n "$$fail" ]; then echo "make test: FAILED:$$fail"; exit 1; fi; \
	echo "make test: all steps passed"

.PHONY: cli-formats-tests
.PHONY: unit-tests cli-tests sanitize clang-build test-build sdk-test test
