# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test browser lint bench bench-campaign bench-dates bench-rules up down clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/clientela demo

test: $(STAMP) lint browser
	$(BIN)/python -m pytest

# The console's browser tests drive Debian's chromium (Playwright cannot download one here).
browser:
	@test -x /usr/bin/chromium || { \
	  apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium </dev/null; }

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Postfix's smtp-sink is the mail relay of the benchmarks; Debian's postfix package has it.
SMTP_SINK = @test -x /usr/sbin/smtp-sink || { \
	  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postfix; }

bench: $(STAMP)
	$(SMTP_SINK)
	$(BIN)/python -m bench.welcome

bench-rules: $(STAMP)
	$(BIN)/python -m bench.rules

bench-campaign: $(STAMP)
	$(SMTP_SINK)
	$(BIN)/python -m bench.campaign

# A day of birthday greetings over 1,000,000 customers.
bench-dates: $(STAMP)
	$(SMTP_SINK)
	$(BIN)/python -m bench.dates

up: $(STAMP)
	$(BIN)/clientela up

down: $(STAMP)
	$(BIN)/clientela down

clean:
	rm -rf $(VENV) .clientela
