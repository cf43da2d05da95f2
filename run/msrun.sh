#!/usr/bin/env bash
# Launch pangu_ms training on N local ranks with msrun (explicit data + expert parallelism, pangu_ms/parallel).
#
#   bash run/msrun.sh <N> <recipe.yaml> [key=value ...]
#   bash run/msrun.sh 2 yaml/tiny_cpu.yaml parallel.dp=2 parallel.ep=2 train.steps=20
#
# Runs:  msrun --worker_num=N --local_worker_num=N --master_port=<free port> --join=True \
#              --log_dir=<train.output_dir>/msrun_logs  python run/train.py --config <recipe> --set k=v ...
# Overrides are passed to run/train.py as --set (a leading "--set" is accepted too); arguments starting with "--"
# (e.g. --stop-after=3, --no-progress) are passed to run/train.py as they are. Defaults when neither the
# recipe nor an override sets them: parallel.dp=N (every rank a data-parallel rank) and parallel.ep=N when
# moe.num_experts is a multiple of N (expert parallelism over the same ranks), and parallel.micro_batch_size =
# global_batch_size / dp when the recipe's micro-batch would exceed it (a single-process recipe keeps its global
# batch), so `bash run/msrun.sh 2 yaml/tiny_cpu.yaml` trains with DP=2, EP=2 on the same global batch.
#
# Environment:
#   MASTER_PORT   scheduler port (default: a free port on this machine)
#   MSRUN_EXTRA   extra msrun flags, e.g. for several nodes (see below)
#   PYTHON        interpreter (default: python)
#
# Multi-node (not testable here; the msrun flags are MindSpore's): run the same command on every node with
#   MSRUN_EXTRA="--worker_num=<total ranks> --local_worker_num=<ranks on this node> --node_rank=<i> \
#                --master_addr=<ip of node 0>" MASTER_PORT=<same port everywhere> bash run/msrun.sh <ranks per node> ...
# (flags given in MSRUN_EXTRA override the local defaults; set parallel.ranks_per_node to the ranks per node so the
# hierarchical all-to-all groups match the real nodes; parallel.dp = world size, ep divides dp).
#
# Exit status: msrun's (non-zero when any worker fails). On failure the LAST line names the failed rank and its
# log file: a worker that died without a message (kill -9, OOM; msrun's scheduler reports it "timed out"), else
# the first worker whose log holds a Python error; the error lines of every such worker are printed before it.
set -uo pipefail

usage() { sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; }
if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ] || [ $# -lt 2 ]; then usage; [ $# -lt 2 ] && exit 2; exit 0; fi

N="$1"; RECIPE="$2"; shift 2
case "$N" in ''|*[!0-9]*) echo "msrun.sh: <N> must be a positive integer, got '$N'" >&2; exit 2;; esac
[ -f "$RECIPE" ] || { echo "msrun.sh: recipe '$RECIPE' not found" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
[ -n "${PANGU_MS_NO_ENV:-}" ] || source "$ROOT/run/env.sh"
PY="${PYTHON:-python}"

SETS=()
FLAGS=()                      # run/train.py flags passed through verbatim (--stop-after=N, --no-progress)
for a in "$@"; do
  [ "$a" = "--set" ] && continue
  case "$a" in --*) FLAGS+=("$a"); continue;; esac
  SETS+=(--set "$a")
done

# output dir and the launch defaults, resolved with the same loader run/train.py uses
HELPER_OUT="$(cd "$ROOT" && "$PY" - "$N" "$RECIPE" "${SETS[@]}" <<'EOF'
import sys
from pangu_ms.config.loader import load_config, parse_overrides, read_yaml
n, recipe, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
sets = [args[i + 1] for i in range(0, len(args), 2)]
given = parse_overrides(sets)
raw = read_yaml(recipe)
def is_set(sec, key):
    return key in (raw.get(sec) or {}) or key in (given.get(sec) or {})
extra = []
if not is_set("parallel", "dp"):
    extra.append(f"parallel.dp={n}")
cfg = load_config(recipe, sets + extra, validate=False)
if not is_set("parallel", "dp") and not is_set("parallel", "ep") and cfg.moe.num_experts % n == 0:
    extra.append(f"parallel.ep={n}")
p, t = cfg.parallel, cfg.train
if "micro_batch_size" not in (given.get("parallel") or {}) and p.micro_batch_size * p.dp > t.global_batch_size \
        and t.global_batch_size % p.dp == 0:
    extra.append(f"parallel.micro_batch_size={t.global_batch_size // p.dp}")   # keep the global batch
print(cfg.train.output_dir)
print(" ".join(extra))
EOF
)" || { echo "msrun.sh: could not read the recipe $RECIPE" >&2; exit 2; }
OUT_DIR="$(echo "$HELPER_OUT" | sed -n 1p)"
for e in $(echo "$HELPER_OUT" | sed -n 2p); do SETS+=(--set "$e"); done
[ -n "$OUT_DIR" ] || { echo "msrun.sh: no train.output_dir in $RECIPE" >&2; exit 2; }
case "$OUT_DIR" in /*) ;; *) OUT_DIR="$ROOT/$OUT_DIR";; esac
LOG_DIR="$OUT_DIR/msrun_logs"
mkdir -p "$LOG_DIR"
rm -f "$LOG_DIR"/worker_*.log "$LOG_DIR"/scheduler.log "$LOG_DIR"/msrun.out

PORT="${MASTER_PORT:-$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
export LOCAL_DEFAULT_PATH="${LOCAL_DEFAULT_PATH:-$OUT_DIR/mindformers_log}"

echo "[msrun.sh] $N ranks, recipe $RECIPE, port $PORT, logs $LOG_DIR"
# shellcheck disable=SC2086
msrun --worker_num="$N" --local_worker_num="$N" --master_port="$PORT" --join=True --log_dir="$LOG_DIR" \
  ${MSRUN_EXTRA:-} "$PY" "$ROOT/run/train.py" --config "$RECIPE" "${SETS[@]}" "${FLAGS[@]}" 2>&1 \
  | tee "$LOG_DIR/msrun.out"
RC=$?

if [ "$RC" -ne 0 ]; then
  echo "[msrun.sh] FAILED (msrun exit $RC). Logs: $LOG_DIR" >&2
  # a worker that died without a word (kill -9, the OOM killer): msrun reports its pid with a negative exit code
  # (the signal); each worker wrote "[msrun worker] rank R pid P" first thing into its log (run/train.py)
  dead=""
  for pid in $(grep -ohE "Worker process [0-9]+ exit with exception. Error code: -[0-9]+" "$LOG_DIR/msrun.out" \
               2>/dev/null | awk '{print $3}'); do
    r="$(grep -lE "^\[msrun worker\] rank [0-9]+ pid $pid\$" "$LOG_DIR"/worker_*.log 2>/dev/null | head -n 1)"
    [ -n "$r" ] && { r="$(basename "$r" .log)"; dead="$dead${dead:+ }${r#worker_}"; }
  done
  # else msrun's scheduler: "The node: <rank> is timed out" (the others then fail in, or hang on, a collective)
  [ -n "$dead" ] || dead="$(grep -ohE "The node: ?[0-9]+ is timed out" "$LOG_DIR"/scheduler.log 2>/dev/null \
                             | grep -oE "[0-9]+" | sort -un | tr '\n' ' ')"
  errored=""
  for f in $(ls "$LOG_DIR"/worker_*.log 2>/dev/null | sort -V); do
    if grep -qE "Traceback \(most recent call last\)|^[A-Za-z]*Error:|^error: |RuntimeError|Segmentation fault" "$f"; then
      r="$(basename "$f" .log)"; r="${r#worker_}"
      echo "[msrun.sh] rank $r reported an error: $f" >&2
      grep -E "^[A-Za-z.]*(Error|Exception)[: ]|^error: " "$f" | tail -n 3 | sed 's/^/    /' >&2
      errored="$errored $r"
    fi
  done
  # the LAST line names the failed rank(s) and their log file(s)
  if [ -n "$dead" ]; then
    msg=""
    for r in $dead; do msg="$msg${msg:+, }rank $r (log $LOG_DIR/worker_$r.log)"; done
    echo "[msrun.sh] rank ${dead%% *} died without an error message (killed? out of memory?): $msg" >&2
  elif [ -n "$errored" ]; then
    r="${errored# }"; r="${r%% *}"
    echo "[msrun.sh] rank $r failed; its log: $LOG_DIR/worker_$r.log" >&2
  else
    echo "[msrun.sh] a worker failed (msrun exit $RC) without naming itself; worker logs:" \
      "$(ls "$LOG_DIR"/worker_*.log 2>/dev/null | tr '\n' ' ')" >&2
  fi
  exit "$RC"
fi
echo "[msrun.sh] done; logs in $LOG_DIR"
