#pragma once
// Online MPO (mpo-train with an `online:` section): rounds of
//   sample online.samples_per_prompt responses per prompt from the current policy (mpo/rollout.h; round r uses
//   sampling seed online.seed + r) → score them with the reward backend → build pairs (mpo/pair_builder.h) →
//   online.epochs_per_round MPO epochs on that round's pairs (MpoTrainer::train_round),
// with the reference fixed to the initial policy (the trainer's frozen copy), then the policy exported to
// <output>/final_model as offline runs do.
//
// Run directory:
//   round-<r>/pairs.jsonl   the round's pairs ({"id", "prompt_id", "images", "question", "chosen", "rejected",
//                           "chosen_score", "rejected_score"}), written atomically before any training on them
//   round-<r>/stats.json    pair statistics (written after pairs.jsonl: its presence means the pairs are complete)
//   round-<r>/DONE          written once the round's training finished (and its last checkpoint was saved)
//   checkpoint-<step>/      the trainer's checkpoints; global steps count across rounds, and each records its round
//   metrics.jsonl           one line per optimizer step (with "round") and one per finished round
//                           ("round_summary": 1, pair statistics, mean training losses of the round, and with
//                           online.monitor the round's monitor/* values and alarm count: mpo/monitor.h)
//   monitor_summary.json    with online.monitor: every round's monitor values and the number of alarms
//
// Monitors: after a round's training, rank 0 measures (mpo/monitor.h) and checks the alarms; a warn alarm is printed,
// a stop alarm ends the run once the round is DONE (MonitorStop), so --resume auto goes on with the next round.
//
// Resume (--resume auto): rounds with DONE are skipped. The newest checkpoint carries its round r_c; the trainer
// resumes from it with round-<r_c>/pairs.jsonl as its data (same fingerprint, or the resume is refused). If r_c
// is not DONE its training continues mid-round on the same pairs; otherwise round r_c + 1 starts from that
// checkpoint. A round whose pairs were written but whose training had not checkpointed yet reuses its pairs.json
// (sampled from the same policy state). So a kill anywhere gives, after --resume auto, the weights an
// uninterrupted run gives.
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include "mpo/pair_builder.h"
#include "mpo/train_config.h"
#include "mpo/trainer.h"
#include "plugin/reward.h"

namespace vlreward::mpo {

// A stop alarm of the monitors (online.monitor) ended the run after a round; the message names the alarm.
struct MonitorStop : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct OnlineHooks {
  // Called after each optimizer step / checkpoint (tests use them to stop a run at a chosen point).
  TrainCallbacks train;
  // Called once a round is done (pairs built or reused, trained, DONE written).
  std::function<void(int64_t round, const PairStats& stats)> on_round_done;
};

struct OnlineResult {
  std::string final_dir;
  int64_t rounds_trained = 0;  // rounds run (or finished) by this call
  int64_t rounds_skipped = 0;  // DONE before this call
};

// `resume`: nullopt = a fresh run (refused if the output dir already holds rounds or checkpoints), "auto" or a
// checkpoint dir. `reward`: the backend to score with; null = created from config.reward through the registry.
// `group`: the ranks of a data-parallel run (none: one process). Every rank samples its share of the prompts
// (prompts r, r + W, …) and trains (MpoTrainer's data parallelism); rank 0 alone holds the reward backend, scores
// every response, builds the pairs and writes the run's files. The pairs are those one process builds, so W ranks
// with accumulation k repeat one process with accumulation W·k.
// Throws InputError / ConfigError naming the file or key at fault.
OnlineResult run_online(const TrainConfig& config, const std::optional<std::string>& resume,
                        RewardBackend* reward = nullptr, const OnlineHooks& hooks = {},
                        std::shared_ptr<dist::ProcessGroup> group = nullptr);

// <output>/round-<r>
std::string round_dir(const std::string& output_dir, int64_t round);

}  // namespace vlreward::mpo
