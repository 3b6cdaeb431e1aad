"""sparseblob.verify: constraint and differential checks, reports and the command line."""
