#pragma once
// Device parameterization for the parity suites: each TEST_P runs once on the CPU and once on CUDA; the CUDA
// instance skips with "no CUDA device" where there is none, and runs for real on a GPU machine.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

namespace vlreward::testing {

class DeviceTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (!device().is_cuda()) return;
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    // fp32 parity on the GPU: TF32 would round matmul and convolution inputs to 10 mantissa bits.
    at::globalContext().setAllowTF32CuBLAS(false);
    at::globalContext().setAllowTF32CuDNN(false);
  }
  torch::Device device() const { return torch::Device(GetParam()); }
};

inline std::string device_test_name(const ::testing::TestParamInfo<std::string>& info) { return info.param; }

}  // namespace vlreward::testing

// Instantiates a DeviceTest-derived suite for "cpu" and "cuda" (test names end in /cpu and /cuda).
#define VLREWARD_INSTANTIATE_DEVICES(suite)                                                                  \
  INSTANTIATE_TEST_SUITE_P(Devices, suite, ::testing::Values(std::string("cpu"), std::string("cuda")), \
                           ::vlreward::testing::device_test_name)
