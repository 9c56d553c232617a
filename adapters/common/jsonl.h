#pragma once
// JSON Lines files: one record per line. The one line iterator every JSONL reader of records uses.
#include <cstdint>
#include <functional>
#include <string>

namespace vlreward {

// Calls `visit(line, "path:line", line number)` for each non-blank line of a JSONL file (CRLF tolerated; a last
// line without '\n' counts). Throws InputError for a missing file; returns the number of lines visited.
int64_t for_each_jsonl_line(const std::string& path,
                            const std::function<void(const std::string& line, const std::string& source,
                                                     int64_t line_number)>& visit);

}  // namespace vlreward
