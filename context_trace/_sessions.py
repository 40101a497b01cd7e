"""A :class:`Session`: one conversation thread, and its ratings (:meth:`Session.rate`)."""

from __future__ import annotations

from collections.abc import Mapping

from . import _runtime
from ._activation import current_scope
from ._record import Feedback, new_id

__all__ = ["Session"]

_RATINGS = (-1, 0, 1)


class Session:
    """
    One conversation thread: every turn recorded inside it shares ``id``.

    Created by :func:`context_session`; read it with :func:`current_session`.

    Attributes:
        id: The session id (generated as 32 hex characters when not given).
        user_id: The user the session was opened for, if any.
        metadata: ``str -> str`` metadata attached to every turn in the session.
        ratings: Ratings given with :meth:`rate`, oldest first.

    .. versionadded:: 0.1.0
    """

    __slots__ = (
        "id",
        "last_trace_id",
        "last_turn_id",
        "metadata",
        "ratings",
        "sampled",
        "user_id",
    )

    def __init__(
        self,
        id: str,
        user_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
        *,
        sampled: bool = True,
    ) -> None:
        self.id = id
        self.user_id = user_id
        self.metadata: dict[str, str] = dict(metadata or {})
        self.ratings: list[int] = []
        self.sampled = sampled
        #: id of the last turn this session answered in this process (set by the
        #: recorder when a turn ends without an error): what ``rate`` targets
        self.last_turn_id: str | None = None
        #: that turn's OpenTelemetry trace, when it ran inside the app's
        self.last_trace_id: str | None = None

    def rate(self, rating: int, *, turn_id: str | None = None) -> None:
        """
        Rate one answer of the session: -1 (bad), 0 (neutral) or +1 (good).

        Call it where the user gives feedback: in the same request, or from a
        separate feedback endpoint that opens the session by its id. It only
        queues the rating, never waits for the store. The rating targets
        *turn_id* when given, else the session's last answered turn at the
        time of the call; it belongs to the session's user, and the last
        rating of a turn wins. Where it is written, a rating whose session or
        turn the store does not hold is not stored: it is counted in
        ``stats()["rejected"]`` and logged once, naming the session.

        Args:
            rating: -1, 0 or 1.
            turn_id: The turn to rate (``Session.last_turn_id`` in the request
                that ran it, or a ``conversation_id`` read back from the store).

        Raises:
            ValueError: if *rating* is not -1, 0 or 1, or *turn_id* is empty.
            TypeError: if *turn_id* is not a str.
        """
        # type() rather than isinstance(): True and 1.0 compare equal to 1.
        if type(rating) is not int or rating not in _RATINGS:
            raise ValueError(f"rating must be -1, 0 or 1, got {rating!r}")
        if turn_id is not None:
            if not isinstance(turn_id, str):
                raise TypeError(
                    f"turn_id must be a str (a turn's id), got {type(turn_id).__name__}"
                )
            if not turn_id.strip():
                raise ValueError("turn_id must not be empty")
        self.ratings.append(int(rating))
        if not self.sampled or not _runtime.active_config().enabled:
            return
        scope = current_scope()
        user_id = scope.user_id if scope is not None and scope.user_id else self.user_id
        # The last answered turn this process saw in this session object, if
        # any; else the store finds it where the rating is written.
        explicit = turn_id is not None
        _runtime.emit(
            Feedback(
                id=new_id(),
                session_id=self.id,
                user_id=user_id,
                rating=int(rating),
                conversation_id=turn_id if explicit else self.last_turn_id,
                trace_id=None if explicit else self.last_trace_id,
            )
        )

    def __repr__(self) -> str:
        return f"Session(id={self.id!r}, user_id={self.user_id!r})"
