"""The web console (`/console`): server-rendered pages over the same store, behind the same keys.
Works without JavaScript; nothing is fetched from anywhere but this server."""
