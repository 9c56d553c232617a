#include "mpo/losses.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>

#include "adapters/common/error.h"

namespace vlreward::mpo {

namespace {

constexpr LossTerm kAllTerms[] = {LossTerm::kSigmoid, LossTerm::kBcoPair, LossTerm::kSft};

void check_vector(const torch::Tensor& t, const char* name, int64_t length) {
  if (!t.defined()) throw std::invalid_argument(std::string("MPO loss: ") + name + " log-probs are missing");
  if (t.dim() != 1 || t.size(0) != length || !t.is_floating_point())
    throw std::invalid_argument(std::string("MPO loss: ") + name + " log-probs must be a floating [" +
                                std::to_string(length) + "] tensor, got " + t.toString() + " of shape " +
                                c10::str(t.sizes()));
}

// Reference log-probs in the policy's dtype and device; shapes checked.
PreferenceLogps checked(const PreferenceLogps& in) {
  if (!in.chosen.defined()) throw std::invalid_argument("MPO loss: chosen log-probs are missing");
  const int64_t batch = in.chosen.dim() == 1 ? in.chosen.size(0) : -1;
  if (batch < 1) throw std::invalid_argument("MPO loss: chosen log-probs must be 1-D with at least one pair");
  check_vector(in.chosen, "chosen", batch);
  check_vector(in.rejected, "rejected", batch);
  check_vector(in.ref_chosen, "reference chosen", batch);
  check_vector(in.ref_rejected, "reference rejected", batch);
  if (in.rejected.scalar_type() != in.chosen.scalar_type())
    throw std::invalid_argument("MPO loss: chosen and rejected log-probs differ in dtype");
  const auto options = in.chosen.options();
  return {in.chosen, in.rejected, in.ref_chosen.to(options), in.ref_rejected.to(options)};
}

}  // namespace

std::string_view loss_term_name(LossTerm term) {
  switch (term) {
    case LossTerm::kSigmoid: return "sigmoid";
    case LossTerm::kBcoPair: return "bco_pair";
    case LossTerm::kSft: return "sft";
  }
  return "?";
}

LossTerm parse_loss_term(std::string_view name, const std::string& source) {
  for (LossTerm term : kAllTerms)
    if (loss_term_name(term) == name) return term;
  throw ConfigError(source, fmt::format("unknown loss type \"{}\" (expected one of sigmoid, bco_pair, sft)", name));
}

bool LossConfig::uses(LossTerm term) const { return std::find(terms.begin(), terms.end(), term) != terms.end(); }

double LossConfig::weight_sum() const {
  double sum = 0;
  for (double w : weights) sum += w;
  return sum;
}

void LossConfig::validate(const std::string& source) const {
  if (terms.empty()) throw ConfigError(source, "loss_type: at least one loss term is required");
  for (size_t i = 0; i < terms.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      if (terms[i] == terms[j])
        throw ConfigError(source, fmt::format("loss_type: \"{}\" appears twice (each term at most once)", loss_term_name(terms[i])));
  if (weights.size() != terms.size())
    throw ConfigError(source, fmt::format("loss_weights: {} weights for {} loss terms (need one per term)", weights.size(),
                      terms.size()));
  for (size_t i = 0; i < weights.size(); ++i)
    if (!std::isfinite(weights[i]) || weights[i] < 0)
      throw ConfigError(source, fmt::format("loss_weights[{}]: must be a finite number >= 0, got {}", i, weights[i]));
  if (!std::isfinite(beta) || beta <= 0) throw ConfigError(source, fmt::format("beta: must be a finite number > 0, got {}", beta));
  if (!std::isfinite(label_smoothing) || label_smoothing < 0 || label_smoothing >= 0.5)
    throw ConfigError(source, fmt::format("label_smoothing: must be in [0, 0.5), got {}", label_smoothing));
}

torch::Tensor dpo_sigmoid_losses(const PreferenceLogps& in, double beta, double label_smoothing) {
  const auto p = checked(in);
  const auto logratios = p.chosen - p.rejected;
  const auto ref_logratios = p.ref_chosen - p.ref_rejected;
  const auto logits = logratios - ref_logratios;
  return -torch::log_sigmoid(beta * logits) * (1 - label_smoothing) -
         torch::log_sigmoid(-beta * logits) * label_smoothing;
}

torch::Tensor bco_pair_batch_reward(const PreferenceLogps& in, double beta) {
  const auto p = checked(in);
  torch::NoGradGuard no_grad;
  const auto chosen_rewards = beta * (p.chosen - p.ref_chosen);
  const auto rejected_rewards = beta * (p.rejected - p.ref_rejected);
  return torch::cat({chosen_rewards, rejected_rewards}, 0).mean().detach();
}

torch::Tensor bco_pair_losses(const PreferenceLogps& in, double beta, double delta) {
  const auto p = checked(in);
  const auto chosen_logratios = p.chosen - p.ref_chosen;
  const auto rejected_logratios = p.rejected - p.ref_rejected;
  return -torch::log_sigmoid(beta * chosen_logratios - delta) - torch::log_sigmoid(-(beta * rejected_logratios - delta));
}

std::map<std::string, double> LossMetrics::to_map(bool trl_reward_scaling) const {
  std::map<std::string, double> out;
  out["rewards/chosen"] = trl_reward_scaling ? rewards_chosen : unscaled_rewards_chosen;
  out["rewards/rejected"] = trl_reward_scaling ? rewards_rejected : unscaled_rewards_rejected;
  out["rewards/margins"] = trl_reward_scaling ? rewards_margins : unscaled_rewards_margins;
  out["rewards/accuracies"] = rewards_accuracies;
  out["rewards_unscaled/chosen"] = unscaled_rewards_chosen;
  out["rewards_unscaled/rejected"] = unscaled_rewards_rejected;
  out["rewards_unscaled/margins"] = unscaled_rewards_margins;
  out["logps/chosen"] = logps_chosen;
  out["logps/rejected"] = logps_rejected;
  if (nll_loss) out["nll_loss"] = *nll_loss;
  if (delta) out["delta"] = *delta;
  for (const auto& [name, value] : term_means) out["loss/" + name] = value;
  return out;
}

LossResult compute_mpo_loss(const LossConfig& config, const PreferenceLogps& in, const torch::Tensor& sft_nll,
                            RunningMoments* running, std::optional<double> delta) {
  config.validate("MPO loss config");
  if (!config.bco_reward_shift) delta = 0.0;  // δ fixed: the running moments are not touched
  const auto p = checked(in);
  const int64_t batch = p.chosen.size(0);
  if (config.uses(LossTerm::kBcoPair) && running == nullptr && !delta)
    throw std::invalid_argument("MPO loss: bco_pair needs the RunningMoments of its reward shift");
  torch::Tensor nll;
  if (config.uses(LossTerm::kSft)) {
    if (!sft_nll.defined() || sft_nll.numel() != 1 || !sft_nll.is_floating_point())
      throw std::invalid_argument("MPO loss: sft needs the chosen completions' NLL as a floating scalar");
    nll = sft_nll.reshape({}).to(p.chosen.options());
  }

  LossResult result;
  // The β·z rewards of every term (TRL recomputes them at the end of dpo_loss, also for sft).
  {
    torch::NoGradGuard no_grad;
    result.chosen_rewards = (config.beta * (p.chosen - p.ref_chosen)).detach();
    result.rejected_rewards = (config.beta * (p.rejected - p.ref_rejected)).detach();
  }
  torch::Tensor per_pair, scaled_chosen, scaled_rejected;
  for (size_t i = 0; i < config.terms.size(); ++i) {
    torch::Tensor term;
    switch (config.terms[i]) {
      case LossTerm::kSigmoid:
        term = dpo_sigmoid_losses(p, config.beta, config.label_smoothing);
        break;
      case LossTerm::kBcoPair: {
        if (delta) {
          result.delta = *delta;
        } else {
          running->update(bco_pair_batch_reward(p, config.beta));
          result.delta = running->mean();
        }
        term = bco_pair_losses(p, config.beta, *result.delta);
        break;
      }
      case LossTerm::kSft:
        term = nll.expand({batch});
        break;
    }
    const double weight = config.weights[i];
    // Accumulated in TRL's order (losses = 0 + l0*w0 + l1*w1 + ...), so float64 sums match bit for bit.
    per_pair = per_pair.defined() ? per_pair + term * weight : term * weight;
    scaled_chosen = scaled_chosen.defined() ? scaled_chosen + result.chosen_rewards * weight
                                            : result.chosen_rewards * weight;
    scaled_rejected = scaled_rejected.defined() ? scaled_rejected + result.rejected_rewards * weight
                                                : result.rejected_rewards * weight;
    result.term_losses.push_back(term);
  }
  result.per_pair = per_pair;
  result.loss = per_pair.mean();

  torch::NoGradGuard no_grad;
  auto& m = result.metrics;
  m.reward_scale = config.weight_sum();
  m.rewards_chosen = scaled_chosen.mean().item<double>();
  m.rewards_rejected = scaled_rejected.mean().item<double>();
  m.rewards_accuracies = (scaled_chosen > scaled_rejected).to(torch::kFloat32).mean().item<double>();
  m.rewards_margins = (scaled_chosen - scaled_rejected).mean().item<double>();
  m.unscaled_rewards_chosen = result.chosen_rewards.mean().item<double>();
  m.unscaled_rewards_rejected = result.rejected_rewards.mean().item<double>();
  m.unscaled_rewards_margins = (result.chosen_rewards - result.rejected_rewards).mean().item<double>();
  m.logps_chosen = p.chosen.detach().mean().item<double>();
  m.logps_rejected = p.rejected.detach().mean().item<double>();
  if (nll.defined()) m.nll_loss = nll.detach().item<double>();
  m.delta = result.delta;
  for (size_t i = 0; i < config.terms.size(); ++i)
    m.term_means[std::string(loss_term_name(config.terms[i]))] = result.term_losses[i].detach().mean().item<double>();
  return result;
}

}  // namespace vlreward::mpo
