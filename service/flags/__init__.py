"""Feature flags: the rules and the storage, below every door into them.

`definitions` checks a flag as a whole (values of its type, allowed values,
rules whose logic the SDK's evaluator understands), `logic` bounds JSON Logic,
`evaluation` computes a flag's value as the smplkit SDK does (with the same
library), `store` reads and writes the rows, `events` announces every write on
the SDK's event stream and `telemetry` sums what SDKs report. The routers
(service/api/sdk/flags.py, service/api/flags.py) only parse, authorise, call
these and shape the documents.
"""
