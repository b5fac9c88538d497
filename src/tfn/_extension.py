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
``~/.cache/tfn/extensions``); ``TFN_EXTENSION_VERBOSE=1`` prints the compiler's output.

The first build takes a minute or so (torch's headers are large); it happens once per torch
version, source change and CPU, and is shared by every process using the same cache.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["extension_dir", "extensions_disabled", "failure_reason", "load_extension"]

_LOCK = threading.Lock()
_LOADED: dict[str, ModuleType | Path | None] = {}
_FAILURES: dict[str, str] = {}
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


def _key(name: str, files: list[Path], cflags: tuple[str, ...], ldflags: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for part in (name, torch.__version__, sys.version, _cpu_signature(), *cflags, *ldflags):
        h.update(part.encode())
        h.update(b"\0")
    for file in files:
        h.update(file.name.encode())
        h.update(file.read_bytes())
    return h.hexdigest()[:16]


def _failure_reason(error: BaseException) -> str:
    """One line saying why a build failed: the compiler's first error, else the last line."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    for line in lines:
        if "error" in line.lower() and not line.startswith("Error building extension"):
            return line
    return lines[-1] if lines else type(error).__name__


def failure_reason(name: str) -> str | None:
    """Why the extension ``name`` is unavailable (``None`` if it loaded or was never tried)."""
    if extensions_disabled():
        return "disabled by TFN_NO_EXTENSIONS"
    return _FAILURES.get(name)


def load_extension(
    name: str,
    sources: list[str | Path],
    extra_cflags: tuple[str, ...] = (),
    extra_ldflags: tuple[str, ...] = (),
    *,
    depends: Sequence[str | Path] = (),
    python_module: bool = True,
) -> ModuleType | Path | None:
    """The compiled extension ``name`` built from ``sources``, or ``None`` (after one warning)
    when it cannot be built. Thread-safe; a build shared by several processes is serialised by
    torch's lock file in the build folder.

    ``depends`` lists files the sources include (headers): they are part of the cache key.
    With ``python_module=False`` the library only registers operators (``TORCH_LIBRARY``,
    reached through ``torch.ops``); it is loaded into the process and its path is returned.
    """
    if extensions_disabled():
        return None
    with _LOCK:
        if name in _LOADED:
            return _LOADED[name]
        paths = [Path(s) for s in sources]
        cflags = _DEFAULT_CFLAGS + tuple(extra_cflags)
        ldflags = _DEFAULT_LDFLAGS + tuple(extra_ldflags)
        result: ModuleType | Path | None = None
        try:
            from torch.utils import cpp_extension

            compiler = (os.environ.get("CXX") or "c++").split()[0]
            if shutil.which(compiler) is None:
                raise RuntimeError(f"no C++ compiler found ({compiler!r} is not on PATH)")
            key = _key(name, paths + [Path(d) for d in depends], cflags, ldflags)
            build = extension_dir() / f"torch-{torch.__version__}" / f"{name}-{key}"
            build.mkdir(parents=True, exist_ok=True)
            loaded = cpp_extension.load(
                name=f"{name}_{key}",
                sources=[str(p) for p in paths],
                extra_cflags=list(cflags),
                extra_ldflags=list(ldflags),
                extra_include_paths=sorted({str(p.parent) for p in paths}),
                build_directory=str(build),
                verbose=os.environ.get("TFN_EXTENSION_VERBOSE", "") not in ("", "0"),
                is_python_module=python_module,
            )
            result = loaded if python_module else build / f"{name}_{key}.so"
        except Exception as error:  # no compiler, no ninja, a compile error: fall back
            reason = _failure_reason(error)
            _FAILURES[name] = reason
            warnings.warn(
                f"tfn: could not compile the C++ extension {name!r} ({reason}); using the "
                "slower eager PyTorch kernels instead. Install a C++ compiler and `pip install "
                "ninja` to get the fast ones; set TFN_NO_EXTENSIONS=1 to silence this.",
                RuntimeWarning,
                stacklevel=2,
            )
            result = None
        _LOADED[name] = result
        return result
