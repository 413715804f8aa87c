"""A campaign's lead list for a large base: set-based SQL against the page-by-page baseline.

Seeds a scratch database (SQLite by default, ``--db URL`` for PostgreSQL) with customers as
``bench.campaign`` does (email consent, tiers A/B/C), then previews the benchmark campaign
(audience, 10% control per tier, channel and exclusions, duplicates, summary) as
`clientela campaign create` does, and builds it as the workflow does (written and kept):
both in set-based SQL (``clientela.campaigns.listing``), and the preview again page by page
in Python (the path specs that need customers' features take, and the one every spec took
before), the baseline of the same run. Both lists must agree.

    python -m bench.lead_list [--customers 1000000] [--db URL] [--no-baseline]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import make_url

from bench.campaign import RULES, SPEC, seed
from clientela.campaigns import audience, spec
from clientela.db import dispose_all, session_scope
from clientela.messaging.templating import Templates
from clientela.settings import Settings
from models import Campaign, CampaignMember


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--db", default="", help="database URL (default: a new SQLite file)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the Python path")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="clientela-bench-list-"))
    try:
        if args.db:  # a scratch database on that server, dropped at the end
            name = f"clientela_bench_{int(time.time())}"
            admin = make_url(args.db)
            server = create_engine(admin, isolation_level="AUTOCOMMIT")
            with server.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = admin.set(database=name).render_as_string(hide_password=False)
        else:
            server, name, url = None, "", f"sqlite:///{home / 'clientela.db'}"
        settings = Settings(home=home)
        templates = Templates(settings.templates_dir, settings.default_locale)
        loaded = spec.loads(SPEC, "bench.yaml", RULES, templates)
        t0 = time.perf_counter()
        seed(url, args.customers)
        print(f"seeded {args.customers:,} customers in {time.perf_counter() - t0:.0f} s "
              "(not measured)", flush=True)  # fmt: skip
        figures: dict[str, float] = {}
        previews = {}
        ways = [("set-based SQL", True)] + ([] if args.no_baseline else [("page by page", False)])
        for label, in_sql in ways:
            with session_scope(url) as session:
                t0 = time.perf_counter()
                previews[label] = audience.preview(session, loaded, in_sql=in_sql)
                figures[f"preview, {label}"] = time.perf_counter() - t0
            print(f"  ... preview, {label}: {figures[f'preview, {label}']:.1f} s", flush=True)
        with session_scope(url) as session:
            session.add(Campaign(id="bench", name="bench", stage="approved"))
            session.commit()
            t0 = time.perf_counter()
            built = audience.build(session, "bench", loaded, in_sql=True)
            session.commit()
            figures["build (written and kept), set-based SQL"] = time.perf_counter() - t0
            session.execute(delete(CampaignMember))
        dispose_all()
        first = previews["set-based SQL"].as_dict()
        for label, preview in previews.items():
            if preview.as_dict() != first:
                raise SystemExit(f"the {label} preview differs from the set-based one")
        if built.as_dict() != first:
            raise SystemExit("the built list differs from its preview")
        db = "PostgreSQL" if server is not None else "SQLite"
        n = args.customers
        print(f"lead list of {n:,} customers on {db}: audience {built.audience:,}, "
              f"to contact {built.treated:,}, held out {built.control:,}, "
              f"excluded {built.excluded_total:,}")  # fmt: skip
        print(f"{'':46}{'seconds':>9}{'per second':>12}")
        for label, seconds in figures.items():
            print(f"{label:46}{seconds:>9.1f}{n / seconds:>12,.0f}")
        if "preview, page by page" in figures:
            ratio = figures["preview, page by page"] / figures["preview, set-based SQL"]
            print(f"speed-up of set-based SQL over page by page (preview): {ratio:.1f}")
        if server is not None:
            with server.connect() as conn:
                conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
