"""farad: Fourier clouds, the long-tailed split, debiasing, bad input, runs and the claims."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from runner.run import run
from runner.task_params import build_params, resolved_params
from runner.validation import ConfigError
from tasks.farad import augment
from tasks.farad.analysis import (
    claims,
    plot,
    plot_reference_spectra,
    reference_profiles,
    summarize,
)
from tasks.farad.config import Config
from tasks.farad.data import FaradData, draw_split, load_digits_raw
from tasks.farad.metrics import class_prior, class_recalls, geometric_mean_recall, pearson
from tasks.farad.model import MLP, consistency_loss, cosine_lr, ema_update, pseudo_targets
from tasks.farad.module import FaradModule, bias_from_logits
from tasks.farad.references import (
    amplitude_spectrum,
    check_reference_memory,
    fourier_clouds,
    mean_amplitude,
    radial_profile,
    reference_bytes,
)
from tasks.farad.splits import DIGITS_CLASS_COUNTS, longtail_counts, tail_classes

QUIET = ["logger=csv", "callbacks=none", "print_results=false"]
TINY = ["task.iterations=30", "task.debias_start=10", "task.batch_labeled=16",
        "task.hidden=32", "task.log_every=5"]


def run_task(make_cfg, tmp_path, name, *overrides):
    return run(make_cfg(["task=farad", *QUIET, *overrides], tmp_path / name))


@pytest.fixture(scope="module")
def split() -> dict[str, torch.Tensor]:
    cfg = Config()
    return draw_split(0, cfg.test_per_class, cfg.labeled_counts, cfg.unlabeled_counts)


def centred_corr(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of every image of x with every image of ref, (len x, len ref)."""
    a, b = x.reshape(len(x), -1).double(), ref.reshape(len(ref), -1).double()
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return (a / a.norm(dim=1, keepdim=True)) @ (b / b.norm(dim=1, keepdim=True)).T


# ----------------------------------------------------------------------------- Fourier clouds
def test_clouds_keep_the_mean_amplitude_spectrum_and_the_mean_colour(split):
    train = torch.cat([split["x_labeled"], split["x_unlabeled"]])
    amp = mean_amplitude(train)
    clouds = fourier_clouds(amp, 256, torch.Generator().manual_seed(0))
    assert clouds.shape == (256, 1, 8, 8) and not clouds.is_complex()
    assert clouds.dtype == torch.float32
    # every cloud has amplitude A to float tolerance: nothing was dropped by irfft2
    assert torch.allclose(amplitude_spectrum(clouds), amp.expand(256, -1, -1, -1),
                          rtol=1e-4, atol=1e-4)
    data_profile = radial_profile(amp)
    cloud_profile = radial_profile(amplitude_spectrum(clouds))
    assert data_profile.numel() == 7  # radii 0..6 of an 8×8 rfft2 half-plane
    assert torch.allclose(cloud_profile, data_profile, rtol=0.05)
    # mean colour: each cloud's mean pixel equals the data's mean pixel (DC phase 0)
    assert torch.allclose(clouds.mean((1, 2, 3)), train.mean().expand(256), atol=1e-5)


def test_random_phase_on_the_half_plane_breaks_the_spectrum_and_a_dc_phase_flips_colour(split):
    """The pitfalls the construction avoids: uniform phases put straight on the rfft2 half-plane
    are not Hermitian on the self-conjugate column, so irfft2 silently changes the spectrum;
    a DC phase of π negates the mean colour."""
    train = torch.cat([split["x_labeled"], split["x_unlabeled"]])
    amp = mean_amplitude(train)
    gen = torch.Generator().manual_seed(1)
    phase = torch.rand((64, *amp.shape), generator=gen) * 2 * math.pi
    naive = torch.fft.irfft2(amp * torch.exp(1j * phase), s=(8, 8))
    err = (amplitude_spectrum(naive) - amp).abs().max()
    assert float(err) > 0.1 * float(amp[..., 1:, :].max())
    flipped = torch.fft.irfft2(-amp.to(torch.complex64), s=(8, 8))  # DC phase π, others π
    assert float(flipped.mean()) == pytest.approx(-float(train.mean()), abs=1e-5)


def test_cloud_phases_are_random_and_unlike_any_training_image(split):
    train = torch.cat([split["x_labeled"], split["x_unlabeled"]])
    amp = mean_amplitude(train)
    gen = torch.Generator().manual_seed(2)
    first, second = fourier_clouds(amp, 200, gen), fourier_clouds(amp, 200, gen)
    assert float((first - second).abs().mean()) > 0.5 * float(first.std())
    # nearest-training-image correlation: clouds ≈ 0.64, real held-out digits ≈ 0.92
    cloud_nn = centred_corr(first, train).abs().max(1).values.mean()
    digit_nn = centred_corr(split["x_test"], train).abs().max(1).values.mean()
    assert float(cloud_nn) < 0.7 and float(digit_nn) > 0.85
    assert float(centred_corr(first, train).abs().mean()) < 0.4
    # a cloud built from one image's own amplitude no longer resembles that image
    own = fourier_clouds(amplitude_spectrum(train[:200]), 200, gen)
    own_corr = torch.diagonal(centred_corr(own, train[:200])).abs().mean()
    assert float(own_corr) < 0.4


def test_per_image_amplitude_keeps_each_images_spectrum(split):
    images = split["x_labeled"][:10]
    clouds = fourier_clouds(amplitude_spectrum(images), 10, torch.Generator().manual_seed(3))
    assert torch.allclose(amplitude_spectrum(clouds), amplitude_spectrum(images), atol=1e-4)
    assert torch.allclose(clouds.mean((1, 2, 3)), images.mean((1, 2, 3)), atol=1e-5)


# ----------------------------------------------------------------------------- the split
def test_longtail_counts_of_the_spec():
    assert longtail_counts(30, 10) == [30, 23, 17, 13, 10, 8, 6, 5, 3, 3]
    assert longtail_counts(90, 10) == [90, 69, 53, 41, 32, 25, 19, 15, 11, 9]
    assert longtail_counts(90, 1) == [90] * 10
    assert longtail_counts(90, 0.1) == [9, 11, 15, 19, 25, 32, 41, 53, 69, 90]
    assert tail_classes([30, 23, 17, 13, 10, 8, 6, 5, 3, 3]) == [7, 8, 9]
    assert list(np.bincount(load_digits_raw()[1])) == list(DIGITS_CLASS_COUNTS)


@pytest.mark.parametrize("gamma_u,unlabeled", [
    (10.0, [90, 69, 53, 41, 32, 25, 19, 15, 11, 9]),
    (1.0, [90] * 10),
    (0.1, [9, 11, 15, 19, 25, 32, 41, 53, 69, 90]),
])
def test_split_has_the_stated_class_counts(tmp_path, gamma_u, unlabeled):
    data = FaradData(Config(gamma_u=gamma_u), str(tmp_path), seed=4)
    data.setup()
    s = data.split
    assert np.bincount(s["y_labeled"].numpy(), minlength=10).tolist() == [
        30, 23, 17, 13, 10, 8, 6, 5, 3, 3]
    assert np.bincount(s["y_unlabeled"].numpy(), minlength=10).tolist() == unlabeled
    assert np.bincount(s["y_test"].numpy(), minlength=10).tolist() == [50] * 10
    images = torch.cat([s["x_test"], s["x_labeled"], s["x_unlabeled"]]).reshape(-1, 64)
    assert torch.unique(images, dim=0).shape[0] == images.shape[0]  # disjoint parts
    assert float(images.min()) == 0.0 and float(images.max()) == 1.0


def test_same_seed_same_split_and_init_across_methods(tmp_path):
    import pytorch_lightning as pl

    splits, weights = [], []
    for method, gamma_u in (("fixmatch", 10.0), ("farad", 0.1)):
        data = FaradData(Config(method=method, gamma_u=gamma_u), str(tmp_path), seed=7)
        data.setup()
        splits.append(data.split)
        pl.seed_everything(7, verbose=False)
        weights.append(FaradModule(Config(method=method)).net.state_dict())
    assert torch.equal(splits[0]["x_labeled"], splits[1]["x_labeled"])  # γ_u leaves it alone
    assert torch.equal(splits[0]["x_test"], splits[1]["x_test"])
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    other = FaradData(Config(), str(tmp_path), seed=8)
    other.setup()
    assert not torch.equal(other.split["x_labeled"], splits[0]["x_labeled"])


# ----------------------------------------------------------------------------- debiasing
def test_bias_from_a_reference_with_uniform_logits_is_a_no_op():
    """Classifier bias 0.7 on every class, other biases 0: the gray reference (0 after
    normalisation) gives f(x_ref) = 0.7·1, uniform logits; subtracting b changes no pseudo-label,
    mask or prediction."""
    torch.manual_seed(0)
    net = MLP(64, 32, 10)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Linear):
                m.bias.zero_()
        net.classifier.bias.fill_(0.7)
        ref = torch.zeros(1, 1, 8, 8)
        z = net(torch.randn(256, 1, 8, 8)) * 4.0
        for average in ("logits", "log_softmax"):
            b = bias_from_logits(net(ref), average)
            assert torch.allclose(b, b[0].expand(10))
            for mode in ("hard", "soft"):
                q0, m0 = pseudo_targets(z, None, mode, 0.95)
                q1, m1 = pseudo_targets(z, b, mode, 0.95)
                assert torch.allclose(q0, q1, atol=1e-6) and torch.equal(m0, m1)
            assert torch.equal((z - b).argmax(-1), z.argmax(-1))
    # a non-uniform b does change them (the test above could fail)
    b = torch.linspace(-2, 2, 10)
    assert not torch.equal((z - b).argmax(-1), z.argmax(-1))


def test_bias_from_logits_by_hand():
    """Two references with logits (0, ln 3) and (0, 0): `logits` averages them, (0, ½ln 3);
    `log_softmax` averages the per-reference log-probabilities (ln ¼, ln ¾) and (ln ½, ln ½)."""
    ref = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]], dtype=torch.float64)
    assert bias_from_logits(ref, "logits").tolist() == pytest.approx([0.0, 0.5 * math.log(3)])
    expected = [0.5 * (math.log(0.25) + math.log(0.5)), 0.5 * (math.log(0.75) + math.log(0.5))]
    assert bias_from_logits(ref, "log_softmax").tolist() == pytest.approx(expected)


def test_pseudo_label_modes():
    z = torch.tensor([[4.0, 0.0, 0.0], [1.0, 0.9, 0.0]])
    q, mask = pseudo_targets(z, None, "hard", 0.95)
    assert q.tolist() == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]] and mask.tolist() == [1.0, 0.0]
    q, mask = pseudo_targets(z, None, "soft", 0.0)
    assert torch.allclose(q, z.softmax(-1)) and mask.tolist() == [1.0, 1.0]
    q, _ = pseudo_targets(z, torch.tensor([0.0, 0.5, 0.0]), "hard", 0.0)
    assert q[1].tolist() == [1.0, 0.0, 0.0]
    q, _ = pseudo_targets(z, torch.tensor([0.5, 0.0, 0.0]), "hard", 0.0)
    assert q[1].tolist() == [0.0, 1.0, 0.0]


def test_ema_update_cosine_lr_and_consistency_loss_by_hand():
    """EMA: d = min(decay, (1 + t)/(10 + t)) is 0.1 at t = 0 and 0.91 at t = 90, so an EMA weight
    1 toward a model weight 3 becomes 0.1·1 + 0.9·3 = 2.8, then 0.91·2.8 + 0.09·3 = 2.818; at
    t = 10⁵ the decay 0.999 is the smaller. lr factor cos(7πt/(16T)): 1, cos(7π/32), cos(7π/16),
    and T = 0 read as 1. Loss: logits (0, ln 3) give p = (1/4, 3/4); CE of the hard target
    (0, 1) is ln(4/3), of the soft (½, ½) ½ln 4 + ½ln(4/3); masked rows count in the 1/n."""
    ema, net = torch.nn.Linear(1, 1), torch.nn.Linear(1, 1)
    with torch.no_grad():
        ema.weight.fill_(1.0)
        ema.bias.fill_(-1.0)
        net.weight.fill_(3.0)
        net.bias.fill_(1.0)
    assert ema_update(ema, net, 0.999, 0) == pytest.approx(0.1)
    assert float(ema.weight) == pytest.approx(2.8) and float(ema.bias) == pytest.approx(0.8)
    assert ema_update(ema, net, 0.999, 90) == pytest.approx(0.91)
    assert float(ema.weight) == pytest.approx(2.818)
    assert float(net.weight) == 3.0  # the model itself is not moved
    assert ema_update(ema, net, 0.999, 100_000) == pytest.approx(0.999)
    assert cosine_lr(0, 100) == 1.0
    assert cosine_lr(50, 100) == pytest.approx(math.cos(7 * math.pi / 32))
    assert cosine_lr(100, 100) == pytest.approx(math.cos(7 * math.pi / 16))
    assert cosine_lr(1, 0) == pytest.approx(math.cos(7 * math.pi / 16))
    logits = torch.tensor([[0.0, math.log(3.0)], [5.0, -5.0], [0.0, math.log(3.0)]])
    targets = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.5, 0.5]])
    hard, soft = math.log(4 / 3), 0.5 * math.log(4) + 0.5 * math.log(4 / 3)
    loss = consistency_loss(logits, targets, torch.tensor([1.0, 0.0, 1.0]))
    assert float(loss) == pytest.approx((hard + soft) / 3)
    assert float(consistency_loss(logits[:1], targets[:1], torch.ones(1))) == pytest.approx(hard)


def test_mask_keeps_a_confidence_equal_to_the_threshold_and_the_smoothed_prior():
    """Logits (0, 0) give max p = ½: kept at threshold ½ (mask is max p ≥ τ), dropped above.
    Prior of predictions (0, 0, 1) over 3 classes with smoothing s = 2: (count + 2)/(3 + 3·2)
    = (4, 3, 2)/9, the absent class 2 included."""
    z = torch.zeros(1, 2)
    assert pseudo_targets(z, None, "hard", 0.5)[1].tolist() == [1.0]
    assert pseudo_targets(z, None, "hard", 0.5 + 1e-6)[1].tolist() == [0.0]
    prior = class_prior(torch.tensor([0, 0, 1]), 3, smoothing=2.0)
    assert prior.tolist() == pytest.approx([4 / 9, 3 / 9, 2 / 9])
    assert class_prior(torch.tensor([0, 0, 1]), 3).tolist() == pytest.approx([3 / 6, 2 / 6, 1 / 6])


def test_metrics():
    pred = torch.tensor([0, 0, 1, 1, 2, 0])
    target = torch.tensor([0, 0, 1, 2, 2, 2])
    rec = class_recalls(pred, target, 3)
    assert rec.tolist() == pytest.approx([1.0, 1.0, 1 / 3])
    assert geometric_mean_recall(rec) == pytest.approx((1 / 3) ** (1 / 3))
    assert geometric_mean_recall(torch.tensor([1.0, 0.0])) == 0.0
    assert pearson(torch.arange(5.0), 2 * torch.arange(5.0) + 1) == pytest.approx(1.0)
    assert pearson(torch.ones(5), torch.arange(5.0)) is None


def test_augmentations_shift_jitter_and_cut_out():
    torch.manual_seed(0)
    x = torch.zeros(500, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0  # a 2×2 blob away from the border survives any ±1 shift
    shifted = augment.weak(x)
    assert torch.equal(shifted.sum((1, 2, 3)), torch.full((500,), 4.0))
    rows = shifted.sum((1, 3))  # (n, H): which rows hold the blob
    top = (rows > 0).float().argmax(-1)
    assert set(top.tolist()) == {2, 3, 4}  # dy ∈ {−1, 0, 1}, all drawn
    cut = augment.cutout(torch.ones(200, 1, 8, 8))
    zeros = (cut == 0).sum((1, 2, 3))
    assert int(zeros.max()) == 9 and int(zeros.min()) >= 4  # a 3×3 square, clipped at borders
    strong = augment.strong(torch.full((200, 1, 8, 8), 0.5))
    assert strong.shape == (200, 1, 8, 8) and float(strong.std()) > 0.05


# ----------------------------------------------------------------------------- evaluation
STRENGTHS = (0.2, 0.4, 0.6, 0.8, 1.0)  # brightness of the class pixel of each constructed image


def coded_images() -> tuple[torch.Tensor, torch.Tensor]:
    """Return 50 images (50, 1, 8, 8) and labels: per class k five images, pixel k (row-major)
    at 0.2, 0.4, ..., 1.0, every other pixel 0."""
    x = torch.zeros(50, 1, 8, 8)
    y = torch.arange(10).repeat_interleave(len(STRENGTHS))
    for i, (k, v) in enumerate(zip(y.tolist(), STRENGTHS * 10)):
        x.view(50, 64)[i, k] = v
    return x, y


class PixelReader(torch.nn.Module):
    """Stub network: un-normalise x̃ to raw pixels x = μ + σ·x̃, return logits
    z_j = gain·x_j + offset_j (j < 10: reads pixel j) + slope_j·mean(x)."""

    def __init__(self, mu: float, sd: float, gain: float, offset: list[float],
                 slope: list[float] | None = None) -> None:
        super().__init__()
        self.mu, self.sd, self.gain = mu, sd, gain
        self.offset = torch.tensor(offset)
        self.slope = torch.tensor(slope or [0.0] * 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raw = (self.mu + self.sd * x).reshape(len(x), -1)
        return self.gain * raw[:, :10] + self.offset + self.slope * raw.mean(1, keepdim=True)


def evaluated_module(cfg: Config, stub_args: dict) -> tuple[FaradModule, dict]:
    """Return a FaradModule whose EMA net is a PixelReader on the coded split (labelled,
    unlabelled and test sets all coded_images()) and its final_evaluation()."""
    x, y = coded_images()
    module = FaradModule(cfg)
    module.split = {"x_test": x, "y_test": y, "x_labeled": x.clone(), "y_labeled": y,
                    "x_unlabeled": x.clone(), "y_unlabeled": y}
    module.seed = 0
    module.refs = module.reference_source(cfg.ref_kind, 0, torch.device("cpu"))
    mu, sd = float(x.mean()), float(x.std())
    module.ema = PixelReader(mu, sd, **stub_args)
    return module, module.final_evaluation()


def test_test_time_debiasing_against_a_hand_computed_confusion_matrix():
    """CDMAD-gray on a stub net z_j = 4·x_j + c_j, c = (2, 0, …, 0): the gray reference is the
    solid image at the labelled mean μ, so b = c + 4μ (hand value). Raw argmax z: class 0 keeps
    its 5 images; an image of class k ≥ 1 with pixel strength v is right iff 4v > 2, i.e. for
    v ∈ {0.6, 0.8, 1.0}: recall 3/5, bACC (1 + 9·0.6)/10 = 0.64, GM 0.6^0.9. Debiased argmax
    (z − b) = argmax 4·x_j: every image right, bACC = GM = tail3 = 1. (With z + b instead, every
    image goes to class 0: bACC 0.1.) The pseudo-label prior is the raw argmax on the same 50
    images, 23 of class 0 and 3 of each other class: p̂ = (24, 4, …, 4)/60; b and log p̂ are both
    one spike on class 0, so corr(b, log p̂) = 1."""
    x, _ = coded_images()
    mu, sd = float(x.mean()), float(x.std())
    _, ev = evaluated_module(Config(method="cdmad", reference="gray", n_refs=4),
                             {"gain": 4.0, "offset": [2.0] + [0.0] * 9})
    assert ev["per_class_recall"] == pytest.approx([1.0] * 10)
    assert ev["balanced_acc"] == pytest.approx(1.0) and ev["gm_recall"] == pytest.approx(1.0)
    assert ev["tail3_recall"] == pytest.approx(1.0) and ev["tail_classes"] == [7, 8, 9]
    assert ev["balanced_acc_raw"] == pytest.approx(0.64)
    assert ev["gm_recall_raw"] == pytest.approx(0.6 ** 0.9)
    assert ev["tail3_recall_raw"] == pytest.approx(0.6)
    assert ev["bias_vector"] == pytest.approx([2.0 + 4 * mu] + [4 * mu] * 9, abs=1e-5)
    assert ev["diag_bias_ones"] == pytest.approx([2.0 + 4 * (mu + sd)] + [4 * (mu + sd)] * 9,
                                                 abs=1e-5)  # all-ones after normalisation
    assert ev["pseudo_label_prior"] == pytest.approx([24 / 60] + [4 / 60] * 9)
    assert ev["bias_prior_corr"] == pytest.approx(1.0)


def test_fourier_bias_is_the_stub_at_the_mean_colour():
    """FARAD on a stub net z = c + s·mean(x) (gain 0): every Fourier cloud has the training
    images' mean colour m (DC phase 0), so b = c + s·m for any draw of the phases (hand value,
    m = mean pixel of labelled ∪ unlabelled); FixMatch subtracts nothing (b = 0)."""
    c = [0.5 * k for k in range(10)]
    s = [1.0 - 0.3 * k for k in range(10)]
    x, _ = coded_images()
    m = float(torch.cat([x, x]).mean())
    _, ev = evaluated_module(Config(method="farad", n_refs=8), {"gain": 0.0, "offset": c,
                                                                "slope": s})
    expected = [ck + sk * m for ck, sk in zip(c, s)]
    assert ev["bias_vector"] == pytest.approx(expected, abs=1e-5)
    _, ev = evaluated_module(Config(method="fixmatch"), {"gain": 4.0, "offset": [2.0] + [0.0] * 9})
    assert ev["bias_vector"] == [0.0] * 10 and ev["bias_prior_corr"] is None
    assert ev["balanced_acc"] == pytest.approx(0.64)  # the raw confusion matrix above


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,match", [
    ({"method": "mixmatch"}, r"task.method='mixmatch' \(.*\) is not allowed; expected one of: "
                             r"fixmatch, cdmad, farad$"),
    ({"reference": "white"}, r"task.reference='white' \(.*\) is not allowed; expected one of: "
                             r"auto, none, ones, gray, fourier$"),
    ({"pseudo_label": "sharp"}, r"task.pseudo_label='sharp' \(.*\) is not allowed; expected one "
                                r"of: hard, soft$"),
    ({"ref_refresh": "epoch"}, r"task.ref_refresh='epoch' \(.*\) is not allowed; expected one of: "
                               r"step, bank$"),
])
def test_bad_choices_raise_config_error_with_the_allowed_values(kwargs, match):
    """Choice keys are enums of Config: the runner's one validation rejects a bad value."""
    with pytest.raises(ConfigError, match=match):
        build_params(OmegaConf.create({"name": "farad", **kwargs}))


@pytest.mark.parametrize("kwargs,match", [
    ({"gamma_l": 0.5}, r"task.gamma_l=0.5 is out of range; allowed: \[1, inf\)"),
    ({"gamma_u": 0.0}, r"task.gamma_u=0.0 is out of range; allowed: \(0, inf\)"),
    ({"gamma_u": -1.0}, r"task.gamma_u=-1.0 is out of range"),
    ({"n_refs": 0}, r"task.n_refs=0 is out of range"),
    ({"method": "fixmatch", "reference": "gray"},
     r"task.reference='gray' does not go with task.method='fixmatch'; choose one of: auto, none"),
    ({"method": "cdmad", "reference": "fourier"},
     r"task.reference='fourier' does not go with task.method='cdmad'; choose one of: auto, ones, "
     r"gray"),
    ({"method": "farad", "reference": "ones"}, r"choose one of: auto, fourier"),
    ({"labeled_n1": 200}, r"task.labeled_n1 \+ task.unlabeled_m1 \+ task.test_per_class need"),
    ({"iterations": 100, "debias_start": 500}, r"task.debias_start=500 >= task.iterations=100: "
                                               r"farad would never debias"),
    ({"method": "cdmad", "iterations": 100, "debias_start": 100}, r"cdmad would never debias"),
])
def test_bad_values_raise_config_error_naming_the_key(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Config(**kwargs)
    with pytest.raises(ConfigError, match=match):  # the same through the runner (enum values)
        build_params(OmegaConf.create({"name": "farad", **kwargs}))


def test_fixmatch_may_start_debiasing_after_the_run_since_it_never_debiases():
    assert Config(method="fixmatch", iterations=100, debias_start=500).debias_start == 500
    assert Config(iterations=100, debias_start=99).debias_start == 99  # the last step debiases


def test_auto_reference_rule():
    assert Config(method="fixmatch").ref_kind == "none"
    assert Config(method="cdmad").ref_kind == "ones"
    assert Config(method="cdmad", reference="gray").ref_kind == "gray"
    assert Config(method="farad").ref_kind == "fourier"


def test_too_many_references_for_the_device_memory():
    need = reference_bytes(1000, (1, 8, 8), [256, 256, 10])
    assert check_reference_memory(1000, (1, 8, 8), [256, 256, 10], "cpu", free=4 * need) == need
    with pytest.raises(ConfigError, match=r"task.n_refs=1000 needs .* at most 500 fit"):
        check_reference_memory(1000, (1, 8, 8), [256, 256, 10], "cpu", free=need)


def test_bad_values_fail_before_any_work(make_cfg, tmp_path, data_dir):
    cached = sorted((data_dir / "farad").glob("*"))
    with pytest.raises(ConfigError, match="task.gamma_u"):
        run_task(make_cfg, tmp_path, "bad", "task.gamma_u=0")
    assert sorted((data_dir / "farad").glob("*")) == cached  # no split drawn
    assert not (tmp_path / "bad").exists()  # a single run with a bad config leaves no run dir
    with pytest.raises(ConfigError, match=r"task.n_refs=1000000000000 needs"):
        run_task(make_cfg, tmp_path, "huge", "task.n_refs=1000000000000", *TINY)


# ----------------------------------------------------------------------------- runs
def test_smoke_run_files_and_finite_metrics(make_cfg, tmp_path):
    res = run_task(make_cfg, tmp_path, "smoke", *TINY, "task.gamma_u=0.1")
    assert res["status"] == "completed" and res["global_step"] == 30
    pm = res["paper_metrics"]
    for key in ("balanced_acc", "gm_recall", "tail3_recall", "bias_prior_corr"):
        assert math.isfinite(pm[key]), key
    assert len(pm["per_class_recall"]) == 10 and len(pm["bias_vector"]) == 10
    assert all(math.isfinite(v) for v in pm["bias_vector"] + pm["per_class_recall"])
    params = res["params"]  # the settings are in params, not echoed in paper_metrics
    assert params["method"] == "farad" and params["reference"] == "auto"
    assert Config(**params).ref_kind == "fourier"
    assert params["pseudo_label"] == "hard" and params["threshold"] == 0.95
    assert Config(**params).unlabeled_counts == [9, 11, 15, 19, 25, 32, 41, 53, 69, 90]
    assert not set(pm) & set(params)
    assert pm["tail_classes"] == [7, 8, 9]
    prof = pm["radial_amplitude"]
    assert np.allclose(prof["fourier"], prof["data"], rtol=1e-3)
    assert prof["gray"][1] == pytest.approx(0.0, abs=1e-5)  # a solid image: DC only
    run_dir = tmp_path / "smoke"
    assert (run_dir / "results.json").is_file()
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "train/bias_9" in header and "train/wnorm_0" in header
    assert "test/balanced_acc" in res["metrics"]


@pytest.mark.parametrize("overrides", [
    ["task.method=fixmatch"],
    ["task.method=cdmad", "task.reference=gray", "task.pseudo_label=soft", "task.threshold=0"],
    ["task.ref_refresh=bank", "task.amp_source=per_image", "task.bias_average=log_softmax"],
])
def test_other_methods_and_options_run(make_cfg, tmp_path, overrides):
    res = run_task(make_cfg, tmp_path, "opt", *TINY, "task.iterations=12", *overrides)
    pm = res["paper_metrics"]
    assert res["status"] == "completed" and math.isfinite(pm["balanced_acc"])
    if res["params"]["method"] == "fixmatch":  # no reference: nothing subtracted
        assert pm["bias_vector"] == [0.0] * 10 and pm["bias_prior_corr"] is None
        assert pm["balanced_acc"] == pm["balanced_acc_raw"]
    else:
        assert math.isfinite(pm["bias_prior_corr"])


def test_spectra_callback_smoke_run(make_cfg, tmp_path):
    res = run(make_cfg(["task=farad", "logger=csv", "callbacks=spectra", "print_results=false",
                        *TINY, "task.iterations=20",
                        "callbacks.matrix_spectrum.every_n_steps=10",
                        "callbacks.matrix_spectrum.budget_frac=null",
                        "callbacks.hessian_spectrum.k=2", "callbacks.hessian_spectrum.n_probe=16",
                        "callbacks.hessian_spectrum.trace_matvecs=6",
                        "callbacks.ntk_spectrum.n_points=8"], tmp_path / "cb"))
    assert res["status"] == "completed"
    run_dir = tmp_path / "cb"
    with np.load(run_dir / "spectra" / "matrices.npz") as m:
        assert list(m["classifier_weight__steps"]) == [0, 10, 20]
        sv = m["classifier_weight"][-1]
        assert sv.shape == (10,) and np.all(np.diff(sv) <= 0)
        cov = m["feature_cov_class9"][-1]
        assert cov.shape == (32,) and cov.min() > -1e-8  # PSD covariance, real eigenvalues
        norms = m["classifier_weight_norms"][-1]
        assert np.allclose(np.sqrt((norms**2).sum()), np.sqrt((sv**2).sum()), rtol=1e-5)
    with np.load(run_dir / "spectra" / "features.npz") as f:
        assert any(k.startswith("net.") for k in f.files)
    assert (run_dir / "plots" / "matrices.png").is_file()
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert "spectra/matrices/feature_cov_class0/effective_rank" in header


# ----------------------------------------------------------------------------- analysis
def fake_results() -> list[dict]:
    """Two settings × 4 methods × 3 seeds with known effects (tail3 +0.1 for FARAD, ...)."""
    out = []
    for gamma_u in (10.0, 0.1):
        for seed in range(3):
            for method, ref, d_acc, d_tail, corr in (
                    ("fixmatch", "none", 0.0, 0.0, None), ("cdmad", "gray", 0.01, 0.05, 0.3),
                    ("cdmad", "ones", -0.02, 0.02, 0.2), ("farad", "fourier", 0.005, 0.1, 0.6)):
                params = resolved_params(Config(method=method, reference=ref, gamma_l=10.0,
                                                gamma_u=gamma_u, pseudo_label="hard",
                                                iterations=1000))
                pm = {"balanced_acc": 0.8 + 0.01 * seed + d_acc, "gm_recall": 0.7,
                      "tail3_recall": 0.5 + 0.02 * seed + d_tail, "bias_prior_corr": corr,
                      "balanced_acc_raw": 0.8, "diag_corr_fourier": 0.5,
                      "diag_corr_gray": 0.4, "diag_corr_ones": 0.6}
                out.append({"status": "completed", "seed": seed, "params": params,
                            "paper_metrics": pm})
    out.append({"status": "failed", "seed": 9, "paper_metrics": {}})
    return out


def test_summarize_pairs_by_seed_and_scores_the_claims(tmp_path):
    summary = summarize(fake_results())
    assert len(summary) == 8
    row = summary[(summary["method"] == "farad") & (summary["gamma_u"] == 0.1)].iloc[0]
    assert row["n_seeds"] == 3 and row["dtail3_fm"] == pytest.approx(0.1)
    assert row["dtail3_fm_sd"] == pytest.approx(0.0, abs=1e-12)  # paired: seed effect cancels
    assert row["tail3_sd"] == pytest.approx(0.02)
    assert row["dbacc_cdg"] == pytest.approx(-0.005)
    table = claims(summary).set_index("claim")
    assert table.loc["1 tail3 farad > fixmatch (reversed)", "verdict"] == "holds"
    assert table.loc["2 bACC farad >= cdmad-gray - 0.01 (reversed)", "verdict"] == "holds"
    assert table.loc["3 bACC farad >= fixmatch - 0.01 (matched)", "verdict"] == "holds"
    across = table.loc["4 corr(b, log prior): farad > cdmad (across runs)", "verdict"]
    within = table.loc["4 corr(b, log prior): fourier b > solid b (same model)", "verdict"]
    assert list(across) == ["holds", "holds"] and list(within) == ["FAILS", "FAILS"]
    paths = plot(summary, fake_results(), tmp_path)
    assert [p.name for p in paths] == ["farad_reference_spectra.png", "farad_compare.png"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_reference_spectra_figure(tmp_path):
    profiles = reference_profiles(seed=0, n_clouds=64)
    assert np.allclose(profiles["fourier"], profiles["data"], rtol=0.05)
    assert profiles["gray"][0] > 0 and max(profiles["gray"][1:]) < 1e-5
    path = plot_reference_spectra(profiles, tmp_path / "spec.png")
    assert path.is_file() and path.stat().st_size > 5000


# ----------------------------------------------------------------------------- claims
# the fast claim test's size: severe imbalance (γ_l = 20, matched γ_u), half the schedule
CLAIM_FAST = ("task.gamma_l=20", "task.gamma_u=10", "task.iterations=500", "task.debias_start=100")
CLAIM_FAST_SEEDS = (0, 1)
CLAIM_FAST_MARGIN = 0.02  # ≈ measured mean gain 0.098 − 2 · SE 0.040 of a 2-seed mean


def test_claim_farad_raises_tail_recall_over_fixmatch_fast(make_cfg, tmp_path):
    """The central claim at the smallest size that shows it: FARAD's debiasing raises the
    minority-class (tail3) recall over FixMatch under severe imbalance. γ_l = 20 (labelled
    [30, 21, …, 1]), γ_u = 10, 500 iterations with debiasing from 100 (≈ 4–12 s per run), seeds
    0 and 1 paired: asserts mean_s [tail3(FARAD) − tail3(FixMatch)] > 0.02.

    Seed spread at this size (seeds 0–7, paired Δtail3 per seed): +0.087, +0.080, +0.120,
    +0.160, +0.107, +0.140, +0.113, −0.027 = +0.098 ± 0.057 (mean ± sd), so a 2-seed mean has
    SE 0.040 and the 0.02 margin is the mean − 2 SE (seeds 0, 1 give +0.083). Not tested here,
    because not reliable at this size: bACC, Δ = +0.020 ± 0.028 per seed (1 SE for 2 seeds); the
    spec's claim 1 (reversed γ_u, γ_l = 10, 3 seeds) is the slow xfail below. With the
    test-time subtraction's sign flipped, FARAD's tail3 falls below FixMatch's and this fails."""
    gains = []
    for seed in CLAIM_FAST_SEEDS:
        tail3 = {method: run_task(make_cfg, tmp_path, f"fast_{method}{seed}", *CLAIM_FAST,
                                  f"task.method={method}", f"seed={seed}")[
                                      "paper_metrics"]["tail3_recall"]
                 for method in ("fixmatch", "farad")}
        gains.append(tail3["farad"] - tail3["fixmatch"])
    print({"tail3 gain per seed": np.round(gains, 3).tolist()})
    assert np.mean(gains) > CLAIM_FAST_MARGIN, gains


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "finding (README, farad): with the spec's 3 seeds (0, 1, 2) FARAD's tail3 ties FixMatch's, "
    "0.689 = 0.689 (per seed 0.633/0.713/0.720 vs 0.673/0.720/0.673, 310/450 images each); over "
    "5 paired seeds it holds, 0.733 vs 0.669 (test_claim1_tail3_under_reversed_gamma_u_5_seeds)"))
def test_claim1_farad_tail3_beats_fixmatch_under_reversed_gamma_u(make_cfg, tmp_path):
    """Claim 1 as the spec's test: default CPU recipe, γ_u = 0.1, mean of 3 paired seeds."""
    tails = {"fixmatch": [], "farad": []}
    for seed in (0, 1, 2):
        for method in tails:
            res = run_task(make_cfg, tmp_path, f"{method}{seed}", f"task.method={method}",
                           "task.gamma_u=0.1", f"seed={seed}")
            tails[method].append(res["paper_metrics"]["tail3_recall"])
    print({k: np.round(v, 3).tolist() for k, v in tails.items()})
    assert np.mean(tails["farad"]) > np.mean(tails["fixmatch"])


# ----------------------------------------------------------------------------- slow: claims 1–4
CLAIM_VARIANTS = (("fixmatch", "none"), ("cdmad", "gray"), ("cdmad", "ones"),
                  ("farad", "fourier"))
CLAIM_SEEDS = (0, 1, 2, 3, 4)
_CLAIM_RESULTS: list[dict] = []


def claim_table(make_cfg, tmp_path):
    """Return claims() on γ_l = 10, γ_u ∈ {0.1, 10} × 4 methods × 5 paired seeds (40 runs,
    ≈ 12 min on one core), or on the farad runs of the sweep in $FARAD_SWEEP_DIR when set
    (e.g. multirun/farad/compare_cpu, the 120 runs of experiment=farad/compare)."""
    import os
    from pathlib import Path

    from runner.report import load_results
    from tasks.farad.analysis import notes

    if not _CLAIM_RESULTS:
        sweep = os.environ.get("FARAD_SWEEP_DIR")
        if sweep:
            _CLAIM_RESULTS.extend(r for r in load_results(Path(sweep)) if r.get("task") == "farad")
        else:
            for gamma_u in (0.1, 10.0):
                for seed in CLAIM_SEEDS:
                    for method, ref in CLAIM_VARIANTS:
                        _CLAIM_RESULTS.append(run_task(
                            make_cfg, tmp_path, f"{method}_{ref}_{gamma_u}_{seed}",
                            f"task.method={method}", f"task.reference={ref}",
                            f"task.gamma_u={gamma_u}", f"seed={seed}"))
    summary = summarize(_CLAIM_RESULTS)
    print(notes(summary))
    table = claims(summary)
    return table[table["setting"].str.startswith("gamma_l=10,")].set_index("claim")


def verdicts(table, claim: str) -> list[str]:
    value = table.loc[claim, "verdict"]
    return [value] if isinstance(value, str) else list(value)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_claim1_tail3_under_reversed_gamma_u_5_seeds(make_cfg, tmp_path):
    table = claim_table(make_cfg, tmp_path)
    assert verdicts(table, "1 tail3 farad > fixmatch (reversed)") == ["holds"]
    assert verdicts(table, "1 tail3 cdmad-gray > fixmatch (reversed)") == ["holds"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "finding (README, farad): at γ_l = 10, reversed γ_u, FARAD's bACC is 0.879 vs CDMAD-gray's "
    "0.890 (paired d = −0.011 ± 0.015 over 5 seeds), just outside the 1-point margin; it holds "
    "vs CDMAD-ones (0.856) and at γ_l = 20 (0.808 vs 0.764)"))
def test_claim2_farad_within_a_point_of_cdmad_reversed(make_cfg, tmp_path):
    table = claim_table(make_cfg, tmp_path)
    assert verdicts(table, "2 bACC farad >= cdmad-ones - 0.01 (reversed)") == ["holds"]
    assert verdicts(table, "2 bACC farad >= cdmad-gray - 0.01 (reversed)") == ["holds"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_claim3_farad_costs_at_most_a_point_matched(make_cfg, tmp_path):
    table = claim_table(make_cfg, tmp_path)
    assert verdicts(table, "3 bACC farad >= fixmatch - 0.01 (matched)") == ["holds"]


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_claim4_fourier_bias_tracks_the_prior_better_on_the_same_model(make_cfg, tmp_path):
    """Claim 4 within runs: on each final EMA model, b from the Fourier clouds correlates more
    with log(pseudo-label prior) than b from either solid image (mean over all methods' runs)."""
    table = claim_table(make_cfg, tmp_path)
    assert set(verdicts(table, "4 corr(b, log prior): fourier b > solid b (same model)")) == {
        "holds"}


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.xfail(strict=True, raises=AssertionError, reason=(
    "finding (README, farad): across runs at γ_l = 10, matched γ_u, FARAD's corr(b, log prior) "
    "is 0.496 vs CDMAD-ones' 0.512 and CDMAD-gray's 0.497; it holds at uniform and reversed γ_u "
    "(0.153 vs 0.090 / −0.051; 0.364 vs 0.214 / 0.020) and at every γ_u for γ_l = 20"))
def test_claim4_farad_bias_tracks_the_prior_better_across_runs(make_cfg, tmp_path):
    table = claim_table(make_cfg, tmp_path)
    assert set(verdicts(table, "4 corr(b, log prior): farad > cdmad (across runs)")) == {"holds"}
