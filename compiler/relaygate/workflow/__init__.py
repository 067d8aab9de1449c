"""A campus's own policy repository: create it, import into it, list it, deploy from it."""
