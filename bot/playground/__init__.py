"""`gonogo playground` and `gonogo preview`: the bot against a local Slack, and the card as a page.

standin.py is the Slack Web API stand-in shared with the test suite; workspace.py the page's
backend; run.py ties the bot, Redis and the page into one process tree; static/ the page.
"""
