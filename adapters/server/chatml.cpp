#include "adapters/server/chatml.h"

#include <fmt/format.h>

#include "adapters/server/error.h"

namespace vlreward {
namespace {

constexpr std::string_view kImStart = "<|im_start|>";
constexpr std::string_view kImEnd = "<|im_end|>";
constexpr std::string_view kEndOfText = "<|endoftext|>";
constexpr std::string_view kVisionStart = "<|vision_start|>";
constexpr std::string_view kVisionEnd = "<|vision_end|>";
constexpr std::string_view kImagePad = "<|image_pad|>";
constexpr std::string_view kVideoPad = "<|video_pad|>";

struct Block {
  std::string role;
  std::string_view content;
};

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// Skips whitespace and "<|endoftext|>" padding.
std::string_view skip_padding(std::string_view s) {
  while (true) {
    const auto first = s.find_first_not_of(" \t\r\n");
    if (first == std::string_view::npos) return {};
    s.remove_prefix(first);
    if (!starts_with(s, kEndOfText)) return s;
    s.remove_prefix(kEndOfText.size());
  }
}

std::string_view strip_trailing_padding(std::string_view s) {
  while (s.size() >= kEndOfText.size() && s.substr(s.size() - kEndOfText.size()) == kEndOfText)
    s.remove_suffix(kEndOfText.size());
  return s;
}

std::optional<std::vector<Block>> split_chatml(std::string_view text) {
  std::vector<Block> blocks;
  std::string_view rest = skip_padding(text);
  if (!starts_with(rest, kImStart)) return std::nullopt;
  while (!rest.empty()) {
    if (!starts_with(rest, kImStart)) return std::nullopt;
    rest.remove_prefix(kImStart.size());
    const auto newline = rest.find('\n');
    if (newline == std::string_view::npos) return std::nullopt;
    Block block{std::string(rest.substr(0, newline)), {}};
    if (block.role != "system" && block.role != "user" && block.role != "assistant") return std::nullopt;
    rest.remove_prefix(newline + 1);
    const auto end = rest.find(kImEnd);
    const auto next_start = rest.find(kImStart);
    if (end == std::string_view::npos) {
      // Only the final response may lack its end marker (generation cut at max length).
      if (next_start != std::string_view::npos || block.role != "assistant") return std::nullopt;
      block.content = strip_trailing_padding(rest);
      blocks.push_back(block);
      break;
    }
    if (next_start != std::string_view::npos && next_start < end) return std::nullopt;
    block.content = rest.substr(0, end);
    blocks.push_back(block);
    rest = skip_padding(rest.substr(end + kImEnd.size()));
  }
  return blocks;
}

size_t count_placeholders(std::string_view text) {
  size_t n = 0;
  for (size_t pos = text.find(kVisionStart); pos != std::string_view::npos; pos = text.find(kVisionStart, pos + 1)) ++n;
  return n;
}

// Splits a turn's text at image placeholders; the image parts are filled in by the caller.
std::vector<RewardContent> split_turn(std::string_view text, const std::string& where) {
  std::vector<RewardContent> parts;
  std::string pending;
  while (true) {
    const auto start = text.find(kVisionStart);
    if (start == std::string_view::npos) break;
    const auto end = text.find(kVisionEnd, start);
    if (end == std::string_view::npos)
      throw ServeError(ServeErrorKind::kBadRequest, where + ": \"<|vision_start|>\" without a matching \"<|vision_end|>\"");
    std::string_view inner = text.substr(start + kVisionStart.size(), end - start - kVisionStart.size());
    bool image = !inner.empty();
    bool video = !inner.empty();
    for (std::string_view s = inner; !s.empty();) {
      if (starts_with(s, kImagePad)) {
        video = false;
        s.remove_prefix(kImagePad.size());
      } else if (starts_with(s, kVideoPad)) {
        image = false;
        s.remove_prefix(kVideoPad.size());
      } else {
        image = video = false;
        break;
      }
    }
    if (video) throw ServeError(ServeErrorKind::kBadRequest, where + ": video placeholders are not supported");
    if (!image)
      throw ServeError(ServeErrorKind::kBadRequest,
                       where + ": a vision block must hold only \"<|image_pad|>\" tokens");
    pending.append(text.substr(0, start));
    if (!pending.empty()) parts.push_back(RewardContent::text_part(std::move(pending)));
    pending.clear();
    parts.push_back(RewardContent::image_part({}));
    text.remove_prefix(end + kVisionEnd.size());
  }
  pending.append(text);
  if (!pending.empty() || parts.empty()) parts.push_back(RewardContent::text_part(std::move(pending)));
  return parts;
}

void prepend_images(RewardTurn& turn, std::vector<RewardImage>& images) {
  std::vector<RewardContent> parts;
  for (auto& image : images) parts.push_back(RewardContent::image_part(std::move(image)));
  for (auto& part : turn.content) parts.push_back(std::move(part));
  turn.content = std::move(parts);
}

}  // namespace

PolicyTextResult request_from_policy_text(std::string_view text, std::optional<std::string_view> prompt,
                                          std::vector<RewardImage> images, const std::string& where,
                                          const PromptImageLookup& lookup) {
  PolicyTextResult out;
  auto blocks = split_chatml(text);
  bool shaped = blocks && blocks->size() >= 2 && blocks->back().role == "assistant";
  if (shaped) {
    size_t first_turn = (*blocks)[0].role == "system" ? 1 : 0;
    for (size_t i = first_turn; i < blocks->size(); ++i)
      if ((*blocks)[i].role == "system") shaped = false;  // system only first
    if (blocks->size() - first_turn < 2 || (*blocks)[blocks->size() - 2].role != "user") shaped = false;
  }
  if (shaped) {
    out.recognised_chatml = true;
    RewardRequest& r = out.request;
    size_t i = 0;
    if ((*blocks)[0].role == "system") r.system_prompt = std::string((*blocks)[i++].content);
    if (count_placeholders(blocks->back().content) > 0)
      throw ServeError(ServeErrorKind::kBadRequest, where + ": image placeholders inside the response are not supported");
    size_t placeholders = 0;
    for (; i + 1 < blocks->size(); ++i) {
      RewardTurn turn{(*blocks)[i].role, split_turn((*blocks)[i].content, where)};
      for (const auto& part : turn.content) placeholders += part.kind == RewardContent::Kind::kImage ? 1 : 0;
      r.turns.push_back(std::move(turn));
    }
    bool looked_up = false;
    if (placeholders > 0 && images.empty() && lookup) {
      images = lookup((*blocks)[blocks->size() - 2].content);  // the last user turn
      looked_up = true;
    }
    if (placeholders > 0 && images.size() != placeholders)
      throw ServeError(ServeErrorKind::kBadRequest,
                       fmt::format("{}: the text has {} image placeholder(s) but {} image(s) {}", where,
                                   placeholders, images.size(),
                                   looked_up ? "belong to its prompt in --prompts"
                                             : images.empty() ? "were sent (send them in \"images\", or start the "
                                                                "server with --prompts)"
                                                              : "were sent"));
    size_t next_image = 0;
    for (auto& turn : r.turns)
      for (auto& part : turn.content)
        if (part.kind == RewardContent::Kind::kImage) part.image = std::move(images[next_image++]);
    r.response = std::string(blocks->back().content);
    if (placeholders == 0 && !images.empty()) {
      for (auto& turn : r.turns)
        if (turn.role == "user") {
          prepend_images(turn, images);
          break;
        }
    }
    return out;
  }
  RewardRequest& r = out.request;
  RewardTurn user{"user", {}};
  if (prompt && starts_with(text, *prompt) && !prompt->empty()) {
    user.content.push_back(RewardContent::text_part(std::string(*prompt)));
    r.response = std::string(text.substr(prompt->size()));
  } else {
    user.content.push_back(RewardContent::text_part(""));
    r.response = std::string(text);
  }
  prepend_images(user, images);
  r.turns.push_back(std::move(user));
  return out;
}

}  // namespace vlreward
