"""The HTTP API: event intake now; recipient endpoints later."""
