#include "adapters/qwen2_5_vl/rope_index.h"

#include <algorithm>
#include <cstdint>

#include "adapters/common/error.h"

namespace vlreward::qwen {
namespace {

// Positions of one row's real tokens: 3 parallel lists (t, h, w).
struct RowPositions {
  std::array<std::vector<int64_t>, 3> axis;
  int64_t max_value = -1;

  void push(int64_t t, int64_t h, int64_t w) {
    axis[0].push_back(t);
    axis[1].push_back(h);
    axis[2].push_back(w);
    max_value = std::max({max_value, t, h, w});
  }
  void push_text(int64_t count) {
    const int64_t start = max_value + 1;
    for (int64_t i = 0; i < count; ++i) push(start + i, start + i, start + i);
  }
};

size_t find_from(const std::vector<int64_t>& tokens, int64_t value, size_t from) {
  auto it = std::find(tokens.begin() + static_cast<std::ptrdiff_t>(std::min(from, tokens.size())), tokens.end(),
                      value);
  return static_cast<size_t>(it - tokens.begin());
}

}  // namespace

RopeIndex compute_rope_index(const RopeIndexInput& in, const VisionTokenIds& ids, int64_t merge,
                             int64_t tokens_per_second) {
  const int64_t B = in.batch, S = in.seq;
  RopeIndex out;
  out.position_ids.assign(static_cast<size_t>(3 * B * S), 1);
  out.rope_deltas.assign(static_cast<size_t>(B), 0);
  auto mask_at = [&](int64_t b, int64_t s) { return in.attention_mask == nullptr || in.attention_mask[b * S + s] == 1; };

  const bool has_vision = !in.image_grids.empty() || !in.video_grids.empty();
  size_t image_index = 0, video_index = 0;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> tokens;
    std::vector<int64_t> slots;  // column of each real token
    for (int64_t s = 0; s < S; ++s) {
      if (mask_at(b, s)) {
        tokens.push_back(in.input_ids[b * S + s]);
        slots.push_back(s);
      }
    }
    RowPositions row;
    if (!has_vision) {
      // transformers: cumsum(mask) - 1 on all three axes.
      row.push_text(static_cast<int64_t>(tokens.size()));
    } else {
      int64_t image_count = 0, video_count = 0;
      for (size_t i = 0; i + 1 < tokens.size(); ++i) {
        if (tokens[i] != ids.vision_start_token_id) continue;
        if (tokens[i + 1] == ids.image_token_id) ++image_count;
        if (tokens[i + 1] == ids.video_token_id) ++video_count;
      }
      size_t st = 0;
      int64_t remain_images = image_count, remain_videos = video_count;
      for (int64_t k = 0; k < image_count + video_count; ++k) {
        const size_t none = tokens.size() + 1;
        size_t ed_image = remain_images > 0 ? find_from(tokens, ids.image_token_id, st) : none;
        size_t ed_video = remain_videos > 0 ? find_from(tokens, ids.video_token_id, st) : none;
        if (ed_image == tokens.size()) ed_image = none;
        if (ed_video == tokens.size()) ed_video = none;
        GridTHW grid;
        int64_t seconds_per_grid = 0;  // images: no temporal scaling
        size_t ed;
        if (ed_image < ed_video) {
          if (image_index >= in.image_grids.size())
            throw_input_error("image_grid_thw", "row {} references image {} but only {} grids were given", b,
                              image_index + 1, in.image_grids.size());
          grid = in.image_grids[image_index++];
          --remain_images;
          ed = ed_image;
        } else {
          if (ed_video == none || video_index >= in.video_grids.size())
            throw_input_error("video_grid_thw", "row {} references video {} but only {} grids were given", b,
                              video_index + 1, in.video_grids.size());
          grid = in.video_grids[video_index];
          // transformers converts seconds_per_grid to the int64 dtype of its arange before scaling.
          seconds_per_grid = in.video_seconds_per_grid.empty()
                                 ? 1
                                 : static_cast<int64_t>(in.video_seconds_per_grid[video_index]);
          ++video_index;
          --remain_videos;
          ed = ed_video;
        }
        const int64_t lt = grid[0], lh = grid[1] / merge, lw = grid[2] / merge;
        row.push_text(static_cast<int64_t>(ed - st));
        // Vision positions start right after the text block (transformers: st_idx + text_len).
        const int64_t vision_base = row.max_value + 1;
        for (int64_t t = 0; t < lt; ++t)
          for (int64_t h = 0; h < lh; ++h)
            for (int64_t w = 0; w < lw; ++w)
              row.push(vision_base + t * seconds_per_grid * tokens_per_second, vision_base + h, vision_base + w);
        st = ed + static_cast<size_t>(lt * lh * lw);
        if (st > tokens.size())
          throw_input_error("input_ids", "row {}: vision block of {} tokens runs past the end of the sequence", b,
                            lt * lh * lw);
      }
      if (st < tokens.size()) row.push_text(static_cast<int64_t>(tokens.size() - st));
    }
    for (size_t i = 0; i < slots.size(); ++i)
      for (int c = 0; c < 3; ++c) out.position_ids[static_cast<size_t>((c * B + b) * S + slots[i])] = row.axis[c][i];
    int64_t max_value = row.max_value;
    if (!has_vision && static_cast<int64_t>(slots.size()) < S) max_value = std::max<int64_t>(max_value, 1);
    out.rope_deltas[static_cast<size_t>(b)] = max_value + 1 - S;
  }
  return out;
}

}  // namespace vlreward::qwen
