from decimal import Decimal

from shop.pricing import line_total, price_with_tax, to_money


def test_to_money_rounds_halves_up() -> None:
    assert to_money(Decimal("0.125")) == Decimal("0.13")
    assert to_money(Decimal("2")) == Decimal("2.00")


def test_price_with_tax_adds_the_default_rate() -> None:
    assert price_with_tax(Decimal("10.00")) == Decimal("12.00")


def test_price_with_tax_takes_another_rate() -> None:
    assert price_with_tax(Decimal("10.00"), rate=Decimal("0.05")) == Decimal("10.50")


def test_price_with_tax_refuses_a_negative_price() -> None:
    try:
        price_with_tax(Decimal("-1"))
    except ValueError:
        return
    raise AssertionError("a negative price was accepted")


def test_line_total_multiplies() -> None:
    assert line_total(Decimal("0.50"), 3) == Decimal("1.50")
