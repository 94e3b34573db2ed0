"""gonogo: release GO/NO-GO gates as code, run from a terminal, CI or Slack."""
