#pragma once
// What every command line shares: parsing its options (--help, required options), the trainers' positional
// key.path=value overrides, and turning errors into exit codes.
#include <string>
#include <vector>

#include <boost/program_options.hpp>

namespace vlreward {

// Parses argv into `vm` and checks required options. Returns false when --help was asked: the options and then
// `help_footer` went to stdout and the command should exit 0.
bool parse_command_line(int argc, char** argv, const boost::program_options::options_description& options,
                        boost::program_options::variables_map& vm, const std::string& help_footer = "");

// The same for a command taking positional "key.path=value" config overrides after its options.
bool parse_command_line_with_overrides(int argc, char** argv,
                                       const boost::program_options::options_description& options,
                                       boost::program_options::variables_map& vm, const std::string& help_footer);
// Those overrides, then --output-dir DIR (when the command has it) as output.dir=DIR.
std::vector<std::string> config_overrides(const boost::program_options::variables_map& vm);

// Runs `body`: usage, configuration and input errors (InputError, ConfigError) print their message on stderr
// and exit 2, any other exception its message and exit 1.
int run_cli(const char* program, int argc, char** argv, int (*body)(int, char**));

}  // namespace vlreward
