// safetensors reader/writer against files written by the Python reference (tests/fixtures/safetensors, made by
// gen_safetensors.py) and against malformed files built here byte by byte.
#include "adapters/hf/safetensors.h"

#include <cstdint>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace vlreward;

namespace {

const fs::path kFixtures = fs::path(VLREWARD_FIXTURES_DIR) / "safetensors";

json manifest() { return json::parse(read_file((kFixtures / "manifest.json").string())); }

void write_bytes(const fs::path& p, const std::string& bytes) {
  FILE* f = std::fopen(p.c_str(), "wb");
  ASSERT_NE(f, nullptr);
  ASSERT_EQ(std::fwrite(bytes.data(), 1, bytes.size(), f), bytes.size());
  std::fclose(f);
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>(n >> (8 * i));
  return s;
}

// A file with the given header text (not padded) followed by `data_bytes` zero bytes.
std::string st_bytes(const std::string& header, size_t data_bytes) {
  return le64(header.size()) + header + std::string(data_bytes, '\0');
}

float half_to_float(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1F, mant = h & 0x3FF;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    v = mant ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}

float bits_to_float(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

template <typename T>
T element(const TensorView& v, size_t i) {
  T x;
  std::memcpy(&x, v.data + i * sizeof(T), sizeof(T));
  return x;
}

// Checks a float decoded from the file against the manifest's float64 value (or "nan"/"inf"/"-inf").
void expect_float_value(double got, const json& want, const std::string& what) {
  if (want.is_string()) {
    const auto s = want.get<std::string>();
    if (s == "nan") {
      EXPECT_TRUE(std::isnan(got)) << what;
    } else {
      EXPECT_TRUE(std::isinf(got) && (got > 0) == (s == "inf")) << what << " got " << got;
    }
    return;
  }
  EXPECT_EQ(got, want.get<double>()) << what;
  EXPECT_EQ(std::signbit(got), std::signbit(want.get<double>())) << what;
}

// Every element of `view` equals the manifest entry (exact bits for floats, exact values otherwise).
void expect_tensor_matches(const TensorView& view, const json& want) {
  const std::string what = view.name;
  EXPECT_EQ(dtype_name(view.dtype), want.at("dtype").get<std::string>()) << what;
  EXPECT_EQ(view.shape, want.at("shape").get<std::vector<int64_t>>()) << what;
  const size_t n = want.at("values").size();
  ASSERT_EQ(static_cast<size_t>(view.numel()), n) << what;
  ASSERT_EQ(view.nbytes, n * dtype_size(view.dtype)) << what;
  ASSERT_EQ(reinterpret_cast<uintptr_t>(view.data) % dtype_size(view.dtype), 0u) << what << " misaligned";
  const json& values = want.at("values");
  for (size_t i = 0; i < n; ++i) {
    const std::string at = what + "[" + std::to_string(i) + "]";
    switch (view.dtype) {
      case DType::F32: {
        uint32_t b = element<uint32_t>(view, i);
        EXPECT_EQ(b, want.at("bits")[i].get<uint32_t>()) << at;
        expect_float_value(bits_to_float(b), values[i], at);
        break;
      }
      case DType::F16: {
        uint16_t b = element<uint16_t>(view, i);
        EXPECT_EQ(b, want.at("bits")[i].get<uint16_t>()) << at;
        expect_float_value(half_to_float(b), values[i], at);
        break;
      }
      case DType::BF16: {
        uint16_t b = element<uint16_t>(view, i);
        EXPECT_EQ(b, want.at("bits")[i].get<uint16_t>()) << at;
        expect_float_value(bits_to_float(static_cast<uint32_t>(b) << 16), values[i], at);
        break;
      }
      case DType::I64: EXPECT_EQ(element<int64_t>(view, i), values[i].get<int64_t>()) << at; break;
      case DType::I32: EXPECT_EQ(element<int32_t>(view, i), values[i].get<int32_t>()) << at; break;
      case DType::U8: EXPECT_EQ(element<uint8_t>(view, i), values[i].get<uint8_t>()) << at; break;
      case DType::BOOL: EXPECT_EQ(element<uint8_t>(view, i), values[i].get<bool>() ? 1 : 0) << at; break;
    }
  }
}

std::vector<TensorToWrite> to_write(const SafetensorsFile& f) {
  std::vector<TensorToWrite> out;
  for (const auto& name : f.names()) {
    const TensorView& v = f.get(name);
    out.push_back({v.name, v.dtype, v.shape, v.data, v.nbytes});
  }
  return out;
}

// Runs `fn`, expecting an InputError whose message contains every one of `parts`.
void expect_input_error(const std::function<void()>& fn, const std::vector<std::string>& parts,
                        const std::string& label) {
  try {
    fn();
    ADD_FAILURE() << label << ": no error thrown";
  } catch (const InputError& e) {
    for (const auto& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << label << ": message \"" << e.what() << "\" lacks \"" << p << "\"";
  } catch (const std::exception& e) {
    ADD_FAILURE() << label << ": wrong exception type: " << e.what();
  }
}

}  // namespace

TEST(Safetensors, DtypeTable) {
  EXPECT_EQ(dtype_size(DType::F32), 4u);
  EXPECT_EQ(dtype_size(DType::F16), 2u);
  EXPECT_EQ(dtype_size(DType::BF16), 2u);
  EXPECT_EQ(dtype_size(DType::I64), 8u);
  EXPECT_EQ(dtype_size(DType::I32), 4u);
  EXPECT_EQ(dtype_size(DType::U8), 1u);
  EXPECT_EQ(dtype_size(DType::BOOL), 1u);
  for (DType d : {DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::U8, DType::BOOL})
    EXPECT_EQ(dtype_from_name(dtype_name(d), "x"), d);
  expect_input_error([] { dtype_from_name("F64", "src.json"); }, {"src.json", "unsupported dtype \"F64\""}, "F64");
  expect_input_error([] { dtype_from_name("bf16", "src.json"); }, {"\"bf16\""}, "lowercase");
}

TEST(Safetensors, ReadsEveryValueOfTheReferenceFiles) {
  const json m = manifest();
  ASSERT_EQ(m.at("files").size(), 4u);
  for (const auto& [filename, want] : m.at("files").items()) {
    SCOPED_TRACE(filename);
    SafetensorsFile f = SafetensorsFile::open((kFixtures / filename).string());
    using StringMap = std::map<std::string, std::string>;
    EXPECT_EQ(f.metadata(), want.at("metadata").get<StringMap>());
    std::vector<std::string> names;
    for (const auto& t : want.at("tensors")) names.push_back(t.at("name").get<std::string>());
    EXPECT_EQ(f.names(), names);
    EXPECT_EQ(f.size(), names.size());
    for (const auto& t : want.at("tensors")) expect_tensor_matches(f.get(t.at("name").get<std::string>()), t);
  }
}

TEST(Safetensors, CoversEdgeCasesInFixtures) {
  // Guards the fixture itself: the cases the brief asks for are really in the reference file.
  SafetensorsFile f = SafetensorsFile::open((kFixtures / "all_dtypes.safetensors").string());
  EXPECT_TRUE(f.get("f32.scalar").shape.empty());
  EXPECT_EQ(f.get("f32.scalar").numel(), 1);
  EXPECT_EQ(f.get("f32.empty").shape, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(f.get("f32.empty").nbytes, 0u);
  std::set<DType> dtypes;
  for (const auto& n : f.names()) dtypes.insert(f.get(n).dtype);
  EXPECT_EQ(dtypes.size(), 7u);
  expect_input_error([&] { f.get("nope"); }, {"all_dtypes.safetensors", "no tensor named 'nope'"}, "missing");
}

TEST(Safetensors, ViewsKeepTheMappingAlive) {
  TensorView view;
  {
    SafetensorsFile f = SafetensorsFile::open((kFixtures / "no_metadata.safetensors").string());
    view = f.get("c");
  }
  ASSERT_EQ(view.owner.use_count(), 1);
  EXPECT_EQ(element<int32_t>(view, 0), 1);
  EXPECT_EQ(element<int32_t>(view, 2), 3);
}

TEST(Safetensors, RewriteIsByteIdenticalToTheReference) {
  const json m = manifest();
  auto dir = test_support::scratch_dir("rewrite");
  std::vector<fs::path> sources;
  for (const auto& [filename, want] : m.at("files").items()) sources.push_back(kFixtures / filename);
  for (const auto& shard : fs::directory_iterator(kFixtures / "sharded"))
    if (shard.path().extension() == ".safetensors") sources.push_back(shard.path());
  ASSERT_EQ(sources.size(), 6u);
  for (const auto& src : sources) {
    SCOPED_TRACE(src.string());
    SafetensorsFile f = SafetensorsFile::open(src.string());
    const auto out = dir / src.filename();
    write_safetensors(out.string(), to_write(f), f.metadata());
    EXPECT_EQ(read_file(out.string()), read_file(src.string()));
  }
}

TEST(Safetensors, WriterOrdersByAlignmentThenNameAndPads) {
  // Input order scrambled on purpose; the reference sorts (I64 > F32 > BF16 > U8 > BOOL, then name).
  const uint8_t b1 = 1;
  const float f[2] = {1.5f, -2.0f};
  const int64_t i = 7;
  const uint16_t h = 0x3F80;
  auto p = test_support::scratch_dir("order") / "o.safetensors";
  write_safetensors(p.string(),
                    {{"z_bool", DType::BOOL, {1}, &b1, 1},
                     {"b_f32", DType::F32, {2}, f, 8},
                     {"a_f32", DType::F32, {2}, f, 8},
                     {"y_i64", DType::I64, {}, &i, 8},
                     {"m_bf16", DType::BF16, {1}, &h, 2}},
                    {});
  const std::string bytes = read_file(p.string());
  const std::string header =
      "{\"y_i64\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
      "\"a_f32\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
      "\"b_f32\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[16,24]},"
      "\"m_bf16\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[24,26]},"
      "\"z_bool\":{\"dtype\":\"BOOL\",\"shape\":[1],\"data_offsets\":[26,27]}}";
  const size_t padded = (header.size() + 7) / 8 * 8;
  ASSERT_EQ(bytes.size(), 8 + padded + 27);
  EXPECT_EQ(bytes.substr(0, 8), le64(padded));
  EXPECT_EQ(bytes.substr(8, padded), header + std::string(padded - header.size(), ' '));
}

TEST(Safetensors, WriteReadRoundTrip) {
  std::vector<float> f32(2 * 3 * 5);
  for (size_t k = 0; k < f32.size(); ++k) f32[k] = static_cast<float>(k) * 0.25f - 3.0f;
  std::vector<int64_t> i64 = {-5, 0, 1LL << 40};
  std::vector<uint8_t> boolean = {1, 0, 0, 1};
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"zeta", "last"}, {"alpha", "first\n\"q\""}};
  auto p = test_support::scratch_dir("roundtrip") / "r.safetensors";
  write_safetensors(p.string(),
                    {{"w", DType::F32, {2, 3, 5}, f32.data(), f32.size() * 4},
                     {"ids", DType::I64, {3}, i64.data(), 24},
                     {"mask", DType::BOOL, {2, 2}, boolean.data(), 4},
                     {"none", DType::I32, {4, 0}, nullptr, 0}},
                    meta);
  SafetensorsFile f = SafetensorsFile::open(p.string());
  EXPECT_EQ(f.metadata(), meta);
  EXPECT_EQ(f.names(), (std::vector<std::string>{"ids", "mask", "none", "w"}));
  EXPECT_EQ(f.get("w").shape, (std::vector<int64_t>{2, 3, 5}));
  EXPECT_EQ(std::memcmp(f.get("w").data, f32.data(), f32.size() * 4), 0);
  EXPECT_EQ(std::memcmp(f.get("ids").data, i64.data(), 24), 0);
  EXPECT_EQ(std::memcmp(f.get("mask").data, boolean.data(), 4), 0);
  EXPECT_EQ(f.get("none").shape, (std::vector<int64_t>{4, 0}));
  EXPECT_EQ(f.get("none").nbytes, 0u);
  // Metadata keys are written sorted (the reference uses HashMap order, which varies run to run).
  const std::string bytes = read_file(p.string());
  EXPECT_NE(bytes.find("{\"__metadata__\":{\"alpha\":\"first\\n\\\"q\\\"\",\"format\":\"pt\",\"zeta\":\"last\"},"),
            std::string::npos);
}

TEST(Safetensors, WriterRejectsInconsistentInput) {
  auto dir = test_support::scratch_dir("writer_errors");
  const std::string p = (dir / "bad.safetensors").string();
  const float f[4] = {};
  expect_input_error([&] { write_safetensors(p, {{"w", DType::F32, {3}, f, 8}}); },
                     {p, "tensor 'w'", "needs 12 bytes, got 8"}, "nbytes mismatch");
  expect_input_error([&] { write_safetensors(p, {{"w", DType::F32, {2, -1}, f, 8}}); },
                     {p, "tensor 'w'", "shape[1] is negative (-1)"}, "negative dim");
  expect_input_error([&] { write_safetensors(p, {{"w", DType::F32, {1}, f, 4}, {"w", DType::I32, {1}, f, 4}}); },
                     {p, "tensor 'w' given twice"}, "duplicate");
  expect_input_error([&] { write_safetensors(p, {{"__metadata__", DType::F32, {1}, f, 4}}); },
                     {p, "reserved"}, "reserved name");
  expect_input_error([&] { write_safetensors(p, {{"w", DType::F32, {1}, nullptr, 4}}); }, {p, "data is null"},
                     "null data");
  expect_input_error([&] { write_safetensors(p, {{std::string("bad\xff", 4), DType::F32, {1}, f, 4}}); },
                     {p, "not valid UTF-8"}, "bad name");
  EXPECT_FALSE(fs::exists(p)) << "a failed write must leave nothing behind";
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator{}), 0);
}

TEST(Safetensors, EmptyFileFromTheReference) {
  SafetensorsFile f = SafetensorsFile::open((kFixtures / "empty.safetensors").string());
  EXPECT_EQ(f.size(), 0u);
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(read_file((kFixtures / "empty.safetensors").string()), le64(8) + "{}      ");
}

// ---------------------------------------------------------------- malformed single files

struct MalformedCase {
  const char* label;
  std::string bytes;
  std::vector<std::string> expected;  // substrings of the message besides the file path
};

TEST(Safetensors, MalformedFilesGiveSpecificErrors) {
  const std::string f32_2x3 = R"("t":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]})";
  std::string bad_utf8 = "{\"t\xC3\x28\":{}}";
  const std::vector<MalformedCase> cases = {
      {"empty file", "", {"file is 0 bytes, shorter than the 8-byte header length prefix"}},
      {"5-byte file", std::string("\x10\0\0\0\0", 5), {"file is 5 bytes, shorter than the 8-byte"}},
      {"header too large", le64(100'000'001) + "{}", {"header length 100000001 exceeds the 100000000-byte limit"}},
      {"header length beyond file", le64(64) + "{}", {"header length 64 runs past the end of the file (2 bytes"}},
      {"header length u64 max", le64(~0ULL) + "{}", {"exceeds the 100000000-byte limit"}},
      {"invalid UTF-8", st_bytes(bad_utf8, 0), {"header is not valid UTF-8 (byte 3 of the header)"}},
      {"overlong UTF-8", st_bytes("{\"\xC0\xAF\":1}", 0), {"not valid UTF-8"}},
      {"invalid JSON", st_bytes("{\"t\":", 0), {"header is not valid JSON"}},
      {"trailing garbage after JSON", st_bytes("{} x", 0), {"header is not valid JSON"}},
      {"header is an array", st_bytes("[1,2]", 0), {"header must be a JSON object, got array"}},
      {"entry not an object", st_bytes(R"({"t":[1]})", 0), {"tensor 't'", "entry must be a JSON object, got array"}},
      {"missing dtype", st_bytes(R"({"t":{"shape":[1],"data_offsets":[0,4]}})", 4), {"tensor 't'", "missing \"dtype\""}},
      {"missing shape", st_bytes(R"({"t":{"dtype":"F32","data_offsets":[0,4]}})", 4), {"tensor 't'", "missing \"shape\""}},
      {"missing data_offsets", st_bytes(R"({"t":{"dtype":"F32","shape":[1]}})", 4),
       {"tensor 't'", "missing \"data_offsets\""}},
      {"dtype not a string", st_bytes(R"({"t":{"dtype":4,"shape":[1],"data_offsets":[0,4]}})", 4),
       {"tensor 't'", "\"dtype\" must be a string, got number"}},
      {"unknown dtype", st_bytes(R"({"t":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}})", 4),
       {"tensor 't'", "unknown or unsupported dtype \"F99\""}},
      {"shape not an array", st_bytes(R"({"t":{"dtype":"F32","shape":"2x3","data_offsets":[0,24]}})", 24),
       {"tensor 't'", "\"shape\" must be an array, got string"}},
      {"negative dim", st_bytes(R"({"t":{"dtype":"F32","shape":[2,-3],"data_offsets":[0,24]}})", 24),
       {"tensor 't'", "shape[1] is negative (-3)"}},
      {"fractional dim", st_bytes(R"({"t":{"dtype":"F32","shape":[2.5],"data_offsets":[0,10]}})", 10),
       {"tensor 't'", "shape[0] must be a non-negative integer, got 2.5"}},
      {"dim beyond int64", st_bytes(R"({"t":{"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,1]}})", 1),
       {"tensor 't'", "shape[0] = 9223372036854775808 is too large"}},
      {"shape overflows", st_bytes(R"({"t":{"dtype":"I64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8),
       {"tensor 't'", "overflows the byte count"}},
      {"data_offsets wrong arity", st_bytes(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}})", 4),
       {"tensor 't'", "\"data_offsets\" must be an array of two non-negative integers, got [0,4,8]"}},
      {"data_offsets negative", st_bytes(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", 4),
       {"tensor 't'", "\"data_offsets\" must be an array of two non-negative integers"}},
      {"end before begin", st_bytes(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4),
       {"tensor 't'", "data_offsets end (0) is before begin (4)"}},
      {"offsets out of range", st_bytes("{" + f32_2x3 + "}", 20),
       {"tensor 't'", "data_offsets [0, 24] out of range: the data section is 20 bytes"}},
      {"overlapping offsets",
       st_bytes(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 12),
       {"tensor 'b'", "data_offsets [4, 12] overlap tensor 'a' (which ends at 8)"}},
      {"gap between tensors",
       st_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})", 12),
       {"tensor 'b'", "gap before data_offsets [8, 12]: tensor 'a' ends at 4"}},
      {"first tensor not at 0", st_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8),
       {"tensor 'a'", "data_offsets begin at 4, leaving a gap: the first tensor must begin at 0"}},
      {"shape x dtype != span", st_bytes(R"({"t":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20),
       {"tensor 't'", "shape [2, 3] x F32 (4 bytes each) = 24 bytes, but data_offsets [0, 20] span 20 bytes"}},
      {"trailing bytes after the last tensor", st_bytes("{" + f32_2x3 + "}", 30),
       {"tensors cover 24 bytes but the data section is 30 bytes (6 trailing bytes)"}},
      {"metadata not an object", st_bytes(R"({"__metadata__":["a"]})", 0),
       {"\"__metadata__\" must be an object mapping strings to strings, got array"}},
      {"metadata value not a string", st_bytes(R"({"__metadata__":{"k":1}})", 0),
       {"\"__metadata__\".\"k\" must be a string, got number"}},
  };
  auto dir = test_support::scratch_dir("malformed");
  std::set<std::string> distinct_messages;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    const fs::path p = dir / ("case" + std::to_string(i) + ".safetensors");
    write_bytes(p, c.bytes);
    std::vector<std::string> parts = c.expected;
    parts.push_back(p.string());
    expect_input_error([&] { SafetensorsFile::open(p.string()); }, parts, c.label);
    distinct_messages.insert(c.expected.back());
  }
  EXPECT_GE(distinct_messages.size(), 30u);
}

TEST(Safetensors, AcceptsWhatTheReferenceAccepts) {
  auto dir = test_support::scratch_dir("accepted");
  // Unpadded header (data then misaligned), extra keys in an entry, null metadata, zero-size tensors sharing an
  // offset, whitespace around the JSON: all read by the Rust crate.
  const std::string header =
      R"( {"__metadata__":null,"e1":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},)"
      R"("e2":{"dtype":"I64","shape":[2,0],"data_offsets":[0,0],"extra":true},)"
      R"("x":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}  )";
  const fs::path p = dir / "ok.safetensors";
  write_bytes(p, le64(header.size()) + header + "\x01\x02\x03");
  SafetensorsFile f = SafetensorsFile::open(p.string());
  EXPECT_EQ(f.names(), (std::vector<std::string>{"e1", "e2", "x"}));
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_EQ(element<uint8_t>(f.get("x"), 2), 3);
  EXPECT_EQ(f.get("e2").shape, (std::vector<int64_t>{2, 0}));
}

// ---------------------------------------------------------------- sharded checkpoints

TEST(SafetensorsCheckpoint, ReadsTheReferenceShardedCheckpoint) {
  const json want = manifest().at("checkpoint");
  const fs::path dir = kFixtures / want.at("dir").get<std::string>();
  for (const std::string& path : {dir.string(), (dir / "model.safetensors.index.json").string()}) {
    SCOPED_TRACE(path);
    SafetensorsCheckpoint ck = SafetensorsCheckpoint::open(path);
    ASSERT_EQ(ck.shards().size(), 2u);
    std::vector<std::string> names;
    for (const auto& t : want.at("tensors")) {
      const auto name = t.at("name").get<std::string>();
      names.push_back(name);
      ASSERT_TRUE(ck.contains(name));
      const TensorView& v = ck.get(name);
      expect_tensor_matches(v, t);
      EXPECT_EQ(fs::path(v.owner->path()).filename(), t.at("shard").get<std::string>());
    }
    EXPECT_EQ(ck.names(), names);
    expect_input_error([&] { ck.get("model.nope"); }, {path, "no tensor named 'model.nope'"}, "missing tensor");
  }
}

TEST(SafetensorsCheckpoint, SingleFileAndDirectoryWithModelSafetensors) {
  auto dir = test_support::scratch_dir("single");
  fs::copy_file(kFixtures / "no_metadata.safetensors", dir / "model.safetensors");
  SafetensorsCheckpoint by_dir = SafetensorsCheckpoint::open(dir.string());
  EXPECT_EQ(by_dir.names(), (std::vector<std::string>{"a", "b", "c"}));
  SafetensorsCheckpoint by_file = SafetensorsCheckpoint::open((kFixtures / "all_dtypes.safetensors").string());
  EXPECT_EQ(by_file.names().size(), 13u);
  EXPECT_EQ(by_file.get("i64.ids").shape, (std::vector<int64_t>{2, 4}));
}

TEST(SafetensorsCheckpoint, MalformedIndexGivesSpecificErrors) {
  const fs::path src = kFixtures / "sharded";
  const std::string s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors";
  struct IndexCase {
    const char* label;
    std::string index;
    std::vector<std::string> expected;
  };
  const std::vector<IndexCase> cases = {
      {"bad JSON", R"({"weight_map": {)", {"not valid JSON"}},
      {"not an object", R"(["weight_map"])", {"must be a JSON object, got array"}},
      {"missing weight_map", R"({"metadata": {"total_size": 1}})", {"missing \"weight_map\""}},
      {"weight_map not an object", R"({"weight_map": ["a"]})", {"\"weight_map\" must be an object"}},
      {"shard name not a string", R"({"weight_map": {"model.norm.weight": 2}})",
       {"weight_map.\"model.norm.weight\": shard file name must be a string, got number"}},
      {"shard outside the directory", R"({"weight_map": {"model.norm.weight": "../x.safetensors"}})",
       {"shard file name \"../x.safetensors\" must be a relative path inside the checkpoint directory"}},
      {"shard file missing", R"({"weight_map": {"model.norm.weight": "model-00003-of-00003.safetensors"}})",
       {"shard file \"model-00003-of-00003.safetensors\" (listed for tensor 'model.norm.weight') does not exist"}},
      {"tensor missing from its shard", R"({"weight_map": {"model.norm.weight": ")" + s1 + R"("}})",
       {"tensor 'model.norm.weight' is listed in weight_map for shard \"" + s1 + "\", but that shard does not contain it"}},
  };
  int n = 0;
  for (const auto& c : cases) {
    auto dir = test_support::scratch_dir("index" + std::to_string(n++));
    fs::copy_file(src / s1, dir / s1);
    fs::copy_file(src / s2, dir / s2);
    const fs::path index = dir / "model.safetensors.index.json";
    write_bytes(index, c.index);
    std::vector<std::string> parts = c.expected;
    parts.push_back(index.string());
    expect_input_error([&] { SafetensorsCheckpoint::open(dir.string()); }, parts, c.label);
  }

  // The same tensor in two shards: a third shard holding a copy of model.norm.weight.
  auto dir = test_support::scratch_dir("duplicate");
  fs::copy_file(src / s1, dir / s1);
  fs::copy_file(src / s2, dir / s2);
  SafetensorsFile second = SafetensorsFile::open((dir / s2).string());
  const TensorView& norm = second.get("model.norm.weight");
  write_safetensors((dir / "extra.safetensors").string(),
                    {{norm.name, norm.dtype, norm.shape, norm.data, norm.nbytes}});
  // A JSON object can't list one name twice, so the index names the extra shard under another tensor.
  std::string index = read_file((src / "model.safetensors.index.json").string());
  index.replace(index.find("\"weight_map\": {") + 15, 0, "\n    \"unused.alias\": \"extra.safetensors\",");
  write_bytes(dir / "model.safetensors.index.json", index);
  expect_input_error([&] { SafetensorsCheckpoint::open(dir.string()); },
                     {"model.safetensors.index.json", "tensor 'unused.alias' is listed in weight_map"},
                     "alias missing");
  write_safetensors((dir / "extra.safetensors").string(),
                    {{norm.name, norm.dtype, norm.shape, norm.data, norm.nbytes},
                     {"unused.alias", norm.dtype, norm.shape, norm.data, norm.nbytes}});
  expect_input_error([&] { SafetensorsCheckpoint::open(dir.string()); },
                     {"model.safetensors.index.json",
                      "tensor 'model.norm.weight' is present in two shards: \"extra.safetensors\" and \"" + s2 + "\""},
                     "two shards");

  auto empty = test_support::scratch_dir("empty_dir");
  expect_input_error([&] { SafetensorsCheckpoint::open(empty.string()); },
                     {empty.string(), "neither model.safetensors.index.json nor model.safetensors"}, "empty dir");
  // A broken shard reports the shard's own path.
  auto broken = test_support::scratch_dir("broken_shard");
  fs::copy_file(src / s1, broken / s1);
  write_bytes(broken / s2, "abc");
  fs::copy_file(src / "model.safetensors.index.json", broken / "model.safetensors.index.json");
  expect_input_error([&] { SafetensorsCheckpoint::open(broken.string()); },
                     {(broken / s2).string(), "shorter than the 8-byte"}, "broken shard");
}
