"""The threading policy of the CPU kernels (lgm._backends.cpu.policy): parallel kernels leave the
cores that other runnable tasks take, set for the call and restored after it; "fixed" turns it
off. The load is faked here (the readers of /proc are replaced); bench/load_bench.py measures it
with a real co-running process."""

import numba
import numpy as np
import pytest

import lgm
from lgm._backends.cpu import policy


@pytest.fixture
def fake_load(monkeypatch):
    """Set the machine's runnable tasks and this process's running threads by hand."""
    state = {"machine": 1, "own": 1, "cores": 2}
    monkeypatch.setattr(policy, "_machine_runnable", lambda: state["machine"])
    monkeypatch.setattr(policy, "_own_running", lambda: state["own"])
    monkeypatch.setattr(policy, "_cores", lambda: state["cores"])
    monkeypatch.setattr(policy, "_CACHE_S", 0.0)
    monkeypatch.setitem(policy._state, "policy", "adaptive")  # whatever LGM_THREAD_POLICY says
    policy._cache["t"] = -1.0
    n = numba.get_num_threads()
    yield state
    numba.set_num_threads(n)
    policy._cache["t"] = -1.0


def test_free_cores_counts_only_other_tasks(fake_load):
    assert policy.free_cores() == 2  # quiet: only the reader runs
    fake_load["machine"], fake_load["own"] = 3, 3  # our own BLAS workers spin: still quiet
    assert policy.free_cores() == 2
    fake_load["machine"], fake_load["own"] = 2, 1  # one other busy process
    assert policy.free_cores() == 1
    fake_load["machine"] = 9  # never fewer than one
    assert policy.free_cores() == 1
    fake_load["cores"], fake_load["machine"] = 16, 4  # 3 others on 16 cores
    assert policy.free_cores() == 13


def test_the_readers_work_on_this_machine():
    assert policy._machine_runnable() >= 1
    assert policy._own_running() >= 1
    policy._cache["t"] = -1.0
    free = policy.free_cores()
    assert free is None or 1 <= free <= policy._cores()


def test_parallel_kernels_run_on_the_free_cores_and_restore_the_count(fake_load, monkeypatch):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one Numba thread: nothing to limit")
    seen = []
    real = numba.set_num_threads
    monkeypatch.setattr(numba, "set_num_threads", lambda n: (seen.append(n), real(n)))
    x = np.random.default_rng(0).standard_normal((64, 8))
    want = lgm.logsumexp(x, axis=-1)
    real(2)
    fake_load["machine"] = 2  # one other busy process on 2 cores
    got = lgm.logsumexp(x, axis=-1)
    assert seen == [1, 2] and numba.get_num_threads() == 2  # set for the call, restored
    np.testing.assert_array_equal(got, want)
    seen.clear()
    old = lgm.set_thread_policy("fixed")
    try:
        assert old == "adaptive" and lgm.thread_policy() == "fixed"
        lgm.logsumexp(x, axis=-1)
        assert seen == []  # fixed: Numba's count, untouched
    finally:
        lgm.set_thread_policy(old)
    fake_load["machine"] = 1  # quiet again: nothing is set
    lgm.logsumexp(x, axis=-1)
    assert seen == []


def test_row_functions_and_serial_kernels_pass_through():
    k = lgm.ops.backend_for("cpu").kernels
    assert k.im2col is k._module.im2col  # serial
    assert k.diag_gaussian_logpdf_row is k._module.diag_gaussian_logpdf_row  # njit, for users' njit
    assert k.diag_gaussian_logpdf.kernel is k._module.diag_gaussian_logpdf  # parallel: wrapped
    with pytest.raises(ValueError, match="set_thread_policy"):
        lgm.set_thread_policy("spin")


def test_a_bad_environment_value_warns_and_keeps_adaptive():
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", "import lgm; print(lgm.thread_policy())"],
                       capture_output=True, text=True, env={**__import__("os").environ,
                                                            "LGM_THREAD_POLICY": "spin"})
    assert r.returncode == 0 and r.stdout.strip() == "adaptive"
    assert "LGM_THREAD_POLICY" in r.stderr


def _blas_threads():
    from threadpoolctl import threadpool_info

    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


def test_pair_runs_side_by_side_on_one_blas_thread_each_and_restores(monkeypatch):
    """Backend.pair on the CPU: the second piece on lgm's worker thread with Numba on one thread,
    BLAS on one thread during the pair and restored after it (also after an error); one after
    the other in the caller when not concurrent."""
    import threading

    from lgm._backends import _SerialNumba

    before = _blas_threads()
    assert before  # numpy's BLAS is seen by threadpoolctl
    seen = {}

    def first():
        seen["first"] = (threading.current_thread().name, _blas_threads())
        return 1

    def second():
        seen["second"] = (threading.current_thread().name, numba.get_num_threads(), _blas_threads())
        return 2

    monkeypatch.setattr(policy, "pair_concurrent", lambda: True)
    assert policy.pair(first, second, _SerialNumba) == (1, 2)
    assert seen["first"][0] == threading.current_thread().name and set(seen["first"][1]) == {1}
    assert seen["second"][0].startswith("lgm-pair") and seen["second"][1] == 1
    assert set(seen["second"][2]) == {1} and _blas_threads() == before
    done = []

    def boom():
        raise RuntimeError("first failed")

    with pytest.raises(RuntimeError, match="first failed"):
        policy.pair(boom, lambda: done.append(1), _SerialNumba)
    assert done == [1] and _blas_threads() == before  # the worker finished; limits restored
    monkeypatch.setattr(policy, "pair_concurrent", lambda: False)
    assert policy.pair(first, second, _SerialNumba) == (1, 2)
    assert seen["second"][0] == threading.current_thread().name


def test_pair_is_concurrent_only_with_two_free_cores_and_a_safe_threading_layer(fake_load, monkeypatch):
    lgm.logsumexp(np.zeros((4, 3)), axis=1)  # a parallel kernel has run: the layer is chosen
    layer = numba.threading_layer()
    assert policy.pair_concurrent() == (layer != "workqueue")
    fake_load["machine"] = 2  # one other busy process: one free core
    assert not policy.pair_concurrent()
    monkeypatch.setitem(policy._state, "policy", "fixed")  # fixed: all of the process's cores
    assert policy.pair_concurrent() == (layer != "workqueue")
    monkeypatch.setattr(numba, "threading_layer", lambda: "workqueue")  # aborts on two callers
    assert not policy.pair_concurrent()


def test_a_second_pair_at_the_same_time_runs_in_turn(monkeypatch):
    """One pair at a time: a pair started inside the worker (or by another thread while one
    runs) runs its pieces one after the other, in its own thread, without waiting on the busy
    worker; an error in the worker's piece reaches the caller, with the BLAS limit restored."""
    import threading

    from lgm._backends import _SerialNumba

    monkeypatch.setattr(policy, "pair_concurrent", lambda: True)
    before = _blas_threads()
    here = lambda: threading.current_thread().name  # noqa: E731
    inner = {}

    def second():
        inner["names"] = policy.pair(here, here, _SerialNumba)
        return 2

    assert policy.pair(lambda: 1, second, _SerialNumba) == (1, 2)
    assert inner["names"][0] == inner["names"][1] and inner["names"][0].startswith("lgm-pair")

    def fails():
        raise ValueError("second failed")

    with pytest.raises(ValueError, match="second failed"):
        policy.pair(lambda: 1, fails, _SerialNumba)
    assert _blas_threads() == before
    assert policy.pair(here, here, _SerialNumba)[1].startswith("lgm-pair")  # free again
