"""
The demo's script: what its simulated users ask, when, and on which plan.

:mod:`context_trace._demo` drives its app with these: the questions and canned
answers of a clothing shop's support chat, the sessions that go badly, and the
calendar that spreads the sessions over :data:`WEEKS` ISO weeks (two signup
cohorts that retain differently) with an account per user (the ``variant`` and
``plan`` metadata, and the model each variant answers with).
"""

from __future__ import annotations

import datetime

__all__ = [
    "ANSWERS",
    "EXTRA_TURNS",
    "GENERIC_ANSWERS",
    "MODELS",
    "NAMES",
    "SYSTEM_PROMPT",
    "TOPICS",
    "UNHAPPY_ANSWERS",
    "UNHAPPY_SESSIONS",
    "WEEKS",
    "account",
    "model_for",
    "session_start",
    "session_week",
]

SYSTEM_PROMPT = (
    "You are the support assistant of Acme Outfitters, an online clothing shop. "
    "Answer in two sentences or fewer."
)
NAMES = (
    "ava",
    "ben",
    "chloe",
    "dev",
    "emma",
    "farid",
    "grace",
    "hiro",
    "isla",
    "jonas",
    "kemi",
    "liam",
)
# Each session follows one topic; turns past its script use the extra questions.
TOPICS: tuple[tuple[str, ...], ...] = (
    (
        "Where is my order #{order}?",
        "Has my order shipped yet?",
        "Thanks! Will I get a tracking link for my order?",
    ),
    (
        "I can't log in to my account.",
        "The password reset email never arrived.",
        "Found the reset email in my spam folder, thank you!",
    ),
    (
        "How do I return a pair of shoes?",
        "Do I have to pay for return shipping?",
        "How long after a return do I get my money back?",
    ),
    (
        "Why was I charged twice this month?",
        "Can you refund the duplicate charge?",
        "Will the double charge disappear from my card by itself?",
    ),
    (
        "What's the difference between the Basic and Pro memberships?",
        "Can I switch memberships in the middle of the month?",
        "Is there a discount for paying the membership yearly?",
    ),
)
EXTRA_TURNS = (
    "One more question: do you ship to Canada?",
    "Is there a phone number I can call?",
    "Can I talk to a human, please?",
    "Thanks, that's all for today.",
)
ANSWERS = {
    "Has my order shipped yet?": (
        "Orders ship within one business day; your order page shows the "
        "shipping date as soon as the parcel leaves our warehouse."
    ),
    "Thanks! Will I get a tracking link for my order?": (
        "You will: the carrier emails a tracking link as soon as the parcel is "
        "scanned, usually within a few hours of shipping."
    ),
    "I can't log in to my account.": (
        "Sorry about that! Use 'Forgot password' on the sign-in page and we will "
        "email you a reset link right away."
    ),
    "The password reset email never arrived.": (
        "Reset emails come from no-reply@acme.example and sometimes land in spam "
        "or promotions; could you check those folders?"
    ),
    "Found the reset email in my spam folder, thank you!": (
        "Glad you found it! Marking our address as a contact keeps future emails "
        "out of spam."
    ),
    "How do I return a pair of shoes?": (
        "Start a return from your order page within 30 days, print the label, "
        "and drop the box at any post office."
    ),
    "Do I have to pay for return shipping?": (
        "Returns are free for members; otherwise a flat 4.95 is deducted from "
        "your refund."
    ),
    "How long after a return do I get my money back?": (
        "Refunds are issued within 2 business days of the return reaching us; "
        "your bank may take 3 to 5 more days."
    ),
    "Why was I charged twice this month?": (
        "I can see a pending authorisation and a final charge for the same "
        "order; the pending one disappears within 3 days."
    ),
    "Can you refund the duplicate charge?": (
        "There is nothing to refund: the duplicate is only a hold, and your bank "
        "releases it automatically."
    ),
    "Will the double charge disappear from my card by itself?": (
        "It will: the bank releases the hold on its own and it vanishes from "
        "your statement, usually within 3 days."
    ),
    "What's the difference between the Basic and Pro memberships?": (
        "Basic gives free returns; Pro adds free express shipping and early "
        "access to sales for 9 a month."
    ),
    "Can I switch memberships in the middle of the month?": (
        "Yes: upgrades apply immediately and are prorated, downgrades take effect "
        "at the next billing date."
    ),
    "Is there a discount for paying the membership yearly?": (
        "Paying yearly gets you two months free, so Pro costs 90 a year instead of 108."
    ),
    "One more question: do you ship to Canada?": (
        "We do! Shipping to Canada takes 5 to 8 business days and duties are "
        "included at checkout."
    ),
    "Is there a phone number I can call?": (
        "Our phone line is open weekdays 9 to 5 on 555-0100; chat is the "
        "fastest way outside those hours."
    ),
    "Can I talk to a human, please?": (
        "Of course: I've asked a colleague to join this chat, they usually reply "
        "within 10 minutes."
    ),
    "Thanks, that's all for today.": "You're welcome, have a great day!",
}
# Sessions that go badly, by (user index, session index): the questions replace
# the session's topic, so the satisfaction views have unhappy users to show (a
# rephrased question, a non-answer, frustration, "that didn't help").
UNHAPPY_SESSIONS: dict[tuple[int, int], tuple[str, ...]] = {
    (3, 1): (
        "Why was I charged twice this month?",
        "I was charged twice, why??",
        "That didn't help, this is ridiculous.",
    ),
    (5, 0): (
        "Do you sell gift cards?",
        "Do you sell gift cards at all?",
        "Forget it, this is useless.",
    ),
}
UNHAPPY_ANSWERS = {
    "I was charged twice, why??": (
        "I'm not sure I understood; could you rephrase that?"
    ),
    "That didn't help, this is ridiculous.": (
        "Sorry to hear that! Our help centre at help.acme.example covers billing."
    ),
    "Do you sell gift cards?": "I don't know, sorry.",
    "Do you sell gift cards at all?": "I don't know, sorry.",
    "Forget it, this is useless.": "I'm sorry I couldn't help today.",
}
GENERIC_ANSWERS = (
    "Let me look into that for you: could you tell me a bit more?",
    "Good question! Our help centre at help.acme.example covers this in detail.",
    "I'm not sure I understood; could you rephrase that?",
)

# The calendar: WEEKS ISO weeks (from Monday, UTC), the last one the current week.
# The early cohort (the first half of the users) signs up in the first week and
# comes back every week or so; the later cohort signs up in LATE_WEEK, and only
# one user in three comes back the week after.
WEEKS = 8
LATE_WEEK = 5
_WEEK = 7 * 86400.0
# The model each variant answers with, and the one enterprise accounts run on
# their own servers (no public price: the cost views count it as unpriced).
MODELS = {"A": "gpt-4o-mini", "B": "gpt-4o", "self-hosted": "acme-support-8b"}


def _early(user: int, users: int) -> bool:
    return user < (users + 1) // 2


def session_week(user: int, session: int, *, users: int, sessions_per_user: int) -> int:
    """The week (0 the first, ``WEEKS - 1`` the current one) of a user's session."""
    if _early(user, users):
        # Back the next week, then every week or two, the last session in the
        # current week: never back in time.
        if session <= 1:
            return session
        last = sessions_per_user - 1
        week = WEEKS - 1 - 2 * (last - session) - (user % 3 if session < last else 0)
        return min(WEEKS - 1, max(session, week))
    if (user - (users + 1) // 2) % 3 == 0:
        return min(WEEKS - 1, LATE_WEEK + session)
    return LATE_WEEK


def session_start(
    user: int, session: int, *, users: int, sessions_per_user: int, now: float
) -> float:
    """
    When a session starts on the demo's calendar (epoch seconds, before *now*).

    Within its week a session starts at a point that grows with its index, so a
    user's sessions keep their order; in the current week, before *now*.
    """
    today = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    monday = (today - datetime.timedelta(days=today.weekday())).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    week = session_week(user, session, users=users, sessions_per_user=sessions_per_user)
    start = monday.timestamp() - (WEEKS - 1 - week) * _WEEK
    span = _WEEK if week < WEEKS - 1 else max(0.0, now - start - 600.0)
    position = (session + 1 + (user % 3) / 3) / (sessions_per_user + 2)
    return start + span * position


def account(user: int) -> dict[str, str]:
    """A user's account, as the app attaches it to each turn: variant and plan."""
    plan = "enterprise" if user % 6 == 4 else ("pro" if user % 3 == 0 else "free")
    return {"variant": "B" if user % 2 == 0 else "A", "plan": plan}


def model_for(account: dict[str, str]) -> str:
    """The model that answers an account: its variant's, or the self-hosted one."""
    if account.get("plan") == "enterprise":
        return MODELS["self-hosted"]
    return MODELS[account.get("variant", "A")]
