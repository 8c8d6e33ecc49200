"""The inbox: the people's side of conversations. Who has which conversation (agents, teams,
assignment), where it stands (open, pending, snoozed, resolved), what people noted, the
organisation's business hours and SLA, CSAT, and reports."""
