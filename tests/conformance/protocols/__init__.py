"""One module per model API a CLI speaks; each answers from the shared script."""
