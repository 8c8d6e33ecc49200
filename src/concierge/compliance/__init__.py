"""Compliance workflows over everything an organisation stores, built on the governance
building blocks (:mod:`concierge.governance`) and the stores they span (conversations,
knowledge, metering):

- :mod:`~concierge.compliance.retention`: time-to-live, legal holds, the scheduled purge;
- :mod:`~concierge.compliance.subjects`: a data subject's export and erasure;
- :mod:`~concierge.compliance.exports`: conversations exported as JSON, text or HTML with their
  provenance labels.

docs/governance.md maps each to the article it serves.
"""
