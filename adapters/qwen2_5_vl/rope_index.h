#pragma once
// 3-D M-RoPE position ids for a batch of token rows (transformers' get_rope_index, v4.57 semantics).
// Torch-free: plain vectors in, plain vectors out.
#include <array>
#include <cstdint>
#include <vector>

namespace vlreward::qwen {

using GridTHW = std::array<int64_t, 3>;  // (t, h, w) in patches, as the image processor reports it

struct VisionTokenIds {
  int64_t image_token_id;
  int64_t video_token_id;
  int64_t vision_start_token_id;
};

struct RopeIndexInput {
  const int64_t* input_ids = nullptr;       // [batch, seq], row-major
  const int64_t* attention_mask = nullptr;  // [batch, seq] of 0/1, or nullptr for all ones
  int64_t batch = 0, seq = 0;
  std::vector<GridTHW> image_grids;           // all images of the batch in order of appearance
  std::vector<GridTHW> video_grids;
  std::vector<double> video_seconds_per_grid;  // per video; empty → 1.0 each (transformers' default)
};

struct RopeIndex {
  std::vector<int64_t> position_ids;  // [3, batch, seq]; padded slots hold 1 as in transformers
  std::vector<int64_t> rope_deltas;   // [batch]: max position + 1 - seq
};

// Throws InputError when the ids reference more images/videos than grids were given, or an image's tokens run
// past the end of the row.
RopeIndex compute_rope_index(const RopeIndexInput& in, const VisionTokenIds& ids, int64_t spatial_merge_size,
                             int64_t tokens_per_second);

}  // namespace vlreward::qwen
