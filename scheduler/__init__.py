"""The weekly run of each school: the job functions a scheduler calls."""
