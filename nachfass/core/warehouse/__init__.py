"""The warehouse engine behind the Python steps: DuckDB (the default, code in ``nachfass.core``) or
PostgreSQL (``postgres.py``), chosen by ``NACHFASS_ENGINE`` (``settings.py``)."""
