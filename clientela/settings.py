"""All configuration, read from the environment (prefix ``CLIENTELA_``) with local defaults."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from clientela import ROOT
from clientela.timeutil import QuietHours

#: The account the local SMS sink answers for; never valid against real Twilio. Its auth
#: token (which also signs its status callbacks) is made once per installation:
#: ``sink_auth_token(<home>/sms)``.
SINK_ACCOUNT_SID = "AC00000000000000000000000000000000"
#: Twilio's documented "magic" sender that always succeeds with test credentials.
SINK_FROM_NUMBER = "+15005550006"

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """Seconds (``30``), a number with a unit (``90s``, ``15m``, ``2h``, ``2d``) or ISO 8601."""
    if isinstance(value, str):
        text = value.strip().lower()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return timedelta(seconds=float(text))
        if m := re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text):
            return timedelta(seconds=float(m[1]) * _UNITS[m[2]])
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

#: Where Twilio reports delivery, relative to the API's public address.
STATUS_CALLBACK_PATH = "/webhooks/twilio/status"

PLACEHOLDERS = {"changeme", "change-me", "xxx", "secret", "password"}


class Settings(BaseSettings):
    """One place for every setting; see README "Configuration" for the table."""

    model_config = SettingsConfigDict(
        env_prefix="CLIENTELA_", env_file=".env", extra="ignore", populate_by_name=True
    )

    home: Path = Field(Path(".clientela"), description="State folder: databases, outbox, logs")
    database_url: str = Field("", description="SQLAlchemy URL; empty means SQLite in home")

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_port: int = 8233
    task_queue: str = "clientela"
    # A production cluster: TLS (with the server's CA, or the system's), mutual TLS with a
    # client certificate, or Temporal Cloud's API key. docs/deploy.md has both examples.
    temporal_tls: bool = Field(
        False, description="Connect over TLS (implied by a CA, a client certificate or an API key)"
    )
    temporal_tls_ca: Path | None = Field(
        None, description="PEM file of the CA that signed the server's certificate"
    )
    temporal_tls_cert: Path | None = Field(None, description="Client certificate (mTLS), PEM")
    temporal_tls_key: Path | None = Field(None, description="Its private key, PEM")
    temporal_tls_server_name: str = Field(
        "", description="The name the server's certificate holds, if not the address's host"
    )
    temporal_api_key: str = Field("", description="Temporal Cloud API key (implies TLS)")
    # Worker tuning: how much one worker process takes on at a time.
    worker_max_concurrent_activities: int = Field(
        50, ge=1, le=1000, description="Activities one worker runs at once"
    )
    worker_max_concurrent_workflow_tasks: int = Field(
        100, ge=2, le=1000, description="Workflow tasks one worker runs at once"
    )
    workflow_sandbox: Literal["fast", "strict"] = Field(
        "fast",
        description="fast: the journey workflow's module is imported once per worker; "
        "strict: again for every run, so that Temporal's sandbox checks every call in it",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="Logs of the API and workers: text lines, or JSON (one per line)"
    )
    rules_slices: int = Field(
        4,
        ge=1,
        le=64,
        description="A rules apply cuts the base into this many slices, "
        "decided in parallel by as many worker processes as there are",
    )
    worker_metrics_port: int = Field(
        0, ge=0, le=65535, description="A worker's clientela_* metrics on this port; 0: off"
    )
    temporal_metrics_port: int = Field(
        0, ge=0, le=65535, description="A worker's Temporal SDK metrics on this port; 0: off"
    )
    metrics_host: str = Field(
        "127.0.0.1", description="Where a worker's metrics ports listen (0.0.0.0: every address)"
    )
    worker_shutdown_grace: Duration = Field(
        timedelta(seconds=30),
        description="On SIGTERM, how long running activities have to finish before they are "
        "cancelled and handed back to Temporal (another worker retries them)",
    )

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body the API reads (413 beyond)"
    )
    api_key: str = Field("", description="Bearer token the API requires; required off loopback")
    secret_key: str = Field("", description="Signs unsubscribe links; default: <home>/secret.key")
    self_approval: bool = Field(
        False, description="Whoever created a campaign may also approve it (a team of one)"
    )
    report_link_ttl: Duration = Field(
        timedelta(days=30), description="How long a report link in a stakeholder email works"
    )
    session_idle: Duration = Field(
        timedelta(hours=2), description="A console session unused this long ends"
    )
    session_max: Duration = Field(
        timedelta(hours=12), description="A console session ends this long after sign-in"
    )
    sign_in_attempts: int = Field(
        5,
        ge=1,
        description="Failed sign-ins per user (and 4x per address) per 15 min before a wait",
    )

    # Email. An empty smtp_host means the built-in catcher on 127.0.0.1:catcher_port.
    smtp_host: str = ""
    smtp_port: int = 0
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_starttls: bool = False
    smtp_timeout: float = 30.0
    catcher_port: int = 1025
    mail_from: str = "Clientela <hello@clientela.example>"

    # SMS. Without Twilio credentials the built-in sink on 127.0.0.1:sms_sink_port answers.
    twilio_account_sid: str = Field(
        "", validation_alias=AliasChoices("CLIENTELA_TWILIO_ACCOUNT_SID", "TWILIO_ACCOUNT_SID")
    )
    twilio_auth_token: str = Field(
        "", validation_alias=AliasChoices("CLIENTELA_TWILIO_AUTH_TOKEN", "TWILIO_AUTH_TOKEN")
    )
    twilio_from: str = Field(
        "", validation_alias=AliasChoices("CLIENTELA_TWILIO_FROM", "TWILIO_FROM_NUMBER")
    )
    sms_sink_port: int = 8025
    sms_base_url: str = Field("", description="Override of Twilio's API address")

    # Click and open tracking (docs/tracking.md); a campaign or journey can turn it off too.
    tracking_clicks: bool = Field(True, description="Rewrite links in emails to count clicks")
    tracking_opens: bool = Field(True, description="Add an open pixel to emails")
    tracking_scanner_seconds: float = Field(
        10.0, ge=0, description="A click or open this soon after the send is a machine's"
    )
    tracking_retention: int = Field(
        730, ge=0, description="Days tracked clicks and opens are kept (0: kept for good)"
    )

    # Bounces and complaints (docs/sending.md): where they arrive, and when soft bounces stop
    # an address.
    bounce_address: str = Field(
        "", description="Envelope sender for VERP return paths; default bounces@<sender domain>"
    )
    bounce_maildir: Path | None = Field(
        None, description="Maildir the bounce address delivers to; default <home>/bounces"
    )
    soft_bounce_limit: int = Field(3, ge=1, description="Soft-bounced messages that suppress")
    soft_bounce_window: Duration = Field(
        timedelta(days=30), description="The period soft bounces are counted over"
    )

    templates_dir: Path = ROOT / "templates"
    default_locale: str = "en"
    public_url: str = Field("", description="Base URL recipients reach; default: the local API")
    site_url: str = Field(
        "https://shop.clientela.example",
        description="The company's website: {{ site_url }} in templates (calls to action)",
    )

    # Journeys. Durations: seconds (30), with a unit (90s, 15m, 2h, 2d) or ISO 8601 (P2D).
    journeys_dir: Path = Field(ROOT / "journeys", description="Journey definitions (YAML)")
    predictive_dir: Path = Field(
        ROOT / "predictive", description="Predictive model specs (YAML): docs/models.md"
    )
    date_hour: int = Field(9, ge=0, le=23, description="Local hour of birthday greetings")
    date_catchup: Duration = Field(
        timedelta(days=2), description="How far back missed hourly date runs are caught up"
    )
    journey_time_scale: float = Field(
        1.0,
        gt=0,
        description="Multiplies every wait of a journey and every service level of a complaint "
        "(demos and tests shorten them)",
    )
    # Complaints: where reminders and escalations go unless the tier's service level names
    # its own addresses, and how long a resolved case waits for the customer's score.
    service_desk: str = Field(
        "Customer service <service@clientela.example>",
        description="Who is reminded of complaints due (a tier's responsible_email overrides)",
    )
    service_escalation: str = Field(
        "Service lead <service-lead@clientela.example>",
        description="Where a breached complaint is escalated (a tier's escalate_to overrides)",
    )
    satisfaction_wait: Duration = Field(
        timedelta(days=7), description="How long a resolved complaint waits for the score"
    )
    email_in_doubt: Literal["fail", "resend"] = Field(
        "fail",
        description="An email handed to a relay that cannot be asked when its sender died: "
        "fail it (never received twice) or resend it with the same Message-ID (never lost; "
        "receivers that drop duplicates by Message-ID show it once)",
    )
    sweep_interval: Duration = Field(
        timedelta(seconds=60),
        description="How often the API resumes what a stopped process left and settles deliveries",
    )
    delivery_report_wait: Duration = Field(
        timedelta(minutes=15),
        description="An SMS with no delivery report after this long is looked up with Twilio",
    )
    # A claim on a message older than this is "in doubt" and may be reconciled.
    send_lease: Duration = timedelta(seconds=30)
    #: Heartbeat timeout of long activities (sending, rules): how soon a dead worker is noticed.
    heartbeat_timeout: Duration = timedelta(seconds=30)

    # Sending.
    sms_hours: str = Field(
        "08:00-21:00", description="Local hours in which an SMS may reach a customer"
    )
    send_concurrency: int = Field(
        4, ge=1, le=64, description="Messages in flight per batch and channel (SMTP connections)"
    )
    # About four per worker process: a lane waits on its ledger commits and on the relay
    # between messages, so few lanes leave a process idle (`python -m bench.campaign
    # --workers 2 --recipients 60000 --lanes 4` about 1,600 messages a second, `--lanes 8`
    # about 1,700; `--workers 1 --recipients 30000`: 1,081 and 1,137).
    campaign_lanes: int = Field(8, ge=1, le=32, description="Pages of a campaign sent at once")
    campaign_page_size: int = Field(500, ge=1, le=10000, description="Messages per activity")
    email_rate: float = Field(0, ge=0, description="Emails per second per worker; 0: no limit")
    sms_rate: float = Field(0, ge=0, description="SMS per second per worker; 0: no limit")

    @model_validator(mode="after")
    def _refuse_placeholders(self) -> Settings:
        if not self.api_key and self.api_host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(
                f"api_host is {self.api_host!r}, reachable from other machines: set "
                "CLIENTELA_API_KEY so that the API does not serve customer data to anyone"
            )
        for name in (
            "twilio_auth_token",
            "smtp_password",
            "api_key",
            "secret_key",
            "temporal_api_key",
        ):
            if getattr(self, name).strip().lower() in PLACEHOLDERS:
                raise ValueError(
                    f"{name} is set to a placeholder value; set the real secret or unset it"
                )
        if bool(self.temporal_tls_cert) != bool(self.temporal_tls_key):
            raise ValueError(
                "TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together: a client certificate "
                "needs its private key (or set neither)"
            )
        for name in ("temporal_tls_ca", "temporal_tls_cert", "temporal_tls_key"):
            path = getattr(self, name)
            if path is not None and not path.is_file():
                raise ValueError(f"{name}: no such file {str(path)!r}")
        QuietHours.parse(self.sms_hours)  # a clear error now rather than at the first SMS
        if bool(self.twilio_account_sid) != bool(self.twilio_auth_token):
            raise ValueError(
                "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN must be set together (or neither, "
                "to use the local SMS sink)"
            )
        return self

    # Derived values -------------------------------------------------------------------------
    @cached_property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.home / 'clientela.db').resolve()}"

    @property
    def quiet_hours(self) -> QuietHours:
        return QuietHours.parse(self.sms_hours)

    @property
    def outbox_dir(self) -> Path:
        return self.home / "outbox"

    @property
    def sms_dir(self) -> Path:
        return self.home / "sms"

    @property
    def uses_catcher(self) -> bool:
        return not self.smtp_host

    @property
    def smtp_address(self) -> tuple[str, int]:
        if self.uses_catcher:
            return "127.0.0.1", self.catcher_port
        return self.smtp_host, self.smtp_port or (587 if self.smtp_starttls else 25)

    @property
    def uses_sms_sink(self) -> bool:
        return not self.twilio_account_sid

    @property
    def twilio_credentials(self) -> tuple[str, str, str]:
        if self.uses_sms_sink:
            token = sink_auth_token(self.sms_dir)
            return SINK_ACCOUNT_SID, token, self.twilio_from or SINK_FROM_NUMBER
        if not self.twilio_from:
            raise ValueError("TWILIO_FROM_NUMBER (or CLIENTELA_TWILIO_FROM) must name the sender")
        return self.twilio_account_sid, self.twilio_auth_token, self.twilio_from

    @property
    def twilio_base_url(self) -> str:
        if self.sms_base_url:
            return self.sms_base_url
        if self.uses_sms_sink:
            return f"http://127.0.0.1:{self.sms_sink_port}"
        return "https://api.twilio.com"

    @property
    def recipient_base_url(self) -> str:
        return self.public_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def sms_status_callback(self) -> str | None:
        """Where providers report delivery; None when no public address is known."""
        if self.public_url or self.uses_sms_sink:
            return f"{self.recipient_base_url}{STATUS_CALLBACK_PATH}"
        return None

    @property
    def temporal_port(self) -> int:
        return int(self.temporal_address.rsplit(":", 1)[1])


def sink_auth_token(sms_dir: Path) -> str:
    """The local SMS sink's auth token: generated once, kept beside its messages."""
    from clientela.keys import installation_secret

    return installation_secret(sms_dir / "auth.token")


def configuration_problems(exc: ValidationError) -> str:
    """What is wrong with the settings, each named as it is set: ``CLIENTELA_SEND_LEASE
    (send_lease): ...``."""
    problems = []
    for error in exc.errors():
        field = ".".join(map(str, error["loc"])) or "settings"
        name = f"CLIENTELA_{field.upper()} ({field})" if field in Settings.model_fields else field
        problems.append(f"{name}: {error['msg']}")
    return "; ".join(problems)


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides (used by tests and the CLI)."""
    return Settings(**overrides)  # type: ignore[arg-type]
