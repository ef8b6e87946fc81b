from shop.inventory import OutOfStock, in_stock, new_stock, take


def test_new_stock_is_a_copy() -> None:
    stock = new_stock()
    stock["apple"] = 0
    assert new_stock()["apple"] == 10


def test_in_stock() -> None:
    stock = new_stock()
    assert in_stock(stock, "apple")
    assert not in_stock(stock, "plum")
    assert not in_stock(stock, "kiwi")


def test_take_lowers_the_level() -> None:
    stock = new_stock()
    assert take(stock, "pear", 3) == 1
    assert stock["pear"] == 1


def test_take_refuses_more_than_the_shelf_holds() -> None:
    stock = new_stock()
    try:
        take(stock, "pear", 5)
    except OutOfStock:
        assert stock["pear"] == 4
        return
    raise AssertionError("took more pears than there were")
