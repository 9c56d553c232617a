#pragma once
// The bundled "shapes" task: a deterministic generator of small RGB images with 1-4 filled shapes (square,
// circle, triangle) in a few colours on a white background, and questions with short verifiable answers:
//   colour    "What colour is the shape?"                  -> "red" | "green" | "blue" | "yellow"
//   count     "How many shapes are there?"                 -> "1" .. "4"
//   position  "Is the red shape on the left or the right?" -> "left" | "right"
//   shape     "What shape is it?"                          -> "square" | "circle" | "triangle"
//
// Layout: the image is a grid of 28x28 cells (one cell = one merged Qwen2.5-VL vision token: 14-px patches,
// 2x2 merge), at most one shape per cell, inset from the cell's edges. So shapes never touch (count = connected
// components of non-background pixels) and a tiny vision tower sees one shape per token.
//
// Determinism: every random choice comes from SplitMix64 (no std::*_distribution, whose output differs between
// standard libraries) and rasterisation is integer-only, so a seed gives the same scenes and pixels everywhere.
// Train and held-out items come from separate streams and are disjoint by construction: a scene belongs to the
// held-out split iff a hash of its content falls in the held-out bucket, and each split rejects the other's.
//
// Torch-free (formats layer).
#include <cstdint>
#include <string>
#include <vector>

#include "adapters/image/decode.h"

namespace vlreward::datasets {

// SplitMix64 (Steele et al.): tiny, fast, and the same sequence on every platform.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform integer in [0, n) (n > 0). Modulo bias is < n / 2^64: irrelevant for these n.
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint64_t>(n)); }
  int64_t between(int64_t lo, int64_t hi) { return lo + below(hi - lo + 1); }  // inclusive

 private:
  uint64_t state_;
};

enum class ShapeKind { kSquare = 0, kCircle = 1, kTriangle = 2 };
enum class QuestionType { kColour = 0, kCount = 1, kPosition = 2, kShape = 3 };

struct NamedColour {
  const char* name;
  uint8_t r, g, b;
};
// The palette shapes are drawn in (names are the answers) and the background.
const std::vector<NamedColour>& shape_palette();
constexpr uint8_t kBackground = 255;  // white, all channels

const char* shape_name(ShapeKind kind);            // "square", "circle", "triangle"
const char* question_type_name(QuestionType type);  // "colour", "count", "position", "shape"
// Parses a comma-separated list of type names ("colour,count"); throws InputError naming `source`.
std::vector<QuestionType> parse_question_types(const std::string& list, const std::string& source);

struct Shape {
  ShapeKind kind = ShapeKind::kSquare;
  int colour = 0;  // index into shape_palette()
  int x = 0, y = 0;  // top-left corner of the bounding box, pixels
  int size = 0;      // side of the (square) bounding box, pixels
};

struct Scene {
  int image_size = 56;  // square images, a multiple of 28
  std::vector<Shape> shapes;
};

struct TaskItem {
  std::string id;  // "<split>-<index, 6 digits>"
  QuestionType type = QuestionType::kColour;
  Scene scene;
  std::string question;
  std::string answer;    // the verifiable reference
  std::string rejected;  // a plausible wrong answer of the same type
};

enum class Split { kTrain, kHeldout };
const char* split_name(Split split);  // "train", "heldout"

struct ShapesTaskOptions {
  uint64_t seed = 0;
  int image_size = 56;  // 56 -> 2x2 cells (4 vision tokens), 84 -> 3x3 (9 tokens)
  std::vector<QuestionType> types = {QuestionType::kColour, QuestionType::kCount, QuestionType::kPosition,
                                     QuestionType::kShape};
  int heldout_bucket_percent = 20;  // share of all scenes that belong to the held-out split
};

// `count` items of `split`. Types cycle in order (item i has types[i % types.size()]), so any prefix is balanced.
// Items are unique within the split, and no item of one split equals an item of the other.
std::vector<TaskItem> generate_items(const ShapesTaskOptions& options, Split split, int64_t count);

// Whether a scene + question belongs to the held-out split (the hash bucket test above).
bool in_heldout_bucket(const TaskItem& item, int heldout_bucket_percent);
// A canonical string of the scene and question (equal items <=> equal keys).
std::string item_key(const TaskItem& item);

// Integer-only rasterisation (pixel centres inside the shape), no anti-aliasing: every pixel is either the
// background or exactly a palette colour.
RgbImage render_scene(const Scene& scene);
// Whether pixel (px, py) lies inside the shape (pixel-centre test); render_scene draws exactly these pixels.
bool shape_covers(const Shape& shape, int px, int py);

// 8-bit RGB PNG, no timestamps or text chunks: equal images give equal bytes (for one zlib build).
std::string encode_png(const RgbImage& image, const std::string& source);


// Writes the task to `out_dir`:
//   images/<id>.png
//   train_sft.jsonl      {"id","images","question","answer","type"}
//   train_prompts.jsonl  {"id","images","question","reference","type"}     (online MPO rounds)
//   train_pairs.jsonl    {"id","images","question","chosen","rejected","type"} (reward model): two lines per scene,
//                        a same-type wrong answer and an off-task one (id + "-off": another type's answer or
//                        the answer misspelt)
//   heldout_sft.jsonl, heldout_prompts.jsonl, heldout_pairs.jsonl          (evaluation)
//   DONE                 the generation settings (JSON), written last
// Image paths are relative to out_dir (the JSONL's directory). Returns false (and writes nothing) when DONE
// already records the same settings; throws InputError when it records different ones.
bool write_shapes_task(const ShapesTaskOptions& options, const std::string& out_dir, int64_t train_count,
                       int64_t heldout_count);

}  // namespace vlreward::datasets
