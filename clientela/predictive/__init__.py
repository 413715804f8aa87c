"""Predictive models: propensity and uplift, trained on what campaigns recorded."""
