// The one image-reference parser (adapters/image/reference.h) under both path rules: what each form gives,
// and that every refusal names the place and the problem, with sizes checked before anything is read.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

#include "plugin/wire/base64.h"
#include "adapters/image/reference.h"
#include "tests/test_support.h"

namespace vlreward {
namespace {

namespace fs = std::filesystem;
using Paths = ImageReferenceRules::Paths;

const std::string kPngMagic = std::string("\x89PNG\r\n\x1a\n", 8) + std::string(16, 'x');

// Expects `f` to throw E whose message holds `needle`.
template <typename E, typename F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one with \"" << needle << "\"";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

class ImageReference : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(root_ / std::string("sub"));
    root_.write("sub/cat.png", kPngMagic);
    root_.write("big.png", std::string(2000, 'x'));
    fs::create_directories(root_ / std::string("dir.png"));
    outside_.write("secret.png", kPngMagic);
    fs::create_symlink(outside_ / std::string("secret.png"), root_ / std::string("escape.png"));
    canonical_root_ = fs::canonical(root_.path()).string();
  }
  ImageReferenceRules local(uint64_t max_bytes = 1000) const { return {Paths::kLocal, root_.path(), max_bytes}; }
  ImageReferenceRules server(uint64_t max_bytes = 1000) const { return {Paths::kUnderRoot, canonical_root_, max_bytes}; }

  test_support::TempDir root_{"vlreward_image_root"};
  test_support::TempDir outside_{"vlreward_image_outside"};
  std::string canonical_root_;
};

TEST_F(ImageReference, DataUriAndBase64GiveTheirBytesUnderBothRules) {
  for (const auto& rules : {local(), server()}) {
    const RewardImage uri = parse_image_reference("data:image/png;base64," + base64_encode(kPngMagic), "x", rules);
    EXPECT_EQ(uri.bytes, kPngMagic);
    EXPECT_EQ(uri.mime_type, "image/png");
    EXPECT_TRUE(uri.path.empty());
    EXPECT_EQ(parse_image_reference(base64_encode(kPngMagic), "x", rules).bytes, kPngMagic);
  }
}

TEST_F(ImageReference, UrlsAreNeverFetched) {
  for (const auto& rules : {local(), server()})
    for (const char* url : {"http://example.com/a.png", "https://e/a.png", "file:///etc/passwd", "s3://b/k.png"})
      expect_error<InputError>([&] { parse_image_reference(std::string(url), "images[0]", rules); },
                               "images[0]: image URLs are not fetched");
}

TEST_F(ImageReference, LocalRulesTakeAnyFileTheUserNames) {
  const RewardImage relative = parse_image_reference(std::string("sub/cat.png"), "x", local());
  EXPECT_EQ(relative.path, root_ / "sub/cat.png");
  EXPECT_TRUE(relative.bytes.empty());  // nothing is read here
  const RewardImage absolute = parse_image_reference(outside_ / "secret.png", "x", local());
  EXPECT_EQ(absolute.path, outside_ / "secret.png");
  expect_error<InputError>([&] { parse_image_reference(std::string("nope.png"), "line 3: images[0]", local()); },
                           "line 3: images[0]: is neither a readable file (" + (root_ / "nope.png") + ")");
  // Valid base64 of a few bytes is a mistyped path, not image data.
  expect_error<InputError>([&] { parse_image_reference(std::string("abcd/efg"), "x", local()); },
                           "nor base64 image data");
}

TEST_F(ImageReference, ServerRulesConfinePathsToTheRoot) {
  const RewardImage inside = parse_image_reference(std::string("sub/cat.png"), "x", server());
  EXPECT_EQ(inside.path, canonical_root_ + "/sub/cat.png");
  expect_error<InputError>([&] { parse_image_reference(outside_ / "secret.png", "x", server()); }, "must be relative");
  expect_error<InputError>([&] { parse_image_reference(std::string("sub/../../x.png"), "x", server()); },
                           "\"..\" is not allowed");
  expect_error<InputError>([&] { parse_image_reference(std::string("escape.png"), "x", server()); },
                           "resolves outside the image root");
  expect_error<InputError>([&] { parse_image_reference(std::string("missing.png"), "x", server()); },
                           "no such image under the image root");
  expect_error<InputError>([&] { parse_image_reference(std::string("dir.png"), "x", server()); }, "not a regular file");
  expect_error<InputError>([&] { parse_image_reference(std::string("!!!"), "x", server()); },
                           "invalid base64, and no such image under the image root");
  ImageReferenceRules no_root = server();
  no_root.image_root.clear();
  expect_error<InputError>([&] { parse_image_reference(std::string("!!!"), "x", no_root); },
                           "path images need an image_root");
  expect_error<InputError>([&] { resolve_image_path("sub/cat.png", "x", no_root); }, "path images are disabled");
  EXPECT_EQ(resolve_image_path("sub/cat.png", "x", server()).path, canonical_root_ + "/sub/cat.png");
}

TEST_F(ImageReference, SizesAreCheckedBeforeAnythingIsRead) {
  for (const auto& rules : {local(), server()}) {
    expect_error<ImageTooLargeError>([&] { parse_image_reference(std::string("big.png"), "x", rules); },
                                     "is 2000 bytes, over the 1000-byte limit");
    expect_error<ImageTooLargeError>(
        [&] { parse_image_reference(base64_encode(kPngMagic + std::string(2000, 'y')), "x", rules); },
        "exceeds the limit of 1000 bytes");
  }
}

TEST_F(ImageReference, JsonFieldsMustBeStrings) {
  expect_error<InputError>([&] { parse_image_reference(nlohmann::json(42), "images[1]", local()); },
                           "images[1]: must be a string (path, base64 or data URI)");
  EXPECT_EQ(parse_image_reference(nlohmann::json("sub/cat.png"), "x", local()).path, root_ / "sub/cat.png");
}

}  // namespace
}  // namespace vlreward
