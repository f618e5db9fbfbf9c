"""Money as text: exact Decimals, never floats, with at least cents shown."""

from __future__ import annotations

from decimal import Decimal

CENT = Decimal("0.01")


def money_text(value: Decimal | int | str | None) -> str | None:
    """``Decimal("25.0000000000")`` -> ``"25.00"``; sub-cent costs keep their digits
    (``"0.000042"``). Stored values have 10 decimal places; trailing zeros beyond cents
    carry no information."""
    if value is None:
        return None
    amount = Decimal(value).normalize()
    if amount.as_tuple().exponent > -2:  # type: ignore[operator]
        amount = amount.quantize(CENT)
    return format(amount, "f")
