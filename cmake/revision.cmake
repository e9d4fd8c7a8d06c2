# Writes OUT, `#define FI_GIT_REVISION "..."`, for common/build_info.cpp: REVISION when given
# (-DFLASHINTERP_REVISION=..., e.g. for a release tarball), else the commit SOURCE_DIR's git
# checkout is at (12 hex digits, "-dirty" when tracked files differ from it), else "unknown".
# Run at every build (src/CMakeLists.txt, target fi_revision); OUT is rewritten only when its text
# changes, so an unchanged revision recompiles nothing. Read-only for git (GIT_OPTIONAL_LOCKS=0).
set(rev unknown)
if(REVISION)
  set(rev "${REVISION}")
else()
  find_program(GIT_EXECUTABLE git)
  if(GIT_EXECUTABLE)
    execute_process(COMMAND ${CMAKE_COMMAND} -E env GIT_OPTIONAL_LOCKS=0
                            ${GIT_EXECUTABLE} -C ${SOURCE_DIR} rev-parse --show-toplevel --short=12 HEAD
                    OUTPUT_VARIABLE out RESULT_VARIABLE rc ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
    string(REPLACE "\n" ";" out "${out}")
    list(LENGTH out n)
    if(rc EQUAL 0 AND n EQUAL 2)
      list(GET out 0 top)
      list(GET out 1 head)
      file(REAL_PATH "${top}" top)
      file(REAL_PATH "${SOURCE_DIR}" src)
      if(top STREQUAL src)  # not the revision of some other repository the sources sit in
        execute_process(COMMAND ${CMAKE_COMMAND} -E env GIT_OPTIONAL_LOCKS=0
                                ${GIT_EXECUTABLE} -C ${SOURCE_DIR} status --porcelain --untracked-files=no
                        OUTPUT_VARIABLE changes RESULT_VARIABLE rc ERROR_QUIET)
        set(rev "${head}")
        if(NOT rc EQUAL 0 OR NOT changes STREQUAL "")
          string(APPEND rev "-dirty")
        endif()
      endif()
    endif()
  endif()
endif()
file(CONFIGURE OUTPUT "${OUT}" CONTENT "#define FI_GIT_REVISION \"${rev}\"\n" @ONLY)
