#include "reward/preference_pairs.h"

#include <cstdint>
#include <filesystem>
#include <set>

#include <nlohmann/json.hpp>

#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "adapters/common/mapped_file.h"
#include "reward/image_input.h"

namespace vlreward {
namespace fs = std::filesystem;
namespace {

std::string text_field(const nlohmann::json& obj, const char* key, const std::string& source, bool non_empty) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) throw InputError(source, fmt::format("{}: missing", key));
  if (!it->is_string()) throw InputError(source, fmt::format("{}: must be a string, got {}", key, it->type_name()));
  std::string text = it->get<std::string>();
  if (non_empty && text.empty()) throw InputError(source, fmt::format("{}: must not be empty", key));
  return text;
}

RewardRequest request_for(const PreferencePair& pair, const std::string& response, const char* side) {
  RewardRequest request = RewardRequest::single_turn(pair.id + "/" + side, pair.images, pair.question, response);
  request.system_prompt = pair.system_prompt;
  return request;
}

}  // namespace

RewardRequest PreferencePair::chosen_request() const { return request_for(*this, chosen, "chosen"); }
RewardRequest PreferencePair::rejected_request() const { return request_for(*this, rejected, "rejected"); }

PreferencePair parse_preference_pair(const std::string& line, const std::string& source, const std::string& image_root) {
  const nlohmann::json obj = parse_json_text(line, source, "malformed JSON");
  if (!obj.is_object()) throw InputError(source, fmt::format("must be a JSON object, got {}", obj.type_name()));
  PreferencePair pair;
  pair.source = source;
  if (auto it = obj.find("id"); it != obj.end() && !it->is_null()) {
    if (it->is_string()) pair.id = it->get<std::string>();
    else if (it->is_number_integer()) pair.id = it->dump();
    else throw InputError(source, "id: must be a string or an integer");
  }
  if (auto it = obj.find("images"); it != obj.end() && !it->is_null()) {
    if (!it->is_array()) throw InputError(source, "images: must be a list");
    for (size_t i = 0; i < it->size(); ++i)
      pair.images.push_back(parse_image_reference((*it)[i], fmt::format("{}: images[{}]", source, i), image_root));
  }
  if (auto it = obj.find("image"); it != obj.end() && !it->is_null())
    pair.images.push_back(parse_image_reference(*it, source + ": image", image_root));
  pair.question = text_field(obj, "question", source, false);
  if (auto it = obj.find("system"); it != obj.end() && !it->is_null())
    pair.system_prompt = text_field(obj, "system", source, false);
  pair.chosen = text_field(obj, "chosen", source, true);
  pair.rejected = text_field(obj, "rejected", source, true);
  return pair;
}

std::vector<PreferencePair> read_preference_pairs(const std::string& path, const std::string& image_root) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw InputError(path, "no such file");
  const std::string root = !image_root.empty() ? image_root : fs::path(path).parent_path().string();
  const std::string content = read_file(path);
  std::vector<PreferencePair> pairs;
  std::set<std::string> ids;
  size_t start = 0;
  int64_t line_number = 0;
  while (start < content.size()) {
    size_t end = content.find('\n', start);
    if (end == std::string::npos) end = content.size();
    ++line_number;
    std::string line = content.substr(start, end - start);
    start = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    const std::string source = fmt::format("{}:{}", path, line_number);
    PreferencePair pair = parse_preference_pair(line, source, root);
    if (pair.id.empty()) pair.id = std::to_string(line_number);
    else if (!ids.insert(pair.id).second) throw InputError(source, fmt::format("id: duplicate \"{}\"", pair.id));
    pairs.push_back(std::move(pair));
  }
  if (pairs.empty()) throw InputError(path, "no preference pairs (the file is empty)");
  return pairs;
}

}  // namespace vlreward
