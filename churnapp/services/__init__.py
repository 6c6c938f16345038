"""Every write of churnapp: `<noun>_<verb>(*, ...)` functions, split by sub-domain."""
