"""A generated, reproducible sample of customers for the demo and the benchmarks."""

from __future__ import annotations

import csv
import random
from datetime import date, timedelta
from pathlib import Path

from clientela.customers.records import PROFILE_FIELDS

FIRST_ES = ["Lucía", "Mateo", "Sofía", "Hugo", "Martina", "Diego", "Valentina", "Pablo", "Elena"]
FIRST_EN = ["Olivia", "James", "Amelia", "Noah", "Isla", "Oliver", "Ava", "Jack", "Emily"]
LAST_ES = ["García", "Rodríguez", "Martínez", "López", "Sánchez", "Pérez", "Gómez", "Díaz"]
LAST_EN = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Evans", "Davies"]
ZONES_ES = ["Europe/Madrid", "America/Bogota", "America/Mexico_City", "America/Lima"]
ZONES_EN = ["Europe/London", "America/New_York", "America/Chicago", "America/Los_Angeles"]

COLUMNS = [
    "external_id",
    *PROFILE_FIELDS,
    "email_consent",
    "sms_consent",
    "consent_source",
    "attr_monthly_income",
    "attr_basic_charge",
    "attr_usage",
    "attr_plan",
]


def sample_rows(
    n: int, *, prefix: str = "D", seed: int = 7, today: date | None = None
) -> list[dict]:
    rng = random.Random(seed)
    today = today or date.today()
    rows = []
    for i in range(1, n + 1):
        spanish = rng.random() < 0.55
        first = rng.choice(FIRST_ES if spanish else FIRST_EN)
        last = rng.choice(LAST_ES if spanish else LAST_EN)
        cid = f"{prefix}{i:05d}"
        basic = rng.choice([15, 25, 40, 60])
        usage = round(basic * rng.lognormvariate(0.1, 0.5), 2)
        rows.append(
            {
                "external_id": cid,
                "first_name": first,
                "last_name": last,
                "email": f"{first.lower()}.{last.lower()}.{cid.lower()}@example.com".encode(
                    "ascii", "ignore"
                ).decode(),
                "phone": (
                    f"+346{rng.randrange(10**7, 10**8)}"
                    if spanish
                    else f"+1415{rng.randrange(10**6, 10**7)}"
                ),
                "locale": "es" if spanish else "en",
                "timezone": rng.choice(ZONES_ES if spanish else ZONES_EN),
                "birthday": (
                    date(1950, 1, 1) + timedelta(days=rng.randrange(0, 365 * 55))
                ).isoformat(),
                "signup_date": (today - timedelta(days=rng.randrange(0, 900))).isoformat(),
                "preferred_channel": "sms" if rng.random() < 0.3 else "email",
                "email_consent": "true" if rng.random() < 0.9 else "false",
                "sms_consent": "true" if rng.random() < 0.6 else "false",
                "consent_source": "demo-import",
                "attr_monthly_income": round(max(usage, basic) * rng.uniform(1.0, 2.5), 2),
                "attr_basic_charge": basic,
                "attr_usage": usage,
                "attr_plan": rng.choice(["prepaid", "postpaid", "business"]),
            }
        )
    return rows


def write_sample_csv(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    return path
