"""Pure lifecycle decisions: functions of (facts, rules, date), no I/O, tested with tables."""
