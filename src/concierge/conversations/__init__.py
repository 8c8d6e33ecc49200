"""End users, conversations, turns and long-term memory.

An end user is one identity on one channel: a web visitor (a random id in a signed token), the
``user`` an API caller names, later a phone number. A conversation is between one end user and
one assistant; its turns are the messages of the end user, the assistant and the people who
take over after a handoff. Memory is the facts an assistant saved about an end user.

Every function takes the caller's organisation and filters by it inside the query.
"""
