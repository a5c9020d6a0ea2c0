# abi.mk - included by tests/tests.mk: the ABI gates of DESIGN.md section 3,
# rule 12 (tests/abi/README.md).
#
#   make abi-check      dump liblorakit's ABI (abidw) and compare it with the
#                       committed baseline abi/liblorakit.abi (abidiff):
#                       incompatible -> fail; additions -> pass, baseline
#                       rewritten in the work tree (commit it)
#   make abi-baseline   rewrite the baseline whatever changed (a reviewed,
#                       deliberate change)
#   make abi-gate-test  the gate's own test: a liblorakit built from a copy of
#                       the tree with two fields of lk_lora_config_t swapped
#                       must fail it; one with a function and a struct field
#                       added must pass; a removed function must fail; a
#                       field appended to the FROZEN lk_tensor_t must fail
#   make abi-compat     abi-compat-pairs (compat_pairs.sh: plugins, stand-in
#                       cores, hosts and liblorakit built from the frozen 2.0
#                       headers, tests/abi/v2.0, and from a synthetic 2.1,
#                       tests/abi/v2.1, in all four old/new pairings), then
#                       the example plugin built against tests/abi/v2.0
#                       loads in the current core (compat_test.sh)
#
# The baseline is the dump of the gcc build ($(B) = build, OPT = -O2).

ABI_BASELINE := abi/liblorakit.abi
COMPAT_DIR   := $(B)/tests/compat

abi-check: $(LIB)
	@bash tests/abi/abi_check.sh $(LIB) $(abspath abi) $(ABI_BASELINE)

abi-baseline: $(LIB)
	@bash tests/abi/abi_check.sh --force $(LIB) $(abspath abi) $(ABI_BASELINE)

abi-gate-test: $(LIB)
	@bash tests/abi/abi_gate_test.sh $(B) "$(MAKE)"

# The plugin sees only the frozen 2.0 copies: no -Iabi (CFLAGS is not used).
$(COMPAT_DIR)/plugins/lorakit-skeleton.so: examples/plugin-skeleton/skeleton.c $(wildcard tests/abi/v2.0/*.h) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -O2 -Wall -Wextra -Werror -fPIC -fvisibility=hidden -Itests/abi/v2.0 \
	  -MMD -MF $(COMPAT_DIR)/skeleton.d -shared -o $@ $< -lm

$(COMPAT_DIR)/compat_load: tests/abi/compat_load.c $(wildcard abi/*.h) $(LIB) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS) -L$(B) -llorakit -Wl,-rpath,$(LK_BUILD_ABS)

# The spec check of the SDK test, built with the current headers.
$(COMPAT_DIR)/skel_check: tests/sdk_skeleton_check.c $(wildcard abi/*.h) | $(B)/.bootstrap
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -Wall -Wextra -Werror -Iabi -o $@ $< -ldl

abi-compat-pairs: $(LIB)
	@bash tests/abi/compat_pairs.sh $(B) "$(CC)"

abi-compat: abi-compat-pairs all $(COMPAT_DIR)/plugins/lorakit-skeleton.so $(COMPAT_DIR)/compat_load $(COMPAT_DIR)/skel_check
	@bash tests/abi/compat_test.sh $(B)

.PHONY: abi-check abi-baseline abi-gate-test abi-compat abi-compat-pairs
