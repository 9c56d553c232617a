#include "adapters/image/pillow_resample.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "adapters/common/error.h"

// Arithmetic follows Pillow 11.3 exactly: coefficients in double, normalised by their sum, converted to
// 22-bit fixed point with sign-aware rounding; each pass accumulates in int32 starting from 2^21 and
// clips (acc >> 22) to [0, 255]. The horizontal pass runs first, only over the source rows the vertical
// pass reads, into a uint8 intermediate; a pass is skipped when its dimension is unchanged.
// (The double expressions must not be contracted into FMAs; x86-64 baseline code has none.)

namespace vlreward {
namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;
constexpr double kBicubicSupport = 2.0;

double bicubic_kernel(double x) {
  constexpr double a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

// Taps for one axis: output index i reads `count[i]` inputs starting at `first[i]`, with fixed-point
// weights weights[i * taps_per_output + j].
struct AxisCoefficients {
  int taps_per_output = 0;
  std::vector<int> first;
  std::vector<int> count;
  std::vector<int32_t> weights;
};

AxisCoefficients bicubic_coefficients(int in_size, int out_size) {
  // Pillow's box edges are floats; in_size - 0.0f is exact for any size an image can have here.
  const double scale = static_cast<double>(static_cast<float>(in_size) - 0.0f) / out_size;
  const double filterscale = scale < 1.0 ? 1.0 : scale;
  const double support = kBicubicSupport * filterscale;
  const double inverse_filterscale = 1.0 / filterscale;

  AxisCoefficients axis;
  axis.taps_per_output = static_cast<int>(std::ceil(support)) * 2 + 1;
  axis.first.resize(out_size);
  axis.count.resize(out_size);
  axis.weights.assign(static_cast<size_t>(out_size) * axis.taps_per_output, 0);
  std::vector<double> w(axis.taps_per_output);
  for (int xx = 0; xx < out_size; ++xx) {
    const double center = (xx + 0.5) * scale;
    int xmin = static_cast<int>(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = static_cast<int>(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double total = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = bicubic_kernel((x + xmin - center + 0.5) * inverse_filterscale);
      total += w[x];
    }
    int32_t* fixed = &axis.weights[static_cast<size_t>(xx) * axis.taps_per_output];
    for (int x = 0; x < xmax; ++x) {
      const double k = total != 0.0 ? w[x] / total : w[x];
      const double scaled = k * (1 << kPrecisionBits);
      fixed[x] = static_cast<int32_t>(k < 0 ? -0.5 + scaled : 0.5 + scaled);
    }
    axis.first[xx] = xmin;
    axis.count[xx] = xmax;
  }
  return axis;
}

inline uint8_t clip_fixed(int32_t acc) {
  const int32_t v = acc >> kPrecisionBits;  // arithmetic shift, as in Pillow's lookup-table clip
  return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
}

constexpr int32_t kRoundingHalf = 1 << (kPrecisionBits - 1);

// Rows [row_begin, row_begin + rows) of `in` (width in_width), resampled horizontally.
void resample_horizontal(const uint8_t* in, int in_width, int row_begin, int rows, const AxisCoefficients& axis,
                         uint8_t* out, int out_width) {
  for (int y = 0; y < rows; ++y) {
    const uint8_t* line_in = in + static_cast<size_t>(row_begin + y) * in_width * 3;
    uint8_t* line_out = out + static_cast<size_t>(y) * out_width * 3;
    for (int xx = 0; xx < out_width; ++xx) {
      const int32_t* k = &axis.weights[static_cast<size_t>(xx) * axis.taps_per_output];
      const uint8_t* p = line_in + static_cast<size_t>(axis.first[xx]) * 3;
      int32_t r = kRoundingHalf, g = kRoundingHalf, b = kRoundingHalf;
      for (int x = 0, n = axis.count[xx]; x < n; ++x, p += 3) {
        r += p[0] * k[x];
        g += p[1] * k[x];
        b += p[2] * k[x];
      }
      line_out[3 * xx] = clip_fixed(r);
      line_out[3 * xx + 1] = clip_fixed(g);
      line_out[3 * xx + 2] = clip_fixed(b);
    }
  }
}

// Vertical pass; `first` indexes rows of `in`. Row-wise accumulation gives the same integer sums as
// Pillow's per-pixel loop (exact int32 arithmetic, no overflow) and lets the compiler vectorise.
void resample_vertical(const uint8_t* in, int width, const AxisCoefficients& axis, int first_offset, uint8_t* out,
                       int out_height) {
  const size_t row_values = static_cast<size_t>(width) * 3;
  std::vector<int32_t> acc(row_values);
  for (int yy = 0; yy < out_height; ++yy) {
    const int32_t* k = &axis.weights[static_cast<size_t>(yy) * axis.taps_per_output];
    std::fill(acc.begin(), acc.end(), kRoundingHalf);
    for (int y = 0, n = axis.count[yy]; y < n; ++y) {
      const uint8_t* line = in + static_cast<size_t>(axis.first[yy] - first_offset + y) * row_values;
      const int32_t weight = k[y];
      for (size_t i = 0; i < row_values; ++i) acc[i] += line[i] * weight;
    }
    uint8_t* line_out = out + static_cast<size_t>(yy) * row_values;
    for (size_t i = 0; i < row_values; ++i) line_out[i] = clip_fixed(acc[i]);
  }
}

}  // namespace

RgbImage resize_bicubic_pillow(const RgbImage& image, int64_t out_width, int64_t out_height) {
  constexpr int64_t kMaxSide = 1 << 24;  // Pillow's float box edges stay exact below this
  if (image.width <= 0 || image.height <= 0 ||
      image.pixels.size() != static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3) {
    throw_input_error("resize", "input image {}x{} has {} bytes of pixel data, expected width*height*3", image.width,
                      image.height, image.pixels.size());
  }
  if (out_width <= 0 || out_height <= 0 || out_width > kMaxSide || out_height > kMaxSide ||
      image.width > kMaxSide || image.height > kMaxSide) {
    throw_input_error("resize", "cannot resize {}x{} to {}x{}", image.width, image.height, out_width, out_height);
  }
  const bool need_horizontal = out_width != image.width;
  const bool need_vertical = out_height != image.height;
  if (!need_horizontal && !need_vertical) return image;

  const int in_w = static_cast<int>(image.width), in_h = static_cast<int>(image.height);
  const int out_w = static_cast<int>(out_width), out_h = static_cast<int>(out_height);
  const AxisCoefficients vertical = bicubic_coefficients(in_h, out_h);

  RgbImage result;
  result.width = out_w;
  result.height = out_h;
  result.pixels.resize(static_cast<size_t>(out_w) * out_h * 3);

  if (!need_horizontal) {
    resample_vertical(image.pixels.data(), in_w, vertical, 0, result.pixels.data(), out_h);
    return result;
  }
  const AxisCoefficients horizontal = bicubic_coefficients(in_w, out_w);
  // Only the source rows the vertical pass reads (all of them when there is no vertical pass).
  const int row_first = vertical.first.front();
  const int row_last = vertical.first.back() + vertical.count.back();
  if (!need_vertical) {
    resample_horizontal(image.pixels.data(), in_w, 0, in_h, horizontal, result.pixels.data(), out_w);
    return result;
  }
  std::vector<uint8_t> temp(static_cast<size_t>(out_w) * (row_last - row_first) * 3);
  resample_horizontal(image.pixels.data(), in_w, row_first, row_last - row_first, horizontal, temp.data(), out_w);
  resample_vertical(temp.data(), out_w, vertical, row_first, result.pixels.data(), out_h);
  return result;
}

}  // namespace vlreward
