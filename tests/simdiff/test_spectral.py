from __future__ import annotations

import math

import pytest
import torch

from simdiff.processes import spectral as sp

BASES = ("dct", "fft")


def _proc(L: int, basis: str, n_steps: int = 50, k_c: float | None = None) -> sp.SpectralProcess:
    k_c = (math.pi if basis == "dct" else 2 * math.pi) if k_c is None else k_c
    lam = sp.make_lambdas(n_steps, "loglinear", -3.0, -0.5)
    return sp.make_process(L, basis, lam, (50.0, 0.875, 2.0), k_c=k_c, tau=0.1)


@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("L", [6, 7, 8])
def test_transforms_are_orthonormal_and_invertible(basis, L):
    eye = torch.eye(L * L, dtype=torch.float64).reshape(L * L, L, L)
    mat = sp.to_modes(eye, basis).reshape(L * L, L * L)
    assert torch.allclose(mat @ mat.T, torch.eye(L * L, dtype=torch.float64), atol=1e-10)
    x = torch.randn(3, 2, L, L, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sp.from_modes(sp.to_modes(x, basis), basis), x, atol=1e-12)
    assert torch.allclose(sp.to_modes(x, basis).norm(), x.norm())


def test_fft_basis_diagonalises_a_stationary_field():
    # A periodic field with a known spectrum: its Hartley modes are uncorrelated with variance S(f).
    L, n = 8, 20000
    g = torch.Generator().manual_seed(1)
    k2 = sp.wavenumber_sq(L, "fft")
    s = sp.power_spectrum(k2, 10.0, 1.0, 2.0)
    modes = torch.randn(n, L, L, dtype=torch.float64, generator=g) * s.sqrt()
    x = sp.from_modes(modes, "fft")
    # Translating the field leaves the mode variances unchanged (stationarity).
    shifted = torch.roll(x, shifts=(3, 5), dims=(-2, -1))
    var = sp.mode_variance(shifted, "fft")
    assert torch.allclose(var / s, torch.ones_like(s), atol=0.06)


def test_wavenumber_conventions():
    kx, ky = sp.wavenumbers(8, "dct")
    assert kx[3, 0] == pytest.approx(3 * math.pi) and ky[0, 5] == pytest.approx(5 * math.pi)
    kx, _ = sp.wavenumbers(8, "fft")
    assert kx[1, 0] == pytest.approx(2 * math.pi) and kx[7, 0] == pytest.approx(-2 * math.pi)
    assert kx[4, 0] == pytest.approx(-8 * math.pi)  # Nyquist
    assert sp.max_resolved_wavenumber(8, "dct") == pytest.approx(math.sqrt(2) * math.pi * 7)
    assert sp.max_resolved_wavenumber(8, "fft") == pytest.approx(math.sqrt(2) * 2 * math.pi * 4)
    # The largest wavenumber of the grid is the resolved maximum of a full-resolution input.
    for basis in BASES:
        assert sp.wavenumber_sq(8, basis).max().sqrt() == pytest.approx(sp.max_resolved_wavenumber(8, basis))


@pytest.mark.parametrize("basis", BASES)
def test_forward_marginal_matches_closed_form(basis):
    L, n_samples = 8, 4000
    proc = _proc(L, basis)
    g = torch.Generator().manual_seed(2)
    x0 = sp.to_modes(torch.randn(1, 1, L, L, dtype=torch.float64, generator=g), basis)
    for n in (1, 20, 50):
        x0b = x0.expand(n_samples, 1, L, L)
        noise = torch.randn(x0b.shape, dtype=torch.float64, generator=g)
        xn = sp.corrupt(proc, x0b, torch.full((n_samples,), n), noise)
        ab = torch.exp(-proc.k2_eff * proc.lambdas[n])
        mean_true, var_true = ab.sqrt() * x0[0, 0], (1 - ab) * proc.s0
        emp_mean, emp_var = xn.mean(0)[0], xn.var(0)[0]
        se = (var_true / n_samples).sqrt() + 1e-12
        assert ((emp_mean - mean_true).abs() / se).max() < 5.0
        assert torch.allclose(emp_var, var_true, rtol=0.12, atol=1e-12)


def test_snr_is_independent_of_spectrum_and_cutoff_is_consistent():
    lam = torch.tensor(0.01, dtype=torch.float64)
    kt = sp.k_tau(lam, 0.1)
    assert float(sp.snr(kt**2, lam)) == pytest.approx(0.1, rel=1e-10)
    a = _proc(8, "dct")
    b = sp.make_process(8, "dct", a.lambdas, (1.0, 2.0, 3.0), k_c=math.pi)
    n = torch.tensor([10])
    ab_a, ab_b = sp.abar(a, n), sp.abar(b, n)
    assert torch.equal(ab_a, ab_b)  # attenuation (hence SNR) does not involve S0


@pytest.mark.parametrize("kind,args", [("linear", (137.7, 5.6, 9.5)), ("loglinear", (-3.3, -0.5, 1.0))])
def test_schedules_increase_and_k_tau_decreases(kind, args):
    lam = sp.make_lambdas(200, kind, args[0], args[1], args[2])
    assert lam[0] == 0 and bool((lam[1:] > lam[:-1]).all())
    kt = sp.k_tau(lam[1:], 0.1)
    assert bool((kt[1:] < kt[:-1]).all())


def test_linear_schedule_formula():
    t = torch.tensor([0.25], dtype=torch.float64)
    assert float(sp.lambda_linear(t, 9.0, 564.2461, 275.4361)) == pytest.approx(
        9 * 0.25 / (564.2461 * 0.75 + 275.4361) ** 2)
    assert float(sp.lambda_loglinear(t, -3.0, -1.0)) == pytest.approx(0.25 * 10 ** (-2.5))
    # Paper example (128 px, 4x SR): at t = 1 the 32-px corner mode sqrt(2) pi 32 sits at SNR = tau.
    lam1 = sp.lambda_linear(torch.tensor(1.0, dtype=torch.float64), 9.0, 564.2461, 275.4361)
    assert float(sp.k_tau(lam1, 0.1)) == pytest.approx(math.sqrt(2) * math.pi * 32, rel=2e-3)


@pytest.mark.parametrize("basis", BASES)
def test_start_step_selection_for_every_resolution(basis):
    L = 32
    lam = sp.make_lambdas(1000, "loglinear", -3.3, -0.5)
    prev = None
    for R in range(L // 8, L + 1):          # includes non-powers of two
        k_max = sp.max_resolved_wavenumber(R, basis)
        n0 = sp.start_step(lam, k_max, 0.1)
        kt = sp.k_tau(lam, 0.1)
        assert 1 <= n0 <= 1000
        assert kt[n0] <= k_max
        if n0 > 1:
            assert kt[n0 - 1] > k_max      # the FIRST step at or below the input's resolution
        if prev is not None:
            assert n0 <= prev              # finer inputs start later in the reverse process (smaller n)
        prev = n0
    # A cutoff that is never reached falls back to pure generation from N.
    assert sp.start_step(lam, 1e-3, 0.1) == 1000


@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("L,R", [(16, 2), (16, 5), (16, 8), (16, 11), (16, 16), (9, 4), (9, 3)])
def test_placement_keeps_low_res_modes(basis, L, R):
    g = torch.Generator().manual_seed(3)
    x_low = torch.randn(2, 1, R, R, dtype=torch.float64, generator=g)
    modes, known = sp.place_modes(x_low, L, basis)
    assert modes.shape == (2, 1, L, L)
    assert float(modes[..., ~known].abs().sum()) < 1e-9   # nothing invented above the input
    back = sp.spectral_resample(sp.from_modes(modes, basis), R, basis)
    assert torch.allclose(back, x_low, atol=1e-10)                      # low-res content kept exactly
    if basis == "dct":
        assert torch.allclose(modes[..., :R, :R], (L / R) * sp.to_modes(x_low, "dct"), atol=1e-10)
    # A constant image stays the same constant (placement respects the physical scale of each mode).
    const = sp.spectral_resample(torch.full((R, R), 0.7, dtype=torch.float64), L, basis)
    assert torch.allclose(const, torch.full((L, L), 0.7, dtype=torch.float64), atol=1e-10)


def test_placement_rejects_bad_sizes():
    with pytest.raises(ValueError, match="R x R"):
        sp.place_modes(torch.zeros(1, 1, 20, 20), 16, "dct")
    with pytest.raises(ValueError, match="square"):
        sp.place_modes(torch.zeros(1, 1, 4, 5), 16, "dct")
    with pytest.raises(ValueError, match="basis"):
        sp.to_modes(torch.zeros(4, 4), "wavelet")


@pytest.mark.parametrize("basis", BASES)
def test_spectrum_fit_recovers_parameters(basis):
    k2 = sp.wavenumber_sq(32, basis)
    g = torch.Generator().manual_seed(4)
    for C, alpha, k0sq in [(300.0, 0.875, 2.0), (5.0, 1.2, 2.9), (40.0, 0.5, 1.7)]:
        s = sp.power_spectrum(k2, C, alpha, k0sq)
        noisy = s * torch.exp(0.02 * torch.randn(s.shape, dtype=torch.float64, generator=g))
        c_f, a_f, k_f = sp.fit_power_spectrum(k2, noisy)
        assert a_f == pytest.approx(alpha, abs=0.02)
        assert c_f == pytest.approx(C, rel=0.1)
        assert k_f == pytest.approx(k0sq, abs=0.3)
        assert sp.K0SQ_BOUNDS[0] <= k_f <= sp.K0SQ_BOUNDS[1]
    # Out-of-bounds k0^2 is clipped to the paper's interval, not extrapolated.
    _, _, k_f = sp.fit_power_spectrum(k2, sp.power_spectrum(k2, 10.0, 1.0, 20.0))
    assert k_f == pytest.approx(3.0)


def test_posterior_matches_gaussian_conditioning():
    proc = _proc(8, "fft")
    g = torch.Generator().manual_seed(5)
    x0 = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=g)
    xn = torch.randn(1, 1, 8, 8, dtype=torch.float64, generator=g) * 3
    for n, m in [(10, 9), (40, 7), (50, 0)]:
        mean, var = sp.posterior(proc, xn, x0, torch.tensor([n]), torch.tensor([m]))
        ab_n, ab_m = torch.exp(-proc.k2_eff * proc.lambdas[n]), torch.exp(-proc.k2_eff * proc.lambdas[m])
        # Joint Gaussian of (X_m, X_n) given X_0: generic conditioning formula.
        v_m, v_n = (1 - ab_m) * proc.s0, (1 - ab_n) * proc.s0
        cov = (ab_n / ab_m).sqrt() * v_m
        mean_ref = ab_m.sqrt() * x0 + cov / v_n * (xn - ab_n.sqrt() * x0)
        var_ref = v_m - cov**2 / v_n
        assert torch.allclose(mean, mean_ref, atol=1e-9)
        assert torch.allclose(var, var_ref.expand_as(var), atol=1e-9)
    assert float(var.abs().max()) == 0.0  # m = 0: deterministic


@pytest.mark.parametrize("n,m", [(30, 29), (30, 12)])
def test_posterior_step_preserves_forward_marginal(n, m):
    # x_n ~ q(x_n | x0) then x_m ~ q(x_m | x_n, x0) must give x_m ~ q(x_m | x0), with Cov(x_m, x_n) = A Sigma_m.
    L, N = 6, 8000
    proc = _proc(L, "dct")
    g = torch.Generator().manual_seed(6)
    x0 = torch.randn(1, 1, L, L, dtype=torch.float64, generator=g).expand(N, 1, L, L)
    xn = sp.corrupt(proc, x0, torch.full((N,), n), torch.randn(N, 1, L, L, dtype=torch.float64, generator=g))
    true_eps = (xn - sp.marginal_std(proc, torch.tensor([n]))[0] * x0) / sp.marginal_std(proc, torch.tensor([n]))[1]
    xm = sp.sample_step(proc, xn, true_eps, torch.full((N,), n), torch.full((N,), m), generator=g)
    ab_m = torch.exp(-proc.k2_eff * proc.lambdas[m])
    ab_n = torch.exp(-proc.k2_eff * proc.lambdas[n])
    v_m = (1 - ab_m) * proc.s0
    assert torch.allclose(xm.var(0)[0], v_m, rtol=0.1)
    se = (v_m / N).sqrt()
    assert float(((xm.mean(0)[0] - ab_m.sqrt() * x0[0, 0]) / se).abs().max()) < 5
    cov = ((xm - xm.mean(0)) * (xn - xn.mean(0))).mean(0)[0]
    v_n = (1 - ab_n) * proc.s0
    cov_se = (v_m * v_n / N).sqrt()
    assert float(((cov - (ab_n / ab_m).sqrt() * v_m) / cov_se).abs().max()) < 6


@pytest.mark.parametrize("basis", BASES)
@pytest.mark.parametrize("num_steps", [None, 7])
def test_sampler_with_oracle_recovers_data(basis, num_steps):
    L = 8
    proc = _proc(L, basis)
    g = torch.Generator().manual_seed(7)
    x0_pix = torch.sign(torch.randn(4, 1, L, L, generator=g)).double()
    x0 = sp.to_modes(x0_pix, basis)

    def oracle(x_pix, n):
        a, s = sp.marginal_std(proc, n)
        return sp.from_modes((sp.to_modes(x_pix.double(), basis) - a * x0) / s, basis)

    start = sp.prior_sample(proc, (4, 1, L, L), proc.num_steps, generator=g)
    out = sp.sample(proc, oracle, start, proc.num_steps, num_steps=num_steps, generator=g)
    assert out.dtype == torch.float32
    assert torch.allclose(out.double(), x0_pix, atol=1e-3)


def test_loss_is_mode_space_mse_and_zero_for_perfect_prediction():
    g = torch.Generator().manual_seed(8)
    eps = torch.randn(3, 1, 8, 8, generator=g)
    for basis in BASES:
        perfect = sp.from_modes(eps, basis)
        assert float(sp.loss(perfect, eps, basis).max()) < 1e-10
        other = torch.randn(3, 1, 8, 8, generator=g)
        per = sp.loss(other, eps, basis)
        assert per.shape == (3,)
        # Orthonormal transform: the mode-space loss equals the pixel-space MSE against T^-1(eps).
        assert torch.allclose(per, (other - perfect).pow(2).flatten(1).mean(1), atol=1e-5)


def test_prior_for_super_resolution_keeps_known_modes_only():
    L, R = 16, 4
    proc = _proc(L, "fft")
    g = torch.Generator().manual_seed(9)
    x_low = torch.randn(2000, 1, R, R, dtype=torch.float64, generator=g)
    modes, known = sp.place_modes(x_low, L, "fft")
    n0 = 20
    xs = sp.prior_sample(proc, modes.shape, n0, generator=g, known_modes=modes, known=known)
    a, s = sp.marginal_std(proc, torch.tensor([n0]))
    resid = (xs - a * modes) / s
    # Known modes: forward marginal around the input; unknown modes: prior N(0, S0).
    assert abs(float(resid[..., known].std()) - 1.0) < 0.05
    unknown = xs[..., ~known] / proc.s0[~known].sqrt()
    assert abs(float(unknown.std()) - 1.0) < 0.05 and abs(float(unknown.mean())) < 0.05


def test_step_sequence_and_validation():
    assert sp.step_sequence(5) == [5, 4, 3, 2, 1, 0]
    seq = sp.step_sequence(1000, 10)
    assert seq[0] == 1000 and seq[-1] == 0 and len(seq) == 11 and seq == sorted(seq, reverse=True)
    with pytest.raises(ValueError, match="n_start"):
        sp.step_sequence(0)
    proc = _proc(8, "dct")
    with pytest.raises(ValueError, match="steps in 0..50"):
        sp.corrupt(proc, torch.zeros(2, 1, 8, 8), torch.tensor([1, 51]), torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match="not strictly increasing"):
        sp.make_lambdas(10, "loglinear", 2.0, -5.0)


def test_prior_with_uncertain_known_modes():
    L, R, n0 = 8, 4, 25
    proc = _proc(L, "fft")
    g = torch.Generator().manual_seed(10)
    modes, known = sp.place_modes(torch.randn(1, 1, R, R, dtype=torch.float64, generator=g), L, "fft")
    modes = modes.expand(4000, 1, L, L)
    known_var = torch.full((L, L), 2.0, dtype=torch.float64)
    xs = sp.prior_sample(proc, tuple(modes.shape), n0, generator=g, known_modes=modes, known=known,
                         known_var=known_var)
    a, s = sp.marginal_std(proc, torch.tensor([n0]))
    expected = (a * a * known_var + s * s)[0, 0]
    ratio = xs.var(0)[0][known] / expected[known]
    assert abs(float(ratio.mean()) - 1.0) < 0.03
    with pytest.raises(ValueError, match="known_var"):
        sp.prior_sample(proc, tuple(modes.shape), n0, known_modes=modes, known=known, known_var=-known_var)


def test_regularised_x0_estimate_is_the_lmmse_for_noisy_eps():
    # Gaussian data X0 ~ N(0, S0) and an eps prediction with error std 0.1: the regularised estimate beats the
    # exact inversion on buried modes and coincides with it on resolved ones.
    L, n_samples, n = 8, 4000, 25
    proc = _proc(L, "fft")
    g = torch.Generator().manual_seed(11)
    x0 = torch.randn(n_samples, 1, L, L, dtype=torch.float64, generator=g) * proc.s0.sqrt()
    eps = torch.randn(x0.shape, dtype=torch.float64, generator=g)
    nn = torch.full((n_samples,), n)
    xn = sp.corrupt(proc, x0, nn, eps)
    eps_hat = eps + 0.1 * torch.randn(x0.shape, dtype=torch.float64, generator=g)
    exact = sp.predict_x0(proc, xn, eps_hat, nn)
    reg = sp.predict_x0(proc, xn, eps_hat, nn, eps_error=0.1)
    ab = sp.abar(proc, torch.tensor([n]))[0, 0]
    buried, resolved = ab < 1e-3, ab > 0.5
    assert buried.any() and resolved.any()
    mse = lambda est: ((est - x0) ** 2).mean(0)[0]  # noqa: E731
    assert bool((mse(reg)[buried] < 0.1 * mse(exact)[buried]).all())
    assert torch.allclose(reg[..., resolved], exact[..., resolved], rtol=0.05, atol=1e-3)


def test_process_to_device_is_identity_where_it_already_is():
    proc = sp.make_process(8, "fft", sp.make_lambdas(10, "loglinear", -3.0, -0.5), (1.0, 1.0, 0.5))
    assert proc.to("cpu") is proc


def test_pinned_modes_take_the_posterior_around_the_known_x0():
    L = 8
    proc = _proc(L, "fft")
    g = torch.Generator().manual_seed(3)
    x0_true = torch.randn(3, 1, L, L, dtype=torch.float64, generator=g)
    known = sp.known_mode_mask(4, L, "fft")
    x_n = sp.corrupt(proc, x0_true, torch.full((3,), 10), torch.randn(3, 1, L, L, dtype=torch.float64, generator=g))
    eps_hat = torch.zeros_like(x_n)   # a network that knows nothing
    n, m = torch.full((3,), 10), torch.zeros(3, dtype=torch.long)
    free = sp.sample_step(proc, x_n, eps_hat, n, m)
    pinned = sp.sample_step(proc, x_n, eps_hat, n, m, pinned=(known, x0_true))
    # The last step lands on the known X_0 on the pinned modes and leaves the others to the network.
    assert torch.allclose(pinned[..., known], x0_true[..., known], atol=1e-12)
    assert torch.allclose(pinned[..., ~known], free[..., ~known], atol=1e-12)
    assert not torch.allclose(free[..., known], x0_true[..., known], atol=1e-3)
    with pytest.raises(ValueError, match="pinned: expected"):
        sp.sample_step(proc, x_n, eps_hat, n, m, pinned=(known, x0_true[:1]))
