// The vlreward Python extension (_vlreward): this library's reward backends in process — no server, no HTTP. The
// Python package (vlreward/__init__.py) turns friendly inputs (paths, bytes, PIL images, TRL batches) into the plain
// structures this module takes. The remote backend is left out: a shared object cannot link this build's static
// protobuf (RewardRegistry(Empty) keeps it out of the link); to call a server from Python, use HTTP.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "plugin/error.h"
#include "plugin/registry.h"
#include "plugin/shared_library_backend.h"
#include "reward/backends.h"

namespace py = pybind11;

namespace {

// (kind, value): ("text", utf-8) | ("image_bytes", encoded image) | ("image_path", path)
using Part = std::tuple<std::string, py::bytes>;
using Turn = std::tuple<std::string, std::vector<Part>>;
using Result = std::tuple<std::optional<double>, std::string, std::map<std::string, double>>;

vlreward::RewardRequest to_request(const py::dict& sample, size_t index) {
  vlreward::RewardRequest r;
  r.id = sample.contains("id") ? py::str(sample["id"]).cast<std::string>() : std::to_string(index);
  if (sample.contains("system") && !sample["system"].is_none()) r.system_prompt = sample["system"].cast<std::string>();
  if (sample.contains("reference") && !sample["reference"].is_none())
    r.reference = sample["reference"].cast<std::string>();
  r.response = sample["response"].cast<std::string>();
  for (const auto& [role, parts] : sample["turns"].cast<std::vector<Turn>>()) {
    vlreward::RewardTurn turn{role, {}};
    for (const auto& [kind, value] : parts) {
      std::string bytes = value;
      if (kind == "text") turn.content.push_back(vlreward::RewardContent::text_part(std::move(bytes)));
      else if (kind == "image_bytes")
        turn.content.push_back(vlreward::RewardContent::image_part(vlreward::RewardImage::from_bytes(std::move(bytes))));
      else if (kind == "image_path")
        turn.content.push_back(vlreward::RewardContent::image_part(vlreward::RewardImage::from_path(std::move(bytes))));
      else
        throw py::value_error("sample " + r.id + ": unknown part kind \"" + kind + "\"");
    }
    r.turns.push_back(std::move(turn));
  }
  return r;
}

class Backend {
 public:
  explicit Backend(const std::string& config_json) {
    nlohmann::json config;
    try {
      config = nlohmann::json::parse(config_json);
    } catch (const nlohmann::json::exception& e) {
      throw py::value_error(std::string("backend config: not JSON: ") + e.what());
    }
    vlreward::RewardRegistry registry{vlreward::RewardRegistry::Empty{}};
    registry.add("plugin", [](const nlohmann::json& c, const std::string& where, const vlreward::RewardRegistry&) {
      return vlreward::make_shared_library_backend(c, where);
    });
    vlreward::register_reward_backends(registry);
    backend_ = registry.create(config, "config");
  }
  std::string name() const { return backend_->name(); }

  // One (score or None, error, components) per sample, in order; a bad sample fails alone.
  std::vector<Result> score(const py::list& samples) {
    std::vector<vlreward::RewardRequest> batch;
    for (size_t i = 0; i < samples.size(); ++i) batch.push_back(to_request(samples[i].cast<py::dict>(), i));
    std::vector<vlreward::RewardResult> results;
    {
      py::gil_scoped_release release;  // scoring runs in C++; other Python threads keep going
      results = backend_->score(batch);
    }
    std::vector<Result> out;
    for (auto& r : results) out.emplace_back(r.score, r.error, r.components);
    return out;
  }

 private:
  std::unique_ptr<vlreward::RewardBackend> backend_;
};

}  // namespace

PYBIND11_MODULE(_vlreward, m) {
  m.doc() = "vlreward's reward backends in process (use the vlreward package)";
  py::register_exception<vlreward::InputError>(m, "InputError", PyExc_ValueError);
  py::class_<Backend>(m, "Backend")
      .def(py::init<const std::string&>(), py::arg("config_json"))
      .def_property_readonly("name", &Backend::name)
      .def("score", &Backend::score, py::arg("samples"));
}
