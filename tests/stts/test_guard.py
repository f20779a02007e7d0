"""The non-finite guard: a training step reads nothing back from the device, yet skips exactly what the
per-step policy skipped (the fused AdamW's `found_inf`, gradients dropped, a latch after max_bad_steps)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import stts
from stts.engine import apply_settings, recipe_for
from stts.engine.guard import NonFiniteGuard, supports_deferred_skip
from stts.engine.trainer import TrainRun, _adamw, train_step


def make_run(grad_accum: int = 1, max_bad: int = 5, name: str = "mvit_debug_t0.5_s0.5", *, cpu: bool = True,
             precision: str = "no"):  # fmt: skip
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    cfg = apply_settings(recipe_for("mvit"), {"model": name, "grad_accum": grad_accum, "mixup": False,
                                              "max_bad_steps": max_bad})  # fmt: skip
    torch.manual_seed(0)
    model = stts.build_model(name, num_classes=4).train()
    for s in model.selectors():
        s.sigma = 0.1
    groups = stts.engine.param_groups(model, cfg)
    for g in groups:
        g["lr"] = 1e-3
    accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=grad_accum, cpu=cpu)
    prepared, optimizer = accelerator.prepare(model, _adamw(groups, cfg, fused=True))
    assert supports_deferred_skip(optimizer, precision)
    guard = NonFiniteGuard(accelerator.device, max_bad, deferred=True)
    return TrainRun(cfg=cfg, accelerator=accelerator, model=prepared, optimizer=optimizer, guard=guard,
                    precision=precision, bare=model)  # fmt: skip


def batch(model, nan: bool = False, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randn(stts.input_shape(model, batch=2), generator=g)
    if nan:
        video[0, 0, 0, 0, 0] = float("nan")
    return SimpleNamespace(video=video, label=torch.tensor([1, 3]), key=["a", "b"])


class NoHostReads:
    """Fails the test if anything reads a tensor's value back to Python while active."""

    NAMES = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy")

    def __enter__(self):
        self.saved = {n: getattr(torch.Tensor, n) for n in self.NAMES}

        def refuse(name):
            def method(self_, *a, **k):
                raise AssertionError(f"host read: Tensor.{name}")

            return method

        for n in self.NAMES:
            setattr(torch.Tensor, n, refuse(n))
        return self

    def __exit__(self, *exc):
        for n, f in self.saved.items():
            setattr(torch.Tensor, n, f)


def state_of(run):
    params = [p.detach().clone() for p in run.bare.parameters()]
    inner = run.optimizer.optimizer
    moments = [inner.state[p]["exp_avg"].clone() for p in run.bare.parameters() if p in inner.state]
    steps = [float(inner.state[p]["step"]) for p in run.bare.parameters() if p in inner.state]
    return params, moments, steps


def test_a_step_reads_nothing_back_and_a_bad_one_changes_nothing():
    run = make_run()
    with NoHostReads():
        for i in range(2):
            result = train_step(run, batch(run.bare, seed=i))
            run.guard.update(i + 1, result.stepped, result.finite, result.loss)
    before = state_of(run)
    with NoHostReads():
        result = train_step(run, batch(run.bare, nan=True))
        run.guard.update(3, result.stepped, result.finite, result.loss)
    after = state_of(run)
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0], strict=True))  # parameters
    assert all(torch.equal(a, b) for a, b in zip(before[1], after[1], strict=True))  # AdamW moments
    assert before[2] == after[2]  # the step counters rolled back
    records, loss_sum, count = run.guard.settle()  # the one read
    assert [(it, ok) for it, _, ok in records] == [(1, True), (2, True), (3, False)]
    assert count == 2 and loss_sum > 0 and not run.guard.pending
    result = train_step(run, batch(run.bare, seed=5))  # and training goes on
    assert not torch.equal(state_of(run)[0][0], after[0][0])


def test_a_bad_iteration_drops_the_gradients_of_its_accumulation_window():
    """grad_accum 2: [bad, good] steps with the good iteration's gradients only, as a run of [good] alone."""
    a, b = make_run(grad_accum=2), make_run(grad_accum=1)
    train_step(a, batch(a.bare, nan=True))
    torch.manual_seed(11)  # the same noise and drop-path draws in both
    res = train_step(a, batch(a.bare, seed=7))
    assert res.stepped
    # the same good micro-batch alone, its loss halved as accumulation over two iterations does
    b.cfg = apply_settings(b.cfg, {"grad_accum": 1})
    video = batch(b.bare, seed=7)
    torch.manual_seed(11)
    with b.accelerator.accumulate(b.model):
        loss = torch.nn.functional.cross_entropy(b.model(video.video), video.label, label_smoothing=0.1) / 2
        b.accelerator.backward(loss)
        b.accelerator.clip_grad_norm_(b.model.parameters(), 1.0)
        b.optimizer.step()
    for pa, pb in zip(a.bare.parameters(), b.bare.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-7)


def test_the_latch_stops_every_update_after_max_bad_steps_in_a_row():
    run = make_run(max_bad=2)
    for i, nan in enumerate([False, True, True, False, False]):
        result = train_step(run, batch(run.bare, nan=nan, seed=i))
        run.guard.update(i + 1, result.stepped, result.finite, result.loss)
        if i == 2:
            frozen = state_of(run)[0]
    # iterations 4 and 5 had finite losses but came after the stop: nothing changed
    assert all(torch.equal(a, b) for a, b in zip(frozen, state_of(run)[0], strict=True))
    records, _, count = run.guard.settle()
    assert [ok for _, _, ok in records] == [True, False, False, True, True] and count == 1


@pytest.mark.parametrize("precision, fused, expected", [("no", True, True), ("fp16", True, False),
                                                         ("bf16", False, False)])  # fmt: skip
def test_when_the_skip_can_happen_on_the_device(precision, fused, expected):
    p = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([p], fused=True) if fused else torch.optim.AdamW([p])
    assert supports_deferred_skip(opt, precision) is expected
