"""The read model: every query the API and the commands answer, as plain typed functions over a
read cursor (or, for the raw callbacks and the quarantine, over the log)."""
