"""Tools that look at a machine from outside (the console)."""
