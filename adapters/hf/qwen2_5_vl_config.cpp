#include "adapters/hf/qwen2_5_vl_config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <numeric>

#include <nlohmann/json.hpp>

#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"
#include "plugin/config_reader.h"

namespace vlreward {
namespace {

using nlohmann::json;

// Activations the model implements; transformers' ACT2FN knows more, but Qwen2.5-VL uses silu in both towers.
const std::vector<std::string> kSupportedActivations = {"silu"};

std::string list_string(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return s + "]";
}

using Section = ConfigReader;

int64_t positive_int(Section& s, const std::string& key) {
  const int64_t n = s.required<int64_t>(key);
  if (n <= 0) s.fail(key, fmt::format("must be a positive integer, got {}", n));
  return n;
}

double positive_number(Section& s, const std::string& key) {
  const double d = s.required<double>(key);
  if (!(d > 0)) s.fail(key, fmt::format("must be a positive number, got {}", d));
  return d;
}

std::string activation(Section& s, const std::string& key) {
  std::string act = s.optional<std::string>(key, "silu");
  if (std::find(kSupportedActivations.begin(), kSupportedActivations.end(), act) == kSupportedActivations.end())
    s.fail(key, fmt::format("unsupported activation \"{}\" (supported: silu)", act));
  return act;
}

void parse_rope(Section& text, Qwen2_5_VLTextConfig& c) {
  // v5 moves rope_scaling into rope_parameters (and lets a non-null rope_scaling win); 4.5x has rope_scaling.
  const char* key = text.has("rope_scaling") ? "rope_scaling" : "rope_parameters";
  if (!text.has(key)) text.fail("rope_scaling", "missing (neither rope_scaling nor rope_parameters gives mrope_section)");
  Section rope = text.required_section(key);

  // transformers 4.5x: a "type" entry overrides "rope_type"; "mrope" means the default rotary with sections.
  std::string type_key = rope.has("type") ? "type" : "rope_type";
  std::string type = rope.optional<std::string>(type_key, "default");
  if (type != "default" && type != "mrope")
    rope.fail(type_key, fmt::format("unsupported rope type \"{}\" (supported: default, mrope)", type));
  c.rope_type = "default";

  c.mrope_section = rope.required<std::vector<int64_t>>("mrope_section");
  if (c.mrope_section.size() != 3)
    rope.fail("mrope_section", fmt::format("must have 3 entries (temporal, height, width), got {}",
                                           list_string(c.mrope_section)));
  for (size_t i = 0; i < 3; ++i)
    if (c.mrope_section[i] < 0)
      rope.fail("mrope_section", fmt::format("entries must be non-negative, got {}", list_string(c.mrope_section)));

  if (std::string(key) == "rope_parameters" && rope.has("rope_theta")) {
    c.rope_theta = positive_number(rope, "rope_theta");
  } else if (text.has("rope_theta")) {
    c.rope_theta = positive_number(text, "rope_theta");
  }

  const int64_t sum = c.mrope_section[0] + c.mrope_section[1] + c.mrope_section[2];
  if (2 * sum != c.head_dim())
    rope.fail("mrope_section", fmt::format("must sum to head_dim / 2 = {} (hidden_size {} / num_attention_heads {} / "
                                           "2), got {} (sum {})", c.head_dim() / 2, c.hidden_size,
                                           c.num_attention_heads, list_string(c.mrope_section), sum));
}

Qwen2_5_VLTextConfig parse_text(Section& text) {
  Qwen2_5_VLTextConfig c;
  c.vocab_size = positive_int(text, "vocab_size");
  c.hidden_size = positive_int(text, "hidden_size");
  c.intermediate_size = positive_int(text, "intermediate_size");
  c.num_hidden_layers = positive_int(text, "num_hidden_layers");
  c.num_attention_heads = positive_int(text, "num_attention_heads");
  c.num_key_value_heads = positive_int(text, "num_key_value_heads");
  c.max_position_embeddings = positive_int(text, "max_position_embeddings");
  c.rms_norm_eps = positive_number(text, "rms_norm_eps");
  c.hidden_act = activation(text, "hidden_act");
  c.tie_word_embeddings = text.optional<bool>("tie_word_embeddings", false);
  if (auto dropout = text.maybe<double>("attention_dropout")) {
    c.attention_dropout = *dropout;
    if (c.attention_dropout < 0 || c.attention_dropout >= 1)
      text.fail("attention_dropout", fmt::format("must be in [0, 1), got {}", c.attention_dropout));
  }
  if (c.hidden_size % c.num_attention_heads != 0)
    text.fail("hidden_size", fmt::format("must be divisible by num_attention_heads ({}), got {}",
                                         c.num_attention_heads, c.hidden_size));
  if (c.num_attention_heads % c.num_key_value_heads != 0)
    text.fail("num_key_value_heads", fmt::format("must divide num_attention_heads ({}), got {}",
                                                 c.num_attention_heads, c.num_key_value_heads));
  parse_rope(text, c);

  // Only full attention is implemented (the 7B sets use_sliding_window false; layer_types all full_attention).
  if (text.optional<bool>("use_sliding_window", false))
    text.fail("use_sliding_window", "sliding-window attention is not supported");
  if (const json* types = text.raw("layer_types")) {
    if (!types->is_array() || types->size() != static_cast<size_t>(c.num_hidden_layers))
      text.fail("layer_types", fmt::format("must be a list of num_hidden_layers ({}) entries", c.num_hidden_layers));
    for (size_t i = 0; i < types->size(); ++i)
      if ((*types)[i] != "full_attention")
        text.fail("layer_types[" + std::to_string(i) + "]",
                  fmt::format("only \"full_attention\" is supported, got {}", (*types)[i].dump()));
  }

  auto token = [&](const std::string& key, const json& v) {
    int64_t id = text.element<int64_t>(v, key);
    if (id < 0 || id >= c.vocab_size)
      text.fail(key, fmt::format("must be in [0, vocab_size={}), got {}", c.vocab_size, id));
    return id;
  };
  if (const json* v = text.raw("bos_token_id")) c.bos_token_id = token("bos_token_id", *v);
  if (const json* v = text.raw("pad_token_id")) c.pad_token_id = token("pad_token_id", *v);
  if (const json* v = text.raw("eos_token_id")) {
    if (v->is_array()) {
      for (size_t i = 0; i < v->size(); ++i)
        c.eos_token_ids.push_back(token("eos_token_id[" + std::to_string(i) + "]", (*v)[i]));
    } else if (v->is_number_integer()) {
      c.eos_token_ids.push_back(token("eos_token_id", *v));
    } else {
      text.fail("eos_token_id", fmt::format("must be an integer or a list of integers, got {}", Section::describe(*v)));
    }
  }
  return c;
}

Qwen2_5_VLVisionConfig parse_vision(Section& vision, const Qwen2_5_VLTextConfig& text,
                                    const std::string& text_prefix) {
  Qwen2_5_VLVisionConfig c;
  c.depth = positive_int(vision, "depth");
  c.hidden_size = positive_int(vision, "hidden_size");
  c.intermediate_size = positive_int(vision, "intermediate_size");
  c.num_heads = positive_int(vision, "num_heads");
  c.out_hidden_size = positive_int(vision, "out_hidden_size");
  // transformers reads in_channels (default 3); the hub file's in_chans is only an extra attribute there, but
  // it carries the same value, so accept it when in_channels is absent.
  c.in_channels = vision.has("in_channels") ? positive_int(vision, "in_channels")
                  : vision.has("in_chans")  ? positive_int(vision, "in_chans")
                                             : 3;
  c.patch_size = positive_int(vision, "patch_size");
  c.temporal_patch_size = positive_int(vision, "temporal_patch_size");
  c.spatial_merge_size = positive_int(vision, "spatial_merge_size");
  c.window_size = positive_int(vision, "window_size");
  c.tokens_per_second = positive_int(vision, "tokens_per_second");
  c.hidden_act = activation(vision, "hidden_act");

  c.fullatt_block_indexes = vision.required<std::vector<int64_t>>("fullatt_block_indexes");
  for (size_t i = 0; i < c.fullatt_block_indexes.size(); ++i) {
    const int64_t b = c.fullatt_block_indexes[i];
    if (b < 0 || b >= c.depth)
      vision.fail("fullatt_block_indexes[" + std::to_string(i) + "]",
                  fmt::format("must be a block index in [0, depth={}), got {}", c.depth, b));
    if (i > 0 && b <= c.fullatt_block_indexes[i - 1])
      vision.fail("fullatt_block_indexes", fmt::format("must be strictly increasing, got {}",
                                                       list_string(c.fullatt_block_indexes)));
  }

  if (c.hidden_size % c.num_heads != 0)
    vision.fail("hidden_size", fmt::format("must be divisible by num_heads ({}), got {}", c.num_heads, c.hidden_size));
  // The 2-D vision rotary splits each head into (row, column) halves of rotary pairs.
  if (c.head_dim() % 4 != 0)
    vision.fail("num_heads", fmt::format("head_dim (hidden_size {} / num_heads {} = {}) must be divisible by 4",
                                         c.hidden_size, c.num_heads, c.head_dim()));
  if (c.window_size % (c.patch_size * c.spatial_merge_size) != 0)
    vision.fail("window_size", fmt::format("must be a multiple of patch_size x spatial_merge_size ({}), got {}",
                                           c.patch_size * c.spatial_merge_size, c.window_size));
  if (c.out_hidden_size != text.hidden_size)
    vision.fail("out_hidden_size", fmt::format("must equal the text hidden_size ({}{} = {}), got {}", text_prefix,
                                               "hidden_size", text.hidden_size, c.out_hidden_size));
  return c;
}

}  // namespace

bool Qwen2_5_VLVisionConfig::is_full_attention_block(int64_t block) const {
  return std::binary_search(fullatt_block_indexes.begin(), fullatt_block_indexes.end(), block);
}

Qwen2_5_VLConfig Qwen2_5_VLConfig::parse(std::string_view json_text, const std::string& source) {
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::exception& e) {
    throw_input_error(source, "not valid JSON: {}", e.what());
  }
  if (!doc.is_object()) throw_input_error(source, "must be a JSON object, got {}", doc.type_name());

  Section top(doc, "", source);
  top.exact_integers();
  // Text parameters come from text_config when present (4.5x re-saves, v5), else from the top level (hub file).
  const bool nested = top.has("text_config");
  const std::string text_prefix = nested ? "text_config." : "";
  Qwen2_5_VLConfig c;
  if (nested) {
    Section text = top.required_section("text_config");
    c.text = parse_text(text);
  } else {
    c.text = parse_text(top);
  }
  Section vision = top.required_section("vision_config");
  c.vision = parse_vision(vision, c.text, text_prefix);

  auto token = [&](const std::string& key, int64_t fallback) {
    int64_t id = top.optional<int64_t>(key, fallback);
    if (id < 0 || id >= c.text.vocab_size)
      top.fail(key, fmt::format("must be in [0, vocab_size={}), got {}", c.text.vocab_size, id));
    return id;
  };
  c.image_token_id = token("image_token_id", c.image_token_id);
  c.video_token_id = token("video_token_id", c.video_token_id);
  c.vision_start_token_id = token("vision_start_token_id", c.vision_start_token_id);
  c.vision_end_token_id = token("vision_end_token_id", c.vision_end_token_id);
  c.dtype = top.optional<std::string>("dtype", top.optional<std::string>("torch_dtype", ""));
  return c;
}

Qwen2_5_VLConfig Qwen2_5_VLConfig::load(const std::string& path) {
  std::error_code ec;
  std::string file = path;
  if (std::filesystem::is_directory(path, ec)) file = (std::filesystem::path(path) / "config.json").string();
  return parse(read_file(file), file);
}

}  // namespace vlreward
