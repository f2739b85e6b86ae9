"""Project wiring: settings, URL root, ASGI router, the Celery app, and the agent's processes.

Importing the package loads nothing: the agent's supervising parent (agent.py) stays small.
Django loads the Celery app through SupervisorSiteConfig (apps.py)."""
