"""Lab 01's cost model: hand-worked cases, properties, and errors that name the field."""
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import tco
from helpers.errors import DataError, InputError

PRICE = tco.ApiPrice("test", "test-model", "proprietary", input=2.0, output=8.0, cached_input=0.5, batch_factor=0.5,
                     open_model="", date=None, source="test")


def test_conversation_tokens_resend_the_history():
    # turn 1: 100 + 10 = 110; turn 2: 100 + 20 + 50 = 170; turn 3: 100 + 30 + 100 = 230
    assert tco.conversation_tokens(100, 3, 10, 50) == (510.0, 150.0)


def test_api_cost_hand_worked():
    workload = tco.Workload(1_000_000, 1000, 200)
    costs = tco.api_cost(workload, PRICE)
    # (1000 x 2 + 200 x 8) / 1e6 = 0.0036 USD per conversation
    assert costs.monthly["API fees"] == pytest.approx(3600.0)
    assert costs.total(12) == pytest.approx(43200.0)


def test_cached_input_and_batch_discounts():
    cached = tco.api_cost(tco.Workload(1_000_000, 1000, 0, cached_input_share=0.5), PRICE).monthly["API fees"]
    assert cached == pytest.approx((500 * 2 + 500 * 0.5))
    batched = tco.api_cost(tco.Workload(1_000_000, 1000, 200, batch_share=1.0), PRICE).monthly["API fees"]
    assert batched == pytest.approx(1800.0)


def test_self_host_rented_hand_worked():
    workload = tco.Workload(730_000, 1000, 200, peak_to_average=2.0)  # 1000/h average, 2000/h peak
    host = tco.SelfHost("H100", "qwen2.5-7b", usd_per_gpu_hour=2.0, conversations_per_gpu_hour=1000, utilisation_target=0.5,
                        engineer_fte=1, engineer_cost_per_year=120_000, storage_egress_usd_per_month=0, monitoring_usd_per_month=0,
                        setup_usd=10_000, data_prep_usd=0)
    assert tco.gpus_needed(workload, host) == 4  # 2000 / (1000 x 0.5)
    costs = tco.self_host_cost(workload, host)
    assert costs.monthly["GPUs (rented)"] == pytest.approx(4 * 2.0 * 730)
    assert costs.monthly["engineering"] == pytest.approx(10_000)
    assert costs.total(12) == pytest.approx((5840 + 10_000) * 12 + 10_000)


def test_self_host_bought_adds_power():
    workload = tco.Workload(730_000, 1000, 200, peak_to_average=1.0)
    host = tco.SelfHost("H100", "qwen2.5-7b", purchase_usd_per_gpu=36_000, amortisation_months=36, conversations_per_gpu_hour=2000,
                        utilisation_target=1.0, pue=1.5, electricity_usd_per_kwh=0.1, engineer_fte=0)
    costs = tco.self_host_cost(workload, host)
    assert costs.monthly["GPUs (amortised)"] == pytest.approx(1000)
    assert costs.monthly["power"] == pytest.approx(0.7 * 1.5 * 730 * 0.1)


def test_payback():
    assert tco.payback_months(12_000, 1_000) == 12
    assert math.isinf(tco.payback_months(12_000, -5))


def test_break_even_is_where_the_curves_cross():
    inputs = tco.default_inputs()
    workload, price, host, horizon = tco.from_inputs(inputs)
    volume = tco.break_even_volume(workload, price, host, horizon, inputs["api_engineer_fte"])
    at = tco.compare(workload.with_volume(volume * 1.001), price, host, horizon, inputs["api_engineer_fte"])
    below = tco.compare(workload.with_volume(volume * 0.999), price, host, horizon, inputs["api_engineer_fte"])
    assert at["self_total"] <= at["api_total"] and below["self_total"] > below["api_total"]


def test_break_even_is_where_outcomes_saving_changes_sign():
    """One cost model: the bill, the curves and the break-even all count the API side's monitoring."""
    inputs = tco.default_inputs()
    volume = tco.break_even(inputs)
    above = tco.outcome({**inputs, "conversations_per_month": volume * 1.001})
    below = tco.outcome({**inputs, "conversations_per_month": volume * 0.999})
    assert above["saving"] >= 0 > below["saving"]
    curves = tco.cost_curves(inputs, [volume * 0.999, volume * 1.001])
    assert curves["API"].iloc[0] < curves["self-hosted"].iloc[0] and curves["API"].iloc[1] >= curves["self-hosted"].iloc[1]
    # the same monitoring on both sides cancels: the break-even does not move with it
    for monitoring in (0.0, 5_000.0):
        assert tco.break_even({**inputs, "monitoring_usd_per_month": monitoring}) == pytest.approx(volume, rel=1e-6)


def test_break_even_none_when_self_hosting_never_wins():
    inputs = tco.default_inputs()
    workload, _, _, horizon = tco.from_inputs(inputs)
    pricey = tco.SelfHost("L4", "qwen2.5-7b", usd_per_gpu_hour=tco.rental_price("L4"))
    assert tco.break_even_volume(workload, "gpt-4o-mini", pricey, horizon) is None


@settings(max_examples=40, deadline=None)
@given(st.floats(1e3, 1e8), st.floats(1.01, 10))
def test_more_volume_never_lowers_api_cost(volume, factor):
    workload = tco.Workload(volume, 1500, 360)
    assert tco.api_cost(workload.with_volume(volume * factor), PRICE).monthly_total >= tco.api_cost(workload, PRICE).monthly_total


@settings(max_examples=40, deadline=None)
@given(st.floats(0.05, 0.9), st.floats(0.01, 0.09))
def test_higher_utilisation_never_raises_self_hosted_cost_per_token(utilisation, step):
    workload = tco.Workload(10_000_000, 1500, 360)
    def per_token(u):
        host = tco.SelfHost("H100", "qwen2.5-7b", usd_per_gpu_hour=2.5, utilisation_target=u)
        return tco.self_host_cost(workload, host).usd_per_million_tokens(workload)
    assert per_token(min(1.0, utilisation + step)) <= per_token(utilisation) + 1e-9


def test_capacity_roofline_sanity():
    workload = tco.scenario_workload()
    h100 = tco.serving_capacity("H100", "qwen2.5-7b", "bf16", workload)
    l4 = tco.serving_capacity("L4", "qwen2.5-7b", "bf16", workload)
    assert h100.conversations_per_gpu_hour > 5 * l4.conversations_per_gpu_hour  # 11x the bandwidth
    with pytest.raises(InputError, match="does not fit"):
        tco.serving_capacity("T4", "qwen2.5-7b", "fp16", workload)


@pytest.mark.parametrize("field,value", [("conversations_per_month", 0), ("conversations_per_month", -5),
                                         ("input_tokens", float("nan")), ("batch_share", 1.5)])
def test_bad_workload_names_the_field(field, value):
    args = {"conversations_per_month": 1e6, "input_tokens": 100, "output_tokens": 10, field: value}
    with pytest.raises(InputError, match=field):
        tco.Workload(**args)


def test_unknown_model_gpu_and_price_are_named():
    with pytest.raises(InputError, match="did you mean"):
        tco.get_api_price("gpt-4-o")
    with pytest.raises(InputError, match="unknown GPU"):
        tco.serving_capacity("B300", "qwen2.5-7b", "bf16", tco.scenario_workload())
    with pytest.raises(InputError, match="no on-demand rental price"):
        tco.rental_price("A10")
    with pytest.raises(InputError, match="exactly one"):
        tco.SelfHost("H100", "qwen2.5-7b")


def test_price_row_without_a_date_is_rejected(tmp_path):
    from helpers.data import load_rows

    path = tmp_path / "prices.csv"
    path.write_text("provider,model,kind,input_usd_per_mtok,output_usd_per_mtok,source,date\nx,m,proprietary,1,2,somewhere,\n")
    with pytest.raises(DataError, match="row 1: field 'date' is empty"):
        load_rows(path, numeric=["input_usd_per_mtok", "output_usd_per_mtok"])


def test_snapshot_age_warns_when_old():
    import datetime as dt

    date, _, warning = tco.snapshot_age(dt.date(2100, 1, 1))
    assert "days old" in warning and "freeze_prices" in warning
    assert tco.snapshot_age(date)[2] == ""


def test_tornado_sorted_by_swing_and_monte_carlo_is_seeded():
    inputs = tco.default_inputs()
    frame = tco.tornado(inputs, {"engineer_fte": (0.25, 1.5), "utilisation_target": (0.5, 0.7)})
    assert list(frame["swing"]) == sorted(frame["swing"], reverse=True)
    with pytest.raises(InputError, match="unknown input"):
        tco.tornado(inputs, {"gpu_colour": (0, 1)})
    a = tco.monte_carlo(inputs, tco.default_distributions(inputs), samples=50, seed=3)
    b = tco.monte_carlo(inputs, tco.default_distributions(inputs), samples=50, seed=3)
    assert a.equals(b)
    summary = tco.monte_carlo_summary(a)
    assert 0 <= summary["p_self_cheaper"] <= 1 and summary["saving_low"] <= summary["saving_high"]


def test_prices_snapshot_rows_are_complete():
    prices = tco.api_prices()
    assert {"gpt-4o", "gpt-4o-2024-05-13", "gpt-4", "gpt-4o-mini"} <= set(prices)
    assert all(p.input > 0 and p.output > 0 and p.date for p in prices.values())


def test_c2_verdict_follows_the_learners_cheaper_api_break_even():
    from helpers import tco

    inputs = tco.default_inputs()
    volume = inputs["conversations_per_month"]
    alone = tco.claims.check_c2(inputs)
    assert "finish exercise 2" in alone["evidence"]
    above = tco.claims.check_c2(inputs, cheaper_api=("gpt-4.1-mini", volume * 1.5))
    assert above["verdict"].startswith(alone["verdict"]) and "against gpt-4.1-mini it does not" in above["verdict"]
    never = tco.claims.check_c2(inputs, cheaper_api=("gpt-4.1-mini", None))
    assert "it does not" in never["verdict"] and "never breaks even" in never["evidence"]
    below = tco.claims.check_c2(inputs, cheaper_api=("gpt-4.1-mini", volume / 2))
    assert below["verdict"] == alone["verdict"] and "below the desk's" in below["evidence"]


def test_calculator_redraws_when_a_control_moves(capsys, monkeypatch):
    """Lab 01's widgets with whatever ipywidgets is installed: 8.x here, Colab's 7.7.1 in the Python 3.13 run."""
    import ipywidgets
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: None)
    shown = tco.costs.calculator()
    box = shown.box
    first = capsys.readouterr().out
    assert first.count("over the horizon") == 1, first  # drawn once, not once by the widgets and again by hand
    volume = box.children[0].children[0]
    assert volume.description == "conversations / month" and volume.style.description_width == "initial"
    volume.value = volume.value / 10  # a tenth of the conversations: the API bill falls, and the line is printed again
    again = capsys.readouterr().out
    assert "USD/month" in again and again != first, (ipywidgets.__version__, again)


def test_the_calculator_is_shown_once_by_a_cell_that_ends_with_it(monkeypatch):
    """The cell ``tco.calculator(inputs)`` displays the box itself; what it returns must not display it again."""
    import matplotlib
    from IPython.core.formatters import DisplayFormatter

    matplotlib.use("Agg")
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda *a, **k: shown.extend(a))
    result = tco.costs.calculator()
    assert len(shown) == 1
    data, _ = DisplayFormatter().format(result)
    assert not data  # _ipython_display_ does nothing: no second box, no repr line


def test_while_grading_the_calculator_draws_once_without_widgets(monkeypatch):
    """A graded notebook has no reader to move a slider, and widget messages have stalled grading kernels."""
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.setenv("OTS_GRADING", "1")
    assert tco.calculator() is None


def test_dollar_axes_read_in_k_and_m_never_a_bare_offset():
    import matplotlib

    matplotlib.use("Agg")
    from helpers import tco

    assert [tco.usd_label(v) for v in (1_250_000, 250_000, -40_000, 90, 2.5e9)] == ["$1.25M", "$250k", "-$40k", "$90", "$2.5B"]
    inputs = tco.default_inputs()
    ax = tco.plot_tornado(tco.tornado(inputs, {"engineer_fte": (0.0, 2.0), "usd_per_gpu_hour": (1.0, 6.0)}))
    ax.figure.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    assert labels and all("$" in text for text in labels) and not ax.xaxis.get_offset_text().get_text()


def test_tables_wrap_instead_of_cutting_cells():
    import pandas as pd

    import helpers

    helpers.readable_tables()
    assert pd.get_option("display.max_colwidth") is None and pd.get_option("display.max_columns") is None


def test_the_horizon_verdict_never_says_a_negative_saving():
    from helpers import tco

    assert tco.horizon_verdict({"saving_share": 0.83, "api_total": 100.0, "self_total": 17.0}) == \
        "self-hosting saves 83% of the API's cost over the horizon"
    assert tco.horizon_verdict({"saving_share": -10.04, "api_total": 100.0, "self_total": 1104.0}) == \
        "self-hosting costs 11.0x the API over the horizon"
