"""Compile a kernel source of ``pangu_ms/kernels/cpu`` into a shared library, once per source and machine.

The library lands in ``$PANGU_MS_KERNEL_CACHE`` (default ``~/.cache/pangu_ms/kernels``) under a name that
holds a hash of the source and the headers beside it, the flags, the compiler's version and the CPU (the code is
built for the CPU it runs on, ``-march=native``), so an edited source, another compiler or another machine
builds a new file and a stale one is never loaded. Concurrent builders (pytest workers, msrun ranks) each
write a private temporary file and rename it into place.
"""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

SOURCE_DIR = Path(__file__).resolve().parent / "cpu"
FLAGS = ("-O3", "-march=native", "-fopenmp-simd", "-shared", "-fPIC", "-std=c++17", "-pthread")
# per kernel, beyond FLAGS: exp is vectorised (glibc's libmvec) only under fast-math
EXTRA_FLAGS = {"masked_softmax": ("-ffast-math",), "swiglu": ("-ffast-math",)}


class KernelBuildError(RuntimeError):
    """The fused CPU kernels cannot be built here (no compiler, or the source does not compile)."""


def compiler() -> str:
    """The C++ compiler: ``$CXX`` or ``g++``; one error naming it when it is not installed."""
    name = os.environ.get("CXX", "g++")
    path = shutil.which(name)
    if path is None:
        raise KernelBuildError(f"the fused CPU kernels (model.backend=cpu_fused) need a C++ compiler, and {name!r} "
                               f"(from $CXX, default g++) was not found; install g++ or use model.backend=cpu")
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("PANGU_MS_KERNEL_CACHE", Path.home() / ".cache" / "pangu_ms" / "kernels"))


@functools.lru_cache(maxsize=None)
def _compiler_version(path: str) -> str:
    return subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout


@functools.lru_cache(maxsize=None)
def _cpu_identity() -> str:
    """The first processor's model name and feature flags (what -march=native compiles for)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    keep = [line for line in text.splitlines() if line.startswith(("model name", "flags"))]
    return "\n".join(keep[:2])


@functools.lru_cache(maxsize=None)
def library(name: str) -> str:
    """Path of the compiled ``cpu/<name>.cc`` (built on first use)."""
    source = SOURCE_DIR / f"{name}.cc"
    if not source.is_file():
        raise KernelBuildError(f"no kernel source {source}")
    cxx = compiler()
    flags = FLAGS + EXTRA_FLAGS.get(name, ())
    text = source.read_bytes() + b"".join(h.read_bytes() for h in sorted(SOURCE_DIR.glob("*.h")))
    key = hashlib.sha256(text + " ".join(flags).encode() + _compiler_version(cxx).encode()
                         + _cpu_identity().encode()).hexdigest()[:16]
    target = cache_dir() / f"{name}-{key}.so"
    if target.is_file():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_suffix(f".{os.getpid()}.tmp")
    done = subprocess.run([cxx, *flags, "-o", str(scratch), str(source)], capture_output=True, text=True)
    if done.returncode != 0:
        scratch.unlink(missing_ok=True)
        raise KernelBuildError(f"compiling {source} failed ({cxx} {' '.join(flags)}):\n{done.stderr[-2000:]}")
    os.replace(scratch, target)
    return str(target)
