// The bundled shapes task's generator: deterministic, answers re-derivable from the decoded pixels, disjoint splits.
#include <cstdint>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "adapters/common/error.h"
#include "adapters/datasets/shapes_task.h"
#include "adapters/image/decode.h"

namespace fs = std::filesystem;
using namespace vlreward;
using namespace vlreward::datasets;

namespace {

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("shapes_task_test_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

// What the pixels say: 4-connected components of non-background pixels, each with its colour, pixel count,
// bounding box and centre.
struct Blob {
  std::string colour;
  int64_t pixels = 0;
  int min_x = 1 << 30, min_y = 1 << 30, max_x = -1, max_y = -1;
  double fill() const { return static_cast<double>(pixels) / ((max_x - min_x + 1) * (max_y - min_y + 1)); }
  double centre_x() const { return (min_x + max_x + 1) / 2.0; }
};

std::string colour_at(const RgbImage& image, int x, int y) {
  const uint8_t* p = &image.pixels[(static_cast<size_t>(y) * image.width + x) * 3];
  for (const auto& c : shape_palette())
    if (p[0] == c.r && p[1] == c.g && p[2] == c.b) return c.name;
  if (p[0] == kBackground && p[1] == kBackground && p[2] == kBackground) return "";
  ADD_FAILURE() << "pixel (" << x << "," << y << ") is neither background nor a palette colour";
  return "?";
}

std::vector<Blob> find_blobs(const RgbImage& image) {
  const int w = static_cast<int>(image.width), h = static_cast<int>(image.height);
  std::vector<int> label(static_cast<size_t>(w * h), -1);
  std::vector<Blob> blobs;
  for (int y0 = 0; y0 < h; ++y0)
    for (int x0 = 0; x0 < w; ++x0) {
      if (label[y0 * w + x0] >= 0 || colour_at(image, x0, y0).empty()) continue;
      Blob blob;
      blob.colour = colour_at(image, x0, y0);
      std::vector<std::pair<int, int>> stack = {{x0, y0}};
      label[y0 * w + x0] = static_cast<int>(blobs.size());
      while (!stack.empty()) {
        auto [x, y] = stack.back();
        stack.pop_back();
        EXPECT_EQ(colour_at(image, x, y), blob.colour) << "a shape with two colours";
        ++blob.pixels;
        blob.min_x = std::min(blob.min_x, x);
        blob.max_x = std::max(blob.max_x, x);
        blob.min_y = std::min(blob.min_y, y);
        blob.max_y = std::max(blob.max_y, y);
        const int nx[] = {x - 1, x + 1, x, x}, ny[] = {y, y, y - 1, y + 1};
        for (int k = 0; k < 4; ++k) {
          if (nx[k] < 0 || ny[k] < 0 || nx[k] >= w || ny[k] >= h) continue;
          if (label[ny[k] * w + nx[k]] >= 0 || colour_at(image, nx[k], ny[k]).empty()) continue;
          label[ny[k] * w + nx[k]] = static_cast<int>(blobs.size());
          stack.push_back({nx[k], ny[k]});
        }
      }
      blobs.push_back(blob);
    }
  return blobs;
}

// The shape kind from how much of its bounding box it fills: square 1, circle ~pi/4, triangle ~1/2.
std::string kind_of(const Blob& b) {
  if (b.fill() > 0.95) return "square";
  if (b.fill() > 0.65) return "circle";
  return "triangle";
}

// The answer the decoded image gives to the item's question.
std::string derive_answer(const TaskItem& item, const RgbImage& image) {
  const auto blobs = find_blobs(image);
  switch (item.type) {
    case QuestionType::kCount: return std::to_string(blobs.size());
    case QuestionType::kColour: return blobs.size() == 1 ? blobs[0].colour : "?";
    case QuestionType::kShape: return blobs.size() == 1 ? kind_of(blobs[0]) : "?";
    case QuestionType::kPosition: {
      for (const auto& b : blobs)
        if (item.question.find(" " + b.colour + " ") != std::string::npos)
          return b.centre_x() < image.width / 2.0 ? "left" : "right";
      return "?";
    }
  }
  return "?";
}

std::vector<std::string> read_lines(const fs::path& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

}  // namespace

TEST(ShapesTask, SplitMix64MatchesTheReferenceSequence) {
  // Steele et al.'s splitmix64 from seed 0 (the values every port agrees on).
  SplitMix64 rng(0);
  EXPECT_EQ(rng.next(), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(rng.next(), 0x6E789E6AA1B965F4ull);
  EXPECT_EQ(rng.next(), 0x06C45D188009454Full);
}

TEST(ShapesTask, SameSeedSameItemsOtherSeedOtherItems) {
  ShapesTaskOptions options;
  options.seed = 7;
  const auto a = generate_items(options, Split::kTrain, 200);
  const auto b = generate_items(options, Split::kTrain, 200);
  ASSERT_EQ(a.size(), 200u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(item_key(a[i]), item_key(b[i]));
    EXPECT_EQ(a[i].id, b[i].id);
    EXPECT_EQ(a[i].rejected, b[i].rejected);
  }
  options.seed = 8;
  const auto c = generate_items(options, Split::kTrain, 200);
  int same = 0;
  for (size_t i = 0; i < a.size(); ++i) same += item_key(a[i]) == item_key(c[i]);
  EXPECT_LT(same, 5);
}

TEST(ShapesTask, AnswersFollowFromTheDecodedPixels) {
  for (int size : {56, 84}) {
    ShapesTaskOptions options;
    options.seed = 3;
    options.image_size = size;
    for (Split split : {Split::kTrain, Split::kHeldout}) {
      const auto items = generate_items(options, split, 400);
      std::map<std::string, std::set<std::string>> answers_seen;
      for (const auto& item : items) {
        const RgbImage image = decode_image(encode_png(render_scene(item.scene), item.id), item.id);
        ASSERT_EQ(image.width, size);
        ASSERT_EQ(image.height, size);
        EXPECT_EQ(image.pixels, render_scene(item.scene).pixels) << item.id;
        EXPECT_EQ(derive_answer(item, image), item.answer) << item.id << ": " << item.question;
        EXPECT_NE(item.rejected, item.answer) << item.id;
        EXPECT_FALSE(item.rejected.empty()) << item.id;
        answers_seen[question_type_name(item.type)].insert(item.answer);
        answers_seen[question_type_name(item.type)].insert(item.rejected);
      }
      // Every type uses its whole (small) answer vocabulary, and rejected answers come from the same vocabulary.
      EXPECT_EQ(answers_seen["colour"], (std::set<std::string>{"red", "green", "blue", "yellow"}));
      EXPECT_EQ(answers_seen["count"], (std::set<std::string>{"1", "2", "3", "4"}));
      EXPECT_EQ(answers_seen["position"], (std::set<std::string>{"left", "right"}));
      EXPECT_EQ(answers_seen["shape"], (std::set<std::string>{"square", "circle", "triangle"}));
    }
  }
}

TEST(ShapesTask, TypesCycleSoEveryPrefixIsBalanced) {
  ShapesTaskOptions options;
  options.types = parse_question_types("count,position", "--types");
  const auto items = generate_items(options, Split::kTrain, 10);
  for (size_t i = 0; i < items.size(); ++i)
    EXPECT_EQ(items[i].type, i % 2 == 0 ? QuestionType::kCount : QuestionType::kPosition);
  EXPECT_THROW(parse_question_types("colour,size", "--types"), InputError);
  EXPECT_THROW(parse_question_types("colour,colour", "--types"), InputError);
  options.image_size = 60;
  EXPECT_THROW(generate_items(options, Split::kTrain, 1), InputError);
}

TEST(ShapesTask, SplitsAreDisjointAndHeldoutDoesNotDependOnTrainSize) {
  ShapesTaskOptions options;
  options.seed = 11;
  const auto train = generate_items(options, Split::kTrain, 3000);
  const auto heldout = generate_items(options, Split::kHeldout, 500);
  std::set<std::string> train_keys, image_keys;
  for (const auto& item : train) {
    EXPECT_FALSE(in_heldout_bucket(item, options.heldout_bucket_percent));
    train_keys.insert(item_key(item));
  }
  EXPECT_EQ(train_keys.size(), train.size()) << "duplicate items within the train split";
  for (const auto& item : heldout) {
    EXPECT_TRUE(in_heldout_bucket(item, options.heldout_bucket_percent));
    EXPECT_EQ(train_keys.count(item_key(item)), 0u) << item.id;
  }
  const auto heldout_again = generate_items(options, Split::kHeldout, 100);
  for (size_t i = 0; i < heldout_again.size(); ++i) EXPECT_EQ(item_key(heldout_again[i]), item_key(heldout[i]));
}

TEST(ShapesTask, WritesIdenticalFilesAndRerunIsANoOp) {
  TempDir a_dir;
  const fs::path a = a_dir.path / "a", b = a_dir.path / "b";
  ShapesTaskOptions options;
  options.seed = 5;
  ASSERT_TRUE(write_shapes_task(options, a.string(), 40, 12));
  ASSERT_TRUE(write_shapes_task(options, b.string(), 40, 12));
  std::vector<std::string> names;
  for (const auto& entry : fs::recursive_directory_iterator(a))
    if (entry.is_regular_file()) names.push_back(fs::relative(entry.path(), a).string());
  EXPECT_EQ(names.size(), 40u + 12u + 6u + 1u);  // images, 6 JSONL files, DONE
  for (const auto& name : names) EXPECT_EQ(read_file(a / name), read_file(b / name)) << name;

  // JSONL records: image paths relative to the output directory, decodable; the three files agree.
  const auto sft = read_lines(a / "heldout_sft.jsonl");
  const auto prompts = read_lines(a / "heldout_prompts.jsonl");
  const auto pairs = read_lines(a / "heldout_pairs.jsonl");
  ASSERT_EQ(sft.size(), 12u);
  ASSERT_EQ(prompts.size(), 12u);
  ASSERT_EQ(pairs.size(), 24u);  // per scene: a same-type wrong answer, then an off-task one
  for (size_t i = 0; i < sft.size(); ++i) {
    const auto s = nlohmann::json::parse(sft[i]), p = nlohmann::json::parse(prompts[i]), q = nlohmann::json::parse(pairs[2 * i]);
    const auto off = nlohmann::json::parse(pairs[2 * i + 1]);
    EXPECT_EQ(s["id"], p["id"]);
    EXPECT_EQ(s["id"], q["id"]);
    EXPECT_EQ(off["id"], s["id"].get<std::string>() + "-off");
    EXPECT_EQ(s["answer"], p["reference"]);
    EXPECT_EQ(s["answer"], q["chosen"]);
    EXPECT_EQ(s["answer"], off["chosen"]);
    EXPECT_NE(q["chosen"], q["rejected"]);
    EXPECT_NE(off["chosen"], off["rejected"]);
    EXPECT_FALSE(off["rejected"].get<std::string>().empty());
    ASSERT_EQ(s["images"].size(), 1u);
    const RgbImage image = decode_image_file((a / s["images"][0].get<std::string>()).string());
    EXPECT_EQ(image.width, 56);
  }

  // Same settings: nothing is rewritten. Other settings: refused.
  const auto before = fs::last_write_time(a / "train_pairs.jsonl");
  EXPECT_FALSE(write_shapes_task(options, a.string(), 40, 12));
  EXPECT_EQ(fs::last_write_time(a / "train_pairs.jsonl"), before);
  EXPECT_THROW(write_shapes_task(options, a.string(), 41, 12), InputError);
  options.seed = 6;
  EXPECT_THROW(write_shapes_task(options, a.string(), 40, 12), InputError);
}
