# What the CPU benchmarks share (sourced by cpu_bench.sh and moe_bench.sh): the machine line and
# best-of-REPS wall times. Expects REPS set; fills T[NAME] with seconds.
declare -A T
machine_line() {  # cores, CPU model and load average, as every figure is quoted with them
  echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); load: $(cut -d' ' -f1-3 /proc/loadavg)"
}
timed_once() {  # timed_once NAME CMD...: runs CMD once; T[NAME] keeps the best wall time so far
  local name="$1"; shift
  local t0 t1 dt
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  dt=$(echo "$t1 - $t0" | bc -l)
  if [ -z "${T[$name]:-}" ] || [ "$(echo "$dt < ${T[$name]}" | bc -l)" = 1 ]; then T[$name]=$dt; fi
  LAST=$dt
}
timed() {  # timed NAME CMD...: runs CMD REPS times, keeps the best wall time in T[NAME]
  local i
  for ((i = 0; i < REPS; ++i)); do timed_once "$@"; done
  printf '%-28s wall %6.2f s (best of %d)\n' "$1" "${T[$1]}" "$REPS"
}
ratio() {  # ratio A B: T[A] / T[B], two decimals
  printf '%.2f' "$(echo "${T[$1]} / ${T[$2]}" | bc -l)"
}
