"""The governor's policy against a small hand-written simulated device (no GPU needed)."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from models.footprint import GIB, Footprint
from models.governor import DoesNotFit, Governor, OutOfMemory


class SimulatedDevice:
    """A device with a fixed capacity; 'allocations' are what the fake models below hold."""

    name = "simulated"

    def __init__(self, total: int) -> None:
        self.total = total
        self.allocated = 0
        self.peak = 0
        self.lock = threading.Lock()

    def total_bytes(self) -> int:
        return self.total

    def free_bytes(self) -> int:
        return self.total - self.allocated

    def allocated_bytes(self) -> int:
        return self.allocated

    def peak_bytes(self) -> int:
        return self.peak

    def release_cached(self) -> None:
        pass

    def take(self, n: int) -> None:
        with self.lock:
            if self.allocated + n > self.total:
                raise MemoryError(f"simulated OOM: {n} more with {self.allocated} of {self.total} used")
            self.allocated += n
            self.peak = max(self.peak, self.allocated)

    def give(self, n: int) -> None:
        with self.lock:
            self.allocated -= n


class FakeModel:
    """Holds simulated device memory until unloaded."""

    def __init__(self, device: SimulatedDevice, size: int) -> None:
        self.device, self.size = device, size
        device.take(size)

    def unload(self) -> None:
        self.device.give(self.size)
        self.size = 0


def loader(device: SimulatedDevice, size: int, delay: float = 0.0):
    def load() -> FakeModel:
        if delay:
            time.sleep(delay)
        return FakeModel(device, size)

    return load


def fp(weights_gib: float, reserve_gib: float = 0) -> Footprint:
    return Footprint(int(weights_gib * GIB), int(reserve_gib * GIB), 0)


def make(total_gib: float = 24, budget_gib: float | None = None):
    device = SimulatedDevice(int(total_gib * GIB))
    budget = int(budget_gib * GIB) if budget_gib is not None else None
    return device, Governor(device, budget, wait_seconds=5)


def test_budget_is_the_smaller_of_setting_and_free():
    device, governor = make(total_gib=16, budget_gib=24)
    assert governor.budget == 16 * GIB
    device, governor = make(total_gib=80, budget_gib=24)
    assert governor.budget == 24 * GIB


def test_lru_eviction_and_measured_size_replaces_estimate():
    device, governor = make(budget_gib=12)
    governor.register("text", loader(device, 7 * GIB), estimate=fp(7, 1))
    governor.register("vision", loader(device, 7 * GIB), estimate=fp(7, 1))
    with governor.acquire("text") as model:
        assert model.size == 7 * GIB
    assert governor.state().models[0].measured == 7 * GIB
    assert governor.state().models[0].footprint == 8 * GIB
    with governor.acquire("vision"):
        assert not governor.loaded("text")  # evicted: both do not fit in 12 GiB
    assert device.allocated == 7 * GIB
    assert any("evicted (least recently used) to make room for vision" in e for e in governor.events)


class CacheHoldingModel(FakeModel):
    """Like a model whose captured decoder allocated its static KV cache at load: part of its size is held."""

    def __init__(self, device: SimulatedDevice, weights: int, held: int) -> None:
        super().__init__(device, weights + held)
        self.reserved_bytes = held


def test_a_cache_held_from_load_is_counted_once_as_the_reserve():
    device, governor = make(budget_gib=12)
    governor.register("llm", lambda: CacheHoldingModel(device, 7 * GIB, 3 * GIB), estimate=fp(7, 2))
    with governor.acquire("llm"):
        state = governor.state().models[0]
        assert state.measured == 7 * GIB  # the weights alone
        assert state.footprint == 10 * GIB  # + the 3 GiB held, not + the 2 GiB estimated reserve on top
    assert any("3.00 GiB of it held by the decoder" in e for e in governor.events)
    governor.unload("llm")
    assert device.allocated == 0


class GraphPoolModel(CacheHoldingModel):
    """Like a model whose captured graphs keep a pool: after capture its blocks are free (not allocated) but stay
    reserved for the replays, so the decoder holds more than the allocated count shows."""

    def __init__(self, device: SimulatedDevice, weights: int, held: int, pooled: int) -> None:
        super().__init__(device, weights, held)
        self.reserved_bytes = held + pooled
        self.pooled_bytes = pooled


def test_graph_pools_count_in_the_reserve_and_not_against_the_weights():
    device, governor = make(budget_gib=16)
    governor.register("llm", lambda: GraphPoolModel(device, 7 * GIB, 3 * GIB, GIB), estimate=fp(7, 2))
    with governor.acquire("llm"):
        state = governor.state().models[0]
        assert state.measured == 7 * GIB  # the weights alone, not weights - pool
        assert state.footprint == 11 * GIB  # + cache + pool
    assert any("4.00 GiB of it held by the decoder" in e for e in governor.events)


def test_refuses_a_model_that_can_never_fit_naming_sizes():
    device, governor = make(budget_gib=6)
    governor.register("llama-13b", loader(device, 7 * GIB), estimate=fp(10))
    with pytest.raises(DoesNotFit, match=r"llama-13b needs 10.00 GiB but the memory budget is 6.00 GiB"):
        with governor.acquire("llama-13b"):
            pass
    assert device.allocated == 0


def test_pinned_models_count_against_what_can_fit():
    device, governor = make(budget_gib=12)
    governor.adopt("embedder", FakeModel(device, 4 * GIB), measured=4 * GIB, pinned=True)
    governor.register("llm", loader(device, 9 * GIB), estimate=fp(9))
    with pytest.raises(DoesNotFit, match="pinned models hold 4.00 GiB"):
        with governor.acquire("llm"):
            pass
    assert governor.loaded("embedder")


def test_model_in_use_is_never_evicted_the_other_waits():
    device, governor = make(budget_gib=10)
    governor.register("a", loader(device, 6 * GIB), estimate=fp(6))
    governor.register("b", loader(device, 6 * GIB), estimate=fp(6))
    order = []
    with governor.acquire("a"):
        waiter = threading.Thread(target=lambda: order.append(("b", _use(governor, "b", device))))
        waiter.start()
        time.sleep(0.3)
        assert governor.loaded("a") and not governor.loaded("b")
        order.append(("a-released", None))
    waiter.join(5)
    assert [o[0] for o in order] == ["a-released", "b"]
    assert order[1][1] <= 10 * GIB


def _use(governor: Governor, name: str, device: SimulatedDevice) -> int:
    with governor.acquire(name):
        return device.allocated


def test_out_of_memory_on_load_evicts_idle_and_retries_once():
    device, governor = make(total_gib=16, budget_gib=16)
    governor.register("small", loader(device, 6 * GIB), estimate=fp(1))  # badly underestimated
    governor.register("big", loader(device, 12 * GIB), estimate=fp(4))
    with governor.acquire("small"):
        pass
    with governor.acquire("big") as model:  # 6 + 12 > 16: OOM, evict "small", retry
        assert model.size == 12 * GIB
    assert not governor.loaded("small")
    assert any("out of memory loading big; evicting idle models and retrying once" in e for e in governor.events)


def test_out_of_memory_twice_reports():
    device, governor = make(total_gib=8, budget_gib=8)
    governor.register("huge", loader(device, 20 * GIB), estimate=fp(2))
    with pytest.raises(OutOfMemory, match="out of memory loading huge"):
        with governor.acquire("huge"):
            pass
    assert device.allocated == 0 and not governor.loaded("huge")


def test_unload_frees_memory_and_refuses_while_in_use():
    device, governor = make()
    governor.register("m", loader(device, 3 * GIB), estimate=fp(3))
    with governor.acquire("m"):
        assert not governor.unload("m")
    assert governor.unload("m")
    assert device.allocated == 0
    assert not governor.unload("m")


def test_threads_hammering_acquire_never_exceed_budget():
    device, governor = make(total_gib=64, budget_gib=10)
    sizes = {"a": 4, "b": 5, "c": 3, "d": 6}
    for name, size in sizes.items():
        governor.register(name, loader(device, size * GIB, delay=0.001), estimate=fp(size))
    errors = []

    def worker(seed: int) -> None:
        names = list(sizes)
        try:
            for i in range(40):
                name = names[(seed * 7 + i * 3) % len(names)]
                with governor.acquire(name) as model:
                    assert model.size == sizes[name] * GIB
                    assert device.allocated <= 10 * GIB
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert device.peak <= 10 * GIB


class GovernorMachine(RuleBasedStateMachine):
    """Random sequences of acquire, release, pin and unload keep the invariants."""

    def __init__(self) -> None:
        super().__init__()
        self.device, self.governor = make(total_gib=64, budget_gib=12)
        self.sizes = {"a": 3, "b": 4, "c": 5, "d": 7, "e": 2}
        for name, size in self.sizes.items():
            self.governor.register(name, loader(self.device, size * GIB), estimate=fp(size))
        self.held: list[tuple[str, object]] = []

    @rule(name=st.sampled_from(["a", "b", "c", "d", "e"]))
    def acquire(self, name):
        in_use = {n for n, _ in self.held}
        unevictable = sum(
            m.footprint
            for m in self.governor.state().models
            if m.resident and m.name != name and (m.pinned or m.name in in_use)
        )
        if name not in in_use and unevictable + self.sizes[name] * GIB > self.governor.budget:
            return  # would wait for a release (single-threaded here) or be refused
        context = self.governor.acquire(name)
        model = context.__enter__()
        self.held.append((name, context))
        assert model.size == self.sizes[name] * GIB

    @precondition(lambda self: self.held)
    @rule(index=st.integers(min_value=0, max_value=10))
    def release(self, index):
        name, context = self.held.pop(index % len(self.held))
        context.__exit__(None, None, None)

    @rule(name=st.sampled_from(["a", "b", "c", "d", "e"]), pinned=st.booleans())
    def pin(self, name, pinned):
        self.governor.pin(name, pinned)

    @rule(name=st.sampled_from(["a", "b", "c", "d", "e"]))
    def unload(self, name):
        in_use = name in {n for n, _ in self.held}
        unloaded = self.governor.unload(name)
        assert not (in_use and unloaded)

    @invariant()
    def within_budget(self):
        assert self.device.allocated <= self.governor.budget

    @invariant()
    def models_in_use_stay_resident(self):
        for name, _ in self.held:
            assert self.governor.loaded(name)

    def teardown(self):
        for _, context in self.held:
            context.__exit__(None, None, None)


TestGovernorMachine = GovernorMachine.TestCase
TestGovernorMachine.settings = hyp_settings(max_examples=60, stateful_step_count=30, deadline=None)


def test_the_13b_estimate_counts_a_full_context_prefill_and_still_fits_12_gib():
    """LLaMA-2-13B in NF4 with a 4,096-token cache (+ the kept prefix): the workspace holds the activations of a
    prompt that fills the context (the captured prefill keeps them in its graph pool on a GPU), and the whole still
    fits the 12 GiB budget the README promises."""
    from transformers import LlamaConfig

    from bench.random_checkpoints import LLAMA2_13B
    from models.footprint import estimate, prefill_bytes
    from models.llm import PREFIX_TOKENS

    config = LlamaConfig(**LLAMA2_13B)
    context = 4096 + PREFIX_TOKENS
    footprint = estimate(config, "nf4", context)
    activations = prefill_bytes(config, context)
    # per token: residual + its norm (2 × 5,120) and gate, up, silu(gate), product (4 × 13,824), bf16
    assert activations == context * (2 * 5120 + 4 * 13824) * 2 + 5120 * 13824 * 2
    assert footprint.workspace >= activations + 256 * 1024**2
    assert 6.6 * GIB < footprint.weights < 6.8 * GIB and footprint.total < 12 * GIB
