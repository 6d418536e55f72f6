"""The Lambda functions' code: thin `handlers/` over `logic/` (the domain, no AWS SDK) and `dal/`
(one adapter per outside system), wired by `composition`. One asset for every function."""
