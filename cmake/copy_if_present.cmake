# cmake -DSRC=FILE -DDST=FILE -P copy_if_present.cmake: copies SRC to DST when SRC exists and DST
# differs (the build's copy of the demo tokenizer, which launch/setup-deps.sh may fetch only after
# cmake has run); nothing when SRC is absent.
if(EXISTS "${SRC}")
  get_filename_component(dir "${DST}" DIRECTORY)
  file(MAKE_DIRECTORY "${dir}")
  file(COPY_FILE "${SRC}" "${DST}" ONLY_IF_DIFFERENT)
endif()
