# package_test: installs the built library into a scratch prefix, then builds and runs
# tests/package_consumer against the installed copy twice: through find_package(stripe_billing)
# and through stripe_billing.pc. Stops at the first step that fails and names it.
#   cmake -DBUILD_DIR=<build tree> -DSOURCE_DIR=<source tree> -DWORK_DIR=<scratch dir>
#         -DCONFIG=<build type> -DGENERATOR=<generator> -DCXX_COMPILER=<c++>
#         -DPKG_CONFIG=<pkg-config> -P tests/package_test.cmake
cmake_minimum_required(VERSION 3.18)

foreach(var BUILD_DIR SOURCE_DIR WORK_DIR GENERATOR CXX_COMPILER PKG_CONFIG)
  if("${${var}}" STREQUAL "")
    message(FATAL_ERROR "package_test: -D${var}=... is required")
  endif()
endforeach()

set(prefix ${WORK_DIR}/prefix)
set(consumer_source ${SOURCE_DIR}/tests/package_consumer)
set(config_args)
if(CONFIG)
  set(config_args --config ${CONFIG})
endif()

# Runs a command; on failure stops the test with the step's name, the command and its output.
# The command's output is left in step_output.
function(step name)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE result OUTPUT_VARIABLE output
    ERROR_VARIABLE errors TIMEOUT 240)
  if(NOT result STREQUAL "0")
    list(JOIN ARGN " " command)
    message(FATAL_ERROR "package_test: ${name} failed (${result})\n  ${command}\n${output}${errors}")
  endif()
  message(STATUS "package_test: ${name}: ok")
  set(step_output "${output}" PARENT_SCOPE)
endfunction()

function(check name condition_text)
  if(NOT (${ARGN}))
    message(FATAL_ERROR "package_test: ${name} failed: ${condition_text}")
  endif()
  message(STATUS "package_test: ${name}: ok")
endfunction()

file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

# 1. Install.
step("cmake --install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix} ${config_args})
file(GLOB_RECURSE config_file ${prefix}/*/stripe_billingConfig.cmake)
file(GLOB_RECURSE pc_file ${prefix}/*/stripe_billing.pc)
check("installed files" "no stripe_billingConfig.cmake, stripe_billing.pc or config.h under ${prefix}"
  config_file AND pc_file AND EXISTS ${prefix}/include/stripe_billing/config.h)
get_filename_component(pc_dir ${pc_file} DIRECTORY)
get_filename_component(lib_dir ${pc_dir} DIRECTORY)

get_filename_component(cmake_package_dir ${config_file} DIRECTORY)
file(GLOB package_files ${cmake_package_dir}/*.cmake)
foreach(file ${package_files} ${pc_file})
  file(READ ${file} text)
  string(FIND "${text}" "${BUILD_DIR}" in_build_tree)
  string(FIND "${text}" "${SOURCE_DIR}" in_source_tree)
  check("no build or source tree path in ${file}" "it names ${BUILD_DIR} or ${SOURCE_DIR}"
    in_build_tree EQUAL -1 AND in_source_tree EQUAL -1)
endforeach()

# 2. find_package(stripe_billing) from the prefix, and nowhere else.
set(cmake_consumer ${WORK_DIR}/cmake-consumer)
step("configure the find_package consumer"
  ${CMAKE_COMMAND} -S ${consumer_source} -B ${cmake_consumer} -G ${GENERATOR}
  -DCMAKE_BUILD_TYPE=${CONFIG} -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
  -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
file(STRINGS ${cmake_consumer}/CMakeCache.txt found_dir REGEX "^stripe_billing_DIR:")
string(REGEX REPLACE "^[^=]*=" "" found_dir "${found_dir}")
check("find_package found the installed copy" "it found ${found_dir}, not ${cmake_package_dir}"
  found_dir STREQUAL cmake_package_dir)
step("build the find_package consumer"
  ${CMAKE_COMMAND} --build ${cmake_consumer} --parallel 2 ${config_args})
set(consumer ${cmake_consumer}/consumer)
if(CONFIG AND EXISTS ${cmake_consumer}/${CONFIG}/consumer)
  set(consumer ${cmake_consumer}/${CONFIG}/consumer)
endif()
step("run the find_package consumer" ${consumer})

# 3. The same main.cc through stripe_billing.pc.
step("pkg-config --cflags --libs --static stripe_billing"
  ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${pc_dir}
  ${PKG_CONFIG} --cflags --libs --static stripe_billing)
string(STRIP "${step_output}" pc_flags)
message(STATUS "package_test: stripe_billing.pc gives: ${pc_flags}")
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
set(pc_consumer ${WORK_DIR}/pkg-config-consumer)
step("compile and link main.cc with the pkg-config flags"
  ${CXX_COMPILER} -std=c++17 ${consumer_source}/main.cc ${pc_flags} -o ${pc_consumer})
step("run the pkg-config consumer" ${CMAKE_COMMAND} -E env LD_LIBRARY_PATH=${lib_dir} ${pc_consumer})
