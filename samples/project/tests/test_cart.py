from decimal import Decimal

from shop.cart import Cart, add_item, subtotal, total


def test_add_item_accumulates() -> None:
    cart: Cart = {}
    add_item(cart, "apple")
    add_item(cart, "apple", 2)
    assert cart == {"apple": 3}


def test_subtotal_and_total() -> None:
    cart: Cart = {"apple": 2, "plum": 1}
    assert subtotal(cart) == Decimal("2.25")
    assert total(cart) == Decimal("2.70")


def test_empty_cart_costs_nothing() -> None:
    assert total({}) == Decimal("0.00")
