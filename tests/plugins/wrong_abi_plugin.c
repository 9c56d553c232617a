/* Test-only plugin, written in C (so the ABI header is also compiled as C): reports an ABI version the host
 * does not speak. Everything else is present, so the version check is what must reject it. */
#include "plugin/plugin_abi.h"

uint32_t vlreward_plugin_abi_version(void) { return VLREWARD_PLUGIN_ABI_VERSION + 1; }
vlreward_plugin_instance* vlreward_plugin_create(const char* config_json, char* error_buf, size_t error_size) {
  (void)config_json, (void)error_buf, (void)error_size;
  return 0;
}
void vlreward_plugin_destroy(vlreward_plugin_instance* instance) { (void)instance; }
const char* vlreward_plugin_name(vlreward_plugin_instance* instance) { (void)instance; return "wrong_abi"; }
uint32_t vlreward_plugin_capabilities(vlreward_plugin_instance* instance) { (void)instance; return 0; }
int32_t vlreward_plugin_score(vlreward_plugin_instance* instance, const vlreward_request* requests, size_t n,
                              vlreward_result* results) {
  (void)instance, (void)requests, (void)n, (void)results;
  return VLREWARD_STATUS_OK;
}
