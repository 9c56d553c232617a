#pragma once
// Where a trainer's per-step metrics go (mpo-train and reward-train alike): a console progress line, a JSONL file
// (one object per optimizer step, full double precision) and TensorBoard event files (written here without
// TensorFlow: the TFRecord framing and the Event protobuf, see tensorboard_event.proto).
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "adapters/common/progress.h"

namespace vlreward {

// One TFRecord: u64 little-endian length, u32 masked crc32c of those 8 bytes, the data, u32 masked crc32c of
// the data (tensorflow/core/lib/io/record_writer.cc).
std::string tf_record(std::string_view data);

// Serialised Event protos (exposed for the framing test).
std::string tensorboard_file_version_event(double wall_time);
std::string tensorboard_scalars_event(double wall_time, int64_t step, const std::map<std::string, double>& scalars);

// Appends events to <dir>/events.out.tfevents.<time>.<host>.<pid>; a new file per writer (TensorBoard merges
// the files of one directory), starting with the file_version "brain.Event:2" event.
class TensorBoardWriter {
 public:
  explicit TensorBoardWriter(const std::string& dir);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void add_scalars(int64_t step, const std::map<std::string, double>& scalars);
  const std::string& path() const { return path_; }

 private:
  void write_record(const std::string& event);
  std::string path_;
  std::FILE* file_ = nullptr;
};

// metrics.jsonl: one {"step": n, ...} line per optimizer step (a trainer may add lines of its own, such as an
// evaluation). Opening for a resumed run keeps only the lines `keep` accepts — those of the work the run does not
// redo — and drops a torn last line, so the file is again the run's history exactly once per step.
class MetricsJsonl {
 public:
  using KeepLine = std::function<bool(const nlohmann::json& line)>;
  MetricsJsonl(const std::string& path, const KeepLine& keep);
  // Keeps the lines of steps up to `resume_step` (the last checkpoint's).
  MetricsJsonl(const std::string& path, int64_t resume_step);
  ~MetricsJsonl();
  MetricsJsonl(const MetricsJsonl&) = delete;
  MetricsJsonl& operator=(const MetricsJsonl&) = delete;
  void append(int64_t step, const std::map<std::string, double>& metrics);
  void append(const nlohmann::json& line);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

struct TrainLogOptions {
  std::string dir;  // the run's output directory
  bool jsonl = true;
  bool tensorboard = true;
  bool progress = true;
  std::string label = "train";  // the progress bar's name
  // The progress bar's status text from a step's metrics.
  std::function<std::string(const std::map<std::string, double>&)> status;
};

// All three sinks behind one call per step.
class TrainLogger {
 public:
  // total_steps: the progress bar's end; start_step: the step the run (re)starts from.
  TrainLogger(const TrainLogOptions& options, int64_t total_steps, int64_t start_step);
  void log_step(int64_t step, const std::map<std::string, double>& metrics);
  void finish(const std::string& status);

 private:
  std::function<std::string(const std::map<std::string, double>&)> status_;
  std::unique_ptr<MetricsJsonl> jsonl_;
  std::unique_ptr<TensorBoardWriter> tensorboard_;
  std::unique_ptr<ProgressBar> progress_;
};

}  // namespace vlreward
