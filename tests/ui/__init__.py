import pytest

pytest.importorskip("flask")
pytest.importorskip("waitress")
