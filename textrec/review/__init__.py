"""Human review of served lines: the capture queue, the review app and the reviewed line store."""
