"""Stock levels: a mapping of product name to how many are on the shelf."""

from __future__ import annotations

Stock = dict[str, int]

STARTING_STOCK: Stock = {"apple": 10, "pear": 4, "plum": 0}


class OutOfStock(Exception):
    """Raised when more items are taken than the shelf holds."""


def new_stock() -> Stock:
    """A fresh copy of the starting stock, safe to change."""
    return dict(STARTING_STOCK)


def in_stock(stock: Stock, sku: str) -> bool:
    """Whether at least one ``sku`` is on the shelf."""
    return stock.get(sku, 0) > 0


def take(stock: Stock, sku: str, quantity: int = 1) -> int:
    """Remove ``quantity`` of ``sku`` from the shelf; returns how many are left."""
    available = stock.get(sku, 0)
    if quantity > available:
        raise OutOfStock(f"wanted {quantity} {sku}, only {available} left")
    stock[sku] = available - quantity
    return stock[sku]
