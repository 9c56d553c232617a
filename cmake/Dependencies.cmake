# Every third-party library of the build, one version of each, checked at configure time.
#
# LibTorch comes from a `torch` Python package (scripts/setup installs the pinned wheel into .deps/torch; a GPU
# machine's own PyTorch works too: -DVLREWARD_TORCH_ROOT=<…/site-packages/torch>). That package bundles its own
# fmt and protobuf headers (include/fmt, include/google/protobuf), a protoc, and exports part of its private
# protobuf from libtorch_cpu.so. The rules that keep one version of each library in a process:
#   - fmt: Debian's headers and library. A build-tree include directory holding only `fmt` is put ahead (-I)
#     of torch's include directories (-isystem), so no file sees the wheel's copy.
#   - protobuf: Debian's protoc, headers (same -I trick) and static library. Linking it statically keeps the
#     project's protobuf symbols inside each executable, bound at link time, so the copy that libtorch_cpu.so
#     exports can neither shadow it nor be shadowed by it. libtorch's own link interface names a target
#     protobuf::libprotobuf; it is defined here as empty, since libtorch carries its protobuf inside.
#   - libtorch: every torch/c10 library must lie under VLREWARD_TORCH_ROOT (TorchConfig's find_library would
#     otherwise prefer a system LibTorch such as Debian's libtorch-dev).
#   - libstdc++ is put first among every binary's needed libraries: the wheel's libtorch.so exports copies of
#     some std::filesystem functions that must not interpose on the C++ runtime's own.
# Configure stops with a message naming the mix when any rule is broken.

find_package(Threads REQUIRED)
find_package(ZLIB REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(fmt REQUIRED)
# PCRE2 (8-bit) and utf8proc by header and library (no pkg-config needed, so unpacked packages work too).
function(vlreward_find_library target header library package)
  find_path(${target}_INCLUDE "${header}")
  find_library(${target}_LIBRARY "${library}")
  if(NOT ${target}_INCLUDE OR NOT ${target}_LIBRARY)
    message(FATAL_ERROR "${header} / lib${library} not found (Debian: ${package}; run scripts/setup)")
  endif()
  add_library(${target} INTERFACE)
  target_include_directories(${target} SYSTEM INTERFACE "${${target}_INCLUDE}")
  target_link_libraries(${target} INTERFACE "${${target}_LIBRARY}")
endfunction()
vlreward_find_library(vlreward_pcre2 pcre2.h pcre2-8 libpcre2-dev)
vlreward_find_library(vlreward_utf8proc utf8proc.h utf8proc libutf8proc-dev)
find_package(JPEG REQUIRED)
find_package(PNG REQUIRED)
find_package(yaml-cpp REQUIRED)
find_package(Boost 1.74 REQUIRED COMPONENTS program_options)

set(VLREWARD_FIRST_INCLUDE "${CMAKE_BINARY_DIR}/include-first")

# ---- fmt -----------------------------------------------------------------------------------------------------
get_target_property(_fmt_includes fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
set(_fmt_header "")
foreach(_dir IN LISTS _fmt_includes)
  if(EXISTS "${_dir}/fmt/core.h")
    set(_fmt_header "${_dir}/fmt")
    break()
  endif()
endforeach()
if(NOT _fmt_header)
  # Debian's fmt target leaves its include directory implicit (/usr/include).
  find_path(_fmt_root fmt/core.h NO_CACHE)
  set(_fmt_header "${_fmt_root}/fmt")
endif()
file(MAKE_DIRECTORY "${VLREWARD_FIRST_INCLUDE}/fmt")
file(CREATE_LINK "${_fmt_header}" "${VLREWARD_FIRST_INCLUDE}/fmt/fmt" SYMBOLIC)
add_library(vlreward_fmt INTERFACE)
target_include_directories(vlreward_fmt BEFORE INTERFACE "$<BUILD_INTERFACE:${VLREWARD_FIRST_INCLUDE}/fmt>"
                           "$<INSTALL_INTERFACE:include/vlreward/first/fmt>")
set(VLREWARD_FMT_HEADERS "${_fmt_header}")  # the install tree links include/vlreward/first/fmt/fmt here too
target_link_libraries(vlreward_fmt INTERFACE fmt::fmt)

# ---- protobuf ------------------------------------------------------------------------------------------------
find_program(VLREWARD_PROTOC protoc DOC "protoc of the protobuf the project links (not the torch wheel's)")
find_path(VLREWARD_PROTOBUF_INCLUDE google/protobuf/message.h DOC "protobuf headers matching VLREWARD_PROTOC")
find_library(VLREWARD_PROTOBUF_STATIC NAMES libprotobuf.a DOC "static protobuf library matching VLREWARD_PROTOC")
foreach(_var VLREWARD_PROTOC VLREWARD_PROTOBUF_INCLUDE VLREWARD_PROTOBUF_STATIC)
  if(NOT ${_var})
    message(FATAL_ERROR "protobuf: ${_var} not found (Debian: protobuf-compiler libprotobuf-dev; run scripts/setup)")
  endif()
endforeach()
execute_process(COMMAND "${VLREWARD_PROTOC}" --version OUTPUT_VARIABLE _protoc_out OUTPUT_STRIP_TRAILING_WHITESPACE)
string(REGEX MATCH "[0-9]+\\.[0-9]+\\.[0-9]+" VLREWARD_PROTOC_VERSION "${_protoc_out}")
file(STRINGS "${VLREWARD_PROTOBUF_INCLUDE}/google/protobuf/stubs/common.h" _pb_line
     REGEX "^#define GOOGLE_PROTOBUF_VERSION [0-9]+")
string(REGEX MATCH "[0-9]+$" _pb_number "${_pb_line}")
math(EXPR _pb_major "${_pb_number} / 1000000")
math(EXPR _pb_minor "(${_pb_number} / 1000) % 1000")
math(EXPR _pb_patch "${_pb_number} % 1000")
set(VLREWARD_PROTOBUF_VERSION "${_pb_major}.${_pb_minor}.${_pb_patch}")
if(NOT VLREWARD_PROTOC_VERSION VERSION_EQUAL VLREWARD_PROTOBUF_VERSION)
  message(FATAL_ERROR "protobuf mix: ${VLREWARD_PROTOC} is ${VLREWARD_PROTOC_VERSION} but the headers in "
                      "${VLREWARD_PROTOBUF_INCLUDE} are ${VLREWARD_PROTOBUF_VERSION}")
endif()
file(MAKE_DIRECTORY "${VLREWARD_FIRST_INCLUDE}/protobuf/google")
file(CREATE_LINK "${VLREWARD_PROTOBUF_INCLUDE}/google/protobuf" "${VLREWARD_FIRST_INCLUDE}/protobuf/google/protobuf"
     SYMBOLIC)
add_library(vlreward_protobuf INTERFACE)
target_include_directories(vlreward_protobuf BEFORE INTERFACE
                           "$<BUILD_INTERFACE:${VLREWARD_FIRST_INCLUDE}/protobuf>")
target_link_libraries(vlreward_protobuf INTERFACE "${VLREWARD_PROTOBUF_STATIC}" ZLIB::ZLIB Threads::Threads)

# Generates C++ for one .proto with VLREWARD_PROTOC; sets <var>_SRCS and <var>_HDRS (in the current binary dir).
function(vlreward_protobuf_generate var proto)
  get_filename_component(_abs "${proto}" ABSOLUTE)
  get_filename_component(_dir "${_abs}" DIRECTORY)
  get_filename_component(_name "${_abs}" NAME_WE)
  set(_cc "${CMAKE_CURRENT_BINARY_DIR}/${_name}.pb.cc")
  set(_h "${CMAKE_CURRENT_BINARY_DIR}/${_name}.pb.h")
  add_custom_command(OUTPUT "${_cc}" "${_h}"
    COMMAND "${VLREWARD_PROTOC}" --cpp_out "${CMAKE_CURRENT_BINARY_DIR}" -I "${_dir}" "${_abs}"
    DEPENDS "${_abs}" "${VLREWARD_PROTOC}"
    COMMENT "protoc ${proto}" VERBATIM)
  set_source_files_properties("${_cc}" PROPERTIES COMPILE_OPTIONS "-w" SKIP_PRECOMPILE_HEADERS ON)
  set(${var}_SRCS "${_cc}" PARENT_SCOPE)
  set(${var}_HDRS "${_h}" PARENT_SCOPE)
endfunction()

# ---- LibTorch ------------------------------------------------------------------------------------------------
set(VLREWARD_TORCH_ROOT "" CACHE PATH "The torch package directory (…/site-packages/torch) to build against")
if(NOT VLREWARD_TORCH_ROOT)
  file(GLOB _torch_roots "${PROJECT_SOURCE_DIR}/.deps/torch/lib/python3*/site-packages/torch")
  list(LENGTH _torch_roots _count)
  if(NOT _count EQUAL 1)
    message(FATAL_ERROR "LibTorch: no torch package in ${PROJECT_SOURCE_DIR}/.deps/torch (run scripts/setup), or "
            "point the build at one: -DVLREWARD_TORCH_ROOT=$(python3 -c 'import os, torch; "
            "print(os.path.dirname(torch.__file__))')")
  endif()
  set(VLREWARD_TORCH_ROOT "${_torch_roots}" CACHE PATH "" FORCE)
endif()
if(NOT EXISTS "${VLREWARD_TORCH_ROOT}/share/cmake/Torch/TorchConfig.cmake")
  message(FATAL_ERROR "LibTorch: ${VLREWARD_TORCH_ROOT} is not a torch package (no share/cmake/Torch/TorchConfig.cmake)")
endif()

# libtorch's interface names protobuf::libprotobuf; it needs nothing from it (see the top of this file).
if(NOT TARGET protobuf::libprotobuf)
  add_library(protobuf::libprotobuf INTERFACE IMPORTED)
endif()
# TorchConfig finds these with find_library, which searches system directories before the package's own.
set(TORCH_LIBRARY "${VLREWARD_TORCH_ROOT}/lib/libtorch.so" CACHE FILEPATH "" FORCE)
set(c10_LIBRARY "${VLREWARD_TORCH_ROOT}/lib/libc10.so" CACHE FILEPATH "" FORCE)
if(EXISTS "${VLREWARD_TORCH_ROOT}/lib/libc10_cuda.so")
  set(C10_CUDA_LIBRARY "${VLREWARD_TORCH_ROOT}/lib/libc10_cuda.so" CACHE FILEPATH "" FORCE)
endif()
set(Torch_DIR "${VLREWARD_TORCH_ROOT}/share/cmake/Torch" CACHE PATH "" FORCE)
find_package(Torch 2.0 REQUIRED CONFIG)
message(STATUS "LibTorch ${Torch_VERSION} from ${VLREWARD_TORCH_ROOT}")

# Every torch/c10 shared library the build links must come from VLREWARD_TORCH_ROOT.
set(_pending ${TORCH_LIBRARIES})
set(_seen "")
set(_torch_files "")
while(_pending)
  list(POP_FRONT _pending _item)
  if(_item IN_LIST _seen)
    continue()
  endif()
  list(APPEND _seen "${_item}")
  if(TARGET "${_item}")
    foreach(_prop IMPORTED_LOCATION IMPORTED_LOCATION_RELEASE)
      get_target_property(_loc "${_item}" ${_prop})
      if(_loc)
        list(APPEND _torch_files "${_loc}")
      endif()
    endforeach()
    get_target_property(_deps "${_item}" INTERFACE_LINK_LIBRARIES)
    if(_deps)
      list(APPEND _pending ${_deps})
    endif()
  elseif(_item MATCHES "\\.so")
    list(APPEND _torch_files "${_item}")
  endif()
endwhile()
foreach(_file IN LISTS _torch_files)
  get_filename_component(_base "${_file}" NAME)
  if(_base MATCHES "^lib(torch|c10)" AND NOT _file MATCHES "^${VLREWARD_TORCH_ROOT}/")
    message(FATAL_ERROR "LibTorch mix: ${_file} is linked but lies outside VLREWARD_TORCH_ROOT "
                        "(${VLREWARD_TORCH_ROOT}); remove the other LibTorch or fix the prefix path")
  endif()
endforeach()
set(VLREWARD_CUDA OFF)
if(TARGET torch_cuda)
  set(VLREWARD_CUDA ON)
endif()
message(STATUS "LibTorch CUDA: ${VLREWARD_CUDA}")

# ---- one version each, as the compiler sees them --------------------------------------------------------------
# The wheel's fmt and protobuf headers must stay hidden behind Debian's in every translation unit that sees both.
include(CheckCXXSourceCompiles)
get_target_property(_torch_includes torch INTERFACE_INCLUDE_DIRECTORIES)
set(_isystem "")
foreach(_dir IN LISTS _torch_includes)
  string(APPEND _isystem " -isystem ${_dir}")
endforeach()
set(CMAKE_REQUIRED_QUIET ON)
set(CMAKE_REQUIRED_FLAGS "-I${VLREWARD_FIRST_INCLUDE}/fmt -I${VLREWARD_FIRST_INCLUDE}/protobuf ${_isystem}")
check_cxx_source_compiles("
#include <fmt/format.h>
#include <google/protobuf/stubs/common.h>
static_assert(FMT_VERSION / 10000 == ${fmt_VERSION_MAJOR}, \"fmt headers are not fmt ${fmt_VERSION}\");
static_assert(GOOGLE_PROTOBUF_VERSION == ${_pb_number}, \"protobuf headers are not ${VLREWARD_PROTOBUF_VERSION}\");
int main() { return 0; }" VLREWARD_ONE_FMT_AND_PROTOBUF)
unset(CMAKE_REQUIRED_FLAGS)
if(NOT VLREWARD_ONE_FMT_AND_PROTOBUF)
  unset(VLREWARD_ONE_FMT_AND_PROTOBUF CACHE)
  message(FATAL_ERROR "fmt/protobuf mix: with torch's include directories, <fmt/format.h> is not fmt "
                      "${fmt_VERSION} or <google/protobuf/…> is not protobuf ${VLREWARD_PROTOBUF_VERSION}")
endif()
message(STATUS "fmt ${fmt_VERSION}, protobuf ${VLREWARD_PROTOBUF_VERSION} (${VLREWARD_PROTOBUF_STATIC})")

# libjpeg: jpeglib.h includes a jconfig.h from a multiarch directory, which can belong to another libjpeg than the
# one linked (e.g. unpacked packages beside the system's); the library then refuses every decoder it is handed.
set(_jpeg_library "${JPEG_LIBRARY_RELEASE}")
if(NOT _jpeg_library)
  set(_jpeg_library "${JPEG_LIBRARY}")
endif()
get_filename_component(_jpeg_real "${_jpeg_library}" REALPATH)
if(_jpeg_real MATCHES "libjpeg\\.so\\.([0-9]+)")
  set(_jpeg_abi "${CMAKE_MATCH_1}")
  set(CMAKE_REQUIRED_INCLUDES ${JPEG_INCLUDE_DIRS})
  check_cxx_source_compiles("
#include <cstddef>
#include <cstdio>
#include <jpeglib.h>
static_assert(JPEG_LIB_VERSION == ${_jpeg_abi}, \"jpeglib.h does not match the library\");
int main() { return 0; }" VLREWARD_JPEG_HEADERS_MATCH_${_jpeg_abi})
  unset(CMAKE_REQUIRED_INCLUDES)
  if(NOT VLREWARD_JPEG_HEADERS_MATCH_${_jpeg_abi})
    unset(VLREWARD_JPEG_HEADERS_MATCH_${_jpeg_abi} CACHE)
    message(FATAL_ERROR "libjpeg mix: ${_jpeg_real} is ABI ${_jpeg_abi}, but the jpeglib.h/jconfig.h the compiler "
                        "sees (from ${JPEG_INCLUDE_DIRS} and the system directories) say otherwise")
  endif()
endif()

# libstdc++ first among every binary's needed libraries (see the top of this file).
add_link_options("LINKER:--push-state,--no-as-needed" "-lstdc++" "LINKER:--pop-state")
