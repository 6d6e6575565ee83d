"""The cell-ID hash table (pionml.geometry.idlookup) against a sorted-search truth."""

import numpy as np
import pytest

from pionml.geometry.idlookup import IdLookup


def truth(keys, queries):
    order = np.argsort(keys)
    s = keys[order]
    pos = np.minimum(np.searchsorted(s, queries), len(s) - 1)
    return np.where(s[pos] == queries, order[pos], -1)


def test_known_answer():
    keys = np.array([7, 3, 2**63 + 5, 0, 2**64 - 1], dtype=np.uint64)
    lut = IdLookup(keys)
    q = np.array([0, 7, 2**64 - 1, 2**63 + 5, 3, 4, 2**63], dtype=np.uint64)
    np.testing.assert_array_equal(lut(q), [3, 0, 4, 2, 1, -1, -1])


def test_random_ids_with_probe_chains():
    rng = np.random.default_rng(3)
    # IDs differing only in their high bits, or only in their low bits, stress the hash
    keys = np.unique(np.concatenate([
        rng.integers(0, 2**62, 3000, dtype=np.uint64) << np.uint64(2),
        np.arange(3000, dtype=np.uint64) << np.uint64(50),
        np.uint64(2**60) + np.arange(3000, dtype=np.uint64)]))
    rng.shuffle(keys)
    lut = IdLookup(keys)
    q = np.concatenate([keys, rng.integers(0, 2**63, 5000, dtype=np.uint64), keys[::7] + 1])
    np.testing.assert_array_equal(lut(q), truth(keys, q))
    # shapes are kept
    assert lut(q[:6].reshape(2, 3)).shape == (2, 3)


def test_empty_and_duplicates():
    assert IdLookup(np.zeros(0, np.uint64))(np.array([1, 2], np.uint64)).tolist() == [-1, -1]
    with pytest.raises(ValueError, match="ID 9 appears more than once"):
        IdLookup(np.array([9, 1, 9], dtype=np.uint64))
