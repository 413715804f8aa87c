"""Messages: deciding who may be contacted, rendering, sending at most once, delivery reports,
and the links and pages a recipient opens."""
