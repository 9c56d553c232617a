#include "mpo/online.h"

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "adapters/common/atomic_file.h"
#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "adapters/common/mapped_file.h"
#include "adapters/common/progress.h"
#include "adapters/common/train_log.h"
#include "mpo/checkpoint.h"
#include "mpo/monitor.h"
#include "mpo/rollout.h"
#include "reward/backends.h"

namespace vlreward::mpo {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kPairsFile = "pairs.jsonl";
constexpr const char* kStatsFile = "stats.json";
constexpr const char* kDoneFile = "DONE";

std::string path_in(const std::string& dir, const char* name) { return (fs::path(dir) / name).string(); }
bool is_done(const std::string& output, int64_t round) { return fs::exists(path_in(round_dir(output, round), kDoneFile)); }

bool holds_online_run(const std::string& output) {
  std::error_code ec;
  if (!fs::is_directory(output, ec)) return false;
  if (!list_checkpoints(output).empty()) return true;
  for (const auto& entry : fs::directory_iterator(output))
    if (entry.is_directory() && entry.path().filename().string().rfind("round-", 0) == 0) return true;
  return false;
}

json parse_json_file(const std::string& path) { return read_json_file(path, "not valid JSON"); }

// The pair statistics back from a round's stats.json (a reused round reports what it built).
PairStats stats_from_json(const json& j, const std::string& path) {
  try {
    PairStats s;
    s.prompts = j.at("prompts").get<int64_t>();
    s.responses = j.at("responses").get<int64_t>();
    s.responses_scored = j.at("responses_scored").get<int64_t>();
    s.reward_errors = j.at("reward_errors").get<int64_t>();
    s.pairs = j.at("pairs").get<int64_t>();
    s.prompts_paired = j.at("prompts_paired").get<int64_t>();
    const json& d = j.at("dropped");
    s.dropped_too_few_scored = d.at("too_few_scored").get<int64_t>();
    s.dropped_tie = d.at("tie").get<int64_t>();
    s.dropped_margin = d.at("margin").get<int64_t>();
    s.dropped_duplicate = d.at("duplicate").get<int64_t>();
    s.drop_rate = j.at("drop_rate").get<double>();
    s.reward_mean = j.at("reward").at("mean").get<double>();
    s.reward_min = j.at("reward").at("min").get<double>();
    s.reward_max = j.at("reward").at("max").get<double>();
    s.margin_mean = j.at("margin_mean").get<double>();
    for (const auto& bin : j.at("margin_histogram")) s.margin_histogram.push_back(bin.at("count").get<int64_t>());
    return s;
  } catch (const json::exception& e) {
    throw InputError(path, fmt::format("not a pair statistics file: {}", e.what()));
  }
}

// A round's pairs as the loop uses them: their statistics and the monitors of the samples they came from.
struct RoundPairs {
  PairStats stats;
  std::map<std::string, double> monitor;  // "monitor/sample_*" (empty without monitors)
};

RoundPairs read_round_stats(const std::string& stats_path) {
  const json j = parse_json_file(stats_path);
  RoundPairs out{stats_from_json(j, stats_path), {}};
  if (j.contains("monitor") && j["monitor"].is_object())
    for (const auto& [key, value] : j["monitor"].items())
      if (value.is_number()) out.monitor[key] = value.get<double>();
  return out;
}

// The round summary lines ("round_summary") of metrics.jsonl, each as its numeric values.
std::vector<std::map<std::string, double>> round_summary_lines(const std::string& metrics_path) {
  std::vector<std::map<std::string, double>> lines;
  std::ifstream in(metrics_path, std::ios::binary);
  for (std::string line; std::getline(in, line);) {
    json record = json::parse(line, nullptr, false);
    if (!record.is_object() || !record.contains("round_summary")) continue;
    std::map<std::string, double> values;
    for (const auto& [key, value] : record.items())
      if (value.is_number()) values[key] = value.get<double>();
    lines.push_back(std::move(values));
  }
  return lines;
}

// Mean training metrics of round r's optimizer steps: from metrics.jsonl when it is kept (steps before a resume
// count too), else from the steps this process ran.
std::map<std::string, double> round_training_means(const std::string& metrics_path, int64_t round,
                                                   const std::vector<std::map<std::string, double>>& steps_here) {
  std::vector<std::map<std::string, double>> steps;
  if (!metrics_path.empty() && fs::exists(metrics_path)) {
    std::ifstream in(metrics_path, std::ios::binary);
    for (std::string line; std::getline(in, line);) {
      json record;
      try {
        record = json::parse(line);
      } catch (const json::exception&) {
        continue;
      }
      if (!record.is_object() || record.contains("round_summary") || !record.contains("round") ||
          record["round"].get<double>() != static_cast<double>(round))
        continue;
      std::map<std::string, double> values;
      for (const auto& [key, value] : record.items())
        if (value.is_number()) values[key] = value.get<double>();
      steps.push_back(std::move(values));
    }
  } else {
    steps = steps_here;
  }
  std::map<std::string, double> out{{"train/steps", static_cast<double>(steps.size())}};
  if (steps.empty()) return out;
  std::map<std::string, double> sums;
  for (const auto& step : steps)
    for (const auto& [key, value] : step)
      if (key != "step" && key != "round" && key != "epoch" && key != "lr" && key != "tokens_per_second") sums[key] += value;
  for (const auto& [key, sum] : sums) out["train/" + key + "_mean"] = sum / static_cast<double>(steps.size());
  out["train/loss_first"] = steps.front().count("loss") ? steps.front().at("loss") : 0.0;
  out["train/loss_last"] = steps.back().count("loss") ? steps.back().at("loss") : 0.0;
  return out;
}

// Samples, scores and pairs round r; writes pairs.jsonl then stats.json (atomically, in that order).
// Across ranks: rank r samples prompts r, r + W, … (each response's generator is seeded by its prompt and index, so
// the responses are those one process samples); rank 0 gathers them, scores, pairs and writes the files, and the
// other ranks read the statistics back once it has.
RoundPairs build_round(MpoTrainer& trainer, const TrainConfig& config, const std::vector<PromptRecord>& prompts,
                       const std::string& image_root, RewardBackend* reward, RoundMonitor* monitor, int64_t round,
                       const std::string& dir, dist::ProcessGroup& group) {
  const auto& on = *config.online;
  RolloutOptions rollout;
  rollout.sampling.greedy = on.temperature == 0;
  rollout.sampling.temperature = on.temperature == 0 ? 1.0 : on.temperature;
  rollout.sampling.top_p = on.top_p;
  rollout.sampling.top_k = on.top_k;
  rollout.sampling.max_new_tokens = on.max_new_tokens;
  rollout.sampling.seed = on.seed + static_cast<uint64_t>(round);
  rollout.batch_size = on.batch_size;
  const auto world = static_cast<size_t>(group.world_size());
  std::vector<PromptRecord> mine;
  for (size_t i = static_cast<size_t>(group.rank()); i < prompts.size(); i += world) mine.push_back(prompts[i]);
  std::unique_ptr<ProgressBar> progress;
  const int64_t rows = static_cast<int64_t>(prompts.size()) * on.samples_per_prompt;
  if (config.output.progress && group.is_main())
    progress = std::make_unique<ProgressBar>(fmt::format("round {} sample", round),
                                             static_cast<int64_t>(mine.size()) * on.samples_per_prompt, "responses");
  int64_t reported = 0;
  const auto sampled = sample_responses(trainer.policy(), trainer.processor(), mine, on.samples_per_prompt, rollout,
                                        [&](int64_t done, int64_t) {
                                          if (progress) progress->advance(done - reported);
                                          reported = done;
                                        });
  if (progress) progress->finish();
  json local{{"texts", json::array()}, {"lengths", json::array()}, {"tokens", 0}, {"stopped", 0}};
  for (const auto& responses : sampled) {
    json row = json::array(), lengths = json::array();
    for (const auto& response : responses) {
      row.push_back(response.text);
      lengths.push_back(response.tokens.size());
      local["tokens"] = local["tokens"].get<int64_t>() + static_cast<int64_t>(response.tokens.size());
      local["stopped"] = local["stopped"].get<int64_t>() + (response.stopped ? 1 : 0);
    }
    local["texts"].push_back(row);
    local["lengths"].push_back(lengths);
  }
  const auto parts = group.all_gather_text(local.dump());
  if (!group.is_main()) {
    group.barrier();  // rank 0 writes the round's files
    return read_round_stats(path_in(dir, kStatsFile));
  }
  std::vector<std::vector<std::string>> texts(prompts.size());
  std::vector<std::vector<int64_t>> lengths(prompts.size());
  int64_t tokens = 0, stopped = 0;
  for (size_t r = 0; r < parts.size(); ++r) {
    const json part = json::parse(parts[r]);
    tokens += part.at("tokens").get<int64_t>();
    stopped += part.at("stopped").get<int64_t>();
    const auto& rows_of_rank = part.at("texts");
    const auto& lengths_of_rank = part.at("lengths");
    for (size_t k = 0; k < rows_of_rank.size(); ++k) {
      texts[r + k * world] = rows_of_rank[k].get<std::vector<std::string>>();
      lengths[r + k * world] = lengths_of_rank[k].get<std::vector<int64_t>>();
    }
  }
  PairOptions options = on.pairs;
  options.seed = on.seed + static_cast<uint64_t>(round);
  BuiltPairs built = build_pairs(prompts, texts, *reward, options, on.reward_batch_size);
  RoundPairs out{built.stats, {}};
  if (monitor) out.monitor = monitor->on_samples(prompts, built.scored, lengths);

  fs::create_directories(dir);
  const std::string pairs_path = path_in(dir, kPairsFile);
  write_pairs_jsonl(pairs_path, built.lines);
  json stats = built.stats.to_json();
  stats["round"] = round;
  stats["pairs_file"] = {{"path", pairs_path}, {"crc32c", fingerprint_file(pairs_path, built.stats.pairs).crc32c}};
  stats["sampling"] = {{"seed", rollout.sampling.seed},
                       {"mean_tokens", rows > 0 ? static_cast<double>(tokens) / static_cast<double>(rows) : 0.0},
                       {"stopped_fraction", rows > 0 ? static_cast<double>(stopped) / static_cast<double>(rows) : 0.0}};
  stats["reward_backend"] = reward->name();
  stats["image_root"] = image_root;  // relative image references in pairs.jsonl are relative to it
  if (monitor) stats["monitor"] = out.monitor;
  write_file_atomic(path_in(dir, kStatsFile), stats.dump(2) + "\n");
  group.barrier();
  return out;
}

// The end-of-run monitor summary: <output>/monitor_summary.json (every round of the run: from metrics.jsonl when it
// is kept, so rounds before a resume count) and a table on the console.
void report_monitors(const std::string& output, const std::string& metrics_path,
                     const std::vector<std::map<std::string, double>>& rounds_here) {
  const auto lines = !metrics_path.empty() && fs::exists(metrics_path) ? round_summary_lines(metrics_path) : rounds_here;
  const json summary = monitor_summary(lines);
  write_file_atomic(path_in(output, "monitor_summary.json"), summary.dump(2) + "\n");
  std::fprintf(stderr, "mpo-train: monitors (%lld alarms; %s):\n%s", static_cast<long long>(summary["alarms"].get<int64_t>()),
               path_in(output, "monitor_summary.json").c_str(), monitor_table(summary).c_str());
}

}  // namespace

std::string round_dir(const std::string& output_dir, int64_t round) {
  return (fs::path(output_dir) / fmt::format("round-{}", round)).string();
}

OnlineResult run_online(const TrainConfig& config, const std::optional<std::string>& resume, RewardBackend* reward,
                        const OnlineHooks& hooks, std::shared_ptr<dist::ProcessGroup> group) {
  if (!config.online) throw std::invalid_argument("run_online: the config has no online section");
  if (!group) group = std::make_shared<dist::ProcessGroup>();
  const bool main_rank = group->is_main();  // rank 0 scores, pairs and writes; every rank samples and trains
  const auto& on = *config.online;
  const std::string& output = config.output.dir;
  std::unique_ptr<RewardBackend> owned;
  if (reward == nullptr && main_rank) {  // first: a bad reward config fails before any model is loaded
    owned = make_reward_backend(config.reward);
    reward = owned.get();
  }
  const auto prompts = read_prompt_jsonl(on.prompts, config.data.image_root);
  const std::string image_root = jsonl_image_root(on.prompts, config.data.image_root);
  const bool require_rejected = !config.sft_only();

  std::optional<std::string> checkpoint;
  if (resume) {
    checkpoint = resolve_resume(*resume, output);
    if (!checkpoint) std::fprintf(stderr, "mpo-train: no checkpoint in %s yet; starting from the initial policy\n", output.c_str());
  } else if (holds_online_run(output)) {
    throw InputError(output, "already holds an online run (round-*/ or checkpoints): pass --resume auto to continue it, "
                             "or choose another --output-dir");
  }
  group->barrier();  // every rank has looked at the directory before rank 0 writes into it
  if (main_rank) fs::create_directories(output);
  group->barrier();

  MpoTrainer trainer(config, group);
  if (checkpoint) {
    const int64_t round = checkpoint_round(*checkpoint);
    if (round < 0)
      throw InputError(*checkpoint, "is an offline checkpoint (it records no round); an online run resumes from its own");
    const std::string pairs_path = path_in(round_dir(output, round), kPairsFile);
    if (!fs::exists(pairs_path))
      throw InputError(pairs_path, fmt::format("missing: the checkpoint {} trained on it (round {})", *checkpoint, round));
    const auto data = read_preference_jsonl(pairs_path, image_root, require_rejected);
    trainer.resume(*checkpoint, fingerprint_file(pairs_path, static_cast<int64_t>(data.size())));
    std::fprintf(stderr, "mpo-train: resumed from %s (round %lld, step %lld)\n", checkpoint->c_str(),
                 static_cast<long long>(round), static_cast<long long>(trainer.state().global_step));
  }

  std::string metrics_path;
  std::unique_ptr<MetricsJsonl> metrics;
  if (config.output.jsonl && main_rank) {
    metrics_path = path_in(output, "metrics.jsonl");
    const int64_t resume_step = trainer.state().global_step;
    metrics = std::make_unique<MetricsJsonl>(metrics_path, [&](const json& line) {
      // A round line of a round without DONE (killed between the line and the marker) would be written again.
      auto round = line.find("round");
      if (line.contains("round_summary") && round != line.end() && round->is_number_integer() &&
          !is_done(output, round->get<int64_t>()))
        return false;
      auto step = line.find("step");
      return step != line.end() && step->is_number_integer() && step->get<int64_t>() <= resume_step;
    });
  }
  std::unique_ptr<TensorBoardWriter> tensorboard;
  if (config.output.tensorboard && main_rank)
    tensorboard = std::make_unique<TensorBoardWriter>(path_in(output, "tensorboard"));

  // Rank 0 monitors the rounds (online.monitor); the other ranks only learn whether to stop.
  std::unique_ptr<RoundMonitor> monitor;
  std::vector<std::map<std::string, double>> rounds_here;  // this process's round lines, for the summary
  if (on.monitor && main_rank) {
    monitor = std::make_unique<RoundMonitor>(*on.monitor, config.data.image_root, on.max_new_tokens, on.batch_size,
                                             on.reward_batch_size);
    if (monitor->has_heldout() && !trainer.can_run_reference())
      std::fprintf(stderr, "mpo-train: online.monitor: this run has no reference model, so monitor/kl is not measured\n");
  }

  // Console name of a round: its directory and its place in the run, "round-0 (1/2)".
  auto label = [&](int64_t round) { return fmt::format("round-{} ({}/{})", round, round + 1, on.rounds); };
  OnlineResult result;
  for (int64_t round = 0; round < on.rounds; ++round) {
    const std::string dir = round_dir(output, round);
    const std::string pairs_path = path_in(dir, kPairsFile);
    const std::string stats_path = path_in(dir, kStatsFile);
    if (is_done(output, round)) {
      // A trained round's weights must be in the policy: its checkpoint (or a later one) was resumed.
      const PairStats stats = stats_from_json(parse_json_file(stats_path), stats_path);
      if (stats.pairs > 0 && trainer.state().round < round)
        throw InputError(dir, fmt::format("is DONE, but the newest checkpoint is of round {}: its checkpoints are gone",
                                          trainer.state().round));
      std::fprintf(stderr, "mpo-train: %s: done earlier, skipped\n", label(round).c_str());
      ++result.rounds_skipped;
      continue;
    }
    if (round < trainer.state().round)
      throw InputError(dir, fmt::format("has no DONE marker, but the resumed checkpoint is of the later round {}",
                                        trainer.state().round));

    RoundPairs round_pairs;
    if (fs::exists(stats_path) && fs::exists(pairs_path)) {
      round_pairs = read_round_stats(stats_path);
      std::fprintf(stderr, "mpo-train: %s: reusing the pairs in %s\n", label(round).c_str(), pairs_path.c_str());
    } else {
      round_pairs = build_round(trainer, config, prompts, image_root, reward, monitor.get(), round, dir, *group);
    }
    const PairStats& stats = round_pairs.stats;
    std::fprintf(stderr, "mpo-train: %s pairs: %s\n", label(round).c_str(), stats.summary().c_str());

    std::vector<std::map<std::string, double>> steps_here;
    if (stats.pairs > 0) {
      // Train on the pairs as read back from the file: a resumed round sees exactly what a fresh one saw.
      const auto data = read_preference_jsonl(pairs_path, image_root, require_rejected);
      const auto fingerprint = fingerprint_file(pairs_path, static_cast<int64_t>(data.size()));
      TrainCallbacks callbacks = hooks.train;
      callbacks.on_step = [&](const StepMetrics& m) {
        if (metrics) metrics->append(m.step, m.values);
        steps_here.push_back(m.values);
        if (hooks.train.on_step) hooks.train.on_step(m);
      };
      trainer.train_round(round, data, fingerprint, callbacks);
    } else {
      std::fprintf(stderr, "mpo-train: %s: no pairs, nothing to train\n", label(round).c_str());
    }

    std::map<std::string, double> summary = stats.to_metrics();
    for (const auto& [key, value] : round_training_means(metrics_path, round, steps_here)) summary[key] = value;
    summary["round"] = static_cast<double>(round);
    summary["round_summary"] = 1;
    std::vector<FiredAlarm> fired;
    if (monitor) {
      for (const auto& [key, value] : round_pairs.monitor) summary[key] = value;
      for (const auto& [key, value] : monitor->on_policy(trainer)) summary[key] = value;
      fired = monitor->check(summary);
      summary["monitor/alarms"] = static_cast<double>(fired.size());
      for (const auto& alarm : fired)
        std::fprintf(stderr, "mpo-train: %s: ALARM %s\n", label(round).c_str(), alarm.message.c_str());
      rounds_here.push_back(summary);
    }
    const int64_t step = trainer.state().global_step;
    if (metrics) metrics->append(step, summary);
    if (tensorboard) tensorboard->add_scalars(step, summary);
    std::fprintf(stderr, "mpo-train: %s done: %lld steps, loss %.4f -> %.4f (global step %lld)\n",
                 label(round).c_str(),
                 static_cast<long long>(summary["train/steps"]), summary["train/loss_first"], summary["train/loss_last"],
                 static_cast<long long>(step));
    if (main_rank)
      write_file_atomic(path_in(dir, kDoneFile),
                        json{{"round", round}, {"global_step", step}, {"pairs", stats.pairs}}.dump() + "\n");
    group->barrier();
    ++result.rounds_trained;
    if (hooks.on_round_done) hooks.on_round_done(round, stats);
    if (on.monitor) {
      // Rank 0 alone monitors; every rank stops with it.
      std::string stop_reason;
      for (const auto& alarm : fired)
        if (alarm.alarm.stop) stop_reason += (stop_reason.empty() ? "" : "; ") + alarm.message;
      if (group->world_size() > 1) stop_reason = group->all_gather_text(stop_reason).at(0);
      if (!stop_reason.empty()) {
        if (monitor) report_monitors(output, metrics_path, rounds_here);
        throw MonitorStop(fmt::format("stopped by a monitor alarm after {}: {}. The round's checkpoint is kept: "
                                      "--resume auto goes on with the next round",
                                      label(round), stop_reason));
      }
    }
  }
  if (monitor) report_monitors(output, metrics_path, rounds_here);

  const std::string final_dir = path_in(output, "final_model");
  if (main_rank) {
    const std::string temp_dir = path_in(output, ".tmp-final_model");
    fs::remove_all(temp_dir);
    trainer.export_policy(temp_dir);
    commit_directory(temp_dir, final_dir);
  }
  group->barrier();
  std::fprintf(stderr, "mpo-train: %lld rounds (%lld skipped), %lld steps; final policy in %s\n",
               static_cast<long long>(on.rounds), static_cast<long long>(result.rounds_skipped),
               static_cast<long long>(trainer.state().global_step), final_dir.c_str());
  result.final_dir = final_dir;
  return result;
}

}  // namespace vlreward::mpo
