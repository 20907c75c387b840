"""
Hypothesis settings profiles for the fuzz suites (tests/unit/**/test_*_fuzz.py).

  - C{ci} (the default): derandomized, so every run tries the same examples
    and CI cannot turn red by chance; a fixed budget of examples that keeps
    all the fuzz suites together well under a minute on a slow 2-core
    machine.
  - C{deep}: random, 75 times the examples, for a long hunt by hand:
    C{HYPOTHESIS_PROFILE=deep .venv/bin/pytest -q tests/unit/*_fuzz.py tests/unit/*/*_fuzz.py}
    (the README's Hardening section).

Pick one with the environment variable C{HYPOTHESIS_PROFILE}.
"""

import os

try:
    from hypothesis import HealthCheck, Phase, settings
except ImportError:  # hypothesis is in the 'test' extra; only the fuzz suites need it
    settings = None

if settings is not None:
    _common = dict(
        deadline=None,  # a shared 2-core machine: timing says nothing
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        print_blob=True,  # a failure prints the @reproduce_failure blob
        database=None,  # nothing written into the tree
    )
    settings.register_profile("ci", max_examples=100, derandomize=True, **_common)
    # while debugging: the ci examples, the first failure as found (no shrinking)
    settings.register_profile("noshrink", max_examples=100, derandomize=True,
                              phases=[Phase.explicit, Phase.generate], **_common)
    settings.register_profile("deep", max_examples=7500, derandomize=False, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def budget(share):
    """
    Settings for a test whose examples are costly (whole messages, HTTP
    exchanges): C{share} of the loaded profile's examples (at least 10), so
    that the C{deep} profile deepens them too.
    """
    return settings(max_examples=max(10, int(settings.default.max_examples * share)))


def edit(draw, data, insert, delete_at_most, replace=None):
    """
    C{data} (bytes) with 1 to 4 random edits, for the "damaged" inputs of the
    fuzz suites: an insert drawn from strategy C{insert}, a deletion of up to
    C{delete_at_most} bytes, or one byte replaced by a draw from C{replace}
    (C{insert} unless given).
    """
    from hypothesis import strategies as st

    data = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        if op == "insert":
            data[pos:pos] = draw(insert)
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, delete_at_most))]
        else:
            data[pos:pos + 1] = draw(replace if replace is not None else insert)
    return bytes(data)
