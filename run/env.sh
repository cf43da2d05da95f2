# Source me: create (or reuse) the pangu_ms virtual environment and install requirements.txt into it.
# PANGU_MS_VENV overrides the location (default: ~/.venvs/pangu_ms). Re-running is cheap: pip is skipped
# when requirements.txt has not changed since the last successful install.
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PANGU_MS_VENV="${PANGU_MS_VENV:-$HOME/.venvs/pangu_ms}"
if [ ! -x "$PANGU_MS_VENV/bin/python" ]; then
  echo "[pangu_ms] creating virtual environment $PANGU_MS_VENV"
  python3.11 -m venv "$PANGU_MS_VENV" 2>/dev/null || python3 -m venv "$PANGU_MS_VENV"
fi
_stamp="$PANGU_MS_VENV/.pangu_ms_requirements"
if ! cmp -s "$_root/requirements.txt" "$_stamp" 2>/dev/null; then
  echo "[pangu_ms] installing requirements.txt into $PANGU_MS_VENV (first time: ~2 minutes)"
  "$PANGU_MS_VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$_root/requirements.txt" \
    && cp "$_root/requirements.txt" "$_stamp"
fi
export PATH="$PANGU_MS_VENV/bin:$PATH"
export PYTHONPATH="$_root${PYTHONPATH:+:$PYTHONPATH}"
export GLOG_v="${GLOG_v:-3}"           # MindSpore: errors only
unset _root _stamp
