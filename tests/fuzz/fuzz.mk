# fuzz.mk - included by tests/tests.mk: the libFuzzer targets of tests/fuzz/.
#
#   make fuzz        build each target (clang -fsanitize=fuzzer,address,undefined)
#                    into $(B)/fuzz/fuzz_NAME
#   make fuzz-test   build them, then run each for FUZZ_TIME seconds (default 12,
#                    both at once on two cores), seeded with the committed corpus
#                    tests/fuzz/corpus_NAME/ (made by make_corpus.py) plus, when
#                    LK_FIXTURES is there, the fixture files of FUZZ_SEEDS_NAME.
#                    New inputs go to $(B)/fuzz/corpus_NAME/ (the committed
#                    corpus is never written); a crash, leak, timeout or an input
#                    over the RSS limit fails the step, with the input kept as
#                    $(B)/fuzz/crash-NAME-* and the log in $(B)/fuzz/NAME.log.
#
# Each target compiles the parser sources it exercises directly (the build
# command is also in the comment at the top of each target).

FUZZ_CC      ?= clang
FUZZ_TIME    ?= 12
FUZZ_DIR      = $(B)/fuzz
FUZZ_DIR_ABS  = $(abspath $(FUZZ_DIR))
FUZZ_CFLAGS  := -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined -Iabi
FUZZ_NAMES   := gguf safetensors
FUZZ_NAMES   += train

FUZZ_SRC_gguf        := plugins/load-gguf/gguf_parse.c plugins/load-gguf/gguf_meta.c \
                        plugins/load-gguf/gguf_names.c
FUZZ_INC_gguf        := -Iplugins/load-gguf
FUZZ_SEEDS_gguf      := gguf/a1-lora-f32.gguf gguf/base-Q4_K_M.gguf gguf/base-Q6_K.gguf
FUZZ_SRC_safetensors := plugins/load-safetensors/st_parse.c
FUZZ_INC_safetensors := -Iplugins/load-safetensors
FUZZ_SEEDS_safetensors := a1/adapter-trained/adapter_model.safetensors a1/adapter-trained/adapter_config.json \
                        a1/batches.safetensors base/config.json base/generation_config.json
# The trainer's readers (core/train_*.c, tests/fuzz/fuzz_train.c); the first byte picks the reader.
FUZZ_SRC_train       := core/train_st.c core/train_data.c core/train_batch.c core/train_ckpt.c
FUZZ_INC_train       := -Icore
FUZZ_LIBS_train      := -lcrypto -lm
FUZZ_SEEDS_train     := a1/batches.safetensors

# Inputs up to 64 KiB: whole small files; larger seeds are cut, which still
# exercises every header (a 512-token GGUF vocabulary is 13 KB).
FUZZ_RUN_FLAGS = -max_total_time=$(FUZZ_TIME) -rss_limit_mb=2048 -max_len=65536 -timeout=10 \
                 -print_final_stats=1

.PHONY: fuzz fuzz-test $(FUZZ_NAMES:%=fuzz-run-%)
fuzz: $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)

# Two cores: the targets run side by side; each logs to its own file.
fuzz-test: fuzz
	@$(MAKE) --no-print-directory -j2 $(FUZZ_NAMES:%=fuzz-run-%)

define fuzz_rules
$(FUZZ_DIR)/fuzz_$(1): tests/fuzz/fuzz_$(1).c $(FUZZ_SRC_$(1)) $(HEADERS) | $(B)/.bootstrap
	@mkdir -p $$(dir $$@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(FUZZ_INC_$(1)) -o $$@ $$< $(FUZZ_SRC_$(1)) -ljansson $(FUZZ_LIBS_$(1))

fuzz-run-$(1): $(FUZZ_DIR)/fuzz_$(1)
	@rm -rf $(FUZZ_DIR)/seeds_$(1); mkdir -p $(FUZZ_DIR)/corpus_$(1) $(FUZZ_DIR)/seeds_$(1)
	@if [ -d "$(LK_FIXTURES)/tiny-llama-a" ]; then \
	  for f in $(FUZZ_SEEDS_$(1)); do cp -f "$(LK_FIXTURES)/tiny-llama-a/$$$$f" $(FUZZ_DIR)/seeds_$(1)/; done; \
	  seeds="committed corpus + fixtures"; \
	else seeds="committed corpus only (fixtures absent: $(LK_FIXTURES))"; fi; \
	echo "fuzz_$(1): $(FUZZ_TIME) s, seeds: $$$$seeds"; \
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(FUZZ_DIR_ABS)/fuzz_$(1) $(FUZZ_RUN_FLAGS) -artifact_prefix=$(FUZZ_DIR_ABS)/crash-$(1)- \
	  $(FUZZ_DIR_ABS)/corpus_$(1) $(abspath tests/fuzz/corpus_$(1)) $(FUZZ_DIR_ABS)/seeds_$(1) \
	  > $(FUZZ_DIR)/$(1).log 2>&1; rc=$$$$?; \
	runs=$$$$(sed -n 's/^stat::number_of_executed_units: *//p' $(FUZZ_DIR)/$(1).log); \
	speed=$$$$(sed -n 's/^stat::average_exec_per_sec: *//p' $(FUZZ_DIR)/$(1).log); \
	cov=$$$$(grep -o 'cov: [0-9]*' $(FUZZ_DIR)/$(1).log | tail -1); \
	corp=$$$$(ls $(FUZZ_DIR)/corpus_$(1) | wc -l); \
	if [ $$$$rc = 0 ]; then \
	  echo "fuzz_$(1): ok, $$$$runs runs ($$$$speed/s), $$$$cov, $$$$corp new corpus inputs in $(FUZZ_DIR)/corpus_$(1)"; \
	else \
	  echo "fuzz_$(1): FAILED (exit $$$$rc) after $$$$runs runs; log $(FUZZ_DIR)/$(1).log:"; \
	  grep -E 'ERROR|SUMMARY|runtime error|deadly|Test unit written' $(FUZZ_DIR)/$(1).log | head -20; \
	  exit 1; \
	fi
endef
$(foreach n,$(FUZZ_NAMES),$(eval $(call fuzz_rules,$(n))))
