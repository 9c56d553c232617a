#include "mpo/ab/report.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>

#include <fmt/format.h>

#include "adapters/common/atomic_file.h"

namespace vlreward::mpo {
namespace fs = std::filesystem;
using nlohmann::json;

void summarize(AbResult& r) {
  std::vector<double> reward_a, reward_b;
  std::vector<bool> correct_a, correct_b;
  r.reward_errors = 0;
  for (auto& row : r.rows) {
    if (row.reference) {
      row.correct_a = answer_matches(row.response_a, *row.reference);
      row.correct_b = answer_matches(row.response_b, *row.reference);
      correct_a.push_back(*row.correct_a);
      correct_b.push_back(*row.correct_b);
    } else {
      row.correct_a.reset();
      row.correct_b.reset();
    }
    if (row.compared()) {
      reward_a.push_back(*row.reward_a);
      reward_b.push_back(*row.reward_b);
    } else {
      ++r.reward_errors;
    }
  }
  r.rewards = compare_rewards(reward_a, reward_b, r.tie_epsilon, r.bootstrap);
  if (!correct_a.empty()) r.accuracy = compare_accuracy(correct_a, correct_b, r.bootstrap);
  else r.accuracy.reset();
  r.verdict = verdict(r.rewards, r.label_a, r.label_b);
}

// ---------------------------------------------------------------------------------------------------- JSON

namespace {

json interval(const Interval& i) { return json::array({i.low, i.high}); }

json optional_number(const std::optional<double>& x) { return x ? json(*x) : json(nullptr); }

const char* outcome_name(const AbRow& row, double tie_epsilon) {
  if (!row.compared()) return "error";
  switch (outcome(*row.reward_b - *row.reward_a, tie_epsilon)) {
    case Outcome::kWin: return "b";
    case Outcome::kLoss: return "a";
    case Outcome::kTie: break;
  }
  return "tie";
}

}  // namespace

json report_json(const AbResult& r) {
  json out;
  out["format"] = "vlreward-ab-compare/1";
  out["policies"] = {{"a", {{"label", r.label_a}, {"path", r.policy_a}}},
                     {"b", {{"label", r.label_b}, {"path", r.policy_b}}}};
  out["prompts"] = r.prompts_path;
  out["reward"] = r.reward_name;
  out["settings"] = r.settings;
  const auto& c = r.rewards;
  out["summary"] = {{"prompts", r.rows.size()},
                    {"compared", c.n},
                    {"reward_errors", r.reward_errors},
                    {"wins_b", c.wins},
                    {"ties", c.ties},
                    {"wins_a", c.losses},
                    {"win_rate_b", c.win_rate},
                    {"win_rate_b_ci", interval(c.win_rate_ci)},
                    {"mean_reward_a", c.mean_a},
                    {"mean_reward_b", c.mean_b},
                    {"mean_difference", c.mean_difference},
                    {"mean_difference_ci", interval(c.mean_difference_ci)},
                    {"tie_epsilon", r.tie_epsilon},
                    {"bootstrap", {{"resamples", r.bootstrap.resamples},
                                   {"seed", r.bootstrap.seed},
                                   {"confidence", r.bootstrap.confidence},
                                   {"method", "paired percentile bootstrap over prompts (splitmix64)"}}},
                    {"verdict", r.verdict}};
  if (r.accuracy) {
    const auto& a = *r.accuracy;
    out["accuracy"] = {{"prompts", a.n},
                       {"correct_a", a.correct_a},
                       {"correct_b", a.correct_b},
                       {"accuracy_a", a.accuracy_a},
                       {"accuracy_a_ci", interval(a.accuracy_a_ci)},
                       {"accuracy_b", a.accuracy_b},
                       {"accuracy_b_ci", interval(a.accuracy_b_ci)},
                       {"difference", a.difference},
                       {"difference_ci", interval(a.difference_ci)},
                       {"rule", "normalised response == normalised reference (trim, lowercase, collapse whitespace, "
                                "strip trailing .,;:!?)"}};
  } else {
    out["accuracy"] = nullptr;
  }
  json rows = json::array();
  for (const auto& row : r.rows) {
    json j = {{"id", row.id},
              {"question", row.question},
              {"reference", row.reference ? json(*row.reference) : json(nullptr)},
              {"response_a", row.response_a},
              {"response_b", row.response_b},
              {"stopped_a", row.stopped_a},
              {"stopped_b", row.stopped_b},
              {"reward_a", optional_number(row.reward_a)},
              {"reward_b", optional_number(row.reward_b)},
              {"difference", row.compared() ? json(*row.reward_b - *row.reward_a) : json(nullptr)},
              {"outcome", outcome_name(row, r.tie_epsilon)},
              {"correct_a", row.correct_a ? json(*row.correct_a) : json(nullptr)},
              {"correct_b", row.correct_b ? json(*row.correct_b) : json(nullptr)}};
    if (!row.error_a.empty()) j["error_a"] = row.error_a;
    if (!row.error_b.empty()) j["error_b"] = row.error_b;
    rows.push_back(std::move(j));
  }
  out["rows"] = std::move(rows);
  return out;
}

// ---------------------------------------------------------------------------------------------------- HTML

std::string html_escape(std::string_view text) {
  static const char kReplacement[] = "\xEF\xBF\xBD";  // U+FFFD
  std::string out;
  out.reserve(text.size() + text.size() / 8);
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      switch (c) {
        case '&': out += "&amp;"; break;
        case '<': out += "&lt;"; break;
        case '>': out += "&gt;"; break;
        case '"': out += "&quot;"; break;
        case '\'': out += "&#39;"; break;
        case '\t': case '\n': out.push_back(static_cast<char>(c)); break;
        case '\r': break;  // CRLF → LF
        default:
          if (c < 0x20 || c == 0x7F) out += kReplacement;
          else out.push_back(static_cast<char>(c));
      }
      ++i;
      continue;
    }
    // A well-formed multi-byte sequence (no overlongs, no surrogates, at most U+10FFFF) is copied; anything else
    // becomes one U+FFFD per bad byte.
    size_t len = 0;
    uint32_t cp = 0, min = 0;
    if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F, min = 0x80;
    else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F, min = 0x800;
    else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07, min = 0x10000;
    bool ok = len > 0 && i + len <= n;
    for (size_t k = 1; ok && k < len; ++k) {
      if ((s[i + k] & 0xC0) != 0x80) ok = false;
      else cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    ok = ok && cp >= min && cp <= 0x10FFFF && !(cp >= 0xD800 && cp <= 0xDFFF);
    if (ok) {
      out.append(text.substr(i, len));
      i += len;
    } else {
      out += kReplacement;
      ++i;
    }
  }
  return out;
}

namespace {

constexpr const char* kColorA = "#d9782d";
constexpr const char* kColorB = "#2b6cb0";
constexpr const char* kColorTie = "#a0aab4";

std::string pct(double x) { return fmt::format("{:.1f}%", 100 * x); }
std::string pct_ci(const Interval& i) { return fmt::format("{:.1f}–{:.1f}%", 100 * i.low, 100 * i.high); }
std::string num(double x) { return fmt::format("{:.4g}", x); }
std::string signed_num(double x) { return fmt::format("{:+.4g}", x); }
std::string num_ci(const Interval& i) { return fmt::format("[{:+.4g}, {:+.4g}]", i.low, i.high); }

// Chart labels are user text: shortened so they fit under a bar.
std::string short_label(const std::string& label, size_t max_chars = 14) {
  if (label.size() <= max_chars) return label;
  size_t cut = max_chars - 1;
  while (cut > 0 && (static_cast<unsigned char>(label[cut]) & 0xC0) == 0x80) --cut;  // not inside a UTF-8 sequence
  return label.substr(0, cut) + "…";
}

// A round axis maximum ≥ x with steps of 1, 2 or 5 × 10^k, about four ticks.
double nice_max(double x, double* step) {
  if (!(x > 0)) x = 1;
  const double raw = x / 4;
  const double magnitude = std::pow(10, std::floor(std::log10(raw)));
  double s = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    s = m * magnitude;
    if (s >= raw) break;
  }
  *step = s;
  return std::ceil(x / s - 1e-9) * s;
}

constexpr int kChartWidth = 340, kChartHeight = 240;
constexpr int kLeft = 48, kRight = 12, kTop = 28, kBottom = 44;
constexpr int kPlotWidth = kChartWidth - kLeft - kRight, kPlotHeight = kChartHeight - kTop - kBottom;

std::string svg_open(const std::string& title) {
  return fmt::format(
      "<svg viewBox=\"0 0 {0} {1}\" width=\"{0}\" height=\"{1}\" role=\"img\" "
      "aria-label=\"{2}\"><title>{2}</title>\n",
      kChartWidth, kChartHeight, html_escape(title));
}

// Horizontal grid lines and y tick labels for values 0..max.
std::string y_axis(double max, double step, bool percent) {
  std::string s;
  for (double v = 0; v <= max + step * 1e-6; v += step) {
    const double y = kTop + kPlotHeight * (1 - v / max);
    s += fmt::format("<line class=\"grid\" x1=\"{}\" x2=\"{}\" y1=\"{:.1f}\" y2=\"{:.1f}\"/>", kLeft,
                     kLeft + kPlotWidth, y, y);
    s += fmt::format("<text class=\"tick\" x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", kLeft - 6, y + 4,
                     percent ? fmt::format("{:.0f}%", 100 * v) : fmt::format("{:g}", v));
  }
  s += fmt::format("<line class=\"axis\" x1=\"{0}\" x2=\"{1}\" y1=\"{2}\" y2=\"{2}\"/>\n", kLeft, kLeft + kPlotWidth,
                   kTop + kPlotHeight);
  return s;
}

std::string outcome_chart(const AbResult& r) {
  const auto& c = r.rewards;
  struct Bar {
    std::string label;
    int64_t count;
    const char* color;
  };
  const Bar bars[] = {{short_label(r.label_b) + " wins", c.wins, kColorB},
                      {"tie", c.ties, kColorTie},
                      {short_label(r.label_a) + " wins", c.losses, kColorA}};
  double step = 1;
  const double max = nice_max(static_cast<double>(std::max({c.wins, c.ties, c.losses, int64_t{1}})), &step);
  std::string s = svg_open("Wins, ties and losses");
  s += y_axis(max, std::max(1.0, step), false);
  const double slot = kPlotWidth / 3.0, width = slot * 0.56;
  for (int k = 0; k < 3; ++k) {
    const double x = kLeft + slot * k + (slot - width) / 2;
    const double h = kPlotHeight * static_cast<double>(bars[k].count) / max;
    const double y = kTop + kPlotHeight - h;
    s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\" rx=\"2\"/>", x, y,
                     width, h, bars[k].color);
    const std::string share = c.n > 0 ? " (" + pct(static_cast<double>(bars[k].count) / c.n) + ")" : "";
    s += fmt::format("<text class=\"value\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}{}</text>",
                     x + width / 2, y - 6, bars[k].count, share);
    s += fmt::format("<text class=\"label\" x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", x + width / 2,
                     kTop + kPlotHeight + 18, html_escape(bars[k].label));
  }
  return s + "</svg>";
}

std::string accuracy_chart(const AbResult& r) {
  std::string s = svg_open("Accuracy per policy with 95% CI");
  if (!r.accuracy) {
    s += fmt::format("<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">No prompt has a reference "
                     "answer</text>",
                     kChartWidth / 2, kChartHeight / 2);
    return s + "</svg>";
  }
  const auto& a = *r.accuracy;
  s += y_axis(1.0, 0.25, true);
  struct Bar {
    std::string label;
    double value;
    Interval ci;
    const char* color;
  };
  const Bar bars[] = {{short_label(r.label_a), a.accuracy_a, a.accuracy_a_ci, kColorA},
                      {short_label(r.label_b), a.accuracy_b, a.accuracy_b_ci, kColorB}};
  const double slot = kPlotWidth / 2.0, width = slot * 0.42;
  auto y_of = [](double v) { return kTop + kPlotHeight * (1 - v); };
  for (int k = 0; k < 2; ++k) {
    const double x = kLeft + slot * k + (slot - width) / 2, cx = x + width / 2;
    const double y = y_of(bars[k].value);
    s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\" "
                     "fill-opacity=\"0.85\" rx=\"2\"/>",
                     x, y, width, kTop + kPlotHeight - y, bars[k].color);
    // The CI whisker with caps.
    const double lo = y_of(bars[k].ci.low), hi = y_of(bars[k].ci.high);
    s += fmt::format("<line class=\"whisker\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1:.1f}\" y2=\"{2:.1f}\"/>", cx, lo, hi);
    for (double yy : {lo, hi})
      s += fmt::format("<line class=\"whisker\" x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\"/>", cx - 9,
                       cx + 9, yy, yy);
    s += fmt::format("<text class=\"value\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"start\">{}</text>", cx + 13,
                     std::min(y, hi) + 4 < kTop + 10 ? kTop + 10.0 : (y + hi) / 2 + 4, pct(bars[k].value));
    s += fmt::format("<text class=\"label\" x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", cx,
                     kTop + kPlotHeight + 18, html_escape(bars[k].label));
  }
  s += fmt::format("<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">{} prompts with a reference</text>",
                   kLeft + kPlotWidth / 2, kTop + kPlotHeight + 36, a.n);
  return s + "</svg>";
}

std::string difference_histogram(const AbResult& r) {
  std::string s = svg_open("Histogram of reward differences");
  std::vector<double> d;
  for (const auto& row : r.rows)
    if (row.compared()) d.push_back(*row.reward_b - *row.reward_a);
  if (d.empty()) {
    s += fmt::format("<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">No prompt was scored for both "
                     "policies</text>",
                     kChartWidth / 2, kChartHeight / 2);
    return s + "</svg>";
  }
  // Symmetric around 0 with an odd number of bins, so zero (ties) sits in the middle of the centre bin.
  double extent = 0;
  for (double x : d) extent = std::max(extent, std::abs(x));
  if (!(extent > 0)) extent = 1;
  constexpr int kBins = 21;
  const auto h = histogram(d, kBins, -extent, extent);
  const int64_t top = *std::max_element(h.counts.begin(), h.counts.end());
  double step = 1;
  const double max = nice_max(static_cast<double>(top), &step);
  s += y_axis(max, std::max(1.0, step), false);
  const double width = static_cast<double>(kPlotWidth) / kBins;
  auto x_of = [&](double v) { return kLeft + kPlotWidth * (v + extent) / (2 * extent); };
  for (int k = 0; k < kBins; ++k) {
    const double center = -extent + (k + 0.5) * 2 * extent / kBins;
    const char* color = k == kBins / 2 ? kColorTie : center > 0 ? kColorB : kColorA;
    const double bh = kPlotHeight * static_cast<double>(h.counts[static_cast<size_t>(k)]) / max;
    if (bh > 0)
      s += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"/>",
                       kLeft + k * width + 0.5, kTop + kPlotHeight - bh, width - 1, bh, color);
  }
  s += fmt::format("<line class=\"zero\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\"/>", x_of(0), kTop,
                   kTop + kPlotHeight);
  const double mx = x_of(r.rewards.mean_difference);
  s += fmt::format("<line class=\"mean\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1}\" y2=\"{2}\"/>", mx, kTop - 4,
                   kTop + kPlotHeight);
  s += fmt::format("<text class=\"value\" x=\"{:.1f}\" y=\"{}\" text-anchor=\"{}\">mean {}</text>", mx, kTop - 8,
                   mx > kLeft + kPlotWidth * 0.75 ? "end" : mx < kLeft + kPlotWidth * 0.25 ? "start" : "middle",
                   signed_num(r.rewards.mean_difference));
  for (double v : {-extent, 0.0, extent})  // end labels anchored inwards so they are not clipped
    s += fmt::format("<text class=\"tick\" x=\"{:.1f}\" y=\"{}\" text-anchor=\"{}\">{}</text>", x_of(v),
                     kTop + kPlotHeight + 16, v < 0 ? "start" : v > 0 ? "end" : "middle",
                     v == 0 ? std::string("0") : signed_num(v));
  s += fmt::format("<text class=\"label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">reward({}) − reward({})</text>",
                   kLeft + kPlotWidth / 2, kTop + kPlotHeight + 36, html_escape(short_label(r.label_b)),
                   html_escape(short_label(r.label_a)));
  return s + "</svg>";
}

constexpr const char* kStyle = R"css(
:root { --a: #d9782d; --b: #2b6cb0; --tie: #a0aab4; --ink: #1f2933; --muted: #5f6b7a; --line: #d9dee4; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f6f8; color: var(--ink);
       font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 20px 40px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 10px; }
.sub { color: var(--muted); margin: 0 0 16px; word-break: break-all; }
.pa { color: var(--a); font-weight: 600; } .pb { color: var(--b); font-weight: 600; }
.headline { border-radius: 8px; padding: 16px 20px; background: #fff; border-left: 6px solid var(--tie);
            box-shadow: 0 1px 2px rgba(0,0,0,.06); }
.headline.better-a { border-left-color: var(--a); } .headline.better-b { border-left-color: var(--b); }
.verdict { font-size: 20px; font-weight: 700; } .verdict::first-letter { text-transform: uppercase; }
.headline.better-a .verdict { color: var(--a); } .headline.better-b .verdict { color: var(--b); }
.headline p { margin: 6px 0 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(140px, 1fr)); gap: 12px; margin-top: 16px; }
.card { background: #fff; border-radius: 8px; padding: 10px 14px; box-shadow: 0 1px 2px rgba(0,0,0,.06); }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .03em; }
.card .v { font-size: 20px; font-weight: 600; } .card .ci { color: var(--muted); font-size: 12px; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 12px; }
figure { margin: 0; background: #fff; border-radius: 8px; padding: 12px; box-shadow: 0 1px 2px rgba(0,0,0,.06); }
figure svg { display: block; width: 100%; height: auto; max-width: 340px; margin: 0 auto; }
figcaption { font-weight: 600; margin-bottom: 6px; }
.fignote { color: var(--muted); font-size: 12px; text-align: center; margin-top: 4px; }
svg text { font-family: inherit; } svg .tick { font-size: 11px; fill: var(--muted); }
svg .label { font-size: 12px; fill: var(--ink); } svg .value { font-size: 12px; font-weight: 600; fill: var(--ink); }
svg .grid { stroke: #eceff2; } svg .axis { stroke: #9aa5b1; } svg .whisker { stroke: var(--ink); stroke-width: 1.5; }
svg .zero { stroke: #9aa5b1; stroke-dasharray: 3 3; } svg .mean { stroke: var(--ink); stroke-width: 1.5; }
table { border-collapse: collapse; width: 100%; background: #fff; box-shadow: 0 1px 2px rgba(0,0,0,.06); }
th, td { border-bottom: 1px solid var(--line); padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: #eef1f4; font-size: 12px; text-transform: uppercase; letter-spacing: .03em; color: var(--muted); }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.policies td:first-child { width: 10%; }
table.rows { table-layout: fixed; }
.text { white-space: pre-wrap; word-break: break-word; max-height: 11em; overflow: auto; font-size: 13px; }
.resp { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 12px; }
.ref { color: var(--muted); font-size: 12px; margin-top: 4px; }
.thumbs img { max-width: 100%; max-height: 120px; margin: 4px 4px 0 0; border: 1px solid var(--muted); }
.mark-ok { color: #2f855a; font-weight: 700; } .mark-bad { color: #c53030; font-weight: 700; }
.out-b { color: var(--b); font-weight: 600; } .out-a { color: var(--a); font-weight: 600; }
.out-tie { color: var(--muted); } .out-error { color: #c53030; } td.result { word-break: break-word; }
.cut { color: var(--muted); font-size: 11px; }
.notes { color: var(--muted); font-size: 13px; } .notes li { margin: 3px 0; }
)css";

std::string card(const std::string& key, const std::string& value, const std::string& ci = {}) {
  return fmt::format("<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div>{}</div>\n", key, value,
                     ci.empty() ? std::string() : "<div class=\"ci\">" + ci + "</div>");
}

std::string correctness_mark(const std::optional<bool>& correct) {
  if (!correct) return {};
  return *correct ? " <span class=\"mark-ok\" title=\"matches the reference\">✓</span>"
                  : " <span class=\"mark-bad\" title=\"does not match the reference\">✗</span>";
}

std::string response_cell(const std::string& text, bool stopped, const std::optional<bool>& correct) {
  std::string s = "<td><div class=\"text resp\">" + html_escape(text) + "</div>";
  if (!stopped) s += "<div class=\"cut\">(cut at max_new_tokens)</div>";
  if (correct) s += "<div>" + correctness_mark(correct) + "</div>";
  return s + "</td>";
}

std::string reward_cell(const std::optional<double>& reward, const std::string& error) {
  if (reward) return "<td class=\"num\">" + num(*reward) + "</td>";
  return "<td class=\"num out-error\" title=\"" + html_escape(error) + "\">error</td>";
}

}  // namespace

std::string report_html(const AbResult& r, int64_t max_rows) {
  const auto& c = r.rewards;
  const std::string a = "<span class=\"pa\">" + html_escape(r.label_a) + "</span>";
  const std::string b = "<span class=\"pb\">" + html_escape(r.label_b) + "</span>";
  std::string h;
  h += "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n";
  h += "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  h += "<title>" + html_escape("A/B comparison: " + r.label_a + " vs " + r.label_b) + "</title>\n";
  h += std::string("<style>") + kStyle + "</style>\n</head>\n<body>\n<main>\n";
  h += "<h1>A/B comparison: " + a + " vs " + b + "</h1>\n";
  h += "<p class=\"sub\">" + std::to_string(r.rows.size()) + " prompts from " + html_escape(r.prompts_path) +
       " · reward: " + html_escape(r.reward_name.empty() ? "?" : r.reward_name) + "</p>\n";

  // Headline.
  const char* verdict_class = c.n > 0 && c.win_rate_ci.low > 0.5    ? "better-b"
                              : c.n > 0 && c.win_rate_ci.high < 0.5 ? "better-a"
                                                                    : "even";
  h += fmt::format("<section class=\"headline {}\">\n<div class=\"verdict\">{}</div>\n", verdict_class,
                   html_escape(r.verdict));
  if (c.n > 0) {
    h += "<p>Win rate of " + b + " over " + a + ": <b>" + pct(c.win_rate) + "</b> (" +
         fmt::format("{:.0f}", 100 * r.bootstrap.confidence) + "% CI " + pct_ci(c.win_rate_ci) + ") on " +
         std::to_string(c.n) + " prompts: " + std::to_string(c.wins) + " wins, " + std::to_string(c.ties) +
         " ties, " + std::to_string(c.losses) + " losses. Mean reward difference " + signed_num(c.mean_difference) +
         " " + num_ci(c.mean_difference_ci) + ".</p>\n";
  }
  if (r.reward_errors > 0)
    h += "<p class=\"out-error\">" + std::to_string(r.reward_errors) +
         " prompt(s) left out: the reward failed for a response (see the table / JSON).</p>\n";
  h += "</section>\n";

  // Key numbers.
  h += "<div class=\"cards\">\n";
  h += card("Prompts compared", std::to_string(c.n), std::to_string(r.rows.size()) + " in the file");
  h += card("Win rate of " + html_escape(short_label(r.label_b)), c.n ? pct(c.win_rate) : "–",
            c.n ? "CI " + pct_ci(c.win_rate_ci) : "");
  h += card("Mean reward Δ (B − A)", c.n ? signed_num(c.mean_difference) : "–", c.n ? "CI " + num_ci(c.mean_difference_ci) : "");
  if (r.accuracy) {
    const auto& acc = *r.accuracy;
    h += card("Accuracy " + html_escape(short_label(r.label_a)), pct(acc.accuracy_a), "CI " + pct_ci(acc.accuracy_a_ci));
    h += card("Accuracy " + html_escape(short_label(r.label_b)), pct(acc.accuracy_b), "CI " + pct_ci(acc.accuracy_b_ci));
    h += card("Accuracy Δ (B − A)", fmt::format("{:+.1f} pp", 100 * acc.difference),
              fmt::format("CI [{:+.1f}, {:+.1f}] pp", 100 * acc.difference_ci.low, 100 * acc.difference_ci.high));
  }
  h += card("Reward errors", std::to_string(r.reward_errors));
  h += "</div>\n";

  // Charts.
  h += "<h2>Charts</h2>\n<div class=\"charts\">\n";
  h += "<figure><figcaption>Wins, ties, losses</figcaption>" + outcome_chart(r) + "</figure>\n";
  h += "<figure><figcaption>Accuracy (with 95% CI)</figcaption>" + accuracy_chart(r) + "</figure>\n";
  h += "<figure><figcaption>Reward difference per prompt</figcaption>" + difference_histogram(r) +
       "<div class=\"fignote\">" + b + " higher: blue · " + a + " higher: orange · grey: the bin around 0</div></figure>\n";
  h += "</div>\n";

  // Policies.
  h += "<h2>Policies</h2>\n<table class=\"policies\"><tr><th>policy</th><th>checkpoint</th><th>mean reward</th>"
       "<th>accuracy</th></tr>\n";
  for (int k = 0; k < 2; ++k) {
    const bool is_a = k == 0;
    std::string accuracy = "–";
    if (r.accuracy)
      accuracy = is_a ? fmt::format("{} ({}/{})", pct(r.accuracy->accuracy_a), r.accuracy->correct_a, r.accuracy->n)
                      : fmt::format("{} ({}/{})", pct(r.accuracy->accuracy_b), r.accuracy->correct_b, r.accuracy->n);
    h += "<tr><td>" + (is_a ? a : b) + "</td><td>" + html_escape(is_a ? r.policy_a : r.policy_b) +
         "</td><td class=\"num\">" + (c.n ? num(is_a ? c.mean_a : c.mean_b) : "–") + "</td><td class=\"num\">" +
         accuracy + "</td></tr>\n";
  }
  h += "</table>\n";

  // Responses.
  const size_t shown = std::min(r.rows.size(), static_cast<size_t>(std::max<int64_t>(0, max_rows)));
  h += fmt::format("<h2>Responses (first {} of {} prompts)</h2>\n", shown, r.rows.size());
  h += "<table class=\"rows\"><colgroup><col style=\"width:3%\"><col style=\"width:21%\"><col style=\"width:27%\">"
       "<col style=\"width:27%\"><col style=\"width:7%\"><col style=\"width:7%\"><col style=\"width:8%\"></colgroup>\n"
       "<tr><th>#</th><th>prompt</th><th>" + a + "</th><th>" + b + "</th><th>reward " + a + "</th><th>reward " + b +
       "</th><th>result</th></tr>\n";
  for (size_t i = 0; i < shown; ++i) {
    const auto& row = r.rows[i];
    h += "<tr><td class=\"num\">" + std::to_string(i + 1) + "</td><td><div class=\"text\"><b>" + html_escape(row.id) +
         "</b>\n" + html_escape(row.question) + "</div>";
    if (row.reference) h += "<div class=\"ref\">reference: " + html_escape(*row.reference) + "</div>";
    if (!row.thumbnails.empty()) {
      h += "<div class=\"thumbs\">";
      for (size_t k = 0; k < row.thumbnails.size(); ++k)
        if (row.thumbnails[k].rfind("data:image/png;base64,", 0) == 0)  // only our own embedded PNGs
          h += "<img src=\"" + html_escape(row.thumbnails[k]) + "\" alt=\"image " + std::to_string(k + 1) + " of " +
               html_escape(row.id) + "\">";
      h += "</div>";
    }
    h += "</td>";
    h += response_cell(row.response_a, row.stopped_a, row.correct_a);
    h += response_cell(row.response_b, row.stopped_b, row.correct_b);
    h += reward_cell(row.reward_a, row.error_a);
    h += reward_cell(row.reward_b, row.error_b);
    const std::string o = outcome_name(row, r.tie_epsilon);
    const std::string text = o == "a" ? html_escape(short_label(r.label_a, 12)) + " wins"
                             : o == "b" ? html_escape(short_label(r.label_b, 12)) + " wins"
                                        : o;
    h += "<td class=\"result out-" + o + "\">" + text + "</td></tr>\n";
  }
  h += "</table>\n";

  // How to read it.
  h += "<h2>Method</h2>\n<ul class=\"notes\">\n";
  h += fmt::format("<li>Per prompt, d = reward(B) − reward(A): B wins when d &gt; {0:g}, tie when |d| ≤ {0:g}, A wins "
                   "otherwise. Win rate = (wins + ½·ties) / n.</li>\n",
                   r.tie_epsilon);
  h += fmt::format("<li>Confidence intervals: paired percentile bootstrap over prompts, {} resamples, seed {}, "
                   "{:.0f}% level. The verdict names a policy only when the win-rate interval excludes 50%.</li>\n",
                   r.bootstrap.resamples, r.bootstrap.seed, 100 * r.bootstrap.confidence);
  h += "<li>Accuracy: a response is correct when it equals the reference after trimming, lowercasing, collapsing "
       "whitespace and stripping trailing punctuation (. , ; : ! ?).</li>\n";
  h += "<li>Prompts where the reward failed for either response are left out of the win/tie/loss statistics and "
       "counted as reward errors; accuracy does not need the reward and uses every prompt with a reference.</li>\n";
  h += "</ul>\n</main>\n</body>\n</html>\n";
  return h;
}

std::string console_summary(const AbResult& r) {
  const auto& c = r.rewards;
  std::string s;
  auto line = [&](const std::string& key, const std::string& value) { s += fmt::format("  {:<26} {}\n", key, value); };
  s += fmt::format("ab-compare: {} (A) vs {} (B)\n", r.label_a, r.label_b);
  line("prompts", fmt::format("{} ({} compared, {} reward errors)", r.rows.size(), c.n, r.reward_errors));
  line("wins B / ties / wins A", fmt::format("{} / {} / {}", c.wins, c.ties, c.losses));
  line("win rate of B", fmt::format("{} (95% CI {})", pct(c.win_rate), pct_ci(c.win_rate_ci)));
  line("mean reward A / B", fmt::format("{} / {}", num(c.mean_a), num(c.mean_b)));
  line("mean difference (B - A)", fmt::format("{} {}", signed_num(c.mean_difference), num_ci(c.mean_difference_ci)));
  if (r.accuracy) {
    const auto& a = *r.accuracy;
    line("accuracy A", fmt::format("{} ({}/{}, CI {})", pct(a.accuracy_a), a.correct_a, a.n, pct_ci(a.accuracy_a_ci)));
    line("accuracy B", fmt::format("{} ({}/{}, CI {})", pct(a.accuracy_b), a.correct_b, a.n, pct_ci(a.accuracy_b_ci)));
    line("accuracy difference", fmt::format("{:+.1f} pp [{:+.1f}, {:+.1f}]", 100 * a.difference,
                                            100 * a.difference_ci.low, 100 * a.difference_ci.high));
  } else {
    line("accuracy", "- (no references)");
  }
  line("verdict", r.verdict);
  return s;
}

std::pair<std::string, std::string> write_reports(const AbResult& result, const std::string& dir, int64_t max_rows) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw std::runtime_error(dir + ": cannot create the output directory: " + ec.message());
  const std::string json_path = (fs::path(dir) / "ab_compare.json").string();
  const std::string html_path = (fs::path(dir) / "report.html").string();
  // Responses are model output and may hold invalid UTF-8: replaced (U+FFFD) rather than failing the run.
  write_file_atomic(json_path, report_json(result).dump(2, ' ', false, json::error_handler_t::replace) + "\n");
  write_file_atomic(html_path, report_html(result, max_rows));
  return {json_path, html_path};
}

}  // namespace vlreward::mpo
