"""Journeys: definitions (spec), starting them from what happens (router), the hourly date run
(dates), and inspecting running ones (runs)."""
