#include "adapters/hf/safetensors.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <tuple>
#include <utility>

#include <nlohmann/json.hpp>

#include "adapters/common/atomic_file.h"
#include "adapters/common/error.h"

namespace vlreward {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

constexpr size_t kLengthPrefix = 8;  // u64 little-endian header length
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
  int alignment_rank;  // position in the reference's Dtype enum (declared in increasing alignment order)
};

// Ranks follow the Rust enum order (BOOL < U8 < F16 < BF16 < I32 < F32 < I64); the writer sorts by it.
constexpr std::array<DTypeInfo, 7> kDTypes = {{
    {DType::BOOL, "BOOL", 1, 0},
    {DType::U8, "U8", 1, 1},
    {DType::F16, "F16", 2, 2},
    {DType::BF16, "BF16", 2, 3},
    {DType::I32, "I32", 4, 4},
    {DType::F32, "F32", 4, 5},
    {DType::I64, "I64", 8, 6},
}};

const DTypeInfo& info_of(DType dtype) {
  for (const auto& d : kDTypes)
    if (d.dtype == dtype) return d;
  throw std::logic_error("unhandled DType");
}

// Returns the byte offset of the first invalid sequence, or npos. Same acceptance as Rust's
// core::str::from_utf8: no overlong forms, no surrogates, nothing above U+10FFFF.
size_t find_invalid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const size_t n = s.size();
  size_t i = 0;
  while (i < n) {
    unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xBF) return i;
    i += len;
  }
  return std::string_view::npos;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// Element count with overflow detection; false on overflow of `limit`.
bool checked_numel(const std::vector<int64_t>& shape, uint64_t limit, uint64_t* out) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return false;
    if (d != 0 && n > limit / static_cast<uint64_t>(d)) return false;
    n *= static_cast<uint64_t>(d);
  }
  *out = n;
  return true;
}

// A non-negative JSON integer (serde's usize accepts only integer literals, never 2.0 or "2").
bool as_u64(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v.get<int64_t>());
    return true;
  }
  return false;
}

struct ParsedEntry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;
};

ParsedEntry parse_entry(const std::string& path, const std::string& name, const json& entry) {
  const std::string where = fmt::format("{}: tensor '{}'", path, name);
  if (!entry.is_object()) throw InputError(where, "entry must be a JSON object, got " + std::string(entry.type_name()));
  for (const char* key : {"dtype", "shape", "data_offsets"})
    if (!entry.contains(key)) throw_input_error(where, "missing \"{}\"", key);

  ParsedEntry e;
  e.name = name;
  const json& dtype = entry.at("dtype");
  if (!dtype.is_string()) throw_input_error(where, "\"dtype\" must be a string, got {}", dtype.type_name());
  e.dtype = dtype_from_name(dtype.get_ref<const std::string&>(), where);

  const json& shape = entry.at("shape");
  if (!shape.is_array()) throw_input_error(where, "\"shape\" must be an array, got {}", shape.type_name());
  for (size_t i = 0; i < shape.size(); ++i) {
    const json& d = shape[i];
    if (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0)
      throw_input_error(where, "shape[{}] is negative ({})", i, d.get<int64_t>());
    uint64_t v = 0;
    if (!as_u64(d, &v)) throw_input_error(where, "shape[{}] must be a non-negative integer, got {}", i, d.dump());
    if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
      throw_input_error(where, "shape[{}] = {} is too large", i, v);
    e.shape.push_back(static_cast<int64_t>(v));
  }

  const json& offsets = entry.at("data_offsets");
  if (!offsets.is_array() || offsets.size() != 2 || !as_u64(offsets[0], &e.begin) || !as_u64(offsets[1], &e.end))
    throw_input_error(where, "\"data_offsets\" must be an array of two non-negative integers, got {}",
                      offsets.dump());
  if (e.end < e.begin) throw_input_error(where, "data_offsets end ({}) is before begin ({})", e.end, e.begin);
  return e;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& m) {
  std::map<std::string, std::string> out;
  if (m.is_null()) return out;  // serde reads null as "no metadata"
  if (!m.is_object())
    throw_input_error(path, "\"__metadata__\" must be an object mapping strings to strings, got {}", m.type_name());
  for (const auto& [key, value] : m.items()) {
    if (!value.is_string())
      throw_input_error(path, "\"__metadata__\".\"{}\" must be a string, got {}", key, value.type_name());
    out.emplace(key, value.get<std::string>());
  }
  return out;
}

// JSON string literal exactly as serde_json writes it: only '"', '\\' and control characters are escaped,
// with the short forms \b \t \n \f \r and lowercase \u00XX otherwise; everything else is raw UTF-8.
void append_json_string(std::string& out, std::string_view s) {
  static const char* kHex = "0123456789abcdef";
  out += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\t': out += "\\t"; break;
      case '\n': out += "\\n"; break;
      case '\f': out += "\\f"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

}  // namespace

size_t dtype_size(DType dtype) { return info_of(dtype).size; }

std::string_view dtype_name(DType dtype) { return info_of(dtype).name; }

DType dtype_from_name(std::string_view name, const std::string& source) {
  for (const auto& d : kDTypes)
    if (name == d.name) return d.dtype;
  throw_input_error(source, "unknown or unsupported dtype \"{}\" (supported: F32 F16 BF16 I64 I32 U8 BOOL)", name);
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---------------------------------------------------------------- reader

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.file_ = MappedFile::open(path);
  const uint8_t* base = f.file_->data();
  const uint64_t file_size = f.file_->size();

  if (file_size < kLengthPrefix)
    throw_input_error(path, "file is {} bytes, shorter than the 8-byte header length prefix", file_size);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];
  if (header_len > kSafetensorsMaxHeaderSize)
    throw_input_error(path, "header length {} exceeds the {}-byte limit", header_len, kSafetensorsMaxHeaderSize);
  if (header_len > file_size - kLengthPrefix)
    throw_input_error(path, "header length {} runs past the end of the file ({} bytes after the length prefix)",
                      header_len, file_size - kLengthPrefix);

  std::string_view header(reinterpret_cast<const char*>(base + kLengthPrefix), header_len);
  if (size_t bad = find_invalid_utf8(header); bad != std::string_view::npos)
    throw_input_error(path, "header is not valid UTF-8 (byte {} of the header)", bad);
  json doc;
  try {
    doc = json::parse(header);
  } catch (const json::exception& e) {
    throw_input_error(path, "header is not valid JSON: {}", e.what());
  }
  if (!doc.is_object()) throw_input_error(path, "header must be a JSON object, got {}", doc.type_name());

  std::vector<ParsedEntry> entries;
  entries.reserve(doc.size());
  for (const auto& [key, value] : doc.items()) {
    if (key == "__metadata__") {
      f.metadata_ = parse_metadata(path, value);
      continue;
    }
    entries.push_back(parse_entry(path, key, value));
  }

  // Like the reference: order by offsets, then require them to tile [0, data size) exactly. Zero-byte tensors
  // may share an offset.
  std::sort(entries.begin(), entries.end(), [](const ParsedEntry& a, const ParsedEntry& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  const uint64_t data_size = file_size - kLengthPrefix - header_len;
  const uint8_t* data = base + kLengthPrefix + header_len;
  uint64_t cursor = 0;
  const ParsedEntry* previous = nullptr;
  for (const ParsedEntry& e : entries) {
    const std::string where = fmt::format("{}: tensor '{}'", path, e.name);
    if (e.begin < cursor)
      throw_input_error(where, "data_offsets [{}, {}] overlap tensor '{}' (which ends at {})", e.begin, e.end,
                        previous->name, cursor);
    if (e.begin > cursor) {
      if (previous == nullptr)
        throw_input_error(where, "data_offsets begin at {}, leaving a gap: the first tensor must begin at 0", e.begin);
      throw_input_error(where, "gap before data_offsets [{}, {}]: tensor '{}' ends at {}", e.begin, e.end,
                        previous->name, cursor);
    }
    if (e.end > data_size)
      throw_input_error(where, "data_offsets [{}, {}] out of range: the data section is {} bytes", e.begin, e.end,
                        data_size);
    uint64_t numel = 0;
    const uint64_t elem = dtype_size(e.dtype);
    if (!checked_numel(e.shape, std::numeric_limits<uint64_t>::max() / elem, &numel))
      throw_input_error(where, "shape {} overflows the byte count", shape_string(e.shape));
    if (numel * elem != e.end - e.begin)
      throw_input_error(where, "shape {} x {} ({} bytes each) = {} bytes, but data_offsets [{}, {}] span {} bytes",
                        shape_string(e.shape), dtype_name(e.dtype), elem, numel * elem, e.begin, e.end,
                        e.end - e.begin);
    cursor = e.end;
    previous = &e;

    TensorView view;
    view.name = e.name;
    view.dtype = e.dtype;
    view.shape = e.shape;
    view.data = data + e.begin;
    view.nbytes = static_cast<size_t>(e.end - e.begin);
    view.owner = f.file_;
    f.tensors_.emplace(e.name, std::move(view));
  }
  if (cursor != data_size)
    throw_input_error(path, "tensors cover {} bytes but the data section is {} bytes ({} trailing bytes)", cursor,
                      data_size, data_size - cursor);
  return f;
}

const std::string& SafetensorsFile::path() const { return file_->path(); }

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> out;
  out.reserve(tensors_.size());
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

const TensorView& SafetensorsFile::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw_input_error(path(), "no tensor named '{}'", name);
  return it->second;
}

// ---------------------------------------------------------------- checkpoint

namespace {

// Shard names in an index are plain relative paths inside the checkpoint directory.
bool is_safe_shard_name(const std::string& name) {
  if (name.empty() || name.front() == '/') return false;
  for (const auto& part : fs::path(name))
    if (part == "..") return false;
  return true;
}

}  // namespace

SafetensorsCheckpoint SafetensorsCheckpoint::open(const std::string& path) {
  SafetensorsCheckpoint ck;
  ck.path_ = path;
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec)) {
    if (fs::exists(fs::path(path) / kIndexName, ec)) {
      file = (fs::path(path) / kIndexName).string();
    } else if (fs::exists(fs::path(path) / kSingleName, ec)) {
      file = (fs::path(path) / kSingleName).string();
    } else {
      throw_input_error(path, "directory has neither {} nor {}", kIndexName, kSingleName);
    }
  }

  const bool is_index = file.size() >= 5 && file.compare(file.size() - 5, 5, ".json") == 0;
  if (!is_index) {
    ck.shards_.push_back(SafetensorsFile::open(file));
    for (const auto& name : ck.shards_[0].names()) ck.shard_of_.emplace(name, 0);
    return ck;
  }

  json index;
  try {
    index = json::parse(read_file(file));
  } catch (const json::exception& e) {
    throw_input_error(file, "not valid JSON: {}", e.what());
  }
  if (!index.is_object()) throw_input_error(file, "must be a JSON object, got {}", index.type_name());
  if (!index.contains("weight_map")) throw_input_error(file, "missing \"weight_map\"");
  const json& weight_map = index.at("weight_map");
  if (!weight_map.is_object())
    throw_input_error(file, "\"weight_map\" must be an object mapping tensor names to shard files, got {}",
                      weight_map.type_name());

  // Group by shard so each file is opened (and mapped) once; std::map keeps shard order deterministic.
  std::map<std::string, std::vector<std::string>> tensors_by_shard;
  for (const auto& [tensor, shard] : weight_map.items()) {
    if (!shard.is_string())
      throw_input_error(file, "weight_map.\"{}\": shard file name must be a string, got {}", tensor,
                        shard.type_name());
    const std::string& shard_name = shard.get_ref<const std::string&>();
    if (!is_safe_shard_name(shard_name))
      throw_input_error(file, "weight_map.\"{}\": shard file name \"{}\" must be a relative path inside the "
                        "checkpoint directory", tensor, shard_name);
    tensors_by_shard[shard_name].push_back(tensor);
  }

  const fs::path dir = fs::path(file).parent_path();
  std::map<std::string, std::string> shard_name_of;  // tensor -> shard file name, for duplicate reports
  for (const auto& [shard_name, listed] : tensors_by_shard) {
    const std::string shard_path = (dir / shard_name).string();
    if (!fs::exists(shard_path, ec))
      throw_input_error(file, "shard file \"{}\" (listed for tensor '{}') does not exist", shard_name,
                        listed.front());
    SafetensorsFile shard = SafetensorsFile::open(shard_path);
    for (const auto& tensor : listed)
      if (!shard.contains(tensor))
        throw_input_error(file, "tensor '{}' is listed in weight_map for shard \"{}\", but that shard does not "
                          "contain it", tensor, shard_name);
    const size_t shard_index = ck.shards_.size();
    for (const auto& tensor : shard.names()) {
      auto [it, inserted] = shard_name_of.emplace(tensor, shard_name);
      if (!inserted)
        throw_input_error(file, "tensor '{}' is present in two shards: \"{}\" and \"{}\"", tensor, it->second,
                          shard_name);
      ck.shard_of_.emplace(tensor, shard_index);
    }
    ck.shards_.push_back(std::move(shard));
  }
  return ck;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> out;
  out.reserve(shard_of_.size());
  for (const auto& kv : shard_of_) out.push_back(kv.first);
  return out;
}

bool SafetensorsCheckpoint::contains(const std::string& name) const { return shard_of_.count(name) != 0; }

const TensorView& SafetensorsCheckpoint::get(const std::string& name) const {
  auto it = shard_of_.find(name);
  if (it == shard_of_.end()) throw_input_error(path_, "no tensor named '{}' in the checkpoint", name);
  return shards_[it->second].get(name);
}

// ---------------------------------------------------------------- writer

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> order;
  order.reserve(tensors.size());
  for (const auto& t : tensors) {
    const std::string where = fmt::format("{}: tensor '{}'", path, t.name);
    if (t.name == "__metadata__") throw InputError(where, "the name \"__metadata__\" is reserved for metadata");
    if (find_invalid_utf8(t.name) != std::string_view::npos) throw InputError(where, "name is not valid UTF-8");
    uint64_t numel = 0;
    for (size_t i = 0; i < t.shape.size(); ++i)
      if (t.shape[i] < 0) throw_input_error(where, "shape[{}] is negative ({})", i, t.shape[i]);
    if (!checked_numel(t.shape, std::numeric_limits<uint64_t>::max() / dtype_size(t.dtype), &numel))
      throw_input_error(where, "shape {} overflows the byte count", shape_string(t.shape));
    if (numel * dtype_size(t.dtype) != t.nbytes)
      throw_input_error(where, "shape {} x {} needs {} bytes, got {}", shape_string(t.shape), dtype_name(t.dtype),
                        numel * dtype_size(t.dtype), t.nbytes);
    if (t.nbytes > 0 && t.data == nullptr) throw InputError(where, "data is null");
    order.push_back(&t);
  }
  for (const auto& [key, value] : metadata)
    if (find_invalid_utf8(key) != std::string_view::npos || find_invalid_utf8(value) != std::string_view::npos)
      throw_input_error(path, "__metadata__ entry \"{}\" is not valid UTF-8", key);

  // The reference's order: descending dtype alignment, then name (bytewise).
  std::sort(order.begin(), order.end(), [](const TensorToWrite* a, const TensorToWrite* b) {
    int ra = info_of(a->dtype).alignment_rank, rb = info_of(b->dtype).alignment_rank;
    if (ra != rb) return ra > rb;
    return a->name < b->name;
  });
  std::vector<std::string_view> names;
  for (const auto* t : order) names.push_back(t->name);
  std::sort(names.begin(), names.end());
  if (auto dup = std::adjacent_find(names.begin(), names.end()); dup != names.end())
    throw_input_error(path, "tensor '{}' given twice", *dup);

  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      if (!first) header += ',';
      first = false;
      append_json_string(header, key);
      header += ':';
      append_json_string(header, value);
    }
    header += '}';
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const TensorToWrite& t = *order[i];
    if (i > 0 || !metadata.empty()) header += ',';
    append_json_string(header, t.name);
    header += ":{\"dtype\":\"";
    header += dtype_name(t.dtype);
    header += "\",\"shape\":[";
    for (size_t d = 0; d < t.shape.size(); ++d) {
      if (d) header += ',';
      header += std::to_string(t.shape[d]);
    }
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + t.nbytes) + "]}";
    offset += t.nbytes;
  }
  header += '}';
  header.resize((header.size() + 7) / 8 * 8, ' ');

  uint8_t prefix[kLengthPrefix];
  uint64_t n = header.size();
  for (size_t i = 0; i < kLengthPrefix; ++i) prefix[i] = static_cast<uint8_t>(n >> (8 * i));

  AtomicFileWriter out(path);
  out.write(prefix, sizeof prefix);
  out.write(header);
  for (const auto* t : order)
    if (t->nbytes > 0) out.write(t->data, t->nbytes);
  out.commit();
}

}  // namespace vlreward
