#include "adapters/common/atomic_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <fmt/format.h>

namespace vlreward {
namespace {

[[noreturn]] void throw_io(const std::string& what, const std::string& path) {
  throw std::runtime_error(fmt::format("{}: {} failed: {}", path, what, std::strerror(errno)));
}

std::string parent_dir(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

}  // namespace

AtomicFileWriter::AtomicFileWriter(std::string path) : path_(std::move(path)) {
  temp_path_ = path_ + ".tmp.XXXXXX";
  fd_ = ::mkstemp(temp_path_.data());
  if (fd_ < 0) throw_io("creating temp file", path_);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(temp_path_.c_str());
  }
}

void AtomicFileWriter::write(const void* data, size_t size) {
  if (fd_ < 0) throw std::runtime_error(path_ + ": write after commit");
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd_, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_io("write", temp_path_);
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
}

void AtomicFileWriter::commit() {
  if (fd_ < 0) throw std::runtime_error(path_ + ": commit twice");
  // mkstemp creates 0600; give the file the usual permissions.
  ::fchmod(fd_, 0644);
  if (::fsync(fd_) != 0) throw_io("fsync", temp_path_);
  if (::close(fd_) != 0) {
    fd_ = -1;
    ::unlink(temp_path_.c_str());
    throw_io("close", temp_path_);
  }
  fd_ = -1;
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    int saved = errno;
    ::unlink(temp_path_.c_str());
    errno = saved;
    throw_io("rename", path_);
  }
  fsync_directory(parent_dir(path_));  // the rename itself
}

void write_file_atomic(const std::string& path, std::string_view bytes) {
  AtomicFileWriter w(path);
  w.write(bytes);
  w.commit();
}

void copy_file_atomic(const std::string& from, const std::string& to) {
  const int in = ::open(from.c_str(), O_RDONLY | O_CLOEXEC);
  if (in < 0) throw_io("open", from);
  AtomicFileWriter w(to);
  char buffer[1 << 16];
  for (;;) {
    const ssize_t n = ::read(in, buffer, sizeof buffer);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      const int saved = errno;
      ::close(in);
      errno = saved;
      throw_io("read", from);
    }
    w.write(buffer, static_cast<size_t>(n));
  }
  ::close(in);
  w.commit();
}

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw_io("opening the directory", dir);
  const int rc = ::fsync(fd);
  const int saved = errno;
  ::close(fd);
  errno = saved;
  if (rc != 0 && saved != EINVAL) throw_io("fsync", dir);
}

void commit_directory(const std::string& temp_dir, const std::string& final_dir) {
  namespace fs = std::filesystem;
  for (const auto& entry : fs::recursive_directory_iterator(temp_dir))
    if (entry.is_directory()) fsync_directory(entry.path().string());
  fsync_directory(temp_dir);
  if (fs::exists(final_dir)) fs::remove_all(final_dir);
  if (::rename(temp_dir.c_str(), final_dir.c_str()) != 0) throw_io("rename from " + temp_dir, final_dir);
  fsync_directory(parent_dir(final_dir));
}

}  // namespace vlreward
