#pragma once
// The BPE model of a Hugging Face tokenizer.json: vocabulary, ranked merges, and the merge loop.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

namespace vlreward {

class BpeModel {
 public:
  // Parses tokenizer.json's "model" object; `source` (the file path) prefixes every error, which also names
  // the key ("model.merges[12]"). Merges may be "a b" strings or ["a", "b"] pairs.
  static BpeModel from_json(const nlohmann::json& model, const std::string& source);

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // nullptr when no vocabulary entry has this id.
  const std::string* id_to_token(int32_t id) const;
  // One past the largest id in the vocabulary.
  int32_t id_end() const { return static_cast<int32_t>(id_to_token_.size()); }
  size_t vocab_size() const { return vocab_.size(); }
  size_t merge_count() const { return merge_count_; }

  std::optional<int32_t> unk_id() const { return unk_id_; }
  bool fuse_unk() const { return fuse_unk_; }
  // tokenizers >= 0.19 option: a word that is a whole vocabulary entry skips the merges.
  bool ignore_merges() const { return ignore_merges_; }

  // Merges a word given as its initial symbol ids in place: repeatedly applies the lowest-ranked merge
  // (leftmost first among equal ranks), exactly like tokenizers' Word::merge_all without dropout.
  void merge(std::vector<int32_t>& symbols) const;

 private:
  struct MergeEntry {
    uint64_t key = kEmpty;  // (left id << 32) | right id
    int32_t rank = 0;
    int32_t new_id = 0;
  };
  static constexpr uint64_t kEmpty = ~uint64_t{0};

  // Open addressing keeps the lookup in the hot loop to one or two cache lines.
  const MergeEntry* find_merge(int32_t left, int32_t right) const;
  void insert_merge(int32_t left, int32_t right, int32_t rank, int32_t new_id);

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> id_present_;
  std::vector<MergeEntry> merges_;
  uint64_t merge_mask_ = 0;
  size_t merge_count_ = 0;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool ignore_merges_ = false;
};

}  // namespace vlreward
