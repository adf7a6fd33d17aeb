"""Lab 01's checks: a smaller team's API fees (q1), break-even against a cheaper API (q2), the tornado's biggest
lever (q3). The answers are the instructor's (``helpers.course.answer_key``), held here only as digests
(:mod:`.digest`); the wrong kinds are computed from the kit's price snapshot and scenario (``tco.default_inputs()``),
never from the notebook's ``inputs``, ``workload``, ``host`` or ``horizon``."""
from __future__ import annotations

from functools import lru_cache

from . import NOT_DONE, first_match, guarded, is_number, near, not_done, shown
from .digest import is_answer, is_none, undo

Q1_WORKLOAD = (2_000_000, 900, 250)  # conversations a month, input and output tokens per conversation
Q1_MODEL = "gpt-4o-mini"
Q2_MODEL = "gpt-4.1-mini"
Q3_RANGES = {"usd_per_gpu_hour": (1.0, 6.0), "engineer_fte": (0.0, 2.0), "bandwidth_efficiency": (0.2, 0.9)}
CONTEXT: dict = {}


def _tco():
    from ... import tco

    return tco


def fees(model: str, workload) -> float:
    """A month of API fees for ``workload`` (conversations, input and output tokens) on ``model``: the wrong kinds'."""
    tco = _tco()
    return tco.api_cost(tco.Workload(*workload), model).monthly["API fees"]


@guarded
def q1(my_monthly_api_fees) -> str | None:
    value = my_monthly_api_fees
    if not_done(value):
        return f"{NOT_DONE}: set my_monthly_api_fees"
    if not is_number(value) or value <= 0:
        return f"a positive number of USD, got {shown(value)}"
    if is_answer("01q1", value):
        return None
    conversations, tokens_in, tokens_out = Q1_WORKLOAD
    tco = _tco()
    price = tco.get_api_price(Q1_MODEL)
    inputs = tco.default_inputs()
    staff = inputs["api_engineer_fte"] * inputs["engineer_cost_per_year"] / 12
    monitoring = inputs["monitoring_usd_per_month"]
    lesson_workload, *_ = tco.from_inputs(inputs)
    message = undo(value, [
        ("01q1", lambda v: v / 12, "that is a year of fees: the exercise asks for a month"),
        ("01q1", lambda v: v * 30, "that is a day of fees: the exercise asks for a month"),
        ("01q1", lambda v: v * conversations, "that is one conversation's fees: multiply by the conversations in a month"),
        ("01q1", lambda v: v / 1e6, "prices are USD per 1M tokens: divide the tokens by 1e6"),
        ("01q1", lambda v: v / 1e3, "prices are USD per 1M tokens, not per 1K"),
        ("01q1", lambda v: v - staff - monitoring, "that adds the lesson's staff and monitoring: the exercise asks for the API fees alone"),
        ("01q1", lambda v: v - staff, "that adds the lesson's staff: the exercise asks for the API fees alone"),
        ("01q1", lambda v: v - monitoring, "that adds monitoring: the exercise asks for the API fees alone"),
    ]) or first_match(value, [
        (conversations * (tokens_in * price.output + tokens_out * price.input) / 1e6,
         "input tokens are billed at the input price and output tokens at the output price: they are swapped"),
        (conversations * tokens_in * price.input / 1e6, "that bills the input tokens only: add the output tokens at their price"),
        (conversations * tokens_out * price.output / 1e6, "that bills the output tokens only: add the input tokens at their price"),
        (conversations * (tokens_in + tokens_out) * price.input / 1e6, "output tokens have their own, higher price"),
        (conversations * (tokens_in + tokens_out) * price.blended() / 1e6,
         "that uses a blended price (3 input : 1 output): bill the input and output tokens each at their own price"),
        (conversations * (tokens_in + tokens_out) * (price.input + price.output) / 2 / 1e6,
         "that averages the two prices: bill the input and output tokens each at their own price"),
        (tco.api_cost(lesson_workload, Q1_MODEL).monthly["API fees"],
         "that is the lesson's workload (the desk's 10M conversations): use this team's volume and tokens"),
        (tco.api_cost(lesson_workload, inputs["api_model"]).monthly["API fees"],
         "that is the lesson's example (the desk on GPT-4o): this team, its workload and its model"),
    ], rel=1e-3)
    if message:
        return message
    others = [model for model in tco.api_prices() if model != Q1_MODEL]
    if any(near(value, fees(model, Q1_WORKLOAD), 1e-4) for model in others):
        return f"that is another model's price: the team is on {Q1_MODEL}"
    scenario_like = [fees(Q1_MODEL, (conversations, i, o)) for i, o in ((1200, 300), (tokens_out, tokens_in))]
    scenario_like.append(fees(Q1_MODEL, (conversations, lesson_workload.input_tokens, lesson_workload.output_tokens)))
    if any(near(value, other, 1e-4) for other in scenario_like):
        return "use this team's tokens per conversation: 900 input and 250 output"
    return f"not {Q1_MODEL}'s monthly fees for this workload: check the volume, both token counts and the units (USD per 1M tokens)"


@lru_cache(maxsize=16)
def break_even(model: str, horizon: float | None = None, api_engineer_fte: float | None = None) -> float | None:
    """The scenario's break-even volume against ``model`` (the scenario's horizon and API staff unless given): what
    the named wrong kinds are made of (the lesson's model, another horizon, no staff)."""
    tco = _tco()
    inputs = tco.default_inputs()
    workload, _, host, default_horizon = tco.from_inputs(inputs)
    return tco.break_even_volume(workload, model, host, default_horizon if horizon is None else horizon,
                                 inputs["api_engineer_fte"] if api_engineer_fte is None else api_engineer_fte)


@guarded
def q2(mini_break_even) -> str | None:
    value = mini_break_even
    if not_done(value):
        return f"{NOT_DONE}: set mini_break_even"
    if value is None:
        return None if is_none("01q2") else "self-hosting does win above some volume here: find it with tco.break_even_volume"
    if not is_number(value) or value <= 0:
        return f"a volume in conversations per month, or None, got {shown(value)}"
    if is_answer("01q2", value):
        return None
    message = undo(value, [
        ("01q2", lambda v: v * 1e6, "conversations per month, not millions of them"),
        ("01q2", lambda v: v * 1e3, "conversations per month, not thousands of them"),
        ("01q2", lambda v: v * 30, "that is a day's volume: the break-even is conversations per month"),
        ("01q2", lambda v: v / 12, "that is a year's volume: the break-even is conversations per month"),
    ]) or first_match(value, [
        (break_even(_tco().default_inputs()["api_model"]), "that is the lesson's break-even against GPT-4o: compare with gpt-4.1-mini"),
    ], rel=0.01)
    if message:
        return message
    for horizon in (12, 24, 60):
        if near(value, break_even(Q2_MODEL, horizon), 0.01):
            return "keep the scenario's horizon (the same one as the lesson's comparison)"
    if near(value, break_even(Q2_MODEL, None, 0.0), 0.01):
        return "keep the scenario's staff on the API side (inputs['api_engineer_fte'])"
    for model in ("gpt-4o-mini", "gpt-4.1", "gpt-5-mini"):
        if near(value, break_even(model), 0.01):
            return f"that is the break-even against {model}: the exercise asks for {Q2_MODEL}"
    return f"not the break-even against {Q2_MODEL} with the scenario's workload, hosting and horizon"


def swing(name: str) -> tuple[float, float, float]:
    """One input's bar of the exercise's tornado: (swing, saving at its low end - base, at its high end - base)."""
    tco = _tco()
    if name not in Q3_RANGES:
        raise ValueError(f"{name!r} is not one of the exercise's inputs")
    frame = tco.tornado(tco.default_inputs(), {name: Q3_RANGES[name]})
    metric, base = frame.attrs.get("metric", "saving"), frame.attrs.get("base")
    row = frame.iloc[0]
    return float(row["swing"]), float(row[f"{metric} at low"]) - base, float(row[f"{metric} at high"]) - base


@guarded
def q3(biggest_lever, biggest_swing) -> str | None:
    if not_done(biggest_lever, biggest_swing):
        return f"{NOT_DONE}: set biggest_lever and biggest_swing"
    if not isinstance(biggest_lever, str) or biggest_lever not in Q3_RANGES:
        return f"biggest_lever is one of the three input names ({', '.join(Q3_RANGES)}), got {shown(biggest_lever)}"
    if not is_number(biggest_swing) or biggest_swing <= 0:
        return f"a swing is a positive amount of USD, got {shown(biggest_swing)}"
    if not is_answer("01q3 lever", biggest_lever):
        if near(biggest_swing, swing(biggest_lever)[0], 1e-3):
            return "that input's swing is not the largest of the three: sort the tornado by swing"
        return "not the input with the largest swing: compare the three bars"
    if is_answer("01q3 swing", biggest_swing):
        return None
    _, low, high = swing(biggest_lever)
    message = undo(biggest_swing, [
        ("01q3 swing", lambda v: v * 1e6, "a swing in USD, not millions of USD"),
        ("01q3 swing", lambda v: v * 1e3, "a swing in USD, not thousands of USD"),
        ("01q3 swing", lambda v: v * 36, "that is a monthly swing: the tornado's swing is in the 3-year saving"),
        ("01q3 swing", lambda v: v * 3, "that is a yearly swing: the tornado's swing is in the 3-year saving"),
    ]) or first_match(biggest_swing, [(abs(half), "that is half the bar (one end against the base): the swing runs from the "
                                                 "low end to the high end") for half in (low, high)], rel=1e-3)
    return message or "the right input, but not its swing: high minus low of the 3-year saving, in USD"
