"""The console: the pages marketers, approvers, the service desk and admins work in.

Server-rendered with Jinja2 and one vendored script (htmx) rather than a single-page app:
the pages are read far more than they are changed, every change is a plain form that works
without the script, and nothing has to be built or downloaded at install time. htmx adds
the live parts (a spec checked as it is typed, a template preview, a campaign's progress)
by swapping server-rendered fragments, so there is one place that renders HTML.
"""
