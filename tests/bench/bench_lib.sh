# What the CPU benchmarks share (sourced by cpu_bench.sh and moe_bench.sh): the machine line and
# best-of-REPS wall times. Expects REPS set; fills T[NAME] (wall) and C[NAME] (CPU) with seconds.
declare -A T C
machine_line() {  # cores, CPU model and load average, as every figure is quoted with them
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); load: $(cut -d' ' -f1-3 /proc/loadavg)"
}
timed_once() {  # timed_once NAME CMD...: runs CMD once; T[NAME] keeps the best wall time so far,
  # C[NAME] the least CPU time (user + sys of CMD and its children: steadier than the wall time
  # where other jobs share the cores). LAST, LAST_CPU: this run's.
  local name="$1"; shift
  local tf w u s rc=0 TIMEFORMAT='%3R %3U %3S'
  tf=$(mktemp)
  { time "$@" 2>&3; } 3>&2 2>"$tf" || rc=$?
  read -r w u s < "$tf"
  rm -f "$tf"
  if [ $rc != 0 ]; then echo "bench: $name failed (exit $rc): $*" >&2; return $rc; fi
  LAST=$w LAST_CPU=$(echo "$u + $s" | bc -l)
  if [ -z "${T[$name]:-}" ] || [ "$(echo "$LAST < ${T[$name]}" | bc -l)" = 1 ]; then T[$name]=$LAST; fi
  if [ -z "${C[$name]:-}" ] || [ "$(echo "$LAST_CPU < ${C[$name]}" | bc -l)" = 1 ]; then C[$name]=$LAST_CPU; fi
}
timed() {  # timed NAME CMD...: runs CMD REPS times, keeps the best wall time in T[NAME]
  local i
  for ((i = 0; i < REPS; ++i)); do timed_once "$@"; done
  printf '%-28s wall %6.2f s (best of %d)\n' "$1" "${T[$1]}" "$REPS"
}
ratio() {  # ratio A B: T[A] / T[B], two decimals
  printf '%.2f' "$(echo "${T[$1]} / ${T[$2]}" | bc -l)"
}
cpu_ratio() {  # cpu_ratio A B: C[A] / C[B], two decimals
  printf '%.2f' "$(echo "${C[$1]} / ${C[$2]}" | bc -l)"
}
