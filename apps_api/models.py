"""What the supervisor keeps in SQLite about applications and API access."""

from __future__ import annotations

from django.db import models


class ApiKey(models.Model):
    """A key that authenticates calls to the device API.

    The global (cloud) key has app_id 0 and no service; a service key belongs to one
    (app_id, service_name) and is scoped to that app.
    """

    GLOBAL_APP_ID = 0

    app_id = models.PositiveBigIntegerField(default=GLOBAL_APP_ID)
    service_name = models.CharField(max_length=255, blank=True, default="")
    key = models.CharField(max_length=64, unique=True)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["app_id", "service_name"], name="one_key_per_service"),
        ]
        verbose_name = "API key"

    def __str__(self) -> str:
        if self.app_id == self.GLOBAL_APP_ID:
            return "global key"
        return f"key of app {self.app_id} service {self.service_name}"

    @property
    def is_global(self) -> bool:
        return any(scope.get("type") == "global" for scope in self.scopes)


class TargetRecord(models.Model):
    """Each accepted target state, newest last; the newest is what the engine applies."""

    document = models.JSONField(help_text="the validated target, in the internal shape")
    source = models.CharField(max_length=16)
    force = models.BooleanField(default=False, help_text="apply overriding update locks")
    posted_apps = models.JSONField(
        null=True, blank=True, help_text="`local.apps` as POST /v2/local/target-state sent it (local mode)"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "target state"

    def __str__(self) -> str:
        return f"target #{self.pk} ({self.source})"


class App(models.Model):
    """An app of the current target (rewritten with each target, for the admin and API reads)."""

    app_id = models.PositiveBigIntegerField(unique=True)
    uuid = models.CharField(max_length=255)
    name = models.CharField(max_length=255)
    commit = models.CharField(max_length=255, blank=True, default="")
    release_id = models.PositiveBigIntegerField(null=True, blank=True)
    app_class = models.CharField(max_length=16, default="fleet")
    source = models.CharField(max_length=16)

    class Meta:
        ordering = ["app_id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.app_id})"


class Service(models.Model):
    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="services")
    service_name = models.CharField(max_length=255)
    service_id = models.PositiveBigIntegerField()
    image_id = models.PositiveBigIntegerField()
    image = models.CharField(max_length=255)
    running = models.BooleanField(default=True)
    environment = models.JSONField(default=dict)
    labels = models.JSONField(default=dict)
    composition = models.JSONField(default=dict)

    class Meta:
        ordering = ["app_id", "service_name"]
        constraints = [models.UniqueConstraint(fields=["app", "service_name"], name="one_service_per_name")]

    def __str__(self) -> str:
        return self.service_name


class Network(models.Model):
    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="networks")
    name = models.CharField(max_length=255)
    config = models.JSONField(default=dict)

    def __str__(self) -> str:
        return self.name


class Volume(models.Model):
    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="volumes")
    name = models.CharField(max_length=255)
    config = models.JSONField(default=dict)

    def __str__(self) -> str:
        return self.name


class Image(models.Model):
    """An image the supervisor fetched itself: the only kind it may remove."""

    reference = models.CharField(max_length=512, unique=True)
    docker_id = models.CharField(max_length=128, blank=True, default="")
    fetched_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.reference


class StepRecord(models.Model):
    """The journal of applied steps: what, why, result, how long."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=32)
    app_id = models.PositiveBigIntegerField(null=True, blank=True)
    service_name = models.CharField(max_length=255, blank=True, default="")
    reason = models.CharField(max_length=255, blank=True, default="")
    cause = models.JSONField(
        blank=True,
        default=dict,
        help_text="Why, in parts (engine/causes.py); {} for the planner's plain reasons",
    )
    succeeded = models.BooleanField()
    error = models.TextField(blank=True, default="")
    duration_ms = models.PositiveIntegerField()

    class Meta:
        ordering = ["-id"]
        verbose_name = "applied step"

    def __str__(self) -> str:
        return f"{self.kind} {self.service_name or ''}".strip()


class ReleaseTrial(models.Model):
    """Per app: its last committed release, the release on probation and the one that
    failed (apps_api/target/release_trials.py)."""

    app_id = models.PositiveBigIntegerField(unique=True)
    committed_commit = models.CharField(max_length=255, blank=True, default="")
    committed_app = models.JSONField(
        null=True, blank=True, help_text="the committed release's app, in the target's internal shape"
    )
    trial_commit = models.CharField(max_length=255, blank=True, default="", help_text="on probation")
    trial_started_at = models.FloatField(default=0.0, help_text="Unix time the probation began")
    trial_restarts = models.JSONField(default=dict, help_text="container id → restart count at the start")
    failed_commit = models.CharField(max_length=255, blank=True, default="")
    failed_reason = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["app_id"]
        verbose_name = "release trial"

    def __str__(self) -> str:
        return f"app {self.app_id}: committed {self.committed_commit or 'none'}"


class ActionRecord(models.Model):
    """The audit log: one device API action by an app or the cloud (who, what, how it ended).
    Never the key itself; kept 30 days or 10 000 rows (apps_api/audit.py)."""

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    key_kind = models.CharField(max_length=16, help_text="global, service, or none (local mode)")
    app_id = models.PositiveBigIntegerField(null=True, blank=True, help_text="the key's app")
    service_name = models.CharField(max_length=255, blank=True, default="", help_text="the key's service")
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=255)
    status_code = models.PositiveSmallIntegerField()
    result = models.CharField(max_length=255, blank=True, default="")
    disruptive = models.BooleanField(
        default=False,
        help_text="a disruptive action that went through, kept apart: no flood of other rows pushes it out",
    )

    class Meta:
        ordering = ["-id"]
        verbose_name = "API action"

    def __str__(self) -> str:
        return f"{self.method} {self.path} → {self.status_code}"
