"""The msrun launcher of the distributed tests: ``launch(n, worker, args, tmp_path)`` runs tests/distributed/<worker>
on n local ranks and returns every rank's ``RESULT {json}`` line (printed into ``<log_dir>/worker_<rank>.log``)."""
import json
import os
import shutil
import socket
import subprocess
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

if shutil.which("msrun") is None:
    pytest.fail("msrun not on PATH (source run/env.sh)", pytrace=False)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def launch(n, script, args, tmp_path, timeout=420):
    log_dir = tmp_path / "msrun_logs"
    env = dict(os.environ)
    env.setdefault("LOCAL_DEFAULT_PATH", "/tmp/mflog")
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = ["timeout", str(timeout), "msrun", f"--worker_num={n}", f"--local_worker_num={n}",
           f"--master_port={free_port()}", "--join=True", f"--log_dir={log_dir}",
           os.path.join(HERE, script)] + list(args)
    t = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - t
    results = {}
    logs = {}
    for r in range(n):
        path = log_dir / f"worker_{r}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        logs[r] = text
        for line in text.splitlines():
            if line.startswith("RESULT "):
                results[r] = json.loads(line[len("RESULT "):])
    if len(results) != n:
        tails = "\n".join(f"--- worker_{r}.log ---\n" + "\n".join(
            [ln for ln in logs[r].splitlines() if not ln.startswith("[")][-25:]) for r in range(n))
        pytest.fail(f"msrun rc={proc.returncode} after {wall:.0f}s, results from ranks {sorted(results)}\n"
                    f"{proc.stderr[-2000:]}\n{tails}", pytrace=False)
    print(f"\n[msrun {n} ranks {script} {' '.join(args)}] {wall:.1f} s wall, rc={proc.returncode}")
    return results, wall, proc.returncode
