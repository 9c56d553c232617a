#include "reward/composite_backend.h"

#include <set>

#include "plugin/config_reader.h"

namespace vlreward {
namespace {

struct Component {
  std::string name;
  double weight;
  std::unique_ptr<RewardBackend> backend;
};

class CompositeBackend : public RewardBackend {
 public:
  explicit CompositeBackend(std::vector<Component> components) : components_(std::move(components)) {}

  std::string name() const override { return "composite"; }

  RewardCapabilities capabilities() const override {
    RewardCapabilities caps;
    for (const auto& c : components_) {
      const RewardCapabilities part = c.backend->capabilities();
      caps.images = caps.images || part.images;
      caps.needs_reference = caps.needs_reference || part.needs_reference;
      caps.batched = caps.batched || part.batched;
    }
    return caps;
  }

  std::vector<RewardResult> score(const std::vector<RewardRequest>& batch) override {
    std::vector<RewardResult> results(batch.size(), RewardResult::success(0.0));
    std::vector<std::string> errors(batch.size());
    for (const auto& component : components_) {
      // A component that throws or miscounts fails every item, but the others still report their parts.
      std::vector<RewardResult> parts;
      std::string batch_error;
      try {
        parts = component.backend->score(batch);
        if (parts.size() != batch.size())
          batch_error = "returned " + std::to_string(parts.size()) + " results for " + std::to_string(batch.size()) +
                        " requests";
      } catch (const std::exception& e) {
        batch_error = e.what();
      }
      for (size_t i = 0; i < batch.size(); ++i) {
        const std::string error = !batch_error.empty() ? batch_error : parts[i].ok() ? "" : parts[i].error;
        if (!error.empty()) {
          errors[i] += (errors[i].empty() ? "" : "; ") + ("component \"" + component.name + "\": " + error);
          continue;
        }
        const double part = *parts[i].score;
        *results[i].score += component.weight * part;
        results[i].components[component.name] = part;
        for (const auto& [sub, value] : parts[i].components) results[i].components[component.name + "." + sub] = value;
      }
    }
    for (size_t i = 0; i < batch.size(); ++i) {
      if (errors[i].empty()) continue;
      results[i].score.reset();
      results[i].error = std::move(errors[i]);
    }
    return results;
  }

 private:
  std::vector<Component> components_;
};

}  // namespace

std::unique_ptr<RewardBackend> make_composite_backend(const nlohmann::json& config, const std::string& where,
                                                      const RewardRegistry& registry) {
  ConfigReader reader(config, where);
  const nlohmann::json* list = reader.raw("components");
  reader.finish();
  if (list == nullptr) reader.fail("components", "is required");
  if (!list->is_array() || list->empty()) reader.fail("components", "must be a non-empty array");

  std::vector<Component> components;
  std::set<std::string> names;
  for (size_t i = 0; i < list->size(); ++i) {
    const std::string path = reader.path("components") + "[" + std::to_string(i) + "]";
    ConfigReader item((*list)[i], path);
    Component component;
    component.name = item.required<std::string>("name");
    component.weight = item.optional<double>("weight", 1.0);
    const nlohmann::json* backend = item.raw("backend");
    item.finish();
    if (component.name.empty()) item.fail("name", "must not be empty");
    if (!names.insert(component.name).second) item.fail("name", "\"" + component.name + "\" is used twice");
    if (backend == nullptr) item.fail("backend", "is required");
    component.backend = registry.create(*backend, item.path("backend"));
    components.push_back(std::move(component));
  }
  return std::make_unique<CompositeBackend>(std::move(components));
}

}  // namespace vlreward
