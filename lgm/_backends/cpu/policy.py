"""How lgm's parallel Numba kernels share the cores with everything else on the machine.

The problem (measured on 2 cores): with another CPU-bound process running, a parallel kernel on 2
threads waits at its end for the thread whose core is shared, which the OS scheduler runs only
part of the time; the kernel took 2.4-3.5x as long as the same kernel on 1 thread.

The policy ("adaptive", the default): before each parallel kernel call, lgm runs it on

    min(Numba's thread count, cores available to this process - other runnable tasks, >= 1)

threads, where "other runnable tasks" is the machine's count of runnable tasks (the 4th field of
/proc/loadavg, an instantaneous count) minus this process's own running threads (from
/proc/self/task/*/stat, so that lgm's own BLAS or Numba workers do not count). The reading is
cached for 50 ms (about 50 us per reading). The thread count is set for the call only
(numba.set_num_threads, thread-local) and restored after it. On a quiet machine nothing changes;
with k other busy processes, k cores are left to them.

"fixed": always Numba's thread count (numba.set_num_threads / NUMBA_NUM_THREADS), as before.
Choose with the environment variable LGM_THREAD_POLICY=fixed|adaptive or with
``lgm.set_thread_policy``. Where /proc is not readable (not Linux) the policy is "fixed".

In a container that shares the host's kernel without its own /proc/loadavg (Docker without
lxcfs), the count is the host's: lgm then leaves cores to the host's other tasks too; set
LGM_THREAD_POLICY=fixed there if the container has dedicated cores.
"""

from __future__ import annotations

import functools
import os
import threading
import time
import warnings

__all__ = ["set_thread_policy", "thread_policy", "free_cores", "LoadAwareKernels", "pair",
           "pair_concurrent"]

_POLICIES = ("adaptive", "fixed")
_state = {"policy": os.environ.get("LGM_THREAD_POLICY", "adaptive").strip().lower() or "adaptive"}
if _state["policy"] not in _POLICIES:
    warnings.warn(f"LGM_THREAD_POLICY: expected one of {_POLICIES}, got {_state['policy']!r}; "
                  f"using 'adaptive'", RuntimeWarning, stacklevel=2)
    _state["policy"] = "adaptive"

_CACHE_S = 0.05
_cache = {"t": -1.0, "free": None}  # the reading and its time: written together, under _lock
_lock = threading.Lock()


def set_thread_policy(policy):
    """Set how lgm's parallel CPU kernels choose their thread count: "adaptive" (the default:
    leave the cores that other runnable tasks use) or "fixed" (always Numba's thread count).
    Returns the previous policy."""
    if policy not in _POLICIES:
        raise ValueError(f"set_thread_policy: expected one of {_POLICIES}, got {policy!r}")
    old, _state["policy"] = _state["policy"], policy
    _cache["t"] = -1.0
    return old


def thread_policy():
    """The current policy: "adaptive" or "fixed"."""
    return _state["policy"]


def _machine_runnable():
    with open("/proc/loadavg") as f:
        return int(f.read().split()[3].split("/")[0])


def _own_running():
    n = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                s = f.read()
        except OSError:  # the thread ended meanwhile
            continue
        if s[s.rindex(")") + 2] == "R":
            n += 1
    return max(n, 1)  # the reader itself runs


def _cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def free_cores():
    """Cores not taken by other runnable tasks (>= 1), or None where /proc cannot be read.
    Cached for 50 ms."""
    now = time.monotonic()
    with _lock:
        if now - _cache["t"] < _CACHE_S:
            return _cache["free"]
        try:
            others = max(0, _machine_runnable() - _own_running())
            free = max(1, _cores() - others)
        except (OSError, ValueError, IndexError):
            free = None
        _cache["t"], _cache["free"] = now, free
    return free


class LoadAwareKernels:
    """The CPU kernels module seen through the policy: every parallel Numba kernel is wrapped to
    run on the policy's thread count (set for the call, restored after it); serial kernels and
    the njit row functions (callable from users' own njit code) pass through unchanged."""

    def __init__(self, module):
        self._module = module
        self._wrapped = {}

    def __getattr__(self, name):
        fn = getattr(self._module, name)
        if not getattr(fn, "targetoptions", {}).get("parallel"):
            return fn
        w = self._wrapped.get(name)
        if w is None:
            w = self._wrapped[name] = _wrap(fn)
        return w


def _wrap(kernel):
    import numba

    @functools.wraps(kernel.py_func)
    def call(*args, **kw):
        n = numba.get_num_threads()
        if n == 1 or _state["policy"] == "fixed":
            return kernel(*args, **kw)
        free = free_cores()
        if free is None or free >= n:
            return kernel(*args, **kw)
        numba.set_num_threads(free)
        try:
            return kernel(*args, **kw)
        finally:
            numba.set_num_threads(n)
    call.kernel = kernel
    return call


# --- two pieces of model work on two cores ------------------------------------------------------
# A conv-VAE step on 2 cores alternates BLAS calls (2 threads) with serial data movement
# (im2col/col2im, bias passes) that leaves the second core idle, and the BLAS workers spin on it
# between calls. ``pair`` runs two independent pieces of work (the two halves of a minibatch,
# lgm.models.vae) side by side instead: the second on one worker thread of lgm's, the first in
# the caller, each with BLAS on one thread (threadpoolctl, set for the pair and restored), each
# with lgm's Numba kernels on one thread (``threads``, the model's policy, entered in the worker).
# They run one after the other, with the same results, when fewer than two cores are free (the
# adaptive policy's count; all of the process's cores with "fixed") or when Numba's threading
# layer is "workqueue", which aborts when two threads call parallel kernels at once.
_pair = {"pool": None, "blas": None}
# one pair at a time: a second caller (another thread, e.g. dask's threaded scheduler scoring
# chunks, or a pair nested in the worker) runs its pieces one after the other instead of
# changing the process-wide BLAS limit under the first or waiting on the busy worker
_pair_busy = threading.Lock()


def _pair_pool():
    from concurrent.futures import ThreadPoolExecutor

    with _lock:
        if _pair["pool"] is None:
            _pair["pool"] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lgm-pair")
            from threadpoolctl import ThreadpoolController

            _pair["blas"] = ThreadpoolController()  # the BLAS libraries loaded (numpy's)
    return _pair["pool"], _pair["blas"]


def _forget_pool_after_fork():
    # a forked child has no worker thread: it makes its own pool on first use
    _pair["pool"] = _pair["blas"] = None
    global _pair_busy
    _pair_busy = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def pair_concurrent():
    """Whether :func:`pair` would run its two pieces at the same time now (unless another pair
    is running)."""
    import numba

    free = free_cores() if _state["policy"] == "adaptive" else None
    if (free if free is not None else _cores()) < 2:
        return False
    try:
        return numba.threading_layer() != "workqueue"
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        return False


def _result(fut):
    """fut.result(), waited for to the end even through a Ctrl-C (re-raised after it): the
    worker is never left running a half while the caller moves on."""
    interrupted = None
    while True:
        try:
            out = fut.result()
            break
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted
    return out


def pair(first, second, threads):
    """(first(), second()), at the same time on two cores where :func:`pair_concurrent` and no
    other pair is running, else one after the other. ``threads``: the context manager of the
    model's threading policy, entered around ``second`` in the worker thread (the caller is
    already inside it)."""
    if not pair_concurrent() or not _pair_busy.acquire(blocking=False):
        return first(), second()
    try:
        def run():
            with threads():
                return second()

        pool, blas = _pair_pool()
        with blas.limit(limits=1, user_api="blas"):
            fut = pool.submit(run)
            try:
                a = first()
            finally:
                b = _result(fut)  # an error or Ctrl-C in first still waits for the worker
        return a, b
    finally:
        _pair_busy.release()
