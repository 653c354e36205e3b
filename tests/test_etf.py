import pytest
import torch

from allnc_dist.method.etf import simplex_etf


@pytest.mark.parametrize("k,d", [(2, 1), (4, 3), (10, 9), (10, 64), (100, 128)])
def test_rows_are_unit_and_equiangular(k, d):
    etf = simplex_etf(k, d, seed=3, dtype=torch.float64)
    assert etf.shape == (k, d)
    torch.testing.assert_close(etf.norm(dim=1), torch.ones(k, dtype=torch.float64))
    cos = etf @ etf.T
    off = cos[~torch.eye(k, dtype=torch.bool)]
    torch.testing.assert_close(off, torch.full_like(off, -1.0 / (k - 1)))
    # A simplex is centred: its rows sum to zero.
    torch.testing.assert_close(etf.sum(0), torch.zeros(d, dtype=torch.float64), atol=1e-12, rtol=0)


def test_seed_fixes_the_rotation():
    assert torch.equal(simplex_etf(5, 8, seed=1), simplex_etf(5, 8, seed=1))
    assert not torch.equal(simplex_etf(5, 8, seed=1), simplex_etf(5, 8, seed=2))


def test_too_many_classes_for_the_dimension():
    with pytest.raises(ValueError, match=r"dim >= 10 \(K <= D \+ 1\), got dim=9"):
        simplex_etf(11, 9)


def test_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        simplex_etf(1, 4)
