"""The local development stack: an SMTP catcher, a Twilio-compatible SMS sink, a supervisor."""
