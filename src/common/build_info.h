// What this binary is and where it is: its version, the git revision it was built from and the
// backends compiled in (`flashinterp --version`, the map's root attribute `build`), and its data
// directory beside it (the demo tokenizer), found from /proc/self/exe so that an installed or
// moved binary needs no path baked in at build time.
#pragma once
#include <string>

namespace fi {

// The lines of `flashinterp --version`: "flashinterp 0.1.0", "git 0bfd3e6a1b2c" (with "-dirty"
// when tracked files differed from that commit, "unknown" when not built from a git checkout),
// "backends: cpu (OpenBLAS), cuda (archs 80 90, CUDA 12.4), hdf5 1.10.8 parallel (MPI-IO)".
std::string version_text();
// The same lines joined by "; ": what a map records as `build`.
std::string build_line();

// The directory of the running executable (/proc/self/exe, links resolved); "" when unknown.
std::string executable_dir();
// <executable_dir>/../share/flashinterp: the installed data (cmake --install), and in a build
// tree the copy the build makes beside src/ (build/share/flashinterp). "" when unknown.
std::string data_dir();

}  // namespace fi
