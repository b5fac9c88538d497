"""Compile C++ extensions at first use, cached, with a clear fallback when that is impossible.

The fast kernels of tfn are C++ sources shipped with the package. They are compiled the first
time they are needed with :func:`torch.utils.cpp_extension.load` (ninja from PyPI, the system's
C++ compiler, OpenMP, ``-march=native``) into a cache folder keyed by everything that changes
the binary: the sources, the flags, the torch and Python versions and the CPU's instruction
set. Later imports load the cached library in milliseconds.

When compiling is impossible (no compiler, no ninja, a build error) :func:`load_extension`
warns once, naming the reason and the fallback, and returns ``None``; callers then use their
eager PyTorch path. ``TFN_NO_EXTENSIONS=1`` forces that fallback (used by the tests that
check both paths against each other); ``TFN_EXTENSION_DIR`` moves the cache (default
``~/.cache/tfn/extensions``).
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["load_extension", "extensions_disabled", "extension_dir"]

_LOCK = threading.Lock()
_LOADED: dict[str, ModuleType | None] = {}
_DEFAULT_CFLAGS = ("-O3", "-march=native", "-fopenmp", "-std=c++17", "-DNDEBUG")
_DEFAULT_LDFLAGS = ("-fopenmp",)


def extensions_disabled() -> bool:
    """True when ``TFN_NO_EXTENSIONS`` asks for the eager fallbacks."""
    return os.environ.get("TFN_NO_EXTENSIONS", "").strip().lower() not in ("", "0", "false", "no")


def extension_dir() -> Path:
    """Root of the build cache."""
    root = os.environ.get("TFN_EXTENSION_DIR")
    return Path(root) if root else Path.home() / ".cache" / "tfn" / "extensions"


def _cpu_signature() -> str:
    """The instruction-set flags of this CPU (``-march=native`` binaries depend on them)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _key(name: str, sources: list[Path], cflags: tuple[str, ...], ldflags: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for part in (name, torch.__version__, sys.version, _cpu_signature(), *cflags, *ldflags):
        h.update(part.encode())
        h.update(b"\0")
    for source in sources:
        h.update(source.read_bytes())
    return h.hexdigest()[:16]


def load_extension(
    name: str,
    sources: list[str | Path],
    extra_cflags: tuple[str, ...] = (),
    extra_ldflags: tuple[str, ...] = (),
) -> ModuleType | None:
    """The compiled extension ``name`` built from ``sources``, or ``None`` (after one warning)
    when it cannot be built. Thread-safe; a build shared by several processes is serialised by
    torch's lock file in the build folder."""
    if extensions_disabled():
        return None
    with _LOCK:
        if name in _LOADED:
            return _LOADED[name]
        paths = [Path(s) for s in sources]
        cflags = _DEFAULT_CFLAGS + tuple(extra_cflags)
        ldflags = _DEFAULT_LDFLAGS + tuple(extra_ldflags)
        module: ModuleType | None = None
        try:
            from torch.utils import cpp_extension

            key = _key(name, paths, cflags, ldflags)
            build = extension_dir() / f"torch-{torch.__version__}" / f"{name}-{key}"
            build.mkdir(parents=True, exist_ok=True)
            module = cpp_extension.load(
                name=f"{name}_{key}",
                sources=[str(p) for p in paths],
                extra_cflags=list(cflags),
                extra_ldflags=list(ldflags),
                build_directory=str(build),
                verbose=False,
            )
        except Exception as error:  # no compiler, no ninja, a compile error: fall back
            reason = str(error).strip().splitlines()
            warnings.warn(
                f"tfn: could not compile the C++ extension {name!r} "
                f"({reason[-1] if reason else type(error).__name__}); using the slower eager "
                "PyTorch kernels instead. Install a C++ compiler and `pip install ninja` to get "
                "the fast ones; set TFN_NO_EXTENSIONS=1 to silence this.",
                RuntimeWarning,
                stacklevel=2,
            )
            module = None
        _LOADED[name] = module
        return module
