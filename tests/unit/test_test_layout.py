"""pytest over tests/ (what `make test` and CI run) refuses to collect two test modules with
the same basename in different directories (rootdir-relative imports: "import file
mismatch"). Separately each directory runs, so the clash shows only in the whole run: it sank
two CI proofs (test_policy.py, test_inbound.py). Checked here, where it costs nothing."""

import collections
import pathlib

TESTS = pathlib.Path(__file__).resolve().parents[1]


def test_no_two_test_modules_share_a_basename():
    seen = collections.defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        seen[path.name].append(str(path.relative_to(TESTS)))
    assert not {k: v for k, v in seen.items() if len(v) > 1}
