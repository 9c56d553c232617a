#include "adapters/common/jsonl.h"

#include <filesystem>

#include <fmt/format.h>

#include "adapters/common/error.h"
#include "adapters/common/mapped_file.h"

namespace vlreward {
namespace fs = std::filesystem;

int64_t for_each_jsonl_line(const std::string& path,
                            const std::function<void(const std::string& line, const std::string& source, int64_t line_number)>& visit) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw InputError(path, "no such file");
  const std::string content = read_file(path);
  size_t start = 0;
  int64_t line_number = 0, visited = 0;
  while (start < content.size()) {
    size_t end = content.find('\n', start);
    if (end == std::string::npos) end = content.size();
    ++line_number;
    std::string line = content.substr(start, end - start);
    start = end + 1;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    visit(line, fmt::format("{}:{}", path, line_number), line_number);
    ++visited;
  }
  return visited;
}

}  // namespace vlreward
