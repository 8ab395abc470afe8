"""Reading the in-memory exporters' data in tests."""

from __future__ import annotations


def points(reader) -> dict[str, list[tuple[dict, object]]]:
    """metric name -> [(attributes, value or histogram point)] of everything collected now."""
    out: dict[str, list[tuple[dict, object]]] = {}
    data = reader.get_metrics_data()
    if data is None:
        return out
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", point)
                    out.setdefault(metric.name, []).append((dict(point.attributes), value))
    return out


def value(collected: dict, name: str, **attributes) -> float:
    """The sum of ``name``'s points whose attributes include ``attributes`` (0 when none)."""
    total = 0
    for attrs, v in collected.get(name, []):
        if all(attrs.get(k) == a for k, a in attributes.items()):
            total += v
    return total
