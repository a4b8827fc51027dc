"""ownapp: a Flower app of one's own, with fl-leak's malicious server added."""
