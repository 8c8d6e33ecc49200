"""Governance built in: what the law asks of an AI assistant, on by default.

- :mod:`~concierge.governance.audit`: the hash-chained, append-only audit log;
- :mod:`~concierge.governance.policy`: each organisation's policy and assistants' adjustments;
- :mod:`~concierge.governance.labels`: provenance labels (implicit, signed; explicit text);
- :mod:`~concierge.governance.media`: labels written into images (PNG, JPEG; C2PA);
- :mod:`~concierge.governance.pii`: personal data found and masked;
- :mod:`~concierge.governance.logs`: personal data and API keys kept out of log files;
- :mod:`~concierge.governance.moderation`: input and output policies, reports, review queue;
- :mod:`~concierge.governance.consent`: what each end user agreed to;
- :mod:`~concierge.governance.injection`: prompt-injection defence for tool calls.

These are building blocks: they read and write only their own tables and import nothing above
the store, so organisations, keys, conversations and assistants can use them. The workflows
that span those (retention, subjects' export and erasure, conversation exports) are in
:mod:`concierge.compliance`, above them.

docs/governance.md maps each to the article it serves.
"""
