// A PEFT adapter_config.json (the LoRA settings of an adapter directory that mpo-train or reward-train starts from).
#include "adapters/qwen2_5_vl/pretrained_config.h"
#include "fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace vlreward;
  fuzz::expect_documented_errors_only("adapter_config.json", [&] {
    qwen::parse_peft_lora_config(fuzz::bytes_of(data, size), "adapter_config.json");
  });
  return 0;
}
