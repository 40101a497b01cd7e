"""context_trace: per-user, per-session conversation analytics for LangChain apps."""

__version__ = "0.1.0"
