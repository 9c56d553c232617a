#include "adapters/image/decode.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csetjmp>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <fmt/ranges.h>

#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"

// libjpeg and libpng report fatal errors by longjmp (their defaults call exit() or abort()). A longjmp
// must not skip C++ destructors, so every guarded call below lives in a small function whose locals are
// all trivial; C++ objects (buffers, strings) are created by the callers, outside the setjmp scope.

namespace vlreward {
namespace {

enum class Failure { kNone, kError, kTruncated, kCorrupt, kTooManyScans };

constexpr size_t kMessageSize = 256;

// "truncated JPEG data (Premature end of JPEG file)", "corrupt PNG data (IDAT: CRC error)", ...
std::string describe_failure(const char* format, Failure failure, std::string detail) {
  // libjpeg's own warnings already start with "Corrupt JPEG data: "; don't say it twice.
  const std::string repeated = std::string("Corrupt ") + format + " data: ";
  if (detail.compare(0, repeated.size(), repeated) == 0) detail.erase(0, repeated.size());
  switch (failure) {
    case Failure::kTruncated:
      return fmt::format("truncated {} data ({})", format, detail);
    case Failure::kCorrupt:
    case Failure::kTooManyScans:
      return fmt::format("corrupt {} data ({})", format, detail);
    default:
      return fmt::format("cannot decode {}: {}", format, detail);
  }
}

// ---------------------------------------------------------------- JPEG

// Progressive JPEGs can carry thousands of tiny scans that each re-walk the whole coefficient buffer;
// real encoders emit fewer than 20, so more than this is treated as a corrupt (hostile) file.
constexpr int kMaxJpegScans = 1000;

struct JpegDecoder {
  jpeg_decompress_struct cinfo;
  jpeg_error_mgr error_manager;
  jpeg_progress_mgr progress;
  std::jmp_buf jump;
  Failure failure = Failure::kNone;
  char message[kMessageSize] = {};
  bool created = false;

  ~JpegDecoder() {
    if (created) jpeg_destroy_decompress(&cinfo);
  }
};

JpegDecoder* jpeg_decoder_of(j_common_ptr cinfo) { return static_cast<JpegDecoder*>(cinfo->client_data); }

[[noreturn]] void jpeg_fail(j_common_ptr cinfo, Failure failure) {
  JpegDecoder* decoder = jpeg_decoder_of(cinfo);
  char buffer[JMSG_LENGTH_MAX];
  cinfo->err->format_message(cinfo, buffer);
  std::snprintf(decoder->message, kMessageSize, "%s", buffer);
  decoder->failure = failure;
  std::longjmp(decoder->jump, 1);
}

void jpeg_on_error(j_common_ptr cinfo) { jpeg_fail(cinfo, Failure::kError); }

// Pillow silences libjpeg warnings and keeps decoding. We are stricter where a warning means pixels were
// lost: premature end of data (Pillow also refuses those: "image file is truncated") and entropy-coded
// data that had to be skipped or zero-filled (Pillow would return a damaged image). Benign warnings
// (extraneous bytes, unknown APPn/ICC details) are ignored like Pillow does.
void jpeg_on_message(j_common_ptr cinfo, int msg_level) {
  if (msg_level >= 0) return;  // trace messages
  switch (cinfo->err->msg_code) {
    case JWRN_JPEG_EOF:
      jpeg_fail(cinfo, Failure::kTruncated);
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_MUST_RESYNC:
#ifdef C_ARITH_CODING_SUPPORTED
    case JWRN_ARITH_BAD_CODE:
#endif
      jpeg_fail(cinfo, Failure::kCorrupt);
    default:
      return;
  }
}

void jpeg_silence(j_common_ptr) {}

void jpeg_on_progress(j_common_ptr cinfo) {
  if (!cinfo->is_decompressor) return;
  auto* dinfo = reinterpret_cast<j_decompress_ptr>(cinfo);
  if (dinfo->input_scan_number > kMaxJpegScans) {
    JpegDecoder* decoder = jpeg_decoder_of(cinfo);
    std::snprintf(decoder->message, kMessageSize, "more than %d progressive scans", kMaxJpegScans);
    decoder->failure = Failure::kTooManyScans;
    std::longjmp(decoder->jump, 1);
  }
}

// Guarded: reads markers up to the first scan and picks the output colour space Pillow would use.
bool jpeg_read_header_guarded(JpegDecoder* d, const uint8_t* data, size_t size) {
  d->cinfo.err = jpeg_std_error(&d->error_manager);
  d->error_manager.error_exit = jpeg_on_error;
  d->error_manager.emit_message = jpeg_on_message;
  d->error_manager.output_message = jpeg_silence;
  if (setjmp(d->jump)) return false;
  jpeg_create_decompress(&d->cinfo);
  d->created = true;
  d->cinfo.client_data = d;
  d->progress.progress_monitor = jpeg_on_progress;
  d->cinfo.progress = &d->progress;
  // jpeg_mem_src treats the end of the buffer as EOF (JWRN_JPEG_EOF, turned into an error above).
  jpeg_mem_src(&d->cinfo, data, static_cast<unsigned long>(size));
  jpeg_read_header(&d->cinfo, TRUE);
  return true;
}

// Guarded: decodes into `out` (height*width*3) via a scanline buffer of width*components bytes.
// Decoder settings are libjpeg's defaults, as in Pillow (JDCT_ISLOW, fancy upsampling on; Pillow only
// changes them in draft mode). CMYK follows Pillow's "CMYK;I" rawmode (Adobe inverted polarity) and
// its cmyk2rgb conversion.
bool jpeg_decode_guarded(JpegDecoder* d, uint8_t* out, uint8_t* scanline) {
  if (setjmp(d->jump)) return false;
  jpeg_start_decompress(&d->cinfo);
  const JDIMENSION width = d->cinfo.output_width;
  const int components = d->cinfo.output_components;
  while (d->cinfo.output_scanline < d->cinfo.output_height) {
    uint8_t* row_out = out + static_cast<size_t>(d->cinfo.output_scanline) * width * 3;
    JSAMPROW rows[1] = {scanline};
    if (jpeg_read_scanlines(&d->cinfo, rows, 1) != 1) {
      std::snprintf(d->message, kMessageSize, "decoder stopped at row %u", d->cinfo.output_scanline);
      d->failure = Failure::kTruncated;
      return false;
    }
    if (components == 3) {
      std::memcpy(row_out, scanline, static_cast<size_t>(width) * 3);
    } else if (components == 1) {
      for (JDIMENSION x = 0; x < width; ++x) {
        row_out[3 * x] = row_out[3 * x + 1] = row_out[3 * x + 2] = scanline[x];
      }
    } else {
      for (JDIMENSION x = 0; x < width; ++x) {
        const uint8_t* cmyk = scanline + 4 * x;
        const int not_k = cmyk[3];  // inverted K, i.e. 255 - (255 - stored)
        for (int c = 0; c < 3; ++c) {
          // Pillow: nk - MULDIV255(C, nk) with C = 255 - stored (CMYK;I), MULDIV255(a,b) = ((t>>8)+t)>>8,
          // t = a*b + 128.
          const int ink = 255 - cmyk[c];
          const int t = ink * not_k + 128;
          row_out[3 * x + c] = static_cast<uint8_t>(not_k - (((t >> 8) + t) >> 8));
        }
      }
    }
  }
  // Reads to EOI so truncation after the last row is still noticed.
  jpeg_finish_decompress(&d->cinfo);
  return true;
}

[[noreturn]] void throw_jpeg_failure(const JpegDecoder& d, const std::string& source) {
  throw InputError(source, describe_failure("JPEG", d.failure, d.message));
}

void configure_jpeg_output(JpegDecoder& d, const std::string& source) {
  switch (d.cinfo.num_components) {
    case 1:
      d.cinfo.out_color_space = JCS_GRAYSCALE;
      break;
    case 3:
      d.cinfo.out_color_space = JCS_RGB;  // libjpeg guesses YCbCr vs RGB from JFIF/Adobe markers, like Pillow
      break;
    case 4:
      d.cinfo.out_color_space = JCS_CMYK;  // YCCK is converted to CMYK by libjpeg
      break;
    default:
      throw_input_error(source, "JPEG: unsupported {}-component image (Pillow handles 1, 3 or 4)",
                        d.cinfo.num_components);
  }
}

ImageHeader probe_jpeg(const uint8_t* data, size_t size, const std::string& source) {
  JpegDecoder d;
  if (!jpeg_read_header_guarded(&d, data, size)) throw_jpeg_failure(d, source);
  return {ImageFormat::kJpeg, d.cinfo.image_width, d.cinfo.image_height};
}

RgbImage decode_jpeg(const uint8_t* data, size_t size, const std::string& source, const DecodeOptions& options) {
  JpegDecoder d;
  if (!jpeg_read_header_guarded(&d, data, size)) throw_jpeg_failure(d, source);
  check_image_pixel_limit({ImageFormat::kJpeg, d.cinfo.image_width, d.cinfo.image_height}, options, source);
  configure_jpeg_output(d, source);
  RgbImage image;
  image.width = d.cinfo.image_width;
  image.height = d.cinfo.image_height;
  image.pixels.resize(static_cast<size_t>(image.width) * static_cast<size_t>(image.height) * 3);
  std::vector<uint8_t> scanline(static_cast<size_t>(image.width) * static_cast<size_t>(d.cinfo.num_components));
  if (!jpeg_decode_guarded(&d, image.pixels.data(), scanline.data())) throw_jpeg_failure(d, source);
  if (static_cast<int64_t>(d.cinfo.output_width) != image.width ||
      static_cast<int64_t>(d.cinfo.output_height) != image.height) {
    throw_input_error(source, "JPEG: decoder output size {}x{} differs from the header's {}x{}", d.cinfo.output_width,
                      d.cinfo.output_height, image.width, image.height);
  }
  return image;
}

// ---------------------------------------------------------------- PNG

struct PngDecoder {
  png_structp png = nullptr;
  png_infop info = nullptr;
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t position = 0;
  Failure failure = Failure::kNone;
  char message[kMessageSize] = {};
  char last_warning[kMessageSize] = {};

  ~PngDecoder() {
    if (png) png_destroy_read_struct(&png, info ? &info : nullptr, nullptr);
  }
};

void png_on_error(png_structp png, png_const_charp message) {
  auto* d = static_cast<PngDecoder*>(png_get_error_ptr(png));
  if (d->failure == Failure::kNone) {
    // Every libpng error means a malformed file (bad checksum, damaged zlib stream, invalid header).
    d->failure = Failure::kCorrupt;
    // libpng explains a bad IHDR in a warning ("Invalid bit depth in IHDR") before failing with the
    // generic "Invalid IHDR data"; keep the explanation.
    if (std::strstr(message, "IHDR") && d->last_warning[0]) {
      std::snprintf(d->message, kMessageSize, "%.120s: %.120s", message, d->last_warning);
    } else {
      std::snprintf(d->message, kMessageSize, "%s", message);
    }
  }
  png_longjmp(png, 1);
}

// Warnings do not stop decoding (Pillow ignores ancillary-chunk problems too); the last one is kept to
// explain a following error.
void png_on_warning(png_structp png, png_const_charp message) {
  auto* d = static_cast<PngDecoder*>(png_get_error_ptr(png));
  std::snprintf(d->last_warning, kMessageSize, "%s", message);
}

void png_read_from_memory(png_structp png, png_bytep out, png_size_t length) {
  auto* d = static_cast<PngDecoder*>(png_get_io_ptr(png));
  if (length > d->size - d->position) {
    d->failure = Failure::kTruncated;
    std::snprintf(d->message, kMessageSize, "file ends at byte %zu, %zu more bytes needed", d->size,
                  static_cast<size_t>(length - (d->size - d->position)));
    png_error(png, "unexpected end of data");
  }
  std::memcpy(out, d->data + d->position, length);
  d->position += length;
}

// Guarded: signature and chunks up to the first IDAT; then the transforms we need: 1/2/4-bit samples
// unpacked to one byte each (values unscaled) and Adam7 de-interlacing. Everything else is converted by
// hand below to follow Pillow.
bool png_read_header_guarded(PngDecoder* d) {
  d->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, d, png_on_error, png_on_warning);
  if (!d->png) {
    std::snprintf(d->message, kMessageSize, "cannot create libpng reader");
    return false;
  }
  if (setjmp(png_jmpbuf(d->png))) return false;
  d->info = png_create_info_struct(d->png);
  if (!d->info) png_error(d->png, "cannot create libpng info");
  // Our own pixel limit decides; libpng's default 1,000,000-pixel side limit would give a vaguer message.
  png_set_user_limits(d->png, 0x7fffffff, 0x7fffffff);
  png_set_read_fn(d->png, d, png_read_from_memory);
  png_read_info(d->png, d->info);
  return true;
}

bool png_prepare_guarded(PngDecoder* d, size_t* row_bytes) {
  if (setjmp(png_jmpbuf(d->png))) return false;
  if (png_get_bit_depth(d->png, d->info) < 8) png_set_packing(d->png);
  png_set_interlace_handling(d->png);
  png_read_update_info(d->png, d->info);
  *row_bytes = png_get_rowbytes(d->png, d->info);
  return true;
}

// Guarded: reads all rows; a file cut anywhere inside the image data fails here.
bool png_read_rows_guarded(PngDecoder* d, png_bytepp rows) {
  if (setjmp(png_jmpbuf(d->png))) return false;
  png_read_image(d->png, rows);
  return true;
}

// Guarded: the chunks after the image data. Like Pillow (whose load_end stops quietly at a broken or
// missing trailer), problems here do not reject an image whose rows were all decoded.
bool png_read_trailer_guarded(PngDecoder* d) {
  if (setjmp(png_jmpbuf(d->png))) return false;
  png_read_end(d->png, nullptr);
  return true;
}

[[noreturn]] void throw_png_failure(const PngDecoder& d, const std::string& source) {
  throw InputError(source, describe_failure("PNG", d.failure, d.message));
}

// Pillow's mode for each PNG colour type / depth, then convert("RGB"):
//   gray 1-bit "1" -> 0/255; 2/4-bit "L;2"/"L;4" -> value*85 / value*17; 8-bit "L"; 16-bit "I;16" which
//   converts to RGB by clipping to 255 (not by taking the high byte); gray+alpha, RGB, RGBA: the high byte
//   of 16-bit samples, alpha dropped (never composited); palette: PLTE lookup, entries past the PLTE
//   length are black, tRNS ignored.
void png_convert_row(const uint8_t* in, uint8_t* out, int64_t width, int color_type, int bit_depth,
                     const png_color* palette, int palette_size) {
  const bool wide = bit_depth == 16;
  auto sample = [&](int64_t index) -> uint8_t { return wide ? in[2 * index] : in[index]; };
  switch (color_type) {
    case PNG_COLOR_TYPE_GRAY:
      for (int64_t x = 0; x < width; ++x) {
        int value;
        if (wide) {
          const int v16 = (in[2 * x] << 8) | in[2 * x + 1];
          value = v16 > 255 ? 255 : v16;
        } else if (bit_depth == 1) {
          value = in[x] ? 255 : 0;
        } else if (bit_depth == 2) {
          value = in[x] * 85;
        } else if (bit_depth == 4) {
          value = in[x] * 17;
        } else {
          value = in[x];
        }
        out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = static_cast<uint8_t>(value);
      }
      break;
    case PNG_COLOR_TYPE_GRAY_ALPHA:
      for (int64_t x = 0; x < width; ++x) out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = sample(2 * x);
      break;
    case PNG_COLOR_TYPE_RGB:
      for (int64_t x = 0; x < 3 * width; ++x) out[x] = sample(x);
      break;
    case PNG_COLOR_TYPE_RGB_ALPHA:
      for (int64_t x = 0; x < width; ++x) {
        for (int c = 0; c < 3; ++c) out[3 * x + c] = sample(4 * x + c);
      }
      break;
    case PNG_COLOR_TYPE_PALETTE:
      for (int64_t x = 0; x < width; ++x) {
        const int index = in[x];
        if (index < palette_size) {
          out[3 * x] = palette[index].red;
          out[3 * x + 1] = palette[index].green;
          out[3 * x + 2] = palette[index].blue;
        } else {
          out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = 0;
        }
      }
      break;
    default:
      break;  // rejected before decoding
  }
}

ImageHeader probe_png(const uint8_t* data, size_t size, const std::string& source) {
  PngDecoder d;
  d.data = data;
  d.size = size;
  if (!png_read_header_guarded(&d)) throw_png_failure(d, source);
  return {ImageFormat::kPng, static_cast<int64_t>(png_get_image_width(d.png, d.info)),
          static_cast<int64_t>(png_get_image_height(d.png, d.info))};
}

RgbImage decode_png(const uint8_t* data, size_t size, const std::string& source, const DecodeOptions& options) {
  PngDecoder d;
  d.data = data;
  d.size = size;
  if (!png_read_header_guarded(&d)) throw_png_failure(d, source);
  const int64_t width = png_get_image_width(d.png, d.info);
  const int64_t height = png_get_image_height(d.png, d.info);
  check_image_pixel_limit({ImageFormat::kPng, width, height}, options, source);
  const int color_type = png_get_color_type(d.png, d.info);
  const int bit_depth = png_get_bit_depth(d.png, d.info);

  png_colorp palette = nullptr;
  int palette_size = 0;
  if (color_type == PNG_COLOR_TYPE_PALETTE &&
      !(png_get_PLTE(d.png, d.info, &palette, &palette_size) & PNG_INFO_PLTE)) {
    throw_input_error(source, "PNG: corrupt image data (palette image without a PLTE chunk)");
  }

  size_t row_bytes = 0;
  if (!png_prepare_guarded(&d, &row_bytes)) throw_png_failure(d, source);
  std::vector<uint8_t> raw(row_bytes * static_cast<size_t>(height));
  std::vector<png_bytep> rows(static_cast<size_t>(height));
  for (int64_t y = 0; y < height; ++y) rows[y] = raw.data() + static_cast<size_t>(y) * row_bytes;
  if (!png_read_rows_guarded(&d, rows.data())) throw_png_failure(d, source);
  png_read_trailer_guarded(&d);

  RgbImage image;
  image.width = width;
  image.height = height;
  image.pixels.resize(static_cast<size_t>(width) * static_cast<size_t>(height) * 3);
  for (int64_t y = 0; y < height; ++y) {
    png_convert_row(rows[y], image.pixels.data() + static_cast<size_t>(y) * width * 3, width, color_type,
                    bit_depth, palette, palette_size);
  }
  return image;
}

bool starts_with(std::string_view bytes, std::string_view prefix) {
  return bytes.size() >= prefix.size() && bytes.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

void check_image_pixel_limit(const ImageHeader& header, const DecodeOptions& options, const std::string& source) {
  if (header.width <= 0 || header.height <= 0) {
    throw_input_error(source, "image header declares an empty size {}x{}", header.width, header.height);
  }
  const uint64_t pixels = static_cast<uint64_t>(header.width) * static_cast<uint64_t>(header.height);
  if (pixels > options.max_pixels) {
    throw_input_error(source, "image size {}x{} ({} pixels) exceeds the pixel limit of {}", header.width,
                      header.height, pixels, options.max_pixels);
  }
}

ImageFormat sniff_image_format(std::string_view bytes, const std::string& source) {
  if (bytes.empty()) throw_input_error(source, "empty image data (0 bytes)");
  if (starts_with(bytes, "\xFF\xD8\xFF")) return ImageFormat::kJpeg;
  if (starts_with(bytes, "\x89PNG\r\n\x1A\n")) return ImageFormat::kPng;
  const char* known = nullptr;
  if (starts_with(bytes, "GIF87a") || starts_with(bytes, "GIF89a")) known = "GIF";
  else if (bytes.size() >= 12 && starts_with(bytes, "RIFF") && bytes.compare(8, 4, "WEBP") == 0) known = "WebP";
  else if (starts_with(bytes, "BM")) known = "BMP";
  else if (starts_with(bytes, std::string_view("II*\0", 4)) || starts_with(bytes, std::string_view("MM\0*", 4)))
    known = "TIFF";
  if (known) throw_input_error(source, "unsupported image format {} (only JPEG and PNG are supported)", known);
  throw_input_error(source, "unsupported image format: not a JPEG or PNG file (first bytes {:02x})",
                    fmt::join(reinterpret_cast<const uint8_t*>(bytes.data()),
                              reinterpret_cast<const uint8_t*>(bytes.data()) + std::min<size_t>(bytes.size(), 8),
                              " "));
}

ImageHeader probe_image(std::string_view bytes, const std::string& source) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  return sniff_image_format(bytes, source) == ImageFormat::kJpeg ? probe_jpeg(data, bytes.size(), source)
                                                                 : probe_png(data, bytes.size(), source);
}

RgbImage decode_image(std::string_view bytes, const std::string& source, const DecodeOptions& options) {
  const auto* data = reinterpret_cast<const uint8_t*>(bytes.data());
  return sniff_image_format(bytes, source) == ImageFormat::kJpeg ? decode_jpeg(data, bytes.size(), source, options)
                                                                 : decode_png(data, bytes.size(), source, options);
}

uint64_t check_image_file_size(const std::string& path, uint64_t max_bytes, const std::string& source,
                               const std::string& name) {
  const std::string& shown = name.empty() ? path : name;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0)
    throw_input_error(source, "cannot read image {}: {}", shown, std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw_input_error(source, "image {} is not a regular file", shown);
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size > max_bytes)
    throw ImageTooLargeError(source, fmt::format("image {} is {} bytes, over the {}-byte limit", shown, size, max_bytes));
  return size;
}

std::string read_image_file(const std::string& path, uint64_t max_bytes, const std::string& source) {
  const uint64_t size = check_image_file_size(path, max_bytes, source);
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw_input_error(source, "cannot read image {}: {}", path, std::strerror(errno));
  std::string bytes(size, '\0');
  size_t have = 0;
  while (have < bytes.size()) {
    const ssize_t n = ::read(fd, bytes.data() + have, bytes.size() - have);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int error = errno;
      ::close(fd);
      throw_input_error(source, "cannot read image {}: {}", path, std::strerror(error));
    }
    if (n == 0) break;  // the file shrank: decode what is there (a truncated image fails to decode)
    have += static_cast<size_t>(n);
  }
  ::close(fd);
  bytes.resize(have);
  return bytes;
}

RgbImage decode_image_file(const std::string& path, const DecodeOptions& options) {
  const std::string bytes = read_image_file(path, options.max_file_bytes, path);
  return decode_image(bytes, path, options);
}

}  // namespace vlreward
