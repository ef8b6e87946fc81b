"""A cart maps product names to quantities; its totals come from the pricing module."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from shop import pricing

Cart = dict[str, int]


def add_item(cart: Cart, sku: str, quantity: int = 1) -> None:
    """Put ``quantity`` more of ``sku`` into the cart."""
    if quantity < 1:
        raise ValueError(f"add at least one item, got {quantity}")
    cart[sku] = cart.get(sku, 0) + quantity


def subtotal(cart: Cart, prices: Mapping[str, Decimal] = pricing.PRICES) -> Decimal:
    """The cart's price before tax."""
    return sum(
        (pricing.line_total(prices[sku], quantity) for sku, quantity in cart.items()),
        Decimal("0.00"),
    )


def total(cart: Cart, prices: Mapping[str, Decimal] = pricing.PRICES) -> Decimal:
    """The cart's price with tax: what the customer pays."""
    return pricing.price_with_tax(subtotal(cart, prices))
