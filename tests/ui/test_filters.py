"""The filter bar every filtered page shares (time range and segment, in the
URL) and the compare page's own controls, server-side."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize(
    ("page", "has_range"),
    [("/?range=30d", True), ("/users", True), ("/conversations", True),
     ("/retention", False)],
)  # fmt: skip
def test_each_filtered_page_has_the_filter_bar(server, page, has_range):
    """Overview, users, conversations and retention share one filter bar: the
    segment select of the values that exist, and a time range where it applies."""
    _, body = server.get(page)
    bar = re.search(r'<form[^>]*id="filter-bar".*?</form>', body, re.S)

    assert bar is not None
    assert '<option value="model:other" >model = other (1)</option>' in bar.group(0)
    assert has_range == ('name="range"' in bar.group(0))


def test_the_bar_keeps_the_page_query_but_not_its_paging(server):
    """The retention bar keeps the chosen weeks (a hidden field); clearing the
    segment keeps them too. The users form never carries the offset on."""
    _, body = server.get("/retention?weeks=4&meta=model:other")
    bar = re.search(r'<form[^>]*id="filter-bar".*?</form>', body, re.S).group(0)
    _, users = server.get("/users?q=ali&sort=user&offset=50&meta=model:other")
    form = re.search(r'<form[^>]*id="filter-bar".*?</form>', users, re.S).group(0)

    assert '<input type="hidden" name="weeks" value="4">' in bar
    assert '<a id="clear-segment" href="/retention?weeks=4">' in bar
    assert '<input type="hidden" name="sort" value="user">' in form
    assert 'name="offset"' not in form
    assert '<a id="clear-segment" href="/users?q=ali&amp;sort=user">' in form


def test_compare_page_puts_two_segments_side_by_side(server):
    """/compare?a=..&b=.. shows each side's figures with the count behind them."""
    status, body = server.get("/compare?a=model:fake-model&b=model:other&range=all")
    row = re.search(r'<tr id="measure-conversations_per_user">.*?</tr>', body, re.S)

    assert 200 == status
    assert "A: model=fake-model" in body
    assert "B: model=other" in body
    assert "22.67 <small>(n = 3)</small>" in row.group(0)
    assert "1.00 <small>(n = 1)</small>" in row.group(0)
    assert 'id="segment-a"' in body
    assert 'id="segment-b"' in body


def test_compare_page_without_segments_invites_a_choice(server):
    """/compare alone offers the two selects and explains what to do."""
    status, body = server.get("/compare")

    assert 200 == status
    assert "Choose two segments" in body


def test_compare_page_refuses_a_bad_segment(server):
    """A segment without KEY:VALUE is a 400 naming the parameter."""
    status, body = server.get("/compare?a=plan")

    assert 400 == status
    assert "a must be KEY:VALUE, got &#39;plan&#39;" in body


def test_compare_page_shows_the_cost_per_conversation(server):
    """The compare page has the API's cost per conversation on each side, with the
    number of conversations it is over (a dash where nothing is priced)."""
    _, body = server.get("/compare?a=model:fake-model&b=model:other&range=all")
    _, api = server.get("/api/compare?a=model:fake-model&b=model:other&range=all")
    row = re.search(r'<tr id="measure-cost_per_conversation">.*?</tr>', body, re.S)

    assert row is not None
    assert "Cost per conversation" in row.group(0)
    for side in ("a", "b"):
        figure = api[side]["cost_per_conversation"]
        cell = re.search(rf'class="num side-{side}">(.*?)</td>', row.group(0)).group(1)
        assert f"(n = {figure['count']})" in cell
        assert ("$" in cell) == (figure["value"] is not None)
