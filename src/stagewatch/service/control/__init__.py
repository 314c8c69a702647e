"""The control plane's services: ``begin`` (the guard chain), heartbeats, completions, operator actions
(cancel, resume, stop, the dead-letter queue) and the watchdog. See docs/guardrails.md."""
