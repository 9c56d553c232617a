#include "adapters/hf/bpe.h"

#include <algorithm>
#include <cstdint>

#include "adapters/common/error.h"

namespace vlreward {
namespace {

// Ids beyond this are rejected rather than allocating a table for them (real vocabularies are < 1M).
constexpr int64_t kMaxTokenId = 1 << 24;

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

uint64_t hash_key(uint64_t key) { return (key * 0x9E3779B97F4A7C15ull) ^ (key >> 29); }

std::string optional_string(const nlohmann::json& model, const char* key, const std::string& source) {
  const auto it = model.find(key);
  if (it == model.end() || it->is_null()) return {};
  if (!it->is_string()) throw_input_error(source, "model.{} must be a string or null", key);
  return it->get<std::string>();
}

bool optional_bool(const nlohmann::json& model, const char* key, const std::string& source) {
  const auto it = model.find(key);
  if (it == model.end() || it->is_null()) return false;
  if (!it->is_boolean()) throw_input_error(source, "model.{} must be a boolean", key);
  return it->get<bool>();
}

}  // namespace

BpeModel BpeModel::from_json(const nlohmann::json& model, const std::string& source) {
  if (!model.is_object()) throw_input_error(source, "\"model\" must be an object");
  if (model.contains("type")) {
    const auto& type = model["type"];
    if (!type.is_string()) throw_input_error(source, "model.type must be a string");
    if (type.get<std::string>() != "BPE")
      throw_input_error(source, "unsupported model.type \"{}\" (only \"BPE\" is supported)", type.get<std::string>());
  }
  if (model.contains("dropout") && !model["dropout"].is_null()) {
    if (!model["dropout"].is_number()) throw_input_error(source, "model.dropout must be a number or null");
    if (model["dropout"].get<double>() != 0.0)
      throw_input_error(source, "unsupported model.dropout {} (BPE dropout is random; only null/0 is supported)",
                        model["dropout"].get<double>());
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (!optional_string(model, key, source).empty())
      throw_input_error(source, "unsupported model.{} \"{}\" (only empty is supported)", key,
                        optional_string(model, key, source));
  }
  if (optional_bool(model, "byte_fallback", source))
    throw_input_error(source, "unsupported model.byte_fallback true");

  BpeModel bpe;
  bpe.fuse_unk_ = optional_bool(model, "fuse_unk", source);
  bpe.ignore_merges_ = optional_bool(model, "ignore_merges", source);

  const auto vocab_it = model.find("vocab");
  if (vocab_it == model.end()) throw_input_error(source, "model.vocab is missing");
  if (!vocab_it->is_object()) throw_input_error(source, "model.vocab must be an object of token -> id");
  int64_t max_id = -1;
  for (auto it = vocab_it->begin(); it != vocab_it->end(); ++it) {
    if (!it.value().is_number_integer())
      throw_input_error(source, "model.vocab[\"{}\"] must be an integer id", it.key());
    const int64_t id = it.value().get<int64_t>();
    if (id < 0 || id >= kMaxTokenId)
      throw_input_error(source, "model.vocab[\"{}\"] = {} is out of range [0, {})", it.key(), id, kMaxTokenId);
    max_id = std::max(max_id, id);
    bpe.vocab_[it.key()] = static_cast<int32_t>(id);
  }
  bpe.id_to_token_.resize(static_cast<size_t>(max_id + 1));
  bpe.id_present_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [token, id] : bpe.vocab_) {
    bpe.id_to_token_[id] = token;
    bpe.id_present_[id] = true;
  }

  const std::string unk = optional_string(model, "unk_token", source);
  if (!unk.empty()) {
    const auto id = bpe.token_to_id(unk);
    if (!id) throw_input_error(source, "model.unk_token \"{}\" is not in model.vocab", unk);
    bpe.unk_id_ = *id;
  }

  const auto merges_it = model.find("merges");
  if (merges_it == model.end()) throw_input_error(source, "model.merges is missing");
  if (!merges_it->is_array()) throw_input_error(source, "model.merges must be an array");
  const auto& merges = *merges_it;
  size_t capacity = 16;
  while (capacity < merges.size() * 2 + 16) capacity *= 2;
  bpe.merges_.assign(capacity, MergeEntry{});
  bpe.merge_mask_ = capacity - 1;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const auto& m = merges[rank];
    std::string left, right;
    if (m.is_string()) {
      const std::string& s = m.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || space == 0 || space + 1 == s.size() || s.find(' ', space + 1) != s.npos)
        throw_input_error(source, "model.merges[{}] = \"{}\" is not of the form \"left right\"", rank, s);
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      throw_input_error(source, "model.merges[{}] must be a \"left right\" string or a [left, right] pair", rank);
    }
    const auto left_id = bpe.token_to_id(left);
    const auto right_id = bpe.token_to_id(right);
    const auto new_id = bpe.token_to_id(left + right);
    if (!left_id) throw_input_error(source, "model.merges[{}]: token \"{}\" is not in model.vocab", rank, left);
    if (!right_id) throw_input_error(source, "model.merges[{}]: token \"{}\" is not in model.vocab", rank, right);
    if (!new_id)
      throw_input_error(source, "model.merges[{}]: merged token \"{}\" is not in model.vocab", rank, left + right);
    bpe.insert_merge(*left_id, *right_id, static_cast<int32_t>(rank), *new_id);
  }
  return bpe;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id >= id_end() || !id_present_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::insert_merge(int32_t left, int32_t right, int32_t rank, int32_t new_id) {
  const uint64_t key = pair_key(left, right);
  for (uint64_t slot = hash_key(key) & merge_mask_;; slot = (slot + 1) & merge_mask_) {
    MergeEntry& e = merges_[slot];
    if (e.key == kEmpty) {
      e = MergeEntry{key, rank, new_id};
      ++merge_count_;
      return;
    }
    if (e.key == key) {  // a repeated pair: the later line wins, as in tokenizers' HashMap collect
      e.rank = rank;
      e.new_id = new_id;
      return;
    }
  }
}

const BpeModel::MergeEntry* BpeModel::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = pair_key(left, right);
  for (uint64_t slot = hash_key(key) & merge_mask_;; slot = (slot + 1) & merge_mask_) {
    const MergeEntry& e = merges_[slot];
    if (e.key == key) return &e;
    if (e.key == kEmpty) return nullptr;
  }
}

void BpeModel::merge(std::vector<int32_t>& word) const {
  const size_t n = word.size();
  if (n < 2) return;
  if (n == 2) {  // the most common case after the cache: at most one merge
    if (const MergeEntry* m = find_merge(word[0], word[1])) word.assign(1, m->new_id);
    return;
  }
  struct Symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
  };
  struct Candidate {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
    // std heap is a max-heap: "greater" means lower rank, then lower position
    bool operator<(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  std::vector<Symbol> symbols(n);
  for (size_t i = 0; i < n; ++i)
    symbols[i] = Symbol{word[i], static_cast<int32_t>(i) - 1, i + 1 < n ? static_cast<int32_t>(i + 1) : -1, true};
  std::vector<Candidate> heap;
  heap.reserve(n);
  for (size_t i = 0; i + 1 < n; ++i) {
    if (const MergeEntry* m = find_merge(word[i], word[i + 1]))
      heap.push_back(Candidate{m->rank, static_cast<int32_t>(i), m->new_id});
  }
  std::make_heap(heap.begin(), heap.end());
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& cur = symbols[top.pos];
    if (!cur.alive || cur.next < 0) continue;
    Symbol& right = symbols[cur.next];
    const MergeEntry* m = find_merge(cur.id, right.id);
    if (m == nullptr || m->new_id != top.new_id) continue;  // stale: a neighbour changed since it was queued
    cur.id = top.new_id;
    right.alive = false;
    cur.next = right.next;
    if (cur.next >= 0) symbols[cur.next].prev = top.pos;
    if (cur.prev >= 0) {
      if (const MergeEntry* pm = find_merge(symbols[cur.prev].id, cur.id)) {
        heap.push_back(Candidate{pm->rank, cur.prev, pm->new_id});
        std::push_heap(heap.begin(), heap.end());
      }
    }
    if (cur.next >= 0) {
      if (const MergeEntry* nm = find_merge(cur.id, symbols[cur.next].id)) {
        heap.push_back(Candidate{nm->rank, top.pos, nm->new_id});
        std::push_heap(heap.begin(), heap.end());
      }
    }
  }
  word.clear();
  for (int32_t i = 0; i >= 0; i = symbols[i].next) word.push_back(symbols[i].id);
}

}  // namespace vlreward
