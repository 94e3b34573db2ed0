"""Thin Slack handlers: ack first, call the service, render, respond. No business logic here."""
