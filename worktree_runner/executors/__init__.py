"""Executors: where a stream's life runs. ``local`` runs it here, in a thread of the
runner; ``dask`` runs the very same life on the workers of a Dask cluster. The runner
picks one (``run/runner.py``) and its scheduler hands each ready stream to it."""
