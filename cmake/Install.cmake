# The install tree (cmake --install): headers under include/vlreward (included as "plugin/reward.h", ...), the
# libraries, the command lines, the example plugin, and lib/cmake/vlreward/vlrewardConfig.cmake, so a project
# builds against it with find_package(vlreward) and links vlreward::plugin (torch-free: the reward interface, the
# registry, shared-library and remote backends), vlreward::reward (the backends, reward training and evaluation;
# LibTorch) or vlreward::mpo (MPO training and A/B; LibTorch). examples/consumer is such a project.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)


set(_headers_dest "${CMAKE_INSTALL_INCLUDEDIR}/vlreward")
foreach(_dir plugin adapters reward mpo)
  install(DIRECTORY "${PROJECT_SOURCE_DIR}/${_dir}/" DESTINATION "${_headers_dest}/${_dir}"
          FILES_MATCHING PATTERN "*.h")
endforeach()
# The same one fmt for consumers as for the build (the torch wheel's include directory carries another).
install(CODE "
  file(MAKE_DIRECTORY \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${_headers_dest}/first/fmt\")
  file(CREATE_LINK \"${VLREWARD_FMT_HEADERS}\" \"\$ENV{DESTDIR}\${CMAKE_INSTALL_PREFIX}/${_headers_dest}/first/fmt/fmt\"
       SYMBOLIC)")

set_target_properties(vlreward_plugin PROPERTIES EXPORT_NAME plugin)
set_target_properties(vlreward_reward PROPERTIES EXPORT_NAME reward)
set_target_properties(vlreward_mpo PROPERTIES EXPORT_NAME mpo)
install(TARGETS vlreward_plugin vlreward_wire vlreward_fmt vlreward_protobuf vlreward_formats vlreward_adapters
                vlreward_reward vlreward_mpo vlreward_pcre2 vlreward_utf8proc
        EXPORT vlrewardTargets
        ARCHIVE DESTINATION "${CMAKE_INSTALL_LIBDIR}"
        LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}"
        INCLUDES DESTINATION "${_headers_dest}")
# Installed command lines find LibTorch (the wheel's libraries) where the build did: the link path outside this
# tree, plus the wheel's library directory, which CMake leaves out of it when the wheel sits inside the source tree
# (.deps/torch).
set(_installed_programs reward-score reward-eval reward-serve reward-train mpo-train ab-compare shapes-task)
set_target_properties(${_installed_programs} PROPERTIES INSTALL_RPATH_USE_LINK_PATH ON
                      INSTALL_RPATH "${TORCH_INSTALL_PREFIX}/lib")
install(TARGETS ${_installed_programs}
        RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")
install(TARGETS keyword_reward LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}/vlreward/plugins")

set(_config_dest "${CMAKE_INSTALL_LIBDIR}/cmake/vlreward")
install(EXPORT vlrewardTargets NAMESPACE vlreward:: DESTINATION "${_config_dest}")
set(VLREWARD_INSTALL_TORCH_DIR "${Torch_DIR}")
configure_package_config_file("${PROJECT_SOURCE_DIR}/cmake/vlrewardConfig.cmake.in"
                              "${PROJECT_BINARY_DIR}/vlrewardConfig.cmake" INSTALL_DESTINATION "${_config_dest}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/vlrewardConfigVersion.cmake"
                                 COMPATIBILITY SameMinorVersion)
install(FILES "${PROJECT_BINARY_DIR}/vlrewardConfig.cmake" "${PROJECT_BINARY_DIR}/vlrewardConfigVersion.cmake"
        DESTINATION "${_config_dest}")
