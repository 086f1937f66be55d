"""physics: the scientific ground truth -- 2D Ising Monte Carlo, observables, exact results, datasets.

Modules (import the one you need; importing the package itself is cheap):

* ``physics.ising``: numba kernels (checkerboard Metropolis, Wolff, Swendsen-Wang), parallel chains and
  ``sample_configurations(L, T, n_samples, algorithm="wolff", seed=0, ...) -> SampleResult``.
* ``physics.observables``: energy, specific heat, |m|, m^2, susceptibility, Binder U4, G(r), S(k) and its
  log-slope, G4c(l); each with a blocked-jackknife standard error; ``summary(spins, T)`` gives them all.
* ``physics.exact``: Kaufman's finite-torus partition function, brute-force enumeration, Onsager's limits.
* ``physics.coarse``: majority-rule block spins (seeded tie coin) and block averages.
* ``physics.autocorr``: integrated autocorrelation time with automatic windowing.
* ``physics.datasets``: ``.npz`` spin datasets (``spins`` int8 (N, L, L) + metadata), read without pickle.
* ``physics.validation``: compare an ensemble with ground truth on every observable (value, stderr, z, pass).
* ``physics.reference``: slow NumPy/Python references of the kernels (tests and benchmarks only).
"""
