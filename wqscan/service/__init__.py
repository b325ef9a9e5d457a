"""Running wqscan for months: the scheduler, leases on watches, circuit breakers, the
deadline that abandons a hung scan, status and metrics."""
