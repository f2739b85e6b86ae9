"""Settings, read from the environment (names and defaults: docs/configuration.md
"Environment variables")."""

from __future__ import annotations

import environ
from django.core.exceptions import ImproperlyConfigured

from supervisor_site import environment
from supervisor_site.environment import project_path as _path
from supervisor_site.secret_key import kept_secret_key

BASE_DIR = environment.BASE_DIR
SUPERVISOR_DATA_DIR = environment.SUPERVISOR_DATA_DIR
REDIS_URL = environment.REDIS_URL
DOCKER_HOST = environment.DOCKER_HOST
SUPERVISOR_LOG_LEVEL = environment.SUPERVISOR_LOG_LEVEL

env = environ.Env()

# Comma-separated: loopback, and the supervisor0 bridge's gateway, where app containers are told
# the API is (BALENA_SUPERVISOR_ADDRESS).
SUPERVISOR_LISTEN_ADDRESS = env.str("SUPERVISOR_LISTEN_ADDRESS", default="127.0.0.1,10.114.104.1")
SUPERVISOR_PORT = env.int("SUPERVISOR_PORT", default=48484)
SUPERVISOR_HOST_ROOT = _path(env.str("SUPERVISOR_HOST_ROOT", default="/"))
SUPERVISOR_BOOT_ROOT = _path(env.str("SUPERVISOR_BOOT_ROOT", default=str(SUPERVISOR_DATA_DIR / "boot")))
SUPERVISOR_CONFIG_JSON = _path(
    env.str("SUPERVISOR_CONFIG_JSON", default=str(SUPERVISOR_BOOT_ROOT / "config.json"))
)
SUPERVISOR_APPS_JSON = _path(env.str("SUPERVISOR_APPS_JSON", default=str(SUPERVISOR_DATA_DIR / "apps.json")))
SUPERVISOR_DATABASE = _path(
    env.str("SUPERVISOR_DATABASE", default=str(SUPERVISOR_DATA_DIR / "supervisor.sqlite3"))
)
SUPERVISOR_DBUS_ADDRESS = env.str("SUPERVISOR_DBUS_ADDRESS", default="unix:path=/run/dbus/system_bus_socket")
# journalctl, for /v2/journal-logs and the host units' logs.
SUPERVISOR_JOURNALCTL = env.str("SUPERVISOR_JOURNALCTL", default="journalctl")
SUPERVISOR_LED_FILE = _path(env.str("SUPERVISOR_LED_FILE", default="/sys/class/leds/led0/brightness"))
# The network namespace (`ip netns` name) whose iptables HOST_FIREWALL_MODE drives; empty: the
# supervisor's own, i.e. the host's. The tests point it at a namespace of their own.
SUPERVISOR_FIREWALL_NETNS = env.str("SUPERVISOR_FIREWALL_NETNS", default="")
# MB (10^6 bytes) a download must leave free on the engine's data root (apps_api/engine/disk_preflight.py).
_disk_reserve = env.str("SUPERVISOR_DISK_RESERVE_MB", default="256").strip()
if not (_disk_reserve.isascii() and _disk_reserve.isdigit()):
    raise ImproperlyConfigured(
        f"SUPERVISOR_DISK_RESERVE_MB must be a whole number of MB (10^6 bytes), not {_disk_reserve!r}"
    )
SUPERVISOR_DISK_RESERVE_MB = int(_disk_reserve)
# Disruptive device API actions (restart, purge, stop…: apps_api/action_limit.py) each key may
# start a minute, and reboots plus shutdowns, counted apart; 0 turns a limit off.
SUPERVISOR_ACTION_RATE_LIMIT = env.int("SUPERVISOR_ACTION_RATE_LIMIT", default=120)
SUPERVISOR_POWER_ACTION_RATE_LIMIT = env.int("SUPERVISOR_POWER_ACTION_RATE_LIMIT", default=10)
# How long POST /v1/blink blinks the LED (the original's 15 s).
SUPERVISOR_BLINK_SECONDS = env.float("SUPERVISOR_BLINK_SECONDS", default=15.0)

SUPERVISOR_DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)


# Use DJANGO_SECRET_KEY, else a key generated once and kept in the data dir.
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="") or kept_secret_key(SUPERVISOR_DATA_DIR / "secret_key")
DEBUG = env.bool("DJANGO_DEBUG", default=False)
# The device API is reached by IP, by the device's hostname and through the cloud proxy.
ALLOWED_HOSTS = ["*"]
# Names besides the device's hostname, `<hostname>.local` and `localhost` that keyless
# (local mode) clients may call the device by; any address is fine (apps_api/api/browsers.py).
SUPERVISOR_API_HOST_NAMES = env.list("SUPERVISOR_API_HOST_NAMES", default=[])
# The admin shares the API's addresses (the LAN, on a local-mode device bound to 0.0.0.0).
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": f"django.contrib.auth.password_validation.{name}"}
    for name in ("UserAttributeSimilarityValidator", "MinimumLengthValidator", "CommonPasswordValidator",
                 "NumericPasswordValidator")
]  # fmt: skip

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "apps_api",
    "hostcfg",
    "localmode",
    "supervisor_site",
]

# The admin's middleware run inside AdminOnlyMiddleware, for admin pages only; the admin's
# checks cannot see them there.
MIDDLEWARE = [
    "apps_api.metrics.RequestMetricsMiddleware",
    "supervisor_site.admin_middleware.AdminOnlyMiddleware",
]
SILENCED_SYSTEM_CHECKS = ["admin.E408", "admin.E409", "admin.E410"]

ROOT_URLCONF = "supervisor_site.urls"
ASGI_APPLICATION = "supervisor_site.asgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# WAL lets readers run beside one writer; IMMEDIATE transactions take the write lock
# up front, so the web process and the worker queue on busy_timeout instead of failing
# with "database is locked" when both upgrade a read to a write.
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": SUPERVISOR_DATABASE,
        "OPTIONS": {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        "TEST": {"NAME": str(SUPERVISOR_DATA_DIR / "test.sqlite3")},
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True
STATIC_URL = "static/"

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["apps_api.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["apps_api.api.auth.HasValidApiKey"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    # The device API answers in its documented format whatever the Accept header says.
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "apps_api.api.renderers.FirstRendererNegotiation",
    "DEFAULT_PARSER_CLASSES": [
        "apps_api.api.json_body.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
    ],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "apps_api.api.errors.device_api_exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["apps_api.api.throttling.DisruptiveActionThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# The balena Supervisor API level this agent implements (the balena CLI needs >= 9.7.0).
SUPERVISOR_VERSION = "17.0.0"

# The OpenAPI schema at /openapi.json, browsable at /docs/.
SPECTACULAR_SETTINGS = {
    "TITLE": "balena Supervisor device API (Python)",
    "DESCRIPTION": "The device API on port 48484. Keys are checked only while the device is managed "
    "(config.json has an `apiEndpoint`); /ping and /v1/healthy never need one.",
    "VERSION": SUPERVISOR_VERSION,
    "SERVE_INCLUDE_SCHEMA": False,
    # /openapi.json and /docs/ are keyed like the API they describe.
    "SERVE_PERMISSIONS": ["apps_api.api.auth.HasValidApiKey"],
    # Devices have no internet: Swagger UI comes from the sidecar's static files.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "apps_api.api.schemas.document_action_limits",
    ],
    "ENUM_NAME_OVERRIDES": {
        "SuccessStatusEnum": "apps_api.api.schemas.SUCCESS_STATUS",
        "FailedStatusEnum": "apps_api.api.schemas.FAILED_STATUS",
        "ImageStatusEnum": "apps_api.api.schemas.IMAGE_STATUSES",
        "UpdateStatusEnum": "apps_api.api.schemas.UPDATE_STATUSES",
    },
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [REDIS_URL]},
    }
}


def _celery_redis_url(url: str) -> str:
    """Celery names a unix-socket Redis `redis+socket://<path>?virtual_host=<db>`."""
    if not url.startswith("unix://"):
        return url
    path, _, query = url.removeprefix("unix://").partition("?")
    database = dict(part.partition("=")[::2] for part in query.split("&") if part).get("db", "0")
    return f"redis+socket://{path}?virtual_host={database}"


CELERY_BROKER_URL = _celery_redis_url(REDIS_URL)
CELERY_RESULT_BACKEND = _celery_redis_url(REDIS_URL)
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_TASK_DEFAULT_QUEUE = "supervisor"
CELERY_RESULT_EXPIRES = 3600
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# The schedule lives in memory: one entry every 5 s has nothing worth keeping, and a file kept
# across power cuts could rot and kill the scheduler.
CELERY_BEAT_SCHEDULER = "supervisor_site.celery:DueAtStart"
# The cloud tick decides by itself whether a provisioning attempt or a poll is due.
CELERY_BEAT_SCHEDULE = {
    "cloud-tick": {"task": "apps_api.cloud_tick", "schedule": 5.0, "options": {"expires": 5.0}},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": environment.LOG_FORMAT}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["stderr"], "level": SUPERVISOR_LOG_LEVEL},
    "loggers": {
        "django": {"level": "WARNING"},
        # The cloud tick runs every 5 s: its "sending", "received" and "succeeded" lines
        # would drown the supervisor's own messages.
        "celery.beat": {"level": "WARNING"},
        "celery.worker.strategy": {"level": "WARNING"},
        "celery.app.trace": {"level": "WARNING"},
    },
}
