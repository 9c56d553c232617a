#include "reward/score_jsonl.h"

#include <cstdint>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "plugin/wire/base64.h"
#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "reward/batch_scoring.h"
#include "adapters/common/progress.h"
#include "adapters/hf/byte_level.h"
#include "adapters/image/reference.h"

namespace vlreward {
namespace fs = std::filesystem;
namespace {

std::string id_text(const nlohmann::json& id) { return id.is_string() ? id.get<std::string>() : id.dump(); }

// One output line. Always valid JSON: any ill-formed UTF-8 in a string (a backend's error message quoting bytes
// it was given) is replaced with U+FFFD rather than failing the record, its batch and the rest of the run.
std::string record_line(const nlohmann::json& record) {
  return record.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

std::string require_string(const nlohmann::json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) throw InputError(where, fmt::format("missing \"{}\"", key));
  if (!it->is_string()) throw InputError(where, fmt::format("\"{}\" must be a string", key));
  return it->get<std::string>();
}

// Appends whole lines and makes them durable, so an interrupted run keeps every finished record.
class DurableAppender {
 public:
  explicit DurableAppender(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd_ < 0) throw InputError(path, fmt::format("cannot open for writing: {}", std::strerror(errno)));
  }
  ~DurableAppender() {
    if (fd_ >= 0) ::close(fd_);
  }
  void append(const std::string& text) {
    size_t written = 0;
    while (written < text.size()) {
      ssize_t n = ::write(fd_, text.data() + written, text.size() - written);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw InputError(path_, fmt::format("write failed: {}", std::strerror(errno)));
      written += static_cast<size_t>(n);
    }
    if (::fsync(fd_) != 0) throw InputError(path_, fmt::format("fsync failed: {}", std::strerror(errno)));
  }

 private:
  std::string path_;
  int fd_ = -1;
};

// The ids that already have a record in an existing output, each with whether that record is an error; drops a
// torn last line left by a crash mid-write.
std::map<std::string, bool> recover_output(const std::string& path) {
  std::map<std::string, bool> done;
  std::ifstream in(path, std::ios::binary);
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t complete = content.rfind('\n') == std::string::npos ? 0 : content.rfind('\n') + 1;
  if (complete != content.size()) fs::resize_file(path, complete);
  size_t start = 0;
  while (start < complete) {
    const size_t end = content.find('\n', start);
    try {
      auto record = nlohmann::json::parse(content.substr(start, end - start));
      if (record.contains("id")) done[id_text(record["id"])] = record.contains("error");
    } catch (const nlohmann::json::exception&) {
      throw InputError(path, "existing output has a malformed line; cannot resume from it");
    }
    start = end + 1;
  }
  return done;
}

}  // namespace

RewardRequest parse_score_line(const std::string& line, int64_t line_number, const std::string& image_root,
                               uint64_t max_image_bytes) {
  const std::string where = fmt::format("line {}", line_number);
  if (const size_t bad = find_invalid_utf8(line); bad != line.size())
    throw InputError(where, fmt::format("not valid UTF-8 (byte 0x{:02X} at column {}); the line is not scored",
                                        static_cast<unsigned char>(line[bad]), bad + 1));
  const nlohmann::json obj = parse_json_text(line, where, "invalid JSON");
  if (!obj.is_object()) throw InputError(where, "must be a JSON object");
  auto id = obj.find("id");
  if (id == obj.end() || !(id->is_string() || id->is_number_integer())) throw InputError(where, "missing \"id\" (string or integer)");
  const ImageReferenceRules rules{ImageReferenceRules::Paths::kLocal, image_root, max_image_bytes};
  std::vector<RewardImage> images;
  if (auto it = obj.find("images"); it != obj.end() && !it->is_null()) {
    if (!it->is_array()) throw InputError(where, "\"images\" must be a list");
    for (size_t i = 0; i < it->size(); ++i)
      images.push_back(parse_image_reference((*it)[i], fmt::format("{}: images[{}]", where, i), rules));
  }
  if (auto it = obj.find("image"); it != obj.end() && !it->is_null())
    images.push_back(parse_image_reference(*it, where + ": image", rules));
  std::optional<std::string> reference;
  if (auto it = obj.find("reference"); it != obj.end() && !it->is_null()) reference = require_string(obj, "reference", where);
  auto request = RewardRequest::single_turn(id_text(*id), std::move(images), require_string(obj, "question", where),
                                            require_string(obj, "response", where), std::move(reference));
  if (auto it = obj.find("system"); it != obj.end() && !it->is_null()) request.system_prompt = require_string(obj, "system", where);
  return request;
}

ScoreJsonlSummary score_jsonl(RewardBackend& backend, const ScoreJsonlOptions& options) {
  std::ifstream in(options.input_path);
  if (!in) throw InputError(options.input_path, fmt::format("cannot open: {}", std::strerror(errno)));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line.find_first_not_of(" \t\r") != std::string::npos) lines.push_back(line);
    else lines.emplace_back();  // keep numbering; blank lines are skipped below

  std::map<std::string, bool> done;
  if (fs::exists(options.output_path)) {
    if (options.resume) done = recover_output(options.output_path);
    else if (options.overwrite) fs::resize_file(options.output_path, 0);
    else throw InputError(options.output_path, "already exists; pass --resume to continue it or --overwrite to replace it");
  }
  const std::string image_root = !options.image_root.empty() ? options.image_root
                                 : fs::path(options.input_path).parent_path().string();
  DurableAppender out(options.output_path);
  ScoreJsonlSummary summary;
  int64_t total = 0;
  for (const auto& l : lines) total += l.empty() ? 0 : 1;
  ProgressBar progress("reward-score", total);

  struct Pending {
    nlohmann::json id;
    std::optional<RewardRequest> request;
    std::string error;
  };
  std::vector<Pending> pending;
  std::set<std::string> seen;
  auto flush = [&]() {
    std::vector<RewardRequest> batch;
    for (auto& p : pending)
      if (p.request) batch.push_back(*p.request);
    const std::vector<RewardResult> results = score_batch(backend, batch);
    std::string text;
    size_t next = 0;
    int64_t scored = 0, failed = 0;
    for (auto& p : pending) {
      nlohmann::json record{{"id", p.id}};
      if (p.request) {
        const RewardResult& r = results[next++];
        if (r.ok()) record["score"] = *r.score;
        else record["error"] = r.error;
        if (record.contains("score") && !r.components.empty()) record["components"] = r.components;
      } else {
        record["error"] = p.error;
      }
      (record.contains("error") ? failed : scored) += 1;
      text += record_line(record);
    }
    if (!text.empty()) out.append(text);
    summary.scored += scored;  // counted once written
    summary.failed += failed;
    if (options.progress) progress.advance(static_cast<int64_t>(pending.size()), fmt::format("{} errors", summary.failed));
    pending.clear();
  };

  // From here on a failure leaves lines without a record: say so, distinctly from lines that failed.
  try {
    for (size_t i = 0; i < lines.size(); ++i) {
      if (lines[i].empty()) continue;
      const int64_t line_number = static_cast<int64_t>(i) + 1;
      Pending p;
      try {
        RewardRequest request = parse_score_line(lines[i], line_number, image_root, options.max_image_bytes);
        p.id = nlohmann::json::parse(lines[i])["id"];
        if (auto it = done.find(request.id); it != done.end()) {
          ++summary.skipped;
          summary.skipped_failed += it->second ? 1 : 0;
          if (options.progress) progress.advance(1);
          continue;
        }
        if (!seen.insert(request.id).second) throw InputError(fmt::format("line {}", line_number), "duplicate id " + request.id);
        p.request = std::move(request);
      } catch (const std::exception& e) {
        try {
          auto obj = nlohmann::json::parse(lines[i]);
          p.id = obj.is_object() && obj.contains("id") ? obj["id"] : nlohmann::json(nullptr);
        } catch (...) {
          p.id = nullptr;
        }
        if (p.id.is_null()) p.id = fmt::format("line {}", line_number);
        if (auto it = done.find(id_text(p.id)); it != done.end()) {  // its error record is already in the output
          ++summary.skipped;
          summary.skipped_failed += it->second ? 1 : 0;
          if (options.progress) progress.advance(1);
          continue;
        }
        p.error = e.what();
      }
      pending.push_back(std::move(p));
      if (static_cast<int64_t>(pending.size()) >= options.batch_size) flush();
    }
    flush();
  } catch (const std::exception& e) {
    throw ScoreRunIncomplete(fmt::format(
        "stopped with {} of {} lines recorded in {} (--resume continues from there): {}",
        summary.scored + summary.failed + summary.skipped, total, options.output_path, e.what()));
  }
  if (options.progress) progress.finish(fmt::format("{} scored, {} errors, {} resumed", summary.scored, summary.failed, summary.skipped));
  return summary;
}

}  // namespace vlreward
