"""Celery entry points for host actions; each is a thin call into hostcfg."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from hostcfg.blink import blink_led


@shared_task(name="hostcfg.blink", ignore_result=True)
def blink(lock_key: str) -> None:
    from supervisor_site.redis_connection import redis_client

    try:
        blink_led(settings.SUPERVISOR_LED_FILE)
    finally:
        redis_client().delete(lock_key)
