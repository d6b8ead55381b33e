#!/usr/bin/env bash
# cluster_demo.sh: a nas-search on a 2-node Ray cluster that loses a node mid-search (docs/cluster.md §5).
#
# What it shows, all on this one machine:
#   1. a 2-node Ray cluster on loopback: a head node and a second ("worker") node, 1 CPU each;
#   2. `nas-search` driving it (scripts/cluster_demo_space.yaml: digits, a few seconds per trial, 2 at a time);
#   3. once the first trial has finished (KILL_AFTER) and while a trial runs on the worker node, that node is
#      killed abruptly: SIGKILL to its raylet and to every process of the node (the trial's worker, agents,
#      log monitor) at once, as if the machine had died;
#   4. Ray Tune re-runs the trial that was on the dead node on the head node (search.max_retries, Tune's
#      FailureConfig) and the search finishes there alone;
#   5. the leaderboard is printed and checked: every trial is there and `ok`, the retried one included
#      (exit status 1 otherwise). Takes about 1.5 minutes on a 2-core machine (8 trials of 4-10 s; the first
#      one waits for worker start-up), about 2 minutes with TRIALS=10.
#
# Run it from anywhere (it uses the repository's .venv, or VENV=/path/to/venv):
#   bash scripts/cluster_demo.sh
#   PORT=6390 TRIALS=10 KEEP=1 bash scripts/cluster_demo.sh
# Environment:
#   PORT    GCS port of the head node (default: a free port; the other ports are always free ones)
#   TRIALS  trials of the search (default 8)
#   KEEP    1 keeps the demo folder (run directory + Ray logs); it is also kept when the demo fails
#   SPACE   search YAML (default scripts/cluster_demo_space.yaml)
#   KILL_AFTER  finished trials before the node is killed (default 1; 0 = as soon as a trial runs on it)
#
# Isolation and clean-up. The cluster lives in a private folder (/tmp/coatnas-cluster.XXXXXX: Ray temp dirs
# of both nodes, the run directory, the driver's log), uses free ports only (GCS, dashboard, agents) and
# RAY_AUTH_MODE=disabled (loopback only; see below). On exit (success, failure or Ctrl-C) a trap kills
# exactly this demo's processes: the driver, and every process whose command line names the private folder
# (GCS, raylets, monitors) with its children (agents, workers). It does NOT run `ray stop --force`: that
# stops every Ray process of the user on the machine, including other clusters and test runs, and has no
# option to limit it to one cluster. Run `ray stop --force` yourself if anything of the demo is left over.
#
# Ray 2.60 quirks this script handles:
#   - Token authentication: when ~/.ray/auth_token exists and RAY_AUTH_MODE is unset, `ray start --head`
#     turns token auth on but `ray start --address` (a joining node) does not, and fails with
#     "InvalidAuthToken: Authentication token is missing or incorrect". Every process here (both nodes and
#     the driver) therefore runs with RAY_AUTH_MODE=disabled; on a real cluster copy the token instead.
#     A driver given an explicit address (`nas-search --address HOST:PORT`) does not enable token auth on
#     its own either (only `--address auto` does): it fails after ~20 s with "Could not join a Ray cluster".
#   - `--node-ip-address=127.0.0.1` is replaced by the machine's routable IP (Ray resolves "localhost" to a
#     reachable address); the GCS listens on all interfaces, so 127.0.0.1:PORT still works for joining.
#   - Two nodes on one host would share the default dashboard-agent port (52365) and the head's dashboard
#     port (8265, no retries): each gets its own free port. Separate --temp-dir per node keeps their session
#     folders apart, which is also how the worker node's raylet is found (its socket path names the folder).
#   - Unix socket paths must stay under 108 bytes, hence the short private folder under /tmp.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${VENV:-$ROOT/.venv}
[[ -x $VENV/bin/nas-search && -x $VENV/bin/ray ]] || {
  echo "cluster_demo: no nas-search/ray in $VENV/bin (set VENV=/path/to/venv)" >&2; exit 2; }
PATH=$VENV/bin:$PATH
PY=$VENV/bin/python
TRIALS=${TRIALS:-8}
KEEP=${KEEP:-0}
SPACE=${SPACE:-$ROOT/scripts/cluster_demo_space.yaml}
FIRST_TRIAL_TIMEOUT=${FIRST_TRIAL_TIMEOUT:-150}   # s from the driver's start to its first finished trial
SEARCH_TIMEOUT=${SEARCH_TIMEOUT:-300}             # s from the node kill to the driver's exit
KILL_AFTER=${KILL_AFTER:-1}                       # finished trials before the kill (0: as soon as one runs)
[[ $TRIALS =~ ^[0-9]+$ && $TRIALS -ge 2 ]] || { echo "cluster_demo: TRIALS must be an integer >= 2" >&2; exit 2; }
[[ $KILL_AFTER =~ ^[0-9]+$ && $KILL_AFTER -lt $TRIALS ]] || {
  echo "cluster_demo: KILL_AFTER must be an integer from 0 to TRIALS-1" >&2; exit 2; }

export RAY_AUTH_MODE=disabled          # see the header: needed for a node to join; loopback only
export RAY_USAGE_STATS_ENABLED=0
export PYTHONUNBUFFERED=1

WORK=$(mktemp -d /tmp/coatnas-cluster.XXXXXX)
RUN=$WORK/run
HEAD_TMP=$WORK/head
WORKER_TMP=$WORK/worker
DRIVER_LOG=$WORK/driver.log
DRIVER_PID=""
TAIL_PID=""
OK=0
T0=$SECONDS

say() { printf '\n=== [%3ds] %s\n' $((SECONDS - T0)) "$*"; }

# pids of processes whose command line contains the fixed string $1 (never this shell's helpers)
pids_matching() {
  ps -eo pid=,args= | S="$1" awk 'index($0, ENVIRON["S"]) { print $1 }' | grep -vx -e "$$" -e "${BASHPID:-$$}" || true
}

# $@ and all their descendants
with_descendants() {
  ps -eo pid=,ppid= | "$PY" -c '
import sys
roots = set(sys.argv[1:])
kids = {}
for line in sys.stdin:
    pid, ppid = line.split()
    kids.setdefault(ppid, []).append(pid)
out, todo = [], list(roots)
while todo:
    p = todo.pop()
    if p in out:
        continue
    out.append(p)
    todo += kids.get(p, [])
print(" ".join(out))' "$@"
}

# those of the pids $@ that still run (zombies, killed but not yet reaped, do not count)
alive_of() {
  [[ $# -gt 0 ]] || return 0
  ps -o pid=,stat= -p "$(tr ' ' ',' <<<"$*")" 2>/dev/null | awk '$2 !~ /^Z/ { printf " %s", $1 }' || true
}

free_ports() {  # N free TCP ports (bound on all interfaces, as Ray binds them)
  "$PY" -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

port_free() {
  "$PY" -c '
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("", int(sys.argv[1])))
except OSError:
    sys.exit(1)' "$1"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  [[ -n $TAIL_PID ]] && kill "$TAIL_PID" 2>/dev/null
  if [[ -n $DRIVER_PID ]] && kill -0 "$DRIVER_PID" 2>/dev/null; then
    echo "cluster_demo: stopping the driver (pid $DRIVER_PID)"
    kill -INT "$DRIVER_PID" 2>/dev/null
    for _ in $(seq 20); do [[ -n $(alive_of "$DRIVER_PID") ]] || break; sleep 0.5; done
    kill -KILL "$DRIVER_PID" 2>/dev/null
  fi
  # this demo's cluster only: processes naming $WORK (GCS, raylets, monitors, dashboard) and their children
  # (agents, workers). SIGKILL, as `ray stop --force` does: on SIGTERM a raylet drains for ~10 s and the GCS
  # does not exit at all.
  local pids alive
  pids=$(with_descendants $(pids_matching "$WORK/"))
  if [[ -n ${pids// /} ]]; then
    echo "cluster_demo: stopping this demo's Ray cluster ($(wc -w <<<"$pids") processes, SIGKILL)"
    kill -KILL $pids 2>/dev/null
    for _ in $(seq 25); do
      alive=$(alive_of $pids)
      [[ -z $alive ]] && break
      sleep 0.2
    done
    [[ -z $alive ]] || echo "cluster_demo: still running:$alive (ray stop --force stops them, and all other Ray)"
  fi
  echo
  if [[ $OK == 1 && $KEEP != 1 ]]; then
    rm -rf "$WORK"
    echo "cluster_demo: PASSED in $((SECONDS - T0)) s; the run directory $RUN was removed (KEEP=1 keeps it)."
  elif [[ $OK == 1 ]]; then
    echo "cluster_demo: PASSED in $((SECONDS - T0)) s. Run directory: $RUN (Ray logs: $HEAD_TMP, $WORKER_TMP)"
  else
    [[ $rc == 0 ]] && rc=1
    echo "cluster_demo: $([[ $rc == 130 ]] && echo INTERRUPTED || echo FAILED) (status $rc) after $((SECONDS - T0)) s. Kept for diagnosis: run directory $RUN" \
         "(search.log, tune/session-*/), driver output $DRIVER_LOG, Ray logs $HEAD_TMP/session_*/logs" \
         "and $WORKER_TMP/session_*/logs"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "cluster_demo: $*" >&2; exit 1; }

# ------------------------------------------------------------------------------------ 1. the cluster
read -r AUTO_PORT DASH_PORT AGENT_PORT_HEAD AGENT_PORT_WORKER <<<"$(free_ports 4)"
PORT=${PORT:-$AUTO_PORT}
port_free "$PORT" || fail "port $PORT is in use; choose another PORT= or leave it out (a free one is picked)"
ADDR=127.0.0.1:$PORT

say "starting the head node on $ADDR (1 CPU; Ray files in $HEAD_TMP)"
ray start --head --node-ip-address=127.0.0.1 --port="$PORT" --num-cpus=1 --disable-usage-stats \
  --temp-dir="$HEAD_TMP" --include-dashboard=false --dashboard-port="$DASH_PORT" \
  --dashboard-agent-listen-port="$AGENT_PORT_HEAD" >"$WORK/head-start.log" 2>&1 \
  || { cat "$WORK/head-start.log"; fail "ray start --head failed"; }

say "starting the second node, joining $ADDR (1 CPU; Ray files in $WORKER_TMP)"
ray start --address="$ADDR" --node-ip-address=127.0.0.1 --num-cpus=1 --temp-dir="$WORKER_TMP" \
  --dashboard-agent-listen-port="$AGENT_PORT_WORKER" >"$WORK/worker-start.log" 2>&1 \
  || { cat "$WORK/worker-start.log"; fail "ray start (second node) failed"; }

WORKER_RAYLET=$(pids_matching "raylet --raylet_socket_name=$WORKER_TMP/")
[[ $WORKER_RAYLET =~ ^[0-9]+$ ]] || fail "cannot find the second node's raylet (got '$WORKER_RAYLET')"
for _ in $(seq 30); do
  nodes=$("$PY" - "$ADDR" <<'EOF' 2>/dev/null || true
import sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, include_dashboard=False, logging_level="ERROR")
print(sum(1 for n in ray.nodes() if n["Alive"]), int(ray.cluster_resources().get("CPU", 0)))
EOF
)
  [[ ${nodes%% *} == 2 ]] && break
  sleep 1
done
[[ ${nodes%% *} == 2 ]] || fail "the cluster does not show 2 live nodes (got '$nodes')"
echo "cluster up: 2 nodes, ${nodes##* } CPUs; second node raylet pid $WORKER_RAYLET"

# ------------------------------------------------------------------------------------ 2. the search
say "nas-search: $TRIALS trials, 2 at a time, 1 CPU each, on $ADDR (run directory $RUN)"
nas-search --space "$SPACE" --address "$ADDR" --run-dir "$RUN" --trials "$TRIALS" \
  --max-concurrent 2 --cpus-per-trial 1 >"$DRIVER_LOG" 2>&1 &
DRIVER_PID=$!
tail -n +1 -F --pid="$DRIVER_PID" "$DRIVER_LOG" 2>/dev/null | sed -u 's/^/  | /' &
TAIL_PID=$!

# ------------------------------------------------------------------------------------ 3. kill the node
deadline=$((SECONDS + FIRST_TRIAL_TIMEOUT))
if ((KILL_AFTER > 0)); then
  until grep -qE "^\[ *$KILL_AFTER/[0-9]+\]" "$DRIVER_LOG" 2>/dev/null; do
    kill -0 "$DRIVER_PID" 2>/dev/null || { wait "$DRIVER_PID" || true; fail "the driver exited before $KILL_AFTER trial(s) finished"; }
    ((SECONDS < deadline)) || fail "$KILL_AFTER trial(s) did not finish within ${FIRST_TRIAL_TIMEOUT} s"
    sleep 0.2
  done
fi
# the second node must be running a trial now: wait for its trial worker process (a Tune actor in .train)
busy=0
((KILL_AFTER == 0)) || deadline=$((SECONDS + 15))
while ((SECONDS < deadline)); do
  kill -0 "$DRIVER_PID" 2>/dev/null || { wait "$DRIVER_PID" || true; fail "the driver exited before the node kill"; }
  node_pids=$(with_descendants "$WORKER_RAYLET" $(pids_matching "$WORKER_TMP/"))
  busy=$(ps -o args= -p "${node_pids// /,}" 2>/dev/null | grep -cE '^ray::(ImplicitFunc|train_trial)\.train' || true)
  [[ $busy -ge 1 ]] && break
  sleep 0.2
done
say "$(grep -cE '^\[ *[0-9]+/[0-9]+\]' "$DRIVER_LOG" || true) trial(s) done: killing the second node abruptly (SIGKILL, no clean shutdown)"
ps -o pid=,ppid=,args= -p "${node_pids// /,}" | cut -c1-110 | sed 's/^/  killing: /' || true
[[ $busy -ge 1 ]] || echo "  (note: no trial was running on the second node at this moment)"
kill -KILL $node_pids 2>/dev/null || true   # one may have exited meanwhile (an idle worker)
t_kill=$SECONDS
for _ in $(seq 25); do
  alive=$(alive_of $node_pids)
  [[ -z $alive ]] && break
  sleep 0.2
done
[[ -z $alive ]] || fail "still running 5 s after SIGKILL:$alive"
echo "  the second node is gone; the head node (1 CPU) must finish the search, re-running the lost trial"

# ------------------------------------------------------------------------------------ 4. finish on one node
deadline=$((SECONDS + SEARCH_TIMEOUT))
while kill -0 "$DRIVER_PID" 2>/dev/null; do
  ((SECONDS < deadline)) || fail "the search did not finish within ${SEARCH_TIMEOUT} s of the node kill (hung?)"
  sleep 1
done
set +e; wait "$DRIVER_PID"; driver_rc=$?; set -e
DRIVER_PID=""
wait "$TAIL_PID" 2>/dev/null || true
TAIL_PID=""
((driver_rc != 130)) || fail "the search was interrupted (nas-search exited with 130); resume it with nas-search --resume $RUN"
((driver_rc == 0)) || fail "nas-search exited with status $driver_rc"
say "search finished $((SECONDS - t_kill)) s after the node kill"

# ------------------------------------------------------------------------------------ 5. leaderboard + checks
say "leaderboard (nas-report $RUN)"
nas-report "$RUN" | sed 's/^/  /'
say "checks"
"$PY" - "$RUN" "$TRIALS" <<'EOF'
import csv, json, pathlib, sys
run, want = pathlib.Path(sys.argv[1]), int(sys.argv[2])
rows = list(csv.DictReader(open(run / "leaderboard.csv")))
recs = [json.loads(l) for l in open(run / "trials.jsonl") if l.strip()]
by_id = {r["id"]: r for r in rows}
problems, retried = [], 0
for f in sorted(run.glob("tune/session-*/trial-*/error.txt")):  # Tune appends one entry per failed attempt
    lines = [l.strip() for l in f.read_text(errors="replace").splitlines() if l.strip()]
    fails = [i for i, l in enumerate(lines) if l.startswith("Failure #")]
    cause = lines[fails[-1] + 1] if fails and fails[-1] + 1 < len(lines) else "?"
    row = by_id.get(f.parent.name.rsplit("-", 1)[-1])
    end = f"re-run -> {row['status']} score {float(row['score']):.3f}" if row else "NOT in the leaderboard"
    print(f"  Tune trial {f.parent.name}: {len(fails)} failed attempt(s) ({cause[:110]}...); {end}")
    retried += row is not None and row["status"] == "ok"
bad = [r for r in rows if r["status"] != "ok"]
print(f"  leaderboard: {len(rows)}/{want} trials, {len(rows) - len(bad)} ok; trials.jsonl: {len(recs)} records; "
      f"{retried} trial(s) lost with the node, retried and completed")
if len(rows) != want:
    problems.append(f"the leaderboard has {len(rows)} trials, not {want}")
if bad:
    problems.append("not ok: " + "; ".join(f"trial {r['trial']} {r['status']} ({r.get('reason', '')})" for r in bad))
if len(recs) != len(by_id):
    problems.append(f"{len(recs)} records in trials.jsonl for {len(by_id)} leaderboard rows")
if not retried:
    print("  note: no trial failed on the dead node, so none had to be retried (was the node idle?)")
for p in problems:
    print("  PROBLEM:", p)
sys.exit(1 if problems else 0)
EOF
OK=1
