#pragma once
// Qwen2.5-VL config.json: the fields the model needs, read from any of the layouts found in the wild
// (spec §1.2): the original hub file (flat text keys + vision_config, rope_scaling {"type": "mrope"}), the
// transformers 4.5x re-save (adds text_config), and v5 (rope_parameters). Unlike transformers, a missing
// architecture field is an error rather than a silent class default (the class defaults are not the 7B's).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vlreward {

struct Qwen2_5_VLTextConfig {
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 0;
  double rope_theta = 1000000.0;           // rope_parameters.rope_theta | rope_theta | 1e6
  std::string rope_type = "default";       // "mrope" is normalized to "default", as transformers does
  std::vector<int64_t> mrope_section;      // [temporal, height, width] rotary half-dims; sums to head_dim / 2
  std::string hidden_act = "silu";
  bool tie_word_embeddings = false;        // read from the text section, which is what tying uses
  double attention_dropout = 0.0;
  std::optional<int64_t> bos_token_id;
  std::vector<int64_t> eos_token_ids;      // config may give an int or a list
  std::optional<int64_t> pad_token_id;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  int64_t num_key_value_groups() const { return num_attention_heads / num_key_value_heads; }
};

struct Qwen2_5_VLVisionConfig {
  int64_t depth = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_heads = 0;
  int64_t out_hidden_size = 0;
  int64_t in_channels = 3;  // hub files spell it "in_chans"
  int64_t patch_size = 0;
  int64_t temporal_patch_size = 0;
  int64_t spatial_merge_size = 0;
  int64_t window_size = 0;
  std::vector<int64_t> fullatt_block_indexes;  // sorted, unique, each < depth
  int64_t tokens_per_second = 0;
  std::string hidden_act = "silu";

  int64_t head_dim() const { return hidden_size / num_heads; }
  // Flattened patch length fed to the Conv3d patch embedding: C x T x P x P.
  int64_t patch_input_size() const { return in_channels * temporal_patch_size * patch_size * patch_size; }
  int64_t spatial_merge_unit() const { return spatial_merge_size * spatial_merge_size; }
  // Merger MLP input: hidden_size x merge^2.
  int64_t merger_hidden_size() const { return hidden_size * spatial_merge_unit(); }
  // Window side in merged-patch units (112 / 2 / 14 = 4 for the 7B).
  int64_t window_merge_size() const { return window_size / spatial_merge_size / patch_size; }
  bool is_full_attention_block(int64_t block) const;
};

struct Qwen2_5_VLConfig {
  Qwen2_5_VLTextConfig text;
  Qwen2_5_VLVisionConfig vision;
  int64_t image_token_id = 151655;  // transformers' defaults, used when the file omits them
  int64_t video_token_id = 151656;
  int64_t vision_start_token_id = 151652;
  int64_t vision_end_token_id = 151653;
  std::string dtype;  // "dtype" | "torch_dtype" as written ("bfloat16"), empty if absent

  // `path` is a config.json or a directory holding one. Throws InputError naming the file and key path.
  static Qwen2_5_VLConfig load(const std::string& path);
  // `source` names the input in errors (e.g. the file path).
  static Qwen2_5_VLConfig parse(std::string_view json_text, const std::string& source);
};

}  // namespace vlreward
