#include "reward/preference_data.h"

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "adapters/common/jsonl.h"
#include "adapters/common/mapped_file.h"
#include "adapters/image/reference.h"

namespace vlreward {
namespace fs = std::filesystem;
namespace {

std::string required_text(const nlohmann::json& obj, const char* key, const std::string& source, bool non_empty) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) throw InputError(source, fmt::format("{}: missing", key));
  if (!it->is_string()) throw InputError(source, fmt::format("{}: must be a string, got {}", key, it->type_name()));
  std::string text = it->get<std::string>();
  if (non_empty && text.empty()) throw InputError(source, fmt::format("{}: must not be empty", key));
  return text;
}

std::optional<double> optional_logp(const nlohmann::json& obj, const char* key, const std::string& source) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return std::nullopt;
  if (!it->is_number()) throw InputError(source, fmt::format("{}: must be a number, got {}", key, it->dump()));
  const double v = it->get<double>();
  if (!std::isfinite(v)) throw InputError(source, fmt::format("{}: must be finite", key));
  return v;
}

nlohmann::json parse_object(const std::string& line, const std::string& source) {
  nlohmann::json obj = parse_json_text(line, source, "malformed JSON");
  if (!obj.is_object()) throw InputError(source, fmt::format("must be a JSON object, got {}", obj.type_name()));
  return obj;
}

// id, images / image, question, system.
PromptRecord parse_prompt_fields(const nlohmann::json& obj, const std::string& source, const std::string& image_root) {
  PromptRecord prompt;
  prompt.source = source;
  if (auto it = obj.find("id"); it != obj.end() && !it->is_null()) {
    if (it->is_string()) prompt.id = it->get<std::string>();
    else if (it->is_number_integer()) prompt.id = it->dump();
    else throw InputError(source, "id: must be a string or an integer");
  }
  const ImageReferenceRules rules{ImageReferenceRules::Paths::kLocal, image_root};
  if (auto it = obj.find("images"); it != obj.end() && !it->is_null()) {
    if (!it->is_array()) throw InputError(source, "images: must be a list");
    for (size_t i = 0; i < it->size(); ++i) {
      prompt.images.push_back(parse_image_reference((*it)[i], fmt::format("{}: images[{}]", source, i), rules));
      prompt.image_references.push_back((*it)[i].get<std::string>());  // a string: parse_image_reference checked
    }
  }
  if (auto it = obj.find("image"); it != obj.end() && !it->is_null()) {
    prompt.images.push_back(parse_image_reference(*it, source + ": image", rules));
    prompt.image_references.push_back(it->get<std::string>());
  }
  prompt.question = required_text(obj, "question", source, false);
  if (auto it = obj.find("system"); it != obj.end() && !it->is_null())
    prompt.system_prompt = required_text(obj, "system", source, false);
  return prompt;
}

std::string resolve_image_root(const std::string& path, const std::string& image_root) {
  return !image_root.empty() ? image_root : fs::path(path).parent_path().string();
}

// Numbered ids for records without one; duplicates are errors.
void assign_id(std::string& id, int64_t line_number, std::set<std::string>& seen, const std::string& source) {
  if (id.empty()) id = std::to_string(line_number);
  else if (!seen.insert(id).second) throw InputError(source, fmt::format("id: duplicate \"{}\"", id));
}

RewardRequest request_for(const PreferenceRecord& record, const std::string& response, const char* side) {
  RewardRequest request = RewardRequest::single_turn(record.id + "/" + side, record.images, record.question, response);
  request.system_prompt = record.system_prompt;
  return request;
}

}  // namespace

RewardRequest PreferenceRecord::chosen_request() const { return request_for(*this, chosen, "chosen"); }
RewardRequest PreferenceRecord::rejected_request() const { return request_for(*this, rejected, "rejected"); }

PreferenceRecord parse_preference_line(const std::string& line, const std::string& source, const std::string& image_root,
                                       bool require_rejected) {
  const nlohmann::json obj = parse_object(line, source);
  PreferenceRecord record;
  record.source = source;
  PromptRecord prompt = parse_prompt_fields(obj, source, image_root);
  auto& ex = record;
  ex.id = std::move(prompt.id);
  ex.images = std::move(prompt.images);
  ex.system_prompt = std::move(prompt.system_prompt);
  ex.question = std::move(prompt.question);
  if (require_rejected) {
    ex.chosen = required_text(obj, "chosen", source, true);
    if (auto it = obj.find("rejected"); it == obj.end() || it->is_null())
      throw InputError(source, "rejected: missing (the loss needs a rejected completion; only loss_type [sft] trains "
                               "on a chosen/answer alone)");
    ex.rejected = required_text(obj, "rejected", source, true);
  } else {
    // SFT: "chosen" (a pair file's chosen side) or "answer"; a rejected completion, if any, is not used.
    auto chosen = obj.find("chosen");
    const bool has_chosen = chosen != obj.end() && !chosen->is_null();
    if (!has_chosen && (obj.find("answer") == obj.end() || obj.at("answer").is_null()))
      throw InputError(source, "answer: missing (an SFT line needs \"answer\" or \"chosen\")");
    ex.chosen = required_text(obj, has_chosen ? "chosen" : "answer", source, true);
  }
  record.ref_chosen_logp = optional_logp(obj, "ref_chosen_logp", source);
  record.ref_rejected_logp = optional_logp(obj, "ref_rejected_logp", source);
  if (record.ref_chosen_logp.has_value() != record.ref_rejected_logp.has_value())
    throw InputError(source, record.ref_chosen_logp ? "ref_rejected_logp: missing (ref_chosen_logp is given; give both or neither)"
                                                    : "ref_chosen_logp: missing (ref_rejected_logp is given; give both or neither)");
  return record;
}

std::vector<PreferenceRecord> read_preference_jsonl(const std::string& path, const std::string& image_root,
                                                    bool require_rejected) {
  const std::string root = resolve_image_root(path, image_root);
  std::vector<PreferenceRecord> records;
  std::set<std::string> ids;
  for_each_jsonl_line(path, [&](const std::string& line, const std::string& source, int64_t line_number) {
    PreferenceRecord record = parse_preference_line(line, source, root, require_rejected);
    assign_id(record.id, line_number, ids, source);
    records.push_back(std::move(record));
  });
  if (records.empty())
    throw InputError(path, require_rejected ? "no preference pairs (the file is empty)" : "no SFT examples (the file is empty)");
  return records;
}

std::vector<PromptRecord> read_prompt_jsonl(const std::string& path, const std::string& image_root) {
  const std::string root = resolve_image_root(path, image_root);
  std::vector<PromptRecord> prompts;
  std::set<std::string> ids;
  for_each_jsonl_line(path, [&](const std::string& line, const std::string& source, int64_t line_number) {
    const nlohmann::json obj = parse_object(line, source);
    PromptRecord prompt = parse_prompt_fields(obj, source, root);
    for (const char* key : {"reference", "answer"}) {
      if (auto it = obj.find(key); it != obj.end() && !it->is_null()) {
        if (prompt.reference) throw InputError(source, "give \"reference\" or \"answer\", not both");
        prompt.reference = required_text(obj, key, source, false);
      }
    }
    assign_id(prompt.id, line_number, ids, source);
    prompts.push_back(std::move(prompt));
  });
  if (prompts.empty()) throw InputError(path, "no prompts (the file is empty)");
  return prompts;
}

std::string jsonl_image_root(const std::string& path, const std::string& image_root) {
  return resolve_image_root(path, image_root);
}

}  // namespace vlreward
