import pytest

pytest.importorskip("flask")
