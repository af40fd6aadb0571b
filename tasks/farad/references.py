"""Reference images for the bias estimate b = mean_m f(x_ref_m) (pure torch, any device).

Images are (n, C, H, W) in raw pixel space [0, 1]; the module normalises them like the data,
except CDMAD's "ones", which is all-ones *after* normalisation.

Fourier cloud (FARAD, reconstructed): x = irfft2(A · e^{iφ}) with A = mean_i |rfft2(x_i)| (or one
random image's |rfft2|) and φ = angle(rfft2(ε)), ε ~ N(0, I) real, so φ is Hermitian-consistent
on the self-conjugate row/column and irfft2 drops nothing; φ_DC = 0 keeps the mean colour.
"""

from __future__ import annotations

from pathlib import Path

import torch

from runner.validation import ConfigError

CPU_FALLBACK_BYTES = 4 * 2**30   # CPU memory assumed when /proc/meminfo is unreadable
MEMORY_FRACTION = 0.5            # references + activations may use at most this share


def amplitude_spectrum(images: torch.Tensor) -> torch.Tensor:
    """Return |rfft2(x_i)| per image, shape (n, C, H, W//2+1)."""
    return torch.fft.rfft2(images).abs()


def mean_amplitude(images: torch.Tensor) -> torch.Tensor:
    """Return A = mean_i |rfft2(x_i)|, shape (C, H, W//2+1)."""
    return amplitude_spectrum(images).mean(0)


def random_phase(n: int, shape: tuple[int, int, int], generator: torch.Generator | None = None,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Return e^{iφ}, φ = angle(rfft2(ε)) for real ε ~ N(0, I) of image shape, φ_DC = 0;
    shape (n, C, H, W//2+1)."""
    noise = torch.randn((n, *shape), generator=generator, device=device)
    spec = torch.fft.rfft2(noise)
    unit = spec / spec.abs().clamp_min(1e-12)
    unit[..., 0, 0] = 1.0  # DC phase 0: the mean colour is A_DC / (H·W), unflipped
    return unit


def fourier_clouds(amplitude: torch.Tensor, n: int, generator: torch.Generator | None = None,
                   image_shape: tuple[int, int] | None = None) -> torch.Tensor:
    """Return n clouds irfft2(A · e^{iφ}) of shape (n, C, H, W).

    `amplitude` is (C, H, W//2+1) (one spectrum for all) or (n, C, H, W//2+1) (one per cloud).
    """
    c, h = amplitude.shape[-3], amplitude.shape[-2]
    w = image_shape[1] if image_shape else 2 * (amplitude.shape[-1] - 1)
    phase = random_phase(n, (c, h, w), generator, amplitude.device)
    return torch.fft.irfft2(amplitude * phase, s=(h, w))


def solid_images(value: float | torch.Tensor, n: int, shape: tuple[int, int, int],
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Return n solid images of one value (scalar, or one per channel), shape (n, C, H, W)."""
    value = torch.as_tensor(value, dtype=torch.float32, device=device).reshape(-1, 1, 1)
    return value.expand(shape).unsqueeze(0).expand(n, *shape).clone()


def radial_bins(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Return the integer radius round(√(k_y² + k_x²)) of each rfft2 coefficient, (H, W//2+1)."""
    ky = torch.fft.fftfreq(h, d=1.0 / h, device=device)
    kx = torch.arange(w // 2 + 1, device=device, dtype=torch.float32)
    return torch.sqrt(ky[:, None] ** 2 + kx[None, :] ** 2).round().long()


def radial_profile(amplitude: torch.Tensor, width: int | None = None) -> torch.Tensor:
    """Return the radial average of an amplitude spectrum (..., C, H, W//2+1): for each integer
    radius r, the mean over channels and coefficients with round(|k|) = r; shape (R,)."""
    amp = amplitude.reshape(-1, *amplitude.shape[-3:]).mean(0).mean(0)  # (H, W//2+1)
    h = amp.shape[0]
    w = width or 2 * (amp.shape[1] - 1)
    bins = radial_bins(h, w, amp.device)
    total = torch.zeros(int(bins.max()) + 1, dtype=amp.dtype, device=amp.device)
    count = torch.zeros_like(total)
    total.scatter_add_(0, bins.reshape(-1), amp.reshape(-1))
    count.scatter_add_(0, bins.reshape(-1), torch.ones_like(amp).reshape(-1))
    return total / count.clamp_min(1)


def reference_bytes(n_refs: int, image_shape: tuple[int, int, int], widths: list[int]) -> int:
    """Return the bytes of one reference step: noise, spectra, clouds and the activations of
    `widths`, ≈ n · (3·4·CHW + 4·8·CH(W/2+1) + 2·4·Σwidths) (float32 / complex64)."""
    c, h, w = image_shape
    pixels, half = c * h * w, c * h * (w // 2 + 1)
    per_ref = 3 * 4 * pixels + 4 * 8 * half + 2 * 4 * sum(widths)
    return int(n_refs) * per_ref


def available_bytes(device: torch.device | str) -> int:
    """Return free memory on `device`: cuda.mem_get_info on GPU, MemAvailable on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return CPU_FALLBACK_BYTES


def check_reference_memory(n_refs: int, image_shape: tuple[int, int, int], widths: list[int],
                           device: torch.device | str, free: int | None = None) -> int:
    """Raise ConfigError naming task.n_refs when the references of one step need more than
    MEMORY_FRACTION of the free memory on `device`; return the bytes needed."""
    need = reference_bytes(n_refs, image_shape, widths)
    free = available_bytes(device) if free is None else free
    if need > MEMORY_FRACTION * free:
        fit = max(int(MEMORY_FRACTION * free // reference_bytes(1, image_shape, widths)), 0)
        raise ConfigError(
            f"task.n_refs={n_refs} needs about {need / 2**30:.3g} GiB for the references and "
            f"their activations, more than {MEMORY_FRACTION:.0%} of the "
            f"{free / 2**30:.3g} GiB free on {torch.device(device)}; at most {fit} fit")
    return need
