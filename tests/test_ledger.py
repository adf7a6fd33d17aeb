"""The claims ledger and Lab 01's claim checks."""
import pytest

from helpers import ledger, tco
from helpers.errors import InputError


def test_seed_claims_cover_c1_to_c17():
    assert list(ledger.seed_claims()) == [f"C{i}" for i in range(1, 18)]


def test_record_replaces_instead_of_duplicating(tmp_path):
    path = tmp_path / "ledger.csv"
    ledger.record("C1", "holds", "first", "01", path)
    ledger.record("C1", "does not hold", "second", "01", path)
    ledger.record("C2", "holds", "x", "01", path)
    table = ledger.table(path)
    assert table.loc["C1", "verdict"] == "does not hold" and table.loc["C2", "verdict"] == "holds"
    assert table.loc["C9", "verdict"] == "not tested yet"


def test_record_rejects_unknown_claim_bad_verdict_and_no_evidence(tmp_path):
    path = tmp_path / "ledger.csv"
    with pytest.raises(InputError, match="unknown claim"):
        ledger.record("C99", "holds", "e", "01", path)
    with pytest.raises(InputError, match="verdict"):
        ledger.record("C1", "maybe", "e", "01", path)
    with pytest.raises(InputError, match="evidence"):
        ledger.record("C1", "holds", " ", "01", path)


@pytest.fixture(scope="module")
def inputs():
    return tco.default_inputs()


def test_every_check_gives_a_ledger_verdict(inputs):
    checks = [tco.claims.check_c1(inputs), tco.claims.check_c2(inputs), tco.claims.check_c3(inputs), tco.claims.check_c4(),
              tco.claims.check_c5(), tco.claims.check_c17()]
    for check in checks:
        assert check["verdict"].startswith(ledger.VERDICTS) and check["evidence"]


def test_c1_follows_the_api_model(inputs):
    assert tco.claims.check_c1(inputs)["fees"]["gpt-4o"] == pytest.approx(tco.api_cost(tco.from_inputs(inputs)[0], "gpt-4o").monthly_total * 12)


def test_c2_verdict_changes_with_the_comparison(inputs):
    assert tco.claims.check_c2({**inputs, "api_model": "gpt-4o-mini"})["verdict"] == "does not hold"


def test_c4_uses_launch_and_current_gpt4o_prices():
    check = tco.claims.check_c4()
    assert check["gpt4o_launch"] == pytest.approx(0.75 * 5 + 0.25 * 15)
    assert check["gpt4o_now"] < check["gpt4o_launch"]


def test_c17_finds_the_largest_successor_price_change():
    check = tco.claims.check_c17()
    biggest = max((c for c in check["changes"] if c["released"].year == 2024), key=lambda c: c["ratio"])
    assert f"{biggest['ratio']:.1f}x" in check["evidence"]


def test_c3_splits_sum_to_one(inputs):
    for split in tco.claims.check_c3(inputs)["splits"].values():
        assert sum(split.values()) == pytest.approx(1.0)
