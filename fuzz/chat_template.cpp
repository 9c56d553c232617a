// A conversation as JSON messages (roles, text and image/video parts), parsed and rendered with the Qwen2-VL chat
// template, then its image pads expanded for a 2x2 grid per image.
#include <nlohmann/json.hpp>

#include "adapters/hf/chat_template.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vlreward;
  const auto json = nlohmann::json::parse(fuzz::bytes_of(data, size), nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded()) return 0;
  fuzz::expect_documented_errors_only("messages", [&] {
    const auto messages = parse_chat_messages(json, "messages");
    for (bool generation_prompt : {false, true}) {
      ChatTemplateOptions options;
      options.add_generation_prompt = generation_prompt;
      options.add_vision_id = generation_prompt;
      const std::string text = render_qwen2_vl_chat(messages, options);
      size_t images = 0;
      for (const auto& m : messages)
        for (const auto& part : m.parts) images += part.kind == ChatContentPart::Kind::image;
      expand_image_pads(text, std::vector<GridThw>(images, GridThw{1, 2, 2}));
    }
  });
  return 0;
}
