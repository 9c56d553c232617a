#include "adapters/datasets/shapes_task.h"

#include <cstdint>
#include <png.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unordered_set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "adapters/common/atomic_file.h"
#include "adapters/common/error.h"

namespace vlreward::datasets {
namespace fs = std::filesystem;
namespace {

constexpr int kCell = 28;      // one merged vision token: 14-px patches, 2x2 merge
constexpr int kMargin = 2;     // blank pixels between a shape and its cell's edge: shapes never touch
constexpr int kMinSize = 12;   // smaller triangles and circles start to look alike at 14-px patches
constexpr int kMaxSize = kCell - 2 * kMargin;
constexpr int kMaxCount = 4;
constexpr int kFormatVersion = 1;  // bump when the same settings would generate different data

uint64_t mix64(uint64_t x) {
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}


// A shape of random kind/colour/size placed at a random offset inside cell (cx, cy).
Shape random_shape_in_cell(SplitMix64& rng, int cx, int cy, int colour) {
  Shape s;
  s.kind = static_cast<ShapeKind>(rng.below(3));
  s.colour = colour;
  s.size = static_cast<int>(rng.between(kMinSize, kMaxSize));
  const int slack = kMaxSize - s.size;
  s.x = cx * kCell + kMargin + static_cast<int>(rng.between(0, slack));
  s.y = cy * kCell + kMargin + static_cast<int>(rng.between(0, slack));
  return s;
}

int random_colour(SplitMix64& rng) { return static_cast<int>(rng.below(static_cast<int64_t>(shape_palette().size()))); }

// A uniformly drawn element of `options` other than `correct`.
std::string wrong_answer(SplitMix64& rng, const std::vector<std::string>& options, const std::string& correct) {
  std::vector<std::string> others;
  for (const auto& o : options)
    if (o != correct) others.push_back(o);
  return others[static_cast<size_t>(rng.below(static_cast<int64_t>(others.size())))];
}

std::vector<std::string> colour_names() {
  std::vector<std::string> out;
  for (const auto& c : shape_palette()) out.push_back(c.name);
  return out;
}

TaskItem draw_item(SplitMix64& rng, QuestionType type, int image_size) {
  TaskItem item;
  item.type = type;
  item.scene.image_size = image_size;
  const int g = image_size / kCell;
  auto& shapes = item.scene.shapes;
  switch (type) {
    case QuestionType::kColour:
    case QuestionType::kShape: {
      const int cell = static_cast<int>(rng.below(g * g));
      shapes.push_back(random_shape_in_cell(rng, cell % g, cell / g, random_colour(rng)));
      if (type == QuestionType::kColour) {
        item.question = "What colour is the shape?";
        item.answer = shape_palette()[static_cast<size_t>(shapes[0].colour)].name;
        item.rejected = wrong_answer(rng, colour_names(), item.answer);
      } else {
        item.question = "What shape is it?";
        item.answer = shape_name(shapes[0].kind);
        item.rejected = wrong_answer(rng, {"square", "circle", "triangle"}, item.answer);
      }
      break;
    }
    case QuestionType::kCount: {
      const int max_count = std::min(kMaxCount, g * g);
      const int count = static_cast<int>(rng.between(1, max_count));
      std::vector<int> cells(static_cast<size_t>(g * g));
      for (int i = 0; i < g * g; ++i) cells[static_cast<size_t>(i)] = i;
      for (int i = 0; i < count; ++i) {  // partial Fisher-Yates: `count` distinct cells
        const int j = i + static_cast<int>(rng.below(g * g - i));
        std::swap(cells[static_cast<size_t>(i)], cells[static_cast<size_t>(j)]);
        shapes.push_back(random_shape_in_cell(rng, cells[static_cast<size_t>(i)] % g, cells[static_cast<size_t>(i)] / g,
                                              random_colour(rng)));
      }
      item.question = "How many shapes are there?";
      item.answer = std::to_string(count);
      std::vector<std::string> counts;
      for (int c = 1; c <= max_count; ++c) counts.push_back(std::to_string(c));
      item.rejected = wrong_answer(rng, counts, item.answer);
      break;
    }
    case QuestionType::kPosition: {
      // One shape in the leftmost column, one in the rightmost, different colours; ask about either.
      const int left_colour = random_colour(rng);
      int right_colour = static_cast<int>(rng.below(static_cast<int64_t>(shape_palette().size()) - 1));
      if (right_colour >= left_colour) ++right_colour;
      shapes.push_back(random_shape_in_cell(rng, 0, static_cast<int>(rng.below(g)), left_colour));
      shapes.push_back(random_shape_in_cell(rng, g - 1, static_cast<int>(rng.below(g)), right_colour));
      const bool ask_left = rng.below(2) == 0;
      item.question = fmt::format("Is the {} shape on the left or the right?",
                                  shape_palette()[static_cast<size_t>(ask_left ? left_colour : right_colour)].name);
      item.answer = ask_left ? "left" : "right";
      item.rejected = ask_left ? "right" : "left";
      break;
    }
  }
  return item;
}

// A second, off-task negative for the reward model's pairs: what a weak policy's samples get wrong besides
// picking the wrong option — an answer to another question type, or the right word misspelt (first letter dropped
// or doubled, cut short). A reward model that only ever saw same-type wrong answers scores such text at random,
// and online MPO then climbs that error. Drawn from its own generator (seeded by the item id), so the other files
// do not change.
std::string off_task_answer(const TaskItem& item) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : item.id) h = (h ^ c) * 1099511628211ull;
  SplitMix64 rng(h);
  const std::string& a = item.answer;
  switch (rng.below(3)) {
    case 0: {  // another type's answer
      std::vector<std::string> others;
      if (item.type != QuestionType::kColour) others.insert(others.end(), {"red", "green", "blue", "yellow"});
      if (item.type != QuestionType::kCount) others.insert(others.end(), {"1", "2", "3", "4"});
      if (item.type != QuestionType::kShape) others.insert(others.end(), {"square", "circle", "triangle"});
      return others[static_cast<size_t>(rng.below(static_cast<int64_t>(others.size())))];
    }
    case 1:  // first letter doubled ("ggreen", "33")
      return a.substr(0, 1) + a;
    default:  // cut short, or the first letter dropped when that leaves nothing ("gre", "reen")
      return a.size() > 1 ? a.substr(0, (a.size() + 1) / 2) : a + a;
  }
}

// libpng error handling: errors longjmp out of the guarded function (no C++ objects with destructors live there).
struct PngWriter {
  png_structp png = nullptr;
  png_infop info = nullptr;
  std::string out;
  std::string error;
};

void png_on_error(png_structp png, png_const_charp message) {
  static_cast<PngWriter*>(png_get_error_ptr(png))->error = message;
  png_longjmp(png, 1);
}
void png_on_warning(png_structp, png_const_charp) {}
void png_write_to_string(png_structp png, png_bytep data, png_size_t length) {
  static_cast<PngWriter*>(png_get_io_ptr(png))->out.append(reinterpret_cast<const char*>(data), length);
}
void png_flush_nothing(png_structp) {}

bool png_write_guarded(PngWriter* w, const RgbImage* image, png_bytepp rows) {
  if (setjmp(png_jmpbuf(w->png))) return false;
  png_set_write_fn(w->png, w, png_write_to_string, png_flush_nothing);
  png_set_compression_level(w->png, 6);  // fixed, so the bytes do not follow libpng's default
  png_set_IHDR(w->png, w->info, static_cast<png_uint_32>(image->width), static_cast<png_uint_32>(image->height), 8,
               PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(w->png, w->info);
  png_write_image(w->png, rows);
  png_write_end(w->png, nullptr);
  return true;
}

nlohmann::ordered_json settings_json(const ShapesTaskOptions& options, int64_t train_count, int64_t heldout_count) {
  std::vector<std::string> types;
  for (auto t : options.types) types.emplace_back(question_type_name(t));
  return {{"format", kFormatVersion},
          {"seed", options.seed},
          {"image_size", options.image_size},
          {"types", types},
          {"heldout_bucket_percent", options.heldout_bucket_percent},
          {"train", train_count},
          {"heldout", heldout_count}};
}

void validate(const ShapesTaskOptions& options) {
  if (options.image_size < 2 * kCell || options.image_size % kCell != 0)
    throw InputError("image_size", fmt::format("must be a multiple of {} and at least {}, not {}", kCell, 2 * kCell,
                                               options.image_size));
  if (options.image_size > 20 * kCell) throw InputError("image_size", "must be at most 560 (tiny-model task)");
  if (options.types.empty()) throw InputError("types", "no question types");
  if (options.heldout_bucket_percent <= 0 || options.heldout_bucket_percent >= 100)
    throw InputError("heldout_bucket_percent", "must be between 1 and 99");
}

}  // namespace

uint64_t SplitMix64::next() {
  state_ += 0x9E3779B97F4A7C15ull;
  return mix64(state_);
}

const std::vector<NamedColour>& shape_palette() {
  // Far apart in RGB, so a colour is readable from any one pixel of the shape.
  static const std::vector<NamedColour> palette = {
      {"red", 220, 30, 30}, {"green", 30, 160, 50}, {"blue", 30, 70, 220}, {"yellow", 235, 200, 20}};
  return palette;
}

const char* shape_name(ShapeKind kind) {
  switch (kind) {
    case ShapeKind::kSquare: return "square";
    case ShapeKind::kCircle: return "circle";
    case ShapeKind::kTriangle: return "triangle";
  }
  return "?";
}

const char* question_type_name(QuestionType type) {
  switch (type) {
    case QuestionType::kColour: return "colour";
    case QuestionType::kCount: return "count";
    case QuestionType::kPosition: return "position";
    case QuestionType::kShape: return "shape";
  }
  return "?";
}

std::vector<QuestionType> parse_question_types(const std::string& list, const std::string& source) {
  std::vector<QuestionType> out;
  std::stringstream ss(list);
  std::string name;
  while (std::getline(ss, name, ',')) {
    bool found = false;
    for (auto t : {QuestionType::kColour, QuestionType::kCount, QuestionType::kPosition, QuestionType::kShape}) {
      if (name == question_type_name(t)) {
        if (std::find(out.begin(), out.end(), t) != out.end())
          throw InputError(source, fmt::format("\"{}\" is listed twice", name));
        out.push_back(t);
        found = true;
      }
    }
    if (!found)
      throw InputError(source, fmt::format("unknown question type \"{}\" (known: colour, count, position, shape)", name));
  }
  if (out.empty()) throw InputError(source, "no question types given");
  return out;
}

const char* split_name(Split split) { return split == Split::kTrain ? "train" : "heldout"; }

std::string item_key(const TaskItem& item) {
  std::string key = fmt::format("{}|{}|{}|{}", question_type_name(item.type), item.question, item.answer,
                                item.scene.image_size);
  for (const auto& s : item.scene.shapes)
    key += fmt::format("|{},{},{},{},{}", static_cast<int>(s.kind), s.colour, s.x, s.y, s.size);
  return key;
}

bool in_heldout_bucket(const TaskItem& item, int heldout_bucket_percent) {
  return static_cast<int>(mix64(fnv1a(item_key(item))) % 100) < heldout_bucket_percent;
}

std::vector<TaskItem> generate_items(const ShapesTaskOptions& options, Split split, int64_t count) {
  validate(options);
  if (count < 0) throw InputError(split_name(split), "item count must not be negative");
  // Independent streams per split, so the held-out set does not change with the number of train items.
  SplitMix64 rng(mix64(options.seed ^ (split == Split::kTrain ? 0x7472616996e00000ull : 0x68656c646f757400ull)));
  const bool want_heldout = split == Split::kHeldout;
  std::unordered_set<std::string> seen;
  std::vector<TaskItem> items;
  items.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    const QuestionType type = options.types[static_cast<size_t>(i) % options.types.size()];
    for (int attempt = 0;; ++attempt) {
      if (attempt == 100000)
        throw InputError(split_name(split), fmt::format("cannot find {} distinct {} items: too few possible scenes",
                                                        count, question_type_name(type)));
      TaskItem item = draw_item(rng, type, options.image_size);
      if (in_heldout_bucket(item, options.heldout_bucket_percent) != want_heldout) continue;
      if (!seen.insert(item_key(item)).second) continue;
      item.id = fmt::format("{}-{:06d}", split_name(split), i);
      items.push_back(std::move(item));
      break;
    }
  }
  return items;
}

bool shape_covers(const Shape& s, int px, int py) {
  if (px < s.x || py < s.y || px >= s.x + s.size || py >= s.y + s.size) return false;
  // Doubled coordinates keep pixel centres (p + 0.5) integral.
  const int64_t X = 2 * px + 1 - 2 * s.x, Y = 2 * py + 1 - 2 * s.y, S = 2 * s.size;
  switch (s.kind) {
    case ShapeKind::kSquare: return true;
    case ShapeKind::kCircle: {
      const int64_t dx = X - S / 2, dy = Y - S / 2;
      return 4 * (dx * dx + dy * dy) <= S * S;
    }
    case ShapeKind::kTriangle:  // apex at the top centre, base along the bottom edge
      return 2 * std::llabs(X - S / 2) <= Y;
  }
  return false;
}

RgbImage render_scene(const Scene& scene) {
  RgbImage image;
  image.width = image.height = scene.image_size;
  image.pixels.assign(static_cast<size_t>(scene.image_size) * scene.image_size * 3, kBackground);
  for (const auto& s : scene.shapes) {
    const NamedColour& c = shape_palette().at(static_cast<size_t>(s.colour));
    for (int y = std::max(0, s.y); y < std::min(scene.image_size, s.y + s.size); ++y)
      for (int x = std::max(0, s.x); x < std::min(scene.image_size, s.x + s.size); ++x) {
        if (!shape_covers(s, x, y)) continue;
        uint8_t* p = &image.pixels[(static_cast<size_t>(y) * scene.image_size + x) * 3];
        p[0] = c.r;
        p[1] = c.g;
        p[2] = c.b;
      }
  }
  return image;
}

std::string encode_png(const RgbImage& image, const std::string& source) {
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width * image.height * 3))
    throw InputError(source, "image size does not match its pixel buffer");
  PngWriter w;
  w.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w, png_on_error, png_on_warning);
  if (!w.png) throw std::runtime_error(source + ": cannot create a libpng writer");
  w.info = png_create_info_struct(w.png);
  std::vector<png_bytep> rows(static_cast<size_t>(image.height));
  for (int64_t y = 0; y < image.height; ++y)
    rows[static_cast<size_t>(y)] = const_cast<png_bytep>(&image.pixels[static_cast<size_t>(y * image.width * 3)]);
  const bool ok = w.info && png_write_guarded(&w, &image, rows.data());
  png_destroy_write_struct(&w.png, &w.info);
  if (!ok) throw std::runtime_error(source + ": PNG encoding failed: " + (w.error.empty() ? "libpng error" : w.error));
  return std::move(w.out);
}

bool write_shapes_task(const ShapesTaskOptions& options, const std::string& out_dir, int64_t train_count,
                       int64_t heldout_count) {
  validate(options);
  const auto settings = settings_json(options, train_count, heldout_count);
  const fs::path dir(out_dir);
  const fs::path done = dir / "DONE";
  if (fs::exists(done)) {
    std::ifstream in(done);
    std::stringstream text;
    text << in.rdbuf();
    nlohmann::ordered_json previous;
    try {
      previous = nlohmann::ordered_json::parse(text.str());
    } catch (const nlohmann::json::exception&) {
      throw InputError(done.string(), "is not valid JSON; remove the directory and generate again");
    }
    if (previous == settings) return false;
    throw InputError(done.string(), fmt::format("was written with other settings ({}), not ({}); use another --out "
                                                "or remove the directory",
                                                previous.dump(), settings.dump()));
  }
  std::error_code ec;
  fs::create_directories(dir / "images", ec);
  if (ec) throw InputError(out_dir, "cannot create directory: " + ec.message());

  for (Split split : {Split::kTrain, Split::kHeldout}) {
    const auto items = generate_items(options, split, split == Split::kTrain ? train_count : heldout_count);
    std::string sft, prompts, pairs;
    for (const auto& item : items) {
      const std::string rel = "images/" + item.id + ".png";
      const std::string path = (dir / rel).string();
      write_file_atomic(path, encode_png(render_scene(item.scene), path));
      const char* type = question_type_name(item.type);
      auto line = [&](std::initializer_list<std::pair<const char*, std::string>> fields, const std::string& suffix = "") {
        nlohmann::ordered_json j;
        j["id"] = item.id + suffix;
        j["images"] = {rel};
        j["question"] = item.question;
        for (const auto& [k, v] : fields) j[k] = v;
        j["type"] = type;
        return j.dump() + "\n";
      };
      sft += line({{"answer", item.answer}});
      prompts += line({{"reference", item.answer}});
      pairs += line({{"chosen", item.answer}, {"rejected", item.rejected}});
      pairs += line({{"chosen", item.answer}, {"rejected", off_task_answer(item)}}, "-off");
    }
    const std::string name = split_name(split);
    write_file_atomic((dir / (name + "_sft.jsonl")).string(), sft);
    write_file_atomic((dir / (name + "_prompts.jsonl")).string(), prompts);
    write_file_atomic((dir / (name + "_pairs.jsonl")).string(), pairs);
  }
  write_file_atomic(done.string(), settings.dump(2) + "\n");  // last: its presence means the rest is complete
  return true;
}

}  // namespace vlreward::datasets
