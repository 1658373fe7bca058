# The fixtures folder holds toy hidden tests and submissions: data for the grader, not tests to collect.
collect_ignore = ["fixtures"]
