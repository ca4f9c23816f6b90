"""JAX's persistent compilation cache for the command-line tools: a second run with the same
shapes loads its compiled programs from disk instead of compiling them again (`reconstruct`'s
FlowMap step takes 10-40 s to compile on a laptop CPU).

    default_dir() -> str | None     $FLOW3R_JIT_CACHE ("off": none), else $JAX_COMPILATION_CACHE_DIR,
                                    else $XDG_CACHE_HOME/flow3r_jax/jit (~/.cache/flow3r_jax/jit)
    enable(path) -> str | None      turns the cache on there ("off" / None: off for this process)
    COUNTER                         programs this process loaded from the cache and wrote to it
                                    (JAX's monitoring events), `COUNTER.since(COUNTER.snapshot())`

Programs that compile in under `min_compile_seconds` (default 1 s) are not stored: loading them
would not be faster than compiling.
"""

from __future__ import annotations

import os
import threading

__all__ = ["default_dir", "enable", "COUNTER", "CacheCounter"]

_HIT = "/jax/compilation_cache/cache_hits"
_STORED = "/jax/compilation_cache/cache_misses"  # recorded when a compiled program is written


def default_dir() -> str | None:
    """Where the command-line tools keep compiled programs (see the module docstring)."""
    own = os.environ.get("FLOW3R_JIT_CACHE")
    if own:
        return None if own.lower() == "off" else own
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return os.environ["JAX_COMPILATION_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "flow3r_jax", "jit")


class CacheCounter:
    """Counts this process's cache loads and writes (registered once with jax.monitoring)."""

    def __init__(self):
        self.loaded = 0
        self.stored = 0
        self.directory: str | None = None
        self._lock = threading.Lock()
        self._registered = False

    def register(self) -> None:
        if self._registered:
            return
        import jax

        def listen(event: str, **_):
            if event in (_HIT, _STORED):
                with self._lock:
                    if event == _HIT:
                        self.loaded += 1
                    else:
                        self.stored += 1

        jax.monitoring.register_event_listener(listen)
        self._registered = True

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.loaded, self.stored

    def since(self, snap: tuple[int, int]) -> dict:
        """{"dir", "loaded", "stored"} since `snap`."""
        loaded, stored = self.snapshot()
        return {"dir": self.directory, "loaded": loaded - snap[0], "stored": stored - snap[1]}


COUNTER = CacheCounter()


def enable(path: str | None, min_compile_seconds: float = 1.0) -> str | None:
    """Turns JAX's persistent compilation cache on at `path` (created if needed) for this process,
    or off for `None` / "off". Call before the first compilation. Returns the directory in use."""
    import jax

    COUNTER.register()
    if path is None or str(path).lower() == "off":
        jax.config.update("jax_enable_compilation_cache", False)
        COUNTER.directory = None
        return None
    path = os.path.abspath(os.path.expanduser(path))
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise OSError(f"compilation cache {path}: cannot create it ({err.strerror}); pass --jit_cache off or another directory") from err
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", path)
    if os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS") is None:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
    COUNTER.directory = path
    return path
