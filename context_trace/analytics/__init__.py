"""
Analytics computed from the store on the app's own machine: no network, no model call.

Nothing here is imported by ``import context_trace``: these modules need the
``analytics`` extra (``pip install "context-trace[analytics]"``), which brings
NumPy, SciPy and the static word embeddings that ship inside the ``wordllama``
wheel.

- :mod:`context_trace.analytics.topics`: groups users' questions into topics.
- :mod:`context_trace.analytics.topic_index`: keeps a store's topics, assigned
  per turn, in a file beside the store.
"""
