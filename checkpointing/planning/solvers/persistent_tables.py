"""The persistent DP's tables: a numba kernel, and a plain numpy twin that tests compare with it.

Both fill ``opt[s, e, m]``: the least time to run the backward of stages ``s..e`` (stage ``L`` is
the loss) with ``m`` memory slots, given ``a_s`` in memory outside those slots and ``d_{e+1}``
inside them; ``what[s, e, m]`` records the choice. The recurrences follow from the operation
semantics of ``checkpointing.planning.simulate`` (see ``docs/checkpointing.md``):

- ``s == e``: ``Fe_s`` then ``Bwd_s``; needs ``max(cw[s+1] + cbw[s+1] + ftmp[s], bwd[s])``.
- chain: ``Fe_s``, then ``s+1..e`` with ``m - cbw[s+1]``, then ``Bwd_s``; ``Fe_s`` needs
  ``cw[e+1] + cbw[s+1] + ftmp[s]`` and ``Bwd_s`` needs ``bwd[s]``.
- leaf at ``s < j <= e``: ``Fc_s, Fn_{s+1}..Fn_{j-1}`` to store ``a_j``, then ``j..e`` with
  ``m - cw[j]``, then ``s..j-1`` with ``m``; the forwards (without grad, transient ``fntmp``)
  need ``cw[e+1] + max(cw[s+1] + fntmp[s], max_{s<k<j} cw[k] + cw[k+1] + fntmp[k])``.

``bwd[s]`` is the memory ``Bwd_s`` needs: its tape, its transient, and ``d_{s+1}`` unless that took
the place of an output the tape did not save: ``saves_output[s] cw[s+1] + cbw[s+1] + btmp[s]``
(either way ``d_{s+1}`` is there, in its own memory or in the output's).

The arrays are extended so that the loss is stage ``L``: ``fw[L] = 0``, ``cw[L+1] = cbw[L+1] = 0``
and ``ftmp[L] = 0``. Ties go to the chain, then to the smallest ``j``.
"""

from __future__ import annotations

import numba
import numpy as np

INFEASIBLE = -2
CHAIN = -1
SINGLE = 0

_SIGNATURE = (
    "Tuple((float64[:,:,::1], int32[:,:,::1]))"
    "(float64[::1], float64[::1], int64[::1], int64[::1], int64[::1], int64[::1], int64[::1],"
    " int64)"
)


def _base_need(cw: np.ndarray, cbw: np.ndarray, ftmp: np.ndarray, bwd: np.ndarray, s: int) -> int:
    return int(max(cw[s + 1] + cbw[s + 1] + ftmp[s], bwd[s]))


@numba.njit(_SIGNATURE, cache=True)
def _tables_numba(
    fw: np.ndarray,
    bw: np.ndarray,
    cw: np.ndarray,
    cbw: np.ndarray,
    ftmp: np.ndarray,
    fntmp: np.ndarray,
    bwd: np.ndarray,
    slots: int,
) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled; the numpy twin is the reference
    n = fw.shape[0]  # stages plus the loss
    opt = np.full((n, n, slots + 1), np.inf)
    what = np.full((n, n, slots + 1), INFEASIBLE, dtype=np.int32)
    for s in range(n):
        need = max(cw[s + 1] + cbw[s + 1] + ftmp[s], bwd[s])
        for m in range(max(need, 0), slots + 1):
            opt[s, s, m] = fw[s] + bw[s]
            what[s, s, m] = SINGLE
    for d in range(1, n):
        for s in range(n - d):
            e = s + d
            chain_need = max(cw[e + 1] + cbw[s + 1] + ftmp[s], bwd[s])
            chain_need = max(chain_need, cbw[s + 1])
            for m in range(max(chain_need, 0), slots + 1):
                sub = opt[s + 1, e, m - cbw[s + 1]]
                if sub < np.inf:
                    opt[s, e, m] = fw[s] + bw[s] + sub
                    what[s, e, m] = CHAIN
            forward_need = cw[s + 1] + fntmp[s]
            fw_sum = 0.0
            for j in range(s + 1, e + 1):
                fw_sum += fw[j - 1]
                if j > s + 1:
                    forward_need = max(forward_need, cw[j - 1] + cw[j] + fntmp[j - 1])
                leaf_need = max(cw[e + 1] + forward_need, cw[j])
                for m in range(max(leaf_need, 0), slots + 1):
                    cost = fw_sum + opt[j, e, m - cw[j]] + opt[s, j - 1, m]
                    if cost < opt[s, e, m]:
                        opt[s, e, m] = cost
                        what[s, e, m] = j
    return opt, what


def tables_numpy(
    fw: np.ndarray,
    bw: np.ndarray,
    cw: np.ndarray,
    cbw: np.ndarray,
    ftmp: np.ndarray,
    fntmp: np.ndarray,
    bwd: np.ndarray,
    slots: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The same tables, vectorised over memory with numpy (the readable reference)."""
    n = fw.shape[0]
    memory = np.arange(slots + 1)
    opt = np.full((n, n, slots + 1), np.inf)
    what = np.full((n, n, slots + 1), INFEASIBLE, dtype=np.int32)

    def shifted(values: np.ndarray, by: int) -> np.ndarray:
        """``values[m - by]``, infinite where ``m < by``."""
        out = np.full(slots + 1, np.inf)
        if by <= slots:
            out[by:] = values[: slots + 1 - by]
        return out

    for s in range(n):
        fits = memory >= _base_need(cw, cbw, ftmp, bwd, s)
        opt[s, s, fits] = fw[s] + bw[s]
        what[s, s, fits] = SINGLE
    for d in range(1, n):
        for s in range(n - d):
            e = s + d
            chain_need = max(cw[e + 1] + cbw[s + 1] + ftmp[s], bwd[s], cbw[s + 1])
            chain = fw[s] + bw[s] + shifted(opt[s + 1, e], int(cbw[s + 1]))
            chain[memory < chain_need] = np.inf
            best = chain
            choice = np.where(np.isfinite(chain), CHAIN, INFEASIBLE).astype(np.int32)
            forward_need = cw[s + 1] + fntmp[s]
            fw_sum = 0.0
            for j in range(s + 1, e + 1):
                fw_sum += fw[j - 1]
                if j > s + 1:
                    forward_need = max(forward_need, cw[j - 1] + cw[j] + fntmp[j - 1])
                leaf_need = max(cw[e + 1] + forward_need, cw[j])
                leaf = fw_sum + shifted(opt[j, e], int(cw[j])) + opt[s, j - 1]
                leaf[memory < leaf_need] = np.inf
                better = leaf < best
                best = np.where(better, leaf, best)
                choice = np.where(better, j, choice).astype(np.int32)
            opt[s, e] = best
            what[s, e] = choice
    return opt, what


def tables_compiled(
    fw: np.ndarray,
    bw: np.ndarray,
    cw: np.ndarray,
    cbw: np.ndarray,
    ftmp: np.ndarray,
    fntmp: np.ndarray,
    bwd: np.ndarray,
    slots: int,
) -> tuple[np.ndarray, np.ndarray]:
    return _tables_numba(fw, bw, cw, cbw, ftmp, fntmp, bwd, slots)


def min_peak_python(
    cw: np.ndarray, cbw: np.ndarray, ftmp: np.ndarray, fntmp: np.ndarray, bwd: np.ndarray
) -> np.ndarray:
    """``need[s, e]``: the least memory (outside ``a_s``) with which ``s..e`` can run at all.

    The same recurrences as the tables with "least memory" in place of "least time", in the
    chain's own units, with no discretisation: it gives the exact smallest feasible budget.
    """
    n = ftmp.shape[0]
    need = np.full((n, n), np.inf)
    for s in range(n):
        need[s, s] = max(cw[s + 1] + cbw[s + 1] + ftmp[s], bwd[s])
    for d in range(1, n):
        for s in range(n - d):
            e = s + d
            best = max(
                cw[e + 1] + cbw[s + 1] + ftmp[s],
                bwd[s],
                cbw[s + 1] + need[s + 1, e],
            )
            forward_need = cw[s + 1] + fntmp[s]
            for j in range(s + 1, e + 1):
                if j > s + 1:
                    forward_need = max(forward_need, cw[j - 1] + cw[j] + fntmp[j - 1])
                leaf = max(cw[e + 1] + forward_need, cw[j] + need[j, e], need[s, j - 1])
                best = min(best, leaf)
            need[s, e] = best
    return need


min_peak_compiled = numba.njit(
    "float64[:,::1](float64[::1], float64[::1], float64[::1], float64[::1], float64[::1])",
    cache=True,
)(min_peak_python)
