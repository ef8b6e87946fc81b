"""A small shop: prices with tax, a stock of goods, and carts to buy them in."""
