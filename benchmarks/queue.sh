# Sourced by the benchmark queues (run_retrieval.sh, run_gcl_mo.sh, run_ranking_zoo2.sh).
# queue_run OUT_DIR COMMAND...: run `COMMAND... --out-dir OUT_DIR`, logging to OUT_DIR.log; skip a finished run
# (OUT_DIR/metrics.json) or one another queue beside this one is running (OUT_DIR.running: remove a stale one
# after a kill), so a queue resumes and two queues share the work.
queue_run() {
  local out=$1; shift
  [ -f "$out/metrics.json" ] && return 0
  mkdir -p "$(dirname "$out")"
  [ -e "$out.running" ] && return 0
  touch "$out.running"
  echo "$(date +%T) $out"
  "$@" --out-dir "$out" > "$out.log" 2>&1 || echo "FAILED $out (see $out.log)"
  rm -f "$out.running"
}
