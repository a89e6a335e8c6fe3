"""C_T (Meehan et al. 2020) against the data-copying reference as dgm-eval ships it
(``dgm_eval/metrics/ct.py``, taken from casey-meehan/data-copying), ported below with sklearn's
NearestNeighbors, on the same samples and the same cells; and its direction on copies vs fresh samples."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn.cluster import KMeans
from sklearn.neighbors import NearestNeighbors as NN

from collapse_audit.metrics import ct_score


def _ref_zu(Pn, Qm, T):
    m, n = Qm.shape[0], Pn.shape[0]
    T_NN = NN(n_neighbors=1).fit(T)
    LQm, _ = T_NN.kneighbors(X=Qm, n_neighbors=1)
    LPn, _ = T_NN.kneighbors(X=Pn, n_neighbors=1)
    u, _ = mannwhitneyu(LQm, LPn, alternative="less")
    mean = (n * m / 2) - 0.5
    std = np.sqrt(n * m * (n + m + 1) / 12)
    return (u - mean) / std


def _ref_ct(Pn, Pn_cells, Qm, Qm_cells, T, T_cells, tau):
    m, n = Qm.shape[0], Pn.shape[0]
    k = np.max(np.unique(T_cells)) + 1
    labels, cts = np.unique(Qm_cells, return_counts=True)
    Qm_cts = np.zeros(k)
    Qm_cts[labels.astype(int)] = cts
    Pi_tau = Qm_cts / m > tau
    labels, cts = np.unique(Pn_cells, return_counts=True)
    Pn_cts = np.zeros(k)
    Pn_cts[labels.astype(int)] = cts
    Pn_of_pi = Pn_cts / n
    Zu = np.zeros(k)
    for i in range(k):
        if len(Qm[Qm_cells == i]) > 0:
            Zu[i] = np.ravel(_ref_zu(Pn[Pn_cells == i], Qm[Qm_cells == i], T[T_cells == i]))[0]
    return Pn_of_pi[Pi_tau].dot(Zu[Pi_tau]) / np.sum(Pn_of_pi[Pi_tau])


def _sets(seed, copy_frac):
    rng = np.random.default_rng(seed)
    T = rng.standard_normal((600, 8))
    P = rng.standard_normal((300, 8))
    n_copy = int(400 * copy_frac)
    Q = np.vstack([rng.standard_normal((400 - n_copy, 8)), T[rng.integers(0, 600, n_copy)] + 0.01 * rng.standard_normal((n_copy, 8))])
    km = KMeans(n_clusters=3, n_init=10, random_state=seed).fit(T)
    return T, P, Q, km.predict(T), km.predict(P), km.predict(Q)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("copy_frac", [0.0, 0.3])
def test_ct_equals_the_reference_on_the_same_cells(seed, copy_frac):
    T, P, Q, tc, pc, qc = _sets(seed, copy_frac)
    want = _ref_ct(P.astype(np.float32), pc, Q.astype(np.float32), qc, T.astype(np.float32), tc, tau=20 / len(Q))
    got = ct_score(T, P, Q, tc, pc, qc)
    # float32 distances from FAISS and sklearn may order a near-tie differently: one rank moves Z by ~1/std
    assert got == pytest.approx(want, abs=0.02)


def test_ct_is_negative_for_copies_and_near_zero_for_fresh_samples():
    fresh = [ct_score(*_sets(s, 0.0)) for s in range(10)]
    copies = [ct_score(*_sets(s, 0.5)) for s in range(10)]
    assert abs(np.mean(fresh)) < 1.0 and max(copies) < -3.0
