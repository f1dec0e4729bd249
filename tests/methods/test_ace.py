"""ACE with the SuperSmoother: agreement with the `ace` 0.4.2 package, batching, invariances, input checks."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch

import neuronviz.methods.ace as ace_module
from neuronviz.core.errors import NeuronvizError
from neuronviz.methods.ace import SPANS, AceResult, ace, ace_batch, maximal_correlation

ace_ref = pytest.importorskip("ace.ace", reason="the `ace` package (test oracle) is not installed")


# -- the oracle ----------------------------------------------------------------------------


def reference(x, y) -> tuple[float, np.ndarray, np.ndarray, int]:
    """rho, phi (n, p), theta (n,) and outer iterations from ace 0.4.2's ACESolver."""
    xs = [np.asarray(x, float)] if np.ndim(x) == 1 else [np.asarray(c, float) for c in np.asarray(x).T]
    solver = ace_ref.ACESolver()
    solver.specify_data_set(xs, np.asarray(y, float))
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every iteration
        solver.solve()
    phi = np.stack(solver.x_transforms, axis=1)
    theta = np.asarray(solver.y_transform)
    if len(xs) == 1:
        rho = abs(np.corrcoef(phi[:, 0], theta)[0, 1])
    else:
        rho = float(np.sqrt(max(solver.rsq, 0.0)))
    return rho, phi, theta, solver._outer_iters


def breiman85(n: int, seed: int):
    """Breiman & Friedman (1985): x = cbrt(z), y = exp(x^3 + eps)."""
    rng = np.random.default_rng(seed)
    x = np.cbrt(rng.standard_normal(n))
    return x, np.exp(x**3 + rng.standard_normal(n))


def quadratic(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    return x, x**2 + 0.05 * rng.standard_normal(n)


def independent(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n), rng.standard_normal(n)


def many_ties(n: int, seed: int):
    """x on 5 levels, y rounded to one decimal."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.uniform(-1, 1, n) * 2) / 2
    return x, np.round(x**2 + 0.3 * rng.standard_normal(n), 1)


def sine(n: int, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, n)
    return x, np.sin(2 * np.pi * x) + 0.5 * rng.standard_normal(n)


ORACLE_CASES = (
    [("breiman85", breiman85, 200, s) for s in range(5)]
    + [("quadratic", quadratic, 300, s) for s in range(3)]
    + [("independent", independent, 300, s) for s in range(3)]
    + [("many_ties", many_ties, 300, s) for s in range(3)]
    + [(f"sine_n{n}", sine, n, s) for n in (40, 100, 500) for s in range(3)]
    + [("sine_n2000", sine, 2000, s) for s in range(2)]
)


def _abs_corr(a, b) -> float:
    return abs(float(np.corrcoef(np.asarray(a), np.asarray(b))[0, 1]))


@pytest.mark.parametrize(
    "make, n, seed", [c[1:] for c in ORACLE_CASES], ids=[f"{c[0]}-seed{c[3]}" for c in ORACLE_CASES]
)
def test_rho_and_transforms_agree_with_the_ace_package(make, n, seed):
    x, y = make(n, seed)
    rho_ref, phi_ref, theta_ref, iters_ref = reference(x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = ace(x, y)
    assert abs(res.rho - rho_ref) < 0.01
    assert _abs_corr(res.x_transforms[:, 0], phi_ref[:, 0]) > 0.99
    assert _abs_corr(res.y_transform, theta_ref) > 0.99
    # same algorithm, same control flow: in fact equal up to rounding
    assert abs(res.rho - rho_ref) < 1e-8
    assert np.abs(res.x_transforms[:, 0].numpy() - phi_ref[:, 0]).max() < 1e-6
    assert res.iterations == iters_ref


def test_quadratic_dependence_has_high_maximal_but_near_zero_pearson_correlation():
    x, y = quadratic(300, 0)
    assert abs(np.corrcoef(x, y)[0, 1]) < 0.15
    assert ace(x, y).rho > 0.97


def test_breiman_example_is_near_its_theoretical_value():
    rhos = [ace(*breiman85(200, s)).rho for s in range(5)]
    assert all(0.6 < r < 0.85 for r in rhos)  # theory 1/sqrt(2); small samples scatter


@pytest.mark.parametrize("seed", [0, 1])
def test_several_predictors_agree_with_the_ace_package(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (200, 3))
    y = np.exp(x[:, 0] + x[:, 1] ** 2 + 0.2 * rng.standard_normal(200))
    rho_ref, phi_ref, theta_ref, _ = reference(x, y)
    res = ace(x, y)
    assert res.x_transforms.shape == (200, 3)
    assert abs(res.rho - rho_ref) < 1e-8
    assert abs(res.rsq - rho_ref**2) < 1e-8
    assert np.abs(res.x_transforms.numpy() - phi_ref).max() < 1e-6
    assert np.abs(res.y_transform.numpy() - theta_ref).max() < 1e-6


def test_result_fields_have_the_documented_types_and_shapes():
    x, y = sine(120, 0)
    res = ace(torch.tensor(x), torch.tensor(y))
    assert isinstance(res, AceResult)
    assert isinstance(res.rho, float) and isinstance(res.rsq, float) and isinstance(res.iterations, int)
    assert res.x_transforms.shape == (120, 1) and res.y_transform.shape == (120,)
    assert res.x_transforms.dtype == torch.float64
    theta = res.y_transform
    assert abs(float(theta.mean())) < 1e-12 and abs(float(theta.std(unbiased=False)) - 1) < 1e-12
    assert res.rho == pytest.approx(_abs_corr(res.x_transforms[:, 0], theta), abs=1e-12)
    assert 3 <= res.iterations <= 20


# -- the smoother on its own ---------------------------------------------------------------


@pytest.mark.parametrize("levels", [None, 10, 4])
def test_supersmoother_and_fixed_span_smooths_match_the_reference(levels):
    from ace import smoother as ref_smoother
    from ace import supersmoother as ref_supersmoother

    rng = np.random.default_rng(7)
    n = 200
    x = np.sort(rng.uniform(0, 1, n) if levels is None else rng.integers(0, levels, n).astype(float))
    y = np.sin(2 * np.pi * x) + 0.3 * rng.standard_normal(n)
    var = ace_module._SortedVariable(torch.tensor(x)[None])
    smooths, resid = var.primary(torch.tensor(y)[None])
    for k, span in enumerate(SPANS):
        ref = ref_smoother.perform_smooth(list(x), list(y), span)
        assert np.abs(smooths[0, k].numpy() - ref.smooth_result).max() < 1e-10
        assert np.abs(resid[0, k].numpy() - ref.cross_validated_residual).max() < 1e-10
    ref = ref_smoother.perform_smooth(list(x), list(y), smoother_cls=ref_supersmoother.SuperSmoother)
    assert np.abs(var.supersmooth(torch.tensor(y)[None])[0].numpy() - ref.smooth_result).max() < 1e-10


def test_tied_x_get_the_mean_smooth_of_their_run():
    x = np.repeat(np.arange(10.0), 12)
    y = np.random.default_rng(8).standard_normal(x.size)
    out = ace_module._SortedVariable(torch.tensor(x)[None]).supersmooth(torch.tensor(y)[None])[0].numpy()
    assert np.abs(out.reshape(10, 12) - out.reshape(10, 12)[:, :1]).max() < 1e-14


def test_a_point_with_leverage_one_reuses_the_previous_residual():
    # the last point is alone at the end of its 5-point tweeter window, the rest tied at 0:
    # 1 - leverage is exactly 0 and supsmu.f carries the previous residual forward
    x = np.array([0.0] * 8 + [1.0])
    y = np.arange(9.0) ** 1.5
    _, resid = ace_module._SortedVariable(torch.tensor(x)[None]).primary(torch.tensor(y)[None])
    assert resid[0, 0, 8] == resid[0, 0, 7]
    assert torch.isfinite(resid).all()


# -- batching ------------------------------------------------------------------------------


def _mixed_problems(b: int = 16, n: int = 300, seed: int = 0):
    """Problems from no dependence to a strong one, with and without ties."""
    rng = np.random.default_rng(seed)
    y = rng.standard_normal(n)
    x = np.empty((b, n))
    for i in range(b):
        noise = rng.standard_normal(n)
        kind = i % 4
        if kind == 0:
            x[i] = noise
        elif kind == 1:
            x[i] = y**2 + (0.1 + 0.3 * i / b) * noise
        elif kind == 2:
            x[i] = np.round(np.sin(2 * y) + 0.5 * noise, 1)
        else:
            x[i] = np.exp(y) * (1 + 0.05 * i) + noise
    return x, y


def test_batched_problems_equal_solving_them_one_by_one():
    x, y = _mixed_problems()
    batched = ace_batch(x, y)
    singles = [ace(x[i], y) for i in range(len(x))]
    assert len({r.iterations for r in singles}) > 1  # problems stop at different iterations
    assert torch.equal(batched.iterations, torch.tensor([r.iterations for r in singles]))
    for i, r in enumerate(singles):
        assert abs(float(batched.rho[i]) - r.rho) < 1e-10
        assert torch.allclose(batched.x_transforms[i], r.x_transforms, atol=1e-10, rtol=0)
        assert torch.allclose(batched.y_transform[i], r.y_transform, atol=1e-10, rtol=0)
    assert torch.allclose(maximal_correlation(x, y), batched.rho, atol=1e-12, rtol=0)


def test_shared_y_equals_the_same_y_given_per_problem():
    x, y = _mixed_problems(seed=1)
    y = np.round(y, 1)  # with ties in y too
    shared = maximal_correlation(x, y)
    per_problem = maximal_correlation(x, np.tile(y, (len(x), 1)))
    assert shared.shape == (len(x),)
    assert torch.allclose(shared, per_problem, atol=1e-10, rtol=0)


def test_per_problem_y_equals_one_by_one():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (6, 150))
    y = x**2 + rng.uniform(0.02, 1.0, (6, 1)) * rng.standard_normal((6, 150))
    rho = maximal_correlation(x, y)
    for i in range(6):
        assert abs(float(rho[i]) - ace(x[i], y[i]).rho) < 1e-10
        assert abs(float(rho[i]) - reference(x[i], y[i])[0]) < 1e-8


def test_batched_problems_with_several_predictors_equal_one_by_one():
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (5, 120, 2))
    y = x[..., 0] + x[..., 1] ** 2 * np.arange(1, 6)[:, None] + 0.3 * rng.standard_normal((5, 120))
    res = ace_batch(x, y)
    assert res.x_transforms.shape == (5, 120, 2)
    for i in range(5):
        single = ace(x[i], y[i])
        assert abs(float(res.rho[i]) - single.rho) < 1e-10
        assert torch.allclose(res.x_transforms[i], single.x_transforms, atol=1e-10, rtol=0)


@pytest.mark.parametrize("shared_y", [True, False])
def test_a_small_working_set_gives_the_same_results(monkeypatch, shared_y):
    # problems join and leave a working set of 3; among them tied and untied x, and one whose
    # largest x stands alone (a window with leverage 1)
    x, y = _mixed_problems(seed=5)
    x[5] = np.where(np.arange(x.shape[1]) == 7, 1.0, 0.0)
    y = y if shared_y else np.tile(y, (len(x), 1))
    whole = ace_batch(x, y)
    monkeypatch.setitem(ace_module._BLOCK_ELEMENTS, "cpu", 3 * 300 * 2)
    small = ace_batch(x, y)
    assert torch.equal(small.iterations, whole.iterations)
    assert torch.allclose(small.rho, whole.rho, atol=1e-12, rtol=0)
    assert torch.allclose(small.y_transform, whole.y_transform, atol=1e-12, rtol=0)
    assert torch.allclose(small.x_transforms, whole.x_transforms, atol=1e-12, rtol=0)


def test_swapping_problem_order_permutes_the_results():
    x, y = _mixed_problems(seed=3)
    perm = np.random.default_rng(0).permutation(len(x))
    rho = maximal_correlation(x, y)
    assert torch.allclose(maximal_correlation(x[perm], y), rho[perm], atol=1e-12, rtol=0)


def test_tensor_input_stays_on_its_device_in_float64():
    x, y = _mixed_problems(b=3, n=80)
    rho = maximal_correlation(torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
    assert rho.dtype == torch.float64 and rho.device.type == "cpu" and rho.shape == (3,)
    assert torch.allclose(rho, maximal_correlation(x.astype(np.float32), y.astype(np.float32)))


# -- invariances ---------------------------------------------------------------------------


@pytest.mark.parametrize("factor", [3.7, 1e-4, 1e5])
def test_positive_affine_maps_of_x_or_y_leave_rho_unchanged(factor):
    x, y = _mixed_problems(b=8, seed=4)
    rho = maximal_correlation(x, y)
    assert torch.allclose(maximal_correlation(factor * x, y), rho, atol=1e-10, rtol=0)
    assert torch.allclose(maximal_correlation(x + 1e3, y), rho, atol=1e-8, rtol=0)
    assert torch.allclose(maximal_correlation(x, factor * y - 2.0), rho, atol=1e-8, rtol=0)


def test_monotone_transform_of_x_changes_rho_little_and_as_the_reference_does():
    # Running-lines smooths work in the units of x, so a monotone transform is only nearly
    # invariant; exact invariance holds for positive affine maps.
    for make in (quadratic, sine):
        x, y = make(300, 0)
        rho, rho_exp = ace(x, y).rho, ace(np.exp(x), y).rho
        assert abs(rho - rho_exp) < 5e-3
        assert abs(rho_exp - reference(np.exp(x), y)[0]) < 1e-8


# -- degenerate and bad input --------------------------------------------------------------


def test_constant_x_gives_rho_zero_without_nan():
    x, y = _mixed_problems(b=4, n=100)
    x[1] = 2.5
    res = ace_batch(x, y)
    assert torch.isfinite(res.x_transforms).all() and torch.isfinite(res.y_transform).all()
    assert float(res.rho[1]) == 0.0
    assert torch.all(res.x_transforms[1] == 0)
    single = ace(np.full(100, 0.1), y)
    assert single.rho == 0.0 and np.isfinite(single.rsq)
    others = ace_batch(np.delete(x, 1, axis=0), y)
    assert torch.allclose(res.rho[[0, 2, 3]], others.rho, atol=1e-10, rtol=0)


def test_a_constant_column_among_several_predictors_is_ignored():
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (150, 2))
    y = x[:, 0] ** 2 + 0.1 * rng.standard_normal(150)
    with_const = ace(np.column_stack([x[:, 0], np.full(150, 7.0)]), y)
    alone = ace(x[:, 0], y)
    assert torch.all(with_const.x_transforms[:, 1] == 0)
    assert with_const.rho == pytest.approx(np.sqrt(alone.rsq), abs=1e-10)


@pytest.mark.parametrize("where", ["x", "y"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected_with_their_count(where, bad):
    x, y = sine(50, 0)
    target = x if where == "x" else y
    target[[3, 10, 20]] = bad
    with pytest.raises(ValueError, match=rf"{where} contains 3 NaN or infinite"):
        ace(x, y)
    with pytest.raises(ValueError, match="3 NaN or infinite"):
        maximal_correlation(x[None], y)


def test_fewer_than_four_observations_are_rejected():
    with pytest.raises(ValueError, match="at least 4 observations"):
        ace([1.0, 2.0, 3.0], [1.0, 0.0, 2.0])


def test_constant_y_is_rejected():
    x, _ = sine(60, 0)
    with pytest.raises(ValueError, match="y is constant"):
        ace(x, np.ones(60))
    y = np.vstack([np.sin(x), np.full(60, 3.0)])
    with pytest.raises(ValueError, match=r"y is constant in 1 problem\(s\) \(index 1\)"):
        maximal_correlation(np.vstack([x, x]), y)


def test_small_samples_warn_that_the_spans_are_unreliable():
    x, y = sine(30, 0)
    with pytest.warns(UserWarning, match="n = 30 < 40"):
        res = ace(x, y)
    assert np.isfinite(res.rho)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ace(*sine(40, 0))


@pytest.mark.parametrize(
    "x, y, message",
    [
        (np.zeros((2, 3, 4, 5)), np.zeros(3), "x must be"),
        (np.random.default_rng(0).random((2, 50)), np.arange(40.0), "y must be"),
        (np.random.default_rng(0).random((2, 50)), np.zeros((3, 50)), "y must be"),
        (np.zeros((0, 50)), np.arange(50.0), "at least one problem"),
        (np.array([["a", "b"]]), np.arange(2.0), "x must be an array"),
    ],
)
def test_bad_shapes_and_types_are_rejected(x, y, message):
    with pytest.raises(NeuronvizError, match=message):
        maximal_correlation(x, y)


def test_x_and_y_of_different_lengths_are_rejected():
    with pytest.raises(ValueError, match="same number of observations, got 50 and 40"):
        ace(np.arange(50.0), np.arange(40.0))


@pytest.mark.parametrize(
    "kwargs", [dict(delrsq=-1.0), dict(delrsq=np.nan), dict(maxit=0), dict(nterm=0), dict(maxit=2.5), dict(maxit=True)]
)
def test_bad_controls_are_rejected(kwargs):
    x, y = sine(50, 0)
    with pytest.raises(ValueError, match="delrsq|maxit|nterm"):
        ace(x, y, **kwargs)


def test_numpy_scalars_are_accepted_as_controls():
    x, y = sine(50, 0)
    assert ace(x, y, maxit=np.int64(5), delrsq=np.float32(0.01)).iterations <= 5


def test_iteration_controls_follow_mace():
    x, y = independent(300, 1)
    assert ace(x, y, maxit=2).iterations == 2  # maxit caps the outer loop below nterm
    assert ace(x, y, delrsq=1.0).iterations == 3  # nterm iterations at least
    rho_ref = reference(x, y)[0]
    assert ace(x, y).rho == pytest.approx(rho_ref, abs=1e-8)


# -- devices -------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_results_equal_cpu_results():
    x, y = _mixed_problems(b=32, seed=6)
    cpu = ace_batch(torch.tensor(x), torch.tensor(y))
    gpu = ace_batch(torch.tensor(x, device="cuda"), torch.tensor(y, device="cuda"))
    assert gpu.rho.device.type == "cuda"
    assert torch.allclose(gpu.rho.cpu(), cpu.rho, atol=1e-8, rtol=0)
    assert torch.allclose(gpu.x_transforms.cpu(), cpu.x_transforms, atol=1e-8, rtol=0)
    assert torch.equal(gpu.iterations.cpu(), cpu.iterations)
