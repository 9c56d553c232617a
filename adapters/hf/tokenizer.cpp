#include "adapters/hf/tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cstdint>
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <nlohmann/json.hpp>

#include "adapters/common/error.h"
#include "adapters/common/json_text.h"
#include "adapters/common/mapped_file.h"
#include "adapters/hf/bpe.h"
#include "adapters/hf/byte_level.h"

namespace vlreward {
namespace {

using Json = nlohmann::json;

// The regex the ByteLevel pre-tokenizer applies when use_regex is true (GPT-2's).
constexpr const char* kGpt2SplitRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Words up to this many bytes are cached (longer ones are rare and would bloat the cache).
constexpr size_t kMaxCachedWordBytes = 256;
constexpr size_t kMaxCacheEntries = 1 << 17;

Json parse_json_file(const std::string& path) {
  return read_json_file(path);
}

bool json_bool(const Json& obj, const char* key, bool fallback, const std::string& source, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) throw_input_error(source, "{}.{} must be a boolean", where, key);
  return it->get<bool>();
}

std::string json_type(const Json& obj, const std::string& source, const std::string& where) {
  if (!obj.is_object()) throw_input_error(source, "{} must be an object", where);
  const auto it = obj.find("type");
  if (it == obj.end() || !it->is_string()) throw_input_error(source, "{}.type is missing or not a string", where);
  return it->get<std::string>();
}

// Unicode White_Space, which Rust's char::is_whitespace (used for lstrip/rstrip) tests.
bool is_white_space(uint32_t c) {
  return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Rust's char::is_alphanumeric (used for single_word), approximated by the letter and number categories.
bool is_alphanumeric(uint32_t c) {
  switch (utf8proc_category(static_cast<utf8proc_int32_t>(c))) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT: case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
      return true;
    default:
      return false;
  }
}

// Decodes the code point starting at s[i] (s is valid UTF-8).
uint32_t code_point_at(std::string_view s, size_t i, size_t* length) {
  const auto b = [&](size_t k) { return static_cast<uint32_t>(static_cast<uint8_t>(s[i + k])); };
  const uint32_t c0 = b(0);
  if (c0 < 0x80) { *length = 1; return c0; }
  if (c0 < 0xE0) { *length = 2; return ((c0 & 0x1F) << 6) | (b(1) & 0x3F); }
  if (c0 < 0xF0) { *length = 3; return ((c0 & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F); }
  *length = 4;
  return ((c0 & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
}

// Start of the code point that ends at s[end - 1].
size_t previous_code_point(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

// Finds added tokens in text with leftmost-longest semantics (what tokenizers' Aho-Corasick MatchKind does).
class AddedTokenMatcher {
 public:
  void add(std::string pattern, size_t token_index) {
    if (pattern.empty()) return;
    const auto first = static_cast<uint8_t>(pattern[0]);
    buckets_[first].push_back(Pattern{std::move(pattern), token_index});
    auto& bucket = buckets_[first];
    std::stable_sort(bucket.begin(), bucket.end(),
                     [](const Pattern& a, const Pattern& b) { return a.text.size() > b.text.size(); });
    empty_ = false;
  }
  bool empty() const { return empty_; }

  // First match at or after `from`: returns false if none.
  bool find(std::string_view text, size_t from, size_t* start, size_t* end, size_t* token_index) const {
    for (size_t i = from; i < text.size(); ++i) {
      const auto& bucket = buckets_[static_cast<uint8_t>(text[i])];
      for (const Pattern& p : bucket) {  // longest first
        if (text.size() - i >= p.text.size() && text.compare(i, p.text.size(), p.text) == 0) {
          *start = i;
          *end = i + p.text.size();
          *token_index = p.token_index;
          return true;
        }
      }
    }
    return false;
  }

 private:
  struct Pattern {
    std::string text;
    size_t token_index;
  };
  std::vector<Pattern> buckets_[256];
  bool empty_ = true;
};

// One Split stage (behavior Isolated): matches and the gaps between them both become pieces.
struct SplitRegex {
  pcre2_code* code = nullptr;
  bool jit = false;
};

void append_nfc(std::string_view text, std::string& out) {
  // Code points below U+0300 are NFC-stable and have no composition partners before them, and their UTF-8
  // lead bytes are < 0xCC: such text is already NFC.
  const bool maybe_changes = std::any_of(text.begin(), text.end(), [](char c) { return static_cast<uint8_t>(c) >= 0xCC; });
  if (!maybe_changes) {
    out.append(text);
    return;
  }
  utf8proc_uint8_t* result = nullptr;
  const utf8proc_ssize_t n =
      utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()), static_cast<utf8proc_ssize_t>(text.size()),
                   &result, static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) {
    std::free(result);
    throw_input_error("text", "NFC normalization failed: {}", utf8proc_errmsg(n));
  }
  out.append(reinterpret_cast<const char*>(result), static_cast<size_t>(n));
  std::free(result);
}

}  // namespace

// Per-thread working state: PCRE2 match data and the word cache. Pooled so encode() stays const and
// concurrent calls never share one.
struct EncodeScratch {
  std::vector<pcre2_match_data*> match_data;
  pcre2_match_context* match_context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  std::unordered_map<std::string, std::vector<int32_t>> cache;
  std::string key;
  std::vector<int32_t> word;

  EncodeScratch() = default;
  EncodeScratch(const EncodeScratch&) = delete;
  EncodeScratch& operator=(const EncodeScratch&) = delete;
  ~EncodeScratch() {
    for (auto* md : match_data) pcre2_match_data_free(md);
    if (match_context) pcre2_match_context_free(match_context);
    if (jit_stack) pcre2_jit_stack_free(jit_stack);
  }
};

struct Tokenizer::Impl {
  std::string source;  // tokenizer.json path, for errors
  BpeModel model;
  std::vector<AddedToken> added;
  std::unordered_map<std::string, int32_t> added_by_content;
  std::unordered_map<int32_t, size_t> added_by_id;
  AddedTokenMatcher raw_matcher;         // added tokens with normalized=false
  AddedTokenMatcher normalized_matcher;  // added tokens with normalized=true (contents normalized)
  bool nfc = false;
  std::vector<SplitRegex> splits;
  std::array<int32_t, 256> byte_ids{};  // -1: the byte's symbol is not in the vocabulary
  std::unordered_map<std::string, int32_t> raw_bytes_vocab;  // for ignore_merges
  int32_t id_end = 0;
  std::optional<int32_t> eos_id, pad_id, bos_id, unk_id;

  mutable std::mutex pool_mutex;
  mutable std::vector<std::unique_ptr<EncodeScratch>> pool;

  ~Impl() {
    for (auto& s : splits) pcre2_code_free(s.code);
  }

  std::unique_ptr<EncodeScratch> acquire() const {
    {
      std::lock_guard<std::mutex> lock(pool_mutex);
      if (!pool.empty()) {
        auto s = std::move(pool.back());
        pool.pop_back();
        return s;
      }
    }
    auto s = std::make_unique<EncodeScratch>();
    s->jit_stack = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, nullptr);
    s->match_context = pcre2_match_context_create(nullptr);
    if (s->jit_stack && s->match_context) pcre2_jit_stack_assign(s->match_context, nullptr, s->jit_stack);
    for (const auto& split : splits) s->match_data.push_back(pcre2_match_data_create_from_pattern(split.code, nullptr));
    return s;
  }
  void release(std::unique_ptr<EncodeScratch> s) const {
    std::lock_guard<std::mutex> lock(pool_mutex);
    pool.push_back(std::move(s));
  }

  void encode_into(std::string_view text, EncodeScratch& scratch, std::vector<int32_t>& out) const;
  void encode_normalized(std::string_view text, EncodeScratch& scratch, std::vector<int32_t>& out) const;
  void split_and_encode(size_t stage, std::string_view piece, EncodeScratch& scratch, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, EncodeScratch& scratch, std::vector<int32_t>& out) const;

  // tokenizers' AddedVocabulary::find_matches: calls on_text for plain pieces and on_token for added tokens.
  template <typename OnText, typename OnToken>
  void split_on_added(std::string_view text, const AddedTokenMatcher& matcher, OnText on_text, OnToken on_token) const;
};

template <typename OnText, typename OnToken>
void Tokenizer::Impl::split_on_added(std::string_view text, const AddedTokenMatcher& matcher, OnText on_text,
                                     OnToken on_token) const {
  if (matcher.empty()) {
    on_text(text);
    return;
  }
  size_t emitted = 0;  // end of what has been handed out
  size_t search = 0;
  size_t start, stop, index;
  while (search < text.size() && matcher.find(text, search, &start, &stop, &index)) {
    search = stop;
    const AddedToken& token = added[index];
    if (token.single_word) {
      size_t len;
      const bool word_before = start > 0 && is_alphanumeric(code_point_at(text, previous_code_point(text, start), &len));
      const bool word_after = stop < text.size() && is_alphanumeric(code_point_at(text, stop, &len));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) {
      size_t s = start;
      while (s > 0) {
        const size_t p = previous_code_point(text, s);
        size_t len;
        if (!is_white_space(code_point_at(text, p, &len))) break;
        s = p;
      }
      start = std::max(s, emitted);
    }
    if (token.rstrip) {
      size_t len;
      while (stop < text.size() && is_white_space(code_point_at(text, stop, &len))) stop += len;
    }
    if (emitted < start) on_text(text.substr(emitted, start - emitted));
    on_token(token.id);
    emitted = stop;  // the search itself resumes at the match end, as Aho-Corasick's find_iter does
  }
  if (emitted < text.size()) on_text(text.substr(emitted));
}

void Tokenizer::Impl::encode_into(std::string_view text, EncodeScratch& scratch, std::vector<int32_t>& out) const {
  split_on_added(
      text, raw_matcher,
      [&](std::string_view piece) {
        if (!nfc) {
          encode_normalized(piece, scratch, out);
          return;
        }
        std::string normalized;  // own buffer: encode_normalized may recurse into scratch buffers
        append_nfc(piece, normalized);
        encode_normalized(normalized, scratch, out);
      },
      [&](int32_t id) { out.push_back(id); });
}

void Tokenizer::Impl::encode_normalized(std::string_view text, EncodeScratch& scratch,
                                        std::vector<int32_t>& out) const {
  split_on_added(
      text, normalized_matcher, [&](std::string_view piece) { split_and_encode(0, piece, scratch, out); },
      [&](int32_t id) { out.push_back(id); });
}

void Tokenizer::Impl::split_and_encode(size_t stage, std::string_view piece, EncodeScratch& scratch,
                                       std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (stage == splits.size()) {
    encode_word(piece, scratch, out);
    return;
  }
  const SplitRegex& split = splits[stage];
  pcre2_match_data* md = scratch.match_data[stage];
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
  size_t offset = 0;  // where the next search starts
  size_t emitted = 0;
  while (offset < piece.size()) {
    int rc;
    if (split.jit) {
      rc = pcre2_jit_match(split.code, subject, piece.size(), offset, 0, md, scratch.match_context);
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
        rc = pcre2_match(split.code, subject, piece.size(), offset, PCRE2_NO_JIT | PCRE2_NO_UTF_CHECK, md, nullptr);
    } else {
      rc = pcre2_match(split.code, subject, piece.size(), offset, PCRE2_NO_UTF_CHECK, md, nullptr);
    }
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      throw_input_error("text", "pre-tokenizer regex failed on a {}-byte piece: {}", piece.size(),
                        reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t match_start = ov[0], match_end = ov[1];
    if (match_end == match_start) {  // empty match: not a piece; step over one code point
      size_t len;
      code_point_at(piece, match_start, &len);
      offset = match_start + len;
      continue;
    }
    if (emitted < match_start) split_and_encode(stage + 1, piece.substr(emitted, match_start - emitted), scratch, out);
    split_and_encode(stage + 1, piece.substr(match_start, match_end - match_start), scratch, out);
    emitted = offset = match_end;
  }
  if (emitted < piece.size()) split_and_encode(stage + 1, piece.substr(emitted), scratch, out);
}

void Tokenizer::Impl::encode_word(std::string_view word, EncodeScratch& scratch, std::vector<int32_t>& out) const {
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    scratch.key.assign(word.data(), word.size());
    const auto it = scratch.cache.find(scratch.key);
    if (it != scratch.cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  std::vector<int32_t>& ids = scratch.word;
  ids.clear();
  bool done = false;
  if (model.ignore_merges()) {
    const auto it = raw_bytes_vocab.find(std::string(word));
    if (it != raw_bytes_vocab.end()) {
      ids.push_back(it->second);
      done = true;
    }
  }
  if (!done) {
    bool previous_unk = false;
    for (unsigned char b : word) {
      const int32_t id = byte_ids[b];
      if (id >= 0) {
        ids.push_back(id);
        previous_unk = false;
      } else if (model.unk_id()) {  // a byte missing from the vocabulary becomes unk (fused if asked)
        if (!(previous_unk && model.fuse_unk())) ids.push_back(*model.unk_id());
        previous_unk = true;
      }  // else dropped, as tokenizers does without an unk token
    }
    model.merge(ids);
  }
  out.insert(out.end(), ids.begin(), ids.end());
  if (cacheable) {
    if (scratch.cache.size() >= kMaxCacheEntries) scratch.cache.clear();
    scratch.cache.emplace(scratch.key, ids);
  }
}

namespace {

void parse_normalizer(const Json& n, const std::string& source, const std::string& where, bool* nfc) {
  if (n.is_null()) return;
  const std::string type = json_type(n, source, where);
  if (type == "NFC") {
    *nfc = true;
  } else if (type == "Sequence") {
    const auto it = n.find("normalizers");
    if (it == n.end() || !it->is_array()) throw_input_error(source, "{}.normalizers must be an array", where);
    for (size_t i = 0; i < it->size(); ++i)
      parse_normalizer((*it)[i], source, fmt::format("{}.normalizers[{}]", where, i), nfc);
  } else {
    throw_input_error(source, "unsupported {}.type \"{}\" (supported: NFC, Sequence)", where, type);
  }
}

SplitRegex compile_split(const std::string& pattern, bool literal, const std::string& source, const std::string& where) {
  int error = 0;
  PCRE2_SIZE error_offset = 0;
  const uint32_t options = literal ? (PCRE2_LITERAL | PCRE2_UTF) : (PCRE2_UTF | PCRE2_UCP);
  pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), options, &error,
                                   &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error, message, sizeof(message));
    throw_input_error(source, "{}: cannot compile regex at offset {}: {}", where, error_offset,
                      reinterpret_cast<const char*>(message));
  }
  SplitRegex split;
  split.code = code;
  split.jit = pcre2_jit_compile(code, PCRE2_JIT_COMPLETE) == 0;
  return split;
}

struct PreTokenizerSpec {
  std::vector<std::pair<std::string, bool>> patterns;  // (pattern, literal) per Split stage, in order
  bool byte_level = false;
};

void parse_pre_tokenizer(const Json& p, const std::string& source, const std::string& where, PreTokenizerSpec* spec) {
  if (p.is_null()) return;
  const std::string type = json_type(p, source, where);
  if (spec->byte_level)
    throw_input_error(source, "unsupported {}: pre-tokenizers after ByteLevel are not supported", where);
  if (type == "Sequence") {
    const auto it = p.find("pretokenizers");
    if (it == p.end() || !it->is_array()) throw_input_error(source, "{}.pretokenizers must be an array", where);
    for (size_t i = 0; i < it->size(); ++i)
      parse_pre_tokenizer((*it)[i], source, fmt::format("{}.pretokenizers[{}]", where, i), spec);
  } else if (type == "Split") {
    const auto behavior = p.value("behavior", Json());
    if (!behavior.is_string() || behavior.get<std::string>() != "Isolated")
      throw_input_error(source, "unsupported {}.behavior {} (only \"Isolated\" is supported)", where, behavior.dump());
    if (json_bool(p, "invert", false, source, where))
      throw_input_error(source, "unsupported {}.invert true", where);
    const auto pattern = p.value("pattern", Json());
    if (pattern.is_object() && pattern.contains("Regex") && pattern["Regex"].is_string()) {
      spec->patterns.emplace_back(pattern["Regex"].get<std::string>(), false);
    } else if (pattern.is_object() && pattern.contains("String") && pattern["String"].is_string()) {
      spec->patterns.emplace_back(pattern["String"].get<std::string>(), true);
    } else {
      throw_input_error(source, "{}.pattern must be {{\"Regex\": string}} or {{\"String\": string}}", where);
    }
  } else if (type == "ByteLevel") {
    if (json_bool(p, "add_prefix_space", false, source, where))
      throw_input_error(source, "unsupported {}.add_prefix_space true", where);
    if (json_bool(p, "use_regex", true, source, where)) spec->patterns.emplace_back(kGpt2SplitRegex, false);
    spec->byte_level = true;
  } else {
    throw_input_error(source, "unsupported {}.type \"{}\" (supported: Sequence, Split, ByteLevel)", where, type);
  }
}

AddedToken parse_added_token(const Json& t, const std::string& source, const std::string& where) {
  if (!t.is_object()) throw_input_error(source, "{} must be an object", where);
  AddedToken token;
  const auto id = t.value("id", Json());
  if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= (1 << 24))
    throw_input_error(source, "{}.id must be an integer in [0, 2^24)", where);
  token.id = id.get<int32_t>();
  const auto content = t.value("content", Json());
  if (!content.is_string() || content.get<std::string>().empty())
    throw_input_error(source, "{}.content must be a non-empty string", where);
  token.content = content.get<std::string>();
  if (find_invalid_utf8(token.content) != token.content.size())
    throw_input_error(source, "{}.content is not valid UTF-8", where);
  token.special = json_bool(t, "special", false, source, where);
  token.single_word = json_bool(t, "single_word", false, source, where);
  token.lstrip = json_bool(t, "lstrip", false, source, where);
  token.rstrip = json_bool(t, "rstrip", false, source, where);
  token.normalized = json_bool(t, "normalized", !token.special, source, where);
  return token;
}

std::optional<int32_t> config_token_id(const Json& config, const char* key, const std::string& config_path,
                                       const Tokenizer& tokenizer) {
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return std::nullopt;
  std::string content;
  if (it->is_string()) {
    content = it->get<std::string>();
  } else if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    content = (*it)["content"].get<std::string>();
  } else {
    throw_input_error(config_path, "{} must be a string, an AddedToken object with \"content\", or null", key);
  }
  const auto id = tokenizer.token_to_id(content);
  if (!id) throw_input_error(config_path, "{} \"{}\" is not a token of tokenizer.json", key, content);
  return id;
}

}  // namespace

Tokenizer Tokenizer::from_directory(const std::string& dir) {
  const std::filesystem::path root(dir);
  const auto config = root / "tokenizer_config.json";
  return from_files((root / "tokenizer.json").string(), std::filesystem::exists(config) ? config.string() : "");
}

Tokenizer Tokenizer::from_files(const std::string& tokenizer_json_path, const std::string& tokenizer_config_path) {
  const std::string& source = tokenizer_json_path;
  const Json root = parse_json_file(source);
  if (!root.is_object()) throw_input_error(source, "top level must be a JSON object");
  auto impl = std::make_shared<Impl>();
  impl->source = source;

  const auto model_it = root.find("model");
  if (model_it == root.end() || model_it->is_null()) throw_input_error(source, "\"model\" is missing");
  impl->model = BpeModel::from_json(*model_it, source);

  parse_normalizer(root.value("normalizer", Json()), source, "normalizer", &impl->nfc);

  PreTokenizerSpec spec;
  parse_pre_tokenizer(root.value("pre_tokenizer", Json()), source, "pre_tokenizer", &spec);
  if (!spec.byte_level)
    throw_input_error(source, "unsupported pre_tokenizer: a ByteLevel pre-tokenizer is required (byte-level BPE only)");
  for (size_t i = 0; i < spec.patterns.size(); ++i)
    impl->splits.push_back(compile_split(spec.patterns[i].first, spec.patterns[i].second, source,
                                         fmt::format("pre_tokenizer split #{}", i)));

  const Json decoder = root.value("decoder", Json());
  if (decoder.is_null() || json_type(decoder, source, "decoder") != "ByteLevel")
    throw_input_error(source, "unsupported decoder {} (only ByteLevel is supported)", decoder.dump());
  const Json post = root.value("post_processor", Json());
  if (!post.is_null() && json_type(post, source, "post_processor") != "ByteLevel")
    throw_input_error(source, "unsupported post_processor.type \"{}\" (only ByteLevel or null)",
                      post["type"].get<std::string>());

  const auto& table = byte_level::byte_to_code_point();
  for (int b = 0; b < 256; ++b) {
    std::string symbol;
    append_utf8(table[b], symbol);
    impl->byte_ids[b] = impl->model.token_to_id(symbol).value_or(-1);
  }
  if (impl->model.ignore_merges()) {
    for (int32_t id = 0; id < impl->model.id_end(); ++id) {
      const std::string* token = impl->model.id_to_token(id);
      std::string bytes;
      if (token && byte_level::symbols_to_bytes(*token, bytes)) impl->raw_bytes_vocab.emplace(bytes, id);
    }
  }

  impl->id_end = impl->model.id_end();
  const Json added = root.value("added_tokens", Json::array());
  if (!added.is_array()) throw_input_error(source, "added_tokens must be an array");
  for (size_t i = 0; i < added.size(); ++i) {
    AddedToken token = parse_added_token(added[i], source, fmt::format("added_tokens[{}]", i));
    if (impl->added_by_content.count(token.content))
      throw_input_error(source, "added_tokens[{}]: duplicate content \"{}\"", i, token.content);
    impl->id_end = std::max(impl->id_end, token.id + 1);
    impl->added_by_content[token.content] = token.id;
    impl->added_by_id[token.id] = impl->added.size();
    impl->added.push_back(std::move(token));
  }
  for (size_t i = 0; i < impl->added.size(); ++i) {
    const AddedToken& token = impl->added[i];
    if (!token.normalized) {
      impl->raw_matcher.add(token.content, i);
    } else {
      std::string pattern;
      if (impl->nfc) append_nfc(token.content, pattern); else pattern = token.content;
      impl->normalized_matcher.add(pattern, i);
    }
  }

  Tokenizer tokenizer(impl);
  if (!tokenizer_config_path.empty()) {
    const Json config = parse_json_file(tokenizer_config_path);
    if (!config.is_object()) throw_input_error(tokenizer_config_path, "top level must be a JSON object");
    impl->eos_id = config_token_id(config, "eos_token", tokenizer_config_path, tokenizer);
    impl->pad_id = config_token_id(config, "pad_token", tokenizer_config_path, tokenizer);
    impl->bos_id = config_token_id(config, "bos_token", tokenizer_config_path, tokenizer);
    impl->unk_id = config_token_id(config, "unk_token", tokenizer_config_path, tokenizer);
  }
  return tokenizer;
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  const size_t bad = find_invalid_utf8(text);
  if (bad != text.size()) throw_input_error("text", "not valid UTF-8 (ill-formed sequence at byte {})", bad);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  auto scratch = impl_->acquire();
  try {
    impl_->encode_into(text, *scratch, ids);
  } catch (...) {
    impl_->release(std::move(scratch));
    throw;
  }
  impl_->release(std::move(scratch));
  return ids;
}

std::vector<std::vector<int32_t>> Tokenizer::encode_batch(const std::vector<std::string>& texts,
                                                          int num_threads) const {
  std::vector<std::vector<int32_t>> result(texts.size());
  if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  num_threads = static_cast<int>(std::min<size_t>(static_cast<size_t>(num_threads), texts.size()));
  for (size_t i = 0; i < texts.size(); ++i) {  // validate up front so workers never throw
    const size_t bad = find_invalid_utf8(texts[i]);
    if (bad != texts[i].size())
      throw_input_error(fmt::format("texts[{}]", i), "not valid UTF-8 (ill-formed sequence at byte {})", bad);
  }
  std::atomic<size_t> next{0};
  std::mutex error_mutex;
  std::exception_ptr error;
  auto worker = [&] {
    auto scratch = impl_->acquire();
    try {
      for (size_t i = next++; i < texts.size(); i = next++) impl_->encode_into(texts[i], *scratch, result[i]);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
    }
    impl_->release(std::move(scratch));
  };
  if (num_threads <= 1) {
    worker();
  } else {
    std::vector<std::thread> threads;
    for (int t = 0; t < num_threads; ++t) threads.emplace_back(worker);
    for (auto& t : threads) t.join();
  }
  if (error) std::rethrow_exception(error);
  return result;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (const int32_t id : ids) {
    const std::string* token = nullptr;
    const auto added = impl_->added_by_id.find(id);
    if (added != impl_->added_by_id.end()) {
      const AddedToken& t = impl_->added[added->second];
      if (skip_special_tokens && t.special) continue;
      token = &t.content;
    } else {
      token = impl_->model.id_to_token(id);
      // a vocabulary token spelled like a special added token is skipped too (tokenizers checks by content)
      if (token && skip_special_tokens) {
        const auto it = impl_->added_by_content.find(*token);
        if (it != impl_->added_by_content.end() && impl_->added[impl_->added_by_id.at(it->second)].special) continue;
      }
    }
    if (token == nullptr) continue;  // unknown ids are dropped, as tokenizers does
    if (!byte_level::symbols_to_bytes(*token, bytes)) bytes += *token;
  }
  return utf8_decode_lossy(bytes);
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  const auto it = impl_->added_by_content.find(std::string(token));
  if (it != impl_->added_by_content.end()) return it->second;
  return impl_->model.token_to_id(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  const auto added = impl_->added_by_id.find(id);
  if (added != impl_->added_by_id.end()) return impl_->added[added->second].content;
  if (const std::string* token = impl_->model.id_to_token(id)) return *token;
  return std::nullopt;
}

int32_t Tokenizer::vocab_size() const { return impl_->id_end; }
const std::vector<AddedToken>& Tokenizer::added_tokens() const { return impl_->added; }
std::optional<int32_t> Tokenizer::eos_token_id() const { return impl_->eos_id; }
std::optional<int32_t> Tokenizer::pad_token_id() const { return impl_->pad_id; }
std::optional<int32_t> Tokenizer::bos_token_id() const { return impl_->bos_id; }
std::optional<int32_t> Tokenizer::unk_token_id() const { return impl_->unk_id; }

}  // namespace vlreward
