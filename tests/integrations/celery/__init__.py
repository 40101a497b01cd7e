import pytest

pytest.importorskip("celery")
pytest.importorskip("redis")
