#include "adapters/common/cli.h"

#include <cstdio>
#include <exception>
#include <iostream>

#include "plugin/error.h"

namespace po = boost::program_options;

namespace vlreward {
namespace {

bool finish_parse(const po::options_description& options, po::variables_map& vm, const std::string& help_footer) {
  if (vm.count("help")) {
    std::cout << options << "\n" << help_footer << (help_footer.empty() ? "" : "\n");
    return false;
  }
  po::notify(vm);
  return true;
}

}  // namespace

bool parse_command_line(int argc, char** argv, const po::options_description& options, po::variables_map& vm,
                        const std::string& help_footer) {
  po::store(po::parse_command_line(argc, argv, options), vm);
  return finish_parse(options, vm, help_footer);
}

bool parse_command_line_with_overrides(int argc, char** argv, const po::options_description& options,
                                       po::variables_map& vm, const std::string& help_footer) {
  po::options_description hidden;
  hidden.add_options()("override", po::value<std::vector<std::string>>()->composing(), "key.path=value");
  po::options_description all;
  all.add(options).add(hidden);
  po::positional_options_description positional;
  positional.add("override", -1);
  po::store(po::command_line_parser(argc, argv).options(all).positional(positional).run(), vm);
  return finish_parse(options, vm, help_footer);
}

std::vector<std::string> config_overrides(const po::variables_map& vm) {
  std::vector<std::string> overrides;
  if (vm.count("override")) overrides = vm["override"].as<std::vector<std::string>>();
  if (vm.count("output-dir")) overrides.push_back("output.dir=" + vm["output-dir"].as<std::string>());
  return overrides;
}

int run_cli(const char* program, int argc, char** argv, int (*body)(int, char**)) {
  try {
    return body(argc, argv);
  } catch (const po::error& e) {
    std::fprintf(stderr, "%s: %s (see --help)\n", program, e.what());
  } catch (const InputError& e) {  // bad input or configuration (ConfigError)
    std::fprintf(stderr, "%s: %s\n", program, e.what());
  } catch (const std::exception& e) {  // anything else failed while running: not the user's input
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 1;
  }
  return 2;
}

}  // namespace vlreward
