#pragma once
// Hugging Face tokenizer.json (Qwen2-style byte-level BPE) at id-for-id parity with `tokenizers` 0.22:
//   added tokens split out of the raw text -> NFC -> Split(regex, Isolated) -> ByteLevel -> BPE (cached per word);
//   decode: ByteLevel decoder with Python-compatible UTF-8 repair.
// Supported pipeline pieces (anything else is rejected with an InputError naming the file and key):
//   normalizer: null | NFC | Sequence of those; pre_tokenizer: Split(Regex|String, Isolated) and
//   ByteLevel(add_prefix_space false) in a Sequence or alone; model: BPE; decoder: ByteLevel (or null);
//   post_processor: ByteLevel or null (they add no tokens).
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace vlreward {

// An entry of tokenizer.json's "added_tokens".
struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;
  bool single_word = false;  // only matches when not inside a word
  bool lstrip = false;       // swallows whitespace on its left
  bool rstrip = false;       // swallows whitespace on its right
  bool normalized = false;   // matched on the normalized text instead of the raw text
};

class Tokenizer {
 public:
  // Loads <dir>/tokenizer.json and, when present, <dir>/tokenizer_config.json.
  static Tokenizer from_directory(const std::string& dir);
  // tokenizer_config_path may be empty (then no eos/pad/bos/unk tokens are configured).
  static Tokenizer from_files(const std::string& tokenizer_json_path, const std::string& tokenizer_config_path = {});

  // Ids for `text` (no BOS/EOS: the ByteLevel post-processor adds none). Throws InputError if text is not UTF-8.
  std::vector<int32_t> encode(std::string_view text) const;
  // Encodes every text; num_threads <= 0 uses the hardware concurrency. Same ids as encode() on each.
  std::vector<std::vector<int32_t>> encode_batch(const std::vector<std::string>& texts, int num_threads = 0) const;
  // Tokens -> bytes -> UTF-8, ill-formed sequences become U+FFFD (as `tokenizers` does). Ids with no token are
  // skipped, like `tokenizers`' decode. skip_special_tokens drops added tokens marked special.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  // One past the largest id (model vocabulary and added tokens).
  int32_t vocab_size() const;
  const std::vector<AddedToken>& added_tokens() const;

  // Special tokens declared in tokenizer_config.json (strings or AddedToken objects), resolved to ids.
  std::optional<int32_t> eos_token_id() const;
  std::optional<int32_t> pad_token_id() const;
  std::optional<int32_t> bos_token_id() const;
  std::optional<int32_t> unk_token_id() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<Impl> impl_;  // immutable after loading except for internal caches (thread-safe)
};

}  // namespace vlreward
