"""The read model: every query the API and the commands answer, as plain typed functions over a
read cursor (or, for the raw callbacks and the quarantine, over the log). Routes and commands
only translate HTTP or argv to these calls and their answers back.

messages: a message, the message lists, READ confirmations, the follow-up lists;
consent: consent now, at an instant, its history, the pre-send check, violations, review;
callbacks: the raw callback behind a reference; quarantine: the refused bodies kept;
paging: keyset pages."""
