"""Prices: money is a Decimal rounded to the cent, and tax is added on top."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

CENT = Decimal("0.01")
TAX_RATE = Decimal("0.20")

PRICES: dict[str, Decimal] = {
    "apple": Decimal("0.50"),
    "pear": Decimal("0.80"),
    "plum": Decimal("1.25"),
}


def to_money(amount: Decimal) -> Decimal:
    """``amount`` rounded to the cent, halves away from zero (as tills do)."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def price_with_tax(net: Decimal, rate: Decimal = TAX_RATE) -> Decimal:
    """The price a customer pays for something costing ``net`` before tax."""
    if net < 0:
        raise ValueError(f"a price cannot be negative, got {net}")
    return to_money(net * (1 + rate))


def line_total(unit_price: Decimal, quantity: int) -> Decimal:
    """What ``quantity`` items at ``unit_price`` cost, before tax."""
    if quantity < 0:
        raise ValueError(f"a quantity cannot be negative, got {quantity}")
    return to_money(unit_price * quantity)
