/* vlreward reward-plugin ABI: the C interface between the host (vlreward) and a reward backend compiled
 * separately as a shared library. Pure C so plugins may be written in any language; C++ authors use
 * plugin/plugin_sdk.h instead of implementing these functions by hand.
 *
 * A plugin exports the six functions declared below (unmangled, default visibility). The host dlopen()s the
 * library, checks vlreward_plugin_abi_version() == VLREWARD_PLUGIN_ABI_VERSION, then creates one instance
 * per configured backend.
 *
 * Ownership:
 *  - Everything passed into the plugin (config text, requests and all they point to) is owned by the host
 *    and valid only for the duration of the call. Copy what you need to keep.
 *  - The results array (n entries) and the error buffers are owned by the host. The host zeroes them before
 *    the call; the plugin writes NUL-terminated messages that fit the buffer (truncate, never overflow).
 *  - The instance handle is owned by the plugin: created by create(), released by destroy().
 *  - name() returns a string owned by the plugin, valid until destroy().
 *
 * Thread-safety:
 *  - The host never calls score()/name()/capabilities() on one instance from two threads at once, and never
 *    concurrently with its destroy(). Different instances may be used from different threads at the same time,
 *    so instances must not share unsynchronised mutable state.
 *  - Functions must not let exceptions (or longjmp) escape: report through the status and error buffers.
 */
#ifndef VLREWARD_PLUGIN_ABI_H
#define VLREWARD_PLUGIN_ABI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change of the structs or functions below. */
#define VLREWARD_PLUGIN_ABI_VERSION 1u

/* A byte string. `data` is NUL-terminated (data[size] == 0) so it can be used as a C string, but `size` is
 * authoritative (the text may contain NUL bytes). data == NULL means "absent" (only where documented). */
typedef struct vlreward_str {
  const char* data;
  size_t size;
} vlreward_str;

typedef enum vlreward_part_kind { VLREWARD_PART_TEXT = 0, VLREWARD_PART_IMAGE = 1 } vlreward_part_kind;

/* One piece of a turn. For an image exactly one of image_bytes (encoded JPEG/PNG, image_size bytes) or
 * image_path (data != NULL) is set; mime_type may be empty. For text only `text` is set. */
typedef struct vlreward_part {
  int32_t kind; /* vlreward_part_kind */
  vlreward_str text;
  const unsigned char* image_bytes;
  size_t image_size;
  vlreward_str image_path;
  vlreward_str mime_type;
} vlreward_part;

typedef struct vlreward_turn {
  vlreward_str role; /* "user" or "assistant" */
  const vlreward_part* parts;
  size_t part_count;
} vlreward_turn;

typedef struct vlreward_metadata_entry {
  vlreward_str key;
  vlreward_str value;
} vlreward_metadata_entry;

typedef struct vlreward_request {
  vlreward_str id;
  vlreward_str system_prompt; /* data == NULL: none given */
  const vlreward_turn* turns;
  size_t turn_count;
  vlreward_str response; /* the assistant response being scored */
  vlreward_str reference; /* data == NULL: no reference answer */
  const vlreward_metadata_entry* metadata;
  size_t metadata_count;
} vlreward_request;

#define VLREWARD_ERROR_SIZE 512

/* The plugin's verdict on one request: ok != 0 and a finite score, or ok == 0 and a message in `error`. */
typedef struct vlreward_result {
  int32_t ok;
  double score;
  char error[VLREWARD_ERROR_SIZE];
} vlreward_result;

/* Capability bits returned by vlreward_plugin_capabilities(). */
#define VLREWARD_CAP_IMAGES 1u          /* uses images */
#define VLREWARD_CAP_NEEDS_REFERENCE 2u /* fails items without a reference */
#define VLREWARD_CAP_BATCHED 4u         /* benefits from large batches */

/* Status of vlreward_plugin_score(). Any nonzero status fails the whole batch; the plugin may describe why
 * in results[0].error (when n > 0). */
#define VLREWARD_STATUS_OK 0

typedef struct vlreward_plugin_instance vlreward_plugin_instance; /* opaque, defined by the plugin */

#if defined(_WIN32)
#define VLREWARD_PLUGIN_EXPORT __declspec(dllexport)
#else
#define VLREWARD_PLUGIN_EXPORT __attribute__((visibility("default")))
#endif

/* The functions a plugin must define (the host looks them up by these exact names). */
VLREWARD_PLUGIN_EXPORT uint32_t vlreward_plugin_abi_version(void);
/* config_json: the backend's "config" object as JSON text. Returns NULL and writes a message into
 * error_buf (error_size bytes, including the NUL) when the config is refused. */
VLREWARD_PLUGIN_EXPORT vlreward_plugin_instance* vlreward_plugin_create(const char* config_json, char* error_buf,
                                                                        size_t error_size);
VLREWARD_PLUGIN_EXPORT void vlreward_plugin_destroy(vlreward_plugin_instance* instance);
VLREWARD_PLUGIN_EXPORT const char* vlreward_plugin_name(vlreward_plugin_instance* instance);
VLREWARD_PLUGIN_EXPORT uint32_t vlreward_plugin_capabilities(vlreward_plugin_instance* instance);
/* Scores n requests into results[0..n). Per-item problems go into that item's result (ok = 0); returns
 * VLREWARD_STATUS_OK unless the whole batch failed. */
VLREWARD_PLUGIN_EXPORT int32_t vlreward_plugin_score(vlreward_plugin_instance* instance,
                                                     const vlreward_request* requests, size_t n,
                                                     vlreward_result* results);

/* Symbol names, for hosts that look the functions up with dlsym(). */
#define VLREWARD_PLUGIN_SYMBOL_ABI_VERSION "vlreward_plugin_abi_version"
#define VLREWARD_PLUGIN_SYMBOL_CREATE "vlreward_plugin_create"
#define VLREWARD_PLUGIN_SYMBOL_DESTROY "vlreward_plugin_destroy"
#define VLREWARD_PLUGIN_SYMBOL_NAME "vlreward_plugin_name"
#define VLREWARD_PLUGIN_SYMBOL_CAPABILITIES "vlreward_plugin_capabilities"
#define VLREWARD_PLUGIN_SYMBOL_SCORE "vlreward_plugin_score"

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* VLREWARD_PLUGIN_ABI_H */
