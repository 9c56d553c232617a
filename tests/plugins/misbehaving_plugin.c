/* Test-only plugin, in C. Its config text picks a behaviour, so the host's handling of each can be tested:
 *   contains "refuse"       create() fails with a message
 *   contains "batch_status" score() returns status 7 with a message in results[0].error
 *   contains "nan"          every item "succeeds" with a NaN score
 *   contains "unterminated" every item fails with an error buffer filled to the brim, no NUL
 *   otherwise ("inspect")   score = 1000*images + 100*text parts + 10*metadata entries + (system prompt ? 1 : 0)
 *                           + (reference ? 2 : 0) + 0.001 * total image bytes; an item with id "bad" fails
 *                           with "bad item: <response>". Checks that every string is NUL-terminated at size. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin/plugin_abi.h"

struct vlreward_plugin_instance {
  char mode[32];
};

uint32_t vlreward_plugin_abi_version(void) { return VLREWARD_PLUGIN_ABI_VERSION; }

vlreward_plugin_instance* vlreward_plugin_create(const char* config_json, char* error_buf, size_t error_size) {
  static const char* const modes[] = {"batch_status", "nan", "unterminated"};
  vlreward_plugin_instance* instance;
  size_t i;
  if (strstr(config_json, "refuse") != NULL) {
    snprintf(error_buf, error_size, "told to refuse (config %s)", config_json);
    return NULL;
  }
  instance = (vlreward_plugin_instance*)calloc(1, sizeof *instance);
  strcpy(instance->mode, "inspect");
  for (i = 0; i < sizeof modes / sizeof modes[0]; ++i)
    if (strstr(config_json, modes[i]) != NULL) strcpy(instance->mode, modes[i]);
  return instance;
}

void vlreward_plugin_destroy(vlreward_plugin_instance* instance) { free(instance); }
const char* vlreward_plugin_name(vlreward_plugin_instance* instance) { return instance->mode; }
uint32_t vlreward_plugin_capabilities(vlreward_plugin_instance* instance) {
  (void)instance;
  return VLREWARD_CAP_IMAGES | VLREWARD_CAP_BATCHED;
}

static int terminated(vlreward_str s) { return s.data == NULL || s.data[s.size] == '\0'; }

int32_t vlreward_plugin_score(vlreward_plugin_instance* instance, const vlreward_request* requests, size_t n,
                              vlreward_result* results) {
  size_t i, t, p;
  if (strcmp(instance->mode, "batch_status") == 0) {
    snprintf(results[0].error, VLREWARD_ERROR_SIZE, "the GPU caught fire");
    return 7;
  }
  for (i = 0; i < n; ++i) {
    const vlreward_request* r = &requests[i];
    double score = 0;
    int ok = terminated(r->id) && terminated(r->response) && terminated(r->reference) && terminated(r->system_prompt);
    if (strcmp(instance->mode, "nan") == 0) {
      results[i].ok = 1;
      results[i].score = NAN;
      continue;
    }
    if (strcmp(instance->mode, "unterminated") == 0) {
      memset(results[i].error, 'x', VLREWARD_ERROR_SIZE);
      continue;
    }
    for (t = 0; t < r->turn_count; ++t) {
      ok = ok && terminated(r->turns[t].role);
      for (p = 0; p < r->turns[t].part_count; ++p) {
        const vlreward_part* part = &r->turns[t].parts[p];
        if (part->kind == VLREWARD_PART_IMAGE) {
          score += 1000 + 0.001 * (double)part->image_size;
          ok = ok && terminated(part->image_path) && terminated(part->mime_type);
        } else {
          score += 100;
          ok = ok && terminated(part->text);
        }
      }
    }
    for (t = 0; t < r->metadata_count; ++t)
      ok = ok && terminated(r->metadata[t].key) && terminated(r->metadata[t].value);
    score += 10.0 * (double)r->metadata_count + (r->system_prompt.data ? 1 : 0) + (r->reference.data ? 2 : 0);
    if (!ok) {
      snprintf(results[i].error, VLREWARD_ERROR_SIZE, "a string was not NUL-terminated");
    } else if (strcmp(r->id.data, "bad") == 0) {
      snprintf(results[i].error, VLREWARD_ERROR_SIZE, "bad item: %s", r->response.data);
    } else {
      results[i].ok = 1;
      results[i].score = score;
    }
  }
  return VLREWARD_STATUS_OK;
}
