#!/usr/bin/env bash
# Installs this build into a fresh prefix, builds examples/consumer against the install tree alone
# (find_package(vlreward), CMAKE_PREFIX_PATH) and runs both of its programs and an installed command line.
# Usage: install_consumer.sh BUILD_DIR SOURCE_DIR WORK_DIR [extra cmake arguments for the consumer...]
set -euo pipefail
build_dir=$1 source_dir=$2 work_dir=$3
shift 3
rm -rf "$work_dir"
mkdir -p "$work_dir"
prefix=$work_dir/prefix
cmake --install "$build_dir" --prefix "$prefix" >"$work_dir/install.log" 2>&1 ||
  { cat "$work_dir/install.log"; exit 1; }
# The consumer sees the install tree only: no path into the source or build tree is needed.
cmake -S "$source_dir/examples/consumer" -B "$work_dir/consumer" -DCMAKE_PREFIX_PATH="$prefix" "$@" \
  >"$work_dir/configure.log" 2>&1 || { cat "$work_dir/configure.log"; exit 1; }
cmake --build "$work_dir/consumer" -j2
"$work_dir/consumer/score_with_plugin" "$prefix/lib/vlreward/plugins/libkeyword_reward.so"
"$work_dir/consumer/score_with_rules"
# The installed command lines start (they find LibTorch where the build did).
"$prefix/bin/reward-score" --help >/dev/null
# The torch-free interface stays torch-free for consumers.
if ldd "$work_dir/consumer/score_with_plugin" | grep -q torch; then
  echo "score_with_plugin links LibTorch; vlreward::plugin must not" >&2
  exit 1
fi
