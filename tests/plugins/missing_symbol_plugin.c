/* Test-only plugin: right ABI version, but vlreward_plugin_score is not defined. */
#include "plugin/plugin_abi.h"

uint32_t vlreward_plugin_abi_version(void) { return VLREWARD_PLUGIN_ABI_VERSION; }
vlreward_plugin_instance* vlreward_plugin_create(const char* config_json, char* error_buf, size_t error_size) {
  (void)config_json, (void)error_buf, (void)error_size;
  return 0;
}
void vlreward_plugin_destroy(vlreward_plugin_instance* instance) { (void)instance; }
const char* vlreward_plugin_name(vlreward_plugin_instance* instance) { (void)instance; return "missing_symbol"; }
uint32_t vlreward_plugin_capabilities(vlreward_plugin_instance* instance) { (void)instance; return 0; }
