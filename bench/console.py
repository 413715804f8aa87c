"""How fast the console's pages answer on a large base: the home page, a campaign's report,
and a customer search by email and by the start of a name, over 1,000,000 customers, on
SQLite and on PostgreSQL, beside a bare FastAPI page served the same way in the same run.

    python -m bench.console [--customers 1000000] [--members 20000] [--databases sqlite,postgresql]

The API runs as `clientela up` runs it (uvicorn, its own process); each page is asked for
``--repeat`` times by one signed-in client after a warm-up, and the median and the 95th
percentile are printed with their ratio to the bare page.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from sqlalchemy import insert, text
from sqlmodel import col, select

from bench.campaign import free_port, insert_customers
from clientela import ROOT
from clientela.db import dispose_all, session_scope
from clientela.people.users import add_user
from clientela.settings import Settings
from models import Campaign, CampaignMember, Customer, Interaction, Message
from rules import service
from rules.model import load

FIRST = ["Ana", "Luis", "María", "José", "Carmen", "Pedro", "Lucía", "Javier", "Elena", "Diego"]
LAST = [
    "García",
    "Rodríguez",
    "González",
    "Fernández",
    "López",
    "Martínez",
    "Sánchez",
    "Pérez",
    "Gómez",
    "Martín",
    "Jiménez",
    "Ruiz",
    "Hernández",
    "Díaz",
    "Moreno",
    "Muñoz",
    "Álvarez",
    "Romero",
    "Alonso",
    "Gutiérrez",
    "Navarro",
    "Torres",
    "Domínguez",
    "Vázquez",
    "Ramos",
    "Gil",
    "Ramírez",
    "Serrano",
    "Blanco",
    "Molina",
    "Morales",
    "Suárez",
    "Ortega",
    "Delgado",
    "Castro",
    "Ortiz",
    "Rubio",
    "Marín",
    "Sanz",
    "Núñez",
    "Iglesias",
    "Medina",
    "Garrido",
    "Cortés",
    "Castillo",
    "Santos",
    "Lozano",
    "Guerrero",
    "Cano",
    "Prieto",
    "Méndez",
    "Cruz",
]
PASSWORD = "bench-console-password"


def bare_app() -> FastAPI:
    """The baseline: a FastAPI page that reads nothing."""
    app = FastAPI()

    @app.get("/page", response_class=HTMLResponse)
    async def page() -> str:
        return "<!doctype html><title>bare</title><p>nothing read</p>"

    return app


def seed(db_url: str, n: int, members: int) -> str:
    """n customers with names, email consent and a tier; a campaign of ``members`` of them
    (a fifth held out), its messages sent today and some responses; a signed-in admin. The
    campaign's id."""
    rng = random.Random(11)
    rules = load(ROOT / "rules" / "crm.yaml")
    now = datetime.now(UTC)
    with session_scope(db_url) as session:
        version = service.register(session, rules)
        assert version.id is not None
        step = 10_000
        for start in range(0, n, step):
            rows: list[dict[str, Any]] = []
            for i in range(start, min(n, start + step)):
                rows.append(
                    {
                        "external_id": f"B{i:07d}",
                        "first_name": rng.choice(FIRST),
                        "last_name": f"{rng.choice(LAST)} {rng.choice(LAST)}",
                        "email": f"user{i}@bench.example",
                        "locale": "es" if i % 3 == 0 else "en",
                        "timezone": "Europe/Madrid",
                        "attributes": {},
                        "segments": [],
                        "internal": False,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            insert_customers(session, rows, version.id)
            session.commit()
        cid = "bench-report"
        session.add(
            Campaign(
                id=cid,
                name="Bench report",
                stage="tracking",
                window_start=now,
                window_end=now + timedelta(days=7),
            )
        )
        session.commit()
        ids = session.exec(select(Customer.id).order_by(col(Customer.id)).limit(members)).all()
        member_rows, message_rows, response_rows = [], [], []
        for pk in ids:
            assert pk is not None
            control = pk % 5 == 0
            member_rows.append(
                {
                    "campaign_id": cid,
                    "customer_id": pk,
                    "arm": "main",
                    "group": "control" if control else "treated",
                    "tier": "ABC"[pk % 3],
                    "segments": [],
                    "channel": "email",
                    "draw": rng.randrange(2**31),
                }
            )
            if not control:
                message_rows.append(
                    {
                        "key": f"campaign:{cid}:{pk}:message",
                        "customer_id": pk,
                        "channel": "email",
                        "template": "spring_offer",
                        "campaign": cid,
                        "state": "sent",
                        "sent_at": now,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
            if pk % 7 == 0:
                response_rows.append(
                    {
                        "customer_id": pk,
                        "channel": "email",
                        "direction": "inbound",
                        "kind": "click",
                        "campaign": cid,
                        "occurred_at": now,
                        "detail": {},
                    }
                )
        for table, batch in (
            (CampaignMember, member_rows),
            (Message, message_rows),
            (Interaction, response_rows),
        ):
            for start in range(0, len(batch), 10_000):
                session.execute(insert(table), batch[start : start + 10_000])
        session.commit()
        # After a bulk load the planner needs fresh statistics (autovacuum would gather them
        # shortly; a fresh table without them gets nested-loop plans 500x slower).
        session.execute(text("ANALYZE"))
        add_user(
            session,
            actor="bench",
            username="bench",
            roles=["admin", "marketer", "desk", "approver"],
            password=PASSWORD,
        )
    return cid


def serve(args: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                *args,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(log.read_text())


def timed(http: httpx.Client, path: str, repeat: int, expect: str) -> tuple[float, float]:
    """Median and 95th percentile in ms of ``repeat`` requests (after two to warm up)."""
    for _ in range(2):
        http.get(path)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        r = http.get(path)
        times.append((time.perf_counter() - start) * 1000)
        if r.status_code != 200 or expect not in r.text:
            raise SystemExit(f"{path}: {r.status_code} {r.text[:500]}")
    times.sort()
    return statistics.median(times), times[max(0, round(0.95 * len(times)) - 1)]


def run(db: str, url: str, args: argparse.Namespace, home: Path) -> list[tuple[str, float, float]]:
    started = time.perf_counter()
    cid = seed(url, args.customers, args.members)
    dispose_all()
    print(
        f"[{db}] seeded {args.customers:,} customers and a campaign of {args.members:,} "
        f"in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    settings = Settings(home=home, database_url=url, temporal_address="127.0.0.1:1")
    env = {
        "PATH": "/usr/bin:/bin",
        "CLIENTELA_HOME": str(home),
        "CLIENTELA_DATABASE_URL": url,
        "CLIENTELA_TEMPORAL_ADDRESS": settings.temporal_address,
    }
    api_port, bare_port = free_port(), free_port()
    api = serve(["api.app:app_from_env"], env, api_port, home / "api.log")
    bare = serve(["bench.console:bare_app"], env, bare_port, home / "bare.log")
    results = []
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{bare_port}", timeout=60) as http:
            results.append(("bare FastAPI page", *timed(http, "/page", args.repeat, "nothing")))
        with httpx.Client(base_url=f"http://127.0.0.1:{api_port}", timeout=60) as http:
            form = http.get("/console/sign-in").text
            token = re.search(r'name="csrf" value="([^"]+)"', form)
            assert token is not None
            http.post(
                "/console/sign-in",
                data={"csrf": token[1], "username": "bench", "password": PASSWORD},
            )
            n = args.customers
            for name, path, expect in (
                ("home", "/console", "Today"),
                (
                    f"campaign report ({args.members:,} members)",
                    f"/console/campaigns/{cid}/report",
                    "Bench report",
                ),
                (
                    "customer search by email",
                    f"/console/customers?q=user{n // 2}@bench.example",
                    f"B{n // 2:07d}",
                ),
                ("customer search by name prefix", "/console/customers?q=Ortiz", "Ortiz"),
                ("customer page", f"/console/customers/B{n // 3:07d}", "Timeline"),
                ("campaign list", "/console/campaigns", "Bench report"),
            ):
                results.append((name, *timed(http, path, args.repeat, expect)))
    finally:
        for process in (api, bare):
            process.terminate()
            process.wait(10)
    return results


@contextlib.contextmanager
def scratch_database(db: str, prefix: str) -> Iterator[tuple[str, Path]]:
    """(database URL, home folder) for one run: a SQLite file in a temporary home, or a
    PostgreSQL database made for the run on the local server and dropped after it."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{prefix}-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        name = f"bench_{prefix}_{int(time.time())}"
        admin = "host=127.0.0.1 user=postgres dbname=postgres"
        if db == "postgresql":
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        else:
            url = f"sqlite:///{home / 'bench.db'}"
        try:
            yield url, home
        finally:
            dispose_all()
            if db == "postgresql":
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()
    for db in args.databases.split(","):
        with scratch_database(db, "console") as (url, home):
            results = run(db, url, args, home)
            base = results[0][1]
            print(f"\n{db}: {args.customers:,} customers, {args.repeat} requests each")
            print(f"{'page':42} {'median ms':>10} {'p95 ms':>8} {'x bare':>8}")
            for page, median, p95 in results:
                print(f"{page:42} {median:10.1f} {p95:8.1f} {median / base:8.1f}")
            print(flush=True)


if __name__ == "__main__":
    main()
