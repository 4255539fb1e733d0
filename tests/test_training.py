"""Exercise 4: the fused manual training step against autograd, the run loop, and the lecture's result."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from server.core.engine import backward_from, init_params
from server.training.config import TrainConfig
from server.training.evaluation import calibrate_bn, sample_names, split_loss
from server.training.kernels import AutogradBackward, ManualBackward, forward_loss
from server.training.loop import Training
from tests.lecture import LAYERS, PARAM_NAMES, TRAINED_MODE

SMALL = TrainConfig(max_steps=600, lr_decay_step=300, check_every=200)


def _float64_params(dataset, config: TrainConfig) -> dict[str, torch.Tensor]:
    params, _ = init_params(config.model(), dataset.vocab_size)
    return {k: t.double() for k, t in params.items()}


@pytest.mark.parametrize("batch_size", [2, 32, 57])
def test_manual_gradients_match_autograd_float64(lecture_dataset, batch_size):
    config = TrainConfig(batch_size=batch_size)
    p = _float64_params(lecture_dataset, config)
    splits = lecture_dataset.splits(config.block_size)
    Xb, Yb = splits.Xtr[:batch_size], splits.Ytr[:batch_size]
    with torch.no_grad():
        logits, grads, _ = ManualBackward(p, batch_size).grads(Xb, Yb, keep=True)
        loss = ManualBackward.losses([(logits, Yb)])[0]
    leaves = {k: t.clone().requires_grad_(True) for k, t in p.items()}
    ref_loss = forward_loss(leaves, Xb, Yb)  # the lecture's own forward, autograd's backward
    ref_loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-12)
    for name, grad in zip(PARAM_NAMES, grads, strict=True):
        torch.testing.assert_close(grad, leaves[name].grad, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("batch_size", [2, 32, 57])
def test_training_kernels_are_the_declared_forward_and_rules_float64(lecture_dataset, batch_size):
    # the hand-tuned step against the declaration's forward and backward rules of the mode it trains in
    config = TrainConfig(batch_size=batch_size)
    p = _float64_params(lecture_dataset, config)
    splits = lecture_dataset.splits(config.block_size)
    Xb, Yb = splits.Xtr[-batch_size:], splits.Ytr[-batch_size:]
    model = replace(config.model(), dtype="float64")
    bp = backward_from(model, TRAINED_MODE, p, Xb, Yb)
    with torch.no_grad():
        logits, grads, acts = ManualBackward(p, batch_size).grads(Xb, Yb, keep=True)
    torch.testing.assert_close(logits, bp.values["logits"], rtol=1e-12, atol=1e-12)
    for name, grad in zip(PARAM_NAMES, grads, strict=True):
        torch.testing.assert_close(grad, bp.grad_at(name, bp.total_steps), rtol=1e-9, atol=1e-12, msg=name)
    for name in ("logits", "hpreact", "hprebn"):
        declared = bp.grad_at(name, bp.total_steps)
        torch.testing.assert_close(acts["d" + name], declared, rtol=1e-9, atol=1e-12, msg=name)
    # the autograd step's two forwards (the checks' reference, the fair baseline) are twins of the declared one too
    reference = AutogradBackward(p, batch_size)
    loss, ref_grads = reference.grads(Xb, Yb)
    assert loss.item() == pytest.approx(bp.loss, rel=1e-12)
    assert reference.fast_loss(Xb, Yb).item() == pytest.approx(bp.loss, rel=1e-12)
    for name, grad in zip(PARAM_NAMES, ref_grads, strict=True):
        torch.testing.assert_close(grad, bp.ref_grads[name], rtol=1e-9, atol=1e-12, msg=name)


def _lecture_eval(p, X, stats=None):
    """The lecture's evaluation lines, once per declared hidden block: logits, and each batchnorm's statistics
    (computed on X, the lecture's calibration, unless given)."""
    stats = {} if stats is None else stats
    h = p["C"][X].view(X.shape[0], -1)  # (N, block_size * n_embd)
    for block in LAYERS.hidden:
        hpreact = h @ p[block.linear.W] + p[block.linear.b]  # (N, n_hidden)
        mean, var = block.running
        if mean not in stats:
            stats[mean], stats[var] = hpreact.mean(0, keepdim=True), hpreact.var(0, keepdim=True, unbiased=True)
        hpreact = p[block.gain] * (hpreact - stats[mean]) * (stats[var] + 1e-5) ** -0.5 + p[block.bias]
        h = torch.tanh(hpreact)  # (N, n_hidden)
    return h @ p[LAYERS.output.W] + p[LAYERS.output.b], stats


def test_evaluation_is_the_lectures_code(lecture_dataset):
    # the lecture's calibration, split loss and sampling lines written out: the declared forward gives the same bits
    config = TrainConfig(n_hidden=64)
    p, _ = init_params(config.model(), lecture_dataset.vocab_size)
    splits = lecture_dataset.splits(config.block_size)
    X, Y = splits.Xdev, splits.Ydev
    logits, stats = _lecture_eval(p, X)
    bn = calibrate_bn(p, X)
    assert list(bn) == list(stats) and all(torch.equal(bn[k], stats[k]) for k in stats)
    assert split_loss(p, bn, X, Y) == float(torch.nn.functional.cross_entropy(logits, Y))
    g = torch.Generator().manual_seed(config.seed + 10)
    names = []
    for _ in range(5):
        context, chars = [0] * config.block_size, []
        while True:
            probs = torch.nn.functional.softmax(_lecture_eval(p, torch.tensor([context]), stats)[0], dim=1)
            ix = int(torch.multinomial(probs, num_samples=1, generator=g))
            if ix == 0:
                break
            context = context[1:] + [ix]
            chars.append(lecture_dataset.itos[ix])
        names.append("".join(chars))
    assert sample_names(p, bn, lecture_dataset, config.block_size, config.seed, count=5) == names


def test_losses_of_many_steps_at_once_are_each_steps_cross_entropy():
    g = torch.Generator().manual_seed(0)
    records = [(torch.randn(8, 27, generator=g), torch.randint(0, 27, (8,), generator=g)) for _ in range(5)]
    expected = torch.stack([torch.nn.functional.cross_entropy(lg, y) for lg, y in records])
    torch.testing.assert_close(ManualBackward.losses(records), expected)


def test_a_run_whose_clock_flushes_its_last_step_finishes(lecture_dataset):
    # every step takes a whole second of the test's clock, so the last step is flushed inside the loop; the
    # flush after the loop then had no losses left and the last curve point indexed an empty tensor (a CI
    # run hit it when the 0.5 s emit fell on step 200,000). 4002 steps: a curve stride of 2, whose last
    # point (step 4001) is off the stride
    ticks = iter(range(10**6))
    events = []
    config = TrainConfig(max_steps=4002, lr_decay_step=2000, check_every=4002, n_hidden=16)
    training = Training(config, lecture_dataset, lambda kind, data: events.append((kind, data)), lambda: next(ticks))
    assert training.run() == "finished"
    points = [p for kind, data in events if kind == "progress" for p in data["points"]]
    assert [s for s, _ in points].count(4001) == 1 and points[-1][0] == 4001
    assert len(points) == 2002  # steps 0, 2, ..., 4000 and the last
    assert [kind for kind, _ in events][-2:] == ["result", "status"]


def test_manual_step_is_sgd_with_the_true_gradient(lecture_dataset):
    config = TrainConfig()
    p = _float64_params(lecture_dataset, config)
    before = {k: t.clone() for k, t in p.items()}
    splits = lecture_dataset.splits(3)
    Xb, Yb = splits.Xtr[100:132], splits.Ytr[100:132]
    _, grads = AutogradBackward({k: t.clone() for k, t in p.items()}, 32).grads(Xb, Yb)
    with torch.no_grad():
        ManualBackward(p, 32).step(Xb, Yb, lr=0.1)
    for name, grad in zip(PARAM_NAMES, grads, strict=True):
        torch.testing.assert_close(p[name], before[name] - 0.1 * grad, rtol=1e-9, atol=1e-12, msg=name)


def _collect(config, dataset, should_stop=lambda: None):
    events = []
    training = Training(config, dataset, lambda kind, data: events.append((kind, data)))
    status = training.run(should_stop)
    return status, events, training


def test_manual_and_autograd_runs_track_each_other(lecture_dataset):
    runs = {
        kind: _collect(TrainConfig(**{**SMALL.as_dict(), "backward": kind}), lecture_dataset)
        for kind in ("manual", "autograd")
    }
    curves = {}
    for kind, (status, events, _) in runs.items():
        assert status == "finished"
        assert [k for k, _ in events][0] == "status" and [k for k, _ in events][-2:] == ["result", "status"]
        points = [pt for k, d in events if k == "progress" for pt in d["points"]]
        steps = [s for s, _ in points]
        assert steps == sorted(steps) and steps[0] == 0 and steps[-1] == SMALL.max_steps - 1
        curves[kind] = torch.tensor([v for _, v in points])
        checks = [d for k, d in events if k == "check"]
        assert [c["step"] for c in checks] == [0, 200, 400, 599]
        assert all(c["max"] < 1e-6 for c in checks)  # float32 manual vs autograd gradients, all parameters
        result = next(d for k, d in events if k == "result")
        assert len(result["samples"]) == 20 and 2.0 < result["val_loss"] < 3.0
    # the same seed, batches and updates: the two backward passes differ only by float32 rounding
    assert (curves["manual"] - curves["autograd"]).abs().max() < 1e-3
    assert curves["manual"][-1] < curves["manual"][0] - 0.1  # log10 loss went down


def test_statistics_are_recorded(lecture_dataset):
    _, events, _ = _collect(SMALL, lecture_dataset)
    progress = [d for k, d in events if k == "progress"]
    ud = [u for d in progress for u in d["ud"]]
    assert [s for s, _ in ud] == list(range(0, 600, 100))
    p, _ = init_params(SMALL.model(), lecture_dataset.vocab_size)
    assert set(ud[0][1]) == {k for k, t in p.items() if t.dim() == 2 and 1 not in t.shape}  # C, W1, W2: the matrices
    assert all(-6 < v < 0 for _, r in ud for v in r.values())  # log10 update/data ratio
    saturation = [v for d in progress for _, v in d["saturation"]]
    assert len(saturation) == 6 and all(0 <= v <= 1 for v in saturation)
    hists = [d for k, d in events if k == "histograms"]
    assert hists[0]["step"] == 0 and hists[-1]["step"] == 599 and len(hists) == 11
    for block in LAYERS.hidden:  # every hidden block's tanh
        h = hists[0]["activations"][block.h]
        assert sum(h["counts"]) == 32 * 200 and -1 <= h["edges"][0] and h["edges"][-1] <= 1


def test_a_huge_learning_rate_diverges_and_is_recorded(lecture_dataset):
    status, events, _ = _collect(TrainConfig(max_steps=20_000, lr=1e37, lr_decay_step=20_000), lecture_dataset)
    assert status == "diverged"
    points = [pt for k, d in events if k == "progress" for pt in d["points"]]
    assert any(v is None for _, v in points)  # the non-finite losses are in the curve, as null
    assert not any(k == "result" for k, _ in events)


def test_should_stop_is_asked_at_each_flush_and_ends_the_run(lecture_dataset):
    asked = []

    def stop():
        asked.append(1)
        return "cancelled" if len(asked) == 3 else None

    events = []
    holder = []

    def clock():  # every step takes 0.125 s (exact in binary): EMIT_EVERY_S = 0.5 s is 4 steps
        training = holder[0] if holder else None
        return 0.0 if training is None else 0.125 * (training.flushed + len(training.pending))

    training = Training(TrainConfig(max_steps=200_000), lecture_dataset, lambda k, d: events.append((k, d)), clock)
    holder.append(training)
    assert training.run(stop) == "cancelled" and len(asked) == 3
    progress = [d for k, d in events if k == "progress"]
    assert [d["step"] for d in progress] == [4, 8, 12]  # a flush, then a question, every 4 steps
    assert progress[0]["steps_per_s"] == 8.0  # 4 steps in 0.5 s of the test's clock
    assert events[-1] == ("status", {"status": "cancelled", "step": 12})
    assert training.flushed == 12 and not any(k == "result" for k, _ in events)


def test_a_stop_is_looked_for_by_the_clock_not_a_step_count(lecture_dataset):
    ticks = [0.0]

    def clock():  # each reading 0.2 s later: a step of the largest config with checks takes ~50 ms
        ticks[0] += 0.2
        return ticks[0]

    training = Training(TrainConfig(max_steps=5000), lecture_dataset, lambda kind, data: None, clock=clock)
    assert training.run(lambda: "cancelled") == "cancelled"
    assert training.flushed == 3  # asked once EMIT_EVERY_S of clock time went by (3 x 0.2 s), not at step 256


def test_check_events_are_bounded_per_run(lecture_dataset, monkeypatch):
    import server.training.loop as training

    monkeypatch.setattr(training, "CHECK_EVENTS", 50)
    config = TrainConfig(max_steps=1000, lr_decay_step=500, check_every=1, n_hidden=16, batch_size=8)
    _, events, _ = _collect(config, lecture_dataset)
    checks = [d for k, d in events if k == "check"]
    assert len(checks) == 50 and sum(c["checks"] for c in checks) == 1000  # every step compared, 20 a group
    assert [c["step"] for c in checks] == list(range(19, 1000, 20))
    assert all(c["max"] == max(c["maxdiff"].values()) < 1e-5 for c in checks)


def test_statistics_are_bounded_per_run(lecture_dataset, monkeypatch):
    import server.training.loop as training

    monkeypatch.setattr(training, "STATS_POINTS", 4)
    _, events, _ = _collect(SMALL, lecture_dataset)  # 600 steps: every 150, not every 100
    ud = [u for k, d in events if k == "progress" for u in d["ud"]]
    assert [s for s, _ in ud] == [0, 150, 300, 450]


def test_bad_configs_are_refused():
    for bad in (
        {"lr": math.nan},
        {"lr": -1.0},
        {"max_steps": 0},
        {"n_hidden": 0},
        {"backward": "sgd"},
        {"batch_size": 1},
    ):
        with pytest.raises(ValueError):
            TrainConfig(**bad)


@pytest.mark.slow
def test_lecture_exercise_4_result(lecture_dataset):
    # the lecture's Exercise 4, trained with the manual backward alone: train 2.07, val 2.11
    status, events, _ = _collect(TrainConfig(), lecture_dataset)
    assert status == "finished"
    result = next(d for k, d in events if k == "result")
    assert abs(result["train_loss"] - 2.07) <= 0.03, result
    assert abs(result["val_loss"] - 2.11) <= 0.03, result
    print(
        f"\nlecture run: train {result['train_loss']:.4f} val {result['val_loss']:.4f} in {result['duration_s']:.1f} s"
    )
