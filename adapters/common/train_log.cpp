#include "adapters/common/train_log.h"

#include <cstdint>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "adapters/common/atomic_file.h"
#include "adapters/common/crc32c.h"
#include "adapters/common/error.h"
#include "tensorboard_event.pb.h"

namespace vlreward {
namespace fs = std::filesystem;
namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void append_u32_le(std::string& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xFFu));
}

std::FILE* open_append(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "ab");
  if (f == nullptr) throw InputError(path, fmt::format("cannot open for writing: {}", std::strerror(errno)));
  return f;
}

void write_all(std::FILE* f, const std::string& bytes, const std::string& path) {
  if (std::fwrite(bytes.data(), 1, bytes.size(), f) != bytes.size() || std::fflush(f) != 0)
    throw InputError(path, fmt::format("write failed: {}", std::strerror(errno)));
}

}  // namespace

std::string tf_record(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 16);
  const uint64_t length = data.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((length >> (8 * i)) & 0xFFu));
  append_u32_le(out, masked_crc32c(crc32c(std::string_view(out.data(), 8))));
  out.append(data.data(), data.size());
  append_u32_le(out, masked_crc32c(crc32c(data)));
  return out;
}

std::string tensorboard_file_version_event(double wall_time) {
  tensorboard::Event event;
  event.set_wall_time(wall_time);
  event.set_file_version("brain.Event:2");
  return event.SerializeAsString();
}

std::string tensorboard_scalars_event(double wall_time, int64_t step, const std::map<std::string, double>& scalars) {
  tensorboard::Event event;
  event.set_wall_time(wall_time);
  event.set_step(step);
  auto* summary = event.mutable_summary();
  for (const auto& [tag, value] : scalars) {
    auto* v = summary->add_value();
    v->set_tag(tag);
    v->set_simple_value(static_cast<float>(value));
  }
  return event.SerializeAsString();
}

TensorBoardWriter::TensorBoardWriter(const std::string& dir) {
  fs::create_directories(dir);
  char host[256] = "localhost";
  if (::gethostname(host, sizeof(host) - 1) != 0) std::strcpy(host, "localhost");
  host[sizeof(host) - 1] = '\0';
  const double wall = now_seconds();
  path_ = (fs::path(dir) / fmt::format("events.out.tfevents.{}.{}.{}", static_cast<int64_t>(wall), host,
                                       static_cast<long>(::getpid())))
              .string();
  file_ = open_append(path_);
  write_record(tensorboard_file_version_event(wall));
}

TensorBoardWriter::~TensorBoardWriter() {
  if (file_ != nullptr) std::fclose(file_);
}

void TensorBoardWriter::add_scalars(int64_t step, const std::map<std::string, double>& scalars) {
  write_record(tensorboard_scalars_event(now_seconds(), step, scalars));
}

void TensorBoardWriter::write_record(const std::string& event) { write_all(file_, tf_record(event), path_); }

MetricsJsonl::MetricsJsonl(const std::string& path, const KeepLine& keep) : path_(path) {
  if (fs::exists(path)) {
    std::ifstream in(path, std::ios::binary);
    std::string kept;
    for (std::string line; std::getline(in, line);) {
      if (in.eof()) break;  // a last line without '\n' was torn by a crash
      nlohmann::json record;
      try {
        record = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception&) {
        continue;
      }
      if (record.is_object() && keep(record)) kept += line + "\n";
    }
    write_file_atomic(path, kept);
  }
  file_ = open_append(path);
}

MetricsJsonl::MetricsJsonl(const std::string& path, int64_t resume_step)
    : MetricsJsonl(path, [resume_step](const nlohmann::json& line) {
        auto step = line.find("step");
        return step != line.end() && step->is_number_integer() && step->get<int64_t>() <= resume_step;
      }) {}

MetricsJsonl::~MetricsJsonl() {
  if (file_ != nullptr) std::fclose(file_);
}

void MetricsJsonl::append(int64_t step, const std::map<std::string, double>& metrics) {
  nlohmann::json record{{"step", step}};
  for (const auto& [key, value] : metrics) record[key] = value;
  write_all(file_, record.dump() + "\n", path_);
}

void MetricsJsonl::append(const nlohmann::json& line) { write_all(file_, line.dump() + "\n", path_); }

TrainLogger::TrainLogger(const TrainLogOptions& options, int64_t total_steps, int64_t start_step)
    : status_(options.status) {
  fs::create_directories(options.dir);
  if (options.jsonl) jsonl_ = std::make_unique<MetricsJsonl>((fs::path(options.dir) / "metrics.jsonl").string(), start_step);
  if (options.tensorboard) tensorboard_ = std::make_unique<TensorBoardWriter>((fs::path(options.dir) / "tensorboard").string());
  if (options.progress) {
    progress_ = std::make_unique<ProgressBar>(options.label, total_steps, "steps");
    if (start_step > 0) progress_->advance(start_step, fmt::format("resumed at step {}", start_step));
  }
}

void TrainLogger::log_step(int64_t step, const std::map<std::string, double>& metrics) {
  if (jsonl_) jsonl_->append(step, metrics);
  if (tensorboard_) tensorboard_->add_scalars(step, metrics);
  if (progress_) progress_->advance(1, status_ ? status_(metrics) : std::string());
}

void TrainLogger::finish(const std::string& status) {
  if (progress_) progress_->finish(status);
}

}  // namespace vlreward
