// The memory a rank may use, as the machine limits it: the address-space limit (ulimit -v), the
// cgroup's memory.max (Slurm, containers) and the node's available memory. Checked before a job
// allocates, so a limit gives one line saying what is needed instead of a hang or an abort.
#pragma once
#include <string>

namespace fi {

// Throws "<what> needs N MiB more <kind>; this rank has M" when this rank's address space
// (in use now + extra_virtual) would pass ulimit -v, or extra_resident would not fit in the
// cgroup's limit or the node's available memory.
void check_memory(const std::string& what, double extra_virtual, double extra_resident);

// One line on what this rank uses and may use, for an allocation that failed anyway.
std::string memory_report();

}  // namespace fi
