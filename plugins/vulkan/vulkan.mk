# vulkan.mk - the Vulkan backend, included by the Makefile.
#
# plugins/vulkan/shaders/*.comp are compiled by glslc (GLSLC) to SPIR-V as C
# initialisers in $(B)/gen/vulkan/NAME.spv.inc, which spirv.c includes: the
# SPIR-V is embedded in lorakit-vulkan.so. The plugin links the Vulkan loader
# (-lvulkan), never liblorakit. Where glslc or the Vulkan headers are missing
# the recipe says so in one line and skips the plugin; everything else builds.
GLSLC      ?= glslc
VK_SRC     := $(wildcard plugins/vulkan/*.c)
VK_SHADERS := $(wildcard plugins/vulkan/shaders/*.comp)
VK_GEN     := $(B)/gen/vulkan
VK_SO      := $(B)/plugins/lorakit-vulkan.so

$(VK_SO): $(VK_SRC) $(VK_SHADERS) plugins/vulkan/shaders/common.glsl plugins/vulkan/vulkan.mk $(HEADERS) \
    plugins/plugin.map | $(B)/.bootstrap
	@if ! command -v $(GLSLC) >/dev/null 2>&1 || \
	    ! printf '#include <vulkan/vulkan.h>\n' | $(CC) -E -x c - >/dev/null 2>&1; then \
	  echo "vulkan plugin skipped: glslc ($(GLSLC)) or the Vulkan headers (libvulkan-dev) are missing"; \
	  rm -f $@; exit 0; fi; \
	set -e; mkdir -p $(VK_GEN) $(dir $@) $(B)/obj/plugins/vulkan; \
	for s in $(VK_SHADERS); do \
	  n=$$(basename $$s .comp); \
	  $(GLSLC) -O --target-env=vulkan1.2 -mfmt=c $$s -o $(VK_GEN)/$$n.spv.inc; \
	done; \
	for f in $(VK_SRC); do \
	  echo "$(CC) ... -c $$f"; \
	  $(CC) $(CFLAGS) -fvisibility=hidden -Iplugins/common -I$(VK_GEN) -c $$f \
	    -o $(B)/obj/plugins/vulkan/$$(basename $$f .c).o; \
	done; \
	$(CC) -shared -Wl,--version-script=plugins/plugin.map -Wl,--no-undefined $(LDFLAGS) -o $@ \
	  $(VK_SRC:plugins/vulkan/%.c=$(B)/obj/plugins/vulkan/%.o) -lvulkan -lpthread -lm
