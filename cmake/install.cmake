# `cmake --install BUILD --prefix PREFIX` (e.g. /apps/flashinterp/0.1.0), and the copies the build
# makes for it. Nothing installed names the source or the build tree, and the prefix may be moved
# (tests/python/test_install.py installs, moves the prefix, hides both trees and runs from it):
#   bin/flashinterp                       RPATH: the directories of the external libraries it was
#                                         linked with (MPI, HDF5, CUDA from a site's modules)
#   share/flashinterp/tokenizer/          tokenizer.json for demo-model, found from bin/ at run time
#   share/flashinterp/slurm/              the batch scripts (flashinterp from $FLASHINTERP or PATH)
#   share/flashinterp/analysis/           the Python package's source (and its web/ files); show,
#                                         search, compare, report, export and serve run from there
#                                         as from a checkout
#   share/flashinterp/python/             the same package built as a wheel, to pip install into a
#                                         venv without a package index or a writable source tree
#   share/doc/flashinterp/                README.md and docs/
include(GNUInstallDirs)
set(FI_SHARE ${CMAKE_INSTALL_DATADIR}/flashinterp)
option(FLASHINTERP_INSTALL_TOKENIZER "Install the demo model's tokenizer.json (the set-up cache's Llama 3.1 tokenizer)" ON)

install(TARGETS flashinterp RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# The demo tokenizer: the binary looks in <its dir>/../share/flashinterp/tokenizer, so the build
# tree gets a copy at build/share/flashinterp beside build/src (common/build_info.h data_dir).
set(FI_TOKENIZER_SOURCE "${PROJECT_SOURCE_DIR}/.cache/tokenizer/tokenizer.json" CACHE FILEPATH
    "The tokenizer.json that demo-model uses by default (launch/setup-deps.sh fetches it)")
set(FI_BUILD_TOKENIZER ${PROJECT_BINARY_DIR}/share/flashinterp/tokenizer/tokenizer.json)
if(NOT EXISTS ${FI_TOKENIZER_SOURCE})
  message(STATUS "flashinterp: no ${FI_TOKENIZER_SOURCE} yet (launch/setup-deps.sh fetches it): "
                 "until it is there, demo-model needs --tokenizer or FLASHINTERP_TOKENIZER")
endif()
add_custom_target(fi_tokenizer ALL
  COMMAND ${CMAKE_COMMAND} -DSRC=${FI_TOKENIZER_SOURCE} -DDST=${FI_BUILD_TOKENIZER}
          -P ${PROJECT_SOURCE_DIR}/cmake/copy_if_present.cmake
  BYPRODUCTS ${FI_BUILD_TOKENIZER} VERBATIM)
if(FLASHINTERP_INSTALL_TOKENIZER)
  install(FILES ${FI_BUILD_TOKENIZER} DESTINATION ${FI_SHARE}/tokenizer OPTIONAL)
endif()

install(PROGRAMS slurm/decode.sbatch slurm/decode-multinode.sbatch slurm/forward.sbatch slurm/sweep.sbatch
        DESTINATION ${FI_SHARE}/slurm)
install(FILES slurm/README.md DESTINATION ${FI_SHARE}/slurm)

# The analysis package (analysis/pyproject.toml): its version is the project's.
file(STRINGS ${PROJECT_SOURCE_DIR}/analysis/pyproject.toml fi_py_version REGEX "^version = ")
set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/analysis/pyproject.toml)
if(NOT fi_py_version STREQUAL "version = \"${PROJECT_VERSION}\"")
  message(FATAL_ERROR "analysis/pyproject.toml says '${fi_py_version}' but the project is "
                      "${PROJECT_VERSION} (CMakeLists.txt): give both the same version")
endif()
set(FI_PY_TOP analysis/pyproject.toml analysis/flashinterp_map.py analysis/flashinterp_sweep.py)
set(FI_PY_PACKAGE)
foreach(m __init__ show search compare report concepts export pages serve)
  list(APPEND FI_PY_PACKAGE analysis/flashinterp_analysis/${m}.py)
endforeach()
set(FI_PY_WEB analysis/flashinterp_analysis/web/style.css analysis/flashinterp_analysis/web/app.js)
install(FILES ${FI_PY_TOP} DESTINATION ${FI_SHARE}/analysis)
install(PROGRAMS analysis/show analysis/search analysis/compare analysis/report analysis/export analysis/serve
        DESTINATION ${FI_SHARE}/analysis)
install(FILES ${FI_PY_PACKAGE} DESTINATION ${FI_SHARE}/analysis/flashinterp_analysis)
install(FILES ${FI_PY_WEB} DESTINATION ${FI_SHARE}/analysis/flashinterp_analysis/web)

# The wheel, built by pip from a copy of the package in the build tree (setuptools writes build/
# and *.egg-info beside the sources it builds), when the Python has pip, setuptools and wheel
# (Debian: python3-pip, python3-setuptools, python3-wheel; launch/setup-deps.sh).
find_program(FI_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(FI_PYTHON)
  execute_process(COMMAND ${FI_PYTHON} -c "import setuptools, wheel, pip" RESULT_VARIABLE fi_py_rc
                  OUTPUT_QUIET ERROR_QUIET)
endif()
if(FI_PYTHON AND fi_py_rc EQUAL 0)
  set(FI_WHEEL_DIR ${PROJECT_BINARY_DIR}/python)
  set(FI_WHEEL ${FI_WHEEL_DIR}/flashinterp_analysis-${PROJECT_VERSION}-py3-none-any.whl)
  list(TRANSFORM FI_PY_TOP PREPEND ${PROJECT_SOURCE_DIR}/ OUTPUT_VARIABLE fi_top)
  list(TRANSFORM FI_PY_PACKAGE PREPEND ${PROJECT_SOURCE_DIR}/ OUTPUT_VARIABLE fi_package)
  list(TRANSFORM FI_PY_WEB PREPEND ${PROJECT_SOURCE_DIR}/ OUTPUT_VARIABLE fi_web)
  add_custom_command(OUTPUT ${FI_WHEEL}
    COMMAND ${CMAKE_COMMAND} -E rm -rf ${FI_WHEEL_DIR}
    COMMAND ${CMAKE_COMMAND} -E make_directory ${FI_WHEEL_DIR}/src/flashinterp_analysis/web
    COMMAND ${CMAKE_COMMAND} -E copy ${fi_top} ${FI_WHEEL_DIR}/src
    COMMAND ${CMAKE_COMMAND} -E copy ${fi_package} ${FI_WHEEL_DIR}/src/flashinterp_analysis
    COMMAND ${CMAKE_COMMAND} -E copy ${fi_web} ${FI_WHEEL_DIR}/src/flashinterp_analysis/web
    COMMAND ${FI_PYTHON} -m pip wheel --quiet --no-build-isolation --no-deps --no-index --no-cache-dir
            --disable-pip-version-check --wheel-dir ${FI_WHEEL_DIR} ${FI_WHEEL_DIR}/src
    DEPENDS ${fi_top} ${fi_package} ${fi_web}
    COMMENT "Building the analysis wheel (pip wheel, ${FI_PYTHON})" VERBATIM)
  add_custom_target(fi_wheel ALL DEPENDS ${FI_WHEEL})
  install(FILES ${FI_WHEEL} DESTINATION ${FI_SHARE}/python)
else()
  message(STATUS "flashinterp: no analysis wheel (${FI_PYTHON} lacks pip, setuptools or wheel); "
                 "share/flashinterp/analysis is installed as source only")
endif()

install(FILES README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES docs/ARCHITECTURE.md docs/MAP_FORMAT.md docs/SWEEP_FORMAT.md DESTINATION ${CMAKE_INSTALL_DOCDIR}/docs)
