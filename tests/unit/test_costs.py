"""A video's cost so far, summed per unit from the cost annotations in its history."""

from __future__ import annotations

from stagewatch.service.dashboard import costs_of


def test_costs_are_summed_per_unit_and_anything_else_is_ignored() -> None:
    history = [
        {"type": "item.annotated", "attrs": {"cost_unit": "instagram_api_call", "cost_quantity": 3}},
        {"type": "item.annotated", "attrs": {"cost_unit": "instagram_api_call", "cost_quantity": 2}},
        {"type": "item.annotated", "attrs": {"cost_unit": "gpu_s", "cost_quantity": 1.5}},
        {"type": "item.annotated", "attrs": {"cost_unit": "gpu_s", "cost_quantity": True}},
        {"type": "item.annotated", "note": "memory pressure", "attrs": {"rss_mb": 3712}},
        {"type": "run.started"},
    ]
    assert costs_of(history) == {"gpu_s": 1.5, "instagram_api_call": 5.0}
    assert costs_of([]) == {}
