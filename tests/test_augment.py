"""fit(augment=...): per-epoch draws of the training rows, exact resume, the digits' runs, and
the model-size warning (issue 14, items 3 and 4)."""

from __future__ import annotations

import json
import re
import warnings

import pytest
import torch

import pyroflows.runs as runs
import pyroflows.train as train
from pyroflows.checkpoint import load_checkpoint
from pyroflows.cli import _cli_names
from pyroflows.data import Dequantize, bits_per_dim, dequantize, load_digits, make_toy
from pyroflows.distributions import Flow
from pyroflows.errors import DataError, ModelSizeWarning, OptionError, SettingsChangedError
from pyroflows.train import History, fit, validation_split

LEVELS = 5
DIM = 3


def _integers(rows: int = 200, seed: int = 0) -> torch.Tensor:
    """Integer rows in [0, LEVELS - 1], correlated across columns."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randint(0, LEVELS, (rows, 1), generator=generator)
    jitter = torch.randint(-1, 2, (rows, DIM), generator=generator)
    return (base + jitter).clamp(0, LEVELS - 1).float()


def _model(seed: int = 0, **options) -> Flow:
    torch.manual_seed(seed)
    return Flow.build("realnvp", DIM, num_layers=2, hidden_dims=[16], **options)


def _same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


FIT = {"batch_size": 32, "progress": False, "lr": 5e-3}


# -- the hook -------------------------------------------------------------------------------------


def test_dequantize_object_is_the_formula_with_a_generator():
    k = _integers()
    x = Dequantize(levels=LEVELS)(k, torch.Generator().manual_seed(7))
    assert x.shape == k.shape and x.dtype == torch.float32
    assert torch.equal(torch.floor(LEVELS * x), k)  # (k + u) / L with u in [0, 1)
    again = dequantize(k, LEVELS, torch.Generator().manual_seed(7))
    assert torch.equal(x, again)
    assert not torch.equal(x, dequantize(k, LEVELS, torch.Generator().manual_seed(8)))
    assert repr(Dequantize(levels=17)) == "Dequantize(levels=17)"
    with pytest.raises(ValueError, match="integer values in"):
        Dequantize(levels=4)(k, torch.Generator())
    with pytest.raises(ValueError, match="at least 1"):
        Dequantize(levels=0)


def test_the_hook_is_called_once_per_epoch_with_a_generator_from_seed_and_epoch():
    calls = []

    def augment(rows, generator):
        calls.append((len(rows), generator.initial_seed()))
        return dequantize(rows, LEVELS, generator)

    data = _integers()  # 180 training rows, 20 validation rows
    fit(_model(), data, augment=augment, epochs=4, seed=3, **FIT)
    seeds = [seed for _, seed in calls]
    # The first epoch's draw (also the standardisation's), the validation rows' fixed draw,
    # then one draw at the start of each later epoch.
    assert [rows for rows, _ in calls] == [180, 20, 180, 180, 180]
    expected = [train._stream_seed(3, f"augment:{epoch}") for epoch in range(4)]
    assert [seeds[0], *seeds[2:]] == expected
    assert seeds[1] == train._stream_seed(3, "augment:validation")
    assert len(set(seeds)) == 5
    calls.clear()
    fit(_model(), data, augment=augment, epochs=2, seed=4, **FIT)
    assert not {seed for _, seed in calls} & set(seeds)  # another seed, other draws


def test_each_epoch_trains_on_a_new_draw_and_the_statistics_come_from_the_first():
    seen = []
    original = train._step

    def spy(loop, rows, step):
        if loop.data.train is not (seen[-1] if seen else None):
            seen.append(loop.data.train)
        return original(loop, rows, step)

    data = _integers()
    model = _model()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "_step", spy)
        fit(model, data, augment=Dequantize(LEVELS), epochs=3, val_fraction=0, **FIT)
    assert len(seen) == 3 and not torch.equal(seen[0], seen[1])
    for rows in seen:
        assert torch.equal(torch.floor(LEVELS * rows), data)  # each a dequantisation of data
    generator = torch.Generator().manual_seed(train._stream_seed(0, "augment:0"))
    first = dequantize(data, LEVELS, generator)
    assert torch.equal(seen[0], first)
    torch.testing.assert_close(model.data_loc, first.double().mean(0).float())


def test_two_runs_with_the_same_seed_are_identical_and_another_seed_differs():
    data = _integers()
    runs_ = []
    for seed in (0, 0, 1):
        model = _model()
        history = fit(model, data, augment=Dequantize(LEVELS), epochs=3, seed=seed, **FIT)
        runs_.append((model.state_dict(), history))
    _same_state(runs_[0][0], runs_[1][0])
    assert runs_[0][1].train_nll == runs_[1][1].train_nll
    assert runs_[0][1].val_nll == runs_[1][1].val_nll
    assert runs_[0][1].train_nll != runs_[2][1].train_nll


def test_a_run_stopped_mid_epoch_resumes_bit_identically_with_augmentation(tmp_path):
    data = _integers(230)  # 207 training rows: 7 steps of 32 per epoch
    settings = {"epochs": 3, "augment": Dequantize(LEVELS), "checkpoint_every": 2, **FIT}
    straight = _model()
    fit(straight, data, checkpoint=tmp_path / "a.pt", **settings)
    stopped = _model()
    fit(stopped, data, checkpoint=tmp_path / "b.pt", max_steps=11, **settings)
    saved = load_checkpoint(tmp_path / "b.pt")
    assert saved["state"]["epoch"] == 1 and saved["state"]["batch"] == 4  # mid-epoch 2
    assert saved["settings"]["augment"] == "Dequantize(levels=5)"
    resumed = _model(seed=1)  # other initial weights: all must come from the checkpoint
    history = fit(resumed, data, checkpoint=tmp_path / "b.pt", resume=True, **settings)
    _same_state(resumed.state_dict(), straight.state_dict())
    reference = load_checkpoint(tmp_path / "a.pt")["history"]
    assert history.train_nll == reference["train_nll"]
    assert history.val_nll == reference["val_nll"]


def test_a_changed_augmentation_is_refused_on_resume(tmp_path):
    data = _integers()
    path = tmp_path / "c.pt"
    fit(_model(), data, epochs=1, checkpoint=path, augment=Dequantize(LEVELS), **FIT)
    for other, shown in [(Dequantize(LEVELS + 1), "'Dequantize(levels=6)'"), (None, "None")]:
        refused = re.escape(f"augment 'Dequantize(levels=5)' -> {shown}.")
        with pytest.raises(SettingsChangedError, match=rf"^[^,]*: {refused}.*cannot change"):
            fit(_model(), data, epochs=1, checkpoint=path, resume=True, augment=other, **FIT)
    with pytest.raises(OptionError, match="augment cannot change"):
        fit(
            _model(),
            data,
            epochs=2,
            checkpoint=path,
            resume=True,
            augment=Dequantize(LEVELS),
            override={"augment": None},
            **FIT,
        )
    # A run without augmentation refuses one on resume too.
    plain = tmp_path / "plain.pt"
    fit(_model(), dequantize(data, LEVELS), epochs=1, checkpoint=plain, **FIT)
    with pytest.raises(SettingsChangedError, match=r"augment None -> 'Dequantize\(levels=5\)'"):
        fit(_model(), data, epochs=2, checkpoint=plain, resume=True, augment=Dequantize(5), **FIT)


def test_a_function_is_recorded_by_name_without_memory_addresses():
    def noise(rows, generator):
        return rows + 0.1 * torch.rand(rows.shape, generator=generator)

    assert train._augment_setting(noise).endswith(".<locals>.noise")
    assert train._augment_setting(None) is None
    assert " at 0x" not in train._augment_setting(object())


def test_a_bad_augmentation_is_refused_naming_the_draw():
    data = _integers()
    with pytest.raises(DataError, match=r"augment's epoch 1 rows: .*shape \(180, 3\), got \(90"):
        fit(_model(), data, augment=lambda rows, g: rows[::2], **FIT)
    with pytest.raises(DataError, match="augment's epoch 1 rows has non-finite"):
        fit(_model(), data, augment=lambda rows, g: rows / 0, **FIT)


def test_explicit_validation_rows_are_used_as_given():
    data = _integers()
    validation = dequantize(_integers(seed=1), LEVELS)
    calls = []

    def augment(rows, generator):
        calls.append(len(rows))
        return dequantize(rows, LEVELS, generator)

    history = fit(_model(), data, val_data=validation, augment=augment, epochs=2, **FIT)
    assert calls == [200, 200]  # the training rows' draws only
    assert all(v == v for v in history.val_nll)  # scored, finite


# -- the digits' runs -----------------------------------------------------------------------------


def test_digits_runs_redraw_the_dequantisation_and_validate_on_distinct_images(tmp_path):
    pytest.importorskip("sklearn")
    given = {}
    scored = []
    original_fit, original_nll = runs.fit, train._mean_nll

    def spy_fit(model, data, **options):
        given.update(data=data, augment=options["augment"])
        return original_fit(model, data, **options)

    def spy_nll(model, data, context, batch_size):
        scored.append(data)
        return original_nll(model, data, context, batch_size)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(runs, "fit", spy_fit)
        patch.setattr(train, "_mean_nll", spy_nll)
        metrics = runs.fit_run(
            "digits",
            tmp_path,
            "realnvp",
            {"num_layers": 1, "hidden_dims": [8]},
            epochs=2,
            progress=False,
        )
    images = load_digits("train")
    assert torch.equal(given["data"], images)  # the integers, one row per image
    assert given["augment"] == Dequantize(17) and metrics["augment"] == "Dequantize(levels=17)"
    train_images, _, val_images, _ = validation_split(images, fraction=0.1, seed=0)
    assert len(scored) == 2 and torch.equal(scored[0], scored[1])  # one fixed draw
    assert torch.equal(torch.floor(17 * scored[0]), val_images)
    rows = {tuple(row.tolist()) for row in train_images}
    assert len(rows) == len(train_images)  # no image repeated among the training rows
    assert not rows & {tuple(row.tolist()) for row in val_images}  # none held out, too
    # The test split keeps its fixed draw from the seed, in bits/dim as before.
    test = runs.load_data("digits", "test", 0, 0)
    assert torch.equal(test, dequantize(load_digits("test"), seed=1))
    nll = runs.evaluate_run(tmp_path, "digits")
    assert nll["bits_per_dim"] == pytest.approx(float(bits_per_dim(nll["nll"], 64)))
    assert metrics["test"] == pytest.approx(nll)


def test_digits_without_augmentation_fit_one_fixed_draw(tmp_path):
    pytest.importorskip("sklearn")
    metrics = runs.fit_run(
        "digits",
        tmp_path,
        "realnvp",
        {"num_layers": 1, "hidden_dims": [8]},
        augment=None,
        epochs=1,
        progress=False,
    )
    assert metrics["augment"] is None
    with pytest.raises(OptionError, match="augment must be 'auto'"):
        runs.fit_run("moons", tmp_path / "x", "realnvp", augment="yes", num_samples=50)


# -- the model-size warning -----------------------------------------------------------------------


def _history(best: int, epochs: int, stopped: bool = True) -> History:
    values = [float(abs(e - best)) for e in range(1, epochs + 1)]
    return History(
        epoch=list(range(1, epochs + 1)),
        val_nll=values,
        train_nll=values,
        best_epoch=best,
        stopped_early=stopped,
    )


def test_the_size_warning_needs_both_a_large_model_and_an_early_best_epoch():
    model = Flow.build("realnvp", 2, num_layers=2, hidden_dims=[64, 64])  # 8,836 parameters
    parameters = sum(p.numel() for p in model.parameters())
    small = train._Data(torch.zeros(40, 2), None, torch.zeros(10, 2), None)  # 80 values
    large = train._Data(torch.zeros(parameters, 2), None, torch.zeros(10, 2), None)
    unvalidated = train._Data(torch.zeros(40, 2), None, None, None)
    message = train._size_warning(model, small, _history(3, 23), augmented=False)
    assert f"{parameters:,} parameters for 40 training rows of 2 values" in message
    assert "early stopping kept epoch 3 of 23" in message
    assert "num_layers, hidden_dims" in message and "augment=" in message
    assert "augment=" not in train._size_warning(model, small, _history(3, 23), True)
    assert train._size_warning(model, large, _history(3, 23), False) is None
    assert train._size_warning(model, small, _history(6, 26), False) is None
    assert train._size_warning(model, small, _history(3, 30, stopped=False), False) is None
    assert train._size_warning(model, unvalidated, _history(3, 23), False) is None
    # The command line names its own options.
    shown = _cli_names(message)
    assert "(--layers, --hidden)" in shown and "--weight-decay 1e-4" in shown


def test_fit_warns_once_on_a_huge_model_for_tiny_data_that_stops_early():
    torch.manual_seed(0)
    data = 0.1 * torch.randn(40, 2)
    validation = 0.1 * torch.randn(200, 2) + torch.tensor([0.3, 0.0])  # off the rows
    huge = Flow.build("realnvp", 2, num_layers=2, hidden_dims=[64, 64])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(
            huge, data, val_data=validation, epochs=50, patience=3, batch_size=8, lr=1e-2,
            progress=False,
        )  # fmt: skip
    sizes = [w for w in caught if issubclass(w.category, ModelSizeWarning)]
    assert history.stopped_early and history.best_epoch <= train.EARLY_EPOCHS
    assert len(sizes) == 1 and "parameters for 40 training rows" in str(sizes[0].message)


def test_a_normal_fit_does_not_warn_about_its_size():
    data = make_toy("moons", 1000, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModelSizeWarning)
        fit(_model_2d(), data, epochs=3, patience=1, progress=False)


def _model_2d() -> Flow:
    torch.manual_seed(0)
    return Flow.build("realnvp", 2, num_layers=2, hidden_dims=[16])


def test_the_run_records_the_augmentation_in_its_metrics(tmp_path):
    runs.fit_run("moons", tmp_path, "realnvp", {"num_layers": 1}, num_samples=100, epochs=1,
                 progress=False)  # fmt: skip
    assert json.loads((tmp_path / "metrics.json").read_text())["augment"] is None
