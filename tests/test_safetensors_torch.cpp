// safetensors -> torch::Tensor: zero-copy views over the mapping, copies only for misaligned data, exact values
// against the reference files in tests/fixtures/safetensors.
#include "adapters/hf/safetensors_torch.h"

#include <cstdint>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"
#include "tests/test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace vlreward;

namespace {

const fs::path kFixtures = fs::path(VLREWARD_FIXTURES_DIR) / "safetensors";

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

// The manifest's expected tensor, built independently of the reader: floats from their exact bits.
torch::Tensor expected_tensor(const json& t) {
  const auto dtype = t.at("dtype").get<std::string>();
  const auto shape = t.at("shape").get<std::vector<int64_t>>();
  if (dtype == "F32") {
    auto bits = t.at("bits").get<std::vector<uint32_t>>();
    std::vector<int32_t> s(bits.begin(), bits.end());
    return torch::tensor(s, torch::kInt32).view(torch::kFloat32).reshape(shape);
  }
  if (dtype == "F16" || dtype == "BF16") {
    auto bits = t.at("bits").get<std::vector<uint16_t>>();
    std::vector<int16_t> s(bits.size());
    std::memcpy(s.data(), bits.data(), bits.size() * 2);
    auto raw = torch::from_blob(s.data(), {static_cast<int64_t>(s.size())}, torch::kInt16).clone();
    return raw.view(dtype == "F16" ? torch::kFloat16 : torch::kBFloat16).reshape(shape);
  }
  if (dtype == "BOOL") {
    std::vector<uint8_t> v;
    for (const auto& b : t.at("values")) v.push_back(b.get<bool>() ? 1 : 0);
    return torch::tensor(v, torch::kUInt8).to(torch::kBool).reshape(shape);
  }
  auto v = t.at("values").get<std::vector<int64_t>>();
  auto ints = torch::tensor(v, torch::kInt64);
  if (dtype == "I32") return ints.to(torch::kInt32).reshape(shape);
  if (dtype == "U8") return ints.to(torch::kUInt8).reshape(shape);
  return ints.reshape(shape);
}

// Bitwise equality (so NaN payloads and -0.0 count), plus dtype and shape.
void expect_identical(const torch::Tensor& got, const torch::Tensor& want, const std::string& what) {
  ASSERT_EQ(got.scalar_type(), want.scalar_type()) << what;
  ASSERT_EQ(got.sizes(), want.sizes()) << what;
  const size_t n = static_cast<size_t>(got.numel()) * got.element_size();
  auto g = got.contiguous(), w = want.contiguous();
  if (n > 0) {
    EXPECT_EQ(std::memcmp(g.data_ptr(), w.data_ptr(), n), 0) << what;
  }
}

}  // namespace

TEST(SafetensorsTorch, DtypeMapping) {
  EXPECT_EQ(to_scalar_type(DType::F32), torch::kFloat32);
  EXPECT_EQ(to_scalar_type(DType::F16), torch::kFloat16);
  EXPECT_EQ(to_scalar_type(DType::BF16), torch::kBFloat16);
  EXPECT_EQ(to_scalar_type(DType::I64), torch::kInt64);
  EXPECT_EQ(to_scalar_type(DType::I32), torch::kInt32);
  EXPECT_EQ(to_scalar_type(DType::U8), torch::kUInt8);
  EXPECT_EQ(to_scalar_type(DType::BOOL), torch::kBool);
  for (DType d : {DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::U8, DType::BOOL})
    EXPECT_EQ(dtype_from_scalar_type(to_scalar_type(d), "x"), d);
  EXPECT_THROW(dtype_from_scalar_type(torch::kFloat64, "x"), InputError);
}

TEST(SafetensorsTorch, EveryReferenceTensorZeroCopyAndExact) {
  const json m = json::parse(read_file((kFixtures / "manifest.json").string()));
  int zero_copy = 0;
  for (const auto& [filename, want] : m.at("files").items()) {
    SafetensorsFile f = SafetensorsFile::open((kFixtures / filename).string());
    for (const auto& t : want.at("tensors")) {
      const auto name = t.at("name").get<std::string>();
      const TensorView& view = f.get(name);
      torch::Tensor got = to_tensor(view);
      expect_identical(got, expected_tensor(t), filename + ":" + name);
      if (view.nbytes > 0) {
        EXPECT_EQ(got.data_ptr(), static_cast<const void*>(view.data)) << name << " was copied";
        ++zero_copy;
      }
    }
  }
  EXPECT_GE(zero_copy, 15);
}

TEST(SafetensorsTorch, TensorKeepsTheMappingAlive) {
  torch::Tensor t;
  std::weak_ptr<const MappedFile> mapping;
  {
    SafetensorsFile f = SafetensorsFile::open((kFixtures / "no_metadata.safetensors").string());
    mapping = f.get("c").owner;
    t = to_tensor(f.get("c"));
  }
  EXPECT_FALSE(mapping.expired());
  EXPECT_TRUE(torch::equal(t, torch::tensor({1, 2, 3}, torch::kInt32)));
  t = torch::Tensor();
  EXPECT_TRUE(mapping.expired()) << "the deleter must release the mapping";
}

TEST(SafetensorsTorch, MisalignedDataIsCopied) {
  // The reference pads headers to 8 bytes, but readers accept any length: a 9-byte header puts F32 data at
  // file offset 17.
  std::string h = R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  while ((8 + h.size()) % 4 == 0) h += ' ';
  const float values[2] = {1.25f, -3.5f};
  std::string bytes = le64(h.size()) + h + std::string(reinterpret_cast<const char*>(values), 8);
  auto p = test_support::scratch_dir("misaligned") / "m.safetensors";
  write_bytes(p, bytes);
  SafetensorsFile f = SafetensorsFile::open(p.string());
  const TensorView& view = f.get("w");
  ASSERT_NE(reinterpret_cast<uintptr_t>(view.data) % 4, 0u);
  torch::Tensor t = to_tensor(view);
  EXPECT_NE(t.data_ptr(), static_cast<const void*>(view.data));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % 4, 0u);
  EXPECT_TRUE(torch::equal(t, torch::tensor({1.25f, -3.5f})));
}

TEST(SafetensorsTorch, NonCanonicalBoolIsRejected) {
  const std::string h = R"({"mask":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})";
  auto p = test_support::scratch_dir("bool") / "b.safetensors";
  write_bytes(p, le64(h.size()) + h + std::string("\x01\x00\x02", 3));
  SafetensorsFile f = SafetensorsFile::open(p.string());
  try {
    to_tensor(f.get("mask"));
    ADD_FAILURE() << "no error";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(p.string()), std::string::npos) << msg;
    EXPECT_NE(msg.find("tensor 'mask': BOOL element 2 is 2, not 0 or 1"), std::string::npos) << msg;
  }
}

TEST(SafetensorsTorch, TorchWriterRoundTripsAndMatchesTheReference) {
  // Re-writing the reference file from torch tensors (one of them non-contiguous) gives the same bytes.
  SafetensorsFile f = SafetensorsFile::open((kFixtures / "all_dtypes.safetensors").string());
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const auto& name : f.names()) {
    torch::Tensor t = to_tensor(f.get(name));
    if (name == "f32.matrix") t = t.t().contiguous().t();  // same values, transposed strides
    tensors.emplace_back(name, t);
  }
  int non_contiguous = 0;
  for (const auto& kv : tensors) non_contiguous += kv.second.is_contiguous() ? 0 : 1;
  ASSERT_EQ(non_contiguous, 1);
  auto p = test_support::scratch_dir("writer") / "w.safetensors";
  write_safetensors(p.string(), tensors, f.metadata());
  EXPECT_EQ(read_file(p.string()), read_file((kFixtures / "all_dtypes.safetensors").string()));

  try {
    write_safetensors(p.string(), {{"d", torch::zeros({2}, torch::kFloat64)}});
    ADD_FAILURE() << "float64 accepted";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'd': torch dtype Double has no supported safetensors dtype"),
              std::string::npos)
        << e.what();
  }
}
