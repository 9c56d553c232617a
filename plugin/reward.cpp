#include "plugin/reward.h"

namespace vlreward {

RewardRequest RewardRequest::single_turn(std::string id, std::vector<RewardImage> images, std::string question,
                                         std::string response, std::optional<std::string> reference) {
  RewardRequest r;
  r.id = std::move(id);
  RewardTurn user{"user", {}};
  for (auto& image : images) user.content.push_back(RewardContent::image_part(std::move(image)));
  user.content.push_back(RewardContent::text_part(std::move(question)));
  r.turns.push_back(std::move(user));
  r.response = std::move(response);
  r.reference = std::move(reference);
  return r;
}

size_t RewardRequest::image_count() const {
  size_t n = 0;
  for (const auto& turn : turns)
    for (const auto& part : turn.content) n += part.kind == RewardContent::Kind::kImage ? 1 : 0;
  return n;
}

}  // namespace vlreward
